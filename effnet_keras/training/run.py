"""run(config, mode, model_dir): strategy -> model -> progressive stages -> eval -> weights for export."""

import contextlib
import json
import os
import time

import keras
from absl import logging

from effnet_keras import fileio
from effnet_keras import rundir
from effnet_keras.models import factory
from effnet_keras.models import registry
from effnet_keras.rundir import image_sizes
from effnet_keras.weights import keras_h5
from effnet_keras.weights import weight_ids
from effnet_keras.training import config as config_lib
from effnet_keras.training import optim
from effnet_keras.training import plan as plan_lib
from effnet_keras.training import strategy as strategy_lib
from effnet_keras.training import trainer as trainer_lib

MODES = ("train", "eval", "train_and_eval", "export")


def set_precision(choice, strategy):
    import tensorflow as tf

    if choice == "auto":
        if isinstance(strategy, tf.distribute.TPUStrategy):
            choice = "bf16"
        elif tf.config.list_logical_devices("GPU"):
            choice = "fp16"
        else:
            choice = "none"
    policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16", "none": "float32"}[choice]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def build_schedule(config, train_size):
    """The run's ProgressiveSchedule (nulls in train.progressive fall back to data/model values)."""
    from effnet_keras.training.schedules import ProgressiveSchedule

    name = config["model"]["name"]
    spec = registry.get_spec(name)
    if config["train"]["progressive"]["num_stages"] > 1 and not spec.family.progressive:
        raise config_lib.ConfigError(
            f"train.progressive.num_stages > 1 is not supported for {name} (a {spec.family.name} model: its input "
            "size is fixed per model); train it at a fixed size (train.progressive.num_stages=0)."
        )
    return ProgressiveSchedule.from_config(config, model_dropout_rate=spec.dropout_rate,
                                           final_image_size=train_size)


def _init_from_checkpoint(model, source, config):
    """train.ft_init_ckpt: a model_dir of ours (EMA weights preferred) or a weights file.

    The backbone is copied by layer name (`keras_h5.assign_by_name`: any other mismatch
    is an error naming the layer); a head the donor lacks, or whose shape differs (other
    class count), keeps its fresh initialisation, and the log says so. Returns the
    re-initialised layers.
    """
    name = config["model"]["name"]
    if fileio.isdir(source):  # local or a bucket path
        try:
            donor_run = rundir.RunDir.open(source)
        except rundir.RunDirError as err:
            raise ValueError(f"train.ft_init_ckpt: {err}") from None
        donor, where = donor_run.build(), donor_run.weights_path
        logging.info("Fine-tune init from %s (%s weights).", where, "EMA" if donor_run.is_ema else "raw")
    else:
        if not fileio.exists(source) and weight_ids(name) and source in weight_ids(name):
            # An id also fixes the in-model normalisation (AdvProp, 21k): the model must be built with it.
            raise ValueError(
                f"train.ft_init_ckpt={source!r} is a weight id: pass it as model.weights={source} instead, so the "
                "model is built with the normalisation those weights expect (the head is re-initialised when the "
                "class count differs)."
            )
        # A weights file: the loaders match by layer name and skip a head the donor lacks.
        donor, where = factory.build_backbone(name, model.input_shape[1], weights=source), source
    arrays = {layer.name: layer.get_weights() for layer in donor.layers if layer.weights}
    # CoAtNet trained at another size (224 -> 384, paper A.1): bias tables resized, one log line.
    skipped = keras_h5.assign_by_name(model, arrays, source=where, new_head_ok=True, missing_head_ok=True)
    loaded = set(arrays) - set(skipped)
    reinitialised = [layer.name for layer in model.layers if layer.weights and layer.name not in loaded]
    logging.warning("Fine-tune init: %d layers restored; re-initialised: %s", len(loaded & {layer.name for layer in
                    model.layers}), reinitialised or "none")
    return reinitialised


def loss_kind(config, info):
    """train.loss: auto -> sigmoid for multi-hot labels (ImageNet-21k), else softmax."""
    choice = config["train"]["loss"]
    if choice == "auto":
        return "sigmoid" if info["multilabel"] else "softmax"
    return choice


