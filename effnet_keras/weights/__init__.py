"""Weights: registered ids (downloaded, hash-checked) and files in every format we convert from.

`weights=` accepts None, a weight id published for the model (see `registry.json`,
`weight_ids(name)`), or a path:

    *.weights.h5                      ours (Keras 3 native), also into a headless model
    *.h5                              keras.applications legacy file, matched by layer name
    *.safetensors / *.pth / *.pt / *.bin   timm state dict (tf_efficientnet*, coatnet_*)
    directory, *.tar.gz, *.tgz, checkpoint prefix   automl / tensorflow/tpu TF checkpoint

A file trained for another class count loads its backbone and leaves the classifier freshly
initialised, with a warning (fine-tuning a 21k checkpoint on 10 classes).
"""

import dataclasses
import os
import warnings

from effnet_keras import fileio
from effnet_keras.weights import files
from effnet_keras.weights import keras_h5
from effnet_keras.weights import registry
from effnet_keras.weights.files import WeightsFileError
from effnet_keras.weights.registry import lookup
from effnet_keras.weights.registry import weight_ids

__all__ = ["resolve", "ResolvedWeights", "load_into", "load_file", "lookup", "weight_ids", "detect_format",
           "WeightsFileError"]

STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """What a builder needs to know about its `weights=` before it lays out a layer."""

    source: object  # None, a weight id or a path
    model_name: str
    preprocessing: str  # the in-model normalisation these weights were trained with
    converter: str  # the model family's timm converter (spec.family.converter)
    include_top: bool
    classes: int

    def load_into(self, model):
        if self.source is None:
            return []
        return load_into(model, self.source, model_name=self.model_name, include_top=self.include_top,
                         classes=self.classes, converter=self.converter)


def resolve(model_name, weights, *, include_top, classes, input_shape, preprocessing, converter, unpublished_note=None):
    """The one call a builder makes about `weights`, before building anything.

    A weight id is looked up now (an unpublished one is refused before V2-XL's 208 M
    parameters are allocated), its classifier checked against `include_top`/`classes`,
    and its normalisation (AdvProp, 21k) replaces the architecture's `preprocessing`.
    """
    if registry.looks_like_weight_id(weights):
        entry = lookup(model_name, weights, unpublished_note)
        if include_top and classes != entry.classes:
            raise ValueError(
                f"weights={weights!r} for {model_name} has a {entry.classes}-class classifier, so with "
                f"include_top=True `classes` must be {entry.classes}. Received: classes={classes}. For another "
                "class count build with include_top=False and add a head (what the fine-tune recipes do)."
            )
        preprocessing = entry.preprocessing
    if weights is not None and input_shape[-1] != 3:
        raise ValueError(
            f"Pretrained weights for {model_name} expect 3 input channels. Received: input_shape={input_shape!r} "
            f"with weights={weights!r}"
        )
    return ResolvedWeights(weights, model_name, preprocessing, converter, include_top, classes)


def load_into(model, weights, *, model_name, include_top, classes, converter=None):
    """Load `weights` (a path or a registered weight id) into a freshly built model."""
    path = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(path, str):
        raise ValueError(f"`weights` must be None, a weight id or a file path. Received: weights={weights!r}")
    if fileio.is_remote(path) and files.remote_exists(path):  # a bucket: read from a local temp copy
        with fileio.local_copy(path, reader="the weights loader") as local:
            return load_file(model, local, include_top=include_top, model_name=model_name, converter=converter)
    if os.path.exists(path) or os.path.exists(path + ".index"):
        return load_file(model, path, include_top=include_top, model_name=model_name, converter=converter)
    if registry.looks_like_weight_id(path):
        entry = lookup(model_name, path)  # raises, listing this model's ids, when it has no such id
        from effnet_keras.weights import download

        local = os.path.normpath(download.fetch(entry, include_top=include_top))
        try:
            return load_file(model, local, include_top=include_top, model_name=model_name, file_format=entry.format,
                             converter=converter)
        except WeightsFileError as err:  # passed the download's hash check, yet unreadable: fetch afresh next time
            download.discard(local)
            raise WeightsFileError(
                f"{err} The cached copy of weights {path!r} for {model_name} was deleted; the next call "
                "downloads it again.", path=local
            ) from None
    ids = weight_ids(model_name)
    raise ValueError(
        f"`weights` for {model_name} must be None, one of its weight ids "
        f"({', '.join(repr(i) for i in ids) if ids else 'none are published'}), or the path to a weights file. "
        f"Received: weights={weights!r} (no such file, and no weight id of that name)."
    )


