"""effnet_keras.config_schema: one typed dataclass per config section, the same keys as base.yaml, one error type."""

import ast
import dataclasses
import glob
import inspect
import os
import sys

import pytest

from effnet_keras import config_schema
from effnet_keras.config_schema import ConfigError
from effnet_keras.config_schema import DataConfig
from effnet_keras.config_schema import RunConfig
from effnet_keras.training import config as config_lib


def _base():
    return config_lib.load_yaml(config_lib.config_path("base.yaml"))


def _keys(tree, prefix=""):
    """Dotted keys of a nested dict, sections included."""
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict) and value:
            out |= _keys(value, f"{prefix}{key}.")
    return out


def _field_keys(cls, prefix=""):
    out = set()
    hints = config_schema._hints(cls)
    for f in dataclasses.fields(cls):
        out.add(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out |= _field_keys(hints[f.name], f"{prefix}{f.name}.")
    return out


def test_fields_are_exactly_the_base_yaml_keys_section_by_section():
    base = _base()
    assert set(config_schema.RunConfig.keys()) == set(base)
    assert set(config_schema.SECTIONS) == set(base)
    for name, cls in config_schema.SECTIONS.items():
        assert _field_keys(cls) == _keys(base[name]), name
    assert _field_keys(config_schema.ProgressiveConfig) == _keys(base["train"]["progressive"])
    # Every section knows its place in the config (messages name the full key).
    assert config_schema.ProgressiveConfig._prefix == "train.progressive."
    assert all(cls._prefix == f"{name}." for name, cls in config_schema.SECTIONS.items())


def test_base_yaml_round_trips_and_types_follow_nulls():
    base = _base()
    run = RunConfig.from_dict(base)
    assert run.to_dict() == base
    assert run.train.progressive.randaug_magnitude == (5.0, None)  # frozen: pairs are tuples
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.train.epochs = 3
    # Optional exactly where base.yaml has null (plus the two checkpoint intervals, where null means the default).
    flat = config_lib._flatten(base)
    optional = {path for path in flat if config_schema._optional_inner(config_schema.field_type(path)) is not None}
    assert optional == {path for path, value in flat.items() if value is None} | {
        "data.config_name", "train.checkpoint_every_steps", "train.checkpoint_every_epochs"}


def test_schema_module_is_a_leaf():
    tree = ast.parse(inspect.getsource(config_schema))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    top = {name.split(".")[0] for name in imported}
    assert top <= set(sys.stdlib_module_names) | {"yaml"}, top


@pytest.mark.parametrize("hparams, message", [
    ("train.optimizer=adam", r"^train.optimizer must be one of \('rmsprop', 'adamw', 'sgd'\). Received: 'adam'$"),
    ("data.name=mnist", r"^data.name must be one of \(.*'tfds', 'folder'\). Received: 'mnist'$"),
    ("data.ram=31", r"^data.randaug_magnitude must be in \[0, 30\] .*0-30 scale.*Received: 31.0$"),
    ("train.ema_decay=1.0", r"^train.ema_decay must be in \[0, 1\). Received: 1.0$"),
    ("data.cutmix_alpha=2", r"^data.cutmix_alpha must be in \[0, 1\]. Received: 2.0$"),
    ("data.mixup_alpha=-0.5", r"^data.mixup_alpha must be >= 0. Received: -0.5$"),
    ("data.num_classes=0", r"^data.num_classes must be a positive integer. Received: 0$"),
    ("train.checkpoint_every_steps=-5", r"^train.checkpoint_every_steps must be an integer >= 0 \(0: off\)"),
    ("train.epochs=2.5", r"^train.epochs must be an integer. Received: 2.5$"),
    ("data.cache=maybe", r"^data.cache must be true or false. Received: 'maybe'$"),
    ("model.image_size=big", r"^model.image_size must be an integer. Received: 'big'$"),
    ("train.progressive.mixup_alpha=0|x", r"^train.progressive.mixup_alpha\[1\] must be a number. Received: 'x'$"),
    ("data.erasing_scale=0.1|0.2|0.3", r"^data.erasing_scale must be a list of 2 values"),
])
def test_bad_values_are_one_line_config_errors_naming_the_key(hparams, message):
    with pytest.raises(ConfigError, match=message) as info:
        config_lib.build_config(hparam_str=hparams)
    assert "\n" not in str(info.value)


def test_from_dict_errors_bad_choice_range_type_unknown_and_missing_keys():
    def broken(section, key, value):
        cfg = _base()
        cfg[section][key] = value
        return cfg

    cases = [
        (broken("runtime", "mixed_precision", "fp8"), r"^runtime.mixed_precision must be one of .*'fp8'$"),
        (broken("model", "drop_connect_rate", 1.5), r"^model.drop_connect_rate must be in \[0, 1\). Received: 1.5$"),
        (broken("eval", "batch_size", "64"), r"^eval.batch_size must be an integer. Received: '64'$"),
        (broken("runtime", "tpu", 3), r"^runtime.tpu must be a string. Received: 3$"),
        (broken("train", "lr_base", None), r"^train.lr_base must be a number. Received: None$"),
        (broken("train", "batchsize", 3),
         r"^unknown config key 'train.batchsize'. Allowed keys under 'train.': .*batch_size"),
        (broken("train", "progressive", 4), r"^'train.progressive' is a section; give a mapping, not 4.$"),
        (dict(_base(), trian={}), r"^unknown config key 'trian'. Allowed keys under 'top level': data, eval, model"),
    ]
    for cfg, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            RunConfig.from_dict(cfg)
        assert "\n" not in str(info.value)
    cfg = _base()
    del cfg["train"]["progressive"]["num_stages"]
    with pytest.raises(ConfigError, match=r"train.progressive config is missing keys \['num_stages'\]"):
        RunConfig.from_dict(cfg)
    with pytest.raises(ConfigError, match=r"^run config is missing keys \['runtime'\]"):
        RunConfig.from_dict({k: v for k, v in _base().items() if k != "runtime"})
    # config_lib.validate is the same check, and returns the typed config.
    cfg = _base()
    assert config_lib.validate(cfg) == RunConfig.from_dict(cfg)
    with pytest.raises(ConfigError, match="train.loss must be one of"):
        config_lib.validate(broken("train", "loss", "hinge"))


def test_coercion_is_driven_by_the_field_types():
    cfg = config_lib.build_config(hparam_str=(
        "train.lr_base=1.0e12,train.epochs=7.0,runtime.deterministic='true',data.cache='0',model.dropout_rate=0,"
        "train.max_steps=20.0,data.erasing_scale=0|1,train.progressive.dropout_rate=0|null"))
    assert cfg.train.lr_base == 1e12 and isinstance(cfg.train.lr_base, float)
    assert cfg.train.epochs == 7 and isinstance(cfg.train.epochs, int)
    assert cfg.runtime.deterministic is True and cfg.data.cache is False
    assert cfg.model.dropout_rate == 0.0 and isinstance(cfg.model.dropout_rate, float)
    assert cfg.train.max_steps == 20 and isinstance(cfg.train.max_steps, int)
    assert cfg.data.erasing_scale == (0.0, 1.0)  # frozen all the way down; to_dict gives lists
    assert all(isinstance(v, float) for v in cfg.data.erasing_scale)
    assert cfg.train.progressive.dropout_rate == (0.0, None)
    assert config_schema.coerce("train.lr_base", "3e-4") == 3e-4
    assert config_schema.coerce("no.such.key", "x") == "x"  # merge reports unknown keys itself
    assert config_schema.field_type("train.progressive") is config_schema.ProgressiveConfig


def test_data_errors_from_the_pipeline_are_config_errors():
    from effnet_keras.data import pipeline

    typed = config_lib.build_config(dataset_cfg="digits").data
    data = typed.to_dict()
    assert pipeline.data_config(typed) is typed  # a run's section: checked once, where it was built
    assert pipeline.data_config(data) == typed and DataConfig.from_dict(data).to_dict() == data
    assert pipeline.data_config({**data, "randaug_magnitude": 7, "cache": "true"}).randaug_magnitude == 7.0
    # automl's (and earlier releases') name for the magnitude is accepted at the edge; both at once is not.
    renamed = {("ram" if k == "randaug_magnitude" else k): v for k, v in data.items()}
    assert pipeline.data_config({**renamed, "ram": 9}).randaug_magnitude == 9.0
    with pytest.raises(ConfigError, match=r"data.randaug_magnitude is given twice \(also as data.ram"):
        pipeline.data_config({**data, "ram": 9})
    cases = [
        ({**data, "name": "mnist"}, r"^data.name must be one of .*Received: 'mnist'$"),
        ({**data, "augment": "autoaug"}, r"^data.augment must be one of .*Received: 'autoaug'$"),
        ({**data, "num_classes": True}, r"^data.num_classes must be an integer. Received: True$"),
        ({**data, "shuffle_buffer": 0}, r"^data.shuffle_buffer must be a positive integer. Received: 0$"),
        ({**data, "name": "tfds", "tfds_name": "mnist"}, r"^data.tfds_name must be one of .* for data.name='tfds'"),
        ({**data, "name": "tfds", "tfds_name": None}, r"^data.tfds_name must be one of .*Received: None$"),
        ({**data, "name": "imagenet21k"}, r"^data.multilabel must be true for data.name='imagenet21k'"),
        ({**data, "colour": "rgb"}, r"^unknown config key 'data.colour'. Allowed keys under 'data.'"),
        ({k: v for k, v in data.items() if k != "randaug_magnitude"},
         r"^data config is missing keys \['randaug_magnitude'\]"),
    ]
    for cfg, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            pipeline.data_config(cfg)
        assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    # data.config_name is set by build_config; a hand-made section may leave it out.
    without_name = {k: v for k, v in data.items() if k != "config_name"}
    assert pipeline.data_config(without_name).config_name is None


def _packaged(folder):
    return sorted(os.path.basename(p)[: -len(".yaml")]
                  for p in glob.glob(os.path.join(config_lib.config_path(folder), "*.yaml")))


@pytest.mark.parametrize("dataset", _packaged("datasets"))
def test_every_packaged_dataset_config_validates(dataset):
    # folder needs data.data_dir (validation does not list it)
    overrides = {"data": {"data_dir": "/images"}} if dataset == "folder" else None
    cfg = config_lib.build_config(dataset_cfg=dataset, overrides=overrides)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert DataConfig.from_dict(cfg.data.to_dict()).config_name == dataset


@pytest.mark.parametrize("recipe", _packaged("recipes"))
def test_every_packaged_recipe_validates(recipe):
    model = "coatnet-0" if recipe == "coatnet" else None
    if recipe.startswith("progressive_") and recipe.rsplit("_", 1)[1] in ("s", "m", "l", "xl"):
        model = "efficientnetv2-" + recipe.rsplit("_", 1)[1]
    cfg = config_lib.build_config(model_name=model, dataset_cfg="imagenet",
                                  config_file=f"recipes/{recipe}.yaml")
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("model", _packaged("models") + ["efficientnetv2-nano", "coatnet-0"])
def test_every_packaged_model_config_validates(model):
    assert config_lib.build_config(model_name=model).model.name == model


def test_a_run_written_before_a_key_existed_opens_with_its_default(tmp_path):
    """config.yaml of an earlier release: no `runtime:` section, `data.ram` for the magnitude."""
    import yaml

    from effnet_keras import rundir
    from effnet_keras.training import config as config_lib

    old = config_lib.build_config(dataset_cfg="digits").to_dict()
    old["data"]["ram"] = old["data"].pop("randaug_magnitude")
    del old["runtime"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    run = rundir.RunDir.open(str(tmp_path), require_weights=False)
    assert run.config.data.randaug_magnitude == old["data"]["ram"]
    assert run.config.runtime.strategy == "auto"
    old["data"]["randaug_magnitude"] = 3.0  # both names at once is still an error, naming both
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(rundir.RunDirError, match="data.randaug_magnitude is given twice"):
        rundir.RunDir.open(str(tmp_path), require_weights=False)
