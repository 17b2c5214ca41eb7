"""What a run tells a person and TensorBoard: one line per epoch, the stage's settings, the scalars.

The trainer hands each finished epoch (`EpochRun`) and each stage start to a `Reporter`; the
reporter keeps the history records, times the steps (the first host round trip of a stage may
include tracing: reported once as compile seconds), estimates the time left, prints the
console line and writes TensorBoard scalars through TF's core summary ops (the `tensorboard`
package is not needed to write them, only to view them).
"""

import json
import os
from typing import NamedTuple

import keras
from absl import logging


class EpochRun(NamedTuple):
    """What one epoch's fit() call did."""

    steps: int  # optimizer steps taken
    seconds: float  # wall time of the fit() call
    first_execution_seconds: float  # up to the end of its first host round trip (may include tracing)
    metrics: dict  # Keras' History.history of the call


class ScalarWriter:
    """TensorBoard scalars via TF's core summary ops."""

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


def position(plans, plan, epoch):
    """'stage 2/3, epoch 7/18': what a person reads (1-based, out of the run's totals). History records
    and checkpoints keep 0-based indices (`stage`, `epoch`)."""
    return f"stage {plan.stage.index + 1}/{len(plans)}, epoch {epoch + 1}/{plans[-1].stage.end_epoch}"


class Reporter:
    """History, console lines, ETA and TensorBoard scalars of one run's stage plans."""

    def __init__(self, plans, model_dir, *, steps_per_execution=1, max_steps=None, verbose=1, enabled=True):
        self.plans, self.spe, self.max_steps, self.verbose = plans, steps_per_execution, max_steps, verbose
        self.model_dir = model_dir
        self.scalars = ScalarWriter(os.path.join(model_dir, "tensorboard", "train"), enabled=enabled)
        self.history = []
        self._traced_stages = set()

    def stage_started(self, plan):
        stage = plan.stage
        logging.info(
            "Stage %d/%d: epochs %d-%d of %d, image %d px, batch %d (%d steps/epoch, lr x%.2f), RandAugment %.2f, "
            "mixup %.2f, cutmix %.2f, dropout %.3f, drop_connect_rate %.3f",
            stage.index + 1, len(self.plans), stage.start_epoch + 1, stage.end_epoch, self.plans[-1].stage.end_epoch,
            stage.image_size, plan.batch_size, plan.steps_per_epoch, plan.lr_scale, stage.randaug_magnitude,
            stage.mixup_alpha, stage.cutmix_alpha, stage.dropout_rate, stage.drop_connect_rate,
        )
        self.scalars.write(plan.start_step, {
            "stage/index": stage.index, "stage/image_size": stage.image_size, "stage/batch_size": plan.batch_size,
            "stage/randaug_magnitude": stage.randaug_magnitude, "stage/mixup_alpha": stage.mixup_alpha,
            "stage/cutmix_alpha": stage.cutmix_alpha, "stage/dropout_rate": stage.dropout_rate,
            "stage/drop_connect_rate": stage.drop_connect_rate,
        })

    def epoch_done(self, plan, epoch, run, global_step, learning_rate):
        """The epoch's entry in the history, its log lines and its TensorBoard scalars."""
        steady, compile_seconds = self._step_timing(plan, run)
        record = {
            "stage": plan.stage.index, "epoch": epoch, "image_size": plan.stage.image_size,
            "batch_size": plan.batch_size, "steps": run.steps, "seconds": round(run.seconds, 3),
            "img_per_s": round(run.steps * plan.batch_size / run.seconds, 1),
            "first_execution_seconds": round(run.first_execution_seconds, 3),
            "compile_seconds": compile_seconds,
            "steady_img_per_s": round(plan.batch_size / steady, 1) if steady else None,
            "lr": float(keras.ops.convert_to_numpy(learning_rate)),
            **{k: float(v[-1]) for k, v in run.metrics.items()},
        }
        self.history.append(record)
        logging.vlog(1, "epoch record: %s", json.dumps(record))
        if self.verbose:
            print(self._epoch_line(plan, epoch, record, global_step), flush=True)
        self.scalars.write(global_step, {
            f"epoch/{k}": v for k, v in record.items() if k not in ("stage", "epoch") and v is not None
        })
        return record

    def write_results(self, metrics):
        """eval_results.json in the run directory (local or a bucket)."""
        from effnet_keras import fileio

        fileio.write_text(os.path.join(self.model_dir, "eval_results.json"), json.dumps(metrics, indent=2))

    def _epoch_line(self, plan, epoch, record, global_step):
        """One line a person can follow: where in the run, how fast, how well, how long to go."""
        metrics = "  ".join(f"{k} {record[k]:.4f}" for k in ("loss", "top1") if record.get(k) is not None)
        compile_note = f" (+{record['compile_seconds']:.1f} s compile)" if record["compile_seconds"] else ""
        return (f"{position(self.plans, plan, epoch)}  {plan.stage.image_size} px  batch {plan.batch_size}  "
                f"{record['img_per_s']:.0f} img/s{compile_note}  {metrics}  "
                f"ETA {self._eta(plan, epoch, record, global_step)}")

    def _eta(self, plan, epoch, record, global_step):
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
            left = min(left, max(0, int(self.max_steps) - global_step) * seconds_per_step)
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
