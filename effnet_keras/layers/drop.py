"""Stochastic depth and the head's dropout, with rates a trainer can change without re-tracing.

A rate is a Python float (read when a step function is traced) unless a runtime
rate is attached (`attach_runtime_rate`): a backend variable the traced step
reads at run time, so a progressive trainer changes rates between stages by
assigning it, keeping its compiled step. The variable is held outside Keras' and
TF's tracking (a plain holder object), so model weights and checkpoints are the
same with or without it. Only the TensorFlow trainer attaches them: a JAX or torch
step takes its state explicitly and would not see the assignments.
"""

import keras
from keras import ops


class _RuntimeRate:
    """Holds the variable out of reach of Keras' tracker and tf.Module's auto-tracking."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable


def attach_runtime_rate(layer, variable):
    """Make `layer` (StochasticDepth or ScheduledDropout) read its rate from `variable` at run time."""
    if not isinstance(layer, (StochasticDepth, ScheduledDropout)):
        raise TypeError(f"Runtime rates are for StochasticDepth and ScheduledDropout layers. Received: {layer!r}")
    layer._runtime_rate = _RuntimeRate(variable)


def detach_runtime_rate(layer):
    """Undo `attach_runtime_rate`: the layer reads its Python float `rate` again."""
    layer._runtime_rate = None


def runtime_rate(layer):
    holder = getattr(layer, "_runtime_rate", None)
    return None if holder is None else holder.variable


def _drop(inputs, rate, noise_shape, seed_generator):
    """Inverted dropout with a tensor rate: keep with probability 1 - rate, scale kept values by 1 / (1 - rate)."""
    keep = 1.0 - ops.cast(rate, "float32")
    # Draw in float32: bf16/fp16 uniforms are too coarse for a fair coin.
    random = keras.random.uniform(noise_shape, seed=seed_generator, dtype="float32")
    mask = ops.cast(random < keep, "float32") / keep
    return inputs * ops.cast(mask, inputs.dtype)


@keras.saving.register_keras_serializable(package="effnet_keras")
class StochasticDepth(keras.layers.Layer):
    """Drops the residual branch of each sample with probability `rate`.

    Kept samples are scaled by `1 / (1 - rate)` at train time so inference needs
    no rescaling (the "inverted" form automl and timm use).

    `schedule_fraction` is the block's position in the network (block_index /
    num_blocks). It lets `effnet_keras.set_regularization` move every block to a
    new global drop-connect rate between progressive-learning stages: the block
    then uses `rate = drop_connect_rate * schedule_fraction`, the linear schedule
    of the EfficientNet paper. `rate` is a Python float read when the step is
    traced, unless a runtime rate is attached (module docstring).
    """

    def __init__(self, rate=0.0, schedule_fraction=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"StochasticDepth rate must be in [0, 1). Received: rate={rate}")
        self.rate = float(rate)
        self.schedule_fraction = None if schedule_fraction is None else float(schedule_fraction)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        rate = runtime_rate(self)
        if not training or (rate is None and self.rate == 0.0):
            return inputs
        batch = ops.shape(inputs)[0]
        noise_shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        return _drop(inputs, self.rate if rate is None else rate, noise_shape, self.seed_generator)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, schedule_fraction=self.schedule_fraction, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="effnet_keras")
class ScheduledDropout(keras.layers.Dropout):
    """keras.layers.Dropout that can read its rate from a runtime variable (the classifier head's dropout)."""

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        if not 0 <= rate <= 1:
            raise ValueError(f"Dropout rate must be in [0, 1]. Received: rate={rate}")
        # Keras' Dropout creates its SeedGenerator only for rate > 0 and then locks the layer's
        # state; a progressive schedule may raise a 0 rate later, so build with a positive rate.
        super().__init__(rate if rate > 0 else 0.5, noise_shape=noise_shape, seed=seed, **kwargs)
        self.rate = rate

    def call(self, inputs, training=False):
        rate = runtime_rate(self)
        if rate is None or not training:
            return super().call(inputs, training=training)
        noise_shape = self.noise_shape if self.noise_shape is not None else ops.shape(inputs)
        return _drop(inputs, rate, noise_shape, self.seed_generator)
