"""TFLite files of an export: float32, float16 weights, and full-integer int8, each checked before it is written.

    float   model_float32.tflite  the SavedModel's inference function at one static size, input
            float32 [1, S, S, 3] RGB in [0, 1] (the export's contract); max |diff| to the
            SavedModel <= 1e-4 or it is not written
    fp16    model_fp16.tflite     float16 weights, float32 compute and I/O (half the size, any
            CPU/GPU delegate); checked like int8 below
    int8    model_int8.tflite     full-integer post-training quantisation (tensorflow/tpu's
            export_model.py recipe): TFLITE_BUILTINS_INT8 ops only, **uint8 input of raw pixels
            [0, 255]** with the model's normalisation folded into the input quantisation (an app,
            an Edge TPU or an NPU feeds the camera's bytes), uint8 (default) or float32 output.
            Calibrated on real images; checked against the float model on images held out from
            calibration (top-1 agreement and the mean KL divergence of the softmax) and refused
            below `min_agreement`.

Folding the normalisation: for a model whose normalisation is the same for every channel
((x - 127) / 128, (x - 128) / 128, (x - 127.5) / 127.5) the int8 model starts after the
model's own normalisation layer, so the input's quantisation (scale 1/std, zero point mean) *is*
the normalisation and the app's uint8 pixel is the model's input. (A zero point is an integer: CoAtNet's
(x - 127.5) / 127.5 is folded with zero point 127, half a grey level off.) ImageNet's per-channel
mean/std cannot be one per-tensor quantisation: those models keep the normalisation inside, as a quantised
op after a uint8 input of scale 1 and zero point 0. Either way the app feeds raw pixels. The
calibration pins the input range to exactly [0, 255] (one pixel of the first calibration image is
set to 0 and one to 255) so the quantisation parameters are these exact values.

Files are run with LiteRT's interpreter (`ai-edge-litert`) when it is installed, else with
`tf.lite.Interpreter` (deprecated in TF 2.21 in LiteRT's favour).
"""

import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from effnet_keras import fileio

FLOAT, FP16, INT8 = "model_float32.tflite", "model_fp16.tflite", "model_int8.tflite"
KINDS = ("float", "fp16", "int8")
OUTPUT_TYPES = ("uint8", "float32")
MIN_CALIBRATION_IMAGES = 10


class QuantizationError(ValueError):
    """An int8 / fp16 model that cannot be written: not fully quantised, or too far from the float model."""


# ---------------------------------------------------------------------- running


