"""The training loop: progressive stages, EMA, checkpoints, exact resume, NaN guard.

One `model.fit` call per epoch, on a dataset whose shuffle/augmentation seed is
derived from (seed, epoch): resuming mid-epoch rebuilds that epoch's dataset and
skips the batches already done, so a killed run continues on exactly the data it
would have seen. Progress (epoch, step in epoch, stage, batch) lives in the
checkpoint next to the model, optimizer, EMA and RNG state. `tf.train.CheckpointManager`
writes the data files first and replaces the `checkpoint` state file last
(atomically), so a kill mid-save leaves the previous checkpoint as the latest.

Why not Keras `BackupAndRestore`: it resumes at an epoch (or a step with
`save_freq`) of *one* `fit` call; progressive training spans many calls whose
datasets differ per stage, and needs stage and EMA state in the same atomic record.
"""

import json
import math
import os
import time
import warnings
from typing import NamedTuple

import keras
from absl import logging

from effnet_keras import _keras_internals as keras_internals
from effnet_keras import fileio
from effnet_keras.training.regularization import disable_runtime_rates
from effnet_keras.training.regularization import enable_runtime_rates
from effnet_keras.training.regularization import set_regularization
from effnet_keras.training import optim
from effnet_keras.training.plan import StagePlan  # noqa: F401  (re-exported for callers)

PROGRESS_FIELDS = ("epoch", "step_in_epoch", "stage", "batch_size")


class NonFiniteLoss(RuntimeError):
    pass


class _EpochRun(NamedTuple):
    """What one epoch's fit() call did."""

    steps: int  # optimizer steps taken
    seconds: float  # wall time of the fit() call
    first_execution_seconds: float  # up to the end of its first host round trip (may include tracing)
    metrics: dict  # Keras' History.history of the call


class ScalarWriter:
    """TensorBoard scalars via TF's core summary ops (the `tensorboard` package is not needed
    to write them, only to view them)."""

    def __init__(self, logdir, enabled=True):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self.tf, self.enabled = tf, enabled
        self.writer = tf.summary.create_file_writer(logdir) if enabled else None
        self.metadata = summary_pb2.SummaryMetadata()
        self.metadata.plugin_data.plugin_name = "scalars"

    def write(self, step, scalars):
        if not self.enabled:
            return
        with self.writer.as_default():
            for name, value in scalars.items():
                self.tf.summary.write(name, self.tf.constant(float(value)), step=int(step), metadata=self.metadata)
        self.writer.flush()


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
        every = self.trainer.checkpoint_every
        if every and step // every != (step - self.trainer.spe) // every:
            self.trainer.save(self.epoch, self.skip + step - self.epoch_start_step, self.plan)


