"""Class names: the ImageNet names shipped with the package, and the one lookup every tool uses.

A leaf module (numpy and the standard library; no Keras, no TensorFlow). The files beside
it, `imagenet1k.txt` (1000 classes) and `imagenet21k.txt` (Google's ImageNet-21k, 21,843
classes: the automl `imagenet21k` heads), hold `wnid<TAB>name` lines in class-index order;
tools/make_class_names.py writes them from timm's WordNet lists. The fall11 ImageNet-22k
order (21,841 classes) is the 21k list without two ids.

    class_index_for(n, run=..., labels_file=...)  -> [(class_id, name)] for an n-class head
    class_names_for(...)                           -> the names alone
    decode_predictions(preds, top=5)               -> keras.applications-style top-k tuples
    write_labels(directory, names) / read_names(path)   a run's or an export's labels.txt
"""

import functools
import importlib.resources
import warnings

import numpy as np

IMAGENET1K_CLASSES = 1000
IMAGENET21K_CLASSES = 21843  # Google's ImageNet-21k (automl EfficientNetV2 `imagenet21k` weights)
IMAGENET22K_CLASSES = 21841  # fall11 ImageNet-22k: the 21k list less the two ids below
FALL11_ABSENT = ("n03931044", "n09859684")  # in Google's 21k, not in fall11 (tools/make_class_names.py checks)
IMAGENET_DATA = ("imagenet", "imagenet21k")  # run data.name values whose classes are ImageNet's, in its order
LABELS_FILE = "labels.txt"  # a run's and an export's class names, one per line, in class-index order


@functools.lru_cache(maxsize=None)
def _read_shipped(filename):
    text = importlib.resources.files(__name__).joinpath(filename).read_text(encoding="utf8")
    return tuple(tuple(line.split("\t", 1)) for line in text.splitlines() if line.strip())


def imagenet_class_index(num_classes):
    """[(wnid, name)] in class-index order for an ImageNet head of `num_classes`
    (1000, 21843 or 21841), or None for any other count."""
    if num_classes == IMAGENET1K_CLASSES:
        return list(_read_shipped("imagenet1k.txt"))
    if num_classes == IMAGENET21K_CLASSES:
        return list(_read_shipped("imagenet21k.txt"))
    if num_classes == IMAGENET22K_CLASSES:
        return [entry for entry in _read_shipped("imagenet21k.txt") if entry[0] not in FALL11_ABSENT]
    return None


def read_labels_file(path, num_classes=None):
    """[(class_id, name)] from a text file: one name per line (class id = the index), or
    `id<TAB>name` lines (as the shipped files). A ValueError when the count is not `num_classes`."""
    from effnet_keras import fileio  # standard library only until a bucket path needs TF

    lines = [line.strip() for line in fileio.read_text(path).splitlines() if line.strip()]
    entries = [tuple(line.split("\t", 1)) if "\t" in line else (str(i), line) for i, line in enumerate(lines)]
    if num_classes is not None and len(entries) != num_classes:
        raise ValueError(f"labels file {path} has {len(entries)} names; the model has {num_classes} classes.")
    return entries


def read_names(path):
    """The class names of a labels file (`read_labels_file` without the ids)."""
    return [name for _, name in read_labels_file(path)]


def write_labels(directory, class_names):
    """`directory/labels.txt`: one class name per line, index order (atomic, local or bucket). Returns its path."""
    import os

    from effnet_keras import fileio

    names = [str(n) for n in class_names]
    bad = [n for n in names if not n or "\n" in n]
    if bad:
        raise ValueError(f"class names must be non-empty single lines. Received: {bad[:3]!r}")
    path = os.path.join(directory, LABELS_FILE)
    fileio.write_text(path, "\n".join(names) + "\n")
    return path


def _index_strings(num_classes):
    return [(str(i), str(i)) for i in range(num_classes)]


def class_index_for(num_classes, run=None, labels_file=None):
    """[(class_id, name)] for an `num_classes` head, from the first source that has names:

    1. `labels_file` (one name per line, or `id<TAB>name`; its length must match);
    2. `run` (an effnet_keras.rundir.RunDir): its labels.txt; a run without one that
       trained on ImageNet (data.name imagenet/imagenet21k) gets the ImageNet names,
       any other run the index strings;
    3. the shipped ImageNet names for a 1000 / 21843 / 21841-class head;
    4. index strings "0", "1", ... (class id and name alike).
    """
    num_classes = int(num_classes)
    if labels_file is not None:
        return read_labels_file(labels_file, num_classes)
    if run is not None:
        names = run.class_names  # RunDirError when labels.txt and the run's class count disagree
        if names is not None:
            if len(names) != num_classes:
                raise ValueError(f"{run.path}: labels.txt has {len(names)} names; the model has {num_classes} "
                                 "classes.")
            return [(str(i), name) for i, name in enumerate(names)]
        if run.config.data.name not in IMAGENET_DATA:
            return _index_strings(num_classes)
    return imagenet_class_index(num_classes) or _index_strings(num_classes)


def class_names_for(num_classes, run=None, labels_file=None):
    """The class names alone (see `class_index_for`)."""
    return [name for _, name in class_index_for(num_classes, run=run, labels_file=labels_file)]


def _to_numpy(preds):
    try:
        return np.asarray(preds)
    except (TypeError, ValueError, RuntimeError):  # e.g. a torch tensor on an accelerator
        import keras

        return keras.ops.convert_to_numpy(preds)


def decode_predictions(preds, top=5, class_names=None):
    """Top-`top` classes per sample, as `keras.applications.*.decode_predictions`.

    `preds`: scores of shape (samples, classes) (probabilities or logits; the order is
    what counts). Returns, per sample, a list of `(class_id, class_name, score)` tuples,
    best first. The class id is the WordNet id for an ImageNet head (1000 / 21843 /
    21841 classes, names shipped with the package) and the index as a string otherwise.
    `class_names`: names in class-index order (then the id is the index string); any
    other class count without them gets index strings for names, with a warning.
    """
    preds = _to_numpy(preds)
    if preds.ndim != 2:
        raise ValueError("decode_predictions expects a batch of predictions of shape (samples, classes). "
                         f"Received an array of shape {tuple(preds.shape)}")
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top must be a positive integer. Received: top={top!r}")
    num_classes = preds.shape[1]
    if class_names is not None:
        names = [str(n) for n in class_names]
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names but predictions of shape {tuple(preds.shape)} "
                             f"have {num_classes} classes.")
        index = [(str(i), n) for i, n in enumerate(names)]
    else:
        index = imagenet_class_index(num_classes)
        if index is None:
            warnings.warn(f"decode_predictions: no class names known for {num_classes} classes (ImageNet heads "
                          "have 1000, 21843 or 21841); using index strings. Pass class_names=[...].", stacklevel=2)
            index = _index_strings(num_classes)
    top = min(int(top), num_classes)
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(index[i][0], index[i][1], float(row[i])) for i in best])
    return results
