"""ONNX for every family: model.onnx beside the SavedModel, run by onnxruntime, equal to the Keras model.

CoAtNet is the case Keras' own `model.export(format="onnx")` gets wrong: its exact GELU becomes an
`Erfc` node that onnxruntime cannot load.
"""

import json

import keras
import numpy as np
import pytest

import effnet_keras
from effnet_keras.cli import export as export_cli
from effnet_keras.export import onnx as onnx_lib

import onnxruntime  # noqa: E402  (the test extra installs onnx, onnxruntime, tf2onnx: missing is a failure, not a skip)
SIZE = 64


def _run(path, images):
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-lite0", "efficientnetv2-nano", "coatnet-0"])
def test_every_family_converts_and_matches(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = effnet_keras.get_model(name, input_shape=(SIZE, SIZE, 3), classes=6, classifier_activation=None)
    result = onnx_lib.convert(model, str(tmp_path), SIZE)
    assert result["onnx_max_abs_diff"] <= 1e-4
    images = np.random.default_rng(1).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(_run(result["onnx"], images), model.predict(images * 255, verbose=0), atol=1e-4)


def test_gelu_is_written_with_erf():
    import onnx

    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(4, activation="gelu", name="d")(keras.layers.Activation("gelu")(
        inputs)))
    copy = onnx_lib._with_erf_gelu(model)
    x = np.linspace(-4, 4, 16, dtype="float32").reshape(2, 8)
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert all(getattr(layer, "activation", None) is not keras.activations.gelu for layer in copy.layers)
    assert onnx.__version__


def test_cli_onnx_feature_vector(tmp_path, capsys):
    assert export_cli.main(["--model_name", "efficientnetv2-nano", "--weights", "none", "--image_size", str(SIZE),
                            "--export_dir", str(tmp_path / "fv"), "--onnx"]) == 0
    result = json.loads(capsys.readouterr().out)
    images = np.random.default_rng(2).uniform(0, 1, (2, SIZE, SIZE, 3)).astype("float32")
    import tensorflow as tf

    reloaded = tf.saved_model.load(str(tmp_path / "fv"))  # held: its variables live as long as it does
    expected = reloaded.serve(tf.constant(images)).numpy()
    assert result["onnx"] == str(tmp_path / "fv" / "model.onnx")
    np.testing.assert_allclose(_run(result["onnx"], images), expected, atol=1e-4)
