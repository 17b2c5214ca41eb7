"""Reusable SavedModel contract, Keras 3 TFSMLayer and tf_keras hub.KerasLayer consumers, TFLite, bundle, CLI."""

import json
import os
import subprocess
import sys
import tarfile
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

import effnet_keras
import hub_export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _images(n, h, w=None, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, h, w or h, 3)).astype("float32")


def _randomise_bn(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.6, 1.0, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c),
                               rng.uniform(1.0, 2.0, c)])


@pytest.fixture(scope="module")
def nano(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = effnet_keras.EfficientNetV2Nano(input_shape=(64, 64, 3), classes=5)
    _randomise_bn(model)
    root = tmp_path_factory.mktemp("export")
    fv = hub_export.export(model, str(root / "fv"), kind="feature_vector", image_size=64, tflite=True, bundle=True)
    cls = hub_export.export(model, str(root / "cls"), kind="classification", image_size=64)
    return model, fv, cls


def test_feature_vector_contract(nano):
    model, fv, _ = nano
    assert fv["num_outputs"] == 320 and fv["max_abs_diff"] <= 1e-5
    reloaded = tf.saved_model.load(fv["saved_model"])
    pooled = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    for n, h, w in ((1, 64, 64), (7, 65, 47)):  # batch 1 and 7, odd and non-square sizes
        x = _images(n, h, w)
        out = reloaded(x, training=False).numpy()
        assert out.shape == (n, 320)
        if (h, w) == (64, 64):
            np.testing.assert_allclose(out, keras.ops.convert_to_numpy(pooled(x * 255.0)), atol=1e-5)
        assert reloaded(x, training=True).shape == (n, 320)
    names = [v.name for v in reloaded.trainable_variables]
    assert not any("moving" in n for n in names)
    assert any("moving_mean" in v.name for v in reloaded.variables)
    assert len(reloaded.trainable_variables) == len(model.trainable_variables) - 2  # no classifier
    assert list(reloaded.regularization_losses) == []
    served = reloaded.signatures["serving_default"](images=tf.constant(_images(2, 64)))
    assert list(served.values())[0].shape == (2, 320)


def test_classification_outputs_logits(nano):
    model, _, cls = nano
    reloaded = tf.saved_model.load(cls["saved_model"])
    x = _images(3, 64, seed=1)
    logits = reloaded(x).numpy()
    probs = keras.ops.convert_to_numpy(model(x * 255.0))  # the Keras model ends in softmax
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), probs, atol=1e-5)
    assert len(reloaded.trainable_variables) == len(model.trainable_variables)


def test_keras3_tfsmlayer_inference_and_training_step(nano):
    model, fv, _ = nano
    layer = keras.layers.TFSMLayer(fv["saved_model"], call_endpoint="serve", call_training_endpoint="train",
                                   trainable=True)
    inputs = keras.Input((64, 64, 3))
    head = keras.layers.Dense(3)
    clf = keras.Model(inputs, head(layer(inputs)))
    x = _images(8, 64, seed=2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               tf.saved_model.load(fv["saved_model"])(x).numpy(), atol=1e-5)
    before = [v.numpy().copy() for v in layer.trainable_variables]
    clf.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    clf.fit(x, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)
    changed = sum(not np.allclose(a, v.numpy()) for a, v in zip(before, layer.trainable_variables))
    assert changed > len(before) // 2


TF_KERAS_CONSUMER = textwrap.dedent(
    """
    import json, sys
    import numpy as np, tensorflow as tf, tensorflow_hub as hub, tf_keras
    path, size, trainable = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    layer = hub.KerasLayer(path, trainable=trainable)
    model = tf_keras.Sequential([tf_keras.layers.InputLayer(input_shape=(size, size, 3)), layer,
                                 tf_keras.layers.Dense(3)])
    x = np.random.default_rng(0).uniform(0, 1, (8, size, size, 3)).astype("float32")
    before_out = layer(x, training=False).numpy()
    train_before = [v.numpy().copy() for v in layer.trainable_weights]
    moving = [v for v in layer.weights if "moving_mean" in v.name]
    moving_before = [v.numpy().copy() for v in moving]
    model.compile(tf_keras.optimizers.SGD(0.1), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, np.arange(8) % 3, epochs=1, batch_size=8, verbose=0)
    print(json.dumps({
        "trainable_weights": len(layer.trainable_weights),
        "trainable_changed": sum(not np.allclose(a, v.numpy()) for a, v in zip(train_before, layer.trainable_weights)),
        "moving_changed": sum(not np.allclose(a, v.numpy()) for a, v in zip(moving_before, moving)),
        "moving": len(moving),
        "out": before_out.tolist(),
    }))
    """
)


