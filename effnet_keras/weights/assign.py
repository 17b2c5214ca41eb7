"""The one assigner every weights path ends in: `{layer name: [arrays]}` into a model, by name.

Every reader and converter (our `.weights.h5` into another graph, keras.applications `.h5`,
automl / tensorflow-tpu checkpoints, timm and efficientnet_pytorch state dicts, fine-tune
initialisation from a run) produces `{our layer name: [arrays in Keras weight order]}` and
hands it here. The head is the model's to say (`model.parts`: which weight layers are its
head, which is the classifier), never a list of names in this module:

* a headless model skips the file's head layers;
* a classifier of another class count than the file's keeps its fresh initialisation, with a
  warning (fine-tuning a 21k checkpoint on 10 classes);
* `missing_head_ok`: the file may lack the head (a headless donor, fine-tune init);
* CoAtNet relative-position tables saved at another input size are resized bilinearly.

Any other mismatch (a layer the model lacks, a shape, a layer the file lacks) is an error that
names the layer.
"""

import warnings

import numpy as np
from absl import logging

from effnet_keras.model_parts import model_parts

# keras.applications layers whose weights our models hold as constants (the input normalisation).
PREPROCESSING_LAYERS = ("normalization", "rescaling")


def _is_preprocessing(name):
    return any(name == p or name.startswith(p + "_") for p in PREPROCESSING_LAYERS)


def assign_by_name(model, arrays_by_layer, *, source, missing_head_ok=False):
    """Set each model layer's weights from `arrays_by_layer`; every mismatch names the layer.

    Returns the file layers left unassigned on purpose (normalisation constants, a head the
    model does not have or that has another class count).
    """
    parts = model_parts(model)
    head = set(parts.head)
    layers = {layer.name: layer for layer in model.layers}
    arrays_by_layer = fit_relative_position_tables(model, arrays_by_layer, source=source)
    skipped = []
    order = {name: i for i, name in enumerate(layers)}  # the first mismatch in network order is reported
    for name, arrays in sorted(arrays_by_layer.items(), key=lambda item: order.get(item[0], -1)):
        if _is_preprocessing(name) or (name in head and name not in layers):
            skipped.append(name)
            continue
        if name not in layers:
            raise ValueError(f"{source}: layer {name!r} in the file has no counterpart in model {model.name!r}.")
        layer = layers[name]
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(np.shape(a)) for a in arrays]
        if expected != got and name == parts.logits:
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
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in arrays_by_layer
               and not (missing_head_ok and layer.name in head)]
    if missing:
        raise ValueError(f"{source}: the file has no weights for layers {missing[:10]}"
                         f"{' ...' if len(missing) > 10 else ''}.")
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
