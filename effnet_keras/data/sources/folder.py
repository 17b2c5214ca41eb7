"""A folder of images, one sub-folder per class (DIR/<class>/...), or DIR/train/ + DIR/val/.

Listed once per process (tf.io.gfile: local or gs://), class folders read recursively as
keras' `image_dataset_from_directory` and torchvision's `ImageFolder` do; classes are the
sorted folder names. Without train/ and val/, a seeded, stratified share of each class
(data.val_fraction) is held out. Files are decoded by TensorFlow (JPEG, PNG, GIF, BMP); an
unreadable one is skipped with its path in a warning.
"""

import dataclasses
import functools
import os
import zlib

import numpy as np
import tensorflow as tf
from absl import logging

from effnet_keras.config_schema import ConfigError
from effnet_keras.data.sources.base import DataSource
from effnet_keras.data.sources.base import shard
from effnet_keras.images import IMAGE_EXTENSIONS

FOLDER_SPLITS = ("train", "val")
_FOLDER_LAYOUT = ("DIR/<class>/*.jpg (one sub-folder per class, read recursively; also .jpeg .png .bmp .gif), or "
                  "DIR/train/ + DIR/val/")


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """An image folder, listed once: sorted class names and per-split (paths, label ids)."""

    root: str
    class_names: tuple
    splits: dict  # "train" / "val" -> (tuple of paths, tuple of int label ids)
    layout: str  # "split" (DIR/train + DIR/val) or "stratified" (val_fraction of each class)
    ignored: int  # files without an image extension
    nested: int = 0  # images found in sub-folders of a class folder (read, as image_dataset_from_directory does)

    @property
    def num_classes(self):
        return len(self.class_names)

    def count(self, split_name):
        return len(self.splits[split_name][0])


def _subfolders(path):
    """Sorted names of `path`'s visible sub-folders (gs:// listings end folder names with '/')."""
    names = []
    for entry in tf.io.gfile.listdir(path):
        name = entry.rstrip("/")
        if name and not name.startswith(".") and tf.io.gfile.isdir(os.path.join(path, name)):
            names.append(name)
    return sorted(names)


def _class_files(class_dir):
    """(sorted image files in class_dir and, recursively, its sub-folders (hidden ones aside), the number of
    those in sub-folders, the number of other files), as keras' image_dataset_from_directory and
    torchvision's ImageFolder read a class folder."""
    files, nested, other = [], 0, 0
    for folder, subfolders, names in tf.io.gfile.walk(class_dir):
        subfolders[:] = sorted(s for s in subfolders if not s.rstrip("/").startswith("."))
        deeper = folder.rstrip("/") != class_dir.rstrip("/")
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                files.append(os.path.join(folder, name))
                nested += deeper
            elif not name.startswith("."):
                other += 1
    return sorted(files), nested, other


def _list_classes(root, what):
    classes = _subfolders(root)
    if len(classes) < 2:
        found = f"only the class folder {classes[0]!r}" if classes else "no class sub-folders"
        raise ConfigError(f"data.data_dir={what!r} has {found}; expected at least 2 classes: {_FOLDER_LAYOUT}.")
    listed, nested, ignored = {}, 0, 0
    for name in classes:
        files, deeper, other = _class_files(os.path.join(root, name))
        listed[name], nested, ignored = files, nested + deeper, ignored + other
    return classes, listed, nested, ignored


def _stratified_split(listed, val_fraction, split_seed):
    """Per class: a shuffle seeded by (split_seed, class name), the last val_fraction (>= 1 of >= 2) to val."""
    train, val = ([], []), ([], [])
    for label, (name, files) in enumerate(listed.items()):
        order = np.random.default_rng([int(split_seed), zlib.crc32(name.encode("utf-8"))]).permutation(len(files))
        shuffled = [files[i] for i in order]
        num_val = 0 if len(files) < 2 else min(len(files) - 1, max(1, int(round(len(files) * val_fraction))))
        for paths, part in ((train, shuffled[:len(files) - num_val]), (val, shuffled[len(files) - num_val:])):
            paths[0].extend(part)
            paths[1].extend([label] * len(part))
    return train, val


