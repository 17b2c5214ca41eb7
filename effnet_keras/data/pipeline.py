"""build_dataset: source -> shard -> shuffle -> decode/crop/flip -> RandAugment -> batch -> erasing -> Mixup/CutMix.

Images come out float32 [B, S, S, 3] in [0, 255] (the models normalise inside);
labels float32 [B, num_classes]: one-hot, multi-hot for ImageNet-21k, soft after
Mixup/CutMix. Training batches have a static batch dimension (drop_remainder), as
TPUs need.

Randomness is stateless: every image and every batch carries its own seed from a
`tf.data.Dataset.random(seed)` stream zipped in before the parallel maps, so a
seeded dataset yields the same batches however tf.data schedules its threads,
and no stateful op forces tf.data to run serially under op determinism.
"""

import functools
import sys

import tensorflow as tf
from absl import logging

from effnet_keras.data import augment
from effnet_keras.data import preprocess
from effnet_keras.data import sources

SOURCES = ("digits", "imagenet", "imagenet21k", "tfds")
AUGMENTS = ("randaugment", "ft", "none")
REQUIRED_KEYS = (
    "name", "tfds_name", "data_dir", "train_split", "eval_split", "num_classes", "num_train_examples",
    "num_eval_examples", "multilabel", "crop_area_min", "random_flip", "center_crop", "augment", "ram",
    "ra_num_layers", "mixup_alpha", "cutmix_alpha", "random_erasing", "erasing_scale", "shuffle_buffer", "cache",
    "deterministic", "digits_image_size", "test_fraction", "split_seed",
)


