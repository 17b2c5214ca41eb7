"""Progressive learning (EfficientNetV2, paper Algorithm 1) as data. Pure Python: no TensorFlow, no Keras.

Training is split into M stages. Stage i of M trains at image size

    S_i = S_0 + (S_e - S_0) * i / (M - 1)

and every regularisation Phi (RandAugment magnitude, Mixup alpha, CutMix alpha,
dropout rate, stochastic-depth rate) is interpolated the same way. A single
stage (M = 1) uses the end values. Epochs are split evenly: stage i covers
epochs [floor(i * E / M), floor((i + 1) * E / M)), automl's split
(350 epochs, 4 stages: 0-87, 87-175, 175-262, 262-350).

Sizes: the last stage trains at exactly S_e (the final size the run asked for);
earlier stages are rounded *down* to `size_multiple` (8 for EfficientNets, 32 for
CoAtNet's 32x downsampling), so a stage never uses more activation memory than
the straight line promises. V2-S (128 -> 300, 4 stages): 128, 184, 240, 300.

The trainer reads `Stage.dropout_rate` / `drop_connect_rate` and applies them
with `effnet_keras.set_regularization` between stages (same model, same
optimizer state); the input pipeline reads the augmentation strengths.
"""

import dataclasses
import math

REGULARISATIONS = ("randaug_magnitude", "mixup_alpha", "cutmix_alpha", "dropout_rate", "drop_connect_rate")
_RATE_KEYS = ("dropout_rate", "drop_connect_rate")


@dataclasses.dataclass
class Stage:
    """One progressive stage. `batch_size` None means the run's base batch (the trainer may grow it)."""

    index: int
    image_size: int
    randaug_magnitude: float
    mixup_alpha: float
    cutmix_alpha: float
    dropout_rate: float
    drop_connect_rate: float
    start_epoch: int
    end_epoch: int
    batch_size: int = None

    @property
    def num_epochs(self):
        return self.end_epoch - self.start_epoch

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"Stage.from_dict: unknown keys {unknown}. Allowed: {sorted(fields)}")
        return cls(**data)


