"""CoAtNet: paper/timm parameter and MAC counts, timm numerical parity, relative attention, resizing.

Golden fixtures: tests/fixtures/coatnet_*.npz, made by tools/make_coatnet_fixtures.py with
torch + timm (not needed here). Full-size models are built only for CoAtNet-0..2; the
big variants are counted by `coatnet_structure_stats`, which the builds cross-check.
"""

import gc
import json
import os

import keras
import numpy as np
import pytest

import effnet_keras
from effnet_keras.layers.attention import RelativeAttention
from effnet_keras.layers.attention import RelativePositionBias
from effnet_keras.layers.attention import relative_attention_layers
from effnet_keras.layers.attention import relative_position_index
from effnet_keras.layers.attention import resize_relative_position_table
from effnet_keras.models import coatnet
from effnet_keras.layers.attention import resize_relative_position_tables
from effnet_keras import weights as weights_lib
from effnet_keras.weights.assign import assign_by_name
from effnet_keras.weights.timm_coatnet import convert_timm_coatnet


def load_timm_state(model, state_dict, **kwargs):
    """What `weights=` does with a timm CoAtNet state dict: the pure converter, then the one assigner."""
    return assign_by_name(model, convert_timm_coatnet(state_dict, model, **kwargs), source="timm state dict")

DATA = os.path.join(os.path.dirname(__file__), "..", "fixtures")
TINY = dict(stem_filters=8, depths=(2, 2, 2, 2), widths=(8, 16, 24, 32), head_dim=8)

# Paper Tables 2/3/9 (params, GFLOPs = G multiply-adds at 224; C-4 at 384).
PAPER = {
    "coatnet-0": (25e6, 224, 4.2e9),
    "coatnet-1": (42e6, 224, 8.4e9),
    "coatnet-2": (75e6, 224, 15.7e9),
    "coatnet-3": (168e6, 224, 34.7e9),
    "coatnet-4": (275e6, 384, 189.5e9),
}
# Reference structural counts (shared/reference/coatnet.md 2.4): params with pre-logits, MACs at 512.
STRUCTURAL = {"coatnet-5": (687.05e6, 804e9), "coatnet-6": (1.350e9, 1466e9), "coatnet-7": (2.444e9, 2539e9)}


def tiny(input_shape=(64, 96, 3), **kwargs):
    kwargs.setdefault("classes", 10)
    return effnet_keras.CoAtNet(**TINY, input_shape=input_shape, **kwargs)


def load_fixture(name):
    data = np.load(os.path.join(DATA, name + ".npz"))
    config = json.loads(str(data["config"]))
    state_dict = {k[2:]: data[k] for k in data.files if k.startswith("w/")}
    return data, config, state_dict


def fixture_model(config, input_shape=None):
    knobs = {k: config[k] for k in ("downsample", "pool", "padding")}
    shape = input_shape or tuple(config["input_shape"])
    return tiny(shape, classes=config["classes"], classifier_activation=None, **knobs)


def timm_param_counts():
    data = np.load(os.path.join(DATA, "coatnet_timm_param_counts.npz"))
    return dict(zip((str(n) for n in data["names"]), (int(p) for p in data["params"])))


@pytest.mark.backend
def test_registry_and_public_builders():
    names = effnet_keras.list_models("coatnet")
    assert names == [f"coatnet-{i}" for i in range(8)]
    for i in range(8):
        builder = getattr(effnet_keras, f"CoAtNet{i}")
        assert effnet_keras.models.registry.get_builder(f"coatnet-{i}") is builder
        assert builder.spec is coatnet.COATNET_SPECS[f"coatnet-{i}"]
    assert effnet_keras.models.registry.get_builder("CoAtNet_3") is effnet_keras.CoAtNet3


