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

from effnet_keras.config_schema import check_randaug_magnitude

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
    if name == "randaug_magnitude":
        check_randaug_magnitude(name, *span)
    if name in _RATE_KEYS and not all(0.0 <= v < 1.0 for v in span):
        raise ValueError(f"{name} values must be in [0, 1). Received: {list(span)}")
    if name not in _RATE_KEYS and any(v < 0.0 for v in span):
        raise ValueError(f"{name} values must be >= 0. Received: {list(span)}")


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
        """From a run config (`config_schema.RunConfig`, as `build_config` returns it, validated there):
        `train.progressive` (num_stages, start_image_size, size_multiple, the five [start, end]
        pairs, batch_growth) and `train.epochs`.

        A null start/end falls back as in effnet_keras/configs/base.yaml: RandAugment ->
        data.randaug_magnitude, mixup/cutmix -> data.mixup_alpha / data.cutmix_alpha, dropout ->
        model.dropout_rate (else `model_dropout_rate`, the model's own default), stochastic depth
        -> model.drop_connect_rate. The final size is train.image_size, else model.image_size, else
        `final_image_size`. num_stages 0 or 1 gives `fixed(...)`. A `train.progressive` section on
        its own (explicit numbers, no run config) goes to `from_section`.
        """
        from effnet_keras.config_schema import RunConfig

        if not isinstance(config, RunConfig):
            raise ValueError(f"from_config needs a run config (config_schema.RunConfig, what build_config returns). "
                             f"Received: {type(config).__name__} (a train.progressive section alone: from_section).")
        train, data, model, prog = config.train, config.data, config.model, config.train.progressive
        final = train.image_size or model.image_size or final_image_size
        if final is None:
            raise ValueError("from_config: no final image size: set train.image_size (or model.image_size), "
                             "or pass final_image_size= (the model's train size).")
        dropout = model_dropout_rate if model.dropout_rate is None else model.dropout_rate
        fallbacks = {
            "randaug_magnitude": ("data.randaug_magnitude", data.randaug_magnitude),
            "mixup_alpha": ("data.mixup_alpha", data.mixup_alpha),
            "cutmix_alpha": ("data.cutmix_alpha", data.cutmix_alpha),
            "dropout_rate": ("model.dropout_rate", dropout),
            "drop_connect_rate": ("model.drop_connect_rate", model.drop_connect_rate),
        }
        spans = {}
        for name, (fallback_key, fallback) in fallbacks.items():
            pair = getattr(prog, name)
            if any(v is None for v in pair) and fallback is None:
                raise ValueError(f"train.progressive.{name} has a null and its fallback {fallback_key} is null too; "
                                 "give a number.")
            spans[name] = tuple(fallback if v is None else v for v in pair)
        if prog.num_stages <= 1:
            return cls.fixed(train.epochs, int(final), **{k: v[1] for k, v in spans.items()})
        return cls(prog.num_stages, train.epochs, (prog.start_image_size, int(final)),
                   size_multiple=prog.size_multiple or 8, batch_growth=prog.batch_growth, **spans)

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
        if hasattr(section, "train") or (isinstance(section, dict) and "train" in section):
            raise ValueError("from_section got a run config (it has a 'train' section): "
                             "use ProgressiveSchedule.from_config.")
        if not isinstance(section, dict):
            raise ValueError(f"from_section needs a dict. Received: {type(section).__name__}")
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
