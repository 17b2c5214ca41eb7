"""Reading a training run directory of ours: the one reader for every tool.

A run directory (`effnet-train --model_dir=DIR`, local or a bucket path) holds
`config.yaml` (the merged run config), `model.weights.h5` and, with EMA,
`ema.weights.h5` (preferred: it is what the run evaluated). Fine-tune initialisation,
export, Grad-CAM and predict open it with `RunDir.open(path)` and build the model it
trained with `run.build()`; the model is built by `models.factory.build_classifier`
and sized by its one rule (`image_sizes`).
"""

import dataclasses
import os

import yaml

from effnet_keras import fileio
from effnet_keras import labels
from effnet_keras.models import factory

CONFIG_FILE = "config.yaml"
EMA_WEIGHTS = "ema.weights.h5"
RAW_WEIGHTS = "model.weights.h5"
LABELS_FILE = "labels.txt"  # class names, one per line, in class-index order (the exports carry it too)


def write_labels(directory, class_names):
    """`directory/labels.txt`: one class name per line, index order (atomic, local or bucket)."""
    names = [str(n) for n in class_names]
    bad = [n for n in names if not n or "\n" in n]
    if bad:
        raise ValueError(f"class names must be non-empty single lines. Received: {bad[:3]!r}")
    path = os.path.join(directory, LABELS_FILE)
    fileio.write_text(path, "\n".join(names) + "\n")
    return path


def read_labels(path):
    """Class names from a labels.txt (one per line; blank lines are not names): the names of
    `effnet_keras.labels.read_labels_file`, the one reader of label files."""
    return [name for _, name in labels.read_labels_file(path)]


class RunDirError(ValueError):
    """A path that is not a usable run directory (what is missing is named)."""


def image_sizes(config):
    """(train size, eval size) of a run config: `factory.image_sizes` on its keys."""
    return factory.image_sizes(config["model"]["name"], model_image_size=config["model"].get("image_size"),
                               train_image_size=config["train"].get("image_size"),
                               eval_image_size=config["eval"].get("image_size"))


def build_model(config, num_classes=None, image_size=None):
    """The classifier a run config trains (fresh, or from model.weights): logits out.

    `num_classes` defaults to data.num_classes, `image_size` to the run's training size
    (it matters only to a static-input family).
    """
    model_cfg = config["model"]
    return factory.build_classifier(
        model_cfg["name"],
        int(num_classes or config["data"]["num_classes"]),
        image_size or image_sizes(config)[0],
        weights=model_cfg.get("weights"),
        dropout_rate=model_cfg.get("dropout_rate"),
        drop_connect_rate=model_cfg.get("drop_connect_rate"),
        bn_momentum=model_cfg.get("bn_momentum"),
    )


def open_for_command(parser, model_dir, weights=None):
    """The RunDir a tool's --model_dir names, or the tool's usage error (exit 2) saying what is wrong."""
    if weights:
        parser.error("--weights goes with --model_name; a --model_dir brings its own weights.")
    try:
        return RunDir.open(model_dir)
    except RunDirError as err:
        parser.error(str(err))


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: str
    config: dict
    weights_path: str  # ema.weights.h5 when present, else model.weights.h5

    @classmethod
    def open(cls, path, require_weights=True):
        config_path = os.path.join(path, CONFIG_FILE)
        if not fileio.exists(config_path):
            raise RunDirError(f"{path}: no {CONFIG_FILE} there; is it a training run directory (--model_dir)?")
        config = yaml.safe_load(fileio.read_text(config_path)) or {}
        if not isinstance(config, dict) or "model" not in config or "data" not in config:
            raise RunDirError(f"{config_path} is not a run config of ours (no model/data sections).")
        ema, raw = os.path.join(path, EMA_WEIGHTS), os.path.join(path, RAW_WEIGHTS)
        weights = ema if fileio.exists(ema) else raw
        if require_weights and not fileio.exists(weights):
            raise RunDirError(f"{path}: neither {EMA_WEIGHTS} nor {RAW_WEIGHTS} exists; the run has not finished "
                              "a stage yet (train it, or pass another directory).")
        return cls(path, config, weights)

    @property
    def model_name(self):
        return self.config["model"]["name"]

    @property
    def num_classes(self):
        return int(self.config["data"]["num_classes"])

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
        path = os.path.join(self.path, LABELS_FILE)
        if not fileio.exists(path):
            return None
        names = read_labels(path)
        if len(names) != self.num_classes:
            raise RunDirError(f"{path} has {len(names)} names but the run trained {self.num_classes} classes.")
        return names

    def describe(self):
        return f"trained with effnet-keras in {self.path} ({'EMA' if self.is_ema else 'raw'} weights)"

    def build(self, image_size=None):
        """The run's classifier with its trained weights (EMA preferred), at `image_size`
        (a static-input family only; default: the training size the weights were made at)."""
        from effnet_keras import weights as weights_lib

        config = dict(self.config, model=dict(self.config["model"], weights=None))  # init comes from the file
        model = build_model(config, self.num_classes, image_size or self.train_size)
        weights_lib.load_native(model, self.weights_path)  # damaged file: WeightsFileError naming it
        return model
