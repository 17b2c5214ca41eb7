"""Where examples come from: scikit-learn digits, ImageNet-1k / -21k TFRecords, TFDS datasets, image folders.

A source is `(records, parse)`: `records` is a tf.data.Dataset of small raw
records (serialized tf.Examples, or dicts of encoded image bytes / uint8 pixels
and an integer label), already sharded for this input pipeline; `parse(record)`
returns `(image, label)` with `image` encoded bytes or uint8 [H, W, 3] and
`label` float32 one-hot (multi-hot for ImageNet-21k). Parsing happens in the
pipeline's decode map, so a corrupt record fails there and is skipped.

A missing or empty data_dir is an error naming the path and the expected file
pattern: there is no fake-data fallback.
"""

import dataclasses
import functools
import os
import re
import zlib

import numpy as np
import tensorflow as tf
from absl import logging

from effnet_keras.config_schema import TFDS_NAMES
from effnet_keras.config_schema import ConfigError

IMAGENET_CLASSES = 1000
IMAGENET21K_CLASSES = 21843

# TFRecord split -> (file glob, slice of the sorted file list). As automl's, which do not
# overlap: ImageNet-1k holds out the first 20 of 1,024 train shards as minival; 21k uses
# shards 0-15 for eval, 16-19 for minival, the rest for training.
TFRECORD_SPLITS = {
    "imagenet": {
        "train": ("train-*", slice(20, None)),  # 1,256,144 images
        "minival": ("train-*", slice(0, 20)),  # 25,023
        "trainval": ("train-*", slice(None)),  # 1,281,167
        "validation": ("validation-*", slice(None)),  # 50,000
    },
    "imagenet21k": {
        "train": ("imagenet21k*", slice(20, None)),  # 12,720,275
        "minival": ("imagenet21k*", slice(16, 20)),  # 25,089
        "eval": ("imagenet21k*", slice(0, 16)),  # 100,357
    },
}
# A split may also be written out: "<glob>" or "<glob>[start:stop]" over the sorted files.
_EXPLICIT_SPLIT = re.compile(r"^(?P<glob>[^\[\]]+)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")

# TFDS datasets we have configs for: config_schema.TFDS_NAMES (the schema validates data.tfds_name);
# their splits live in effnet_keras/configs/datasets/*.yaml.


# ---------------------------------------------------------------------- digits


