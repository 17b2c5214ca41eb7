"""How the trainer runs a progressive schedule: per-stage global batch, steps, lr scale.

TF-free (keras.ops only), so the JAX/GPU stage benchmark uses the same rule as
the trainer. Issue 9: small images underfill an accelerator at a fixed batch,
so by default a stage's batch grows as its image area shrinks — the same
activation memory as the final stage — and its learning rate grows with the
batch (linear scaling). An epoch stays one pass over the data, so a stage with
a bigger batch runs fewer steps per epoch; the lr schedule is a function of
epochs done, so warm-up and decay keep their length in epochs.
"""

import dataclasses

from effnet_keras.config_schema import ConfigError
from effnet_keras.models import registry
from effnet_keras.training import optim


@dataclasses.dataclass
class StagePlan:
    """A progressive stage as the trainer runs it: the schedule's Stage plus batch and steps."""

    stage: object  # effnet_keras.training.progressive.Stage
    batch_size: int  # global (all replicas)
    steps_per_epoch: int
    lr_scale: float  # batch_size / base batch: this stage's lr multiplier
    start_step: int  # global step at which the stage starts

    @property
    def num_epochs(self):
        return self.stage.end_epoch - self.stage.start_epoch

    @property
    def end_step(self):
        return self.start_step + self.steps_per_epoch * self.num_epochs

    def to_dict(self):
        return {**self.stage.to_dict(), "batch_size": self.batch_size, "steps_per_epoch": self.steps_per_epoch,
                "lr_scale": self.lr_scale, "start_step": self.start_step}


def batch_quantum(replicas):
    """Grown batches are multiples of replicas * 8 (whole per-replica batches, MXU/tensor-core friendly)."""
    return max(1, int(replicas)) * 8


def stage_batch_sizes(stages, base_batch, final_size=None, replicas=1, growth=True, cap=None):
    """Per-stage global batch.

    growth: batch = base * (final_size / size)**2, rounded down to a multiple of
    replicas * 8, at most `cap`, never below the base batch. A stage whose
    `batch_size` is set keeps it. growth=False: every stage uses the base batch.
    """
    if base_batch < 1:
        raise ValueError(f"base_batch must be a positive integer. Received: {base_batch!r}")
    if cap is not None and cap < base_batch:
        raise ValueError(f"train.progressive.max_batch_size={cap} is below train.batch_size={base_batch}.")
    final_size = final_size or stages[-1].image_size
    quantum = batch_quantum(replicas)
    sizes = []
    for stage in stages:
        if getattr(stage, "batch_size", None):
            sizes.append(int(stage.batch_size))
            continue
        batch = base_batch
        if growth and stage.image_size < final_size:
            batch = int(base_batch * (final_size / stage.image_size) ** 2)
            if cap:
                batch = min(batch, int(cap))
            batch = max(base_batch, batch // quantum * quantum)
        sizes.append(batch)
    return sizes


def plan_stages(stages, base_batch, num_train, replicas=1, growth=True, cap=None):
    """-> [StagePlan]: batch, steps per epoch (one pass over the data), lr scale, first step."""
    batches = stage_batch_sizes(stages, base_batch, stages[-1].image_size, replicas, growth, cap)
    plans, step = [], 0
    for stage, batch in zip(stages, batches):
        if batch % max(1, replicas):
            raise ValueError(f"Stage {stage.index + 1}: global batch {batch} is not a multiple of the {replicas} replicas.")
        steps = num_train // batch
        if steps < 1:
            raise ValueError(
                f"Stage {stage.index + 1}: global batch {batch} is larger than the {num_train} training examples; "
                "lower train.batch_size or set train.progressive.max_batch_size."
            )
        plan = StagePlan(stage, batch, steps, batch / base_batch, step)
        plans.append(plan)
        step = plan.end_step
    return plans


def make_lr_schedule(train, plans, base_batch):
    """The recipe's learning rate for a `config_schema.TrainConfig` (lr_base per 256 images, scaled to
    the base batch), one segment per stage."""
    segments = [(p.start_step, p.stage.start_epoch, p.steps_per_epoch, p.lr_scale) for p in plans]
    return optim.RecipeLearningRate(
        train.lr_base * base_batch / 256.0,
        segments,
        total_epochs=plans[-1].stage.end_epoch,
        sched=train.lr_sched,
        warmup_epochs=train.lr_warmup_epoch,
        decay_epochs=train.lr_decay_epoch,
        decay_factor=train.lr_decay_factor,
        lr_min=train.lr_min * base_batch / 256.0,
    )


def build_progressive_schedule(config, train_size):
    """The run's ProgressiveSchedule (nulls in train.progressive fall back to data/model values)."""
    from effnet_keras.training.progressive import ProgressiveSchedule

    spec = registry.get_spec(config.model.name)
    if config.train.progressive.num_stages > 1 and not spec.family.progressive:
        raise ConfigError(
            f"train.progressive.num_stages > 1 is not supported for {config.model.name} (a {spec.family.name} model: "
            "its input size is fixed per model); train it at a fixed size (train.progressive.num_stages=0)."
        )
    return ProgressiveSchedule.from_config(config, model_dropout_rate=spec.dropout_rate, final_image_size=train_size)


def plan_run(config, num_train_examples, replicas, train_size):
    """-> (stage plans, global base batch): the run's progressive schedule sized for `replicas` and the data."""
    train = config.train
    schedule = build_progressive_schedule(config, train_size)
    base_batch = train.batch_size
    if base_batch % replicas:
        raise ConfigError(f"train.batch_size={base_batch} must be a multiple of the {replicas} replicas.")
    base_batch = fit_batch_to_data(base_batch, num_train_examples, replicas)
    prog = train.progressive
    plans = plan_stages(schedule.stages, base_batch, num_train_examples, replicas=replicas,
                        growth=prog.batch_growth and len(schedule.stages) > 1, cap=prog.max_batch_size)
    return plans, base_batch


def fit_batch_to_data(batch, num_train_examples, replicas=1):
    """The global batch, lowered (to a multiple of the replicas) when the data holds fewer examples than
    one batch (a folder of 59 photos with the fine-tune recipe's 64), with one log line saying so."""
    if batch <= num_train_examples:
        return batch
    fitted = num_train_examples // replicas * replicas
    if fitted < max(1, replicas):
        raise ConfigError(f"{num_train_examples} training examples cannot fill one batch on {replicas} replicas; "
                          "add images.")
    from absl import logging

    logging.warning("train.batch_size=%d is larger than the %d training examples: training with batch %d.", batch,
                    num_train_examples, fitted)
    return fitted