def _span(name, value):
    """A number (constant) or a (start, end) pair -> (float, float)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number or a (start, end) pair of numbers. Received: {value!r}")
    if isinstance(value, (int, float)):
        return float(value), float(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return float(value[0]), float(value[1])
    raise ValueError(f"{name} must be a number or a (start, end) pair of numbers. Received: {value!r}")


def _check_range(name, span):
    if name in _RATE_KEYS and not all(0.0 <= v < 1.0 for v in span):
        raise ValueError(f"{name} values must be in [0, 1). Received: {list(span)}")
    if name not in _RATE_KEYS and any(v < 0.0 for v in span):
        raise ValueError(f"{name} values must be >= 0. Received: {list(span)}")
    if name == "randaug_magnitude" and any(v > 30.0 for v in span):
        raise ValueError(f"randaug_magnitude is on automl's 0-30 scale. Received: {list(span)}")


class ProgressiveSchedule:
    """M stages of (image size, regularisation) over `total_epochs`; see the module docstring.

    Each of `image_size`, `randaug_magnitude`, `mixup_alpha`, `cutmix_alpha`,
    `dropout_rate`, `drop_connect_rate` is a (start, end) pair or one number
    (constant). `batch_growth` is carried for the trainer (it sizes per-stage
    batches from its replica count; `Stage.batch_size` stays None here).
    """

    def __init__(self, num_stages, total_epochs, image_size, randaug_magnitude=0.0, mixup_alpha=0.0,
                 cutmix_alpha=0.0, dropout_rate=0.0, drop_connect_rate=0.0, size_multiple=8, batch_growth=None):
        counts = (("num_stages", num_stages), ("total_epochs", total_epochs), ("size_multiple", size_multiple))
        for name, value in counts:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer. Received: {value!r}")
        if total_epochs < num_stages:
            raise ValueError(
                f"total_epochs={total_epochs} is fewer than num_stages={num_stages}: every stage needs an epoch."
            )
        sizes = _span("image_size", image_size)
        if sizes[0] < 1 or sizes[0] > sizes[1] or not all(float(s).is_integer() for s in sizes):
            raise ValueError(f"image_size must be whole pixels with 1 <= start <= end. Received: {list(sizes)}")
        if sizes[0] < size_multiple:
            raise ValueError(f"image_size start {int(sizes[0])} is below size_multiple={size_multiple}.")
        if batch_growth is not None and not isinstance(batch_growth, bool):
            raise ValueError(f"batch_growth must be None, true or false. Received: {batch_growth!r}")
        self.num_stages, self.total_epochs, self.size_multiple = num_stages, total_epochs, size_multiple
        self.batch_growth = batch_growth
        self.image_size = (int(sizes[0]), int(sizes[1]))
        self.values = {}
        for name, value in zip(REGULARISATIONS,
                               (randaug_magnitude, mixup_alpha, cutmix_alpha, dropout_rate, drop_connect_rate)):
            span = _span(name, value)
            _check_range(name, span)
            self.values[name] = span
        self.stages = [self._make_stage(i) for i in range(num_stages)]

    # -------------------------------------------------------------- values

    def fraction(self, index):
        """i / (M - 1): where stage `index` sits between the start (0) and end (1) values."""
        return 1.0 if self.num_stages == 1 else index / (self.num_stages - 1)

    def _interpolate(self, span, index):
        start, end = span
        return start + (end - start) * self.fraction(index)

    def _make_stage(self, index):
        if index == self.num_stages - 1:
            size = self.image_size[1]
        else:
            exact = self._interpolate(self.image_size, index)
            # floor to the multiple; the tiny epsilon keeps 184.0000001-style float noise from
            # dropping a whole multiple.
            size = int(math.floor(exact / self.size_multiple + 1e-9)) * self.size_multiple
        start = index * self.total_epochs // self.num_stages
        end = (index + 1) * self.total_epochs // self.num_stages
        values = {name: round(self._interpolate(span, index), 10) for name, span in self.values.items()}
        return Stage(index=index, image_size=size, start_epoch=start, end_epoch=end, **values)

    def stage_for_epoch(self, epoch):
        """The stage that trains epoch `epoch` (0-based)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < self.total_epochs:
            raise ValueError(f"epoch must be an integer in [0, {self.total_epochs}). Received: {epoch!r}")
        for stage in self.stages:
            if stage.start_epoch <= epoch < stage.end_epoch:
                return stage
        raise AssertionError("stages cover every epoch by construction")

    # -------------------------------------------------------------- constructors

    @classmethod
    def fixed(cls, total_epochs, image_size, randaug_magnitude=0.0, mixup_alpha=0.0, cutmix_alpha=0.0,
              dropout_rate=0.0, drop_connect_rate=0.0):
        """One stage at `image_size` (any size: nothing is rounded) — a run without progressive learning."""
        return cls(1, total_epochs, (image_size, image_size), randaug_magnitude=randaug_magnitude,
                   mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, dropout_rate=dropout_rate,
                   drop_connect_rate=drop_connect_rate, size_multiple=1)

    @classmethod
    def from_config(cls, config, model_dropout_rate=None, final_image_size=None):
        """From a run config: the merged base/recipe/dataset dict (`build_config(...)`) or a
        `config_schema.RunConfig`. Reads `train.progressive` (keys of effnet_keras/configs/base.yaml:
        num_stages, start_image_size, size_multiple, the five [start, end] pairs, batch_growth,
        max_batch_size) and `train.epochs`.

        A null start/end falls back as in effnet_keras/configs/base.yaml: RandAugment -> data.ram,
        mixup/cutmix -> data.mixup_alpha / data.cutmix_alpha, dropout -> model.dropout_rate
        (else `model_dropout_rate`, the model's own default), stochastic depth ->
        model.drop_connect_rate. The final size is train.image_size, else model.image_size,
        else `final_image_size`. num_stages 0 or 1 gives `fixed(...)`.

        A `train.progressive` section on its own (explicit numbers, no run config) goes to
        `from_section`.
        """
        if dataclasses.is_dataclass(config) and not isinstance(config, type):  # a config_schema.RunConfig
            config = config.to_dict()
        if not isinstance(config, dict):
            raise ValueError(f"from_config needs a run config (a dict or a config_schema.RunConfig). "
                             f"Received: {type(config).__name__}")
        for section in ("train", "data", "model"):
            if not isinstance(config.get(section), dict):
                raise ValueError(
                    f"from_config needs a run config with a {section!r} section; got keys {sorted(config)} "
                    "(a train.progressive section alone: ProgressiveSchedule.from_section)."
                )
        train, data, model = config["train"], config["data"], config["model"]
        prog = train.get("progressive")
        if not isinstance(prog, dict):
            raise ValueError("from_config: train.progressive is missing (see effnet_keras/configs/base.yaml).")
        final = train.get("image_size") or model.get("image_size") or final_image_size
        if final is None:
            raise ValueError("from_config: no final image size: set train.image_size (or model.image_size), "
                             "or pass final_image_size= (the model's train size).")
        dropout = model.get("dropout_rate")
        dropout = model_dropout_rate if dropout is None else dropout
        fallbacks = {
            "randaug_magnitude": ("data.ram", data.get("ram")),
            "mixup_alpha": ("data.mixup_alpha", data.get("mixup_alpha")),
            "cutmix_alpha": ("data.cutmix_alpha", data.get("cutmix_alpha")),
            "dropout_rate": ("model.dropout_rate", dropout),
            "drop_connect_rate": ("model.drop_connect_rate", model.get("drop_connect_rate")),
        }
        spans = {}
        for name, (fallback_key, fallback) in fallbacks.items():
            raw = prog.get(name, [None, None])
            pair = list(raw) if isinstance(raw, (list, tuple)) else [raw, raw]
            if len(pair) != 2:
                raise ValueError(f"train.progressive.{name} must be [start, end]. Received: {raw!r}")
            if any(v is None for v in pair) and fallback is None:
                raise ValueError(f"train.progressive.{name} has a null and its fallback {fallback_key} is null too; "
                                 "give a number.")
            spans[name] = tuple(fallback if v is None else v for v in pair)
        num_stages = int(prog.get("num_stages") or 0)
        epochs = int(train["epochs"])
        if num_stages <= 1:
            return cls.fixed(epochs, int(final), **{k: v[1] for k, v in spans.items()})
        return cls(num_stages, epochs, (int(prog["start_image_size"]), int(final)),
                   size_multiple=int(prog.get("size_multiple") or 8), batch_growth=prog.get("batch_growth"), **spans)

    @classmethod
    def from_section(cls, section):
        """From a self-contained progressive section, every value explicit (no nulls, no run config):
        `num_stages`, `total_epochs` (or `epochs`), `image_size: [start, end]` (or
        `start_image_size` + `end_image_size`), and optionally `randaug_magnitude`,
        `mixup_alpha`, `cutmix_alpha`, `dropout_rate`, `drop_connect_rate` (each a number or
        [start, end]), `size_multiple` (8), `batch_growth`; `max_batch_size` is accepted and
        ignored (the trainer's concern). num_stages 0 or 1 gives `fixed(...)` at the end size.
        A run config goes to `from_config`.
        """
        if not isinstance(section, dict):
            raise ValueError(f"from_section needs a dict. Received: {type(section).__name__}")
        if "train" in section:
            raise ValueError("from_section got a run config (it has a 'train' key): "
                             "use ProgressiveSchedule.from_config.")
        section = dict(section)
        allowed = {"num_stages", "total_epochs", "epochs", "image_size", "start_image_size", "end_image_size",
                   "size_multiple", "batch_growth", "max_batch_size", *REGULARISATIONS}
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ValueError(f"progressive section: unknown keys {unknown}. Allowed: {sorted(allowed)}")
        section.pop("max_batch_size", None)  # the trainer's concern (plan.py), not the schedule's
        epochs = section.pop("total_epochs", section.pop("epochs", None))
        if "image_size" not in section:
            if section.get("start_image_size") is None or section.get("end_image_size") is None:
                raise ValueError("progressive section needs image_size: [start, end] (or start_image_size and "
                                 f"end_image_size). Received keys: {sorted(section)}")
            section["image_size"] = (section.pop("start_image_size"), section.pop("end_image_size"))
        for key in ("num_stages", "image_size"):
            if section.get(key) is None:
                raise ValueError(f"progressive section: {key} is required. Received keys: {sorted(section)}")
        if epochs is None:
            raise ValueError("progressive section: total_epochs (or epochs) is required.")
        for name in REGULARISATIONS:
            value = section.get(name)
            if value is None or (isinstance(value, (list, tuple)) and any(v is None for v in value)):
                if name in section:
                    raise ValueError(f"progressive section: {name}={value!r} has a null; the section form needs "
                                     "numbers (nulls fall back only in a full run config).")
        num_stages = int(section.pop("num_stages"))
        if num_stages <= 1:
            size = _span("image_size", section.pop("image_size"))[1]
            values = {n: _span(n, section[n])[1] for n in REGULARISATIONS if n in section}
            return cls.fixed(int(epochs), int(size), **values)
        return cls(num_stages, int(epochs), **section)

    # -------------------------------------------------------------- serialisation

    def to_dict(self):
        """Plain data (YAML/JSON-able): the constructor arguments plus the resulting stages."""
        return {
            "num_stages": self.num_stages,
            "total_epochs": self.total_epochs,
            "image_size": list(self.image_size),
            **{name: list(span) for name, span in self.values.items()},
            "size_multiple": self.size_multiple,
            "batch_growth": self.batch_growth,
            "stages": [stage.to_dict() for stage in self.stages],
        }

    @classmethod
    def from_dict(cls, data):
        """Inverse of `to_dict`. Stages listed there must match the rebuilt ones (catches hand edits)."""
        data = dict(data)
        listed = data.pop("stages", None)
        schedule = cls(**data)
        if listed is not None:
            # Only the formula's fields are checked: a trainer may have filled in batch_size.
            rebuilt = [s.to_dict() | {"batch_size": d.get("batch_size")} for s, d in zip(schedule.stages, listed)]
            if len(listed) != len(schedule.stages) or rebuilt != listed:
                raise ValueError("ProgressiveSchedule.from_dict: the listed stages differ from the ones the parameters "
                                 "give; edit the parameters, not the stages.")
            for stage, entry in zip(schedule.stages, listed):
                stage.batch_size = entry.get("batch_size")
        return schedule

    def __repr__(self):
        sizes = ", ".join(str(s.image_size) for s in self.stages)
        return f"ProgressiveSchedule({self.num_stages} stages over {self.total_epochs} epochs; sizes {sizes})"

    def __eq__(self, other):
        return isinstance(other, ProgressiveSchedule) and self.to_dict() == other.to_dict()


