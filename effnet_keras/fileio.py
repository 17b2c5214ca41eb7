"""Files on local disk or on a bucket (`gs://`, any `scheme://` TensorFlow has a filesystem for).

Every path a user gives may be a bucket path. Local paths go through `os` / `open`
(no TensorFlow needed, as before); paths with a scheme (`"://" in path`) go through
`tf.io.gfile`, imported only then, so the model code keeps running without TensorFlow.

What lands under a final name is complete:

- files (`write_text`, `write_bytes`, `save_weights`): written to a temp name beside the
  target, then moved into place: `os.replace` locally (atomic); `tf.io.gfile.rename` on a
  remote filesystem (on GCS a server-side copy + delete: the object appears whole or not at
  all), falling back to copy where rename is unsupported; the size under the final name is
  checked against what was written, and the temp file removed.
- directories (`staged_dir`): written in full to `.<name>.tmp-<id>` beside the target and
  committed only when the block exits without an error. Locally by `os.rename` (the old
  target is renamed aside first and deleted after). Remote filesystems have no atomic
  directory rename (GCS: per-object copies; TF's `ram://` renames only the directory entry),
  so the old target is deleted, the files copied in with the `commit_last` files (e.g.
  `saved_model.pb`) copied last, every size verified, then the staging directory deleted: a
  copy cut short lacks its commit-last file, so it is recognisably incomplete, and the next
  commit replaces it. Leftover staging directories of an interrupted writer are deleted by
  the next `staged_dir` on the same target.
"""

import builtins
import contextlib
import logging as _std_logging
import os
import shutil
import tempfile
import uuid

_log = _std_logging.getLogger("effnet_keras")


def is_remote(path):
    """True for a path with a scheme (`gs://...`, `ram://...`): read and written through tf.io.gfile."""
    return "://" in os.fspath(path)


def _gfile():
    import tensorflow as tf

    return tf.io.gfile


def _not_found_errors():
    import tensorflow as tf

    return (tf.errors.NotFoundError, FileNotFoundError)


def display(path):
    """A path for messages: absolute when local, unchanged when remote."""
    path = os.fspath(path)
    return path if is_remote(path) else os.path.abspath(path)


def _is_ram(path):
    # TF's in-memory filesystem (the tests' stand-in for a bucket) matches names by string
    # prefix: `ram://x/fv` "exists" and "lists" while only `ram://x/fv_bundle` does. Its
    # answers are double-checked with glob, which matches whole names.
    return path.startswith("ram://")


def exists(path):
    path = os.fspath(path).rstrip("/")
    if not is_remote(path):
        return os.path.exists(path)
    gfile = _gfile()
    return gfile.exists(path) and (not _is_ram(path) or bool(gfile.glob(path)))


def isdir(path):
    path = os.fspath(path).rstrip("/")
    if not is_remote(path):
        return os.path.isdir(path)
    return _gfile().isdir(path) and exists(path)


def isfile(path):
    return exists(path) and not isdir(path)


def listdir(path):
    path = os.fspath(path)
    if is_remote(path):
        path = path.rstrip("/")
        if _is_ram(path):
            return sorted(p[len(path) + 1:] for p in _gfile().glob(path + "/*"))
        return sorted(name.rstrip("/") for name in _gfile().listdir(path))
    return sorted(os.listdir(path))


def makedirs(path):
    path = os.fspath(path)
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def getsize(path):
    path = os.fspath(path)
    return _gfile().stat(path).length if is_remote(path) else os.path.getsize(path)


def remove(path, missing_ok=True):
    path = os.fspath(path)
    try:
        if is_remote(path):
            _gfile().remove(path)
        else:
            os.remove(path)
    except _not_found_errors() if is_remote(path) else FileNotFoundError:
        if not missing_ok:
            raise


def rmtree(path):
    """Delete a directory tree if it exists (no error when it does not)."""
    path = os.fspath(path)
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    path = path.rstrip("/")
    gfile = _gfile()
    if not exists(path):
        return
    if not _is_ram(path):
        gfile.rmtree(path)
        return
    for rel in walk_files(path):  # ram://: its recursive delete would take `<path>_suffix` siblings too
        remove(join(path, rel))
    for rel in sorted(_dirs(path), key=lambda d: -d.count("/")) + [""]:
        with contextlib.suppress(*_not_found_errors()):
            gfile.remove(join(path, rel) if rel else path)


