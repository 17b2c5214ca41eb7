"""End-to-end driver runs on digits and mock TFDS: modes, progressive stages with batch growth, NaN guard,
fine-tune init, main.py flags."""

import glob
import json
import os
import sys

import numpy as np
import pytest

from effnet_keras import rundir
from effnet_keras.training import config as config_lib
from effnet_keras.training import finetune

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# nano on 32 px digits, no augmentation (fast, and the tests check the driver, not the augmenter).
TINY = (
    "train.epochs=2,train.batch_size=32,train.image_size=32,eval.image_size=32,eval.batch_size=120,"
    "train.progressive.num_stages=0,train.steps_per_execution=4,train.checkpoint_every_steps=8,"
    "train.lr_base=0.064,train.lr_warmup_epoch=0.5,train.ema_decay=0.9,"
    "data.digits_image_size=32,data.augment=none,data.crop_area_min=1.0"
)


def tiny_config(extra="", dataset_cfg="digits"):
    return config_lib.build_config(
        model_name="efficientnetv2-nano", dataset_cfg=dataset_cfg,
        config_file=config_lib.config_path("recipes", "digits_demo.yaml"),
        hparam_str=TINY + ("," + extra if extra else ""),
    )


def _scalars(logdir):
    import tensorflow as tf

    tags = {}
    for path in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    return tags