@functools.lru_cache(maxsize=16)
def _list_folder(root, val_fraction, split_seed):
    if not tf.io.gfile.isdir(root):
        raise ConfigError(f"data.data_dir={root!r} is not a folder (or does not exist); expected {_FOLDER_LAYOUT}.")
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    if tf.io.gfile.isdir(train_dir) and tf.io.gfile.isdir(val_dir):
        classes, listed, nested, ignored = _list_classes(train_dir, train_dir)
        val_classes, val_listed, val_nested, val_ignored = _list_classes(val_dir, val_dir)
        if val_classes != classes:
            missing, extra = sorted(set(classes) - set(val_classes)), sorted(set(val_classes) - set(classes))
            raise ConfigError(f"{val_dir!r} must hold the same class folders as {train_dir!r}; missing: "
                                f"{missing[:5]}, extra: {extra[:5]}.")
        empty = [name for name in classes if not val_listed[name]]
        if empty:
            logging.warning("%s: %d class folder(s) without images: %s", val_dir, len(empty), empty[:5])
        ignored, nested = ignored + val_ignored, nested + val_nested
        layout = "split"
    else:
        classes, listed, nested, ignored = _list_classes(root, root)
        layout = "stratified"
    empty = [name for name in classes if not listed[name]]
    if empty:
        where = train_dir if layout == "split" else root
        raise ConfigError(f"class folder {os.path.join(where, empty[0])!r} has no images"
                            f"{f' ({len(empty)} such folders)' if len(empty) > 1 else ''}; expected files ending in "
                            f"{' '.join(IMAGE_EXTENSIONS)} in every class folder.")
    if layout == "split":
        def flat(by_class):
            paths = [p for name in classes for p in by_class[name]]
            labels = [k for k, name in enumerate(classes) for _ in by_class[name]]
            return paths, labels

        train, val = flat(listed), flat(val_listed)
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1) for a folder without train/ and val/ "
                                f"({root}). Received: {val_fraction!r}")
        train, val = _stratified_split(listed, val_fraction, split_seed)
    splits = {"train": (tuple(train[0]), tuple(train[1])), "val": (tuple(val[0]), tuple(val[1]))}
    notes = [f"{nested} of them in nested folders"] if nested else []
    if ignored:
        notes.append(f"{ignored} file(s) without an image extension ({' '.join(IMAGE_EXTENSIONS)}) skipped")
    logging.log(logging.WARNING if ignored else logging.INFO, "Image folder %s (%s): %d classes, %d train / %d val "
                "images%s.", root, layout, len(classes), len(train[0]), len(val[0]),
                f" ({'; '.join(notes)})" if notes else "")
    return FolderListing(root, tuple(classes), splits, layout, ignored, nested)


def list_folder(data):
    """The FolderListing of data.data_dir (listed once per process and settings: tf.io.gfile, local or gs://)."""
    root = data.data_dir
    if not root:
        raise ConfigError("data.data_dir must be set for data.name='folder': pass --data_dir=DIR with "
                            f"{_FOLDER_LAYOUT}.")
    return _list_folder(str(root).rstrip("/") or "/", data.val_fraction, data.split_seed)


class FolderSource(DataSource):
    def listing(self):
        return list_folder(self.data)

    def counts(self):
        """{num_classes, num_train_examples, num_eval_examples} counted from the folder."""
        listing = self.listing()
        return {"num_classes": listing.num_classes, "num_train_examples": listing.count(self.data.train_split),
                "num_eval_examples": listing.count(self.data.eval_split)}

    def info(self):
        counts = self.counts()
        return self._info(counts["num_train_examples"], counts["num_eval_examples"],
                          class_names=self.listing().class_names, num_classes=counts["num_classes"])

    def records(self, split, input_context, shuffle, seed, deterministic):
        split_name = self.split_name(split)
        if split_name not in FOLDER_SPLITS:
            raise ConfigError(f"data.name='folder' has splits {FOLDER_SPLITS}. Received: {split_name!r}")
        listing = self.listing()
        if self.data.num_classes != listing.num_classes:
            raise ValueError(f"data.num_classes={self.data.num_classes} but {listing.root} has {listing.num_classes} "
                             "class folders (resolve the counts with effnet_keras.data.resolve_data_counts).")
        paths, labels = listing.splits[split_name]
        if not paths:
            raise ConfigError(f"{listing.root}: no {split_name} images (layout {listing.layout}).")
        records = shard(tf.data.Dataset.from_tensor_slices({"path": list(paths),
                                                            "label": np.asarray(labels, np.int64)}), input_context)
        if shuffle:  # the whole list: file names are sorted by class, a partial shuffle would not mix them
            records = records.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        return records

    def parse(self, record):
        # Read here, inside the pipeline's skipping map: an unreadable file is skipped like a bad image.
        return tf.io.read_file(record["path"]), tf.one_hot(record["label"], self.data.num_classes, dtype=tf.float32)

    def record_id(self, record, *image_seed):
        """What names a folder record in the skipped-files log: its path."""
        return record["path"]