@pytest.mark.backend
def test_paper_params_and_macs_without_building():
    timm_counts = timm_param_counts()
    for name, (params, size, macs) in PAPER.items():
        stats = coatnet.coatnet_structure_stats(name, size)
        assert abs(stats["trainable_params"] / params - 1) < 0.01, (name, stats)
        assert abs(stats["macs"] / macs - 1) < 0.03, (name, stats)
        # timm's paper-like coatnet_N_224 has exactly our parameters.
        assert coatnet.coatnet_structure_stats(name)["trainable_params"] == timm_counts[f"coatnet_{name[-1]}_224"]
    assert coatnet.coatnet_structure_stats("coatnet-5", head_dim=32)["trainable_params"] == timm_counts["coatnet_5_224"]
    for name, (params, macs_512) in STRUCTURAL.items():
        stats = coatnet.coatnet_structure_stats(name, 512)
        assert abs(coatnet.coatnet_structure_stats(name)["trainable_params"] / params - 1) < 0.02, name
        assert abs(stats["macs"] / macs_512 - 1) < 0.02, (name, stats)
    # Strided-depthwise ablation (paper Table 9): 4.6 G for CoAtNet-0.
    dw = coatnet.coatnet_structure_stats("coatnet-0", downsample="dwconv")
    assert abs(dw["macs"] / 4.6e9 - 1) < 0.03
    # Without the pre-logits layer the count falls to the reference's 24.44 M.
    assert round(coatnet.coatnet_structure_stats("coatnet-0", pre_logits=False)["trainable_params"] / 1e4) == 2445


def _check_full_build(name):
    model = effnet_keras.get_model(name)
    stats = effnet_keras.model_stats(model)
    expected = coatnet.coatnet_structure_stats(name)
    assert {k: stats[k] for k in expected} == expected
    return model


@pytest.mark.backend
def test_coatnet0_build_matches_structural_count_and_features():
    model = _check_full_build("coatnet-0")
    assert effnet_keras.feature_layers(model) == {
        "P1": "stem_conv2",
        "P2": "stage1_block1_add",
        "P3": "stage2_block2_add",
        "P4": "stage3_block4_add",
        "P5": "stage4_block1_add",
    }
    assert model.output.shape == (None, 1000)


# Counts do not depend on the backend, and initialising 40-75 M parameters costs the
# JAX rerun ~10 s per model (one XLA compile per variable shape): TF run only.
@pytest.mark.parametrize("name", ["coatnet-1", "coatnet-2"])
def test_bigger_builds_match_structural_count(name):
    _check_full_build(name)
    keras.backend.clear_session()
    gc.collect()


# CoAtNet-6/7's layout in miniature: S3 = MBConv blocks, then wider Transformer blocks at 1/16.
MIXED_TINY = coatnet.CoAtNetSpec(
    "coatnet-mixed-tiny",
    "coatnet_mixed_tiny",
    8,
    (
        coatnet.StageArgs(1, "C", 1, 8, 2),
        coatnet.StageArgs(2, "C", 1, 16, 2),
        coatnet.StageArgs(3, "C", 2, 24, 2),
        coatnet.StageArgs(3, "T", 2, 32, 1),
        coatnet.StageArgs(4, "T", 1, 48, 2),
    ),
    head_dim=8,
    drop_connect_rate=0.1,
)


@pytest.mark.backend
@pytest.mark.parametrize(
    "knobs",
    [
        dict(),
        dict(downsample="dwconv", pool="avg", padding="symmetric"),
        dict(pre_logits=False),
        dict(include_top=False, pooling="avg"),
    ],
    ids=["paper", "timm-default", "no-pre-logits", "headless"],
)
def test_tiny_builds_match_structural_count(knobs):
    model = tiny(**knobs)
    counted = coatnet.coatnet_structure_stats(
        coatnet.coatnet_spec(**TINY),
        (64, 96),
        include_top=knobs.get("include_top", True),
        classes=10,
        pre_logits=knobs.get("pre_logits", True),
        downsample=knobs.get("downsample", "conv1x1"),
    )
    stats = effnet_keras.model_stats(model)
    assert {k: stats[k] for k in counted} == counted


