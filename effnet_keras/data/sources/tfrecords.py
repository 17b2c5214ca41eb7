"""ImageNet-1k and ImageNet-21k TFRecords in automl's layout (JPEG bytes and labels in tf.Examples).

Each host reads a disjoint set of files (sharding by file), when there are at least as many
files as input pipelines; labels are checked against the class count, so a record with a label
out of range is skipped as corrupt instead of becoming an all-zero row.
"""

import os
import re

import tensorflow as tf
from absl import logging

from effnet_keras.data.sources.base import DataSource
from effnet_keras.labels import IMAGENET1K_CLASSES
from effnet_keras.labels import IMAGENET21K_CLASSES

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

def tfrecord_files(data, split_name):
    """Sorted TFRecord files of a named split (TFRECORD_SPLITS) or an explicit '<glob>[a:b]'."""
    name, data_dir = data.name, data.data_dir
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
    label = _checked_ids(features["image/class/label"] - 1, IMAGENET1K_CLASSES)
    return features["image/encoded"], tf.one_hot(label, IMAGENET1K_CLASSES, dtype=tf.float32)


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


class TFRecordSource(DataSource):
    def info(self):
        return self._info(self.data.num_train_examples, self.data.num_eval_examples)

    def records(self, split, input_context, shuffle, seed, deterministic):
        name, num_classes = self.data.name, self.data.num_classes
        expected = IMAGENET1K_CLASSES if name == "imagenet" else IMAGENET21K_CLASSES
        if num_classes != expected:
            raise ValueError(f"data.num_classes={num_classes} but {name} TFRecords have {expected} classes.")
        files = tfrecord_files(self.data, self.split_name(split))
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
        if shuffle:
            records = records.shuffle(len(files), seed=seed)
        records = records.interleave(
            lambda path: tf.data.TFRecordDataset(path, buffer_size=8 << 20),
            cycle_length=min(16, len(files)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=deterministic,
        )
        if element_shard:
            records = records.shard(*element_shard)
        return records

    def parse(self, record):
        return _parse_imagenet(record) if self.data.name == "imagenet" else _parse_imagenet21k(record)
