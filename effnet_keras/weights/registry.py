"""Which pretrained weights exist: model x weight id -> source, hash, format, classes, preprocessing.

The table itself is data (`registry.json` beside this file); this module only reads it.
Weight ids are per model: every EfficientNet has `imagenet` where one was published
(keras.applications ports for B0-B7, V2-B0..L; the AdvProp checkpoint for B8),
V2 models have `imagenet21k` / `imagenet21k-ft1k` (automl), V1 models `advprop` and
`noisy-student` (tensorflow/tpu). CoAtNet has none: Google never released CoAtNet
weights (see docs/weights.md for training or converting your own).
"""

import dataclasses
import functools
import json
import os

from effnet_keras.naming import canonical_name

FORMATS = ("keras_h5", "tf_checkpoint")
HASH_ALGORITHMS = ("sha256", "md5")
_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry.json")


@dataclasses.dataclass(frozen=True)
class WeightEntry:
    model: str
    weight_id: str
    source: str
    format: str
    url: str
    hash: str | None  # "sha256:<hex>" / "md5:<hex>", or None (pinned on first download)
    classes: int
    preprocessing: str
    top1: float | None = None
    notop_url: str | None = None
    notop_hash: str | None = None

    def file(self, include_top=True):
        """(url, hash) of the file to fetch; a headless model takes the `_notop` file when there is one."""
        if not include_top and self.notop_url:
            return self.notop_url, self.notop_hash
        return self.url, self.hash


@functools.lru_cache(maxsize=None)
def _table():
    with open(_PATH, encoding="utf8") as f:
        return json.load(f)["models"]


def _canonical_model(model_name):
    """The registry.json key `model_name` spells (effnet_keras.naming's rule), or its lower-case form."""
    return canonical_name(model_name, _table()) or str(model_name).strip().lower().replace("_", "-")


def weight_ids(model_name):
    """The weight ids published for `model_name` (possibly none)."""
    return tuple(_table().get(_canonical_model(model_name), {}))


def models_with_weights():
    return tuple(_table())


def looks_like_weight_id(value):
    """A bare word that is not an existing path ('imagenet', 'advprop'): to be looked up, not opened."""
    return (isinstance(value, str) and os.sep not in value and "." not in value
            and not os.path.exists(value) and not os.path.exists(value + ".index"))


def lookup(model_name, weight_id, unpublished_note=None):
    """The entry for `model_name` x `weight_id`; a ValueError lists what exists otherwise
    (`unpublished_note`, the family's `weights_note`, says why a model has none)."""
    model = _canonical_model(model_name)
    ids = _table().get(model, {})
    if weight_id not in ids:
        if ids:
            available = ", ".join(repr(i) for i in ids)
            hint = f"Weights published for {model}: {available}"
        else:
            hint = (f"No pretrained weights are published for {model}"
                    + (f" ({unpublished_note})" if unpublished_note else ""))
        raise ValueError(
            f"No weights {weight_id!r} for {model}. {hint}. Pass weights=None to train from scratch, or the "
            "path to a weights file (ours, keras.applications .h5, automl checkpoint, timm state dict)."
        )
    return WeightEntry(model=model, weight_id=weight_id, **ids[weight_id])


def validate_table(table=None):
    """Every entry complete and well-formed; returns the number of entries (used by the tests)."""
    from effnet_keras.preprocessing import PREPROCESSING_MODES

    table = _table() if table is None else table
    count = 0
    for model, ids in table.items():
        for weight_id, entry in ids.items():
            where = f"registry.json: {model} / {weight_id}"
            missing = {"source", "format", "url", "hash", "classes", "preprocessing"} - set(entry)
            if missing:
                raise ValueError(f"{where}: missing fields {sorted(missing)}")
            if entry["format"] not in FORMATS:
                raise ValueError(f"{where}: format {entry['format']!r} not in {FORMATS}")
            if entry["preprocessing"] not in PREPROCESSING_MODES:
                raise ValueError(f"{where}: preprocessing {entry['preprocessing']!r} not in {PREPROCESSING_MODES}")
            for key in ("hash", "notop_hash"):
                if entry.get(key) is not None:
                    parse_hash(entry[key], where=where)
            if not entry["url"].startswith(("https://", "file://")):
                raise ValueError(f"{where}: url must be https:// (or file:// in tests): {entry['url']!r}")
            count += 1
    return count


def parse_hash(value, where="hash"):
    """'sha256:<64 hex>' / 'md5:<32 hex>' -> (algorithm, hexdigest)."""
    algorithm, _, digest = str(value).partition(":")
    lengths = {"sha256": 64, "md5": 32}
    if algorithm not in lengths or len(digest) != lengths[algorithm] or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(f"{where}: expected 'sha256:<64 hex>' or 'md5:<32 hex>'. Received: {value!r}")
    return algorithm, digest