def _tf_keras_consumer(path, size, trainable):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", TF_KERAS_CONSUMER, path, str(size), "1" if trainable else "0"],
                            capture_output=True, text=True, timeout=400, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def coatnet_export(tmp_path_factory):
    keras.utils.set_random_seed(1)
    model = effnet_keras.CoAtNet(8, (1, 1, 1, 1), (8, 16, 16, 32), 8, input_shape=(64, 64, 3), classes=4)
    path = str(tmp_path_factory.mktemp("coat") / "fv")
    hub_export.export(model, path, kind="feature_vector", image_size=64)
    return model, path


@pytest.mark.slow
@pytest.mark.parametrize("which", ["nano", "coatnet"])
def test_tf_keras_hub_keraslayer_fine_tunes_and_freezes(which, nano, coatnet_export):
    if which == "nano":
        model, fv, _ = nano
        path = fv["saved_model"]
        features = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    else:
        model, path = coatnet_export
        from effnet_keras.model_parts import embedding_output

        features = keras.Model(model.inputs, embedding_output(model))
    trained = _tf_keras_consumer(path, 64, trainable=True)
    assert trained["trainable_weights"] > 0 and trained["trainable_changed"] > trained["trainable_weights"] // 2
    assert trained["moving"] == 0 or trained["moving_changed"] > 0  # BN statistics update in training
    frozen = _tf_keras_consumer(path, 64, trainable=False)
    assert frozen["trainable_weights"] == 0 and frozen["moving_changed"] == 0
    x = np.random.default_rng(0).uniform(0, 1, (8, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(np.array(trained["out"]), keras.ops.convert_to_numpy(features(x * 255.0)), atol=1e-4)


def test_tflite_parity(nano):
    _, fv, _ = nano
    assert fv["tflite"]["max_abs_diff"] <= 1e-4
    from effnet_keras.export import tflite

    x = _images(1, 64, seed=3)
    reloaded = tf.saved_model.load(fv["saved_model"])  # keep a reference while calling it
    expected = reloaded.serve(tf.constant(x)).numpy()
    np.testing.assert_allclose(tflite.run(fv["tflite"]["float"], x), expected, atol=1e-4)


def test_bundle_contents(nano):
    _, fv, _ = nano
    bundle = fv["bundle"]
    with open(os.path.join(bundle, "model-metadata.json")) as f:
        meta = json.load(f)
    with open(os.path.join(bundle, "model-instance-metadata.json")) as f:
        inst = json.load(f)
    for key in ("ownerSlug", "title", "slug", "subtitle", "isPrivate", "description"):
        assert key in meta
    assert inst["framework"] == "tensorFlow2" and inst["fineTunable"] is True
    assert "hub.KerasLayer" in inst["usage"] and "TFSMLayer" in inst["usage"]
    with tarfile.open(os.path.join(bundle, "saved_model.tar.gz")) as tar:
        names = tar.getnames()
    assert "saved_model.pb" in names and any(n.startswith("variables") for n in names)
    card = open(os.path.join(bundle, "README.md")).read()
    assert "[0, 1]" in card and "Output size: 320" in card


def test_cli_from_training_run_prefers_ema(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    model = effnet_keras.build_classifier("efficientnetv2-nano", 4)
    model.save_weights(str(run / "model.weights.h5"))
    for v in model.trainable_variables:
        v.assign(v * 0.5)
    model.save_weights(str(run / "ema.weights.h5"))
    with open(run / "config.yaml", "w") as f:
        yaml.safe_dump({"model": {"name": "efficientnetv2-nano", "image_size": None},
                        "data": {"num_classes": 4}, "eval": {"image_size": 64}, "train": {"image_size": 64}}, f)
    out = str(tmp_path / "export")
    result = subprocess.run([sys.executable, "-m", "hub_export", f"--model_dir={run}", f"--export_dir={out}",
                             "--kind=classification"], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["num_outputs"] == 4 and summary["max_abs_diff"] <= 1e-5
    x = _images(2, 64)
    logits = tf.saved_model.load(out)(x).numpy()
    np.testing.assert_allclose(logits, keras.ops.convert_to_numpy(model(x * 255.0)), atol=1e-4)  # EMA weights


def test_bad_kind_is_an_error(nano):
    model, _, _ = nano
    with pytest.raises(ValueError, match=r"kind must be one of .*'logits'"):
        hub_export.export(model, "/tmp/unused", kind="logits")
