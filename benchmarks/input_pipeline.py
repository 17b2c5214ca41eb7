"""Input-pipeline throughput: img/s of the ImageNet training pipeline per CPU core.

Writes JPEG TFRecords in ImageNet's format (`image/encoded`, `image/class/label`)
from scikit-learn's two sample photos (china.jpg, flower.jpg: real photographs,
so JPEG decoding costs what it costs on ImageNet): random crops at ImageNet's
typical 500 x 333..500 px, quality 96 (~ImageNet's ~110 KB per image). Then times `effnet_keras.data.build_dataset`
for the train split — decode + inception crop + resize + flip + RandAugment
(+ Mixup/CutMix if asked) — at --size, with tf.data limited to --threads threads
(`private_threadpool_size`, one intra-op thread) and the whole process pinned to
as many CPUs as the largest --threads (`--pin`, on by default: compiled kernels may
use TensorFlow's own intra-op threads, which would make "per core" two cores).
img/s / threads = img/s per core; the median of --repeats windows of --batches
batches (min and max printed too).

    python benchmarks/input_pipeline.py --threads 1,2 --size 300 --ram 15
    python benchmarks/input_pipeline.py --threads 1 --augment none          # decode + crop + flip only
    python benchmarks/input_pipeline.py --threads 1 --augment randaugment,none   # both, windows interleaved,
                                                                            # and their ratio
    python benchmarks/input_pipeline.py --threads 1 --keras-randaugment     # keras.layers.RandAugment, for comparison

One JSON line per measurement on stdout.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def write_tfrecords(folder, num_images, num_files, seed=0):
    """ImageNet-style TFRecords of photo crops; returns (files, mean JPEG bytes, mean height, mean width)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427 x 640 RGB photos
    rng = np.random.default_rng(seed)
    sizes, heights, widths, paths = [], [], [], []
    per_file = -(-num_images // num_files)
    for file_index in range(num_files):
        path = os.path.join(folder, f"train-{file_index:05d}-of-{num_files:05d}")
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(min(per_file, num_images - file_index * per_file)):
                photo = photos[rng.integers(len(photos))]
                crop_h, crop_w = int(rng.integers(240, 427)), int(rng.integers(320, 640))
                top, left = int(rng.integers(0, 428 - crop_h)), int(rng.integers(0, 641 - crop_w))
                crop = photo[top:top + crop_h, left:left + crop_w]
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                short = int(rng.integers(333, 501))
                out_h, out_w = (short, 500) if crop_w >= crop_h else (500, short)
                image = tf.cast(tf.image.resize(crop, (out_h, out_w), antialias=True), tf.uint8)
                jpeg = tf.io.encode_jpeg(image, quality=96).numpy()
                label = int(rng.integers(1, 1001))
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[jpeg])),
                    "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }))
                writer.write(example.SerializeToString())
                sizes.append(len(jpeg))
                heights.append(out_h)
                widths.append(out_w)
        paths.append(path)
    return paths, float(np.mean(sizes)), float(np.mean(heights)), float(np.mean(widths))


def data_config(data_dir, args, augment):
    from effnet_keras.training import config as config_lib

    data = config_lib.build_config(dataset_cfg="imagenet").data
    return dataclasses.replace(data, data_dir=data_dir, train_split="train-*", augment=augment,
                               randaug_magnitude=args.ram, mixup_alpha=args.mixup, cutmix_alpha=args.cutmix,
                               shuffle_buffer=1024, cache=True, deterministic=args.deterministic)


def keras_randaugment_dataset(cfg, args):
    """Same decode/crop/flip, then the stock keras.layers.RandAugment per image (factor = ram / 30)."""
    import keras

    from effnet_keras.data import crops as preprocess
    from effnet_keras.data import sources

    source = sources.get(cfg)
    records = source.records("train", None, True, 0, False)
    layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=min(args.ram / 30.0, 1.0))

    def prepare(record):
        image, label = source.parse(record)
        image = preprocess.random_crop(image, args.size, cfg.crop_area_min, tf.constant([1, 2], tf.int64))
        return layer(image, training=True), label

    ds = records.cache().repeat().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(args.batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def pin_process(num_cpus):
    """Restrict every thread of this process (and the threads they start) to the first `num_cpus` CPUs."""
    cpus = set(sorted(os.sched_getaffinity(0))[:num_cpus])
    for thread_id in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(thread_id), cpus)
        except OSError:  # a thread that ended meanwhile
            pass
    return sorted(cpus)