@pytest.mark.slow
def test_progressive_batch_growth_train_and_eval_then_eval_mode(tmp_path):
    from effnet_keras.training import run as run_lib

    model_dir = str(tmp_path / "run")
    cfg = tiny_config("train.progressive.num_stages=2,train.progressive.start_image_size=16")
    result = run_lib.run(cfg, mode="train_and_eval", model_dir=model_dir, verbose=0)
    # Stage 0 at 16 px: 4x fewer pixels -> 4x the batch (same activation memory), 4x the lr.
    assert [(s["image_size"], s["batch_size"], s["lr_scale"]) for s in result["stages"]] == [(16, 128, 4.0), (32, 32, 1.0)]
    history = result["history"]
    assert [(h["stage"], h["epoch"], h["batch_size"], h["steps"]) for h in history] == [
        (0, 0, 128, 1437 // 128), (1, 1, 32, 1437 // 32)]  # an epoch stays one pass over the data
    assert all(np.isfinite(h["loss"]) for h in history)
    assert history[0]["first_execution_seconds"] > 0 and history[1]["compile_seconds"] is not None
    ev = result["eval"]
    assert ev["weights"] == "ema" and ev["global_step"] == 1437 // 128 + 1437 // 32
    assert ev["top1"] > 0.3, ev  # two short epochs learn something (chance is 0.1)
    for name in ("config.yaml", "eval_results.json", "model.weights.h5", "ema.weights.h5", "checkpoint"):
        assert os.path.exists(os.path.join(model_dir, name)), name
    with open(os.path.join(model_dir, "eval_results.json")) as f:
        assert json.load(f)["top1"] == ev["top1"]
    scalars = _scalars(os.path.join(model_dir, "tensorboard", "train"))
    assert [v for _, v in scalars["stage/image_size"]] == [16.0, 32.0]
    assert [v for _, v in scalars["stage/batch_size"]] == [128.0, 32.0]
    assert [s for s, _ in scalars["epoch/loss"]] == [11, 11 + 44]
    # eval mode restores the last checkpoint (EMA included) and reproduces the metrics.
    again = run_lib.run(cfg, mode="eval", model_dir=model_dir, verbose=0)
    assert again["eval"]["top1"] == pytest.approx(ev["top1"], abs=1e-6) and "history" not in again
    # A finished run, rerun: nothing left to train.
    rerun = run_lib.run(cfg, mode="train", model_dir=model_dir, verbose=0)
    assert rerun["history"] == []


def test_one_step_train_then_eval_and_errors(tmp_path):
    from effnet_keras.training import run as run_lib

    model_dir = str(tmp_path / "one")
    with pytest.raises(FileNotFoundError, match="mode=eval: no checkpoint"):
        run_lib.run(tiny_config(), mode="eval", model_dir=model_dir, verbose=0)
    cfg = tiny_config("train.max_steps=1,train.steps_per_execution=1")
    result = run_lib.run(cfg, mode="train", model_dir=model_dir, verbose=0)
    assert [h["steps"] for h in result["history"]] == [1] and "eval" not in result
    ev = run_lib.run(cfg, mode="eval", model_dir=model_dir, verbose=0)["eval"]
    assert ev["global_step"] == 1 and 0.0 <= ev["top1"] <= 1.0
    with pytest.raises(config_lib.ConfigError, match="different config.*train.epochs"):
        run_lib.run(tiny_config("train.max_steps=1,train.epochs=5"), mode="train", model_dir=model_dir, verbose=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        run_lib.run(cfg, mode="traineval", model_dir=model_dir)


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path):
    from effnet_keras.training import run as run_lib
    from effnet_keras.training.checkpointing import NonFiniteLoss

    model_dir = str(tmp_path / "nan")
    cfg = tiny_config("train.lr_base=1.0e12,train.epochs=1,train.ema_decay=0.0,train.label_smoothing=0.0,"
                      "train.checkpoint_every_steps=0")
    with pytest.raises(NonFiniteLoss, match=r"(Loss|Weights) became .*last good checkpoint is None"):
        run_lib.run(cfg, mode="train", model_dir=model_dir, verbose=0)
    assert not glob.glob(os.path.join(model_dir, "ckpt-*.index"))  # nothing non-finite was saved


def test_mock_tfds_one_step_train_and_eval(tmp_path):
    import tensorflow_datasets as tfds

    from effnet_keras.training import run as run_lib

    cfg = tiny_config("train.max_steps=2,train.steps_per_execution=1,train.batch_size=16,eval.batch_size=16,"
                      "data.num_train_examples=64,data.num_eval_examples=32,data.cache=false", dataset_cfg="cifar10")
    with tfds.testing.mock_data(num_examples=64):
        result = run_lib.run(cfg, mode="train_and_eval", model_dir=str(tmp_path / "tfds"), verbose=0)
    assert [h["steps"] for h in result["history"]] == [2]
    assert result["eval"]["global_step"] == 2 and 0.0 <= result["eval"]["top1"] <= 1.0


def test_fine_tune_init_restores_backbone_ema_and_reinitialises_other_head(tmp_path):
    import keras

    from effnet_keras.training import run as run_lib

    donor_cfg = tiny_config()
    donor_dir = tmp_path / "donor"
    donor_dir.mkdir()
    config_lib.write_or_check(donor_cfg, str(donor_dir))
    donor = rundir.build_model(donor_cfg, 10, 32)
    for v in donor.weights:  # recognisable values
        v.assign(np.full(v.shape, 0.5, v.dtype))
    donor.save_weights(str(donor_dir / "ema.weights.h5"))
    for v in donor.weights:
        v.assign(np.full(v.shape, -1.0, v.dtype))
    donor.save_weights(str(donor_dir / "model.weights.h5"))

    cfg = tiny_config(f"train.ft_init_ckpt={donor_dir},data.num_classes=12")
    model = rundir.build_model(cfg, 12, 32)
    head_before = keras.ops.convert_to_numpy(model.get_layer("predictions").kernel).copy()
    missing = finetune.init_from_checkpoint(model, str(donor_dir), cfg)
    assert missing == ["predictions"]  # 10 -> 12 classes: head keeps its fresh init
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("predictions").kernel), head_before)
    stem = keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel)
    np.testing.assert_array_equal(stem, 0.5)  # EMA values preferred over the raw ones
    with pytest.raises(ValueError, match="train.ft_init_ckpt: .* no config.yaml there"):
        finetune.init_from_checkpoint(model, str(tmp_path), cfg)


