"""Learning-rate schedules and optimizers for the EfficientNet / CoAtNet recipes.

The learning rate is a function of *epochs done*, not of steps, so progressive
stages with different batch sizes (issue: batch grows as images shrink) keep
one schedule: each stage is a segment with its own steps-per-epoch and a
learning-rate scale proportional to its batch size.
"""

import math

import keras
from keras import ops

from effnet_keras import _keras_internals as keras_internals

# _RecipeMixin overrides the base optimizer's private EMA step (keras_internals.OPTIMIZER_EMA_HOOK):
# a Keras that renamed it would silently skip the recipe's EMA, so fail at import instead.
keras_internals.check_private_hooks()


@keras.saving.register_keras_serializable(package="effnet_keras")
class RecipeLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up, then exponential staircase / cosine / constant decay, by epoch.

    segments: [(start_step, start_epoch, steps_per_epoch, lr_scale), ...] in step order.
    automl counts decay from step 0 (so the lr drops right after warm-up) — kept.
    """

    def __init__(self, base_lr, segments, total_epochs, sched="exponential", warmup_epochs=5.0,
                 decay_epochs=2.4, decay_factor=0.97, lr_min=0.0):
        if sched not in ("exponential", "cosine", "constant"):
            raise ValueError(f"sched must be exponential, cosine or constant. Received: {sched!r}")
        if not segments:
            raise ValueError("RecipeLearningRate needs at least one segment.")
        self.base_lr = float(base_lr)
        self.segments = [tuple(float(v) for v in s) for s in segments]
        self.total_epochs = float(total_epochs)
        self.sched = sched
        self.warmup_epochs = float(warmup_epochs)
        self.decay_epochs = float(decay_epochs)
        self.decay_factor = float(decay_factor)
        self.lr_min = float(lr_min)

    def epoch_and_scale(self, step):
        step = ops.cast(step, "float32")
        epoch = ops.zeros((), "float32")
        scale = ops.zeros((), "float32")
        for start_step, start_epoch, steps_per_epoch, lr_scale in self.segments:
            active = ops.cast(step >= start_step, "float32")
            this_epoch = start_epoch + (step - start_step) / steps_per_epoch
            epoch = active * this_epoch + (1.0 - active) * epoch
            scale = active * lr_scale + (1.0 - active) * scale
        return epoch, scale

    def lr_at_epoch(self, epoch):
        if self.sched == "exponential":
            decayed = self.base_lr * ops.power(self.decay_factor, ops.floor(epoch / self.decay_epochs))
        elif self.sched == "cosine":
            progress = ops.minimum(epoch / self.total_epochs, 1.0)
            decayed = 0.5 * self.base_lr * (1.0 + ops.cos(math.pi * progress))
        else:
            decayed = ops.convert_to_tensor(self.base_lr, "float32")
        decayed = ops.maximum(decayed, self.lr_min)
        if self.warmup_epochs > 0:
            warm = self.base_lr * epoch / self.warmup_epochs
            decayed = ops.where(epoch < self.warmup_epochs, warm, decayed)
        return decayed

    def __call__(self, step):
        epoch, scale = self.epoch_and_scale(step)
        return scale * self.lr_at_epoch(epoch)

    def get_config(self):
        return dict(base_lr=self.base_lr, segments=[list(s) for s in self.segments], total_epochs=self.total_epochs,
                    sched=self.sched, warmup_epochs=self.warmup_epochs, decay_epochs=self.decay_epochs,
                    decay_factor=self.decay_factor, lr_min=self.lr_min)


def _replicas_in_sync():
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


class _RecipeMixin:
    """automl's EMA warm-up, coupled L2 decay, and EMA kept out of the model weights.

    - EMA decay min(ema_momentum, (1 + t) / (10 + t)) (tf.train.ExponentialMovingAverage
      with num_updates): without the warm-up a 0.9999 average of a short run is
      still the random init.
    - `l2` adds l2 * w to the gradient of every kernel (>1-D variable), i.e. the
      gradient of l2 * 0.5 * sum(w**2) (automl's tf.nn.l2_loss) — coupled, as the
      RMSProp recipe trains, unlike Keras' decoupled `weight_decay`.
    - Keras overwrites the model with the EMA at the end of every `fit`; progressive
      training calls `fit` per epoch, so that is switched off and the trainer swaps
      EMA weights in for eval/export explicitly.
    """

    def __init__(self, *args, l2=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.l2 = float(l2)

    def apply(self, grads, trainable_variables=None):
        if self.l2:
            variables = (trainable_variables if trainable_variables is not None
                         else keras_internals.optimizer_trainable_variables(self))
            # Under tf.distribute, apply() runs per replica and the gradients are summed across
            # replicas afterwards: each replica adds its share of the L2 gradient.
            l2 = self.l2 / _replicas_in_sync()
            grads = [
                g + ops.cast(l2, g.dtype) * ops.cast(v, g.dtype) if g is not None and not no_decay(v) else g
                for g, v in zip(grads, variables)
            ]
        return super().apply(grads, trainable_variables)

    # Overrides keras_internals.OPTIMIZER_EMA_HOOK (checked to exist at import, above).
    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        # Keras' averages start at zero, so the first update copies the weights
        # (tf.train.ExponentialMovingAverage starts from the weights instead).
        t = ops.cast(self.iterations, "float32")
        momentum = ops.minimum(ops.cast(self.ema_momentum, "float32"), (1.0 + t) / (10.0 + t))
        momentum = ops.where(t > 0, momentum, 0.0)
        for var, average in zip(trainable_variables, keras_internals.ema_averages(self)):
            if average is None:
                continue
            m = ops.cast(momentum, var.dtype)
            average.assign(m * average + (1.0 - m) * var)

    def finalize_variable_values(self, var_list):
        return None

    def get_config(self):
        config = super().get_config()
        config["l2"] = self.l2
        return config


@keras.saving.register_keras_serializable(package="effnet_keras")
class RecipeRMSprop(_RecipeMixin, keras.optimizers.RMSprop):
    pass


@keras.saving.register_keras_serializable(package="effnet_keras")
class RecipeAdamW(_RecipeMixin, keras.optimizers.AdamW):
    pass


@keras.saving.register_keras_serializable(package="effnet_keras")
class RecipeSGD(_RecipeMixin, keras.optimizers.SGD):
    pass


def make_optimizer(train, learning_rate):
    """The recipe's optimizer for a `config_schema.TrainConfig`: RMSProp (rho 0.9, momentum 0.9, eps 1e-3)
    + coupled L2, AdamW (decoupled decay), or SGD (Nesterov) + coupled L2; EMA when train.ema_decay > 0."""
    common = dict(learning_rate=learning_rate, use_ema=train.ema_decay > 0,
                  ema_momentum=train.ema_decay if train.ema_decay > 0 else 0.99)
    if train.gclip:
        common["global_clipnorm"] = float(train.gclip)
    build = {
        "rmsprop": lambda: RecipeRMSprop(rho=0.9, momentum=0.9, epsilon=1e-3, l2=train.weight_decay, **common),
        "adamw": lambda: RecipeAdamW(weight_decay=train.weight_decay, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                                     **common),
        "sgd": lambda: RecipeSGD(momentum=0.9, nesterov=True, l2=train.weight_decay, **common),
    }
    return build[train.optimizer]()  # the schema allows exactly these (config_schema.OPTIMIZERS)


def no_decay(variable):
    """Biases, BN/LN parameters (1-D) and relative-position bias tables (timm/CoAtNet) get no weight decay."""
    return len(variable.shape) <= 1 or "relative_position" in variable.path


def exclude_from_decay(optimizer, model):
    """Tell AdamW's decoupled decay which variables to skip (the coupled L2 applies `no_decay` itself)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner, keras.optimizers.AdamW):
        inner.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if no_decay(v)])


def ema_variables(optimizer):
    """EMA copies aligned with model.trainable_variables (empty when EMA is off)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer under fp16
    return keras_internals.ema_averages(inner)


class swap_in_ema:
    """Context manager: the model's trainable variables hold the EMA values inside it."""

    def __init__(self, model, optimizer):
        self.model, self.averages = model, ema_variables(optimizer)

    def __enter__(self):
        self.saved = [v.numpy() if hasattr(v, "numpy") else keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables]
        if self.averages:
            for var, avg in zip(self.model.trainable_variables, self.averages):
                var.assign(avg)
        return self

    def __exit__(self, *exc):
        for var, value in zip(self.model.trainable_variables, self.saved):
            var.assign(value)
        return False
