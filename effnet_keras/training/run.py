"""run(config, mode, model_dir): strategy -> model -> progressive stages -> eval -> weights for export."""

import json
import os
import time

import keras
from absl import logging

from effnet_keras.models import common
from effnet_keras.models import registry
from effnet_keras.training import config as config_lib
from effnet_keras.training import optim
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


def model_spec(name):
    builder = registry.get_builder(name)
    return getattr(builder, "spec", None)


def default_sizes(config):
    """(final train size, eval size) from the config, else the model's recipe sizes."""
    spec = model_spec(config["model"]["name"])
    train_size = config["train"]["image_size"] or config["model"]["image_size"] or getattr(spec, "train_size", 224)
    eval_size = config["eval"]["image_size"] or config["model"]["image_size"] or getattr(spec, "default_size", train_size)
    return int(train_size), int(eval_size)


def build_training_model(config, num_classes, image_size=None):
    """EfficientNets: headless at a dynamic size + the standard head, so every progressive
    stage runs on the same model. CoAtNet needs a static size (relative-position tables)."""
    model_cfg = config["model"]
    name = model_cfg["name"]
    kwargs = dict(weights=model_cfg["weights"], drop_connect_rate=model_cfg["drop_connect_rate"])
    if model_cfg["dropout_rate"] is not None:
        kwargs["dropout_rate"] = model_cfg["dropout_rate"]
    if model_cfg["bn_momentum"] is not None:
        kwargs["bn_momentum"] = model_cfg["bn_momentum"]
    if name.lower().startswith("coatnet"):
        return registry.get_model(name, include_top=True, classes=num_classes, classifier_activation=None,
                                  input_shape=(image_size, image_size, 3), **kwargs)
    spec = model_spec(name)
    backbone = registry.get_model(name, include_top=False, input_shape=(None, None, 3), **kwargs)
    dropout = model_cfg["dropout_rate"] if model_cfg["dropout_rate"] is not None else spec.dropout_rate
    outputs = common.classifier_head(backbone.output, include_top=True, pooling=None, classes=num_classes,
                                     classifier_activation=None, dropout_rate=dropout)
    return keras.Model(backbone.inputs, outputs, name=backbone.name)


def build_schedule(config, train_size):
    from effnet_keras.training.schedules import ProgressiveSchedule

    train, data, prog = config["train"], config["data"], config["train"]["progressive"]
    spec = model_spec(config["model"]["name"])
    dropout = config["model"]["dropout_rate"]
    if dropout is None:
        dropout = getattr(spec, "dropout_rate", 0.2)
    drop_connect = config["model"]["drop_connect_rate"]

    def span(key, end_default):
        start, end = prog[key]
        return (end_default if start is None else start, end_default if end is None else end)

    if prog["num_stages"] <= 1:
        return ProgressiveSchedule.fixed(
            total_epochs=train["epochs"], image_size=train_size, randaug_magnitude=data["ram"],
            mixup_alpha=data["mixup_alpha"], cutmix_alpha=data["cutmix_alpha"],
            dropout_rate=dropout, drop_connect_rate=drop_connect,
        )
    if config["model"]["name"].lower().startswith("coatnet"):
        raise config_lib.ConfigError(
            "train.progressive.num_stages > 1 is not supported for CoAtNet (its relative-position tables fix the "
            "input size per model); train CoAtNet at a fixed size."
        )
    return ProgressiveSchedule(
        num_stages=prog["num_stages"], total_epochs=train["epochs"],
        image_size=(prog["start_image_size"], train_size),
        randaug_magnitude=span("randaug_magnitude", data["ram"]),
        mixup_alpha=span("mixup_alpha", data["mixup_alpha"]),
        cutmix_alpha=span("cutmix_alpha", data["cutmix_alpha"]),
        dropout_rate=span("dropout_rate", dropout),
        drop_connect_rate=span("drop_connect_rate", drop_connect),
        size_multiple=prog["size_multiple"],
    )