def interpreter(model, threads=None):
    """A LiteRT interpreter (tf.lite's when LiteRT is not installed) for a path (local or a bucket) or bytes."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # LiteRT not installed: TF's own, without its deprecation notice each time
        Interpreter = tf.lite.Interpreter
    if isinstance(model, (bytes, bytearray)):
        content = bytes(model)
    else:
        content = fileio.read_bytes(model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        runner = Interpreter(model_content=content, num_threads=threads)
    runner.allocate_tensors()
    return runner


def run(model, images, threads=None):
    """Run a TFLite model on `images` as its input takes them (float [0, 1] for float / fp16 files);
    one image at a time (the files have batch 1). Returns float32 outputs (dequantised)."""
    runner = interpreter(model, threads)
    inp, out = runner.get_input_details()[0], runner.get_output_details()[0]
    rows = []
    for image in np.asarray(images):
        runner.set_tensor(inp["index"], np.asarray(image[None], dtype=inp["dtype"]))
        runner.invoke()
        rows.append(_dequantize(runner.get_tensor(out["index"]), out))
    return np.concatenate(rows)


def run_pixels(model, pixels, threads=None):
    """Run any of our TFLite files on RGB pixels in [0, 255]: raw uint8 for an int8 file, [0, 1] floats otherwise."""
    runner_input = interpreter(model).get_input_details()[0]
    pixels = np.asarray(pixels, "float32")
    if runner_input["dtype"] == np.uint8:
        return run(model, np.clip(np.round(pixels), 0, 255).astype(np.uint8), threads)
    return run(model, pixels / 255.0, threads)


def _dequantize(values, details):
    scale, zero_point = details.get("quantization", (0.0, 0))
    if details["dtype"] in (np.uint8, np.int8) and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


# ---------------------------------------------------------------------- float and fp16 (from the SavedModel)


def _static_serving(export_dir, image_size):
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    reloaded = tf.saved_model.load(export_dir)
    # `serve` is traced for any size; TFLite needs one static shape, so re-trace through it.
    static = tf.function(lambda images: reloaded.serve(images),
                         input_signature=[tf.TensorSpec([1, height, width, 3], tf.float32)])
    return reloaded, static.get_concrete_function(), (height, width)


def convert(export_dir, image_size, atol=1e-4):
    """The float file -> {"float": path, "max_abs_diff": d}: written only if it matches the SavedModel."""
    reloaded, concrete, (height, width) = _static_serving(export_dir, image_size)
    flat = tf.lite.TFLiteConverter.from_concrete_functions([concrete], reloaded).convert()
    images = np.random.default_rng(0).uniform(0, 1, (1, height, width, 3)).astype("float32")
    expected = reloaded.serve(tf.constant(images)).numpy()
    diff = float(np.abs(expected - run(flat, images)).max())
    scale = max(1.0, float(np.abs(expected).max()))
    if diff > atol * scale:
        raise RuntimeError(f"TFLite float model differs from the SavedModel by {diff:.3g}; not writing it.")
    path = os.path.join(export_dir, FLOAT)
    fileio.write_bytes(path, flat)  # checked first, then written atomically (local or bucket)
    return {"float": path, "max_abs_diff": diff}


def convert_fp16(export_dir, image_size, reference, holdout, min_agreement):
    """float16 weights -> {"fp16": path, checks}; `reference(pixels) -> float outputs` is the float model."""
    reloaded, concrete, _ = _static_serving(export_dir, image_size)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], reloaded)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    flat = converter.convert()
    checks = agreement(reference(holdout), run_pixels(flat, holdout))
    _refuse_below(checks, min_agreement, "fp16")
    path = os.path.join(export_dir, FP16)
    fileio.write_bytes(path, flat)
    return {"fp16": path, "fp16_check": checks}


# ---------------------------------------------------------------------- int8


def split_calibration(pixels, holdout_fraction=0.2):
    """(calibration, held out) from real images [N, S, S, 3] in [0, 255]: the last fifth (at least 2) held out."""
    pixels = np.asarray(pixels, "float32")
    if len(pixels) < MIN_CALIBRATION_IMAGES:
        raise QuantizationError(f"int8 calibration needs at least {MIN_CALIBRATION_IMAGES} images; got {len(pixels)}. "
                                "Pass a folder of representative images with --calibration_dir.")
    held = max(2, int(round(len(pixels) * holdout_fraction)))
    return pixels[:-held], pixels[-held:]


def _integer_network(model):
    """(a tf.function of one [1, S, S, 3] float input, the map from [0, 255] pixels to that input, the
    expected (scale, zero point) of the uint8 input): the model after its normalisation when that is
    the same for every channel (folded into the input quantisation), else the whole model."""
    import keras

    from effnet_keras import preprocessing
    from effnet_keras.model_parts import model_parts

    mode = model_parts(model).normalization
    mean, std = preprocessing.NORMALIZATIONS.get(mode, ((0.0,) * 3, (1.0,) * 3))
    first = model.layers[1] if len(model.layers) > 1 else None
    uniform = len(set(mean)) == 1 and len(set(std)) == 1
    if mode != "none" and uniform and isinstance(first, keras.layers.Rescaling):
        # The same layers and weights, called from a new input placed after the normalisation.
        tail = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                        call_function=lambda layer, *args, **kwargs:
                                        args[0] if layer is first else layer(*args, **kwargs))
        return tail, lambda pixels: (pixels - mean[0]) / std[0], (1.0 / std[0], mean[0])
    return model, lambda pixels: pixels, (1.0, 0.0)


def convert_int8(model, export_dir, image_size, calibration, holdout, *, output_type="uint8", min_agreement=0.98):
    """Full-integer int8 file -> {"int8": path, "int8_check": {...}, "int8_input": {...}}.

    `model`: the Keras model the export was made from (its outputs: logits or features);
    `calibration` / `holdout`: real images [N, S, S, 3] in [0, 255] (`split_calibration`).
    Raises QuantizationError, naming the first op left in float, or the agreement it fell short of.
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"int8 output type must be one of {OUTPUT_TYPES}. Received: {output_type!r}")
    network, to_input, expected_quantization = _integer_network(model)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    calibration = np.array(calibration, "float32")
    calibration[0, 0, 0, :], calibration[0, -1, -1, :] = 0.0, 255.0  # pins the input range to [0, 255]
    inputs = to_input(calibration).astype("float32")

    @tf.function(input_signature=[tf.TensorSpec([1, *size, 3], tf.float32)])
    def serve(x):
        return tf.cast(network(x, training=False), tf.float32)

    def representative():
        for sample in inputs:
            yield [sample[None]]

    with tempfile.TemporaryDirectory(prefix="effnet_int8_") as tmp:
        # Through a SavedModel: the converter freezes restored variables into constants (a function
        # that captures live Keras variables keeps them as variables, which calibration cannot read).
        holder = tf.Module()
        holder.network, holder.serve = network, serve
        tf.saved_model.save(holder, tmp, signatures={"serving_default": serve.get_concrete_function()})
        flat = _quantize(tmp, representative, output_type)
    input_details = interpreter(flat).get_input_details()[0]

    scale, zero_point = input_details["quantization"]
    # A zero point is an integer: (x - 127.5) / 127.5 is folded to within half a grey level.
    if abs(scale - expected_quantization[0]) > 1e-6 or abs(zero_point - expected_quantization[1]) > 0.5:
        raise QuantizationError(f"int8 input quantisation is (scale {scale:.6g}, zero point {zero_point}), not the "
                                f"model's normalisation {expected_quantization}: the app's raw pixels would be "
                                "misread. Calibrate on real images in [0, 255].")
    checks = agreement(_float_outputs(model, holdout), run_pixels(flat, holdout))
    _refuse_below(checks, min_agreement, "int8")
    path = os.path.join(export_dir, INT8)
    fileio.write_bytes(path, flat)
    return {"int8": path, "int8_check": checks,
            "int8_input": {"dtype": "uint8", "feeds": "raw RGB pixels [0, 255]", "scale": float(scale),
                           "zero_point": int(zero_point)},
            "int8_output": output_type, "calibration_images": int(len(calibration))}


