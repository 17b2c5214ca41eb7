"""Every dataset config builds: digits, ImageNet / 21k TFRecords written here, TFDS datasets on mock data."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from effnet_keras import data as data_lib
from effnet_keras.data.sources import DatasetInfo
from effnet_keras.training import config as config_lib
from effnet_keras.training.progressive import ProgressiveSchedule
from tests.data.conftest import data_config, grey_level


def _collect(dataset):
    images, labels = [], []
    for x, y in dataset:
        images.append(x.numpy())
        labels.append(y.numpy())
    return np.concatenate(images), np.concatenate(labels)


def _check_batch(images, labels, batch, size, classes):
    assert images.shape == (batch, size, size, 3) and images.dtype == np.float32
    assert labels.shape == (batch, classes) and labels.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert images.max() > 1.5  # [0, 255], not [0, 1]


# ---------------------------------------------------------------------- digits


def test_digits_train_batches_static_shape_onehot_and_range():
    cfg = data_config("digits")
    stage = ProgressiveSchedule(2, 4, (32, 48), randaug_magnitude=(2, 6)).stages[0]
    ds = data_lib.build_dataset(cfg, split="train", image_size=32, batch_size=16, stage=stage, seed=3)
    assert ds.element_spec[0].shape.as_list() == [16, 32, 32, 3]  # static batch (drop_remainder)
    assert ds.element_spec[1].shape.as_list() == [16, 10]
    images, labels = next(iter(ds))
    _check_batch(images.numpy(), labels.numpy(), 16, 32, 10)
    np.testing.assert_array_equal(labels.numpy().sum(1), 1.0)
    assert set(np.unique(labels.numpy())) <= {0.0, 1.0}


def test_digits_info_and_eval_split_is_fixed_and_complete():
    cfg = data_config("digits")
    info = data_lib.dataset_info(cfg)
    assert info == DatasetInfo(name="digits", num_classes=10, num_train_examples=1437, num_eval_examples=360,
                               multilabel=False, class_names=tuple(str(k) for k in range(10)))
    ds = data_lib.build_dataset(cfg, split="eval", image_size=24, batch_size=100)
    images, labels = _collect(ds)
    assert images.shape == (360, 24, 24, 3)  # eval keeps the last partial batch, no repeat
    again, _ = _collect(data_lib.build_dataset(cfg, split="eval", image_size=24, batch_size=100))
    np.testing.assert_array_equal(images, again)
    # stratified split: every class present, about 36 test images each
    assert np.all(np.bincount(labels.argmax(1), minlength=10) >= 35)


def test_digits_seeded_training_is_reproducible_and_seed_matters():
    cfg = data_config("digits", mixup_alpha=0.2, cutmix_alpha=0.5)

    def first(seed):
        ds = data_lib.build_dataset(cfg, split="train", image_size=32, batch_size=8, seed=seed)
        x, y = next(iter(ds))
        return x.numpy(), y.numpy()

    a, b, c = first(7), first(7), first(8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_digits_two_input_contexts_are_disjoint_and_cover_the_split():
    cfg = data_config("digits")
    shards = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        ds = data_lib.build_dataset(cfg, split="eval", image_size=8, batch_size=64, input_context=context)
        images, _ = _collect(ds)
        shards.append({img.tobytes() for img in images})
    assert len(shards[0]) + len(shards[1]) == 360
    assert not shards[0] & shards[1]


def test_bad_arguments_are_value_errors_naming_the_value():
    cfg = data_config("digits")
    with pytest.raises(ValueError, match="split must be 'train' or 'eval'.*'validation'"):
        data_lib.build_dataset(cfg, split="validation", image_size=32, batch_size=8)
    with pytest.raises(ValueError, match="data.name must be one of .*'mnist'"):
        data_lib.build_dataset({**cfg, "name": "mnist"}, split="train", image_size=32, batch_size=8)
    with pytest.raises(ValueError, match="data.augment must be one of .*'autoaug'"):
        data_lib.build_dataset({**cfg, "augment": "autoaug"}, split="train", image_size=32, batch_size=8)
    with pytest.raises(ValueError, match="0-30 scale.*45"):
        data_lib.build_dataset({**cfg, "randaug_magnitude": 45}, split="train", image_size=32, batch_size=8)
    with pytest.raises(ValueError, match="batch_size must be a positive integer. Received: 0"):
        data_lib.build_dataset(cfg, split="train", image_size=32, batch_size=0)


# ---------------------------------------------------------------------- ImageNet TFRecords


def test_imagenet_tfrecords_train_skips_corrupt_records(imagenet_dir, capfd):
    cfg = data_config("imagenet", data_dir=imagenet_dir, shuffle_buffer=8, augment="none")
    # train = shards 20.. : 4 good records + 3 corrupt ones in shard 21
    ds = data_lib.build_dataset(cfg, split="train", image_size=24, batch_size=4, seed=0, repeat=False)
    images, labels = _collect(ds)
    _check_batch(images, labels, 4, 24, 1000)
    np.testing.assert_array_equal(labels.sum(1), 1.0)
    # label k (1-based) -> class k - 1; records 40..43 carry labels 41..44
    assert sorted(labels.argmax(1).tolist()) == [40, 41, 42, 43]
    captured = capfd.readouterr()
    assert "skipped" in captured.err and "total so far: 3" in captured.err


def test_imagenet_eval_labels_and_centre_crop_values(imagenet_dir):
    cfg = data_config("imagenet", data_dir=imagenet_dir)
    images, labels = _collect(data_lib.build_dataset(cfg, split="eval", image_size=16, batch_size=4))
    assert images.shape == (6, 16, 16, 3)
    # record k: label 1000 - k (1-based) -> class 999 - k; its flat grey JPEG stays flat through
    # crop + resize, so the grey level identifies the record (files are interleaved: any order).
    k = 999 - labels.argmax(1)
    assert sorted(k.tolist()) == list(range(6))
    np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), [grey_level(i) for i in k], atol=2.0)
    assert np.ptp(images, axis=(1, 2, 3)).max() < 6.0


def test_imagenet_splits_do_not_overlap_and_shards_are_disjoint(imagenet_dir):
    cfg = data_config("imagenet", data_dir=imagenet_dir, augment="none")

    def levels(split_name, context=None):
        ds = data_lib.build_dataset({**cfg, "eval_split": split_name}, split="eval", image_size=8, batch_size=8,
                                    input_context=context)
        images, _ = _collect(ds)
        return set(np.round((images.mean(axis=(1, 2, 3)) - 8) / 5.0).astype(int).tolist())

    minival, train = levels("minival"), levels("train")
    assert len(minival) == 40 and len(train) == 4 and not minival & train
    halves = [levels("minival", tf.distribute.InputContext(2, k, 2)) for k in range(2)]
    assert len(halves[0]) == len(halves[1]) == 20
    assert halves[0] | halves[1] == minival and not halves[0] & halves[1]


def test_missing_or_empty_data_dir_names_path_and_pattern(tmp_path):
    cfg = data_config("imagenet")
    with pytest.raises(FileNotFoundError, match=r"data_dir is not set.*train-\*"):
        data_lib.build_dataset(cfg, split="train", image_size=32, batch_size=8)
    missing = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist.*train-"):
        data_lib.build_dataset({**cfg, "data_dir": missing}, split="train", image_size=32, batch_size=8)
    with pytest.raises(FileNotFoundError, match=r"No TFRecords .*validation-\*"):
        data_lib.build_dataset({**cfg, "data_dir": str(tmp_path)}, split="eval", image_size=32, batch_size=8)
    with pytest.raises(ValueError, match="Unknown imagenet split 'val'"):
        data_lib.build_dataset({**cfg, "data_dir": str(tmp_path), "eval_split": "val"}, split="eval",
                               image_size=32, batch_size=8)


def test_imagenet21k_multi_hot_labels(imagenet21k_dir):
    cfg = data_config("imagenet21k", data_dir=imagenet21k_dir)
    assert data_lib.dataset_info(cfg).multilabel is True
    ds = data_lib.build_dataset(cfg, split="train", image_size=16, batch_size=2, seed=1)
    images, labels = next(iter(ds))
    _check_batch(images.numpy(), labels.numpy(), 2, 16, 21843)
    for row in labels.numpy():  # the only train record, repeated
        assert np.flatnonzero(row).tolist() == [3, 17, 21842] and row.sum() == 3.0
    eval_images, eval_labels = _collect(data_lib.build_dataset(cfg, split="eval", image_size=16, batch_size=5))
    assert eval_labels.shape == (16, 21843)
    assert sorted(eval_labels.argmax(1).tolist()) == list(range(16)) and np.all(eval_labels.sum(1) == 1)


# ---------------------------------------------------------------------- TFDS on mock data

# config -> (classes, train images, eval images) of its (non-overlapping) splits
TFDS_CONFIGS = {
    "cifar10": (10, 50000, 10000), "cifar100": (100, 50000, 10000), "cifar10ft": (10, 50000, 10000),
    "cifar100ft": (100, 50000, 10000), "flowersft": (102, 2040, 6149), "carsft": (196, 8144, 8041),
    "tfflowersft": (5, 2569, 1101), "imagenet2012": (1000, 1281167, 50000),
}


def _cars196_examples(self, split, decoders=None, read_config=None, **kwargs):
    """tfds' random cars196 examples fail (their random bbox has min > max): PNG images + labels instead."""
    rng = np.random.default_rng(len(split))
    images = [tf.io.encode_png(rng.integers(0, 256, (20 + k, 30, 3), dtype=np.uint8)).numpy() for k in range(8)]
    return tf.data.Dataset.from_tensor_slices({"image": images, "label": rng.integers(0, 196, 8)})


