"""The run config's types and constraints: one frozen dataclass per section of configs/base.yaml.

Three things about a run config, each said once:

* defaults: `effnet_keras/configs/base.yaml` (the YAML every run starts from; recipes,
  dataset configs, --config, --hparam_str and flags override it, see
  `effnet_keras.training.config.build_config`);
* types: the annotations of the dataclasses below (`Optional[...]` where the base
  value is null). They drive coercion: YAML's "1.0e12" (a string in YAML 1.1) becomes
  a float, 300.0 an int, "true"/"false" a bool, [start, end] pairs are checked per item;
* constraints: each field's metadata (`choices`, a `range`, a `min`), plus the checks
  that need two keys in a section's `_check` (data.tfds_name with data.name='tfds',
  data.multilabel with data.name='imagenet21k').

Every error is a `ConfigError` (a ValueError) whose message is one line naming the key,
the value received and what is allowed. `RunConfig.from_dict(config)` checks a whole
merged config, `DataConfig.from_dict(section)` just the `data:` section (the input
pipeline's check); `to_dict()` gives the plain (YAML-able) dict back.

A leaf module: the standard library only (PyYAML, a base dependency, is imported when
`base_defaults` reads base.yaml; no TensorFlow, nothing of effnet_keras.training or
effnet_keras.data), so every layer can import it.
"""

import copy
import dataclasses
import functools
import importlib.resources
import typing
from collections.abc import Mapping
from typing import ClassVar
from typing import Optional
from typing import Tuple


class ConfigError(ValueError):
    """An invalid run config: one line naming the key, the value and what is allowed."""


# ---------------------------------------------------------------------- allowed values

RUN_MODES = ("train", "eval", "train_and_eval", "export")
OPTIMIZERS = ("rmsprop", "adamw", "sgd")
LR_SCHEDULES = ("exponential", "cosine", "constant")
LOSSES = ("auto", "softmax", "sigmoid")
STRATEGIES = ("auto", "tpu", "gpus", "cpu", "multi_worker")
MIXED_PRECISIONS = ("auto", "bf16", "fp16", "none")
DATA_SOURCES = ("digits", "imagenet", "imagenet21k", "tfds", "folder")
AUGMENTS = ("randaugment", "ft", "none")
# TFDS datasets we have configs for (effnet_keras/configs/datasets/*.yaml) (the tfds source checks against it).
TFDS_NAMES = ("cifar10", "cifar100", "oxford_flowers102", "cars196", "tf_flowers", "imagenet2012")

# RandAugment magnitudes are on automl's scale: 0-30 (its _MAX_LEVEL 10, times 3). The one bound;
# data.augment's RandAugment reads it too.
RANDAUGMENT_MAX_MAGNITUDE = 30.0
RANDAUGMENT_NOTE = "(a RandAugment magnitude on automl's 0-30 scale)"


def check_randaug_magnitude(name, *values):
    """The one RandAugment bound, for the APIs that take magnitudes outside a config (ProgressiveSchedule,
    data.randaugment.RandAugment); a config's magnitudes are checked by their fields' metadata, the same way."""
    for value in values:
        if not 0.0 <= float(value) <= RANDAUGMENT_MAX_MAGNITUDE:
            raise ConfigError(f"{name} must be in [0, {RANDAUGMENT_MAX_MAGNITUDE:g}] {RANDAUGMENT_NOTE}. "
                              f"Received: {list(values) if len(values) > 1 else value!r}")

# A progressive [start, end] pair; null takes the fallback named in base.yaml.
Pair = Tuple[Optional[float], Optional[float]]


# Keys of earlier releases (and automl's names) accepted at the config edge, by section prefix:
# YAML files, --hparam_str and run directories written before the rename still read.
KEY_ALIASES = {"data.": {"ram": "randaug_magnitude"}}


def canonical_key(prefix, key):
    """The key an alias names (`data.ram` -> `data.randaug_magnitude`), else `key`."""
    return KEY_ALIASES.get(prefix, {}).get(key, key)


def canonical_keys(prefix, data):
    """`data` with alias keys renamed; a key given under both names is an error."""
    out = {}
    for key, value in data.items():
        name = canonical_key(prefix, key)
        if name in out:
            raise ConfigError(f"{prefix}{name} is given twice (also as {prefix}{key}, its earlier name); give it once.")
        out[name] = value
    return out


