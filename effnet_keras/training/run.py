"""run(config, mode, model_dir): strategy -> model -> progressive stages -> eval -> weights for export."""

import os
import time

import keras
from absl import logging

from effnet_keras import rundir
from effnet_keras.config_schema import RUN_MODES
from effnet_keras.training import config as config_lib
from effnet_keras.training import finetune
from effnet_keras.training import plan as plan_lib
from effnet_keras.training import strategy as strategy_lib
from effnet_keras.training import trainer as trainer_lib


def loss_and_metrics(train, info, num_classes):
    """What the model is compiled with: train.loss (auto: sigmoid for multi-hot labels, ImageNet-21k, else
    softmax cross-entropy on logits, label smoothing train.label_smoothing), top-1 and, beyond 5
    classes, top-5 accuracy."""
    kind = train.loss if train.loss != "auto" else ("sigmoid" if info.multilabel else "softmax")
    loss_class = keras.losses.BinaryCrossentropy if kind == "sigmoid" else keras.losses.CategoricalCrossentropy
    metrics = [keras.metrics.CategoricalAccuracy(name="top1")]
    if num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5"))
    return loss_class(from_logits=True, label_smoothing=train.label_smoothing), metrics


def run(config, mode="train_and_eval", model_dir=None, override_config=False, export_fn=None, verbose=1,
        strategy=None):
    """Train and/or evaluate as configured (a `config_schema.RunConfig`); returns a dict of results.

    export_fn(model, eval_image_size) is called with the EMA weights in the model.
    `strategy` overrides runtime.strategy (tests pin devices with it).
    """
    from effnet_keras import data as data_lib

    _check_run_args(mode, model_dir)
    config = data_lib.resolve_data_counts(config)  # folder datasets: class and image counts from the folder
    config_lib.write_or_check(config, model_dir, override_config=override_config)
    strategy, policy = strategy_lib.set_up_runtime(config.runtime, config.train.seed, strategy)
    info = data_lib.dataset_info(config.data)
    train_size, eval_size = rundir.image_sizes(config)
    plans, base_batch = plan_lib.plan_run(config, info.num_train_examples, strategy.num_replicas_in_sync, train_size)
    logging.info("Strategy %s with %d replica(s), policy %s, %d stage(s): %s", type(strategy).__name__,
                 strategy.num_replicas_in_sync, policy, len(plans),
                 [(p.stage.image_size, p.batch_size) for p in plans])
    with strategy.scope():
        model = rundir.build_model(config, info.num_classes, train_size)
        if config.train.ft_init_ckpt and mode != "eval":
            finetune.init_from_checkpoint(model, config.train.ft_init_ckpt, config)
        loss, metrics = loss_and_metrics(config.train, info, info.num_classes)
    trainer = _make_trainer(config, model, strategy, plans, base_batch, model_dir, loss, metrics, verbose)
    if trainer.is_chief and info.class_names:
        rundir.write_labels(model_dir, info.class_names)  # labels.txt: read back by RunDir.class_names

    results = {"model_dir": model_dir, "stages": [p.to_dict() for p in plans]}
    start = time.perf_counter()
    if mode in ("train", "train_and_eval"):
        results["history"] = trainer.train_stages()
        results["train_seconds"] = round(time.perf_counter() - start, 2)
    else:
        trainer.restore()
    raw, ema = trainer.checkpoints.save_weights()
    results["weights"] = {"raw": raw, "ema": ema}
    if mode in ("eval", "train_and_eval"):
        results["eval"] = _evaluate(config, trainer, eval_size)
    if export_fn is not None and trainer.is_chief:
        with trainer.ema_weights():
            results["export"] = export_fn(model, eval_size)
    return results


def _check_run_args(mode, model_dir):
    import tensorflow as tf

    if mode not in RUN_MODES:
        raise ValueError(f"mode must be one of {RUN_MODES}. Received: {mode!r}")
    if not model_dir:
        raise ValueError("model_dir is required (checkpoints, config.yaml and results are written there).")
    if mode in ("eval", "export") and not tf.io.gfile.exists(os.path.join(model_dir, "checkpoint")):
        raise FileNotFoundError(f"mode={mode}: no checkpoint in model_dir={model_dir!r}; train first (mode=train).")


def _make_trainer(config, model, strategy, plans, base_batch, model_dir, loss, metrics, verbose):
    from effnet_keras import data as data_lib

    def make_train_dataset(stage, per_replica_batch, input_context, seed):
        return data_lib.build_dataset(config.data, split="train", image_size=stage.image_size,
                                      batch_size=per_replica_batch, stage=stage, input_context=input_context,
                                      seed=seed, repeat=False, training=True)

    return trainer_lib.Trainer(model=model, strategy=strategy, train=config.train, plans=plans, base_batch=base_batch,
                               make_dataset=make_train_dataset, model_dir=model_dir, loss=loss, metrics=metrics,
                               verbose=verbose)


def _evaluate(config, trainer, eval_size):
    """Evaluation with the EMA weights when the run keeps them; eval_results.json in the run directory."""
    from effnet_keras import data as data_lib

    eval_ds = data_lib.build_dataset(config.data, split="eval", image_size=eval_size, batch_size=config.eval.batch_size,
                                     training=False, repeat=False)
    metrics = trainer.evaluate(eval_ds)
    metrics.update(eval_image_size=eval_size, global_step=trainer.global_step(),
                   weights="ema" if trainer.uses_ema else "raw")
    if trainer.is_chief:
        trainer.reporter.write_results(metrics)
    return metrics
