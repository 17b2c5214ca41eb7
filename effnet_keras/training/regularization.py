"""Training-time control of a built model's regularisation: head dropout and stochastic depth.

Progressive learning (EfficientNetV2) changes both between stages on the same model;
the trainer calls `set_regularization` per stage and, on TensorFlow, gives the layers
runtime rate variables first so the traced train step follows the new rates. The
models only lay the layers out (`ScheduledDropout`, `StochasticDepth` with their
`schedule_fraction`); changing them is training's business, so it lives here.
"""

import keras

from effnet_keras.layers.drop import ScheduledDropout
from effnet_keras.layers.drop import StochasticDepth
from effnet_keras.layers.drop import attach_runtime_rate
from effnet_keras.layers.drop import detach_runtime_rate
from effnet_keras.layers.drop import runtime_rate
from effnet_keras.models.common import check_rate
from effnet_keras.model_parts import model_parts


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
            check_rate("dropout_rate", dropout_rate)
            layer.rate = float(dropout_rate)
        else:
            check_rate("drop_connect_rate", drop_connect_rate)
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
    head_dropout = _head_dropout(model) if dropout else None
    if head_dropout is not None:
        yield head_dropout, None
    for layer in _all_layers(model):
        if drop_connect and isinstance(layer, StochasticDepth):
            if layer.schedule_fraction is None:
                if not strict:
                    continue
                raise ValueError(
                    f"Layer {layer.name!r} has no schedule_fraction; cannot move it to a new drop_connect_rate."
                )
            yield layer, layer.schedule_fraction


def _head_dropout(model):
    """The classifier's dropout as the model's parts record names it (None for a headless model)."""
    name = model_parts(model).dropout
    return None if name is None else model.get_layer(name)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