@pytest.mark.backend
def test_mixed_stage_like_coatnet6():
    model = coatnet.build_coatnet(MIXED_TINY, input_shape=(64, 96, 3), classes=5)
    stats = effnet_keras.model_stats(model)
    counted = coatnet.coatnet_structure_stats(MIXED_TINY, (64, 96), classes=5)
    assert {k: stats[k] for k in counted} == counted
    names = effnet_keras.feature_layers(model)
    assert names["P4"] == "stage3_block3_add"  # the last Transformer block of the mixed S3
    assert model.get_layer("stage3_block2_shortcut_proj").output.shape == (None, 4, 6, 32)  # width change, no pool
    assert "stage3_block2_shortcut_pool" not in [layer.name for layer in model.layers]
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype("float32"), verbose=0)
    assert out.shape == (1, 5) and np.allclose(out.sum(), 1.0, atol=1e-5)


@pytest.mark.backend
@pytest.mark.parametrize("fixture", ["coatnet_paper_tiny", "coatnet_timm_tiny"])
def test_timm_parity(fixture):
    data, config, state_dict = load_fixture(fixture)
    model = fixture_model(config)
    load_timm_state(model, state_dict)
    image = data["image"].astype("float32")
    logits = model.predict(image, verbose=0)
    assert np.abs(logits - data["logits"]).max() < 1e-4
    features = effnet_keras.feature_extractor(model).predict(image[:1], verbose=0)
    for level in ("P1", "P2", "P3", "P4", "P5"):
        assert np.abs(features[level][0] - data[f"feature_{level}"]).max() < 1e-4, level


@pytest.mark.backend
def test_converter_reads_safetensors_and_checks_keys(tmp_path):
    from safetensors.numpy import save_file

    data, config, state_dict = load_fixture("coatnet_paper_tiny")
    path = str(tmp_path / "coatnet_tiny.safetensors")
    save_file(state_dict, path)
    model = fixture_model(config)
    weights_lib.load_file(model, path, converter="coatnet")
    assert np.abs(model.predict(data["image"].astype("float32"), verbose=0) - data["logits"]).max() < 1e-4

    missing = {k: v for k, v in state_dict.items() if k != "stages.2.blocks.1.attn.qkv.weight"}
    with pytest.raises(ValueError, match=r"stages\.2\.blocks\.1\.attn\.qkv\.weight"):
        convert_timm_coatnet(missing, model)
    with pytest.raises(ValueError, match="no place"):
        convert_timm_coatnet(dict(state_dict, **{"stages.9.extra.weight": np.zeros(3)}), model)
    wrong_knobs = tiny(tuple(config["input_shape"]), classes=config["classes"], pre_logits=False)
    with pytest.raises(ValueError, match="head.pre_logits.fc"):
        convert_timm_coatnet(state_dict, wrong_knobs)
    with pytest.raises(ValueError, match="source_image_size"):
        load_timm_state(fixture_model(config, (128, 160, 3)), state_dict)


@pytest.mark.backend
def test_converter_resizes_tables_for_a_new_input_size():
    data, config, state_dict = load_fixture("coatnet_paper_tiny")
    model = fixture_model(config, (128, 160, 3))
    load_timm_state(model, state_dict, source_image_size=(64, 96))
    attention = model.get_layer("stage3_block1_attn")
    old = state_dict["stages.2.blocks.1.attn.rel_pos.relative_position_bias_table"]  # 4x6 grid, 3 heads
    expected = resize_relative_position_table(old.T.reshape(3, 7, 11), (8, 10))
    np.testing.assert_allclose(attention.get_weights()[0], expected, rtol=1e-6)
    assert attention.get_weights()[0].shape == (3, 15, 19)
    upsampled = data["image"].astype("float32").repeat(2, 1).repeat(2, 2)[:, :128, :160]
    assert np.isfinite(model.predict(upsampled, verbose=0)).all()


