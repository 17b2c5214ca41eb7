"""Where a run can continue from: the checkpoint (model, optimizer, EMA, RNG, progress) and the weight files.

Progress (epoch, step in the epoch, stage, batch) lives in the checkpoint next to the model,
optimizer, EMA and the dropout / stochastic-depth RNG state, so one atomic record says where
to resume. `tf.train.CheckpointManager` writes the data files first and replaces the
`checkpoint` state file last (atomically), so a kill mid-save leaves the previous checkpoint
as the latest. Non-finite weights are never saved.

Why not Keras `BackupAndRestore`: it resumes at an epoch (or a step with `save_freq`) of
*one* `fit` call; progressive training spans many calls whose datasets differ per stage, and
needs stage and EMA state in the same atomic record.
"""

import os
from typing import NamedTuple

from effnet_keras import _keras_internals as keras_internals
from effnet_keras import fileio
from effnet_keras.rundir import EMA_WEIGHTS
from effnet_keras.rundir import RAW_WEIGHTS
from effnet_keras.training import optim
from effnet_keras.training.strategy import is_chief
from effnet_keras.training.strategy import task_id

PROGRESS_FIELDS = ("epoch", "step_in_epoch", "stage", "batch_size")


class NonFiniteLoss(RuntimeError):
    pass


class Progress(NamedTuple):
    """Where a checkpoint stopped (0-based): epoch, step inside it, stage, the stage's global batch."""

    epoch: int
    step_in_epoch: int
    stage: int
    batch_size: int


class Checkpointer:
    """The run's checkpoints and weight files, for one model and optimizer inside a strategy scope."""

    def __init__(self, model, optimizer, strategy, model_dir, keep=3):
        import tensorflow as tf

        self.tf, self.model, self.optimizer, self.model_dir = tf, model, optimizer, model_dir
        self.is_chief = is_chief(strategy)
        with strategy.scope():
            self.progress = tf.Variable([0] * len(PROGRESS_FIELDS), dtype=tf.int64, trainable=False, name="progress")
        # Dropout / stochastic-depth RNG state: tf.train.Checkpoint does not reach Keras'
        # SeedGenerators through the model, and a resumed run must draw the same masks.
        rng = keras_internals.seed_generator_states(model)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, progress=self.progress, rng=rng)
        # Multi-worker: every worker takes part in a save; only the chief's lands in model_dir.
        directory = model_dir if self.is_chief else os.path.join(model_dir, f".worker-{task_id(strategy)}")
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep, checkpoint_name="ckpt")
        self.saved_step = None

    @property
    def latest(self):
        return self.manager.latest_checkpoint

    def global_step(self):
        return int(self.optimizer.iterations.numpy())

    def restore(self):
        """The Progress of the latest checkpoint (restored into the model and optimizer), or None."""
        latest = self.tf.train.latest_checkpoint(self.model_dir)
        if not latest:
            return None
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        return Progress(*(int(v) for v in self.progress.numpy()))

    def save(self, progress, where):
        """Save with `progress` (a Progress); `where` names the position in the NonFiniteLoss message."""
        if not self._weights_finite():
            raise NonFiniteLoss(
                f"Weights became non-finite by global step {self.global_step()} ({where}); not saving them. "
                f"The last good checkpoint is {self.latest}. Lower train.lr_base, enable train.gclip, or check "
                "the data."
            )
        self.progress.assign(list(progress))
        path = self.manager.save(checkpoint_number=self.global_step())
        self.saved_step = self.global_step()
        if not self.is_chief:
            fileio.rmtree(self.manager.directory)
        return path

    def _weights_finite(self):
        if not hasattr(self, "_finite_fn"):
            tf = self.tf
            variables = list(self.model.trainable_variables)
            self._finite_fn = tf.function(
                lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(tf.cast(v, tf.float32))) for v in variables])
            )
        return bool(self._finite_fn())

    def save_weights(self):
        """(model.weights.h5 (raw), ema.weights.h5 (EMA) or None without EMA): what fine-tuning, predict
        and the exporter load."""
        raw = os.path.join(self.model_dir, RAW_WEIGHTS)
        ema = os.path.join(self.model_dir, EMA_WEIGHTS) if optim.ema_variables(self.optimizer) else None
        if not self.is_chief:
            return raw, ema
        fileio.save_weights(self.model, raw)  # local and bucket paths: complete under the final name
        if ema is not None:
            with optim.swap_in_ema(self.model, self.optimizer):
                fileio.save_weights(self.model, ema)
        return raw, ema
