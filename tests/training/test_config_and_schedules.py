"""Config merge and validation, lr schedules, per-stage batch sizes, EMA warm-up, strategy wiring."""

import dataclasses
import os
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from effnet_keras.training import config as config_lib
from effnet_keras.training import optim
from effnet_keras.training import strategy as strategy_lib
from effnet_keras.training import plan as plan_lib

# ----------------------------------------------------------------- config


def test_merge_order_and_types():
    cfg = config_lib.build_config(
        model_name="efficientnetv2-s",
        dataset_cfg="digits",
        hparam_str="train.batch_size=512,data.ram=10,train.progressive.randaug_magnitude=5|15",
        overrides={"runtime": {"strategy": "cpu"}},
    )
    assert cfg.model.name == "efficientnetv2-s"
    assert cfg.train.batch_size == 512 and isinstance(cfg.train.batch_size, int)
    assert cfg.data.randaug_magnitude == 10.0 and isinstance(cfg.data.randaug_magnitude, float)
    assert cfg.train.progressive.randaug_magnitude == (5.0, 15.0)
    assert cfg.runtime.strategy == "cpu"
    assert cfg.data.config_name == "digits"


def test_coatnet_recipe_is_applied():
    cfg = config_lib.build_config(model_name="coatnet-0")
    assert (cfg.train.optimizer, cfg.train.lr_sched, cfg.train.weight_decay) == ("adamw", "cosine", 0.05)
    assert cfg.train.gclip == 1.0


def test_unknown_key_names_key_and_allowed_keys():
    with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'train.batchsize'.*batch_size"):
        config_lib.build_config(hparam_str="train.batchsize=3")
    with pytest.raises(config_lib.ConfigError, match=r"unknown config key 'trian'.*Allowed keys"):
        config_lib.build_config(hparam_str="trian.x=1")


def test_bad_values_are_errors():
    with pytest.raises(config_lib.ConfigError, match=r"train.optimizer must be one of .*'adam'"):
        config_lib.build_config(hparam_str="train.optimizer=adam")
    with pytest.raises(config_lib.ConfigError, match=r"train.batch_size must be an integer.*'big'"):
        config_lib.build_config(hparam_str="train.batch_size=big")
    with pytest.raises(config_lib.ConfigError, match=r"train.ema_decay must be in \[0, 1\)"):
        config_lib.build_config(hparam_str="train.ema_decay=1.5")
    with pytest.raises(config_lib.ConfigError, match=r"train.checkpoint_every_epochs must be an integer >= 0.*-1"):
        config_lib.build_config(hparam_str="train.checkpoint_every_epochs=-1")
    with pytest.raises(config_lib.ConfigError, match=r"Unknown dataset_cfg 'imagenett'.*digits"):
        config_lib.build_config(dataset_cfg="imagenett")
    with pytest.raises(config_lib.ConfigError, match="not of the form"):
        config_lib.build_config(hparam_str="train.batch_size")


def test_config_file_layer(tmp_path):
    path = os.path.join(tmp_path, "extra.yaml")
    with open(path, "w") as f:
        f.write("train:\n  epochs: 7\n")
    assert config_lib.build_config(config_file=path).train.epochs == 7


def test_rerun_with_different_config_is_refused(tmp_path):
    cfg = config_lib.build_config()
    config_lib.write_or_check(cfg, str(tmp_path))
    config_lib.write_or_check(cfg, str(tmp_path))  # same config: fine
    other = config_lib.build_config(hparam_str="train.epochs=3")
    # No checkpoint yet (the first run failed before its first save): the corrected rerun replaces it.
    config_lib.write_or_check(other, str(tmp_path))
    assert config_lib.load_yaml(os.path.join(tmp_path, "config.yaml"))["train"]["epochs"] == 3
    config_lib.write_or_check(cfg, str(tmp_path))
    open(os.path.join(tmp_path, "checkpoint"), "w").close()  # the run has started: its config binds
    with pytest.raises(config_lib.ConfigError, match=r"different config.*train.epochs.*--override_config"):
        config_lib.write_or_check(other, str(tmp_path))
    config_lib.write_or_check(other, str(tmp_path), override_config=True)
    assert config_lib.load_yaml(os.path.join(tmp_path, "config.yaml"))["train"]["epochs"] == 3


