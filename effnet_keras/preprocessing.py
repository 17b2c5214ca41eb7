"""How a model expects its [0, 255] RGB input normalised: the modes and their maths, said once.

A leaf module (no Keras, no TensorFlow): the builders' in-model normalisation layer
(models/common.py), the weight registry (a weight id brings its own mode), the exporters
(an int8 TFLite folds the mode into its input quantisation) and `preprocess_input` all
read the constants here.

Every mode is `(x - mean) / std` per channel, in pixel units:

    imagenet_mean_std   mean 255 * (0.485, 0.456, 0.406), std 255 * (0.229, 0.224, 0.225)
                        (EfficientNet V1, V2-B0..B3; keras.applications)
    centered_128        (x - 128) / 128      (V2-S/M/L/XL: automl)
    centered_127_5      (x - 127.5) / 127.5  (AdvProp checkpoints; timm's mean = std = 0.5: CoAtNet)
    centered_127_128    (x - 127) / 128      (EfficientNet-Lite: tensorflow/tpu's MEAN_RGB 127, STDDEV 128)
    none                the model takes its input as given

Modes are named by their maths; `plus_minus_one` and `advprop`, the names of earlier
releases (and of registry entries, run configs and `.keras` files written by them), are
accepted everywhere a mode is read (`canonical_mode`).
"""

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# mode -> (mean, std) in [0, 255] pixel units, one value per RGB channel.
NORMALIZATIONS = {
    "imagenet_mean_std": (tuple(255.0 * m for m in IMAGENET_MEAN), tuple(255.0 * s for s in IMAGENET_STD)),
    "centered_128": ((128.0,) * 3, (128.0,) * 3),
    "centered_127_5": ((127.5,) * 3, (127.5,) * 3),
    "centered_127_128": ((127.0,) * 3, (128.0,) * 3),
}
PREPROCESSING_MODES = (*NORMALIZATIONS, "none")
MODE_ALIASES = {"plus_minus_one": "centered_128", "advprop": "centered_127_5"}


def canonical_mode(mode):
    """The mode's name (an earlier release's alias mapped to it), or a ValueError listing the modes."""
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in PREPROCESSING_MODES:
        raise ValueError(f"preprocessing mode must be one of {PREPROCESSING_MODES} (or an earlier name: "
                         f"{', '.join(MODE_ALIASES)}). Received: {mode!r}")
    return mode


def check_mode(mode):
    return canonical_mode(mode)


def scale_offset(mode, channels=3):
    """(scale, offset) with normalised = x * scale + offset, in float32 maths: scalars when every channel
    is alike, else per-channel lists. Grey or extra channels (`channels` != 3) share one mean/std,
    the average of the RGB ones. None for mode "none"."""
    mode = canonical_mode(mode)
    if mode == "none":
        return None
    mean, std = NORMALIZATIONS[mode]
    if mode == "imagenet_mean_std":
        # Written as keras.applications' Normalization does it, x / 255 then (x - m) / s, so the
        # in-model layer's constants are the ones earlier releases saved.
        m, s = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else \
            ([sum(IMAGENET_MEAN) / 3.0] * channels, [sum(IMAGENET_STD) / 3.0] * channels)
        return [1.0 / (255.0 * v) for v in s], [-a / v for a, v in zip(m, s)]
    if channels != 3:
        mean, std = (sum(mean) / 3.0,) * channels, (sum(std) / 3.0,) * channels
    if len(set(mean)) == 1 and len(set(std)) == 1:
        return 1.0 / std[0], -mean[0] / std[0]
    return [1.0 / s for s in std], [-m / s for m, s in zip(mean, std)]


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
        mode = canonical_mode(mode)
    try:
        x = np.asarray(x, dtype=np.float32)
        numpy = True
    except (TypeError, ValueError, NotImplementedError):  # a symbolic tensor: np.asarray cannot read it
        import keras

        x = keras.ops.cast(x, "float32")
        numpy = False
    if mode is None or mode == "none":
        return x
    scale, offset = scale_offset(mode, int(x.shape[-1]))
    scale, offset = np.asarray(scale, np.float32), np.asarray(offset, np.float32)
    if numpy:
        return x * scale + offset
    import keras

    return keras.ops.add(keras.ops.multiply(x, scale), offset)