def join(*parts):
    return os.path.join(*[os.fspath(p) for p in parts])


def walk_files(path):
    """Relative paths of all files under directory `path`, sorted."""
    path = os.fspath(path).rstrip("/")
    out = []
    for rel, _, files in _walk(path):
        out.extend(join(rel, name) if rel else name for name in files)
    return sorted(out)


def _walk(path):
    """(relative dir, subdirs, files) for every directory under `path`, top-down."""
    if not is_remote(path):
        for root, dirs, files in os.walk(path):
            rel = os.path.relpath(root, path)
            yield ("" if rel == "." else rel), sorted(dirs), sorted(files)
        return
    pending = [""]
    while pending:
        rel = pending.pop(0)
        here = join(path, rel) if rel else path
        names = listdir(here)
        dirs = [n for n in names if isdir(join(here, n))]
        yield rel, dirs, [n for n in names if n not in dirs]
        pending.extend(join(rel, d) if rel else d for d in dirs)


def open(path, mode="r"):  # noqa: A001  (the module's open, as tf.io.gfile.GFile)
    path = os.fspath(path)
    if is_remote(path):
        return _gfile().GFile(path, mode)
    return builtins.open(path, mode, **({} if "b" in mode else {"encoding": "utf8"}))


def read_text(path):
    with open(path, "r") as f:
        return f.read()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def copy(src, dst, overwrite=True):
    """Copy one file between any two filesystems (local <-> bucket included)."""
    src, dst = os.fspath(src), os.fspath(dst)
    if is_remote(src) or is_remote(dst):
        _gfile().copy(src, dst, overwrite=overwrite)
    else:
        if not overwrite and os.path.exists(dst):
            raise FileExistsError(dst)
        shutil.copyfile(src, dst)


def _tmp_name(path):
    head, tail = os.path.split(os.fspath(path))
    return os.path.join(head, f".{tail}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace(tmp, path):
    """Move the complete file `tmp` to `path` (same filesystem), replacing it; see the module doc."""
    tmp, path = os.fspath(tmp), os.fspath(path)
    if not is_remote(path):
        os.replace(tmp, path)
        return
    gfile = _gfile()
    size = gfile.stat(tmp).length
    try:
        gfile.rename(tmp, path, overwrite=True)
    except Exception as err:  # noqa: BLE001  (rename unsupported here: copy, then verify)
        import tensorflow as tf

        if not isinstance(err, (tf.errors.UnimplementedError, tf.errors.FailedPreconditionError)):
            raise
        gfile.copy(tmp, path, overwrite=True)
    got = gfile.stat(path).length
    if got != size:
        raise OSError(f"{path}: {got} bytes under the final name, {size} written; the copy is incomplete.")
    remove(tmp)


def write_bytes(path, data):
    """Write `data` to `path` atomically (temp file beside it, then `replace`)."""
    path = os.fspath(path)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        replace(tmp, path)
    except BaseException:
        remove(tmp)
        raise
    return path


def write_text(path, text):
    return write_bytes(path, text.encode("utf8"))


def save_weights(model, path):
    """`model.save_weights(path)` (a `.weights.h5` name), atomically, on local and remote paths.

    Keras writes remote paths through a local temp file copied straight to the final name;
    here the copy goes to a temp name first, then `replace`.
    """
    path = os.fspath(path)
    suffix = ".weights.h5"
    if not path.endswith(suffix):
        raise ValueError(f"{path!r}: a Keras weights file name must end in {suffix}.")
    if not is_remote(path):
        tmp = path[: -len(suffix)] + ".tmp" + suffix  # as before: visible name model.tmp.weights.h5
        model.save_weights(tmp)
        os.replace(tmp, path)
        return path
    local_dir = tempfile.mkdtemp(prefix="effnet_weights_")
    try:
        local = os.path.join(local_dir, "w" + suffix)
        model.save_weights(local)
        tmp = _tmp_name(path)
        try:
            copy(local, tmp)
            replace(tmp, path)
        except BaseException:
            remove(tmp)
            raise
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)
    return path