def _init_from_checkpoint(model, source, config):
    """train.ft_init_ckpt: a model_dir of ours (EMA weights preferred) or a weights file.

    The backbone is copied by layer name; a classifier whose shape differs (other
    class count) keeps its fresh initialisation, and the log says so.
    """
    if os.path.isdir(source):
        ema = os.path.join(source, "ema.weights.h5")
        path = ema if os.path.exists(ema) else os.path.join(source, "model.weights.h5")
        cfg_path = os.path.join(source, "config.yaml")
        if not os.path.exists(path) or not os.path.exists(cfg_path):
            raise ValueError(f"train.ft_init_ckpt={source!r}: expected ema.weights.h5 or model.weights.h5 and config.yaml there.")
        src_cfg = config_lib.load_yaml(cfg_path)
        donor = build_training_model(src_cfg, src_cfg["data"]["num_classes"], default_sizes(src_cfg)[0])
        donor.load_weights(path)
        arrays = {layer.name: layer.get_weights() for layer in donor.layers if layer.weights}
        logging.info("Fine-tune init from %s (%s).", path, "EMA weights" if path == ema else "raw weights")
    else:
        # A weights file or id: the loaders match by layer name and skip a head the donor lacks.
        name = config["model"]["name"]
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


def run(config, mode="train_and_eval", model_dir=None, override_config=False, export_fn=None, verbose=1):
    """Train and/or evaluate as configured. Returns a dict of results."""
    import tensorflow as tf

    from effnet_keras import data as data_lib

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}. Received: {mode!r}")
    if not model_dir:
        raise ValueError("model_dir is required (checkpoints, config.yaml and results are written there).")
    config_lib.write_or_check(config, model_dir, override_config=override_config)
    runtime, train_cfg = config["runtime"], config["train"]
    strategy = strategy_lib.make_strategy(runtime["strategy"], tpu=runtime["tpu"])
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
    plans = trainer_lib.plan_stages(schedule.stages, base_batch, info["num_train_examples"], replicas=replicas,
                                    growth=prog["batch_growth"] and len(schedule.stages) > 1,
                                    cap=prog["max_batch_size"])
    logging.info("Strategy %s with %d replica(s), policy %s, %d stage(s).", type(strategy).__name__, replicas,
                 policy, len(plans))
    with strategy.scope():
        model = build_training_model(config, info["num_classes"], train_size)
        if train_cfg["ft_init_ckpt"]:
            _init_from_checkpoint(model, train_cfg["ft_init_ckpt"], config)

    def make_train_dataset(stage, per_replica_batch, input_context, seed):
        return data_lib.build_dataset(config["data"], split="train", image_size=stage.image_size,
                                      batch_size=per_replica_batch, stage=stage, input_context=input_context,
                                      seed=seed, repeat=False, training=True)

    trainer = trainer_lib.Trainer(
        model=model, strategy=strategy, train_cfg=train_cfg, plans=plans, base_batch=base_batch,
        make_dataset=make_train_dataset, model_dir=model_dir, num_train=info["num_train_examples"],
        multilabel=info["multilabel"], verbose=verbose,
    )
    results = {"model_dir": model_dir, "stages": [p.stage.to_dict() | {"batch_size": p.batch_size} for p in plans]}
    start = time.perf_counter()
    if mode in ("train", "train_and_eval"):
        results["history"] = trainer.train()
        results["train_seconds"] = round(time.perf_counter() - start, 2)
    else:
        trainer.restore()
    raw, ema = trainer.save_weights()
    results["weights"] = {"raw": raw, "ema": ema if os.path.exists(ema) else None}
    if mode in ("eval", "train_and_eval"):
        eval_batch = int(config["eval"]["batch_size"])
        eval_ds = data_lib.build_dataset(config["data"], split="eval", image_size=eval_size, batch_size=eval_batch,
                                         training=False, repeat=False)
        metrics = trainer.evaluate(eval_ds, use_ema=bool(optim.ema_variables(trainer.optimizer)))
        metrics.update(eval_image_size=eval_size, global_step=trainer.global_step(),
                       weights="ema" if optim.ema_variables(trainer.optimizer) else "raw")
        results["eval"] = metrics
        path = os.path.join(model_dir, "eval_results.json")
        with open(path + ".tmp", "w") as f:
            json.dump(metrics, f, indent=2)
        os.replace(path + ".tmp", path)
    if export_fn is not None:
        results["export"] = export_fn(model, trainer, eval_size)
    return results
