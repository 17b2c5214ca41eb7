"""Fixtures: dataset configs as the trainer merges them, and TFRecord shards written per test session."""

import os

import numpy as np
import pytest
import tensorflow as tf

from effnet_keras.training import config as config_lib


def data_config(name, **overrides):
    """The `data:` section of base.yaml merged with effnet_keras/configs/datasets/<name>.yaml (the trainer's merge)."""
    cfg = config_lib.build_config(dataset_cfg=name).data.to_dict()
    cfg.update(overrides)
    return cfg


def flat_jpeg(value, height=40, width=48):
    """A JPEG of one grey level: survives crops and resizes, so the level identifies the record."""
    image = np.full((height, width, 3), value, np.uint8)
    return tf.io.encode_jpeg(image, quality=95).numpy()


def _example(features):
    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(np.atleast_1d(value))))

    return tf.train.Example(features=tf.train.Features(feature={k: feature(v) for k, v in features.items()}))


def write_records(path, examples):
    with tf.io.TFRecordWriter(path) as writer:
        for features in examples:
            writer.write(features if isinstance(features, bytes) else _example(features).SerializeToString())


def grey_level(record_index):
    return 8 + 5 * record_index  # 8 .. 223 for the 44 records written here, far apart for JPEG error


@pytest.fixture(scope="session")
def imagenet_dir(tmp_path_factory):
    """22 train shards (20 minival + 2 train) and 2 validation shards, 2 records each.

    Train shard 21 holds the corrupt records: a non-JPEG payload and a label 0
    (labels are 1-based, so 0 is out of range); both must be skipped, not fatal.
    """
    root = tmp_path_factory.mktemp("imagenet")
    index = 0
    for shard in range(22):
        examples = []
        for _ in range(2):
            examples.append({"image/encoded": flat_jpeg(grey_level(index)), "image/class/label": index % 1000 + 1})
            index += 1
        if shard == 21:
            examples.append({"image/encoded": b"this is not a jpeg", "image/class/label": 5})
            examples.append({"image/encoded": flat_jpeg(100), "image/class/label": 0})
            examples.append(b"\x00garbage, not a tf.Example")
        write_records(os.path.join(root, f"train-{shard:05d}-of-00022"), examples)
    for shard in range(2):
        examples = [{"image/encoded": flat_jpeg(grey_level(k)), "image/class/label": 1000 - k}
                    for k in range(shard * 3, shard * 3 + 3)]
        write_records(os.path.join(root, f"validation-{shard:05d}-of-00002"), examples)
    return str(root)


@pytest.fixture(scope="session")
def imagenet21k_dir(tmp_path_factory):
    """21 shards of ImageNet-21k-style records (`image`, `labels`): 0-15 eval, 16-19 minival, 20 train."""
    root = tmp_path_factory.mktemp("imagenet21k")
    for shard in range(21):
        labels = [3, 17, 21842] if shard == 20 else [shard]
        write_records(os.path.join(root, f"imagenet21k-{shard:05d}-of-00021"),
                      [{"image": flat_jpeg(grey_level(shard)), "labels": labels, "id": b"n%05d" % shard}])
    return str(root)
