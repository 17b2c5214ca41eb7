"""Stochastic depth: drop a whole residual branch per sample."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="effnet_keras")
class StochasticDepth(keras.layers.Layer):
    """Drops the residual branch of each sample with probability `rate`.

    Kept samples are scaled by `1 / (1 - rate)` at train time so inference needs
    no rescaling (the "inverted" form automl and timm use).

    `schedule_fraction` is the block's position in the network (block_index /
    num_blocks). It lets `effnet_keras.set_regularization` move every block to a
    new global drop-connect rate between progressive-learning stages: the block
    then uses `rate = drop_connect_rate * schedule_fraction`, the linear schedule
    of the EfficientNet paper. `rate` is a plain Python float, read when the
    step function is traced; a trainer that changes it must re-trace.
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
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        batch = ops.shape(inputs)[0]
        noise_shape = (batch,) + (1,) * (len(inputs.shape) - 1)
        # Draw in float32: bf16/fp16 uniforms are too coarse for a fair coin.
        random = keras.random.uniform(noise_shape, seed=self.seed_generator, dtype="float32")
        mask = ops.cast(random < keep, inputs.dtype) / ops.cast(keep, inputs.dtype)
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, schedule_fraction=self.schedule_fraction, seed=self.seed)
        return config
