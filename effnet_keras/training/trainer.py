"""The training loop: progressive stages, exact resume, a NaN guard; it owns the loop and nothing else.

One `model.fit` call per epoch, on a dataset whose shuffle/augmentation seed is derived from
(seed, epoch): resuming mid-epoch rebuilds that epoch's dataset and skips the batches already
done, so a killed run continues on exactly the data it would have seen. What it calls but does
not own: the checkpoints and weight files (`checkpointing.Checkpointer`), the console lines,
history and TensorBoard scalars (`reporting.Reporter`), the stage regularisation
(`regularization`), the loss and metrics (built by `run.py` and handed in compiled).
"""

import contextlib
import math
import time
import warnings

import keras
from absl import logging

from effnet_keras.training import keras_fit
from effnet_keras.training import optim
from effnet_keras.training.checkpointing import Checkpointer
from effnet_keras.training.checkpointing import NonFiniteLoss
from effnet_keras.training.checkpointing import Progress
from effnet_keras.training.regularization import disable_runtime_rates
from effnet_keras.training.regularization import enable_runtime_rates
from effnet_keras.training.regularization import set_regularization
from effnet_keras.training.reporting import EpochRun
from effnet_keras.training.reporting import Reporter
from effnet_keras.training.reporting import position


class _ExecutionCallback(keras.callbacks.Callback):
    """Per host round trip (every `steps_per_execution` steps): NaN guard, step checkpoints.

    Keras calls `on_train_batch_end` once per execution, so the loss is read on the
    host that often, never per step.
    """

    def __init__(self, trainer, plan, epoch, skip):
        super().__init__()
        self.trainer, self.plan, self.epoch, self.skip = trainer, plan, epoch, skip
        self.bad_loss = None
        self.first_execution_seconds = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.epoch_start_step = self.trainer.global_step()

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        if self.first_execution_seconds is None:
            self.first_execution_seconds = time.perf_counter() - self.start
        if not math.isfinite(loss):
            self.bad_loss = loss
            self.model.stop_training = True
            return
        step = self.trainer.global_step()
        every = self.trainer.train.checkpoint_steps
        if every and step // every != (step - self.trainer.spe) // every:
            self.trainer.save(self.epoch, self.skip + step - self.epoch_start_step, self.plan)