def measure(datasets, threads, batches, warmup, repeats):
    """{name: img/s of `repeats` windows of `batches` batches each}.

    Several windows, not one long one: this VM has spells in which the process gets
    about half its CPU (a step that takes 106 ms takes 213 ms), seconds long; the
    median window is the pipeline's speed, min/max show the spread. With several
    datasets their windows take turns, so a slow spell hits them alike and their
    ratio is measured in the same conditions; each window has an iterator of its own
    (after `warmup` batches), since an idle iterator would go on filling its prefetch
    buffers while another is timed.
    """
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    rates = {name: [] for name in datasets}
    for _ in range(repeats):
        for name, dataset in datasets.items():
            iterator = iter(dataset.with_options(options))
            for _ in range(warmup):
                next(iterator)
            start = time.perf_counter()
            images = 0
            for _ in range(batches):
                x, _ = next(iterator)
                images += int(x.shape[0])
            rates[name].append(images / (time.perf_counter() - start))
            del iterator
    return rates


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1", help="comma-separated tf.data thread counts, e.g. 1,2,16")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="timed windows; the median is reported")
    parser.add_argument("--images", type=int, default=512, help="JPEGs to generate (cached in memory as bytes)")
    parser.add_argument("--augment", default="randaugment",
                        help="randaugment, none or ft; comma-separated to time several in one run (with ratios)")
    parser.add_argument("--ram", type=float, default=15.0, help="RandAugment magnitude (automl 0-30 scale)")
    parser.add_argument("--mixup", type=float, default=0.0)
    parser.add_argument("--cutmix", type=float, default=0.0)
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                        help="pin the process to max(--threads) CPUs (Linux)")
    parser.add_argument("--keras-randaugment", action="store_true", help="time keras.layers.RandAugment instead")
    args = parser.parse_args()

    from effnet_keras import data

    augments = args.augment.split(",")
    if any(a not in ("randaugment", "none", "ft") for a in augments):
        parser.error(f"--augment takes randaugment, none or ft (comma-separated); got {args.augment!r}")
    thread_counts = [int(t) for t in args.threads.split(",")]
    pinned = pin_process(max(thread_counts)) if args.pin else None
    with tempfile.TemporaryDirectory() as folder:
        files, jpeg_bytes, height, width = write_tfrecords(folder, args.images, num_files=8)
        for threads in thread_counts:
            datasets = {}
            for augment in augments:
                cfg = data_config(folder, args, augment)
                if args.keras_randaugment:
                    name, dataset = "keras.layers.RandAugment", keras_randaugment_dataset(cfg, args)
                else:
                    name = f"effnet_keras ({augment})"
                    dataset = data.build_dataset(cfg, split="train", image_size=args.size, batch_size=args.batch,
                                                 seed=0 if args.deterministic else None, repeat=True)
                datasets[name] = dataset
            medians = {}
            for name, rates in measure(datasets, threads, args.batches, args.warmup, args.repeats).items():
                rates = sorted(rates)
                medians[name] = rate = rates[len(rates) // 2]
                print(json.dumps({
                    "pipeline": name, "size": args.size, "ram": args.ram, "mixup": args.mixup,
                    "cutmix": args.cutmix, "deterministic": args.deterministic, "threads": threads,
                    "img_per_s": round(rate, 1), "img_per_s_per_core": round(rate / threads, 1),
                    "windows_per_core_min_max": [round(rates[0] / threads, 1), round(rates[-1] / threads, 1)],
                    "windows": len(rates), "jpeg_kb": round(jpeg_bytes / 1024, 1),
                    "jpeg_hw": [round(height), round(width)], "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "pinned_cpus": pinned, "tf": tf.__version__,
                }), flush=True)
            if len(medians) > 1:
                (first, first_rate), *others = medians.items()
                for name, rate in others:
                    print(json.dumps({"ratio": f"{first} / {name}", "threads": threads,
                                      "value": round(first_rate / rate, 3)}), flush=True)


if __name__ == "__main__":
    main()
