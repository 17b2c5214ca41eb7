"""Reading a training run directory of ours: the one reader for every tool.

A run directory (`effnet-train --model_dir=DIR`, local or a bucket path) holds
`config.yaml` (the merged run config), `model.weights.h5` and, with EMA,
`ema.weights.h5` (preferred: it is what the run evaluated), and `labels.txt` (class names).
Fine-tune initialisation, export, Grad-CAM and predict open it with `RunDir.open(path)`
(its config read back as a typed `config_schema.RunConfig`) and build the model it trained
with `run.build()`; the model is built by `models.factory.build_classifier` and sized by its
one rule (`image_sizes`).
"""

import dataclasses
import os

import yaml

from effnet_keras import fileio
from effnet_keras import labels
from effnet_keras.config_schema import ConfigError
from effnet_keras.config_schema import RunConfig
from effnet_keras.config_schema import base_defaults
from effnet_keras.config_schema import canonical_keys
from effnet_keras.models import factory

CONFIG_FILE = "config.yaml"
EMA_WEIGHTS = "ema.weights.h5"
RAW_WEIGHTS = "model.weights.h5"


class RunDirError(ValueError):
    """A path that is not a usable run directory (what is missing is named)."""


def _over_base_defaults(data):
    """A run's config over the packaged base.yaml: a run written by an earlier release, before a key
    existed, opens with that key's default (what it trained with) instead of a missing-key error."""
    base = base_defaults()

    def merged(default, given, prefix=""):
        if isinstance(default, dict) and isinstance(given, dict):
            given = canonical_keys(prefix, given)  # an earlier key name (data.ram) meets today's default
            return {**default, **{k: merged(default.get(k), v, f"{prefix}{k}.") for k, v in given.items()}}
        return given

    return merged(base, data)


def image_sizes(config):
    """(train size, eval size) of a run config (`config_schema.RunConfig`): `factory.image_sizes`."""
    return factory.image_sizes(config.model.name, model_image_size=config.model.image_size,
                               train_image_size=config.train.image_size, eval_image_size=config.eval.image_size)


def build_model(config, num_classes=None, image_size=None):
    """The classifier a run config trains (fresh, or from model.weights): logits out.

    `num_classes` defaults to data.num_classes, `image_size` to the run's training size
    (it matters only to a static-input family).
    """
    model = config.model
    return factory.build_classifier(model.name, int(num_classes or config.data.num_classes),
                                    image_size or image_sizes(config)[0], weights=model.weights,
                                    dropout_rate=model.dropout_rate, drop_connect_rate=model.drop_connect_rate,
                                    bn_momentum=model.bn_momentum)


def write_labels(directory, class_names):
    """The run's labels.txt (read back by `RunDir.class_names`)."""
    return labels.write_labels(directory, class_names)


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: str
    config: RunConfig
    weights_path: str  # ema.weights.h5 when present, else model.weights.h5

    @classmethod
    def open(cls, path, require_weights=True):
        config_path = os.path.join(path, CONFIG_FILE)
        if not fileio.exists(config_path):
            raise RunDirError(f"{path}: no {CONFIG_FILE} there; is it a training run directory (--model_dir)?")
        data = yaml.safe_load(fileio.read_text(config_path)) or {}
        if not isinstance(data, dict) or "model" not in data or "data" not in data:
            raise RunDirError(f"{config_path} is not a run config of ours (no model/data sections).")
        try:
            config = RunConfig.from_dict(_over_base_defaults(data))
        except ConfigError as err:
            raise RunDirError(f"{config_path}: {err}") from None
        ema, raw = os.path.join(path, EMA_WEIGHTS), os.path.join(path, RAW_WEIGHTS)
        weights = ema if fileio.exists(ema) else raw
        if require_weights and not fileio.exists(weights):
            raise RunDirError(f"{path}: neither {EMA_WEIGHTS} nor {RAW_WEIGHTS} exists; the run has not finished "
                              "a stage yet (train it, or pass another directory).")
        return cls(path, config, weights)

    @property
    def model_name(self):
        return self.config.model.name

    @property
    def num_classes(self):
        return self.config.data.num_classes

    @property
    def multilabel(self):
        return self.config.data.multilabel

    @property
    def is_ema(self):
        return os.path.basename(self.weights_path) == EMA_WEIGHTS

    @property
    def train_size(self):
        return image_sizes(self.config)[0]

    @property
    def eval_size(self):
        return image_sizes(self.config)[1]

    @property
    def class_names(self):
        """The run's class names (labels.txt, written by training), or None for a run without one."""
        path = os.path.join(self.path, labels.LABELS_FILE)
        if not fileio.exists(path):
            return None
        names = labels.read_names(path)
        if len(names) != self.num_classes:
            raise RunDirError(f"{path} has {len(names)} names but the run trained {self.num_classes} classes.")
        return names

    def describe(self):
        return f"trained with effnet-keras in {self.path} ({'EMA' if self.is_ema else 'raw'} weights)"

    def build(self, image_size=None):
        """The run's classifier with its trained weights (EMA preferred), at `image_size`
        (a static-input family only; default: the training size the weights were made at)."""
        from effnet_keras import weights as weights_lib

        config = dataclasses.replace(self.config, model=dataclasses.replace(self.config.model, weights=None))
        model = build_model(config, self.num_classes, image_size or self.train_size)
        weights_lib.load_native(model, self.weights_path)  # damaged file: WeightsFileError naming it
        return model