def validate_data_config(cfg):
    """Check the `data:` section; errors name the key, the value and what is allowed."""
    missing = [key for key in REQUIRED_KEYS if key not in cfg]
    if missing:
        raise ValueError(f"data config is missing keys {missing} (effnet_keras/configs/base.yaml lists every data key).")
    if cfg["name"] not in SOURCES:
        raise ValueError(f"data.name must be one of {SOURCES}. Received: {cfg['name']!r}")
    if cfg["augment"] not in AUGMENTS:
        raise ValueError(f"data.augment must be one of {AUGMENTS}. Received: {cfg['augment']!r}")
    if cfg["name"] == "tfds" and cfg["tfds_name"] not in sources.TFDS_NAMES:
        raise ValueError(f"data.tfds_name must be one of {sources.TFDS_NAMES} for data.name='tfds'. "
                         f"Received: {cfg['tfds_name']!r}")
    if cfg["name"] == "imagenet21k" and not cfg["multilabel"]:
        raise ValueError("data.name='imagenet21k' has multi-hot labels: set data.multilabel=true.")
    for key in ("num_classes", "shuffle_buffer"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ValueError(f"data.{key} must be a positive integer. Received: {cfg[key]!r}")
    if not 0.0 <= float(cfg["ram"]) <= 30.0:
        raise ValueError(f"data.ram is a RandAugment magnitude on automl's 0-30 scale. Received: {cfg['ram']!r}")
    if not 0.0 <= float(cfg["cutmix_alpha"]) <= 1.0:
        raise ValueError(f"data.cutmix_alpha must be in [0, 1]. Received: {cfg['cutmix_alpha']!r}")
    if float(cfg["mixup_alpha"]) < 0:
        raise ValueError(f"data.mixup_alpha must be >= 0. Received: {cfg['mixup_alpha']!r}")
    return cfg


def dataset_info(cfg):
    """-> dict(name, num_classes, num_train_examples, num_eval_examples, multilabel). Reads no data
    (digits: the split is computed, as its size depends on data.test_fraction)."""
    validate_data_config(cfg)
    num_train, num_eval = int(cfg["num_train_examples"]), int(cfg["num_eval_examples"])
    if cfg["name"] == "digits":
        counted = sources.digits_counts(cfg)
        if counted != (num_train, num_eval):
            logging.warning("digits split has %d/%d train/test images (test_fraction=%s); data.num_*_examples "
                            "said %d/%d: using the real counts.", *counted, cfg["test_fraction"], num_train, num_eval)
        num_train, num_eval = counted
    name = cfg.get("config_name") or (cfg["tfds_name"] if cfg["name"] == "tfds" else cfg["name"])
    return {
        "name": name,
        "num_classes": int(cfg["num_classes"]),
        "num_train_examples": num_train,
        "num_eval_examples": num_eval,
        "multilabel": bool(cfg["multilabel"]),
    }


def _source(cfg, split_name, input_context, shuffle_files, seed, deterministic):
    num_classes = int(cfg["num_classes"])
    if cfg["name"] == "digits":
        return sources.digits_source(cfg, split_name, num_classes, input_context)
    if cfg["name"] == "tfds":
        return sources.tfds_source(cfg, split_name, num_classes, input_context, shuffle_files, seed)
    return sources.tfrecord_source(cfg, split_name, num_classes, input_context, shuffle_files, seed, deterministic)


def _random_seeds(seed):
    """An endless stream of int64 [2] seeds; a repeated pass draws new ones (still reproducible from `seed`)."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)


def _op_determinism_enabled():
    # TF has a setter (tf.config.experimental.enable_op_determinism) but no public getter.
    from tensorflow.python.framework import config as tf_config

    return bool(getattr(tf_config, "is_op_determinism_enabled", lambda: False)())


def _map_skipping_corrupt(records, fn, what, placeholder, deterministic):
    """records.map(fn), skipping the records on which fn raises (bad JPEG, bad tf.Example, label out of range).

    Each record is decoded in a one-element dataset with its own ignore_errors, so only
    errors of that record's decoding are skipped: an error upstream (a source that
    keeps failing) still surfaces instead of being retried forever, as a pipeline-wide
    ignore_errors would. A skipped record yields `placeholder` flagged False; the flags
    are counted (a running total is logged at each skip, next to tf.data's own warning
    with the error) and dropped. The count uses tf.print, a stateful op, so it is left
    out when op determinism is on (it would make tf.data run the whole pipeline serially).
    """
    flagged_placeholder = tf.data.Dataset.from_tensors((*placeholder, False))

    def decode_one(*element):
        decoded = tf.data.Dataset.from_tensors(element).map(lambda *e: (*fn(*e), True))
        return decoded.ignore_errors(log_warning=True).concatenate(flagged_placeholder).take(1)

    flagged = records.interleave(decode_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if not _op_determinism_enabled():

        def count(total, element):
            ok = element[-1]
            total = total + tf.cast(tf.logical_not(ok), tf.int64)
            if not ok:
                tf.print("effnet_keras.data: skipped a corrupt record of", what, "- total so far:", total,
                         output_stream=sys.stderr)
            return total, element

        flagged = flagged.scan(tf.constant(0, tf.int64), count)
    return flagged.filter(_flag).map(_without_flag)


def _flag(*element):
    return element[-1]


def _without_flag(*element):
    return element[:-1]


@functools.lru_cache(maxsize=32)
def _augment_function(image_size, flip, magnitude, num_layers):
    """Flip + RandAugment of one image as a tf.function, shared by every dataset with these settings.

    The trainer builds a dataset per epoch; tracing RandAugment's 2 x 16 branches and
    instantiating them cost ~1.7 s per build (measured at 128 px), a fixed cost per
    epoch. Built once here, each epoch's map calls the same traced function.
    """
    randaugment = augment.RandAugment(magnitude, num_layers) if magnitude > 0 and num_layers > 0 else None

    @tf.function(input_signature=[tf.TensorSpec([image_size, image_size, 3], tf.float32),
                                  tf.TensorSpec([2], tf.int64)], autograph=False)
    def augment_image(image, image_seed):
        if flip:
            image = preprocess.random_flip(image, augment.fold(image_seed, 1))
        if randaugment is not None:
            image = randaugment(image, augment.fold(image_seed, 2))
        return image

    return augment_image


def build_dataset(data_cfg, *, split, image_size, batch_size, stage=None, input_context=None, seed=None, repeat=None,
                  training=None):
    """tf.data.Dataset of (images float32 [B, S, S, 3] in [0, 255], labels float32 [B, num_classes]).

    split: "train" (data.train_split) or "eval" (data.eval_split). batch_size is per
    replica when `input_context` is given (this pipeline's share), else global.
    stage: a schedules.Stage whose RandAugment magnitude and Mixup/CutMix alphas
    replace data.ram / mixup_alpha / cutmix_alpha. training (default: split ==
    "train") selects random crop + augmentation + drop_remainder; repeat defaults to
    training. With data.deterministic (the default) a seed fixes every batch (seed None
    means 0); without it tf.data may reorder images for speed.
    """
    cfg = validate_data_config(data_cfg)
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval'. Received: {split!r}")
    for key, value in (("image_size", image_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer. Received: {value!r}")
    if stage is not None and stage.image_size != image_size:
        raise ValueError(f"image_size={image_size} differs from stage {stage.index}'s image_size={stage.image_size}.")
    training = split == "train" if training is None else bool(training)
    repeat = training if repeat is None else bool(repeat)
    # data.deterministic: same seed, same batches (the trainer's exact resume relies on it). Off,
    # tf.data may hand out whichever image is ready first (draws stay seeded, order does not).
    deterministic = bool(cfg["deterministic"])
    if seed is None and deterministic:
        seed = 0
    pipeline_id = input_context.input_pipeline_id if input_context is not None else 0

    def sub_seed(purpose):
        # distinct, reproducible seeds per purpose and per input pipeline (hosts must not draw alike)
        return None if seed is None else (int(seed) * 1_000_003 + pipeline_id * 7_919 + purpose) % (2**31 - 1)

    split_name = cfg["train_split"] if split == "train" else cfg["eval_split"]
    records, parse = _source(cfg, split_name, input_context, shuffle_files=training, seed=sub_seed(1),
                             deterministic=deterministic)
    if cfg["cache"] and repeat:
        records = records.cache()  # encoded records, reused by every epoch of this repeated dataset
    if training:
        records = records.shuffle(int(cfg["shuffle_buffer"]), seed=sub_seed(2), reshuffle_each_iteration=True)

    magnitude = stage.randaug_magnitude if stage is not None else cfg["ram"]
    mixup_alpha = stage.mixup_alpha if stage is not None else cfg["mixup_alpha"]
    cutmix_alpha = stage.cutmix_alpha if stage is not None else cfg["cutmix_alpha"]
    augment_mode = cfg["augment"]
    use_randaugment = training and augment_mode == "randaugment" and float(magnitude) > 0 and int(cfg["ra_num_layers"]) > 0
    flip = bool(cfg["random_flip"])
    augment_image = _augment_function(image_size, flip, float(magnitude) if use_randaugment else 0.0,
                                      int(cfg["ra_num_layers"]) if use_randaugment else 0)
    crop_area_min, center = float(cfg["crop_area_min"]), bool(cfg["center_crop"])

    def decode(record, image_seed=None):
        # Everything that can fail on a corrupt record, and nothing more: this part runs in a
        # one-element dataset per record (see _map_skipping_corrupt), which costs per op.
        image, label = parse(record)
        if not training:
            return preprocess.center_crop(image, image_size, crop=center), label
        if augment_mode == "ft":
            image = preprocess.full_resize(image, image_size)
        else:
            image = preprocess.random_crop(image, image_size, crop_area_min, augment.fold(image_seed, 0))
        return image, label, image_seed

    if training:
        image_seeds = _random_seeds(sub_seed(3))
        records = tf.data.Dataset.zip((records, image_seeds))
    else:
        records = records.map(lambda record: (record,))
    what = f"{cfg['name']}:{split_name}" if cfg["name"] != "tfds" else f"tfds {cfg['tfds_name']}:{split_name}"
    if cfg["name"] == "digits":  # in-memory arrays: nothing to decode, nothing can be corrupt
        dataset = records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    else:
        placeholder = (tf.zeros([image_size, image_size, 3]), tf.zeros([int(cfg["num_classes"])]))
        if training:
            placeholder += (tf.zeros([2], tf.int64),)
        dataset = _map_skipping_corrupt(records, decode, what, placeholder, deterministic)
    if training:
        dataset = dataset.map(lambda image, label, image_seed: (augment_image(image, image_seed), label),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if repeat:
        # After the skipping map, not before: if every record fails, an epoch is empty and
        # repeat() stops (Keras then reports the input ran out), instead of retrying forever.
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=training)

    erasing = None
    if training and float(cfg["random_erasing"]) > 0:
        erasing = augment.RandomErasing(float(cfg["random_erasing"]), cfg["erasing_scale"])
    mixer = augment.BatchMixer(mixup_alpha, cutmix_alpha) if training else None
    if erasing is not None or (mixer is not None and mixer.active):
        if mixer.active and batch_size < 2:
            raise ValueError(f"Mixup/CutMix mix images within a batch; batch_size={batch_size} is too small.")

        def mix(batch, batch_seed):
            images, labels = batch
            if erasing is not None:
                images = erasing(images, augment.fold(batch_seed, 0))
            if mixer.active:
                images, labels = mixer(images, labels, augment.fold(batch_seed, 1))
            return images, labels

        batch_seeds = _random_seeds(sub_seed(4))
        dataset = tf.data.Dataset.zip((dataset, batch_seeds)).map(
            mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    options = tf.data.Options()
    options.deterministic = deterministic
    # automl's setting: many small per-image ops run best one thread each, images in parallel.
    options.threading.max_intra_op_parallelism = 1
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)