# ---------------------------------------------------------------------- field constraints


def choice(*allowed):
    """A field whose value must be one of `allowed`."""
    return dataclasses.field(metadata={"choices": tuple(allowed)})


def positive():
    """An int field >= 1."""
    return dataclasses.field(metadata={"min": 1})


def at_least(low, note=""):
    """A number >= low (`note` is appended to the message, e.g. "(0: off)")."""
    return dataclasses.field(metadata={"min": low, "note": note})


def in_range(low, high, closed="[]", note=""):
    """A number in [low, high] (closed="[]") or [low, high) (closed="[)")."""
    if closed not in ("[]", "[)"):
        raise ValueError(f"closed must be '[]' or '[)'. Received: {closed!r}")
    return dataclasses.field(metadata={"range": (low, high), "closed": closed, "note": note})


def _num(x):
    return str(int(x)) if float(x).is_integer() else repr(x)


def _check_metadata(path, value, metadata):
    if value is None:  # Optional fields: null is allowed; the type said so
        return
    if isinstance(value, (list, tuple)):  # a [start, end] pair: each value
        for i, item in enumerate(value):
            _check_metadata(f"{path}[{i}]", item, metadata)
        return
    allowed = metadata.get("choices")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{path} must be one of {allowed}. Received: {value!r}")
    note = metadata.get("note", "")
    note = f" {note}" if note else ""
    if "min" in metadata:
        low = metadata["min"]
        if value < low:
            if isinstance(value, int) and low == 1:
                raise ConfigError(f"{path} must be a positive integer{note}. Received: {value!r}")
            if isinstance(value, int):
                raise ConfigError(f"{path} must be an integer >= {_num(low)}{note}. Received: {value!r}")
            raise ConfigError(f"{path} must be >= {_num(low)}{note}. Received: {value!r}")
    if "range" in metadata:
        low, high = metadata["range"]
        closed = metadata["closed"]
        if not (low <= value <= high) or (closed == "[)" and value == high):
            raise ConfigError(f"{path} must be in [{_num(low)}, {_num(high)}{closed[1]}{note}. Received: {value!r}")


# ---------------------------------------------------------------------- coercion by type