class Trainer:
    """Runs the stage plans on one model and optimizer inside a strategy scope."""

    def __init__(self, *, model, strategy, train_cfg, plans, base_batch, make_dataset, model_dir,
                 loss="softmax", verbose=1):
        import tensorflow as tf

        self.tf = tf
        self.model, self.strategy, self.cfg, self.plans = model, strategy, train_cfg, plans
        self.make_dataset, self.model_dir, self.verbose = make_dataset, model_dir, verbose
        self.checkpoint_every = int(train_cfg.get("checkpoint_every_steps") or 0)
        epochs_every = train_cfg.get("checkpoint_every_epochs")
        self.checkpoint_every_epochs = 1 if epochs_every is None else int(epochs_every)
        self.max_steps = train_cfg.get("max_steps")
        self.spe = int(train_cfg.get("steps_per_execution") or 1)
        replicas = strategy.num_replicas_in_sync
        # Keras 3.15's own multi-step loop fails under (MultiWorker)MirroredStrategy on TF
        # ("You must feed a value for placeholder tensor ... while/cond"), even for a one-conv
        # model; there the trainer installs a plain loop of its own (see _install_multi_step).
        self.own_multi_step = self.spe > 1 and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy)
        self.is_chief = _is_chief(strategy)
        with strategy.scope():
            self.optimizer = optim.make_optimizer(train_cfg, _make_schedule(train_cfg, plans, base_batch))
            optim.exclude_from_decay(self.optimizer, model)
            smoothing = float(train_cfg["label_smoothing"])
            if loss == "sigmoid":
                loss_fn = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=smoothing)
            else:
                loss_fn = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=smoothing)
            metrics = [keras.metrics.CategoricalAccuracy(name="top1")]
            if model.output_shape[-1] > 5:
                metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
            model.compile(optimizer=self.optimizer, loss=loss_fn, metrics=metrics, steps_per_execution=self.spe)
            self.optimizer.build(model.trainable_variables)
            _build_compiled_state_once(model, plans[-1].stage.image_size)
            if self.own_multi_step:
                _install_multi_step(model, self.spe)
            self.progress = tf.Variable([0] * len(PROGRESS_FIELDS), dtype=tf.int64, trainable=False, name="progress")
        # Without XLA the traced step needs no static shapes: fed batches of unknown batch and image
        # size it is traced once for all stages (with XLA each shape compiles anyway; TPUs need
        # static shapes).
        self.relax_shapes = (len(plans) > 1 and not model.jit_compile
                             and not isinstance(strategy, tf.distribute.TPUStrategy))
        # Dropout / stochastic-depth RNG state: tf.train.Checkpoint does not reach Keras'
        # SeedGenerators through the model, and a resumed run must draw the same masks.
        rng = keras_internals.seed_generator_states(model)
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=self.optimizer, progress=self.progress, rng=rng)
        # Multi-worker: every worker takes part in a save; only the chief's lands in model_dir.
        ckpt_dir = model_dir if self.is_chief else os.path.join(model_dir, f".worker-{_task_id(strategy)}")
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, ckpt_dir, max_to_keep=int(train_cfg.get("keep_checkpoints") or 3), checkpoint_name="ckpt"
        )
        self.scalars = ScalarWriter(os.path.join(model_dir, "tensorboard", "train"), enabled=self.is_chief)
        self.history = []
        self._traced_stages = set()
        self._saved_step = None

    # ------------------------------------------------------------------ state

    def global_step(self):
        return int(self.optimizer.iterations.numpy())

    def restore(self):
        """-> (epoch, step_in_epoch) to continue from; (0, 0) for a fresh run."""
        latest = self.tf.train.latest_checkpoint(self.model_dir)
        if not latest:
            return 0, 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        epoch, step, stage, batch = (int(v) for v in self.progress.numpy())
        plan = self.plan_for_epoch(epoch)
        if step and plan is not None and batch and batch != plan.batch_size:
            # Resumed on another replica count (batch rounding differs): skip the same images.
            logging.warning("Checkpoint batch %d != this run's stage batch %d; skipping %d images of epoch %d.",
                            batch, plan.batch_size, step * batch, epoch + 1)
            step = step * batch // plan.batch_size
        logging.info("Resuming from %s: %s, step %d in the epoch (global step %d).",
                     latest, self._position(self.plan_for_epoch(epoch) or self.plans[-1], epoch), step,
                     self.global_step())
        return epoch, step

    def _position(self, plan, epoch):
        """'stage 2/3, epoch 7/18': what a person reads (1-based, out of the run's totals).
        History records and checkpoints keep 0-based indices (`stage`, `epoch`)."""
        return (f"stage {plan.stage.index + 1}/{len(self.plans)}, "
                f"epoch {epoch + 1}/{self.plans[-1].stage.end_epoch}")

    def plan_for_epoch(self, epoch):
        return next((p for p in self.plans if p.stage.start_epoch <= epoch < p.stage.end_epoch), None)

    def save(self, epoch, step_in_epoch, plan=None):
        plan = plan or self.plan_for_epoch(epoch) or self.plans[-1]
        if not self._weights_finite():
            raise NonFiniteLoss(
                f"Weights became non-finite by global step {self.global_step()} ({self._position(plan, epoch)}); "
                f"not saving them. The last good checkpoint is {self.manager.latest_checkpoint}. "
                "Lower train.lr_base, enable train.gclip, or check the data."
            )
        self.progress.assign([epoch, step_in_epoch, plan.stage.index, plan.batch_size])
        path = self.manager.save(checkpoint_number=self.global_step())
        self._saved_step = self.global_step()
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

    def _stop_at_max_steps(self):
        return self.max_steps is not None and self.global_step() >= int(self.max_steps)

    # ------------------------------------------------------------------ loop

    def train(self):
        # Stage rates become variables the compiled step reads at run time, so one traced step
        # serves every stage instead of a ~10 s re-trace per stage on CPU. Only while training:
        # the model leaves the trainer plain, so an export never captures the variables.
        with self.strategy.scope():
            enable_runtime_rates(self.model)
        try:
            return self._train()
        finally:
            disable_runtime_rates(self.model)

    def _train(self):
        epoch0, step0 = self.restore()
        total_epochs = self.plans[-1].stage.end_epoch
        if epoch0 >= total_epochs:
            logging.info("Training already complete (%d epochs); nothing to train.", total_epochs)
        for plan in self.plans:
            stage = plan.stage
            if stage.end_epoch <= epoch0:
                logging.info("Stage %d/%d already complete; skipping it.", stage.index + 1, len(self.plans))
                continue
            if self._stop_at_max_steps():
                break
            # Assigns the runtime rate variables; re-traces only for layers without one.
            set_regularization(self.model, dropout_rate=stage.dropout_rate, drop_connect_rate=stage.drop_connect_rate)
            self.model.make_train_function()
            self._log_stage(plan)
            for epoch in range(max(stage.start_epoch, epoch0), stage.end_epoch):
                skip = step0 if epoch == epoch0 else 0
                if skip < plan.steps_per_epoch:
                    self._run_epoch(plan, epoch, skip)
                if self._stop_at_max_steps():
                    logging.info("Reached train.max_steps=%s at %s.", self.max_steps, self._position(plan, epoch))
                    self._save_if_unsaved(epoch + 1, plan)  # it may have ended on an unsaved epoch end
                    return self.history
            self._save_if_unsaved(stage.end_epoch, plan)
        return self.history

    def _save_if_unsaved(self, next_epoch, plan):
        """Save at an epoch boundary unless the last save already holds this step (no second ~0.25 s save)."""
        if self._saved_step != self.global_step():
            self.save(next_epoch, 0, plan)

    def _log_stage(self, plan):
        stage = plan.stage
        logging.info(
            "Stage %d/%d: epochs %d-%d of %d, image %d px, batch %d (%d steps/epoch, lr x%.2f), RandAugment %.2f, "
            "mixup %.2f, cutmix %.2f, dropout %.3f, drop-connect %.3f",
            stage.index + 1, len(self.plans), stage.start_epoch + 1, stage.end_epoch, self.plans[-1].stage.end_epoch,
            stage.image_size,
            plan.batch_size, plan.steps_per_epoch, plan.lr_scale, stage.randaug_magnitude, stage.mixup_alpha,
            stage.cutmix_alpha, stage.dropout_rate, stage.drop_connect_rate,
        )
        self.scalars.write(plan.start_step, {
            "stage/index": stage.index, "stage/image_size": stage.image_size, "stage/batch_size": plan.batch_size,
            "stage/randaug_magnitude": stage.randaug_magnitude, "stage/mixup_alpha": stage.mixup_alpha,
            "stage/cutmix_alpha": stage.cutmix_alpha, "stage/dropout_rate": stage.dropout_rate,
            "stage/drop_connect_rate": stage.drop_connect_rate,
        })

    def _run_epoch(self, plan, epoch, skip):
        """Train epoch `epoch` from its step `skip` (0, or where a resumed run left off), record it, checkpoint."""
        steps = plan.steps_per_epoch - skip
        if self.max_steps is not None:
            steps = min(steps, int(self.max_steps) - self.global_step())
        dataset = self._epoch_dataset(plan, epoch, skip, steps)
        run = self._fit_epoch(dataset, plan, epoch, skip, steps)
        self._record_epoch(plan, epoch, run)
        self._checkpoint_after_epoch(plan, epoch, skip + run.steps)

    def _epoch_dataset(self, plan, epoch, skip, steps):
        """The epoch's distributed dataset, seeded by (train seed, epoch): its first `skip` steps
        dropped (done before a resume), `steps` steps long."""
        per_replica = plan.batch_size // self.strategy.num_replicas_in_sync
        seed = int(self.cfg.get("seed") or 0) * 1000 + epoch

        def dataset_fn(input_context):
            ds = self.make_dataset(plan.stage, per_replica, input_context, seed)
            if self.relax_shapes:
                ds = ds.map(_without_static_shapes)
            # Each input pipeline feeds num_replicas / num_pipelines replicas per step.
            per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
            # Exactly `steps` steps: Keras' multi-step loop runs until the data ends.
            ds = ds.skip(skip * per_step).take(steps * per_step)
            # A dataset of known length makes Keras' fit() open a second iterator as the epoch
            # ends, for an epoch that never comes (we call fit() per epoch): a second start of
            # the pipeline, ~0.35 s with RandAugment's functions to instantiate. Unknown
            # length, steps_per_epoch given: one iterator per fit().
            return ds.filter(_keep_all)

        return self.strategy.distribute_datasets_from_function(dataset_fn)

    def _fit_epoch(self, dataset, plan, epoch, skip, steps):
        """One fit() call over the epoch's `steps` steps -> _EpochRun; NonFiniteLoss if the loss went non-finite."""
        callback = _ExecutionCallback(self, plan, epoch, skip)
        step_before = self.global_step()
        start = time.perf_counter()
        # Keras' own epoch lines ("Epoch 7/7": fit() runs one epoch per call) are replaced by
        # _record_epoch's line; verbose=1 keeps its progress bar within the epoch.
        history = self.model.fit(dataset, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps,
                                 callbacks=[callback], verbose=1 if self.verbose == 1 else 0, shuffle=False)
        seconds = time.perf_counter() - start
        if callback.bad_loss is not None:
            raise NonFiniteLoss(
                f"Loss became {callback.bad_loss} at global step {self.global_step()} ({self._position(plan, epoch)}). "
                f"Stopped; the last good checkpoint is {self.manager.latest_checkpoint}. "
                "Lower train.lr_base, enable train.gclip, or check the data."
            )
        return _EpochRun(steps=self.global_step() - step_before, seconds=seconds,
                         first_execution_seconds=callback.first_execution_seconds or 0.0, metrics=history.history)

    def _record_epoch(self, plan, epoch, run):
        """The epoch's entry in self.history, its log lines and its TensorBoard scalars."""
        done, seconds, first = run.steps, run.seconds, run.first_execution_seconds
        steady, compile_seconds = self._step_timing(plan, run)
        record = {
            "stage": plan.stage.index, "epoch": epoch, "image_size": plan.stage.image_size,
            "batch_size": plan.batch_size, "steps": done, "seconds": round(seconds, 3),
            "img_per_s": round(done * plan.batch_size / seconds, 1),
            "first_execution_seconds": round(first, 3),
            "compile_seconds": compile_seconds,
            "steady_img_per_s": round(plan.batch_size / steady, 1) if steady else None,
            "lr": float(keras.ops.convert_to_numpy(self.optimizer.learning_rate)),
            **{k: float(v[-1]) for k, v in run.metrics.items()},
        }
        self.history.append(record)
        logging.vlog(1, "epoch record: %s", json.dumps(record))
        if self.verbose:
            print(self._epoch_line(plan, epoch, record), flush=True)
        self.scalars.write(self.global_step(), {
            f"epoch/{k}": v for k, v in record.items() if k not in ("stage", "epoch") and v is not None
        })

    def _epoch_line(self, plan, epoch, record):
        """One line a person can follow: where in the run, how fast, how well, how long to go."""
        metrics = "  ".join(f"{k} {record[k]:.4f}" for k in ("loss", "top1") if record.get(k) is not None)
        compile_note = f" (+{record['compile_seconds']:.1f} s compile)" if record["compile_seconds"] else ""
        return (f"{self._position(plan, epoch)}  {plan.stage.image_size} px  batch {plan.batch_size}  "
                f"{record['img_per_s']:.0f} img/s{compile_note}  {metrics}  ETA {self._eta(plan, epoch, record)}")

    def _eta(self, plan, epoch, record):
        """Time left for the whole run, from this epoch's speed: later stages scaled by their
        pixels per step (image size^2 x batch) relative to this one."""
        seconds_per_step = record["seconds"] / max(1, record["steps"])
        if record["steady_img_per_s"]:
            seconds_per_step = plan.batch_size / record["steady_img_per_s"]
        work = plan.stage.image_size ** 2 * plan.batch_size
        left = (plan.stage.end_epoch - epoch - 1) * plan.steps_per_epoch * seconds_per_step
        for later in self.plans[plan.stage.index + 1:]:
            scale = later.stage.image_size ** 2 * later.batch_size / work
            left += (later.stage.end_epoch - later.stage.start_epoch) * later.steps_per_epoch * seconds_per_step * scale
        if self.max_steps is not None:  # a capped run ends sooner
            left = min(left, max(0, int(self.max_steps) - self.global_step()) * seconds_per_step)
        left = int(round(left))
        return f"{left // 3600}:{left % 3600 // 60:02d}:{left % 60:02d}"

    def _step_timing(self, plan, run):
        """-> (seconds per steady step or None, the stage's first-execution overhead or None after its first epoch)."""
        done, first = run.steps, run.first_execution_seconds
        # Seconds per step after the first host round trip (which may include tracing).
        steady = (run.seconds - first) / (done - self.spe) if done > self.spe else None
        if plan.stage.index in self._traced_stages:
            return steady, None
        # The stage's first execution: a trace/compile when the step meets a new input shape
        # (without XLA only the first stage: shapes are relaxed). Report that cost once.
        self._traced_stages.add(plan.stage.index)
        return steady, round(max(0.0, first - min(done, self.spe) * (steady or 0.0)), 3)

    def _checkpoint_after_epoch(self, plan, epoch, steps_done):
        """Save where the next run continues: inside the epoch if it stopped early, else at the epoch's end."""
        if steps_done < plan.steps_per_epoch:  # stopped early (train.max_steps): resume inside this epoch
            self.save(epoch, steps_done, plan)
        elif self.checkpoint_every_epochs and (epoch + 1) % self.checkpoint_every_epochs == 0:
            self.save(epoch + 1, 0, plan)

    # ------------------------------------------------------------------ eval / export

    def evaluate(self, dataset, use_ema=True):
        model = self.model
        if self.own_multi_step and model.steps_per_execution != 1:
            # Keras' multi-step eval loop has the same MirroredStrategy failure; eval is not hot.
            model.steps_per_execution = 1
            model.make_test_function(force=True)
        with optim.swap_in_ema(model, self.optimizer) if use_ema else _nullcontext(), warnings.catch_warnings():
            # An eval set of unknown length (a folder, where unreadable files are skipped) ends by
            # running out of data, which is how it should end: not worth Keras' warning.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            results = model.evaluate(dataset, return_dict=True, verbose=0)
        return {k: float(v) for k, v in results.items()}

    def save_weights(self):
        """model.weights.h5 (raw) and ema.weights.h5 (EMA): what fine-tuning and the exporter load."""
        raw = os.path.join(self.model_dir, "model.weights.h5")
        ema = os.path.join(self.model_dir, "ema.weights.h5")
        if not self.is_chief:
            return raw, ema
        _atomic_save_weights(self.model, raw)
        if optim.ema_variables(self.optimizer):
            with optim.swap_in_ema(self.model, self.optimizer):
                _atomic_save_weights(self.model, ema)
        return raw, ema


