"""model.onnx beside the SavedModel, for every family, checked with onnxruntime before it is written.

The ONNX file has the export's contract: input `images` float32 [batch, S, S, 3] RGB in [0, 1]
(NHWC, any batch, the export's image size), output the SavedModel's (logits for a classifier,
pooled features for a feature vector). It is converted with tf2onnx (opset 17) from the Keras
model, run with onnxruntime on a few images, and written only if it matches the Keras model
(max |diff| <= 1e-4, relative to the output's scale).

GELU: TensorFlow's exact GELU is computed with `erfc`, which tf2onnx writes as an `Erfc` node
that onnxruntime has no kernel for (CoAtNet's file would not load). The converted copy computes
the same function as 0.5 x (1 + erf(x / sqrt 2)) (ONNX `Erf`); the check above holds it to the
original model.

Needs the `onnx` extra: `pip install "effnet-keras[onnx]"` (tf2onnx, onnx, onnxruntime).
"""

import math
import os

import keras
import numpy as np

from effnet_keras import fileio

FILE = "model.onnx"
OPSET = 17


class OnnxExportError(ValueError):
    """The ONNX file could not be made, or does not match the Keras model (not written)."""


def gelu_erf(x):
    """Exact GELU as 0.5 x (1 + erf(x / sqrt 2)): the same function, in ops ONNX runtimes implement."""
    return 0.5 * x * (1.0 + keras.ops.erf(x / math.sqrt(2.0)))


def _is_gelu(activation):
    return activation is keras.activations.gelu or getattr(activation, "__name__", "") == "gelu"


def _with_erf_gelu(model):
    """A copy of `model` sharing its weights, every exact GELU computed with erf."""
    def clone(layer):
        activation = getattr(layer, "activation", None)
        if activation is None or not _is_gelu(activation):
            return layer
        if getattr(layer, "approximate", False):
            return layer
        config = layer.get_config()
        config["activation"] = gelu_erf
        copy = layer.__class__.from_config(config)
        copy.build(layer.input.shape)
        copy.set_weights(layer.get_weights())
        return copy

    return keras.models.clone_model(model, clone_function=clone)


def _dependencies():
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as err:
        raise OnnxExportError(f"ONNX export needs tf2onnx, onnx and onnxruntime ({err.name} is missing): "
                              'pip install "effnet-keras[onnx]".') from None
    return tf2onnx, onnxruntime


def convert(reference, export_dir, image_size, atol=1e-4, seed=0):
    """`reference`: the Keras model whose outputs the export has ([0, 255] input). -> {"onnx": path, ...}."""
    import tensorflow as tf

    tf2onnx, onnxruntime = _dependencies()
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    network = _with_erf_gelu(reference)
    spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="images")

    @tf.function(input_signature=[spec])
    def serve(images):
        return tf.cast(network(images * 255.0, training=False), tf.float32)

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=OPSET)
        flat = proto.SerializeToString()
        session = onnxruntime.InferenceSession(flat, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001  (tf2onnx / onnxruntime errors, first line)
        raise OnnxExportError(f"ONNX conversion of {reference.name} failed: {str(err).strip().splitlines()[0][:400]}") \
            from None
    images = np.random.default_rng(seed).uniform(0, 1, (3, height, width, 3)).astype("float32")
    expected = np.asarray(reference.predict(images * 255.0, verbose=0), "float64")
    got = session.run(None, {session.get_inputs()[0].name: images})[0]
    diff = float(np.abs(got - expected).max())
    if diff > atol * max(1.0, float(np.abs(expected).max())):
        raise OnnxExportError(f"the ONNX file differs from the Keras model by {diff:.3g} (allowed {atol}); not "
                              "writing it.")
    path = os.path.join(export_dir, FILE)
    fileio.write_bytes(path, flat)
    return {"onnx": path, "onnx_max_abs_diff": diff, "onnx_opset": OPSET,
            "onnx_input": "images float32 [batch, H, W, 3] RGB in [0, 1] (NHWC)"}
