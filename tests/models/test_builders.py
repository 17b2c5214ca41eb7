"""Builder contract: arguments and errors, padding, names, serialisation, precision, features."""

import os
import tempfile

import keras
import numpy as np
import pytest

import effnet_keras
from effnet_keras.layers import StochasticDepth
from effnet_keras.layers import block_letters

pytestmark = pytest.mark.backend


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _images(n, h, w=None, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w or h, 3)).astype("float32")


# ---------------------------------------------------------------- errors


def test_unknown_model_name_lists_available():
    with pytest.raises(ValueError, match=r"Unknown model name 'efficientnet-b9'.*efficientnet-b0"):
        effnet_keras.get_model("efficientnet-b9")


def test_pooling_typo_is_an_error():
    with pytest.raises(ValueError, match=r"`pooling` must be one of .*Received: pooling='average'"):
        effnet_keras.EfficientNetV2Nano(include_top=False, pooling="average")


def test_input_too_small():
    with pytest.raises(ValueError, match=r"at least 32x32.*\(16, 16, 3\)"):
        effnet_keras.EfficientNetV2Nano(input_shape=(16, 16, 3))


def test_classifier_at_any_size_except_for_a_static_input_family():
    # An EfficientNet's head pools globally, so one classifier serves every size (progressive
    # training, exports at the eval size); CoAtNet's relative-position tables need a static size.
    model = effnet_keras.EfficientNetV2Nano(include_top=True, input_shape=(None, None, 3), classes=3)
    for size in (48, 80):
        assert _np(model(_images(1, size))).shape == (1, 3)
    with pytest.raises(ValueError, match=r"static input size.*\(None, None, 3\)"):
        effnet_keras.CoAtNet0(include_top=True, input_shape=(None, None, 3))


def test_wrong_channel_count_for_weights(tmp_path):
    path = os.path.join(tmp_path, "nano.weights.h5")
    effnet_keras.EfficientNetV2Nano(include_top=False).save_weights(path)
    with pytest.raises(ValueError, match=r"expect 3 input channels.*\(64, 64, 1\)"):
        effnet_keras.EfficientNetV2Nano(include_top=False, input_shape=(64, 64, 1), weights=path)


def test_bad_input_shape_and_classes_and_rates():
    with pytest.raises(ValueError, match="tuple of three values"):
        effnet_keras.EfficientNetV2Nano(input_shape=(64, 64))
    with pytest.raises(ValueError, match=r"`classes` must be a positive integer.*0"):
        effnet_keras.EfficientNetV2Nano(classes=0)
    with pytest.raises(ValueError, match=r"`dropout_rate` must be in \[0, 1\).*1.5"):
        effnet_keras.EfficientNetV2Nano(dropout_rate=1.5)


def test_missing_weights_file_is_an_error():
    with pytest.raises(ValueError, match=r"/nonexistent/w.h5.*no such file"):
        effnet_keras.EfficientNetV2Nano(weights="/nonexistent/w.h5")


# ---------------------------------------------------------------- padding / sizes


def test_same_padding_at_odd_and_dynamic_sizes():
    """TF SAME at 225: 8x8 at stride 32 whether the size is static or dynamic
    (keras.applications V1 gives 7x7 for the dynamic model)."""
    dynamic = effnet_keras.EfficientNetB0(include_top=False)
    static = effnet_keras.EfficientNetB0(include_top=False, input_shape=(225, 225, 3))
    static.set_weights(dynamic.get_weights())
    images = _images(1, 225)
    out_dynamic, out_static = _np(dynamic(images)), _np(static(images))
    assert out_dynamic.shape == (1, 8, 8, 1280) == out_static.shape
    np.testing.assert_allclose(out_dynamic, out_static, atol=1e-5)


def test_non_square_input_and_pooling_modes():
    avg = effnet_keras.EfficientNetV2Nano(include_top=False, pooling="avg", input_shape=(64, 96, 3))
    mx = effnet_keras.EfficientNetV2Nano(include_top=False, pooling="max")
    assert _np(avg(_images(2, 64, 96))).shape == (2, 320)
    assert _np(mx(_images(1, 33, 47))).shape == (1, 320)


def test_input_tensor_is_used_and_upstream_layers_kept():
    inputs = keras.Input((80, 80, 4))
    x = keras.layers.Conv2D(3, 1, name="to_rgb")(inputs)
    model = effnet_keras.EfficientNetV2Nano(include_top=False, input_tensor=x, pooling="avg")
    assert model.inputs[0].shape == (None, 80, 80, 4)
    assert "to_rgb" in [layer.name for layer in model.layers]


# ---------------------------------------------------------------- names, preprocessing


def test_block_letters_past_26_repeats():
    assert [block_letters(i) for i in (0, 25, 26, 27, 31, 51, 52)] == ["a", "z", "aa", "ab", "af", "az", "ba"]


