"""The one gate every weights loader opens its file through.

A truncated download, a disk error or a file of another format fails here with one
`WeightsFileError` (a ValueError) whose message names the path, says the file is damaged
or not in the format the loader reads, and what to do, instead of a raw h5py /
safetensors / TensorFlow error from deep inside a loader. Leaf module: no effnet_keras
imports, so every loader (and the converters' CLI) can import it.

    with open_h5(path, expected=NATIVE) as f:      # h5py.File, read-only
        ...
    with reading(path, expected=TIMM):              # any parser error -> WeightsFileError
        state = safetensors.numpy.load_file(path)
"""

import contextlib
import os

NATIVE = "a Keras 3 `.weights.h5` file"
KERAS_H5 = "a keras.applications legacy `.h5` file"
HDF5 = "an HDF5 weights file (Keras 3 `.weights.h5` or keras.applications `.h5`)"
TIMM = "a timm state dict (`.safetensors`, or torch `.pth`/`.pt`/`.bin`)"
TF_CHECKPOINT = "an automl / tensorflow-tpu TF checkpoint (`.tar.gz`/`.tgz` archive, directory or prefix)"


class WeightsFileError(ValueError):
    """A weights file is damaged (truncated or interrupted download, disk error) or not in the
    format its loader reads. `path` is the file; the message says what to do."""

    def __init__(self, message, path=None):
        super().__init__(message)
        self.path = path


def remote_exists(path):
    from effnet_keras import fileio  # lazily: this module stays a leaf, TF-free for local paths

    return fileio.exists(path) or fileio.exists(os.fspath(path) + ".index")


def weights_file_error(path, detail, *, expected):
    """The error for `path`: what is wrong (`detail`), what was expected, and the remedy."""
    return WeightsFileError(
        f"Weights file {os.fspath(path)!r} is damaged or not {expected} ({detail}). A truncated or interrupted "
        "download is the usual cause: download the file again (for a weight id, the bad cached copy is deleted, "
        "so the next call downloads it again); for a file you made, save or convert it again "
        "(model.save_weights('x.weights.h5'), python -m effnet_keras.convert).",
        path=os.fspath(path),
    )


def _first_line(err):
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


@contextlib.contextmanager
def reading(path, *, expected, only=(Exception,)):
    """Turn an error (of the types `only`) that a parser raises while reading `path` into a
    WeightsFileError. Missing files (FileNotFoundError), missing optional packages
    (ImportError) and our own errors pass through unchanged.
    """
    try:
        yield
    except (WeightsFileError, ImportError, FileNotFoundError, MemoryError):
        raise
    except only as err:  # h5py OSError, SafetensorError, UnpicklingError, EOFError, TF OpError, ...
        raise weights_file_error(path, _first_line(err), expected=expected) from None


@contextlib.contextmanager
def open_h5(path, *, expected=HDF5):
    """`h5py.File(path, "r")`, validated: a file h5py cannot open (not HDF5, truncated) and errors
    reading it (a group or dataset missing or cut off) raise WeightsFileError."""
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such weights file: {path!r}")
    with reading(path, expected=expected):
        handle = h5py.File(path, "r")
    with handle:
        try:
            yield handle
        except (OSError, KeyError) as err:
            raise weights_file_error(path, _first_line(err), expected=expected) from None