_DESCRIPTIONS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _optional_inner(tp):
    """Optional[X] -> X; anything else -> None."""
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def coerce_value(path, value, tp):
    """`value` as type `tp` (a field annotation), or a ConfigError naming `path`.

    YAML already parsed numbers, bools and lists; what is left: ints where floats are
    asked for, integral floats where ints are, YAML 1.1 strings such as "1.0e12" (no sign
    in the exponent) for floats, "true"/"false"/"1"/"0" for bools. Lists come back as lists.
    """
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else coerce_value(path, value, inner)
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{path} must be a list of {len(args)} values. Received: {value!r}")
        return [coerce_value(f"{path}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args))]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1.0e12' (no sign) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"config_schema: no coercion for the type {tp!r} of {path}")
    raise ConfigError(f"{path} must be {_DESCRIPTIONS[tp]}. Received: {value!r}")


# ---------------------------------------------------------------------- sections


@functools.lru_cache(maxsize=None)
def _hints(cls):
    return typing.get_type_hints(cls)


def _is_section(tp):
    return isinstance(tp, type) and issubclass(tp, _Section)


class _Section:
    """Shared by the section dataclasses: coercion and checks in __post_init__, from_dict, to_dict."""

    _prefix: ClassVar[str] = ""  # "data.", "train.progressive.", ... ("" for the whole run config)

    def __post_init__(self):
        hints = _hints(type(self))
        for f in dataclasses.fields(self):
            path = self._prefix + f.name
            tp, value = hints[f.name], getattr(self, f.name)
            if _is_section(tp):
                if isinstance(value, Mapping):
                    value = tp.from_dict(value)
                elif not isinstance(value, tp):
                    raise ConfigError(f"{path!r} is a section; give a mapping, not {value!r}.")
            else:
                value = coerce_value(path, value, tp)
                _check_metadata(path, value, f.metadata)
                if isinstance(value, list):
                    value = tuple(value)  # frozen all the way down; to_dict gives lists back
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self):
        """Constraints between keys of one section (override)."""

    @classmethod
    def keys(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def required_keys(cls):
        """Keys a section dict must give (a field with a dataclass default may be left out)."""
        return tuple(f.name for f in dataclasses.fields(cls)
                     if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)

    @classmethod
    def from_dict(cls, data):
        """Check and coerce one section's dict (nested sections included); raises ConfigError."""
        name = cls._prefix[:-1] or "run"
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            what = f"{name!r} is a section; give" if cls._prefix else "A run config must be"
            raise ConfigError(f"{what} a mapping, not {data!r}.")
        data = canonical_keys(cls._prefix, data)
        keys = cls.keys()
        unknown = sorted(str(k) for k in data if k not in keys)
        if unknown:
            raise ConfigError(f"unknown config key {cls._prefix + unknown[0]!r}. Allowed keys under "
                              f"{cls._prefix or 'top level'!r}: {', '.join(sorted(keys))}")
        missing = [k for k in cls.required_keys() if k not in data]
        if missing:
            raise ConfigError(f"{name} config is missing keys {missing} "
                              "(effnet_keras/configs/base.yaml lists every key).")
        return cls(**{k: data[k] for k in keys if k in data})

    def to_dict(self):
        """Plain data: sections as dicts, pairs as lists (what yaml.safe_dump takes)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value):
    if isinstance(value, _Section):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


_section = dataclasses.dataclass(frozen=True, kw_only=True)


@_section
class ModelConfig(_Section):
    _prefix: ClassVar[str] = "model."

    name: str
    image_size: Optional[int]
    dropout_rate: Optional[float]
    drop_connect_rate: float = in_range(0.0, 1.0, "[)")
    bn_momentum: Optional[float]
    weights: Optional[str]


@_section
class ProgressiveConfig(_Section):
    _prefix: ClassVar[str] = "train.progressive."

    num_stages: int
    start_image_size: int
    size_multiple: int
    randaug_magnitude: Pair = in_range(0.0, RANDAUGMENT_MAX_MAGNITUDE, note=RANDAUGMENT_NOTE)
    mixup_alpha: Pair
    cutmix_alpha: Pair
    dropout_rate: Pair
    drop_connect_rate: Pair
    batch_growth: bool
    max_batch_size: Optional[int]


@_section
class TrainConfig(_Section):
    _prefix: ClassVar[str] = "train."

    batch_size: int = positive()
    epochs: int = positive()
    optimizer: str = choice(*OPTIMIZERS)
    lr_base: float
    lr_sched: str = choice(*LR_SCHEDULES)
    lr_warmup_epoch: float
    lr_decay_epoch: float
    lr_decay_factor: float
    lr_min: float
    ema_decay: float = in_range(0.0, 1.0, "[)")
    weight_decay: float
    label_smoothing: float = in_range(0.0, 1.0, "[)")
    gclip: float
    loss: str = choice(*LOSSES)
    image_size: Optional[int]
    ft_init_ckpt: Optional[str]
    seed: int
    steps_per_execution: int = positive()
    # null is read as the trainer's default (steps: off, epochs: every epoch), as before.
    checkpoint_every_steps: Optional[int] = at_least(0, "(0: off)")
    checkpoint_every_epochs: Optional[int] = at_least(0, "(0: off)")
    keep_checkpoints: int
    max_steps: Optional[int]
    progressive: ProgressiveConfig

    # What a null means, said here once (base.yaml documents the same).
    @property
    def checkpoint_steps(self):
        """Save every this many steps (0: off)."""
        return self.checkpoint_every_steps or 0

    @property
    def checkpoint_epochs(self):
        """Save at every this-many-th epoch end (null: every epoch; 0: off)."""
        return 1 if self.checkpoint_every_epochs is None else self.checkpoint_every_epochs


@_section
class EvalConfig(_Section):
    _prefix: ClassVar[str] = "eval."

    batch_size: int = positive()
    image_size: Optional[int]


@_section
class RuntimeConfig(_Section):
    _prefix: ClassVar[str] = "runtime."

    strategy: str = choice(*STRATEGIES)
    tpu: Optional[str]
    mixed_precision: str = choice(*MIXED_PRECISIONS)
    deterministic: bool


@_section
class DataConfig(_Section):
    """The `data:` section, as the input pipeline checks it (effnet_keras.data.pipeline.validate_data_config)."""

    _prefix: ClassVar[str] = "data."

    # Set by build_config (--dataset_cfg); a hand-made data section may leave it out.
    config_name: Optional[str] = None
    name: str = choice(*DATA_SOURCES)
    tfds_name: Optional[str]
    data_dir: Optional[str]
    train_split: str
    eval_split: str
    num_classes: int = positive()
    num_train_examples: int
    num_eval_examples: int
    multilabel: bool
    crop_area_min: float
    random_flip: bool
    center_crop: bool
    augment: str = choice(*AUGMENTS)
    randaug_magnitude: float = in_range(0.0, RANDAUGMENT_MAX_MAGNITUDE, note=RANDAUGMENT_NOTE)
    ra_num_layers: int
    mixup_alpha: float = at_least(0.0)
    cutmix_alpha: float = in_range(0.0, 1.0)
    random_erasing: float
    erasing_scale: Tuple[float, float]
    shuffle_buffer: int = positive()
    cache: bool
    deterministic: bool
    digits_image_size: int
    test_fraction: float
    split_seed: int
    val_fraction: float = in_range(0.0, 1.0, closed="[)", note="(folder: the share of each class held out)")

    def _check(self):
        if self.name == "tfds" and self.tfds_name not in TFDS_NAMES:
            raise ConfigError(f"data.tfds_name must be one of {TFDS_NAMES} for data.name='tfds'. "
                              f"Received: {self.tfds_name!r}")
        if self.name == "folder" and not self.data_dir:
            raise ConfigError("data.data_dir must be a folder of class sub-folders (DIR/<class>/*.jpg, or DIR/train/ "
                              f"and DIR/val/) for data.name='folder'; pass --data_dir=DIR. Received: {self.data_dir!r}")
        if self.name == "digits" and self.data_dir:  # --data_dir with the default dataset: never ignored
            raise ConfigError(f"data.data_dir={self.data_dir!r} but data.name='digits' reads no files (scikit-learn's "
                              "digits are built in): for a folder of images use --dataset_cfg=folder --data_dir=DIR; "
                              "for TFRecords / TFDS, --dataset_cfg=imagenet, cifar10ft, ...")
        if self.name == "imagenet21k" and not self.multilabel:
            raise ConfigError("data.multilabel must be true for data.name='imagenet21k' (multi-hot labels). "
                              f"Received: {self.multilabel!r}")


@_section
class RunConfig(_Section):
    """A whole run config: `RunConfig.from_dict(build_config(...))`; `.to_dict()` gives the dict back."""

    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    runtime: RuntimeConfig
    data: DataConfig


SECTIONS = {"model": ModelConfig, "train": TrainConfig, "eval": EvalConfig, "runtime": RuntimeConfig,
            "data": DataConfig}


def field_type(path):
    """The annotation of the key at dotted `path` ("train.lr_base" -> float); None for an unknown key.

    A section's path gives its dataclass ("train.progressive" -> ProgressiveConfig).
    """
    cls = RunConfig
    parts = str(path).split(".")
    for part in parts:
        if not _is_section(cls) or part not in cls.keys():
            return None
        cls = _hints(cls)[part]
    return cls


def coerce(path, value):
    """A value for the key at dotted `path`, coerced to its field type (lists stay lists); unknown keys
    and sections pass through unchanged (the caller reports unknown keys). Raises ConfigError."""
    tp = field_type(path)
    if tp is None or _is_section(tp):
        return value
    return coerce_value(path, value, tp)


def base_defaults():
    """configs/base.yaml as a fresh dict: the defaults every run starts from (and an older run's missing keys)."""
    return copy.deepcopy(_packaged_base_yaml())


@functools.lru_cache(maxsize=1)
def _packaged_base_yaml():
    import yaml  # a base dependency; imported here so the dataclasses above load without it

    return yaml.safe_load((importlib.resources.files("effnet_keras") / "configs" / "base.yaml").read_text("utf8"))
