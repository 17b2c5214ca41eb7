"""Converters: timm state dicts and automl TF checkpoints give timm's own outputs (golden fixtures)."""

import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from safetensors.numpy import load_file

import effnet_keras
from effnet_keras.weights import automl_checkpoint
from effnet_keras.weights.assign import assign_by_name
from tests.weights.conftest import GOLDEN_KWARGS, TIMM_V1, TIMM_V2, tiny_v1, tiny_v2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _logits(model, x):
    return np.asarray(model.predict(x, verbose=0), dtype=np.float64)


@pytest.mark.parametrize("tag", ["v1", "v2"])
def test_timm_state_dict_gives_timm_logits(tag, golden):
    build, path = (tiny_v1, TIMM_V1) if tag == "v1" else (tiny_v2, TIMM_V2)
    model = build(weights=path, **GOLDEN_KWARGS)
    np.testing.assert_allclose(_logits(model, golden["x"]), golden[f"logits_{tag}"], atol=2e-5, rtol=1e-5)


def test_timm_state_dict_of_another_size_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="blocks|shape"):
        effnet_keras.get_model("efficientnetv2-b0", weights=TIMM_V2, classes=10, input_shape=(64, 64, 3))


# --- automl / tensorflow-tpu checkpoints, written here with the released variable names ----------

def _automl_names(state, scope):
    """timm key -> automl variable name, from the naming rules of the released checkpoints
    (written independently of the converter's tables: BNs numbered in call order, the first
    conv of a block is `conv2d`, the projection after an expansion `conv2d_1`)."""
    tf_bn = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    names, block_ids = {}, {}
    for key in state:
        if key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")
        if parts[0] == "blocks":
            where = block_ids.setdefault((parts[1], parts[2]), f"blocks_{len(block_ids)}")
            module, leaf = ".".join(parts[3:-1]), parts[-1]
        else:
            where, module, leaf = {"conv_stem": "stem", "bn1": "stem", "conv_head": "head", "bn2": "head",
                                   "classifier": "head"}[parts[0]], parts[0], parts[-1]
        if module.startswith("bn"):
            number = int(module[2:]) - 1 if where.startswith("blocks") else 0
            layer, var = "tpu_batch_normalization" + (f"_{number}" if number else ""), tf_bn[leaf]
        elif module == "conv_dw":
            layer, var = "depthwise_conv2d", "depthwise_kernel"
        elif module in ("se.conv_reduce", "se.conv_expand"):
            layer, var = "se/conv2d" + ("_1" if module.endswith("expand") else ""), "kernel" if leaf == "weight" else "bias"
        elif module == "classifier":
            layer, var = "dense", "kernel" if leaf == "weight" else "bias"
        else:  # conv_stem, conv_head, conv, conv_pw, conv_exp (first conv) / conv_pwl (projection)
            layer, var = ("conv2d_1" if module == "conv_pwl" else "conv2d"), "kernel"
        names[key] = f"{scope}/{where}/{layer}/{var}"
    return names


def _tf_layout(key, value):
    if value.ndim == 4 and value.shape[1] == 1 and "conv_dw" in key:
        return value.transpose(2, 3, 0, 1)
    if value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if value.ndim == 2:
        return value.T
    return value


def write_automl_checkpoint(path_prefix, timm_file, scope, *, ema=True, archive=None):
    """A name-based TF checkpoint with the released layout, from a timm state dict (a `.safetensors`
    path or the dict). With `ema`, the ExponentialMovingAverage copies hold the true values and the
    raw variables noise."""
    import tensorflow as tf

    state = load_file(timm_file) if isinstance(timm_file, str) else timm_file
    names, values = [], []
    rng = np.random.default_rng(0)
    for key, name in _automl_names(state, scope).items():
        value = _tf_layout(key, state[key]).astype(np.float32)
        if ema:
            names += [name, name + "/ExponentialMovingAverage"]
            values += [(value * rng.uniform(1.2, 1.8, value.shape)).astype(np.float32), value]  # keeps variances > 0
        else:
            names.append(name)
            values.append(value)
    names += ["global_step"]
    values += [np.array(1000, np.int64)]
    tf.raw_ops.SaveV2(prefix=path_prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=values)
    if archive:
        folder = os.path.dirname(path_prefix)
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(folder, arcname=os.path.basename(folder))
    return path_prefix


@pytest.mark.parametrize("tag, scope", [("v1", "efficientnet-b0"), ("v2", "efficientnetv2-b0")])
def test_automl_checkpoint_archive_prefers_ema_and_gives_timm_logits(tag, scope, golden, tmp_path):
    build, timm_file = (tiny_v1, TIMM_V1) if tag == "v1" else (tiny_v2, TIMM_V2)
    archive = str(tmp_path / f"{scope}.tgz")
    os.makedirs(tmp_path / scope)
    write_automl_checkpoint(str(tmp_path / scope / "model.ckpt"), timm_file, scope, archive=archive)
    model = build(weights=archive, **GOLDEN_KWARGS)
    np.testing.assert_allclose(_logits(model, golden["x"]), golden[f"logits_{tag}"], atol=2e-5, rtol=1e-5)
    # Without the EMA preference the noise in the raw variables shows.
    raw = build(**GOLDEN_KWARGS)
    variables = automl_checkpoint.read_checkpoint(archive)
    assign_by_name(raw, automl_checkpoint.convert_automl_checkpoint(variables, raw, prefer_ema=False), source=archive)
    assert np.abs(_logits(raw, golden["x"]) - golden[f"logits_{tag}"]).max() > 1e-2


