"""Numerical parity with keras.applications through its legacy `.h5` weight layout.

keras.applications models are built with random weights (BN statistics randomised
too, so a swapped gamma/beta or mean/variance would show), written in the legacy
h5 layout keras.applications downloads, loaded into ours with `weights=path`, and
compared on random [0, 255] images.
"""

import os

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import effnet_keras
from effnet_keras.preprocessing import IMAGENET_MEAN
from effnet_keras.preprocessing import IMAGENET_STD

KERAS_APPS = {
    "efficientnet-b0": keras.applications.EfficientNetB0,
    "efficientnet-b1": keras.applications.EfficientNetB1,
    "efficientnet-b2": keras.applications.EfficientNetB2,
    "efficientnet-b3": keras.applications.EfficientNetB3,
    "efficientnet-b4": keras.applications.EfficientNetB4,
    "efficientnet-b5": keras.applications.EfficientNetB5,
    "efficientnet-b6": keras.applications.EfficientNetB6,
    "efficientnet-b7": keras.applications.EfficientNetB7,
    "efficientnetv2-b0": keras.applications.EfficientNetV2B0,
    "efficientnetv2-b1": keras.applications.EfficientNetV2B1,
    "efficientnetv2-b2": keras.applications.EfficientNetV2B2,
    "efficientnetv2-b3": keras.applications.EfficientNetV2B3,
    "efficientnetv2-s": keras.applications.EfficientNetV2S,
    "efficientnetv2-m": keras.applications.EfficientNetV2M,
    "efficientnetv2-l": keras.applications.EfficientNetV2L,
}
# Fast ones also run under JAX in CI; one odd size per family.
BACKEND_CASES = [("efficientnet-b0", 65, True), ("efficientnetv2-b0", 64, True), ("efficientnetv2-s", 67, False)]


def randomise_like_trained(model, seed=0):
    """Random but realistic weights: BN stats away from identity, kernels as initialised.

    gamma <= 1 and variance >= 1 keep activations bounded, as in a trained network;
    otherwise deep random nets blow up to |logits| ~ 1e3 and float32 rounding noise
    alone exceeds any useful tolerance.
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.6, 1.0, c).astype("float32"),
                    rng.normal(0, 0.1, c).astype("float32"),
                    rng.normal(0, 0.1, c).astype("float32"),
                    rng.uniform(1.0, 2.0, c).astype("float32"),
                ]
            )
        elif layer.name in ("predictions",) or layer.name.endswith("se_reduce") or layer.name.endswith("se_expand"):
            weights = layer.get_weights()
            weights[-1] = rng.normal(0, 0.1, weights[-1].shape).astype("float32")  # non-zero biases
            layer.set_weights(weights)
        elif isinstance(layer, keras.layers.Normalization) and len(layer.weights) == 3:
            # keras.applications V1 built with weights=None leaves its Normalization at
            # identity; give it the ImageNet statistics our graph has as constants.
            layer.set_weights(
                [np.array(IMAGENET_MEAN, "float32"), np.array(IMAGENET_STD, "float32") ** 2, np.array(0, "int64")]
            )
            layer.finalize_state()  # the layer caches mean/variance; set_weights alone is not seen


def write_keras_applications_h5(model, path):
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


def _parity(name, size, include_top, tmp_path, batch=2):
    keras.utils.set_random_seed(1)
    kwargs = dict(include_top=include_top, weights=None, input_shape=(size, size, 3))
    if include_top:
        kwargs["classifier_activation"] = None
    reference = KERAS_APPS[name](**kwargs)
    randomise_like_trained(reference)
    path = os.path.join(tmp_path, f"{name}.h5")
    write_keras_applications_h5(reference, path)

    ours_kwargs = dict(include_top=include_top, weights=path, input_shape=(size, size, 3))
    if include_top:
        ours_kwargs["classifier_activation"] = None
    ours = effnet_keras.get_model(name, **ours_kwargs)
    images = np.random.default_rng(2).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(images, training=False))
    got = keras.ops.convert_to_numpy(ours(images, training=False))
    assert got.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= 1e-4 * scale, (name, np.abs(got - expected).max(), scale)
    return ours, path


@pytest.mark.backend
@pytest.mark.parametrize("name,size,include_top", BACKEND_CASES)
def test_parity_fast(name, size, include_top, tmp_path):
    _parity(name, size, include_top, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [n for n in KERAS_APPS if n not in {c[0] for c in BACKEND_CASES}]
)
def test_parity_all_keras_applications_models(name, tmp_path):
    # Odd size for V1 (keras.applications' static-shape padding is right for odd sizes;
    # its dynamic-shape padding is not, which test_padding covers).
    size = 97 if name.startswith("efficientnet-") else 64
    _parity(name, size, include_top=name in ("efficientnet-b1", "efficientnetv2-b1"), tmp_path=tmp_path, batch=1)
    keras.backend.clear_session()


def test_full_file_loads_into_headless_model(tmp_path):
    _, path = _parity("efficientnet-b0", 64, True, tmp_path)
    headless = effnet_keras.EfficientNetB0(include_top=False, weights=path, input_shape=(64, 64, 3))
    reference = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(64, 64, 3))
    randomise_like_trained(reference)
    write_keras_applications_h5(reference, os.path.join(tmp_path, "notop.h5"))
    notop = effnet_keras.EfficientNetB0(include_top=False, weights=os.path.join(tmp_path, "notop.h5"))
    images = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(notop(images)), keras.ops.convert_to_numpy(reference(images)), atol=1e-4, rtol=1e-4
    )
    assert headless.get_layer("top_conv").get_weights()[0].shape == (1, 1, 320, 1280)


def test_shape_mismatch_names_the_layer(tmp_path):
    reference = keras.applications.EfficientNetB1(include_top=False, weights=None, input_shape=(64, 64, 3))
    path = os.path.join(tmp_path, "b1.h5")
    write_keras_applications_h5(reference, path)
    # B2 has the same layer names as B1 but wider layers.
    with pytest.raises(ValueError, match=r"shape mismatch for layer 'block3a_project_conv'"):
        effnet_keras.EfficientNetB2(include_top=False, weights=path, input_shape=(64, 64, 3))
