"""Read keras.applications legacy `.h5` weight files by layer name.

keras.applications loads its `.h5` files by layer *order*, which breaks as soon
as two graphs differ by one weight-carrying layer (its V1 graph even changes
with `weights=`). We match by layer name instead: our layer names are
keras.applications' names, normalisation layers (their mean/variance live in
our graph as constants) are skipped, and a head that the model does not have
(`include_top=False`) is skipped.
"""

import warnings

import numpy as np
from absl import logging

from effnet_keras.weights import files

# keras.applications layers whose weights our models hold as constants instead.
PREPROCESSING_LAYERS = ("normalization", "rescaling")
HEAD_LAYERS = ("predictions",)
# Layers a model has only with include_top=True (CoAtNet's head adds a norm and pre-logits).
TOP_ONLY_LAYERS = ("head_norm", "head_pre_logits", "predictions")


def is_legacy_h5(path):
    """Whether `path` is a keras.applications legacy `.h5` (WeightsFileError when it is no HDF5 file)."""
    with files.open_h5(path, expected=files.HDF5) as f:
        group = f["model_weights"] if "model_weights" in f else f
        return "layer_names" in group.attrs


def read_legacy_h5(path):
    """-> {layer_name: [arrays in saved order]} for every layer that has weights."""
    out = {}
    with files.open_h5(path, expected=files.KERAS_H5) as f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in group.attrs:
            hint = "a Keras 3 `.weights.h5`: pass it as weights= directly" if "layers" in f else "no 'layer_names'"
            raise files.weights_file_error(path, hint, expected=files.KERAS_H5)
        for raw in group.attrs["layer_names"]:
            name = raw.decode("utf8") if isinstance(raw, bytes) else str(raw)
            layer_group = group[name]
            weight_names = [w.decode("utf8") if isinstance(w, bytes) else str(w) for w in layer_group.attrs.get("weight_names", [])]
            if weight_names:
                out[name] = [np.asarray(layer_group[w]) for w in weight_names]
    return out


def _is_preprocessing(name):
    return any(name == p or name.startswith(p + "_") for p in PREPROCESSING_LAYERS)


def assign_by_name(model, arrays_by_layer, *, source, skip_head=False, new_head_ok=False, missing_head_ok=False):
    """Set each model layer's weights from `arrays_by_layer`; every mismatch names the layer.

    The one name-matching assigner: legacy `.h5`, native files into another graph, the
    converters and fine-tune initialisation all end here.
    skip_head: the file's classifier is ignored (a headless model).
    new_head_ok: a classifier whose class count differs from the file's (e.g. a 21k head into a
    10-class model) keeps its fresh initialisation, with a warning saying so; without it that
    is a shape error like any other.
    missing_head_ok: the file may lack the model's head layers (a headless donor); they keep
    their fresh initialisation.
    Returns the list of skipped file layers (preprocessing, head).
    """
    layers = {layer.name: layer for layer in model.layers}
    arrays_by_layer = fit_relative_position_tables(model, arrays_by_layer, source=source)
    skipped = []
    order = {name: i for i, name in enumerate(layers)}  # the first mismatch in network order is reported
    for name, arrays in sorted(arrays_by_layer.items(), key=lambda item: order.get(item[0], -1)):
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
            raise ValueError(f"{source}: shape mismatch for layer {name!r}: {_mismatch(layer, got)}.")
        layer.set_weights(arrays)
    missing = [l.name for l in model.layers if l.weights and l.name not in arrays_by_layer
               and not (missing_head_ok and l.name in TOP_ONLY_LAYERS)]
    if missing:
        raise ValueError(f"{source}: the file has no weights for layers {missing[:10]}{' ...' if len(missing) > 10 else ''}.")
    return skipped


def _mismatch(layer, got):
    """Which variable differs, with the file's and the model's shape."""
    expected = [tuple(w.shape) for w in layer.weights]
    if len(expected) != len(got):
        return f"the file has {len(got)} arrays {got}, the model {len(expected)} variables {expected}"
    differ = [(w, e, g) for w, e, g in zip(layer.weights, expected, got) if e != g]
    w, e, g = differ[0]
    more = f" (and {len(differ) - 1} more of its variables)" if len(differ) > 1 else ""
    return f"variable {getattr(w, 'path', w.name)!r}: the file has shape {g}, the model {e}{more}"


def fit_relative_position_tables(model, arrays_by_layer, *, source):
    """CoAtNet weights saved at another input size -> this model's relative-position bias tables.

    Each `RelativeAttention` table of another spatial size is resized bilinearly, per head
    (paper A.1: "bi-linear interpolation to increase the size (2H-1)x(2W-1) to (2H'-1)x(2W'-1)";
    the same sampling as Google's `tf.image.resize`, in NumPy), and one log line says which
    layers went from which size to which. Everything else passes through; a model without
    relative attention is returned as is. A head-count mismatch raises, naming the layer.
    """
    from effnet_keras.layers.attention import relative_attention_layers
    from effnet_keras.layers.attention import resize_relative_position_tables

    tables = [layer for layer in relative_attention_layers(model) if layer.name in arrays_by_layer]
    if not tables:
        return arrays_by_layer
    before = {layer.name: [np.shape(a) for a in arrays_by_layer[layer.name]] for layer in tables}
    try:
        out = resize_relative_position_tables(arrays_by_layer, model)
    except ValueError as err:
        raise ValueError(f"{source}: relative position table of layer {err}") from None
    log_resized_tables(source, [(name, shapes[0], np.shape(out[name][0])) for name, shapes in before.items()
                                if [np.shape(a) for a in out[name]] != shapes])
    return out


def log_resized_tables(source, resized):
    """One log line for [(layer, old table shape, new table shape)] (nothing when empty)."""
    if not resized:
        return
    groups = {}
    for name, old, new in resized:
        groups.setdefault((tuple(old), tuple(new)), []).append(name)

    def size(shape):
        return f"{shape[-2]}x{shape[-1]} (grid {(shape[-2] + 1) // 2}x{(shape[-1] + 1) // 2})"

    parts = [f"{', '.join(names)}: {size(old)} -> {size(new)}" for (old, new), names in groups.items()]
    logging.warning(
        "%s was saved at another input size: resized the relative-position bias tables of %d layers bilinearly "
        "(paper A.1; fine-tune at the new size): %s.", source, len(resized), "; ".join(parts)
    )


def load_legacy_h5(model, path, *, include_top=True):
    return assign_by_name(model, read_legacy_h5(path), source=str(path), skip_head=not include_top)