def _build_compiled_state_once(model, image_size):
    """Build the loss/metric state from shapes, once, and stop fit() from doing it per call.

    Keras 3.15's TF fit() starts every dataset's iterator, pulls one batch and all-reduces
    it just to build metrics — on each call (for us: each epoch, a second pipeline start
    with its shuffle-buffer fill), and under MultiWorkerMirroredStrategy that eager reduce
    fails ("Attempt to convert a value (PerReplica ...)"). Once built from shapes there is
    nothing left for it to build.
    """
    import numpy as np

    classes = model.output_shape[-1]
    # On a Keras without these internals it does nothing: fit() keeps its own behaviour.
    keras_internals.build_compiled_state_once(model, (np.zeros((1, image_size, image_size, 3), "float32"),
                                                      np.zeros((1, classes), "float32")))


def _keep_all(*_):
    import tensorflow as tf

    return tf.constant(True)


def _without_static_shapes(images, labels):
    """Identity that forgets the batch and image sizes (PlaceholderWithDefault's output has the given shape)."""
    import tensorflow as tf

    images = tf.raw_ops.PlaceholderWithDefault(input=images, shape=[None, None, None, images.shape[-1]])
    labels = tf.raw_ops.PlaceholderWithDefault(input=labels, shape=[None] + labels.shape[1:].as_list())
    return images, labels