def test_typed_values_win_over_files_and_conflicts_are_refused():
    # The digits demo recipe names efficientnetv2-nano; the flag wins (it used to be dropped).
    demo = config_lib.config_path("recipes", "digits_demo.yaml")
    cfg = config_lib.build_config(model_name="efficientnetv2-b0", dataset_cfg="digits", config_file=demo)
    assert cfg.model.name == "efficientnetv2-b0"
    assert config_lib.build_config(dataset_cfg="digits", config_file=demo).model.name == "efficientnetv2-nano"
    with pytest.raises(config_lib.ConfigError, match=r"model.name: Unknown model name 'efficientnetv2-q'"):
        config_lib.build_config(model_name="efficientnetv2-q")
    with pytest.raises(config_lib.ConfigError, match=r"model.name is given twice.*--hparam_str.*--model_name"):
        config_lib.build_config(model_name="efficientnetv2-b0", hparam_str="model.name=efficientnetv2-b1")
    with pytest.raises(config_lib.ConfigError, match=r"data.data_dir is given twice"):
        config_lib.build_config(hparam_str="data.data_dir=/a", overrides={"data": {"data_dir": "/b"}})
    with pytest.raises(config_lib.ConfigError, match=r"data.data_dir='my_photos' but data.name='digits' reads no files"):
        config_lib.build_config(dataset_cfg="digits", overrides={"data": {"data_dir": "my_photos"}})
    same = config_lib.build_config(hparam_str="data.ram=5", overrides={"data": {"ram": 5}})
    assert same.data.randaug_magnitude == 5


# ----------------------------------------------------------------- lr schedule


def _lr(schedule, step):
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_lr_schedule_values_match_automl_tests():
    # automl utils_test: 10 steps/epoch; warm-up 2 epochs: 0.25 at step 5, 1.0 after;
    # exponential 0.5 every 2 epochs: 1.0 @5 (no warm-up), 0.5 @25, 0.125 @70; cosine 10 epochs.
    seg = [(0, 0, 10, 1.0)]
    warm = optim.RecipeLearningRate(1.0, seg, total_epochs=10, sched="constant", warmup_epochs=2)
    assert _lr(warm, 5) == pytest.approx(0.25) and _lr(warm, 35) == pytest.approx(1.0)
    exp = optim.RecipeLearningRate(1.0, seg, total_epochs=10, sched="exponential", warmup_epochs=0,
                               decay_epochs=2, decay_factor=0.5)
    assert [_lr(exp, s) for s in (5, 25, 70)] == pytest.approx([1.0, 0.5, 0.125])
    cos = optim.RecipeLearningRate(1.0, [(0, 0, 1, 1.0)], total_epochs=10, sched="cosine", warmup_epochs=0)
    assert [_lr(cos, s) for s in (4, 5, 6)] == pytest.approx([0.654508, 0.5, 0.345491], abs=1e-5)


