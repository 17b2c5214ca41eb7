"""Bucket paths (issue 21), with TF's in-memory filesystem (`ram://`) standing in for `gs://`:
it takes the same tf.io.gfile code paths and, like a bucket, has no atomic directory rename.

The digits demo end to end with --model_dir / --export_dir on ram:// (nothing written to the
working directory), resume on ram:// after a failure mid-stage, TFRecords read from a ram://
--data_dir, fine-tune init from a ram:// run directory."""

import io
import json
import os
import tarfile
import uuid

import numpy as np
import pytest

from effnet_keras import fileio
from effnet_keras import rundir
from effnet_keras.training import config as config_lib
from effnet_keras.training import finetune
from tests.training.test_runs import TINY
from tests.training.test_runs import tiny_config

TWO_STAGES = "train.progressive.num_stages=2,train.progressive.start_image_size=16"


@pytest.fixture
def ram_root():
    root = f"ram://t{uuid.uuid4().hex[:10]}"
    fileio.makedirs(root)
    yield root
    fileio.rmtree(root)


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd
    assert sorted(os.listdir(cwd)) == [], "something was written to the local working directory"


def _progress(model_dir):
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(model_dir)
    # Not tf.train.load_checkpoint: ram:// calls `ckpt-14` a directory (it matches `ckpt-14.index` by prefix).
    reader = tf.compat.v1.train.NewCheckpointReader(latest)
    key = next(k for k in reader.get_variable_to_shape_map() if k.startswith("progress"))
    return tuple(int(v) for v in reader.get_tensor(key))


def _no_temp_names(root):
    return [f for f in fileio.walk_files(root) if ".tmp" in f]


def _main(argv):
    from absl import flags

    from effnet_keras.cli import train as cli

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["main.py"] + argv)
    try:
        return cli._main([])
    finally:
        flags.FLAGS.unparse_flags()


