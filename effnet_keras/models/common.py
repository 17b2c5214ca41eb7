"""What every architecture builder shares: arguments, input, preprocessing, head, weights.

The builders in this package (`efficientnet.py`, `efficientnet_v2.py`,
`coatnet.py`) only lay out their blocks; the keras.applications-style contract
(argument validation, input tensor handling, in-model normalisation, pooling /
classifier head, weight loading) lives here once.
"""

import math

import keras
from keras import layers

from effnet_keras.layers.drop import ScheduledDropout
from effnet_keras.layers.drop import StochasticDepth
from effnet_keras.layers.drop import attach_runtime_rate
from effnet_keras.layers.drop import detach_runtime_rate
from effnet_keras.layers.drop import runtime_rate
from effnet_keras.layers.mbconv import dense_initializer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# How a family expects its [0, 255] input normalised inside the model.
PREPROCESSING_MODES = ("imagenet_mean_std", "plus_minus_one", "advprop", "none")
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


def validate_common_args(
    *, model_name, include_top, weights, input_shape, pooling, classes, default_size, channels_required=None
):
    """The keras.applications argument checks, with the holes closed.

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
    from effnet_keras.weights import registry as weights_registry

    if weights_registry.looks_like_weight_id(weights):
        # A weight id: refuse an unpublished one before building anything (V2-XL is 208 M params).
        entry = weights_registry.lookup(model_name, weights)
        if include_top and classes != entry.classes:
            raise ValueError(
                f"weights={weights!r} for {model_name} has a {entry.classes}-class classifier, so with "
                f"include_top=True `classes` must be {entry.classes}. Received: classes={classes}. For another "
                "class count build with include_top=False and add a head (what the fine-tune recipes do)."
            )
    if channels_required is not None and weights is not None and channels != channels_required:
        raise ValueError(
            f"Pretrained weights for {model_name} expect {channels_required} input channels. "
            f"Received: input_shape={input_shape!r} with weights={weights!r}"
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
    raise ValueError(f"preprocessing mode must be one of {PREPROCESSING_MODES}. Received: {mode!r}")


def classifier_head(x, *, include_top, pooling, classes, classifier_activation, dropout_rate):
    """GAP -> dropout -> Dense, or the optional pooling of a headless model.

    The logits layer computes in float32 under mixed precision, so softmax and
    the loss never see bf16/fp16 logits. The dropout layer exists even at rate 0
    so a progressive schedule can turn it on without rebuilding the model.
    """
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
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


def load_weights(model, weights, *, model_name, include_top, classes):
    """`weights`: None, a weight id known to the registry, or a path to a file.

    Paths: our `.weights.h5`, a keras.applications legacy `.h5` (matched by
    layer name, normalisation layers skipped, head skipped when the model has
    none), or a `.keras` file.
    """
    if weights is None:
        return
    from effnet_keras import weights as weights_lib

    weights_lib.load_into(model, weights, model_name=model_name, include_top=include_top, classes=classes)


def set_regularization(model, dropout_rate=None, drop_connect_rate=None):
    """Change head dropout and stochastic-depth rates in place.

    Used between progressive-learning stages: the weights and the optimizer are
    untouched. Block i gets `drop_connect_rate * i / num_blocks`. Rates are Python
    floats read at trace time, so unless every changed layer has a runtime rate
    (`enable_runtime_rates`, which the TF trainer uses) the model's cached train
    function is dropped here and the next step re-traces. Returns the number of
    layers changed.
    """
    changed, retrace = 0, False
    for layer, fraction in _rate_layers(model, dropout_rate is not None, drop_connect_rate is not None):
        if fraction is None:
            _check_rate("dropout_rate", dropout_rate)
            layer.rate = float(dropout_rate)
        else:
            _check_rate("drop_connect_rate", drop_connect_rate)
            layer.rate = float(drop_connect_rate) * fraction
        variable = runtime_rate(layer)
        if variable is None:
            retrace = True
        else:
            variable.assign(layer.rate)
        changed += 1
    if retrace and hasattr(model, "train_function"):
        model.train_function = None
    return changed


def enable_runtime_rates(model):
    """Give the head dropout and every scheduled stochastic-depth layer a runtime rate variable.

    After this, `set_regularization` assigns the variables and a traced train step
    keeps working with the new rates (no re-trace per progressive stage). TensorFlow
    only: create the model's train step after calling it (inside the strategy scope
    when there is one). Returns the number of layers given a variable.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "enable_runtime_rates is for the TensorFlow backend: a JAX or torch train step takes its state "
            f"explicitly and would not see the variables. Backend: {keras.backend.backend()!r}"
        )
    count = 0
    for layer, _ in _rate_layers(model, dropout=True, drop_connect=True, strict=False):
        # A plain keras Dropout (a model from elsewhere) keeps its trace-time rate: set_regularization
        # then re-traces for it, as before.
        if not isinstance(layer, (ScheduledDropout, StochasticDepth)):
            continue
        if runtime_rate(layer) is None:
            variable = keras.Variable(float(layer.rate), trainable=False, dtype="float32",
                                      name=f"{layer.name}_runtime_rate")
            attach_runtime_rate(layer, variable)
        count += 1
    return count


def disable_runtime_rates(model):
    """Detach the runtime rate variables; each layer keeps its last rate as a Python float.

    A SavedModel export traces the model and must not capture variables that are not
    part of it; the trainer detaches them when training ends. Returns the number of layers.
    """
    count = 0
    for layer in _all_layers(model):
        if runtime_rate(layer) is not None:
            detach_runtime_rate(layer)
            count += 1
    return count


def _rate_layers(model, dropout, drop_connect, strict=True):
    """(layer, schedule_fraction) for the head dropout (fraction None) and the stochastic-depth layers.

    A stochastic-depth layer without a schedule_fraction cannot follow a new rate: an
    error when strict, else skipped.
    """
    for layer in _all_layers(model):
        if dropout and isinstance(layer, layers.Dropout) and layer.name.endswith("top_dropout"):
            yield layer, None
        if drop_connect and isinstance(layer, StochasticDepth):
            if layer.schedule_fraction is None:
                if not strict:
                    continue
                raise ValueError(
                    f"Layer {layer.name!r} has no schedule_fraction; cannot move it to a new drop-connect rate."
                )
            yield layer, layer.schedule_fraction


def _check_rate(name, value):
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1). Received: {name}={value!r}")


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