@functools.lru_cache(maxsize=8)
def _digits_arrays(image_size, test_fraction, split_seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 ink levels -> 0..255, bilinear upscaling of the 8x8 strokes, grey -> RGB.
    images = digits.images.astype("float32") * (255.0 / 16.0)
    big = tf.image.resize(images[..., None], (image_size, image_size), method="bilinear").numpy()
    big = np.repeat(np.clip(np.round(big), 0, 255).astype("uint8"), 3, axis=-1)
    labels = digits.target.astype("int64")
    train_x, test_x, train_y, test_y = train_test_split(
        big, labels, test_size=test_fraction, random_state=split_seed, stratify=labels
    )
    return {"train": (train_x, train_y), "test": (test_x, test_y)}


def digits_arrays(cfg, split_name):
    """(uint8 [N, S, S, 3], int64 [N]) for scikit-learn's digits, split 'train' or 'test'."""
    size = int(cfg["digits_image_size"])
    fraction = float(cfg["test_fraction"])
    if not 8 <= size <= 512:
        raise ValueError(f"data.digits_image_size must be in [8, 512]. Received: {size}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"data.test_fraction must be in (0, 1). Received: {fraction}")
    if split_name not in ("train", "test"):
        raise ValueError(f"digits has splits 'train' and 'test'. Received: {split_name!r}")
    return _digits_arrays(size, fraction, int(cfg["split_seed"]))[split_name]


def digits_counts(cfg):
    return len(digits_arrays(cfg, "train")[1]), len(digits_arrays(cfg, "test")[1])


def digits_source(cfg, split_name, num_classes, input_context):
    images, labels = digits_arrays(cfg, split_name)
    records = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
    if input_context is not None and input_context.num_input_pipelines > 1:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)

    def parse(record):
        return record["image"], tf.one_hot(record["label"], num_classes, dtype=tf.float32)

    return records, parse


# ---------------------------------------------------------------------- TFRecords


def tfrecord_files(cfg, split_name):
    """Sorted TFRecord files of a named split (TFRECORD_SPLITS) or an explicit '<glob>[a:b]'."""
    name, data_dir = cfg["name"], cfg.get("data_dir")
    known = TFRECORD_SPLITS[name]
    if split_name in known:
        glob, part = known[split_name]
    else:
        match = _EXPLICIT_SPLIT.match(str(split_name))
        if not match or ("*" not in split_name and "?" not in split_name):
            raise ValueError(
                f"Unknown {name} split {split_name!r}. Use one of {sorted(known)} or a file glob such as "
                f"'train-*[20:]' (a slice of the sorted matching files)."
            )
        glob = match["glob"]
        to_int = lambda text: int(text) if text not in (None, "") else None  # noqa: E731
        part = slice(to_int(match["start"]), to_int(match["stop"]))
    pattern = os.path.join(data_dir or "<data_dir>", glob)
    if not data_dir:
        raise FileNotFoundError(
            f"data.name={name!r} reads TFRecords but data.data_dir is not set: pass --data_dir=DIR with files "
            f"matching {pattern!r} (split {split_name!r})."
        )
    if not tf.io.gfile.isdir(data_dir):
        raise FileNotFoundError(f"data.data_dir={data_dir!r} does not exist; expected TFRecords matching {pattern!r}.")
    matched = sorted(tf.io.gfile.glob(pattern))
    files = matched[part]
    if not files:
        raise FileNotFoundError(
            f"No TFRecords for {name} split {split_name!r} in {data_dir!r}: expected files matching {pattern!r}"
            + (f" (this split takes files [{part.start}:{part.stop}] of the {len(matched)} found)." if matched else ".")
        )
    return files


def _parse_imagenet(serialized):
    """ImageNet-1k tf.Example: JPEG `image/encoded`, 1-based `image/class/label` -> 0-based one-hot."""
    features = tf.io.parse_single_example(serialized, {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    })
    label = _checked_ids(features["image/class/label"] - 1, IMAGENET_CLASSES)
    return features["image/encoded"], tf.one_hot(label, IMAGENET_CLASSES, dtype=tf.float32)


def _parse_imagenet21k(serialized):
    """ImageNet-21k tf.Example: JPEG `image`, `labels` (0-based ids, several per image) -> multi-hot."""
    features = tf.io.parse_single_example(serialized, {
        "image": tf.io.FixedLenFeature([], tf.string),
        "labels": tf.io.FixedLenSequenceFeature([], tf.int64, allow_missing=True),
    })
    ids = _checked_ids(features["labels"], IMAGENET21K_CLASSES)
    # max over the one-hot rows; the extra zero row keeps an image without labels all-zero.
    rows = tf.concat([tf.one_hot(ids, IMAGENET21K_CLASSES, dtype=tf.float32), tf.zeros([1, IMAGENET21K_CLASSES])], 0)
    return features["image"], tf.ensure_shape(tf.reduce_max(rows, axis=0), [IMAGENET21K_CLASSES])


def _checked_ids(ids, num_classes):
    """ids, or an InvalidArgumentError (-> the record is skipped as corrupt) if any is outside [0, num_classes).

    tf.one_hot would silently give an all-zero row. A gather from a zero vector raises
    instead, and — unlike tf.debugging asserts — is not a stateful op, so it does not
    serialise the pipeline when op determinism is enabled.
    """
    return ids + tf.gather(tf.zeros([num_classes], ids.dtype), ids)


def tfrecord_source(cfg, split_name, num_classes, input_context, shuffle_files, seed, deterministic):
    name = cfg["name"]
    expected = IMAGENET_CLASSES if name == "imagenet" else IMAGENET21K_CLASSES
    if num_classes != expected:
        raise ValueError(f"data.num_classes={num_classes} but {name} TFRecords have {expected} classes.")
    files = tfrecord_files(cfg, split_name)
    records = tf.data.Dataset.from_tensor_slices(files)
    element_shard = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) >= pipelines:
            # Each host reads a disjoint set of files (no host reads what it then drops).
            records = records.shard(pipelines, index)
        else:
            logging.warning("%d input pipelines but only %d files: sharding %s records, not files.",
                            pipelines, len(files), name)
            element_shard = (pipelines, index)
    if shuffle_files:
        records = records.shuffle(len(files), seed=seed)
    records = records.interleave(
        lambda path: tf.data.TFRecordDataset(path, buffer_size=8 << 20),
        cycle_length=min(16, len(files)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if element_shard:
        records = records.shard(*element_shard)
    return records, _parse_imagenet if name == "imagenet" else _parse_imagenet21k


# ---------------------------------------------------------------------- TFDS


def _tfds_builder(cfg):
    import tensorflow_datasets as tfds

    tfds_name = cfg.get("tfds_name")
    if not tfds_name:
        raise ValueError("data.name='tfds' needs data.tfds_name (one of " + ", ".join(TFDS_NAMES) + ").")
    return tfds.builder(tfds_name, data_dir=cfg.get("data_dir"))


def tfds_class_names(cfg):
    """The label feature's names of a TFDS dataset (from the builder's info: no data read), or None."""
    try:
        names = list(_tfds_builder(cfg).info.features["label"].names)
    except Exception as error:  # noqa: BLE001 - names are a convenience; never fail a run over them
        logging.info("No class names for TFDS %s: %s", cfg.get("tfds_name"), error)
        return None
    return [str(n) for n in names] or None


def tfds_source(cfg, split_name, num_classes, input_context, shuffle_files, seed):
    import tensorflow_datasets as tfds

    builder = _tfds_builder(cfg)
    read_kwargs = dict(shuffle_seed=seed, try_autocache=False)
    shard_elements = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        try:
            num_files = len(builder.info.splits[split_name].file_instructions)
        except KeyError:  # not generated (tfds.testing.mock_data): no file list to shard
            num_files = 0
        if num_files >= input_context.num_input_pipelines:
            read_kwargs["input_context"] = input_context  # TFDS gives each host its own files
        else:
            shard_elements = (input_context.num_input_pipelines, input_context.input_pipeline_id)
    try:
        records = builder.as_dataset(
            split=split_name,
            shuffle_files=shuffle_files,
            # Keep the encoded bytes: JPEGs are then cropped while decoding, and a shuffle
            # buffer holds kilobytes per image instead of decoded pixels.
            decoders={"image": tfds.decode.SkipDecoding()},
            read_config=tfds.ReadConfig(**read_kwargs),
        )
    except AssertionError as error:
        if "could not find data" not in str(error):
            raise
        pattern = os.path.join(builder.data_dir, f"{builder.name}-*.tfrecord*")
        raise FileNotFoundError(
            f"TFDS dataset {builder.name!r} is not prepared under data_dir={builder.data_dir!r}: expected files "
            f"matching {pattern!r}. Prepare it where there is network (`tfds build {builder.name} "
            f"--data_dir=DIR`) and pass --data_dir=DIR."
        ) from error
    except ValueError as error:
        raise ValueError(f"TFDS {builder.name}: bad split {split_name!r} ({error}).") from error
    label_feature = builder.info.features["label"]
    if label_feature.num_classes != num_classes:
        raise ValueError(
            f"data.num_classes={num_classes} but TFDS {builder.name} has {label_feature.num_classes} classes."
        )
    records = records.map(lambda ex: {"image": ex["image"], "label": ex["label"]})
    if shard_elements:
        records = records.shard(*shard_elements)

    def parse(record):
        return record["image"], tf.one_hot(record["label"], num_classes, dtype=tf.float32)

    return records, parse


# ---------------------------------------------------------------------- image folders

FOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
FOLDER_SPLITS = ("train", "val")
_FOLDER_LAYOUT = "DIR/<class>/*.jpg (one sub-folder per class; also .jpeg .png .bmp .gif), or DIR/train/ + DIR/val/"


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """An image folder, listed once: sorted class names and per-split (paths, label ids)."""

    root: str
    class_names: tuple
    splits: dict  # "train" / "val" -> (tuple of paths, tuple of int label ids)
    layout: str  # "split" (DIR/train + DIR/val) or "stratified" (val_fraction of each class)
    ignored: int  # files without an image extension

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
    """(sorted image files directly in class_dir, number of other files there)."""
    files, other = [], 0
    for entry in tf.io.gfile.listdir(class_dir):
        if entry.endswith("/"):
            continue  # a nested folder (gs:// listing): not an image
        path = os.path.join(class_dir, entry)
        if entry.lower().endswith(FOLDER_EXTENSIONS):
            files.append(path)
        elif not tf.io.gfile.isdir(path):
            other += 1
    return sorted(files), other


def _list_classes(root, what):
    classes = _subfolders(root)
    if len(classes) < 2:
        found = f"only the class folder {classes[0]!r}" if classes else "no class sub-folders"
        raise ConfigError(f"data.data_dir={what!r} has {found}; expected at least 2 classes: {_FOLDER_LAYOUT}.")
    listed, ignored = {}, 0
    for name in classes:
        files, other = _class_files(os.path.join(root, name))
        listed[name], ignored = files, ignored + other
    return classes, listed, ignored


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
        classes, listed, ignored = _list_classes(train_dir, train_dir)
        val_classes, val_listed, val_ignored = _list_classes(val_dir, val_dir)
        if val_classes != classes:
            missing, extra = sorted(set(classes) - set(val_classes)), sorted(set(val_classes) - set(classes))
            raise ConfigError(f"{val_dir!r} must hold the same class folders as {train_dir!r}; missing: "
                                f"{missing[:5]}, extra: {extra[:5]}.")
        empty = [name for name in classes if not val_listed[name]]
        if empty:
            logging.warning("%s: %d class folder(s) without images: %s", val_dir, len(empty), empty[:5])
        ignored += val_ignored
        layout = "split"
    else:
        classes, listed, ignored = _list_classes(root, root)
        layout = "stratified"
    empty = [name for name in classes if not listed[name]]
    if empty:
        where = train_dir if layout == "split" else root
        raise ConfigError(f"class folder {os.path.join(where, empty[0])!r} has no images"
                            f"{f' ({len(empty)} such folders)' if len(empty) > 1 else ''}; expected files ending in "
                            f"{' '.join(FOLDER_EXTENSIONS)} in every class folder.")
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
    if ignored:
        logging.warning("%s: ignored %d file(s) without an image extension (%s).", root, ignored,
                        " ".join(FOLDER_EXTENSIONS))
    splits = {"train": (tuple(train[0]), tuple(train[1])), "val": (tuple(val[0]), tuple(val[1]))}
    logging.info("Image folder %s (%s): %d classes, %d train / %d val images.", root, layout, len(classes),
                 len(train[0]), len(val[0]))
    return FolderListing(root, tuple(classes), splits, layout, ignored)


def list_folder(cfg):
    """The FolderListing of data.data_dir (listed once per process and settings: tf.io.gfile, local or gs://)."""
    root = cfg.get("data_dir")
    if not root:
        raise ConfigError("data.data_dir must be set for data.name='folder': pass --data_dir=DIR with "
                            f"{_FOLDER_LAYOUT}.")
    return _list_folder(str(root).rstrip("/") or "/", float(cfg["val_fraction"]), int(cfg["split_seed"]))


def folder_source(cfg, split_name, num_classes, input_context, shuffle_files, seed):
    if split_name not in FOLDER_SPLITS:
        raise ConfigError(f"data.name='folder' has splits {FOLDER_SPLITS}. Received: {split_name!r}")
    listing = list_folder(cfg)
    if num_classes != listing.num_classes:
        raise ValueError(f"data.num_classes={num_classes} but {listing.root} has {listing.num_classes} class "
                         "folders (resolve the counts with effnet_keras.data.pipeline.resolve_data_counts).")
    paths, labels = listing.splits[split_name]
    if not paths:
        raise ConfigError(f"{listing.root}: no {split_name} images (layout {listing.layout}).")
    records = tf.data.Dataset.from_tensor_slices({"path": list(paths), "label": np.asarray(labels, np.int64)})
    if input_context is not None and input_context.num_input_pipelines > 1:
        records = records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if shuffle_files:  # the whole list: file names are sorted by class, a partial shuffle would not mix them
        records = records.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def parse(record):
        # Read here, inside the pipeline's skipping map: an unreadable file is skipped like a bad image.
        return tf.io.read_file(record["path"]), tf.one_hot(record["label"], num_classes, dtype=tf.float32)

    return records, parse


def folder_record_id(record, *unused):
    """What names a folder record in the skipped-files log: its path."""
    return record["path"]
