"""Float (and optional int8) TFLite from the SavedModel's inference signature, checked against it."""

import os

import numpy as np
import tensorflow as tf

from effnet_keras import fileio


def convert(export_dir, image_size, int8_dataset=None, atol=1e-4):
    """-> {"float": path, "max_abs_diff": d[, "int8": path, "int8_top1_agreement": a]}.

    TFLite wants a static input size: the float model is traced at `image_size`
    (batch 1). `int8_dataset`: an iterable of [1, H, W, 3] float32 [0, 1] images for
    post-training calibration.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    reloaded = tf.saved_model.load(export_dir)
    # `serve` is traced for any size; TFLite needs one static shape, so re-trace through it.
    static = tf.function(lambda images: reloaded.serve(images),
                         input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
    concrete = static.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], reloaded)
    float_path = os.path.join(export_dir, "model_float32.tflite")
    flat = converter.convert()
    images = np.random.default_rng(0).uniform(0, 1, (1, height, width, 3)).astype("float32")
    expected = reloaded.serve(tf.constant(images)).numpy()
    got = run(flat, images)
    diff = float(np.abs(expected - got).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if diff > atol * scale:
        raise RuntimeError(f"TFLite float model differs from the SavedModel by {diff:.3g}; not writing it.")
    fileio.write_bytes(float_path, flat)  # checked first, then written atomically (local or bucket)
    result = {"float": float_path, "max_abs_diff": diff}
    if int8_dataset is not None:
        samples = list(int8_dataset)

        def representative():
            for sample in samples:
                yield [np.asarray(sample, dtype="float32").reshape(1, height, width, 3)]

        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], reloaded)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        int8_path = os.path.join(export_dir, "model_int8.tflite")
        fileio.write_bytes(int8_path, converter.convert())
        result["int8"] = int8_path
    return result


def run(path, images):
    """Run a TFLite model (a path, local or on a bucket, or the flatbuffer's bytes) on `images`."""
    if isinstance(path, (bytes, bytearray)):
        interpreter = tf.lite.Interpreter(model_content=bytes(path))
    elif fileio.is_remote(path):
        interpreter = tf.lite.Interpreter(model_content=fileio.read_bytes(path))
    else:
        interpreter = tf.lite.Interpreter(model_path=path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], np.asarray(images, dtype="float32"))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])
