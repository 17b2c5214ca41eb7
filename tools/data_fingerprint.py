"""The sha256 of the batches `build_dataset` produces in 8 cases: the check that a restructuring of
the data layer changed nothing.

Run it before and after a change to effnet_keras/data (same machine, same TensorFlow): every
line must be equal, or the change altered what the pipeline yields. A deliberate change (a
fused augmentation op) changes only the lines whose case uses it, and comes with a test that
the fused op equals what it replaced.

    python tools/data_fingerprint.py            # one line per case: name, sha256 of its batches

The cases cover every source (digits, ImageNet TFRecords, an image folder, TFDS mock data),
train and eval, RandAugment, Mixup + CutMix, random erasing, the fine-tune (`ft`) augmentation,
and a sharded input pipeline. The input data is written here from fixed seeds (real photos from
scikit-learn for the JPEGs).
"""

import hashlib
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _photos():
    from sklearn.datasets import load_sample_images

    return load_sample_images().images  # two 427 x 640 RGB photos


def _crops(count, seed):
    photos, rng = _photos(), np.random.default_rng(seed)
    out = []
    for _ in range(count):
        photo = photos[rng.integers(len(photos))]
        h, w = int(rng.integers(120, 300)), int(rng.integers(120, 400))
        top, left = int(rng.integers(0, 427 - h)), int(rng.integers(0, 640 - w))
        out.append(np.ascontiguousarray(photo[top:top + h, left:left + w]))
    return out


def write_imagenet(root):
    os.makedirs(root)
    for shard in range(22):
        path = os.path.join(root, f"train-{shard:05d}-of-00022")
        with tf.io.TFRecordWriter(path) as writer:
            for k, crop in enumerate(_crops(3, seed=shard)):
                jpeg = tf.io.encode_jpeg(crop, quality=90).numpy()
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
                    "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[shard * 3 + k + 1])),
                }))
                writer.write(example.SerializeToString())
    return root


def write_folder(root):
    for c, name in enumerate(("cat", "dog", "fox")):
        os.makedirs(os.path.join(root, name))
        for k, crop in enumerate(_crops(6, seed=100 + c)):
            ext = "png" if k % 3 == 0 else "jpg"
            data = tf.io.encode_png(crop) if ext == "png" else tf.io.encode_jpeg(crop, quality=90)
            tf.io.write_file(os.path.join(root, name, f"{k}.{ext}"), data)
    return root


def cases(tmp):
    from effnet_keras.training import config as config_lib

    try:
        from effnet_keras.training.progressive import ProgressiveSchedule
    except ImportError:  # before training/schedules.py was renamed: baselines are made from older commits
        from effnet_keras.training.schedules import ProgressiveSchedule

    def data(name, **overrides):
        typed = {k: overrides.pop(k) for k in ("data_dir",) if k in overrides}
        config = config_lib.build_config(dataset_cfg=name, overrides={"data": typed} if typed else None)
        cfg = config["data"] if isinstance(config, dict) else config.data.to_dict()  # older releases: a dict
        if "ram" in cfg:  # older releases' name of data.randaug_magnitude
            overrides["ram"] = overrides.pop("randaug_magnitude", cfg["ram"])
        cfg.update(overrides)
        return cfg

    imagenet = write_imagenet(os.path.join(tmp, "imagenet"))
    folder = write_folder(os.path.join(tmp, "folder"))
    stage = ProgressiveSchedule(2, 4, (40, 48), randaug_magnitude=(4, 15), mixup_alpha=(0.0, 0.2),
                                cutmix_alpha=(0.0, 0.5)).stages[1]
    sharded = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1, num_replicas_in_sync=2)
    return [
        ("digits-train-randaugment", data("digits"), dict(split="train", image_size=48, batch_size=16, seed=3,
                                                           stage=stage)),
        ("digits-eval", data("digits"), dict(split="eval", image_size=40, batch_size=32)),
        ("imagenet-train-ra15", data("imagenet", data_dir=imagenet, shuffle_buffer=64, randaug_magnitude=15.0),
         dict(split="train", image_size=64, batch_size=8, seed=5)),
        ("imagenet-train-mix-erasing", data("imagenet", data_dir=imagenet, shuffle_buffer=64, random_erasing=0.5,
                                            mixup_alpha=0.2, cutmix_alpha=0.5),
         dict(split="train", image_size=56, batch_size=8, seed=6)),
        ("imagenet-train-sharded", data("imagenet", data_dir=imagenet, shuffle_buffer=16),
         dict(split="train", image_size=48, batch_size=4, seed=7, input_context=sharded)),
        ("imagenet-minival-eval", data("imagenet", data_dir=imagenet, eval_split="minival"),
         dict(split="eval", image_size=64, batch_size=16)),
        ("folder-train-ft", data("folder", data_dir=folder, augment="ft", num_classes=3),
         dict(split="train", image_size=64, batch_size=4, seed=8)),
        ("folder-eval", data("folder", data_dir=folder, num_classes=3), dict(split="eval", image_size=64,
                                                                               batch_size=4)),
    ]


def fingerprint(dataset, batches):
    digest = hashlib.sha256()
    for k, (images, labels) in enumerate(dataset):
        if k == batches:
            break
        digest.update(np.ascontiguousarray(images.numpy()).tobytes())
        digest.update(np.ascontiguousarray(labels.numpy()).tobytes())
    return digest.hexdigest()


def main():
    from effnet_keras import data as data_lib

    with tempfile.TemporaryDirectory(prefix="effnet_fingerprint_") as tmp:
        for name, cfg, kwargs in cases(tmp):
            dataset = data_lib.build_dataset(cfg, **kwargs)
            print(f"{name:30s} {fingerprint(dataset, 6)}", flush=True)


if __name__ == "__main__":
    main()