@pytest.mark.backend
def test_relative_position_index_and_attention_against_numpy():
    height, width, heads, head_dim = 3, 4, 2, 4
    index = relative_position_index(height, width).reshape(height * width, height * width)
    for q in range(height * width):
        for k in range(height * width):
            (qy, qx), (ky, kx) = divmod(q, width), divmod(k, width)
            assert index[q, k] == (qy - ky + height - 1) * (2 * width - 1) + (qx - kx + width - 1)

    layer = RelativeAttention(heads, head_dim)
    rng = np.random.default_rng(0)
    qkv = rng.normal(size=(2, height, width, 3 * heads * head_dim)).astype("float32")
    layer.build(qkv.shape)
    table = rng.normal(size=(heads, 2 * height - 1, 2 * width - 1)).astype("float32")
    layer.set_weights([table])
    out = keras.ops.convert_to_numpy(layer(qkv))

    tokens = qkv.reshape(2, height * width, 3, heads, head_dim)
    q, k, v = (tokens[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # (B, heads, N, d)
    bias = table.reshape(heads, -1)[:, index]
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + bias
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    expected = (probs @ v).transpose(0, 2, 1, 3).reshape(2, height, width, heads * head_dim)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert layer.count_macs([(height, width, 3 * heads * head_dim)], None) == 2 * heads * 144 * head_dim
    with pytest.raises(ValueError, match="expected 24 input channels"):
        RelativeAttention(heads, head_dim).build((None, 3, 4, 20))
    with pytest.raises(ValueError, match="static grid"):
        RelativePositionBias(2).build((None, None, 4, 8))


def test_table_resize_matches_tf_image_resize():
    import tensorflow as tf

    table = np.random.default_rng(1).normal(size=(12, 27, 27)).astype("float32")  # 14x14 grid (224)
    ours = resize_relative_position_table(table, (24, 24))  # 384
    theirs = tf.image.resize(table[..., None], (47, 47), method="bilinear").numpy()[..., 0]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_array_equal(resize_relative_position_table(table, (14, 14)), table)
    np.testing.assert_allclose(resize_relative_position_table(np.full((2, 7, 7), 0.3), (6, 8)), 0.3)
    # The zero-offset cell stays the centre cell.
    assert resize_relative_position_table(table, (24, 24))[:, 23, 23].shape == (12,)


@pytest.mark.backend
def test_weights_trained_at_224_load_at_384():
    source = effnet_keras.CoAtNet0()
    arrays = {layer.name: layer.get_weights() for layer in source.layers if layer.weights}
    target = effnet_keras.CoAtNet0(input_shape=(384, 384, 3))
    resized = resize_relative_position_tables(arrays, target)
    for layer in target.layers:
        if layer.weights:
            layer.set_weights(resized[layer.name])
    s3 = target.get_layer("stage3_block0_attn").get_weights()[0]
    assert s3.shape == (12, 47, 47)
    np.testing.assert_allclose(s3, resize_relative_position_table(arrays["stage3_block0_attn"][0], (24, 24)))
    qkv = target.get_layer("stage3_block0_attn_qkv").get_weights()[0]
    np.testing.assert_array_equal(qkv, arrays["stage3_block0_attn_qkv"][0])
    assert len(relative_attention_layers(target)) == 7
    assert np.isfinite(target.predict(np.full((1, 384, 384, 3), 128.0, "float32"), verbose=0)).all()
    bad = dict(arrays, stage3_block0_attn=[np.zeros((5, 27, 27), "float32")])
    with pytest.raises(ValueError, match="5 heads"):
        resize_relative_position_tables(bad, target)
    del source, target
    keras.backend.clear_session()
    gc.collect()


@pytest.mark.backend
def test_mixed_bfloat16_forward_and_train_step():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = tiny(drop_connect_rate=0.2)
        images = np.random.default_rng(0).uniform(0, 255, (4, 64, 96, 3)).astype("float32")
        assert model.get_layer("stage3_block0_attn").compute_dtype == "bfloat16"
        assert model.get_layer("stage3_block0_attn_qkv").output.dtype == "bfloat16"
        assert model.output.dtype == "float32"  # the logits layer stays float32
        probs = model.predict(images, verbose=0)
        assert np.isfinite(probs).all() and np.allclose(probs.sum(-1), 1.0, atol=1e-3)
        # TF: an eager step (tracing the train function costs ~10 s on 2 cores);
        # JAX: the jitted step (eager JAX compiles op by op, far slower).
        eager = keras.backend.backend() == "tensorflow"
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy", run_eagerly=eager)
        loss = model.train_on_batch(images, np.arange(4) % 10)
        assert np.isfinite(loss)
        assert all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.trainable_weights)
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.backend
def test_serialisation_round_trip(tmp_path):
    model = tiny(drop_connect_rate=0.1)
    path = str(tmp_path / "tiny.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    images = np.random.default_rng(2).uniform(0, 255, (2, 64, 96, 3)).astype("float32")
    np.testing.assert_allclose(restored.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
    layer = restored.get_layer("stage4_block0_attn")
    assert isinstance(layer, RelativeAttention) and (layer.num_heads, layer.head_dim) == (4, 8)


@pytest.mark.backend
def test_stochastic_depth_schedule_and_set_regularization():
    model = tiny(drop_connect_rate=0.4)
    assert model.get_layer("stage1_block0_drop").rate == 0.0
    assert model.get_layer("stage4_block1_ffn_drop").rate == pytest.approx(0.4 * 7 / 8)
    # 4 MBConv blocks (one each) + 4 Transformer blocks (attention and FFN) + head dropout.
    assert effnet_keras.set_regularization(model, dropout_rate=0.3, drop_connect_rate=0.2) == 4 + 8 + 1
    assert model.get_layer("stage3_block1_attn_drop").rate == pytest.approx(0.2 * 5 / 8)
    assert model.get_layer("top_dropout").rate == 0.3


@pytest.mark.backend
def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="multiples of 32.*100"):
        tiny(input_shape=(100, 96, 3))
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny(input_shape=(None, None, 3), include_top=False)
    with pytest.raises(ValueError, match="`downsample` must be one of"):
        tiny(downsample="pool")
    with pytest.raises(ValueError, match="`pool` must be one of"):
        tiny(pool="max3")
    with pytest.raises(ValueError, match="`padding` must be one of"):
        tiny(padding="valid")
    with pytest.raises(ValueError, match="not a multiple of head_dim=7"):
        coatnet.build_coatnet(coatnet.coatnet_spec(**TINY), input_shape=(64, 96, 3), head_dim=7)
    with pytest.raises(ValueError, match="multiple of 32"):
        coatnet.coatnet_structure_stats("coatnet-0", 200)
    with pytest.raises(ValueError, match="4 stages"):
        effnet_keras.CoAtNet(8, (1, 1, 1), (8, 16, 24))
    headless = tiny(input_shape=None, include_top=False)  # headless default: static 224
    assert headless.input_shape == (None, 224, 224, 3) and headless.output_shape == (None, 7, 7, 32)


# --- weights files saved at one input size, loaded at another (paper A.1) ---------------------------

def _bilinear_reference(table, new_hw):
    """An independent resize: Keras' image resize (TF's or JAX's kernel), each head one channel."""
    image = np.transpose(table, (1, 2, 0))[None].astype("float32")
    resized = keras.ops.image.resize(image, new_hw, interpolation="bilinear", antialias=False)
    return np.transpose(keras.ops.convert_to_numpy(resized)[0], (2, 0, 1))


@pytest.mark.backend
def test_weights_file_saved_at_another_size_loads_with_resized_tables(tmp_path, caplog):
    keras.utils.set_random_seed(0)
    source = tiny((64, 96, 3))  # S3 grid 4x6 (tables 7x11), S4 grid 2x3 (tables 3x5)
    path = str(tmp_path / "c64x96.weights.h5")
    source.save_weights(path)
    with caplog.at_level("INFO"):
        model = tiny((96, 128, 3), weights=path)  # S3 grid 6x8 (11x15), S4 grid 3x4 (5x7)
    lines = [r.getMessage() for r in caplog.records if "relative-position bias tables" in r.getMessage()]
    assert len(lines) == 1, lines
    assert path in lines[0]
    assert "stage3_block0_attn, stage3_block1_attn: 7x11 (grid 4x6) -> 11x15 (grid 6x8)" in lines[0]
    assert "stage4_block0_attn, stage4_block1_attn: 3x5 (grid 2x3) -> 5x7 (grid 3x4)" in lines[0]

    attention = {layer.name for layer in relative_attention_layers(model)}
    assert len(attention) == 4
    for name in attention:
        old = source.get_layer(name).get_weights()[0]
        new = model.get_layer(name).get_weights()[0]
        heads, h, w = old.shape
        grid = model.get_layer(name).relative_position_bias.grid_size
        assert new.shape == (heads, 2 * grid[0] - 1, 2 * grid[1] - 1) and new.shape != old.shape
        np.testing.assert_allclose(new, _bilinear_reference(old, new.shape[1:]), atol=1e-6)
        # Zero offset stays the centre cell; the corners keep the corner values (half-pixel sampling).
        np.testing.assert_allclose(new[:, new.shape[1] // 2, new.shape[2] // 2], old[:, h // 2, w // 2], atol=1e-6)
        np.testing.assert_allclose(new[:, 0, 0], old[:, 0, 0], atol=1e-6)
    # A hand-checked cell: S3 rows 7 -> 11 sample source row (1 + 0.5) * 7 / 11 - 0.5 = 0.4545...
    old = source.get_layer("stage3_block0_attn").get_weights()[0]
    new = model.get_layer("stage3_block0_attn").get_weights()[0]
    frac = 1.5 * 7 / 11 - 0.5
    np.testing.assert_allclose(new[:, 1, 0], (1 - frac) * old[:, 0, 0] + frac * old[:, 1, 0], atol=1e-6)
    for layer in model.layers:
        if layer.weights and layer.name not in attention:
            for a, b in zip(layer.get_weights(), source.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(a, b)
    out = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 96, 128, 3)).astype("float32"), verbose=0)
    assert out.shape == (2, 10) and np.isfinite(out).all()


@pytest.mark.backend
def test_weights_file_conv_shape_mismatch_names_layer_and_both_shapes(tmp_path):
    path = str(tmp_path / "c.weights.h5")
    tiny((64, 64, 3)).save_weights(path)
    wider_stem = dict(TINY, stem_filters=12)
    with pytest.raises(ValueError) as info:
        effnet_keras.CoAtNet(**wider_stem, input_shape=(64, 64, 3), classes=10, weights=path)
    message = str(info.value)
    assert "shape mismatch for layer 'stem_conv1'" in message and "stem_conv1/kernel" in message, message
    assert "the file has shape (3, 3, 3, 8), the model (3, 3, 3, 12)" in message, message
    assert path in message


@pytest.mark.backend
def test_timm_converter_infers_a_square_source_grid_and_logs_the_resize(caplog):
    _, config, state_dict = load_fixture("coatnet_paper_tiny")
    rng = np.random.default_rng(5)
    square = dict(state_dict)  # the fixture's tables, re-made for a 64x64 checkpoint (grids 4x4 and 2x2)
    for key, value in state_dict.items():
        if key.endswith("relative_position_bias_table"):
            cells = 49 if key.startswith("stages.2.") else 9
            square[key] = rng.normal(size=(cells, value.shape[1])).astype("float32")
    model = fixture_model(config, (128, 128, 3))  # grids 8x8 and 4x4
    with caplog.at_level("INFO"):
        load_timm_state(model, square)
    assert len([r for r in caplog.records if "relative-position bias tables of 4 layers" in r.getMessage()]) == 1
    table = square["stages.2.blocks.0.attn.rel_pos.relative_position_bias_table"]
    expected = _bilinear_reference(table.T.reshape(-1, 7, 7), (15, 15))
    np.testing.assert_allclose(model.get_layer("stage3_block0_attn").get_weights()[0], expected, atol=1e-6)