def test_imagenet_recipe_drop_after_warmup():
    # 0.256 @ bs 4096, 5-epoch warm-up, x0.97 per 2.4 epochs counted from step 0:
    # right after warm-up the lr is 0.256 * 0.97**2 (reference §2.5).
    steps = 1_281_167 // 4096
    s = optim.RecipeLearningRate(0.256, [(0, 0, steps, 1.0)], 350, warmup_epochs=5)
    assert _lr(s, 5 * steps + 1) == pytest.approx(0.256 * 0.97**2, rel=1e-5)
    assert _lr(s, 350 * steps - 1) == pytest.approx(0.256 * 0.97 ** (349 // 2.4), rel=1e-4)


def _stage(index, size, start, end, batch=None):
    return SimpleNamespace(index=index, image_size=size, start_epoch=start, end_epoch=end, batch_size=batch)


def test_stage_batch_sizes_grow_as_area_shrinks():
    stages = [_stage(0, 128, 0, 1), _stage(1, 171, 1, 2), _stage(2, 300, 2, 3)]
    sizes = plan_lib.stage_batch_sizes(stages, base_batch=128, final_size=300, replicas=8)
    quantum = 64
    expected = [int(128 * (300 / s) ** 2) // quantum * quantum for s in (128, 171)] + [128]
    assert sizes == expected == [640, 384, 128]
    assert plan_lib.stage_batch_sizes(stages, 128, 300, replicas=8, cap=512) == [512, 384, 128]
    assert plan_lib.stage_batch_sizes(stages, 128, 300, growth=False) == [128, 128, 128]


def test_plan_and_lr_scale_follow_batch():
    stages = [_stage(0, 32, 0, 2), _stage(1, 64, 2, 4)]
    plans = plan_lib.plan_stages(stages, base_batch=16, num_train=1000, replicas=1)
    assert [p.batch_size for p in plans] == [64, 16]
    assert [p.lr_scale for p in plans] == [4.0, 1.0]
    assert [p.steps_per_epoch for p in plans] == [1000 // 64, 1000 // 16]
    assert plans[1].start_step == 2 * (1000 // 64)
    train_cfg = dataclasses.replace(config_lib.build_config().train, lr_base=0.256, lr_warmup_epoch=0.0,
                                    lr_sched="constant")
    schedule = plan_lib.make_lr_schedule(train_cfg, plans, base_batch=16)
    # lr = lr_base * 16 / 256 = 0.016, times the stage's batch ratio.
    assert _lr(schedule, 0) == pytest.approx(0.064)
    assert _lr(schedule, plans[1].start_step) == pytest.approx(0.016)
    # Warm-up is measured in epochs, so it spans fewer steps of the grown batch: half of a
    # 1-epoch warm-up is step 7.5 of the 15 steps per epoch at batch 64.
    warm = plan_lib.make_lr_schedule(dataclasses.replace(train_cfg, lr_warmup_epoch=1.0), plans, base_batch=16)
    assert _lr(warm, 7.5) == pytest.approx(0.5 * 0.064)
    with pytest.raises(ValueError, match="larger than the 10 training examples"):
        plan_lib.plan_stages([_stage(0, 64, 0, 1)], base_batch=16, num_train=10)


def test_a_batch_larger_than_the_data_is_lowered_with_one_line(caplog):
    # A 59-image folder with the fine-tune recipe's batch 64: trains with batch 56 (whole batches of
    # replicas * ... examples), and says so; 1 example on 2 replicas cannot fill a batch.
    with caplog.at_level("WARNING"):
        assert plan_lib.fit_batch_to_data(64, 59) == 59 and plan_lib.fit_batch_to_data(64, 59, replicas=2) == 58
    assert "train.batch_size=64 is larger than the 59 training examples: training with batch 59" in caplog.text
    assert plan_lib.fit_batch_to_data(32, 59) == 32
    with pytest.raises(ValueError, match="1 training examples cannot fill one batch on 2 replicas"):
        plan_lib.fit_batch_to_data(64, 1, replicas=2)


def test_ema_warmup_and_l2():
    var = keras.Variable(np.ones((2, 2), "float32"))
    bias = keras.Variable(np.ones((2,), "float32"))
    opt = optim.RecipeSGD(learning_rate=0.1, momentum=0.0, l2=0.5, use_ema=True, ema_momentum=0.9999)
    opt.build([var, bias])
    opt.apply([np.zeros((2, 2), "float32"), np.zeros((2,), "float32")], [var, bias])
    # L2 reaches kernels only: w -= lr * l2 * w.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(var), 0.95)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bias), 1.0)
    # The first update copies the weights; then decay = min(0.9999, (1 + t) / (10 + t)):
    # at t = 1 that is 2/11, so a 0.9999 EMA of a short run still follows the weights.
    ema = optim.ema_variables(opt)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ema[0]), 0.95, rtol=1e-6)
    opt.apply([np.zeros((2, 2), "float32"), np.zeros((2,), "float32")], [var, bias])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ema[0]), 2 / 11 * 0.95 + 9 / 11 * 0.95 * 0.95, rtol=1e-6)
    opt.finalize_variable_values([var, bias])  # must not overwrite the model with the EMA
    np.testing.assert_allclose(keras.ops.convert_to_numpy(var), 0.95 * 0.95, rtol=1e-6)


# ----------------------------------------------------------------- strategy


class FakeResolver:
    created = []

    def __init__(self, tpu=None):
        self.tpu = tpu
        FakeResolver.created.append(tpu)

    def master(self):
        return "grpc://10.0.0.2:8470"


def test_tpu_wiring_with_mocked_resolver(monkeypatch):
    import tensorflow as tf

    calls = []
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda r: calls.append(("connect", r.tpu)))
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda r: calls.append(("init", r.tpu)))
    monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda r: ("TPUStrategy", r.tpu))
    assert strategy_lib.make_strategy("tpu", tpu="my-tpu", resolver_cls=FakeResolver) == ("TPUStrategy", "my-tpu")
    assert calls == [("connect", "my-tpu"), ("init", "my-tpu")]
    calls.clear()
    # auto prefers a reachable TPU
    assert strategy_lib.make_strategy("auto", tpu="t2", resolver_cls=FakeResolver)[0] == "TPUStrategy"
    assert calls[0] == ("connect", "t2")


def test_strategy_choices_and_errors(monkeypatch):
    import tensorflow as tf

    assert strategy_lib.make_strategy("auto").num_replicas_in_sync == 1
    assert isinstance(strategy_lib.make_strategy("cpu"), tf.distribute.OneDeviceStrategy)
    with pytest.raises(ValueError, match="no GPU"):
        strategy_lib.make_strategy("gpus")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        strategy_lib.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="strategy must be one of"):
        strategy_lib.make_strategy("mirrored")


# ----------------------------------------------------------------- more config errors and recipes