def test_v2_xl_layer_names_are_unique_ascii_and_keras_compatible():
    model = effnet_keras.EfficientNetV2XL(include_top=False)
    names = [layer.name for layer in model.layers]
    assert len(names) == len(set(names))
    assert all(name.isascii() for name in names)
    # stage 6 has 32 blocks: block6a..block6z then block6aa..block6af
    assert "block6z_add" in names and "block6af_add" in names and "block6ag_add" not in names
    for name in ("stem_conv", "block1a_project_conv", "block4a_dwconv2", "block4a_se_reduce", "top_activation"):
        assert name in names


def test_custom_name_changes_nothing_else():
    default = effnet_keras.EfficientNetV2Nano()
    custom = effnet_keras.EfficientNetV2Nano(name="my_backbone")
    assert custom.name == "my_backbone" and default.name == "efficientnetv2-nano"
    assert [l.name for l in custom.layers[1:]] == [l.name for l in default.layers[1:]]
    assert custom.count_params() == default.count_params()


@pytest.mark.parametrize("builder,mode", [(effnet_keras.EfficientNetV2Nano, "mean_std"), (effnet_keras.EfficientNetV2S, "pm1")])
def test_preprocessing_is_constant_and_correct(builder, mode, tmp_path):
    kwargs = dict(include_top=False, input_shape=(64, 64, 3))
    model = builder(**kwargs)
    layer = model.layers[1]
    assert layer.weights == []  # constants, never weights
    x = np.full((1, 4, 4, 3), 255.0, "float32")
    out = _np(layer(x))[0, 0, 0]
    if mode == "mean_std":
        expected = (1.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    else:
        expected = np.full(3, 255.0 / 128.0 - 1.0)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # The graph is the same whatever `weights` is.
    path = os.path.join(tmp_path, "w.weights.h5")
    model.save_weights(path)
    loaded = builder(weights=path, **kwargs)
    assert [l.__class__ for l in loaded.layers] == [l.__class__ for l in model.layers]
    raw = builder(include_preprocessing=False, **kwargs)
    assert raw.layers[1].name == "stem_conv"


# ---------------------------------------------------------------- serialisation


def test_keras_file_round_trip(tmp_path):
    model = effnet_keras.EfficientNetV2Nano(classes=7, drop_connect_rate=0.3)
    path = os.path.join(tmp_path, "nano.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = _images(2, 64)
    np.testing.assert_array_equal(_np(model(images)), _np(loaded(images)))
    drops = [l for l in loaded.layers if isinstance(l, StochasticDepth)]
    assert drops and max(l.rate for l in drops) == pytest.approx(0.3 * max(l.schedule_fraction for l in drops))


def test_weights_h5_round_trip(tmp_path):
    model = effnet_keras.EfficientNetB0(input_shape=(64, 64, 3))
    path = os.path.join(tmp_path, "b0.weights.h5")
    model.save_weights(path)
    again = effnet_keras.EfficientNetB0(input_shape=(64, 64, 3), weights=path)
    images = _images(1, 64)
    np.testing.assert_array_equal(_np(model(images)), _np(again(images)))


def test_get_config_from_config_every_layer():
    model = effnet_keras.EfficientNetV2Nano()
    for layer in model.layers:
        config = layer.get_config()
        clone = layer.__class__.from_config(config)
        assert clone.get_config() == config, layer.name
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()


def test_stochastic_depth_drops_whole_samples():
    layer = StochasticDepth(0.5, seed=1)
    x = np.ones((2000, 2, 2, 3), "float32")
    y = _np(layer(x, training=True))
    per_sample = y.reshape(2000, -1)
    assert set(np.unique(per_sample)) <= {0.0, 2.0}
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))  # whole branch
    assert 0.45 < (per_sample[:, 0] == 0).mean() < 0.55
    np.testing.assert_array_equal(_np(layer(x, training=False)), x)
    with pytest.raises(ValueError, match="rate must be in"):
        StochasticDepth(1.0)


def test_set_regularization_reaches_layers():
    model = effnet_keras.EfficientNetV2Nano(dropout_rate=0.1, drop_connect_rate=0.2)
    changed = effnet_keras.set_regularization(model, dropout_rate=0.4, drop_connect_rate=0.1)
    drops = [l for l in model.layers if isinstance(l, StochasticDepth)]
    assert changed == len(drops) + 1
    assert model.get_layer("top_dropout").rate == 0.4
    for layer in drops:
        assert layer.rate == pytest.approx(0.1 * layer.schedule_fraction)
    fractions = [l.schedule_fraction for l in drops]
    assert fractions == sorted(fractions) and fractions[-1] < 1.0
    with pytest.raises(ValueError, match="drop_connect_rate"):
        effnet_keras.set_regularization(model, drop_connect_rate=1.2)