def _quantize(saved_model_dir, representative, output_type):
    reloaded = tf.saved_model.load(saved_model_dir)
    # Re-traced through the reloaded function, as the float file: from_saved_model would keep the
    # variables as READ_VARIABLE ops, which the calibrator cannot read.
    signature = reloaded.signatures["serving_default"].structured_input_signature[1]
    spec = next(iter(signature.values()))
    concrete = tf.function(lambda x: reloaded.serve(x), input_signature=[spec]).get_concrete_function()

    def converter(strict):
        c = tf.lite.TFLiteConverter.from_concrete_functions([concrete], reloaded)
        c.optimizations = [tf.lite.Optimize.DEFAULT]
        c.representative_dataset = representative
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if strict else \
            [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        c.inference_input_type = tf.uint8
        c.inference_output_type = tf.uint8 if output_type == "uint8" else tf.float32
        return c

    try:
        flat = converter(strict=True).convert()
    except Exception as err:  # noqa: BLE001  (TF's converter errors: which op, in its own words)
        try:
            first = first_float_op(converter(strict=False).convert())
        except Exception:  # noqa: BLE001
            first = None
        raise QuantizationError(_not_integer(first or str(err).strip().splitlines()[0][:300])) from None
    # The converter is lenient even with TFLITE_BUILTINS_INT8 alone: an op without an int8 kernel
    # stays float between a dequantize and a quantize. An integer-only accelerator cannot run that.
    first = first_float_op(flat)
    if first is not None:
        raise QuantizationError(_not_integer(first))
    return flat


def first_float_op(flat):
    """The name of the first tensor a TFLite model computes in float32 (its dequantized output and the
    dequantize ops themselves aside), or None for a fully integer model."""
    runner = interpreter(flat)
    outputs = {d["index"] for d in runner.get_output_details()}
    for tensor in runner.get_tensor_details():
        name = tensor["name"]
        if tensor["dtype"] == np.float32 and tensor["index"] not in outputs and not name.startswith("tfl.dequantize"):
            return name
    return None


def _not_integer(first):
    return (f"the int8 converter cannot quantise the whole model to integer ops (TFLITE_BUILTINS_INT8): the first "
            f"op left in float is {first!r}. Export float (--tflite) or fp16 (--tflite=fp16) instead, or replace "
            "that op.")


def _float_outputs(model, pixels):
    return np.asarray(model.predict(np.asarray(pixels, "float32"), batch_size=16, verbose=0), "float64")


def _softmax(x):
    x = np.asarray(x, "float64")
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def agreement(expected, got):
    """top-1 agreement and mean KL(softmax(expected) || softmax(got)) over the held-out images."""
    p, q = _softmax(expected), _softmax(got)
    kl = np.sum(p * (np.log(np.maximum(p, 1e-12)) - np.log(np.maximum(q, 1e-12))), axis=-1)
    return {"images": int(len(p)), "top1_agreement": float(np.mean(p.argmax(-1) == q.argmax(-1))),
            "mean_kl": float(kl.mean())}


def _refuse_below(checks, min_agreement, kind):
    if checks["top1_agreement"] < min_agreement:
        raise QuantizationError(
            f"the {kind} model agrees with the float model on {checks['top1_agreement']:.1%} of "
            f"{checks['images']} held-out images (mean KL {checks['mean_kl']:.3g}), below --min_agreement="
            f"{min_agreement}; not writing it. Try more, and more representative, calibration images "
            "(--calibration_dir), --tflite=fp16 (no calibration), or a lower --min_agreement if you accept it.")