def test_automl_checkpoint_directory_and_truncated_archive(golden, tmp_path):
    os.makedirs(tmp_path / "ckpt")
    write_automl_checkpoint(str(tmp_path / "ckpt" / "model.ckpt-1000"), TIMM_V2, "efficientnetv2-b0", ema=False)
    model = tiny_v2(weights=str(tmp_path / "ckpt"), **GOLDEN_KWARGS)
    np.testing.assert_allclose(_logits(model, golden["x"]), golden["logits_v2"], atol=2e-5, rtol=1e-5)
    archive = tmp_path / "v2.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "ckpt", arcname="ckpt")
    truncated = tmp_path / "truncated.tgz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated|tar|checkpoint"):
        tiny_v2(weights=str(truncated), **GOLDEN_KWARGS)


def test_21k_style_head_into_other_class_count_loads_backbone_and_warns(golden, tmp_path):
    os.makedirs(tmp_path / "c")
    prefix = write_automl_checkpoint(str(tmp_path / "c" / "model.ckpt"), TIMM_V2, "efficientnetv2-b0", ema=False)
    reference = tiny_v2(weights=prefix, **GOLDEN_KWARGS)
    kwargs = dict(GOLDEN_KWARGS, classes=3)
    with pytest.warns(UserWarning, match="predictions.*freshly initialised"):
        model = tiny_v2(weights=prefix, **kwargs)
    assert model.get_layer("predictions").kernel.shape == (320, 3)
    for name in ("stem_conv", "block6c_project_bn", "top_bn"):
        for a, b in zip(model.get_layer(name).get_weights(), reference.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_headless_model_loads_full_files_of_every_format(golden, tmp_path):
    full = tiny_v2(weights=TIMM_V2, **GOLDEN_KWARGS)
    native = str(tmp_path / "full.weights.h5")
    full.save_weights(native)
    features = full.get_layer("top_activation").output
    import keras

    expected = keras.Model(full.input, features).predict(golden["x"], verbose=0)
    for weights in (TIMM_V2, native):
        headless = tiny_v2(weights=weights, include_top=False, input_shape=(64, 96, 3), include_preprocessing=False)
        np.testing.assert_allclose(headless.predict(golden["x"], verbose=0), expected, atol=1e-5)


def test_convert_cli_timm_and_automl_to_native(golden, tmp_path):
    os.makedirs(tmp_path / "c")
    archive = str(tmp_path / "v2.tgz")
    write_automl_checkpoint(str(tmp_path / "c" / "model.ckpt"), TIMM_V2, "efficientnetv2-b0", archive=archive)
    for source, src in (("timm", TIMM_V2), ("automl", archive)):
        out = str(tmp_path / f"{source}.weights.h5")
        done = subprocess.run([sys.executable, "-m", "effnet_keras.cli.convert", "--from", source, "--model",
                               "efficientnetv2-nano", src, out, "--input-size", "64"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "efficientnetv2-nano" in done.stdout
        model = tiny_v2(weights=out, **GOLDEN_KWARGS)  # classes (10) came from the source's head
        np.testing.assert_allclose(_logits(model, golden["x"]), golden["logits_v2"], atol=2e-5, rtol=1e-5)
    bad = subprocess.run([sys.executable, "-m", "effnet_keras.cli.convert", "--from", "caffe", "--model", "efficientnetv2-nano",
                          TIMM_V2, str(tmp_path / "x.weights.h5")], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "caffe" in bad.stderr


def test_convert_cli_keras_applications_h5_matches_keras(tmp_path):
    import keras

    from tests.models.test_keras_parity import randomise_like_trained, write_keras_applications_h5

    keras.utils.set_random_seed(3)
    reference = keras.applications.EfficientNetV2B0(weights=None, input_shape=(64, 64, 3), classes=7,
                                                    classifier_activation=None)
    randomise_like_trained(reference)
    src, out = str(tmp_path / "efficientnetv2-b0.h5"), str(tmp_path / "b0.weights.h5")
    write_keras_applications_h5(reference, src)
    done = subprocess.run([sys.executable, "-m", "effnet_keras.cli.convert", "--from", "keras", "--model",
                           "efficientnetv2-b0", src, out, "--input-size", "64"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = effnet_keras.EfficientNetV2B0(weights=out, classes=7, input_shape=(64, 64, 3), classifier_activation=None)
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(ours.predict(images, verbose=0), reference.predict(images, verbose=0), atol=1e-4)

