"""Fetch a registered weights file into the Keras cache, hash-checked, never loading a bad file.

`keras.utils.get_file` does the transfer and the check against a published hash: a cached
file that fails it is fetched again, a fresh download that fails it raises. Where no hash has
been published (the automl / tensorflow/tpu archives), the first complete download's sha256
is pinned beside the file (`<file>.sha256`) and every later use is checked against the pin;
`tools/pin_weight_hashes.py` moves such pins into the registry.
"""

import hashlib
import os

CACHE_SUBDIR = "effnet_keras"


class WeightsDownloadError(OSError):
    """The weights could not be fetched (offline, moved, refused): says which URL and what to do."""


def sha256_of(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir():
    """Where downloads go: $KERAS_HOME (default ~/.keras) / effnet_keras."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(base, CACHE_SUBDIR)


def fetch(entry, *, include_top=True, cache_dir_override=None):
    """Download (or reuse) the file of registry `entry`; returns its local path."""
    import keras

    from effnet_keras.weights.registry import parse_hash

    url, file_hash = entry.file(include_top)
    fname = f"{entry.model}--{entry.weight_id}--{os.path.basename(url)}"
    target_dir = cache_dir_override or cache_dir()
    os.makedirs(target_dir, exist_ok=True)
    path = os.path.join(target_dir, fname)
    kwargs = dict(fname=fname, origin=url, cache_dir=target_dir, cache_subdir=".")
    if file_hash is not None:
        algorithm, digest = parse_hash(file_hash, where=f"{entry.model} / {entry.weight_id}")
        kwargs.update(file_hash=digest, hash_algorithm=algorithm)
    checked = False  # the cached file already matched its pin: no second hashing pass below
    if file_hash is None and os.path.exists(path):
        state = _pin_state(path)
        if state == "mismatch":
            os.remove(path)  # corrupt or truncated since it was pinned: fetch again
        checked = state == "match"
    try:
        path = keras.utils.get_file(**kwargs)
    except ValueError as err:  # the fresh download failed the published hash
        _remove(path)
        raise WeightsDownloadError(
            f"Downloaded {url} but it fails its {file_hash.split(':')[0]} check ({err}); the file was deleted, "
            "not loaded. Retry; if it persists the file at the URL has changed: download it yourself, check it, "
            f"and pass weights='/path/to/{os.path.basename(url)}'."
        ) from err
    except Exception as err:  # urllib / http errors: offline, 404, proxy
        _remove(path)
        raise WeightsDownloadError(
            f"Could not download {entry.weight_id!r} weights for {entry.model} from {url}: {err}. If this "
            f"machine is offline, download that file elsewhere and pass weights='/path/to/{os.path.basename(url)}' "
            f"(or copy it to {path})."
        ) from err
    if file_hash is None and not checked:
        _pin(path)
    return path


def _pin_path(path):
    return path + ".sha256"


def _pin_state(path):
    """'none' (not pinned yet), 'match' or 'mismatch' against `<path>.sha256`."""
    pin = _pin_path(path)
    if not os.path.exists(pin):
        return "none"
    with open(pin, encoding="utf8") as f:
        return "match" if f.read().strip() == sha256_of(path) else "mismatch"


def _pin(path):
    """Record the first download's sha256, or check a fresh re-download against the existing pin."""
    state = _pin_state(path)
    if state == "mismatch":
        _remove(path)
        raise WeightsDownloadError(f"{path} does not match its pinned sha256 ({_pin_path(path)}); deleted, not loaded.")
    if state == "none":
        with open(_pin_path(path), "w", encoding="utf8") as f:
            f.write(sha256_of(path) + "\n")


def discard(path):
    """Delete a cached download and its pin, so the next fetch downloads it afresh."""
    _remove(path)
    _remove(_pin_path(path))


def _remove(path):
    if path and os.path.exists(path):
        os.remove(path)