def test_every_type_error_names_the_key(tmp_path):
    cases = {
        "train=3": r"'train' is a section; give a mapping",
        "runtime.deterministic=maybe": r"runtime.deterministic must be true or false.*'maybe'",
        "train.progressive.randaug_magnitude=5": r"train.progressive.randaug_magnitude must be a list",
        "train.optimizer=3": r"train.optimizer must be a string",
        "train.lr_base=fast": r"train.lr_base must be a number.*'fast'",
        "train.epochs=0": r"train.epochs must be a positive integer",
        "train.label_smoothing=1.0": r"train.label_smoothing must be in \[0, 1\)",
        "runtime.strategy=mirrored": r"runtime.strategy must be one of .*'mirrored'",
        "train.lr_sched=linear": r"train.lr_sched must be one of",
    }
    for hparams, message in cases.items():
        with pytest.raises(config_lib.ConfigError, match=message):
            config_lib.build_config(hparam_str=hparams)
    assert config_lib.build_config(hparam_str="train.lr_base=1.0e12").train.lr_base == 1e12  # YAML 1.1 string
    with pytest.raises(config_lib.ConfigError, match=r"missing.yaml' does not exist.*recipes/digits_demo.yaml"):
        config_lib.build_config(config_file=str(tmp_path / "missing.yaml"))
    # A packaged recipe by its path under effnet_keras/configs/ (what an installed wheel has).
    paper_s = config_lib.build_config(model_name="efficientnetv2-s", config_file="recipes/progressive_paper_s.yaml")
    assert paper_s.to_dict()["train"]["progressive"] == config_lib.merge(
        config_lib.load_yaml(config_lib.config_path("base.yaml")),
        config_lib.load_yaml(config_lib.config_path("recipes", "progressive_paper_s.yaml")), "x")["train"]["progressive"]
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(config_lib.ConfigError, match="must hold a mapping"):
        config_lib.build_config(config_file=str(bad))


def test_per_model_recipe_then_dataset_then_overrides():
    cfg = config_lib.build_config(model_name="efficientnetv2-m", dataset_cfg="imagenet")
    # effnet_keras/configs/models/efficientnetv2-m.yaml (automl's released V2-M values) over the family recipe.
    assert (cfg.data.randaug_magnitude, cfg.data.mixup_alpha, cfg.train.image_size) == (15.0, 0.2, 384)
    assert cfg.train.progressive.num_stages == 4 and cfg.train.optimizer == "rmsprop"
    cfg = config_lib.build_config(model_name="efficientnetv2-m", dataset_cfg="imagenet", hparam_str="data.ram=7")
    assert cfg.data.randaug_magnitude == 7.0


def test_loss_choice_and_decay_exclusions():
    from effnet_keras.training import run as run_lib

    train = config_lib.build_config().train
    multi_hot, one_hot = SimpleNamespace(multilabel=True), SimpleNamespace(multilabel=False)
    loss, metrics = run_lib.loss_and_metrics(train, multi_hot, 21843)
    assert isinstance(loss, keras.losses.BinaryCrossentropy) and [m.name for m in metrics] == ["top1", "top5"]
    loss, metrics = run_lib.loss_and_metrics(train, one_hot, 3)
    assert isinstance(loss, keras.losses.CategoricalCrossentropy) and [m.name for m in metrics] == ["top1"]
    loss, _ = run_lib.loss_and_metrics(dataclasses.replace(train, loss="sigmoid"), one_hot, 3)
    assert isinstance(loss, keras.losses.BinaryCrossentropy) and loss.get_config()["label_smoothing"] == 0.1
    kernel = keras.Variable(np.ones((3, 3)), name="kernel")
    gamma = keras.Variable(np.ones((3,)), name="gamma")
    table = keras.Variable(np.ones((5, 2)), name="relative_position_bias_table")
    assert [optim.no_decay(v) for v in (kernel, gamma, table)] == [False, True, True]


def test_stage_batch_rule_errors_and_explicit_batches():
    stages = [_stage(0, 128, 0, 1), _stage(1, 300, 1, 2)]
    with pytest.raises(ValueError, match="max_batch_size=64 is below train.batch_size=128"):
        plan_lib.stage_batch_sizes(stages, 128, cap=64)
    # A stage with its own batch keeps it; the final stage keeps the base batch.
    assert plan_lib.stage_batch_sizes([_stage(0, 128, 0, 1, batch=200), stages[1]], 128) == [200, 128]
    # Rounded down to a multiple of replicas * 8, never below the base batch.
    assert plan_lib.stage_batch_sizes([_stage(0, 290, 0, 1), stages[1]], 128, replicas=4) == [128, 128]
    with pytest.raises(ValueError, match="not a multiple of the 3 replicas"):
        plan_lib.plan_stages([_stage(0, 300, 0, 1, batch=100)], 99, num_train=1000, replicas=3)
