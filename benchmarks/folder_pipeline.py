"""Image-folder input pipeline (data.name=folder) vs the TFRecord one, on the same JPEGs: img/s per core.

Writes --images JPEGs (crops of scikit-learn's two sample photos at ImageNet's typical
500 x 333..500 px, quality 96, as benchmarks/input_pipeline.py makes them) once as
DIR/<class>/*.jpg (--classes folders) and once as ImageNet-format TFRecords
(`image/encoded`, 1-based `image/class/label`, 8 files). Then times
`effnet_keras.data.build_dataset(split="train", training=True)` — read + decode + inception
crop + resize + flip + RandAugment — for both, at --size, tf.data limited to --threads threads
(img/s / threads = img/s per core; median of --repeats windows, min/max printed too).
Neither caches: both read their files (from the OS page cache after the first pass).

    python benchmarks/folder_pipeline.py --images 512 --size 224 --threads 1,2

One JSON line per measurement on stdout.
"""

import argparse
import json
import os
import platform
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import input_pipeline  # noqa: E402  (benchmarks/input_pipeline.py: same JPEGs, same timing loop)


def write_both(root, num_images, num_classes, num_files=8):
    """The TFRecords of input_pipeline.write_tfrecords, and the same JPEGs as root/folder/class_XX/*.jpg."""
    record_dir, folder = os.path.join(root, "records"), os.path.join(root, "folder")
    os.makedirs(record_dir)
    files, jpeg_bytes, height, width = input_pipeline.write_tfrecords(record_dir, num_images, num_files)
    for k, serialized in enumerate(tf.data.TFRecordDataset(files).as_numpy_iterator()):
        example = tf.train.Example.FromString(serialized)
        jpeg = example.features.feature["image/encoded"].bytes_list.value[0]
        label = example.features.feature["image/class/label"].int64_list.value[0]
        class_dir = os.path.join(folder, f"class_{label % num_classes:02d}")
        os.makedirs(class_dir, exist_ok=True)
        with open(os.path.join(class_dir, f"{k:06d}.jpg"), "wb") as f:
            f.write(jpeg)
    return record_dir, folder, jpeg_bytes, height, width


def configs(record_dir, folder, args):
    from effnet_keras.training import config as config_lib

    common = dict(augment="randaugment", ram=args.ram, shuffle_buffer=1024, cache=False, deterministic=True)
    records = config_lib.build_config(dataset_cfg="imagenet")["data"]
    records.update(data_dir=record_dir, train_split="train-*", **common)
    images = config_lib.build_config(dataset_cfg="folder", overrides={"data": {"data_dir": folder}})["data"]
    images.update(val_fraction=0.02, random_erasing=0.0, crop_area_min=records["crop_area_min"], **common)
    return {"tfrecord": records, "folder": images}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1", help="comma-separated tf.data thread counts, e.g. 1,2")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per window")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed windows; the median is reported")
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--ram", type=float, default=15.0, help="RandAugment magnitude (automl 0-30 scale)")
    args = parser.parse_args()

    from effnet_keras import data

    with tempfile.TemporaryDirectory() as root:
        record_dir, folder, jpeg_bytes, height, width = write_both(root, args.images, args.classes)
        for threads in (int(t) for t in args.threads.split(",")):
            for pipeline, cfg in configs(record_dir, folder, args).items():
                dataset = data.build_dataset(cfg, split="train", image_size=args.size, batch_size=args.batch,
                                             seed=0, repeat=True, training=True)
                rates = sorted(input_pipeline.measure(dataset, threads, args.batches, args.warmup, args.repeats))
                rate = rates[len(rates) // 2]
                print(json.dumps({
                    "pipeline": pipeline, "size": args.size, "ram": args.ram, "threads": threads,
                    "img_per_s": round(rate, 1), "img_per_s_per_core": round(rate / threads, 1),
                    "windows_per_core_min_max": [round(rates[0] / threads, 1), round(rates[-1] / threads, 1)],
                    "images": args.images, "jpeg_kb": round(jpeg_bytes / 1024, 1),
                    "jpeg_hw": [round(height), round(width)], "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "tf": tf.__version__,
                }), flush=True)


if __name__ == "__main__":
    main()
