"""Read keras.applications legacy `.h5` weight files by layer name.

keras.applications loads its `.h5` files by layer *order*, which breaks as soon
as two graphs differ by one weight-carrying layer (its V1 graph even changes
with `weights=`). We match by layer name instead: our layer names are
keras.applications' names, normalisation layers (their mean/variance live in
our graph as constants) are skipped, and a head that the model does not have
(`include_top=False`) is skipped.
"""

import warnings

import h5py
import numpy as np

# keras.applications layers whose weights our models hold as constants instead.
PREPROCESSING_LAYERS = ("normalization", "rescaling")
HEAD_LAYERS = ("predictions",)


def is_legacy_h5(path):
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        return "layer_names" in group.attrs


def read_legacy_h5(path):
    """-> {layer_name: [arrays in saved order]} for every layer that has weights."""
    out = {}
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        for raw in group.attrs["layer_names"]:
            name = raw.decode("utf8") if isinstance(raw, bytes) else str(raw)
            layer_group = group[name]
            weight_names = [w.decode("utf8") if isinstance(w, bytes) else str(w) for w in layer_group.attrs.get("weight_names", [])]
            if weight_names:
                out[name] = [np.asarray(layer_group[w]) for w in weight_names]
    return out


def _is_preprocessing(name):
    return any(name == p or name.startswith(p + "_") for p in PREPROCESSING_LAYERS)


def assign_by_name(model, arrays_by_layer, *, source, skip_head=False, new_head_ok=False):
    """Set each model layer's weights from `arrays_by_layer`; every mismatch names the layer.

    skip_head: the file's classifier is ignored (a headless model).
    new_head_ok: a classifier whose class count differs from the file's (e.g. a 21k head into a
    10-class model) keeps its fresh initialisation, with a warning saying so; without it that
    is a shape error like any other.
    Returns the list of skipped file layers (preprocessing, head).
    """
    layers = {layer.name: layer for layer in model.layers}
    skipped = []
    for name, arrays in arrays_by_layer.items():
        if _is_preprocessing(name) or (skip_head and name in HEAD_LAYERS and name not in layers):
            skipped.append(name)
            continue
        if name not in layers:
            raise ValueError(f"{source}: layer {name!r} in the file has no counterpart in model {model.name!r}.")
        layer = layers[name]
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(a.shape) for a in arrays]
        if expected != got and name in HEAD_LAYERS and new_head_ok:
            warnings.warn(
                f"{source}: the file's classifier {name!r} has shapes {got} but the model's has {expected} "
                f"(another class count): loaded the backbone, left {name!r} freshly initialised. Train it "
                "before use (fine-tuning).",
                stacklevel=3,
            )
            skipped.append(name)
            continue
        if expected != got:
            raise ValueError(
                f"{source}: shape mismatch for layer {name!r}: the model expects {expected}, the file has {got}."
            )
        layer.set_weights(arrays)
    missing = [l.name for l in model.layers if l.weights and l.name not in arrays_by_layer]
    if missing:
        raise ValueError(f"{source}: the file has no weights for layers {missing[:10]}{' ...' if len(missing) > 10 else ''}.")
    return skipped


def load_legacy_h5(model, path, *, include_top=True):
    return assign_by_name(model, read_legacy_h5(path), source=str(path), skip_head=not include_top)