def run(config, mode="train_and_eval", model_dir=None, override_config=False, export_fn=None, verbose=1,
        strategy=None):
    """Train and/or evaluate as configured; returns a dict of results.

    export_fn(model, eval_image_size) is called with the EMA weights in the model.
    `strategy` overrides runtime.strategy (tests pin devices with it).
    """
    from effnet_keras import data as data_lib

    _check_run_args(mode, model_dir)
    config = data_lib.resolve_data_counts(config)  # folder datasets: class and image counts from the folder
    config_lib.write_or_check(config, model_dir, override_config=override_config)
    strategy, policy = _set_up_runtime(config["runtime"], int(config["train"]["seed"]), strategy)
    info = data_lib.dataset_info(config["data"])
    train_size, eval_size = image_sizes(config)
    plans, base_batch = _plan_stages(config, info, strategy, train_size)
    logging.info("Strategy %s with %d replica(s), policy %s, %d stage(s): %s", type(strategy).__name__,
                 strategy.num_replicas_in_sync, policy, len(plans),
                 [(p.stage.image_size, p.batch_size) for p in plans])
    with strategy.scope():
        model = rundir.build_model(config, info["num_classes"], train_size)
        if config["train"]["ft_init_ckpt"] and mode != "eval":
            _init_from_checkpoint(model, config["train"]["ft_init_ckpt"], config)
    trainer = _make_trainer(config, info, model, strategy, plans, base_batch, model_dir, verbose)
    if trainer.is_chief and info.get("class_names"):
        rundir.write_labels(model_dir, info["class_names"])  # labels.txt: read back by RunDir.class_names

    results = {"model_dir": model_dir, "stages": [p.to_dict() for p in plans]}
    start = time.perf_counter()
    if mode in ("train", "train_and_eval"):
        results["history"] = trainer.train()
        results["train_seconds"] = round(time.perf_counter() - start, 2)
    else:
        trainer.restore()
    raw, ema = trainer.save_weights()
    results["weights"] = {"raw": raw, "ema": ema if fileio.exists(ema) else None}
    use_ema = bool(optim.ema_variables(trainer.optimizer))
    if mode in ("eval", "train_and_eval"):
        results["eval"] = _evaluate(config, trainer, eval_size, use_ema, model_dir)
    if export_fn is not None and trainer.is_chief:
        with optim.swap_in_ema(model, trainer.optimizer) if use_ema else contextlib.nullcontext():
            results["export"] = export_fn(model, eval_size)
    return results


def _check_run_args(mode, model_dir):
    import tensorflow as tf

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: {mode!r}")
    if not model_dir:
        raise ValueError("model_dir is required (checkpoints, config.yaml and results are written there).")
    if mode in ("eval", "export") and not tf.io.gfile.exists(os.path.join(model_dir, "checkpoint")):
        raise FileNotFoundError(f"mode={mode}: no checkpoint in model_dir={model_dir!r}; train first (mode=train).")


def _set_up_runtime(runtime, seed, strategy=None):
    """-> (strategy, mixed-precision policy name); seeds and op determinism as configured."""
    import tensorflow as tf

    strategy = strategy or strategy_lib.make_strategy(runtime["strategy"], tpu=runtime["tpu"])
    strategy_lib.fix_keras_multi_worker_reduction(strategy)
    policy = set_precision(runtime["mixed_precision"], strategy)
    keras.utils.set_random_seed(seed)
    if runtime["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    return strategy, policy


def _plan_stages(config, info, strategy, train_size):
    """-> (stage plans, global base batch): the progressive schedule sized for this strategy."""
    train_cfg = config["train"]
    schedule = build_schedule(config, train_size)
    replicas = strategy.num_replicas_in_sync
    base_batch = int(train_cfg["batch_size"])
    if base_batch % replicas:
        raise config_lib.ConfigError(f"train.batch_size={base_batch} must be a multiple of the {replicas} replicas.")
    prog = train_cfg["progressive"]
    plans = plan_lib.plan_stages(schedule.stages, base_batch, info["num_train_examples"], replicas=replicas,
                                 growth=prog["batch_growth"] and len(schedule.stages) > 1,
                                 cap=prog["max_batch_size"])
    return plans, base_batch


def _make_trainer(config, info, model, strategy, plans, base_batch, model_dir, verbose):
    from effnet_keras import data as data_lib

    def make_train_dataset(stage, per_replica_batch, input_context, seed):
        return data_lib.build_dataset(config["data"], split="train", image_size=stage.image_size,
                                      batch_size=per_replica_batch, stage=stage, input_context=input_context,
                                      seed=seed, repeat=False, training=True)

    return trainer_lib.Trainer(
        model=model, strategy=strategy, train_cfg=config["train"], plans=plans, base_batch=base_batch,
        make_dataset=make_train_dataset, model_dir=model_dir, loss=loss_kind(config, info), verbose=verbose,
    )


def _evaluate(config, trainer, eval_size, use_ema, model_dir):
    from effnet_keras import data as data_lib

    eval_ds = data_lib.build_dataset(config["data"], split="eval", image_size=eval_size,
                                     batch_size=int(config["eval"]["batch_size"]), training=False, repeat=False)
    metrics = trainer.evaluate(eval_ds, use_ema=use_ema)
    metrics.update(eval_image_size=eval_size, global_step=trainer.global_step(), weights="ema" if use_ema else "raw")
    if trainer.is_chief:
        fileio.write_text(os.path.join(model_dir, "eval_results.json"), json.dumps(metrics, indent=2))
    return metrics
