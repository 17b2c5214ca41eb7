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

import os
import warnings

from effnet_keras import fileio
from effnet_keras.weights import files
from effnet_keras.weights import keras_h5
from effnet_keras.weights import registry
from effnet_keras.weights.files import WeightsFileError
from effnet_keras.weights.registry import lookup
from effnet_keras.weights.registry import weight_ids

__all__ = ["load_into", "load_file", "lookup", "weight_ids", "detect_format", "WeightsFileError"]

STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def load_into(model, weights, *, model_name, include_top, classes):
    """Load `weights` (a path or a registered weight id) into a freshly built model."""
    path = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(path, str):
        raise ValueError(f"`weights` must be None, a weight id or a file path. Received: weights={weights!r}")
    if fileio.is_remote(path) and files.remote_exists(path):  # a bucket: read from a local temp copy
        with fileio.local_copy(path, reader="the weights loader") as local:
            return load_file(model, local, include_top=include_top, model_name=model_name)
    if os.path.exists(path) or os.path.exists(path + ".index"):
        return load_file(model, path, include_top=include_top, model_name=model_name)
    if registry.looks_like_weight_id(path):
        entry = lookup(model_name, path)  # raises, listing this model's ids, when it has no such id
        from effnet_keras.weights import download

        local = os.path.normpath(download.fetch(entry, include_top=include_top))
        try:
            return load_file(model, local, include_top=include_top, model_name=model_name, file_format=entry.format)
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


def load_file(model, path, *, include_top=True, model_name=None, file_format=None):
    file_format = file_format or detect_format(path)
    if file_format == "native":
        return load_native(model, path, include_top=include_top)
    if file_format == "keras_h5":
        return keras_h5.assign_by_name(model, keras_h5.read_legacy_h5(path), source=path,
                                       skip_head=not include_top, new_head_ok=True)
    if file_format == "timm":
        if str(model_name or model.name).lower().startswith("coatnet"):
            from effnet_keras.weights.timm_coatnet import load_timm_coatnet

            return load_timm_coatnet(model, path)
        from effnet_keras.weights.timm_efficientnet import load_timm_efficientnet

        return load_timm_efficientnet(model, path, include_top=include_top)
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