# ---------------------------------------------------------------------- named recipes

# EfficientNetV2 paper, Table 6 (progressive learning settings): (min, max) of
# image size, RandAugment magnitude, Mixup alpha and dropout. The paper lists no
# CutMix and no stochastic-depth ramp; both stay constant (CutMix off).
PAPER_TABLE6 = {
    "efficientnetv2-s": dict(image_size=(128, 300), randaug_magnitude=(5, 15), mixup_alpha=(0, 0),
                             dropout_rate=(0.1, 0.3)),
    "efficientnetv2-m": dict(image_size=(128, 380), randaug_magnitude=(5, 20), mixup_alpha=(0, 0.2),
                             dropout_rate=(0.1, 0.4)),
    "efficientnetv2-l": dict(image_size=(128, 380), randaug_magnitude=(5, 25), mixup_alpha=(0, 0.4),
                             dropout_rate=(0.1, 0.5)),
}

# automl's released configs (effnetv2_configs.py, reference sections 1.6 and 2.6):
# (final train size, RandAugment magnitude `ram` or None for AutoAugment models, mixup = cutmix alpha, dropout).
AUTOML_V2 = {
    "efficientnetv2-s": (300, 10, 0.0, 0.2),
    "efficientnetv2-m": (384, 15, 0.2, 0.3),
    "efficientnetv2-l": (384, 20, 0.5, 0.4),
    "efficientnetv2-xl": (384, 20, 0.5, 0.4),
    "efficientnetv2-b0": (192, None, 0.0, 0.2),
    "efficientnetv2-b1": (192, None, 0.0, 0.2),
    "efficientnetv2-b2": (208, None, 0.0, 0.3),
    "efficientnetv2-b3": (240, None, 0.0, 0.3),
}
AUTOML_BASE_SIZE = 128  # automl data.ibase


