"""How a model expects its [0, 255] RGB input normalised: the modes and their constants.

A leaf module (no Keras, no TensorFlow): the builders (models/common.py), the weight
registry (a weight id can bring its own mode, e.g. AdvProp) and the data pipeline
all read the same names from here.
"""

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
