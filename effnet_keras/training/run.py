"""run(config, mode, model_dir): strategy -> model -> progressive stages -> eval -> weights for export."""

import contextlib
import json
import os
import time

import keras
from absl import logging

from effnet_keras import fileio
from effnet_keras.models import registry
from effnet_keras.weights import weight_ids
from effnet_keras.training import config as config_lib
from effnet_keras.training.model_builder import build_training_model
from effnet_keras.training.model_builder import default_sizes
from effnet_keras.training.model_builder import model_spec
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
    if config["train"]["progressive"]["num_stages"] > 1 and name.lower().startswith("coatnet"):
        raise config_lib.ConfigError(
            "train.progressive.num_stages > 1 is not supported for CoAtNet (its relative-position tables fix the "
            "input size per model); train CoAtNet at a fixed size (train.progressive.num_stages=0)."
        )
    spec = model_spec(name)
    return ProgressiveSchedule.from_config(config, model_dropout_rate=getattr(spec, "dropout_rate", 0.2),
                                           final_image_size=train_size)


def _init_from_checkpoint(model, source, config):
    """train.ft_init_ckpt: a model_dir of ours (EMA weights preferred) or a weights file.

    The backbone is copied by layer name; a classifier whose shape differs (other
    class count) keeps its fresh initialisation, and the log says so.
    """
    if fileio.isdir(source):  # local or a bucket path
        ema = os.path.join(source, "ema.weights.h5")
        path = ema if fileio.exists(ema) else os.path.join(source, "model.weights.h5")
        cfg_path = os.path.join(source, "config.yaml")
        if not fileio.exists(path) or not fileio.exists(cfg_path):
            raise ValueError(f"train.ft_init_ckpt={source!r}: expected ema.weights.h5 or model.weights.h5 and config.yaml there.")
        src_cfg = config_lib.load_yaml(cfg_path)
        donor = build_training_model(src_cfg, src_cfg["data"]["num_classes"], default_sizes(src_cfg)[0])
        from effnet_keras.weights import keras_h5, load_native

        load_native(donor, path)  # a damaged file: WeightsFileError naming it
        arrays = {layer.name: layer.get_weights() for layer in donor.layers if layer.weights}
        # CoAtNet trained at another size (224 -> 384, paper A.1): bias tables resized, one log line.
        arrays = keras_h5.fit_relative_position_tables(model, arrays, source=path)
        logging.info("Fine-tune init from %s (%s).", path, "EMA weights" if path == ema else "raw weights")
    else:
        name = config["model"]["name"]
        if not fileio.exists(source) and weight_ids(name) and source in weight_ids(name):
            # An id also fixes the in-model normalisation (AdvProp, 21k): the model must be built with it.
            raise ValueError(
                f"train.ft_init_ckpt={source!r} is a weight id: pass it as model.weights={source} instead, so the "
                "model is built with the normalisation those weights expect (the head is re-initialised when the "
                "class count differs)."
            )
        # A weights file: the loaders match by layer name and skip a head the donor lacks.
        shape = tuple(model.input_shape[1:]) if name.lower().startswith("coatnet") else (None, None, 3)
        donor = registry.get_model(name, include_top=False, input_shape=shape, weights=source)
        arrays = {layer.name: layer.get_weights() for layer in donor.layers if layer.weights}
    own = {layer.name: layer for layer in model.layers if layer.weights}
    skipped = [n for n, a in arrays.items() if n in own and [w.shape for w in own[n].weights] != [x.shape for x in a]]
    usable = {n: a for n, a in arrays.items() if n in own and n not in skipped}
    missing = [n for n in own if n not in usable]
    for name, values in usable.items():
        own[name].set_weights(values)
    if len(usable) < 5:
        raise ValueError(f"train.ft_init_ckpt={source!r} matched only {len(usable)} layers; wrong architecture?")
    logging.warning("Fine-tune init: %d layers restored; re-initialised: %s", len(usable), missing or "none")
    return missing


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
    import tensorflow as tf

    from effnet_keras import data as data_lib

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: {mode!r}")
    if not model_dir:
        raise ValueError("model_dir is required (checkpoints, config.yaml and results are written there).")
    runtime, train_cfg = config["runtime"], config["train"]
    if mode in ("eval", "export") and not tf.io.gfile.exists(os.path.join(model_dir, "checkpoint")):
        raise FileNotFoundError(f"mode={mode}: no checkpoint in model_dir={model_dir!r}; train first (mode=train).")
    config_lib.write_or_check(config, model_dir, override_config=override_config)
    strategy = strategy or strategy_lib.make_strategy(runtime["strategy"], tpu=runtime["tpu"])
    strategy_lib.fix_keras_multi_worker_reduction(strategy)
    policy = set_precision(runtime["mixed_precision"], strategy)
    keras.utils.set_random_seed(int(train_cfg["seed"]))
    if runtime["deterministic"]:
        tf.config.experimental.enable_op_determinism()
    info = data_lib.dataset_info(config["data"])
    train_size, eval_size = default_sizes(config)
    schedule = build_schedule(config, train_size)
    replicas = strategy.num_replicas_in_sync
    base_batch = int(train_cfg["batch_size"])
    if base_batch % replicas:
        raise config_lib.ConfigError(f"train.batch_size={base_batch} must be a multiple of the {replicas} replicas.")
    prog = train_cfg["progressive"]
    plans = plan_lib.plan_stages(schedule.stages, base_batch, info["num_train_examples"], replicas=replicas,
                                 growth=prog["batch_growth"] and len(schedule.stages) > 1,
                                 cap=prog["max_batch_size"])
    logging.info("Strategy %s with %d replica(s), policy %s, %d stage(s): %s", type(strategy).__name__, replicas,
                 policy, len(plans), [(p.stage.image_size, p.batch_size) for p in plans])
    with strategy.scope():
        model = build_training_model(config, info["num_classes"], train_size)
        if train_cfg["ft_init_ckpt"] and mode != "eval":
            _init_from_checkpoint(model, train_cfg["ft_init_ckpt"], config)

    def make_train_dataset(stage, per_replica_batch, input_context, seed):
        return data_lib.build_dataset(config["data"], split="train", image_size=stage.image_size,
                                      batch_size=per_replica_batch, stage=stage, input_context=input_context,
                                      seed=seed, repeat=False, training=True)

    trainer = trainer_lib.Trainer(
        model=model, strategy=strategy, train_cfg=train_cfg, plans=plans, base_batch=base_batch,
        make_dataset=make_train_dataset, model_dir=model_dir, loss=loss_kind(config, info), verbose=verbose,
    )
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
        eval_ds = data_lib.build_dataset(config["data"], split="eval", image_size=eval_size,
                                         batch_size=int(config["eval"]["batch_size"]), training=False, repeat=False)
        metrics = trainer.evaluate(eval_ds, use_ema=use_ema)
        metrics.update(eval_image_size=eval_size, global_step=trainer.global_step(),
                       weights="ema" if use_ema else "raw")
        results["eval"] = metrics
        if trainer.is_chief:
            fileio.write_text(os.path.join(model_dir, "eval_results.json"), json.dumps(metrics, indent=2))
    if export_fn is not None and trainer.is_chief:
        with optim.swap_in_ema(model, trainer.optimizer) if use_ema else contextlib.nullcontext():
            results["export"] = export_fn(model, eval_size)
    return results
