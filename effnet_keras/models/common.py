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
from effnet_keras.model_parts import LOGITS_LAYER
from effnet_keras.model_parts import EffnetModel
from effnet_keras.preprocessing import canonical_mode
from effnet_keras.preprocessing import scale_offset

POOLING_MODES = (None, "avg", "max")
MIN_INPUT_SIZE = 32
LOGITS = LOGITS_LAYER  # the classifier's name (keras.applications'; weight files match it)


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


def validate_common_args(*, model_name, include_top, input_shape, pooling, classes, default_size,
                         static_input=True):
    """The keras.applications argument checks, with the holes closed (`weights` is checked by
    `resolve_weights`). `static_input=False` (a family whose head pools globally at any size):
    a classifier may take any input size, `input_shape=(None, None, 3)`.

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
    if include_top and static_input and (height is None or width is None):
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
    is, and weight files never carry normalisation statistics. The maths of each mode
    is `effnet_keras.preprocessing`'s (`scale_offset`).
    """
    constants = scale_offset(mode, x.shape[-1])
    if constants is None:
        return x
    scale, offset = constants
    # keras.applications' names: its legacy .h5 files are matched by layer name and skip these.
    name = "normalization" if canonical_mode(mode) == "imagenet_mean_std" else "rescaling"
    return layers.Rescaling(scale, offset=offset, dtype="float32", name=name)(x)


def classifier_head(x, recorder, *, include_top, pooling, classes, classifier_activation, dropout_rate,
                    norm_epsilon=None, pre_logits=False):
    """GAP -> [LayerNorm] -> [Dense + tanh] -> dropout -> Dense, or the optional pooling of a
    headless model; each layer's part is noted in `recorder` (a `parts.PartsRecorder`).

    EfficientNets use the plain head; CoAtNet adds `head_norm` (`norm_epsilon`) and the
    paper's `head_pre_logits` (a width-preserving Dense + tanh). The logits layer computes
    in float32 under mixed precision, so softmax and the loss never see bf16/fp16 logits.
    The dropout layer exists even at rate 0 so a progressive schedule can turn it on
    without rebuilding the model.
    """
    # The head's weight layers, built or not: a weights file's head is recognised by them.
    recorder.head = (("head_norm",) if norm_epsilon is not None else ()) + \
        (("head_pre_logits",) if pre_logits else ()) + (LOGITS,)
    if not include_top:
        if pooling is None:
            return x
        pool = layers.GlobalAveragePooling2D(name="avg_pool") if pooling == "avg" else \
            layers.GlobalMaxPooling2D(name="max_pool")
        recorder.pooling = recorder.embedding = pool.name
        return pool(x)
    width = x.shape[-1]
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    recorder.pooling = recorder.embedding = "avg_pool"
    if norm_epsilon is not None:
        x = layers.LayerNormalization(epsilon=norm_epsilon, name="head_norm")(x)
        recorder.embedding = "head_norm"
    if pre_logits:
        x = layers.Dense(width, activation="tanh", kernel_initializer=dense_initializer(),
                         name="head_pre_logits")(x)
        recorder.embedding = "head_pre_logits"
    x = ScheduledDropout(dropout_rate, name="top_dropout")(x)
    recorder.dropout = "top_dropout"
    recorder.logits = LOGITS
    return layers.Dense(
        classes,
        activation=classifier_activation,
        kernel_initializer=dense_initializer(),
        bias_initializer="zeros",
        dtype="float32",
        name=LOGITS,
    )(x)


def finish_model(inputs, outputs, name, recorder, resolved):
    """The model with its parts record (`parts.EffnetModel`), its weights loaded."""
    model = EffnetModel(inputs, outputs, name=name, parts=recorder.finish())
    resolved.load_into(model)
    return model


def block_drop_rates(num_blocks, drop_connect_rate):
    """[(rate, schedule_fraction)] of block i of N: stochastic depth grows linearly, rate * i / N
    (the EfficientNet paper's rule, also CoAtNet's); the fraction lets a trainer move every
    block to a new global rate between progressive stages."""
    fractions = [i / float(num_blocks) for i in range(num_blocks)]
    return [(drop_connect_rate * fraction, fraction) for fraction in fractions]


def resolve_weights(spec, weights, *, input_shape):
    """The builder's one call about `weights`, made before any layer exists.

    Returns `effnet_keras.weights.ResolvedWeights`: the normalisation to build with
    (a weight id may bring its own) and `.load_into(model)` for the finished model.
    """
    return weights_lib.resolve(spec.name, weights, input_shape=input_shape, preprocessing=spec.preprocessing,
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