@pytest.mark.slow
def test_digits_demo_end_to_end_on_ram(ram_root, empty_cwd, capsys):
    """main.py's demo (2 stages, eval, export) then effnet-export (TFLite, Kaggle bundle), all on ram://."""
    import tensorflow as tf

    from hub_export.__main__ import main as export_main

    model_dir, export_dir = f"{ram_root}/run/demo", f"{ram_root}/export/fv"
    # 11 steps of stage 0 (16 px, batch 128), 3 of stage 1 (32 px, batch 32).
    assert _main(["--dataset_cfg=digits", f"--model_dir={model_dir}", f"--export_dir={export_dir}", "--verbose=0",
                  f"--hparam_str={TINY},{TWO_STAGES},train.max_steps=14"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[: out.index("\ntest accuracy")])
    assert summary["model_dir"] == model_dir and summary["export"] == export_dir
    assert summary["stages"] == [[16, 128], [32, 32]] and summary["eval"]["global_step"] == 14
    files = fileio.walk_files(model_dir)
    for name in ("config.yaml", "checkpoint", "eval_results.json", "model.weights.h5", "ema.weights.h5"):
        assert name in files, (name, files)
    assert any(f.startswith("tensorboard/train/events.out.tfevents") for f in files)
    assert json.loads(fileio.read_text(f"{model_dir}/eval_results.json"))["global_step"] == 14
    assert config_lib.load_yaml(f"{model_dir}/config.yaml")["train"]["max_steps"] == 14
    assert _progress(model_dir)[:3] == (1, 3, 1)  # stopped 3 steps into stage 1's epoch 1
    assert fileio.walk_files(export_dir) == ["assets/effnet_export.json", "fingerprint.pb", "saved_model.pb",
                                             "variables/variables.data-00000-of-00001", "variables/variables.index"]
    assert tf.saved_model.load(export_dir)(tf.zeros([1, 32, 32, 3])).shape[0] == 1

    hub_dir = f"{ram_root}/hub/fv"
    assert export_main([f"--model_dir={model_dir}", f"--export_dir={hub_dir}", "--tflite", "--bundle"]) == 0
    assert "model_float32.tflite" in fileio.walk_files(hub_dir)
    assert fileio.walk_files(hub_dir + "_bundle") == ["README.md", "model-instance-metadata.json",
                                                      "model-metadata.json", "saved_model.tar.gz"]
    with tarfile.open(fileobj=io.BytesIO(fileio.read_bytes(hub_dir + "_bundle/saved_model.tar.gz"))) as tar:
        names = tar.getnames()
    assert "saved_model.pb" in names and not any(n.endswith(".tflite") for n in names)
    assert _no_temp_names(ram_root) == []


@pytest.mark.slow
def test_resume_on_ram_after_a_failure_mid_stage(ram_root, empty_cwd, monkeypatch):
    """A kill cannot span processes on ram:// (the filesystem lives in one): a failure injected right
    after a step checkpoint in stage 1 stands in for it; the rerun resumes at that stage/epoch/step."""
    from effnet_keras.training import run as run_lib
    from effnet_keras.training import trainer as trainer_lib

    model_dir = f"{ram_root}/run"
    cfg = tiny_config(f"{TWO_STAGES},train.max_steps=24")
    original = trainer_lib.Trainer.save

    def save_then_fail(self, epoch, step_in_epoch, plan=None):
        path = original(self, epoch, step_in_epoch, plan)
        if plan is not None and plan.stage.index == 1 and step_in_epoch > 0:
            raise RuntimeError("injected failure after a step checkpoint")
        return path

    with monkeypatch.context() as patch:
        patch.setattr(trainer_lib.Trainer, "save", save_then_fail)
        with pytest.raises(RuntimeError, match="injected"):
            run_lib.run(cfg, mode="train", model_dir=model_dir, verbose=0)
    # Stage 0: 11 steps (epoch 0); stage 1 saves at global step 19 (8 into epoch 1), then fails.
    assert _progress(model_dir) == (1, 8, 1, 32)

    resumed = run_lib.run(cfg, mode="train", model_dir=model_dir, verbose=0)
    history = resumed["history"]
    assert [(h["stage"], h["epoch"], h["steps"]) for h in history] == [(1, 1, 24 - 19)]
    assert _progress(model_dir)[:3] == (1, 13, 1)
    assert {"model.weights.h5", "ema.weights.h5"} <= set(fileio.listdir(model_dir))
    assert _no_temp_names(ram_root) == []


def test_tfrecord_data_dir_on_ram(ram_root, empty_cwd):
    """ImageNet-layout TFRecord shards on ram:// read as --data_dir (train and eval)."""
    from effnet_keras.training import run as run_lib
    from tests.data.conftest import flat_jpeg
    from tests.data.conftest import write_records

    data_dir = f"{ram_root}/imagenet"
    fileio.makedirs(data_dir)
    for shard in range(22):  # train = shards 20.. (minival = 0-19), as tensorflow/tpu's layout
        write_records(f"{data_dir}/train-{shard:05d}-of-00022",
                      [{"image/encoded": flat_jpeg(10 * shard), "image/class/label": shard + 1}] * 2)
    for shard in range(2):
        write_records(f"{data_dir}/validation-{shard:05d}-of-00002",
                      [{"image/encoded": flat_jpeg(200), "image/class/label": 1000}] * 2)
    cfg = config_lib.build_config(
        model_name="efficientnetv2-nano", dataset_cfg="imagenet",
        hparam_str=(f"train.max_steps=1,train.batch_size=4,eval.batch_size=4,train.image_size=32,"
                    "eval.image_size=32,data.num_train_examples=4,data.num_eval_examples=4,data.augment=none,"
                    "data.shuffle_buffer=8,train.steps_per_execution=1,train.epochs=1,train.lr_warmup_epoch=0"),
        overrides={"data": {"data_dir": data_dir}})
    result = run_lib.run(cfg, mode="train_and_eval", model_dir=f"{ram_root}/run", verbose=0)
    assert [h["steps"] for h in result["history"]] == [1] and np.isfinite(result["history"][0]["loss"])
    assert result["eval"]["global_step"] == 1 and 0.0 <= result["eval"]["top1"] <= 1.0


def test_fine_tune_init_from_a_run_directory_on_ram(ram_root, empty_cwd):
    import keras

    from effnet_keras.training import run as run_lib

    donor_cfg = tiny_config()
    donor_dir = f"{ram_root}/donor"
    config_lib.write_or_check(donor_cfg, donor_dir)
    donor = rundir.build_model(donor_cfg, 10, 32)
    for v in donor.weights:
        v.assign(np.full(v.shape, 0.5, v.dtype))
    fileio.save_weights(donor, f"{donor_dir}/ema.weights.h5")
    for v in donor.weights:
        v.assign(np.full(v.shape, -1.0, v.dtype))
    fileio.save_weights(donor, f"{donor_dir}/model.weights.h5")

    cfg = tiny_config(f"train.ft_init_ckpt={donor_dir},data.num_classes=12")
    model = rundir.build_model(cfg, 12, 32)
    assert finetune.init_from_checkpoint(model, donor_dir, cfg) == ["predictions"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("stem_conv").kernel), 0.5)  # EMA
    # A weights file on ram:// (not a run directory) loads through the weights loaders.
    file_model = rundir.build_model(cfg, 12, 32)
    assert finetune.init_from_checkpoint(file_model, f"{donor_dir}/model.weights.h5", cfg) == ["predictions"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(file_model.get_layer("stem_conv").kernel), -1.0)


def test_atomic_writes_leave_no_temp_files_and_replace(ram_root, tmp_path):
    for root in (ram_root, str(tmp_path)):
        path = fileio.join(root, "a", "x.json")
        fileio.makedirs(fileio.join(root, "a"))
        fileio.write_text(path, "one")
        fileio.write_text(path, "two")
        assert fileio.read_text(path) == "two" and fileio.listdir(fileio.join(root, "a")) == ["x.json"]
        with fileio.local_copy(path) as local:
            assert os.path.isfile(local) and open(local).read() == "two"
        assert fileio.exists(path) and not fileio.exists(fileio.join(root, "a", "x"))