def _model_key(name, table):
    key = str(name).lower()
    if key in ("s", "m", "l", "xl", "b0", "b1", "b2", "b3"):
        key = "efficientnetv2-" + key
    if key not in table:
        raise ValueError(f"No progressive recipe for {name!r}. Known: {sorted(table)}")
    return key


def paper_recipe(model_name, total_epochs=350, num_stages=4, drop_connect_rate=0.2, size_multiple=8):
    """EfficientNetV2 paper Table 6 for V2-S/M/L ("efficientnetv2-s" or "s"), Algorithm 1 interpolation.

    V2-S, 4 stages: sizes 128, 184, 240, 300; RandAugment 5, 8.33, 11.67, 15; dropout 0.1 .. 0.3.
    """
    values = PAPER_TABLE6[_model_key(model_name, PAPER_TABLE6)]
    return ProgressiveSchedule(num_stages, total_epochs, cutmix_alpha=0.0, drop_connect_rate=drop_connect_rate,
                               size_multiple=size_multiple, **values)


def automl_recipe(model_name, total_epochs=350, num_stages=4, drop_connect_rate=0.2):
    """What google/automl's released code runs (reference section 2.6), as a ProgressiveSchedule.

    automl's stage k of S uses ratio (k + 1) / S: size int(128 + (S_e - 128) * ratio),
    RandAugment linspace(5, ram, S)[k], mixup = cutmix alpha linspace(0, alpha, S)[k],
    dropout constant. Its sizes are a straight line from 128 + (S_e - 128) / S to S_e, so
    they are Algorithm 1 with that start; size_multiple=1 keeps automl's exact sizes
    (V2-S: 171, 214, 257, 300). B0-B3 use AutoAugment (no RandAugment): magnitude 0.
    """
    final, ram, alpha, dropout = AUTOML_V2[_model_key(model_name, AUTOML_V2)]
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 1:
        raise ValueError(f"num_stages must be a positive integer. Received: {num_stages!r}")
    sizes = [int(AUTOML_BASE_SIZE + (final - AUTOML_BASE_SIZE) * (k + 1) / num_stages) for k in range(num_stages)]
    randaug = (0.0, 0.0) if ram is None else (5.0, float(ram))
    # For every released model (final - 128) is a multiple of 4, so Algorithm 1 from sizes[0]
    # lands on automl's whole-pixel sizes exactly (tests compare against automl's formula).
    return ProgressiveSchedule(num_stages, total_epochs, (sizes[0], final), randaug_magnitude=randaug,
                               mixup_alpha=(0.0, alpha), cutmix_alpha=(0.0, alpha), dropout_rate=dropout,
                               drop_connect_rate=drop_connect_rate, size_multiple=1)
