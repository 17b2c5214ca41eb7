"""What every architecture builder shares: arguments, input, preprocessing, head, weights.

The builders in this package (`efficientnet.py`, `efficientnet_v2.py`,
`coatnet.py`) only lay out their blocks; the keras.applications-style contract
(argument validation, input tensor handling, in-model normalisation, pooling /
classifier head, weight loading) lives here once.
"""

import inspect
import math

import keras
from keras import layers

from effnet_keras import weights as weights_lib
from effnet_keras.layers.drop import ScheduledDropout
from effnet_keras.layers.mbconv import dense_initializer
from effnet_keras.preprocessing import IMAGENET_MEAN
from effnet_keras.preprocessing import IMAGENET_STD
from effnet_keras.preprocessing import check_mode

POOLING_MODES = (None, "avg", "max")
MIN_INPUT_SIZE = 32


def round_filters(filters, width_coefficient, divisor=8, min_depth=None, ten_percent_rule=True):
    """Scale a channel count by the width multiplier and round it to `divisor`.

    `ten_percent_rule`: the original EfficientNet (V1) never rounds down by more
    than 10 %; automl's V2 file drops that rule, which only matters at width 1.2
    (16 * 1.2 -> 16 without it, 24 with it): V1-B3 has it, V2-B3 does not.
    """
    scaled = filters * width_coefficient
    minimum = min_depth or divisor
    new_filters = max(minimum, int(scaled + divisor / 2) // divisor * divisor)
    if ten_percent_rule and new_filters < 0.9 * scaled:
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats, depth_coefficient):
    return int(math.ceil(depth_coefficient * repeats))


def validate_common_args(*, model_name, include_top, input_shape, pooling, classes, default_size):
    """The keras.applications argument checks, with the holes closed (`weights` is checked by
    `resolve_weights`).

    Returns the resolved `input_shape` (a 3-tuple, channels last).
    """
    if pooling not in POOLING_MODES:
        raise ValueError(
            f"`pooling` must be one of {POOLING_MODES} (None gives the 4-D feature map). "
            f"Received: pooling={pooling!r}"
        )
    if not isinstance(classes, int) or isinstance(classes, bool) or classes < 1:
        raise ValueError(f"`classes` must be a positive integer. Received: classes={classes!r}")
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            f"{model_name}: effnet_keras models are channels_last only (XLA picks the layout on "
            f"accelerators). Received: keras.config.image_data_format()="
            f"{keras.config.image_data_format()!r}"
        )
    if input_shape is None:
        input_shape = (default_size, default_size, 3) if include_top else (None, None, 3)
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise ValueError(
            f"`input_shape` must be a tuple of three values (height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    input_shape = tuple(input_shape)
    height, width, channels = input_shape
    if channels is None:
        raise ValueError(f"The channel count must be known. Received: input_shape={input_shape!r}")
    if include_top and (height is None or width is None):
        raise ValueError(
            "With `include_top=True` the classifier needs a static input size: pass "
            f"`input_shape=(H, W, C)` or use `include_top=False`. Received: input_shape={input_shape!r}"
        )
    for side in (height, width):
        if side is not None and side < MIN_INPUT_SIZE:
            raise ValueError(
                f"Input size must be at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} "
                f"(the network downsamples 32x). Received: input_shape={input_shape!r}"
            )
    return input_shape


def make_input(input_tensor, input_shape):
    if input_tensor is None:
        return layers.Input(shape=input_shape)
    if not keras.backend.is_keras_tensor(input_tensor):
        return layers.Input(tensor=input_tensor, shape=input_shape)
    return input_tensor


def model_inputs(input_tensor, img_input):
    if input_tensor is not None:
        return keras.utils.get_source_inputs(input_tensor)
    return img_input


def preprocessing(x, mode):
    """Normalise [0, 255] input inside the model, with constants (never weights).

    Because nothing here is a weight, the graph is the same whatever `weights`
    is, and weight files never carry normalisation statistics.
    """
    if mode == "none":
        return x
    channels = x.shape[-1]
    if mode == "plus_minus_one":
        return layers.Rescaling(1.0 / 128.0, offset=-1.0, dtype="float32", name="rescaling")(x)
    if mode == "advprop":
        # tensorflow/tpu AdvProp checkpoints were trained on x * 2 / 255 - 1 (not (x - 128) / 128).
        return layers.Rescaling(1.0 / 127.5, offset=-1.0, dtype="float32", name="rescaling")(x)
    if mode == "imagenet_mean_std":
        if channels == 3:
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        else:
            # Grey or extra channels: one scalar mean/std for every channel.
            mean = [sum(IMAGENET_MEAN) / 3.0] * channels
            std = [sum(IMAGENET_STD) / 3.0] * channels
        scale = [1.0 / (255.0 * s) for s in std]
        offset = [-m / s for m, s in zip(mean, std)]
        return layers.Rescaling(scale, offset=offset, dtype="float32", name="normalization")(x)
    check_mode(mode)
    return x


def classifier_head(x, *, include_top, pooling, classes, classifier_activation, dropout_rate, norm_epsilon=None,
                    pre_logits=False):
    """GAP -> [LayerNorm] -> [Dense + tanh] -> dropout -> Dense, or the optional pooling of a
    headless model.

    EfficientNets use the plain head; CoAtNet adds `head_norm` (`norm_epsilon`) and the
    paper's `head_pre_logits` (a width-preserving Dense + tanh). The logits layer computes
    in float32 under mixed precision, so softmax and the loss never see bf16/fp16 logits.
    The dropout layer exists even at rate 0 so a progressive schedule can turn it on
    without rebuilding the model.
    """
    if include_top:
        width = x.shape[-1]
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if norm_epsilon is not None:
            x = layers.LayerNormalization(epsilon=norm_epsilon, name="head_norm")(x)
        if pre_logits:
            x = layers.Dense(width, activation="tanh", kernel_initializer=dense_initializer(),
                             name="head_pre_logits")(x)
        x = ScheduledDropout(dropout_rate, name="top_dropout")(x)
        return layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer=dense_initializer(),
            bias_initializer="zeros",
            dtype="float32",
            name="predictions",
        )(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    return x


def resolve_weights(spec, weights, *, include_top, classes, input_shape):
    """The builder's one call about `weights`, made before any layer exists.

    Returns `effnet_keras.weights.ResolvedWeights`: the normalisation to build with
    (a weight id may bring its own) and `.load_into(model)` for the finished model.
    """
    return weights_lib.resolve(spec.name, weights, include_top=include_top, classes=classes,
                               input_shape=input_shape, preprocessing=spec.preprocessing,
                               converter=spec.family.converter, unpublished_note=spec.family.weights_note)


def check_rate(name, value):
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")


def public_builder(build_fn, spec, public_name, doc):
    """A keras.applications-style builder for one variant: `build_fn(spec, **kwargs)` with
    `spec` bound.

    The signature is declared once, on `build_fn`; the public builder gets it as its
    `__signature__` (so `help()`, `inspect` and notebook completion show every argument
    and default) and binds its arguments against it, positionally as keras.applications
    allows, or raises the usual TypeError for an unknown keyword.
    """
    parameters = [
        p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name, p in inspect.signature(build_fn).parameters.items()
        if name != "spec"
    ]
    signature = inspect.Signature(parameters)

    def builder(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        return build_fn(spec, **bound.arguments)

    builder.__name__ = builder.__qualname__ = public_name
    builder.__module__ = build_fn.__module__
    builder.__signature__ = signature
    builder.__doc__ = doc
    builder.spec = spec
    return builder
