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

import h5py

from effnet_keras.weights import keras_h5
from effnet_keras.weights import registry
from effnet_keras.weights.registry import lookup
from effnet_keras.weights.registry import weight_ids

__all__ = ["load_into", "load_file", "lookup", "weight_ids", "detect_format"]

STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def load_into(model, weights, *, model_name, include_top, classes):
    """Load `weights` (a path or a registered weight id) into a freshly built model."""
    path = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(path, str):
        raise ValueError(f"`weights` must be None, a weight id or a file path. Received: weights={weights!r}")
    if os.path.exists(path) or os.path.exists(path + ".index"):
        return load_file(model, path, include_top=include_top, model_name=model_name)
    if registry.looks_like_weight_id(path):
        entry = lookup(model_name, path)  # raises, listing this model's ids, when it has no such id
        from effnet_keras.weights import download

        local = download.fetch(entry, include_top=include_top)
        return load_file(model, local, include_top=include_top, model_name=model_name, file_format=entry.format)
    ids = weight_ids(model_name)
    raise ValueError(
        f"`weights` for {model_name} must be None, one of its weight ids "
        f"({', '.join(repr(i) for i in ids) if ids else 'none are published'}), or the path to a weights file. "
        f"Received: weights={weights!r} (no such file, and no weight id of that name)."
    )


def detect_format(path):
    """'native' | 'keras_h5' | 'timm' | 'tf_checkpoint' for a weights path, or a ValueError."""
    if path.endswith(".weights.h5"):
        return "native"
    if path.endswith(".h5"):
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
    try:
        model.load_weights(path)
        return []
    except ValueError:
        pass
    return keras_h5.assign_by_name(model, read_native_h5(path), source=path, skip_head=not include_top,
                                   new_head_ok=True)


def read_native_h5(path):
    """{layer name: [arrays]} from a Keras 3 `.weights.h5` (layers stored under generated keys,
    the layer name in the `vars` group's attributes)."""
    out = {}
    with h5py.File(path, "r") as f:
        if "layers" not in f:
            raise ValueError(f"{path!r} is not a Keras 3 `.weights.h5` file (no 'layers' group).")
        for key, group in f["layers"].items():
            if "vars" not in group:
                continue
            if "layers" in group and len(group["layers"]):
                raise ValueError(
                    f"{path!r}: layer {group['vars'].attrs.get('name', key)!r} nests sublayers; load it into the "
                    "same graph (same include_top/classes) with model.load_weights instead."
                )
            values = group["vars"]
            if len(values):
                out[str(values.attrs.get("name", key))] = [values[str(i)][()] for i in range(len(values))]
    return out