def test_main_flags_one_step(tmp_path, capsys):
    from absl import flags

    from effnet_keras.cli import train as main_lib

    model_dir = str(tmp_path / "main")
    argv = ["main.py", "--dataset_cfg=digits", f"--model_dir={model_dir}", "--mode=train", "--verbose=0",
            f"--hparam_str={TINY},train.max_steps=1"]
    flags.FLAGS.unparse_flags()
    flags.FLAGS(argv)
    try:
        assert main_lib._main([]) == 0
    finally:
        flags.FLAGS.unparse_flags()
    out = capsys.readouterr().out
    summary = json.loads(out[: out.index("\nwrote:")])
    assert summary["model"] == "efficientnetv2-nano" and summary["stages"] == [[32, 32]]
    assert f"wrote: {os.path.abspath(model_dir)}" in out
    assert config_lib.load_yaml(os.path.join(model_dir, "config.yaml"))["train"]["max_steps"] == 1

    # --mode=export on that run: the exporter (EMA weights), a reusable SavedModel where asked.
    export_dir = str(tmp_path / "fv")
    flags.FLAGS([argv[0], "--dataset_cfg=digits", f"--model_dir={model_dir}", "--mode=export", "--verbose=0",
                 f"--export_dir={export_dir}", f"--hparam_str={TINY},train.max_steps=1"])
    try:
        assert main_lib._main([]) == 0
    finally:
        flags.FLAGS.unparse_flags()
    assert os.path.exists(os.path.join(export_dir, "saved_model.pb"))
    assert f"and {export_dir}" in capsys.readouterr().out


@pytest.mark.parametrize("dataset_cfg, classes", [("cifar10ft", 10), ("cifar100ft", 100), ("carsft", 196),
                                                  ("flowersft", 102)])
