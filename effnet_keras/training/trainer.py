"""The training loop: progressive stages, EMA, checkpoints, exact resume, NaN guard.

One `model.fit` call per epoch, on a dataset whose shuffle seed is derived from
(seed, epoch): resuming mid-epoch rebuilds that epoch's dataset and skips the
batches already done, so a killed run continues on exactly the data it would
have seen. Progress (stage, epoch, step in epoch) lives in the checkpoint next
to the model, optimizer and EMA state (`tf.train.CheckpointManager`: the state
file is replaced atomically, so a kill mid-save leaves the previous checkpoint).
"""

import dataclasses
import json
import math
import os
import time

import keras
from absl import logging

from effnet_keras.models.common import set_regularization
from effnet_keras.training import optim


@dataclasses.dataclass
class StagePlan:
    """A progressive stage as the trainer runs it (the schedule's Stage + batch and steps)."""

    stage: object  # effnet_keras.training.schedules.Stage
    batch_size: int  # global
    steps_per_epoch: int
    lr_scale: float
    start_step: int


def stage_batch_sizes(stages, base_batch, final_size, replicas=1, growth=True, cap=None):
    """Per-stage global batch: grows as (final_size / size)**2 (same activation memory as
    the final stage), rounded down to a multiple of replicas * 8, capped."""
    quantum = max(1, replicas) * 8
    sizes = []
    for stage in stages:
        if stage.batch_size:
            batch = int(stage.batch_size)
        elif growth:
            batch = int(base_batch * (final_size / stage.image_size) ** 2)
            if cap:
                batch = min(batch, int(cap))
            batch = max(quantum, batch // quantum * quantum) if base_batch >= quantum else base_batch
            batch = max(batch, base_batch)
        else:
            batch = base_batch
        sizes.append(batch)
    return sizes


def plan_stages(stages, base_batch, num_train, replicas=1, growth=True, cap=None):
    final_size = stages[-1].image_size
    batches = stage_batch_sizes(stages, base_batch, final_size, replicas, growth, cap)
    plans, step = [], 0
    for stage, batch in zip(stages, batches):
        steps = num_train // batch
        if steps < 1:
            raise ValueError(
                f"Stage {stage.index}: global batch {batch} is larger than the {num_train} training examples."
            )
        plans.append(StagePlan(stage, batch, steps, batch / base_batch, step))
        step += steps * (stage.end_epoch - stage.start_epoch)
    return plans


def make_schedule(train_cfg, plans, base_batch):
    base_lr = train_cfg["lr_base"] * base_batch / 256.0
    segments = [(p.start_step, p.stage.start_epoch, p.steps_per_epoch, p.lr_scale) for p in plans]
    return optim.RecipeSchedule(
        base_lr,
        segments,
        total_epochs=plans[-1].stage.end_epoch,
        sched=train_cfg["lr_sched"],
        warmup_epochs=train_cfg["lr_warmup_epoch"],
        decay_epochs=train_cfg["lr_decay_epoch"],
        decay_factor=train_cfg["lr_decay_factor"],
        lr_min=train_cfg["lr_min"] * base_batch / 256.0,
    )


class NonFiniteLoss(RuntimeError):
    pass


class _StepCallback(keras.callbacks.Callback):
    """Checkpoints every N steps, stops on a non-finite loss, measures img/s.

    `on_train_batch_end` runs once per `steps_per_execution` steps, so the loss is
    read from the host only that often — no per-step host sync.
    """

    def __init__(self, trainer, epoch, skip, batch_size, spe):
        super().__init__()
        self.trainer, self.epoch, self.skip, self.batch_size, self.spe = trainer, epoch, skip, batch_size, spe
        self.bad_loss = None
        self.steps_done = skip

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.first_batch_time = None

    def on_train_batch_end(self, batch, logs=None):
        loss = float((logs or {}).get("loss", 0.0))
        self.steps_done = self.skip + batch + 1
        if self.first_batch_time is None:
            self.first_batch_time = time.perf_counter() - self.start
        if not math.isfinite(loss):
            self.bad_loss = loss
            self.model.stop_training = True
            return
        every = self.trainer.checkpoint_every
        if every and self.trainer.global_step() // every != (self.trainer.global_step() - self.spe) // every:
            self.trainer.save(self.epoch, self.steps_done)


class Trainer:
    """Runs the stages of a plan on one model/optimizer inside a strategy scope."""

    def __init__(self, *, model, strategy, train_cfg, plans, base_batch, make_dataset, model_dir, num_train,
                 multilabel=False, verbose=1):
        import tensorflow as tf

        self.tf = tf
        self.model, self.strategy, self.cfg, self.plans = model, strategy, train_cfg, plans
        self.make_dataset, self.model_dir, self.num_train, self.verbose = make_dataset, model_dir, num_train, verbose
        self.checkpoint_every = int(train_cfg.get("checkpoint_every_steps") or 0)
        replicas = strategy.num_replicas_in_sync
        self.spe = int(train_cfg.get("steps_per_execution") or 1)
        if self.spe > 1 and replicas > 1 and not isinstance(strategy, tf.distribute.TPUStrategy):
            # Keras 3.15's multi-step loop fails under MirroredStrategy on TF
            # ("You must feed a value for placeholder tensor ... while/cond"), even for a
            # one-conv model; one step per call is correct, only slower.
            logging.warning("steps_per_execution=%d is not supported by Keras %s with %s; using 1.",
                            self.spe, keras.__version__, type(strategy).__name__)
            self.spe = 1
        with strategy.scope():
            self.optimizer = optim.make_optimizer(train_cfg, make_schedule(train_cfg, plans, base_batch))
            optim.exclude_norms_and_biases(self.optimizer, model)
            if multilabel:
                loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=train_cfg["label_smoothing"])
            else:
                loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=train_cfg["label_smoothing"])
            metrics = [keras.metrics.CategoricalAccuracy(name="top1")]
            if model.output_shape[-1] > 5:
                metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
            model.compile(optimizer=self.optimizer, loss=loss, metrics=metrics, steps_per_execution=self.spe)
            self.optimizer.build(model.trainable_variables)
            self.progress = tf.Variable([0, 0, 0], dtype=tf.int64, trainable=False, name="progress")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=self.optimizer, progress=self.progress)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, model_dir, max_to_keep=int(train_cfg.get("keep_checkpoints") or 3), checkpoint_name="ckpt"
        )
        self.history = []

    # ------------------------------------------------------------------ state

    def global_step(self):
        return int(self.optimizer.iterations.numpy())

    def restore(self):
        """-> (epoch, step_in_epoch) to continue from; (0, 0) for a fresh run."""
        latest = self.manager.latest_checkpoint
        if not latest:
            return 0, 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        epoch, step, stage = (int(v) for v in self.progress.numpy())
        logging.info("Resuming from %s: stage %d, epoch %d, step %d in epoch (global step %d).",
                     latest, stage, epoch, step, self.global_step())
        return epoch, step

    def save(self, epoch, step_in_epoch):
        stage = next(p.stage.index for p in self.plans if p.stage.start_epoch <= epoch < p.stage.end_epoch) \
            if epoch < self.plans[-1].stage.end_epoch else self.plans[-1].stage.index
        self.progress.assign([epoch, step_in_epoch, stage])
        return self.manager.save(checkpoint_number=self.global_step())

    # ------------------------------------------------------------------ loop

    def train(self):
        epoch0, step0 = self.restore()
        total_epochs = self.plans[-1].stage.end_epoch
        for plan in self.plans:
            stage = plan.stage
            if stage.end_epoch <= epoch0:
                logging.info("Stage %d already complete; skipping.", stage.index)
                continue
            set_regularization(self.model, dropout_rate=stage.dropout_rate, drop_connect_rate=stage.drop_connect_rate)
            self.model.make_train_function(force=True)
            logging.info(
                "Stage %d/%d: epochs %d-%d, image %d px, batch %d, RandAugment %.2f, mixup %.2f, cutmix %.2f, "
                "dropout %.3f, drop-connect %.3f, lr x%.2f",
                stage.index + 1, len(self.plans), stage.start_epoch, stage.end_epoch - 1, stage.image_size,
                plan.batch_size, stage.randaug_magnitude, stage.mixup_alpha, stage.cutmix_alpha, stage.dropout_rate,
                stage.drop_connect_rate, plan.lr_scale,
            )
            for epoch in range(max(stage.start_epoch, epoch0), stage.end_epoch):
                skip = step0 if epoch == epoch0 else 0
                if skip >= plan.steps_per_epoch:
                    continue
                self._run_epoch(plan, epoch, skip)
            self.save(stage.end_epoch, 0)
        if epoch0 >= total_epochs:
            logging.info("Training already complete at epoch %d.", total_epochs)
        return self.history

    def _run_epoch(self, plan, epoch, skip):
        tf = self.tf
        per_replica = plan.batch_size // self.strategy.num_replicas_in_sync
        seed = int(self.cfg.get("seed") or 0) * 1000 + epoch

        def dataset_fn(input_context):
            ds = self.make_dataset(plan.stage, per_replica, input_context, seed)
            return ds.skip(skip) if skip else ds

        dataset = self.strategy.distribute_datasets_from_function(dataset_fn)
        steps = plan.steps_per_epoch - skip
        callback = _StepCallback(self, epoch, skip, plan.batch_size, self.spe)
        start = time.perf_counter()
        history = self.model.fit(
            dataset, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps,
            callbacks=[callback] + self._extra_callbacks(), verbose=self.verbose,
        )
        seconds = time.perf_counter() - start
        if callback.bad_loss is not None:
            raise NonFiniteLoss(
                f"Loss became {callback.bad_loss} at global step {self.global_step()} (stage {plan.stage.index}, "
                f"epoch {epoch}). Stopped; the last good checkpoint is {self.manager.latest_checkpoint}. "
                "Lower train.lr_base, enable train.gclip, or check the data."
            )
        record = {
            "stage": plan.stage.index, "epoch": epoch, "image_size": plan.stage.image_size,
            "batch_size": plan.batch_size, "steps": steps, "seconds": round(seconds, 3),
            "img_per_s": round(steps * plan.batch_size / seconds, 1),
            "first_call_seconds": round(callback.first_batch_time or 0.0, 3),
            "lr": float(keras.ops.convert_to_numpy(self.optimizer.learning_rate)),
            **{k: float(v[-1]) for k, v in history.history.items()},
        }
        self.history.append(record)
        logging.info("epoch %d: %s", epoch, json.dumps(record))
        self.save(epoch + 1, 0)

    def _extra_callbacks(self):
        return [keras.callbacks.TensorBoard(os.path.join(self.model_dir, "tensorboard"), update_freq="epoch")]

    # ------------------------------------------------------------------ eval / export

    def evaluate(self, dataset, use_ema=True):
        with optim.swap_in_ema(self.model, self.optimizer) if use_ema else _nullcontext():
            results = self.model.evaluate(dataset, return_dict=True, verbose=0)
        return {k: float(v) for k, v in results.items()}

    def save_weights(self):
        """model.weights.h5 (raw) and ema.weights.h5 (EMA) — the exporter's contract."""
        raw = os.path.join(self.model_dir, "model.weights.h5")
        self.model.save_weights(raw)
        ema = os.path.join(self.model_dir, "ema.weights.h5")
        if optim.ema_variables(self.optimizer):
            with optim.swap_in_ema(self.model, self.optimizer):
                self.model.save_weights(ema)
        return raw, ema


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