def _install_multi_step(model, steps_per_execution):
    """Run up to `steps_per_execution` steps per host round trip in one tf.function.

    The loop stops early when the iterator runs dry (the last execution of an epoch
    whose steps are not a multiple of steps_per_execution).
    """
    import tensorflow as tf

    def make_train_function():
        strategy = model.distribute_strategy

        def one_step(data):
            outputs = strategy.run(model.train_step, args=(data,))
            return keras_internals.reduce_per_replica(outputs, strategy, reduction="auto")

        @tf.function(reduce_retracing=True)  # as Keras' own: one size-agnostic trace for all stages
        def multi_step(iterator):
            outputs = one_step(next(iterator))
            for _ in tf.range(steps_per_execution - 1):
                data = iterator.get_next_as_optional()
                if not data.has_value():
                    break
                outputs = one_step(data.get_value())
            return outputs

        return multi_step

    keras_internals.install_train_function(model, make_train_function)


def _make_schedule(train_cfg, plans, base_batch):
    from effnet_keras.training.plan import make_lr_schedule

    return make_lr_schedule(train_cfg, plans, base_batch)


def _atomic_save_weights(model, path):
    fileio.save_weights(model, path)  # local and bucket paths: complete under the final name


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


def _task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return f"{getattr(resolver, 'task_type', 'worker')}-{getattr(resolver, 'task_id', 0)}"


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