def test_fine_tune_recipes_run_on_mock_tfds_from_a_weights_file(dataset_cfg, classes, tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    import effnet_keras
    from effnet_keras.training import run as run_lib

    donor = tmp_path / "donor.weights.h5"  # a full 10-class file: the backbone loads, the head is new
    effnet_keras.get_model("efficientnetv2-nano", classes=10, input_shape=(32, 32, 3)).save_weights(str(donor))
    restored = []
    original = finetune.init_from_checkpoint
    monkeypatch.setattr(finetune, "init_from_checkpoint",
                        lambda *a, **k: restored.append(original(*a, **k)) or restored[-1])
    cfg = config_lib.build_config(
        model_name="efficientnetv2-nano", dataset_cfg=dataset_cfg,
        hparam_str=(f"train.ft_init_ckpt={donor},train.max_steps=2,train.batch_size=8,eval.batch_size=8,"
                    "train.image_size=32,eval.image_size=32,data.num_train_examples=16,data.num_eval_examples=8,"
                    "data.cache=false,data.shuffle_buffer=16,train.steps_per_execution=1"))
    assert cfg.data.augment == "ft" and cfg.train.lr_sched == "constant"
    # tfds' random cars196 examples are invalid (bbox min > max): the pipeline tests' stand-in.
    from tests.data.test_sources import _cars196_examples

    fake = dict(as_dataset_fn=_cars196_examples, policy=tfds.testing.MockPolicy.USE_CODE) if dataset_cfg == "carsft" else {}
    with tfds.testing.mock_data(num_examples=16, **fake):
        result = run_lib.run(cfg, mode="train_and_eval", model_dir=str(tmp_path / dataset_cfg), verbose=0)
    assert restored == [["predictions"]]  # backbone from the file, a fresh `classes`-way head
    assert [h["steps"] for h in result["history"]] == [2] and np.isfinite(result["history"][0]["loss"])
    assert result["eval"]["global_step"] == 2 and 0.0 <= result["eval"]["top1"] <= 1.0
    assert cfg.data.num_classes == classes


def test_progressive_stages_share_one_traced_step(tmp_path, monkeypatch):
    """Stage rates are runtime variables and, without XLA, batches have no static size: 3 stages at 3
    sizes trace the train step once, not once per stage, and each stage's rates reach the layers."""
    from keras.src.backend.tensorflow import trainer as keras_tf_trainer

    from effnet_keras.layers import drop
    from effnet_keras.training import run as run_lib
    from effnet_keras.training import trainer as trainer_lib

    traces, rates_seen = [], []
    original = keras_tf_trainer.TensorFlowTrainer.train_step

    def counting_train_step(self, data):
        traces.append(tuple(data[0].shape))  # runs only while tracing
        return original(self, data)

    def recording_set_regularization(model, **rates):
        changed = trainer_lib_set(model, **rates)
        head = model.get_layer("top_dropout")
        rates_seen.append((float(drop.runtime_rate(head).numpy()), head.rate))
        return changed

    trainer_lib_set = trainer_lib.set_regularization
    monkeypatch.setattr(keras_tf_trainer.TensorFlowTrainer, "train_step", counting_train_step)
    monkeypatch.setattr(trainer_lib, "set_regularization", recording_set_regularization)
    cfg = tiny_config("train.epochs=3,train.batch_size=96,train.progressive.num_stages=3,"
                      "train.progressive.start_image_size=16,train.progressive.batch_growth=false,"
                      "train.progressive.dropout_rate=[0.1,0.3]")
    result = run_lib.run(cfg, mode="train", model_dir=str(tmp_path / "run"), verbose=0)
    assert [h["image_size"] for h in result["history"]] == [16, 24, 32]
    assert traces == [(None, None, None, 3)], traces
    assert rates_seen == [pytest.approx((r, r)) for r in (0.1, 0.2, 0.3)]


@pytest.mark.parametrize("every_epochs, expected", [(2, [88, 132]), (0, [132])])
def test_checkpoint_schedule_and_one_pipeline_start_per_epoch(every_epochs, expected, tmp_path, monkeypatch):
    """Epoch-end checkpoints every train.checkpoint_every_epochs (0: off); the end of a stage is always
    saved, once. fit() opens the epoch's dataset once: Keras re-opens a dataset of known length as an
    epoch ends (a second pipeline start, for an epoch that never comes), which the trainer prevents."""
    import tensorflow as tf

    from effnet_keras.training import run as run_lib
    from effnet_keras.training import trainer as trainer_lib

    opened, saves = [], []
    original_iter, original_save = tf.data.Dataset.__iter__, trainer_lib.Trainer.save
    monkeypatch.setattr(tf.data.Dataset, "__iter__", lambda self: opened.append(1) or original_iter(self))
    monkeypatch.setattr(trainer_lib.Trainer, "save",
                        lambda self, *a, **k: saves.append(self.global_step()) or original_save(self, *a, **k))
    cfg = tiny_config(f"train.epochs=3,train.checkpoint_every_steps=0,train.checkpoint_every_epochs={every_epochs},"
                      "train.keep_checkpoints=5")
    model_dir = str(tmp_path / "run")
    result = run_lib.run(cfg, mode="train", model_dir=model_dir, verbose=0)
    assert [h["steps"] for h in result["history"]] == [44, 44, 44]
    assert saves == expected  # 1437 // 32 = 44 steps per epoch
    steps = sorted(int(p.rsplit("-", 1)[1].split(".")[0]) for p in glob.glob(os.path.join(model_dir, "ckpt-*.index")))
    assert steps == expected
    assert len(opened) == 3, opened  # one pipeline start per epoch


def test_max_steps_on_an_epoch_end_is_saved_without_epoch_checkpoints(tmp_path, monkeypatch):
    """With epoch-end saves off, a run stopped by train.max_steps exactly at an epoch end still leaves a
    checkpoint there, recording the next epoch as where to resume."""
    from effnet_keras.training import run as run_lib
    from effnet_keras.training import trainer as trainer_lib

    saves = []
    original_save = trainer_lib.Trainer.save
    monkeypatch.setattr(trainer_lib.Trainer, "save", lambda self, *a, **k: saves.append(
        (self.global_step(), a[:2])) or original_save(self, *a, **k))
    cfg = tiny_config("train.epochs=2,train.checkpoint_every_steps=0,train.checkpoint_every_epochs=0,train.max_steps=44")
    result = run_lib.run(cfg, mode="train", model_dir=str(tmp_path / "run"), verbose=0)
    assert [h["steps"] for h in result["history"]] == [44]  # 1437 // 32: one whole epoch
    assert saves == [(44, (1, 0))]  # resume at epoch 1, step 0