@pytest.mark.parametrize("name", sorted(TFDS_CONFIGS))
def test_tfds_configs_build_on_mock_data(name):
    cfg = data_config(name)
    info = data_lib.dataset_info(cfg)
    assert (info.num_classes, info.num_train_examples, info.num_eval_examples) == TFDS_CONFIGS[name]
    fake = dict(as_dataset_fn=_cars196_examples) if cfg["tfds_name"] == "cars196" else {}
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE, **fake):
        train = data_lib.build_dataset(cfg, split="train", image_size=24, batch_size=4, seed=0)
        images, labels = next(iter(train))
        _check_batch(images.numpy(), labels.numpy(), 4, 24, info.num_classes)
        np.testing.assert_allclose(labels.numpy().sum(1), 1.0, rtol=1e-6)
        eval_images, eval_labels = _collect(data_lib.build_dataset(cfg, split="eval", image_size=24, batch_size=4))
        assert eval_images.shape[1:] == (24, 24, 3) and len(eval_images) > 0
        assert set(np.unique(eval_labels)) <= {0.0, 1.0}


def test_tfds_two_input_contexts_are_disjoint():
    cfg = data_config("cifar10")
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        shards = []
        for k in range(2):
            ds = data_lib.build_dataset(cfg, split="eval", image_size=8, batch_size=12,
                                        input_context=tf.distribute.InputContext(2, k, 2))
            images, _ = _collect(ds)
            shards.append({img.tobytes() for img in images})
    assert len(shards[0]) == len(shards[1]) == 6 and not shards[0] & shards[1]


def test_tfds_not_prepared_names_dir_and_pattern(tmp_path):
    cfg = data_config("cifar10", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*cifar10-\\*.tfrecord"):
        data_lib.build_dataset(cfg, split="train", image_size=32, batch_size=8)


def test_every_dataset_config_merges_and_validates():
    names = config_lib.available_datasets()
    expected = {"digits", "imagenet", "imagenet21k", "imagenet2012", "cifar10", "cifar100", "cifar10ft",
                "cifar100ft", "flowersft", "carsft", "tfflowersft"}
    assert expected <= set(names)
    for name in names:
        if name == "folder":  # needs data.data_dir; counted from the folder (tests/data/test_folder_dataset.py)
            with pytest.raises(config_lib.ConfigError, match="data.data_dir must be a folder"):
                data_config(name)
            continue
        cfg = data_config(name)
        info = data_lib.dataset_info(cfg)
        assert info.num_classes == cfg["num_classes"]
    assert data_config("cifar10ft")["augment"] == "ft" and data_config("imagenet21k")["multilabel"]
    ft = config_lib.build_config(dataset_cfg="flowersft")
    assert ft.train.lr_sched == "constant" and ft.model.dropout_rate == pytest.approx(1e-6)
