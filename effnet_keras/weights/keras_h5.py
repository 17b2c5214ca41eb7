"""Read keras.applications legacy `.h5` weight files by layer name.

keras.applications loads its `.h5` files by layer *order*, which breaks as soon
as two graphs differ by one weight-carrying layer (its V1 graph even changes
with `weights=`). We read them by layer name instead (`read_legacy_h5`) and hand
them to the one assigner (`weights.assign`): our layer names are keras.applications'
names, normalisation layers (their mean/variance live in our graph as constants)
are skipped, and so is a head that the model does not have.
"""

import numpy as np

from effnet_keras.weights import files


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
