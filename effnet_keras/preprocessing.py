"""How a model expects its [0, 255] RGB input normalised: the modes and their constants.

A leaf module (no Keras, no TensorFlow): the builders (models/common.py), the weight
registry (a weight id can bring its own mode, e.g. AdvProp) and the data pipeline
all read the same names from here. `preprocess_input` applies a mode outside the model
(numpy only; Keras is imported only for a symbolic tensor).
"""

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# imagenet_mean_std: (x / 255 - mean) / std   (V1, V2-B0..B3)
# plus_minus_one:    (x - 128) / 128          (V2-S/M/L/XL)
# advprop:           x / 127.5 - 1            (AdvProp checkpoints, CoAtNet: timm's mean = std = 0.5)
# none:              the model takes its input as given
PREPROCESSING_MODES = ("imagenet_mean_std", "plus_minus_one", "advprop", "none")


def check_mode(mode):
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing mode must be one of {PREPROCESSING_MODES}. Received: {mode!r}")
    return mode


def _mode_scale_offset(mode, channels):
    """x * scale + offset of a mode, per channel (float32): the in-model Rescaling's constants."""
    if mode == "plus_minus_one":
        return [1.0 / 128.0] * channels, [-1.0] * channels
    if mode == "advprop":
        return [1.0 / 127.5] * channels, [-1.0] * channels
    if channels == 3:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:  # grey or extra channels: one scalar mean/std for every channel (as models/common.py)
        mean, std = [sum(IMAGENET_MEAN) / 3.0] * channels, [sum(IMAGENET_STD) / 3.0] * channels
    return [1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std)]


def preprocess_input(x, mode=None):
    """Prepare [0, 255] RGB images for a model, as `keras.applications.*.preprocess_input`.

    Our models normalise their input themselves (built with `include_preprocessing=True`,
    the default, they take float RGB in [0, 255], like keras.applications' EfficientNet),
    so by default this is a pass-through: `x` comes back as float32, values unchanged.

    A model built with `include_preprocessing=False` expects its input normalised
    already: pass the mode it was trained with (one of `PREPROCESSING_MODES`, e.g.
    `get_spec(name).preprocessing`, or the weight id's) to apply the same constants the
    in-model layer would: `x * scale + offset` per channel, in float32.

    `x`: a NumPy array (or anything `np.asarray` takes: lists, eager tensors) -> a float32
    NumPy array; a symbolic/graph tensor (inside tf.data, a traced function) stays a
    tensor of the backend.
    """
    if mode is not None:
        check_mode(mode)
    try:
        x = np.asarray(x, dtype=np.float32)
        numpy = True
    except (TypeError, ValueError, NotImplementedError):  # a symbolic tensor: np.asarray cannot read it
        import keras

        x = keras.ops.cast(x, "float32")
        numpy = False
    if mode is None or mode == "none":
        return x
    scale, offset = _mode_scale_offset(mode, int(x.shape[-1]))
    scale, offset = np.asarray(scale, np.float32), np.asarray(offset, np.float32)
    if numpy:
        return x * scale + offset
    import keras

    return keras.ops.add(keras.ops.multiply(x, scale), offset)