@contextlib.contextmanager
def local_copy(path, reader="this reader"):
    """Yield a local path for `path`: itself when local; a copy in a temp folder when remote
    (logged in one line, deleted afterwards). For readers that need a local file (h5py, tarfile).
    A directory is copied whole; a TF checkpoint prefix with its `.index` / `.data-*` files."""
    path = os.fspath(path)
    if not is_remote(path):
        yield path
        return
    local_dir = tempfile.mkdtemp(prefix="effnet_remote_")
    try:
        local = os.path.join(local_dir, os.path.basename(path.rstrip("/")) or "file")
        if not exists(path) and exists(path + ".index"):  # a TF checkpoint prefix: its .index and .data-*
            os.makedirs(local_dir, exist_ok=True)
            for part in _gfile().glob(path + ".*"):
                copy(part, os.path.join(local_dir, os.path.basename(part)))
        elif isdir(path):
            for rel in _dirs(path):
                os.makedirs(os.path.join(local, rel), exist_ok=True)
            for rel in walk_files(path):
                os.makedirs(os.path.dirname(os.path.join(local, rel)), exist_ok=True)
                copy(join(path, rel), os.path.join(local, rel))
        else:
            copy(path, local)
        _log.info("Copied %s to the local temp file %s (%s needs a local file).", path, local, reader)
        yield local
    finally:
        shutil.rmtree(local_dir, ignore_errors=True)


def _stale_siblings(target):
    parent, name = os.path.split(os.fspath(target).rstrip("/"))
    if not exists(parent or "."):
        return []
    prefixes = (f".{name}.tmp-", f".{name}.old-")
    return [join(parent, n) for n in listdir(parent or ".") if n.startswith(prefixes)]


def clean_stale(target):
    """Delete the staging / set-aside directories an interrupted `staged_dir(target)` left."""
    for leftover in _stale_siblings(target):
        _log.warning("Deleting %s, left by an interrupted write of %s.", leftover, target)
        rmtree(leftover) if isdir(leftover) else remove(leftover)


@contextlib.contextmanager
def staged_dir(target, commit_last=()):
    """Write a directory under `target` only when complete.

        with fileio.staged_dir(export_dir, commit_last=("saved_model.pb",)) as staging:
            ...write everything into `staging`, check it...
        # now `target` holds exactly what `staging` held; a previous `target` is replaced.

    An exception inside the block deletes the staging directory and leaves `target` as
    it was. See the module doc for how the move works on each filesystem.
    """
    target = os.fspath(target).rstrip("/")
    parent = os.path.dirname(target)
    if parent:
        makedirs(parent)
    clean_stale(target)
    staging = _tmp_name(target)
    makedirs(staging)
    try:
        yield staging
        commit_dir(staging, target, commit_last=commit_last)
    except BaseException:
        rmtree(staging)
        raise


def commit_dir(staging, target, commit_last=()):
    """Move the complete directory `staging` to `target`, replacing it (see the module doc)."""
    if not is_remote(target):
        old = None
        if os.path.exists(target):
            old = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
        os.rename(staging, target)
        if old:
            shutil.rmtree(old, ignore_errors=True)
        return target
    rmtree(target)
    files = walk_files(staging)
    last = [f for f in files if os.path.basename(f) in commit_last]
    makedirs(target)
    for rel in [f for f in files if f not in last] + last:
        dst = join(target, rel)
        makedirs(os.path.dirname(dst))
        copy(join(staging, rel), dst)
        if getsize(dst) != getsize(join(staging, rel)):
            raise OSError(f"{dst}: size differs from the staged copy; the copy is incomplete.")
    for root in _dirs(staging):  # empty directories (a SavedModel's assets/) too
        makedirs(join(target, root))
    rmtree(staging)
    return target


def _dirs(path):
    out = []
    for rel, dirs, _ in _walk(os.fspath(path).rstrip("/")):
        out.extend(join(rel, d) if rel else d for d in dirs)
    return out
