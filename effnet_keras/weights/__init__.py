"""Weight loading: file paths today; weight ids (registry, download) build on `load_into`."""

import os

from effnet_keras.weights import keras_h5


def load_into(model, weights, *, model_name, include_top, classes):
    """Load `weights` (a path or a registered weight id) into a freshly built model."""
    path = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(path, str):
        raise ValueError(f"`weights` must be None, a weight id or a file path. Received: weights={weights!r}")
    if os.path.exists(path):
        return load_file(model, path, include_top=include_top)
    raise ValueError(
        f"`weights` for {model_name} must be None, a known weight id, or the path to a weights file. "
        f"Received: weights={weights!r} (no such file, and no weight id of that name)."
    )


def load_file(model, path, *, include_top=True):
    if path.endswith(".weights.h5"):
        model.load_weights(path)
        return None
    if path.endswith(".h5") and keras_h5.is_legacy_h5(path):
        return keras_h5.load_legacy_h5(model, path, include_top=include_top)
    raise ValueError(
        f"Cannot tell the format of weights file {path!r}: expected a Keras `.weights.h5` file or a "
        "keras.applications legacy `.h5` file."
    )