def detect_format(path):
    """'native' | 'keras_h5' | 'timm' | 'tf_checkpoint' for a weights path, or a ValueError."""
    if path.endswith(".h5"):  # by content: a keras.applications file renamed `.weights.h5` loads too
        if keras_h5.is_legacy_h5(path):
            return "keras_h5"
        return "native"
    if path.endswith(STATE_DICT_SUFFIXES):
        return "timm"
    if path.endswith(ARCHIVE_SUFFIXES) or os.path.isdir(path) or os.path.exists(path + ".index"):
        return "tf_checkpoint"
    raise ValueError(
        f"Cannot tell the format of weights file {path!r}. Supported: our `.weights.h5`, a keras.applications "
        "`.h5`, a timm `.safetensors`/`.pth`, or an automl/tensorflow-tpu checkpoint (directory, .tar.gz/.tgz, "
        "or checkpoint prefix)."
    )


def load_file(model, path, *, include_top=True, model_name=None, file_format=None, converter=None):
    """`converter`: the model family's timm converter ("efficientnet" | "coatnet", the spec's
    `family.converter`); needed for timm state dicts only."""
    file_format = file_format or detect_format(path)
    if file_format == "native":
        return load_native(model, path, include_top=include_top)
    if file_format == "keras_h5":
        return keras_h5.assign_by_name(model, keras_h5.read_legacy_h5(path), source=path,
                                       skip_head=not include_top, new_head_ok=True)
    if file_format == "timm":
        if converter == "coatnet":
            from effnet_keras.weights.timm_coatnet import load_timm_coatnet

            return load_timm_coatnet(model, path)
        if converter == "efficientnet":
            from effnet_keras.weights.timm_efficientnet import load_timm_efficientnet

            return load_timm_efficientnet(model, path, include_top=include_top)
        raise ValueError(f"{path!r} is a timm state dict: pass converter='efficientnet' or 'coatnet' (the model "
                         f"family's `spec.family.converter`). Received: converter={converter!r}")
    if file_format == "tf_checkpoint":
        from effnet_keras.weights.automl_checkpoint import load_automl_checkpoint

        return load_automl_checkpoint(model, path, include_top=include_top)
    raise ValueError(f"Unknown weights format {file_format!r} for {path!r}.")


def load_native(model, path, *, include_top=True):
    """Our `.weights.h5`. Same graph: Keras' loader. Otherwise (a full file into a headless model,
    another class count) by layer name, every mismatch named."""
    if fileio.is_remote(path):  # a bucket path (train.ft_init_ckpt on gs://): a local temp copy
        with fileio.local_copy(path, reader="the weights loader") as local:
            return load_native(model, local, include_top=include_top)
    with files.open_h5(path, expected=files.NATIVE) as f:  # damaged / foreign files: WeightsFileError
        if "layers" not in f:
            raise files.weights_file_error(path, "no 'layers' group", expected=files.NATIVE)
    # Keras warns per sublayer it skips before it gives up on another graph: hold its warnings
    # back, and load by name (every layer checked) when it skipped anything.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with files.reading(path, expected=files.NATIVE, only=(OSError,)):  # h5py: a dataset cut off
                model.load_weights(path)
            loaded = not any("Skipping" in str(w.message) for w in caught)
        except WeightsFileError:
            raise
        except ValueError:  # another graph or input size: by name below, every mismatch named
            loaded = False
    if loaded:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return []
    return keras_h5.assign_by_name(model, read_native_h5(path), source=path, skip_head=not include_top,
                                   new_head_ok=True)


def read_native_h5(path):
    """{layer name: [arrays]} from a Keras 3 `.weights.h5` (layers stored under generated keys,
    the layer name in the `vars` group's attributes; a sublayer's variables, e.g. a
    RelativeAttention's bias table, in a group under its layer's)."""
    out = {}
    with files.open_h5(path, expected=files.NATIVE) as f:
        if "layers" not in f:
            raise files.weights_file_error(path, "no 'layers' group", expected=files.NATIVE)
        for key, group in f["layers"].items():
            if "vars" not in group:
                continue
            if "layers" in group and len(group["layers"]):
                raise ValueError(
                    f"{path!r}: layer {group['vars'].attrs.get('name', key)!r} nests sublayers; load it into the "
                    "same graph (same include_top/classes) with model.load_weights instead."
                )
            arrays = _group_arrays(group)
            if arrays:
                out[str(group["vars"].attrs.get("name", key))] = arrays
    return out


def _group_arrays(group):
    """A layer group's own variables, then those of its sublayer groups (Keras' `layer.weights` order)."""
    values = group["vars"]
    arrays = [values[str(i)][()] for i in range(len(values))]
    for key, child in group.items():
        if key not in ("vars", "layers") and hasattr(child, "items") and "vars" in child:
            arrays += _group_arrays(child)
    return arrays