# ---------------------------------------------------------------- precision, features, scaling


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_logits_in_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = effnet_keras.EfficientNetV2Nano(classes=5, input_shape=(64, 64, 3))
        assert model.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
        out = model(_images(2, 64))
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        model.compile(optimizer="sgd", loss="categorical_crossentropy")
        labels = np.eye(5, dtype="float32")[[0, 3]]
        loss = model.train_on_batch(_images(2, 64), labels)
        assert np.isfinite(loss)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_feature_extractor_b0_levels():
    features = effnet_keras.feature_extractor(effnet_keras.EfficientNetB0(include_top=False))
    out = features(_images(1, 224))
    shapes = {k: tuple(_np(v).shape) for k, v in out.items()}
    assert shapes == {
        "P1": (1, 112, 112, 16),
        "P2": (1, 56, 56, 24),
        "P3": (1, 28, 28, 40),
        "P4": (1, 14, 14, 112),
        "P5": (1, 7, 7, 320),
    }
    assert effnet_keras.feature_layers(effnet_keras.EfficientNetB0())["P3"] == "block3b_add"


def test_feature_extractor_v2_subset_and_bad_level():
    model = effnet_keras.EfficientNetV2S(include_top=False)
    features = effnet_keras.feature_extractor(model, levels=("P3", "P5"))
    out = features(_images(1, 128))
    assert {k: _np(v).shape for k, v in out.items()} == {"P3": (1, 16, 16, 64), "P5": (1, 4, 4, 256)}
    with pytest.raises(ValueError, match="Unknown feature levels"):
        effnet_keras.feature_extractor(model, levels=("P6",))


def test_compound_scaling_values():
    scale = effnet_keras.compound_scaling(2)
    assert scale["depth"] == pytest.approx(1.44)
    assert scale["width"] == pytest.approx(1.21)
    assert scale["resolution"] == pytest.approx(1.3225)
    assert scale["flops_ratio"] == pytest.approx((1.2 * 1.1**2 * 1.15**2) ** 2)
    with pytest.raises(ValueError, match="phi"):
        effnet_keras.compound_scaling(-1)


def test_flops_grow_about_two_to_the_phi():
    base = effnet_keras.model_stats(effnet_keras.EfficientNet(0))["macs"]
    assert base == effnet_keras.model_stats(effnet_keras.EfficientNetB0())["macs"]
    for phi in (1, 2, 3):
        model = effnet_keras.EfficientNet(phi, include_top=False)
        size = model.input_shape[1] if model.input_shape[1] else None
        macs = effnet_keras.model_stats(model, image_size=int(round(224 * 1.15**phi / 8)) * 8)["macs"]
        assert size is None
        ratio = macs / base
        # ceil() on depth and rounding of widths/resolution put the measured ratio
        # within 20 % of 2**phi (2.23, 4.69, 8.43 for phi 1, 2, 3).
        assert 2**phi * 0.95 < ratio < 2**phi * 1.2, (phi, ratio)


def test_fractional_phi_builds_between_neighbours():
    half = effnet_keras.EfficientNet(0.5)
    assert half.input_shape[1:] == (240, 240, 3)
    assert effnet_keras.EfficientNetB0().count_params() < half.count_params() < effnet_keras.EfficientNet(1).count_params()


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="runtime rates are for the TF trainer")
def test_runtime_rates_change_a_traced_step_without_retracing():
    import tensorflow as tf

    model = effnet_keras.EfficientNetV2Nano(input_shape=(32, 32, 3), classes=3)
    weights_before = [w.path for w in model.weights]
    layers_with_rates = effnet_keras.enable_runtime_rates(model)
    assert layers_with_rates == 1 + sum(isinstance(l, StochasticDepth) for l in model.layers)
    # The variables are neither model weights nor checkpoint dependencies.
    assert [w.path for w in model.weights] == weights_before
    checkpoint_keys = [name for name, _ in tf.train.list_variables(tf.train.Checkpoint(model=model).write(
        os.path.join(tempfile.mkdtemp(), "ckpt")))]
    assert checkpoint_keys and not any("runtime_rate" in key for key in checkpoint_keys)
    traces = []

    @tf.function
    def step(x):
        traces.append(1)
        return model(x, training=True)

    x = tf.random.stateless_uniform((4, 32, 32, 3), (1, 2), 0, 255)
    effnet_keras.set_regularization(model, dropout_rate=0.0, drop_connect_rate=0.0)
    calm = step(x).numpy()
    np.testing.assert_allclose(step(x).numpy(), calm, rtol=1e-5, atol=1e-5)  # rate 0: nothing dropped
    effnet_keras.set_regularization(model, dropout_rate=0.9, drop_connect_rate=0.9)
    assert not np.allclose(step(x).numpy(), calm, atol=1e-3)  # the same trace now drops
    effnet_keras.set_regularization(model, dropout_rate=0.0, drop_connect_rate=0.0)
    np.testing.assert_allclose(step(x).numpy(), calm, rtol=1e-5, atol=1e-5)
    assert len(traces) == 1


@pytest.mark.skipif(keras.backend.backend() == "tensorflow", reason="checks the error on the other backends")
def test_runtime_rates_refused_off_tensorflow():
    model = effnet_keras.EfficientNetV2Nano(input_shape=(32, 32, 3), classes=3)
    with pytest.raises(RuntimeError, match="TensorFlow backend"):
        effnet_keras.enable_runtime_rates(model)