class Trainer:
    """Runs the stage plans on one compiled model inside a strategy scope.

    `train`: the run's `config_schema.TrainConfig`; `loss` and `metrics`: what the model is
    compiled with (run.py picks them); `make_dataset(stage, per_replica_batch, input_context,
    seed)`: one epoch's training data.
    """

    def __init__(self, *, model, strategy, train, plans, base_batch, make_dataset, model_dir, loss, metrics,
                 verbose=1):
        import tensorflow as tf

        self.tf, self.model, self.strategy, self.train, self.plans = tf, model, strategy, train, plans
        self.make_dataset, self.model_dir = make_dataset, model_dir
        self.spe = train.steps_per_execution
        replicas = strategy.num_replicas_in_sync
        # Keras 3.15's own multi-step loop fails under (MultiWorker)MirroredStrategy on TF
        # ("You must feed a value for placeholder tensor ... while/cond"), even for a one-conv
        # model; there the trainer installs a plain loop of its own (see keras_fit.install_multi_step).
        self.own_multi_step = self.spe > 1 and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy)
        with strategy.scope():
            self.optimizer = optim.make_optimizer(train, _lr_schedule(train, plans, base_batch))
            optim.exclude_from_decay(self.optimizer, model)
            model.compile(optimizer=self.optimizer, loss=loss, metrics=metrics, steps_per_execution=self.spe)
            self.optimizer.build(model.trainable_variables)
            keras_fit.build_compiled_state_once(model, plans[-1].stage.image_size)
            if self.own_multi_step:
                keras_fit.install_multi_step(model, self.spe)
        # Without XLA the traced step needs no static shapes: fed batches of unknown batch and image
        # size it is traced once for all stages (with XLA each shape compiles anyway; TPUs need
        # static shapes).
        self.relax_shapes = (len(plans) > 1 and not model.jit_compile
                             and not isinstance(strategy, tf.distribute.TPUStrategy))
        self.checkpoints = Checkpointer(model, self.optimizer, strategy, model_dir, keep=train.keep_checkpoints)
        self.is_chief = self.checkpoints.is_chief
        self.reporter = Reporter(plans, model_dir, steps_per_execution=self.spe,
                                 max_steps=train.max_steps, verbose=verbose, enabled=self.is_chief)

    def global_step(self):
        return self.checkpoints.global_step()

    # ------------------------------------------------------------------ resume

    def restore(self):
        """-> (epoch, step_in_epoch) to continue from; (0, 0) for a fresh run."""
        progress = self.checkpoints.restore()
        if progress is None:
            return 0, 0
        epoch, step = progress.epoch, progress.step_in_epoch
        plan = self.plan_for_epoch(epoch)
        if step and plan is not None and progress.batch_size and progress.batch_size != plan.batch_size:
            # Resumed on another replica count (batch rounding differs): skip the same images.
            logging.warning("Checkpoint batch %d != this run's stage batch %d; skipping %d images of epoch %d.",
                            progress.batch_size, plan.batch_size, step * progress.batch_size, epoch + 1)
            step = step * progress.batch_size // plan.batch_size
        logging.info("Resuming from %s: %s, step %d in the epoch (global step %d).", self.checkpoints.latest,
                     position(self.plans, plan or self.plans[-1], epoch), step, self.global_step())
        return epoch, step

    def plan_for_epoch(self, epoch):
        return next((p for p in self.plans if p.stage.start_epoch <= epoch < p.stage.end_epoch), None)

    def save(self, epoch, step_in_epoch, plan=None):
        plan = plan or self.plan_for_epoch(epoch) or self.plans[-1]
        progress = Progress(epoch, step_in_epoch, plan.stage.index, plan.batch_size)
        return self.checkpoints.save(progress, position(self.plans, plan, epoch))

    # ------------------------------------------------------------------ loop

    def train_stages(self):
        """Train every stage left (from the latest checkpoint); returns the history records."""
        # Stage rates become variables the compiled step reads at run time, so one traced step
        # serves every stage instead of a ~10 s re-trace per stage on CPU. Only while training:
        # the model leaves the trainer plain, so an export never captures the variables.
        with self.strategy.scope():
            enable_runtime_rates(self.model)
        try:
            return self._train_stages()
        finally:
            disable_runtime_rates(self.model)

    def _train_stages(self):
        epoch0, step0 = self.restore()
        total_epochs = self.plans[-1].stage.end_epoch
        if epoch0 >= total_epochs:
            logging.info("Training already complete (%d epochs); nothing to train.", total_epochs)
        for plan in self.plans:
            stage = plan.stage
            if stage.end_epoch <= epoch0:
                logging.info("Stage %d/%d already complete; skipping it.", stage.index + 1, len(self.plans))
                continue
            if _reached_max_steps(self.train, self.global_step()):
                break
            # Assigns the runtime rate variables; re-traces only for layers without one.
            set_regularization(self.model, dropout_rate=stage.dropout_rate, drop_connect_rate=stage.drop_connect_rate)
            self.model.make_train_function()
            self.reporter.stage_started(plan)
            for epoch in range(max(stage.start_epoch, epoch0), stage.end_epoch):
                skip = step0 if epoch == epoch0 else 0
                if skip < plan.steps_per_epoch:
                    self._run_epoch(plan, epoch, skip)
                if _reached_max_steps(self.train, self.global_step()):
                    logging.info("Reached train.max_steps=%s at %s.", self.train.max_steps,
                                 position(self.plans, plan, epoch))
                    self._save_if_unsaved(epoch + 1, plan)  # it may have ended on an unsaved epoch end
                    return self.reporter.history
            self._save_if_unsaved(stage.end_epoch, plan)
        return self.reporter.history

    def _save_if_unsaved(self, next_epoch, plan):
        """Save at an epoch boundary unless the last save already holds this step (no second ~0.25 s save)."""
        if self.checkpoints.saved_step != self.global_step():
            self.save(next_epoch, 0, plan)

    def _run_epoch(self, plan, epoch, skip):
        """Train epoch `epoch` from its step `skip` (0, or where a resumed run left off), report it, checkpoint."""
        steps = plan.steps_per_epoch - skip
        if self.train.max_steps is not None:
            steps = min(steps, self.train.max_steps - self.global_step())
        run = self._fit_epoch(self._epoch_dataset(plan, epoch, skip, steps), plan, epoch, skip, steps)
        self.reporter.epoch_done(plan, epoch, run, self.global_step(), self.optimizer.learning_rate)
        self._checkpoint_after_epoch(plan, epoch, skip + run.steps)

    def _epoch_dataset(self, plan, epoch, skip, steps):
        """The epoch's distributed dataset, seeded by (train seed, epoch): its first `skip` steps
        dropped (done before a resume), `steps` steps long."""
        per_replica = plan.batch_size // self.strategy.num_replicas_in_sync
        seed = self.train.seed * 1000 + epoch

        def dataset_fn(input_context):
            ds = self.make_dataset(plan.stage, per_replica, input_context, seed)
            if self.relax_shapes:
                ds = ds.map(keras_fit.without_static_shapes)
            # Each input pipeline feeds num_replicas / num_pipelines replicas per step.
            per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
            # Exactly `steps` steps: Keras' multi-step loop runs until the data ends.
            ds = ds.skip(skip * per_step).take(steps * per_step)
            # A dataset of known length makes Keras' fit() open a second iterator as the epoch
            # ends, for an epoch that never comes (we call fit() per epoch): a second start of
            # the pipeline, ~0.35 s with RandAugment's functions to instantiate. Unknown
            # length, steps_per_epoch given: one iterator per fit().
            return ds.filter(keras_fit.keep_all)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _fit_epoch(self, dataset, plan, epoch, skip, steps):
        """One fit() call over the epoch's `steps` steps -> EpochRun; NonFiniteLoss if the loss went non-finite."""
        callback = _ExecutionCallback(self, plan, epoch, skip)
        step_before = self.global_step()
        start = time.perf_counter()
        # Keras' own epoch lines ("Epoch 7/7": fit() runs one epoch per call) are replaced by the
        # reporter's line; verbose=1 keeps its progress bar within the epoch.
        history = self.model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps,
                                 callbacks=[callback], verbose=1 if self.reporter.verbose == 1 else 0, shuffle=False)
        seconds = time.perf_counter() - start
        if callback.bad_loss is not None:
            raise NonFiniteLoss(
                f"Loss became {callback.bad_loss} at global step {self.global_step()} "
                f"({position(self.plans, plan, epoch)}). Stopped; the last good checkpoint is "
                f"{self.checkpoints.latest}. Lower train.lr_base, enable train.gclip, or check the data."
            )
        return EpochRun(steps=self.global_step() - step_before, seconds=seconds,
                        first_execution_seconds=callback.first_execution_seconds or 0.0, metrics=history.history)

    def _checkpoint_after_epoch(self, plan, epoch, steps_done):
        """Save where the next run continues: inside the epoch if it stopped early, else at the epoch's end."""
        if steps_done < plan.steps_per_epoch:  # stopped early (train.max_steps): resume inside this epoch
            self.save(epoch, steps_done, plan)
        elif self.train.checkpoint_epochs and (epoch + 1) % self.train.checkpoint_epochs == 0:
            self.save(epoch + 1, 0, plan)

    # ------------------------------------------------------------------ eval / export

    @property
    def uses_ema(self):
        """Whether the run keeps EMA weights (train.ema_decay > 0): evaluation and export use them."""
        return bool(optim.ema_variables(self.optimizer))

    def ema_weights(self):
        """Context: the model holds its EMA weights inside (a no-op without EMA)."""
        return optim.swap_in_ema(self.model, self.optimizer) if self.uses_ema else contextlib.nullcontext()

    def evaluate(self, dataset):
        model = self.model
        if self.own_multi_step and model.steps_per_execution != 1:
            # Keras' multi-step eval loop has the same MirroredStrategy failure; eval is not hot.
            model.steps_per_execution = 1
            model.make_test_function(force=True)
        with self.ema_weights(), warnings.catch_warnings():
            # An eval set of unknown length (a folder, where unreadable files are skipped) ends by
            # running out of data, which is how it should end: not worth Keras' warning.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            results = model.evaluate(dataset, return_dict=True, verbose=0)
        return {k: float(v) for k, v in results.items()}


def _reached_max_steps(train, global_step):
    return train.max_steps is not None and global_step >= train.max_steps


def _lr_schedule(train, plans, base_batch):
    from effnet_keras.training.plan import make_lr_schedule

    return make_lr_schedule(train, plans, base_batch)
