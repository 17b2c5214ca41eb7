"""build_dataset: source -> shard -> shuffle -> decode/crop/flip -> RandAugment -> batch -> erasing -> Mixup/CutMix.

The source is `sources.get(data)` (one module per data.name); `data` is the run's
`config_schema.DataConfig`, checked once (a dict is checked here, at the edge).

Images come out float32 [B, S, S, 3] in [0, 255] (the models normalise inside);
labels float32 [B, num_classes]: one-hot, multi-hot for ImageNet-21k, soft after
Mixup/CutMix. Training batches have a static batch dimension (drop_remainder), as
TPUs need.

Randomness is stateless: every image and every batch carries its own seed from a
`tf.data.Dataset.random(seed)` stream zipped in before the parallel maps, so a
seeded dataset yields the same batches however tf.data schedules its threads,
and no stateful op forces tf.data to run serially under op determinism.
"""

import dataclasses
import functools
import itertools
import sys

import tensorflow as tf
from absl import logging

from effnet_keras import config_schema
from effnet_keras.data import augment
from effnet_keras.data import crops
from effnet_keras.data import randaugment as randaugment_lib
from effnet_keras.data import sources



def data_config(data):
    """The `data:` section as a `config_schema.DataConfig`: one given (a run's, already validated) as is,
    a dict checked once here (ConfigError naming the key, the value and what is allowed)."""
    return data if isinstance(data, config_schema.DataConfig) else config_schema.DataConfig.from_dict(data)


def resolve_data_counts(config):
    """A run config (`config_schema.RunConfig`) with data.num_classes / num_train_examples /
    num_eval_examples counted from the data where they can be (data.name=folder: the image folder
    is listed); any other config is returned as is. The training driver calls it before writing
    config.yaml, so the run directory's config builds the right head."""
    if config.data.name != "folder":
        return config
    counts = sources.get(config.data).counts()
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **counts))


def dataset_info(data):
    """-> `sources.DatasetInfo` (name, num_classes, num_train_examples, num_eval_examples, multilabel,
    class_names). Reads no data (digits: the split is computed, as its size depends on
    data.test_fraction; folder: the folder is listed and the counts come from it)."""
    return sources.get(data_config(data)).info()


def _random_seeds(seed):
    """An endless stream of int64 [2] seeds; a repeated pass draws new ones (still reproducible from `seed`)."""
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)


def _op_determinism_enabled():
    # TF has a setter (tf.config.experimental.enable_op_determinism) but no public getter.
    from tensorflow.python.framework import config as tf_config

    return bool(getattr(tf_config, "is_op_determinism_enabled", lambda: False)())


def _map_skipping_corrupt(records, fn, what, placeholder, deterministic, record_id=None):
    """records.map(fn), skipping the records on which fn raises (bad JPEG, bad tf.Example, label out of range).

    Each record is decoded in a one-element dataset with its own ignore_errors, so only
    errors of that record's decoding are skipped: an error upstream (a source that
    keeps failing) still surfaces instead of being retried forever, as a pipeline-wide
    ignore_errors would. A skipped record yields `placeholder` flagged False; the flags
    are counted (a running total is logged at each skip, next to tf.data's own warning
    with the error) and dropped. The count uses tf.print, a stateful op, so it is left
    out when op determinism is on (it would make tf.data run the whole pipeline serially).
    `record_id(*element)` (a string tensor, e.g. the file path of a folder record): the
    skipped records are then named in an absl WARNING instead (see `skipped_records`).
    """
    with_id = record_id is not None
    flagged_placeholder = tf.data.Dataset.from_tensors((*placeholder, False))

    def decode_one(*element):
        if with_id:
            name = record_id(*element)
            decoded = tf.data.Dataset.from_tensors(element).map(lambda *e: (*fn(*e), name, True))
            failed = tf.data.Dataset.from_tensors((*placeholder, name, False))
        else:
            decoded = tf.data.Dataset.from_tensors(element).map(lambda *e: (*fn(*e), True))
            failed = flagged_placeholder
        return decoded.ignore_errors(log_warning=True).concatenate(failed).take(1)

    flagged = records.interleave(decode_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if not _op_determinism_enabled():

        def count(total, element):
            ok = element[-1]
            total = total + tf.cast(tf.logical_not(ok), tf.int64)
            if not ok:
                if with_id:
                    tf.py_function(functools.partial(_log_skipped, what), [element[-2]], [])
                else:
                    tf.print("effnet_keras.data: skipped a corrupt record of", what, "- total so far:", total,
                             output_stream=sys.stderr)
            return total, element

        flagged = flagged.scan(tf.constant(0, tf.int64), count)
    flagged = flagged.filter(_flag)
    return flagged.map(_without_flag_and_id if with_id else _without_flag)


# what ("folder:train") -> names of the records skipped so far in this process (dict keys: first skip first)
_SKIPPED = {}
_SKIPPED_SHOWN = 5


def _log_skipped(what, name):
    name = name.numpy().decode("utf-8", "replace")
    seen = _SKIPPED.setdefault(what, {})  # an ordered set
    if name in seen:  # a later epoch skipping it again: logged once
        return
    seen[name] = None
    first = list(itertools.islice(seen, _SKIPPED_SHOWN))
    logging.warning("effnet_keras.data: skipped %d unreadable or corrupt file(s) of %s so far (first: %s)",
                    len(seen), what, ", ".join(first) + (", ..." if len(seen) > _SKIPPED_SHOWN else ""))


def skipped_records(what=None):
    """Names of the records skipped so far by pipelines that name them (folder: paths), by `what` or all."""
    if what is not None:
        return list(_SKIPPED.get(what, []))
    return {key: list(value) for key, value in _SKIPPED.items()}


def _flag(*element):
    return element[-1]


def _without_flag(*element):
    return element[:-1]


def _without_flag_and_id(*element):
    return element[:-2]


class _ImageAugmenter:
    """Flip + RandAugment of one image, shared by every dataset with these settings.

    The trainer builds a dataset per epoch; tracing RandAugment and instantiating it cost
    ~1.7 s per build (measured at 128 px with its per-op branches of the time), a fixed
    cost per epoch. Built once (`_image_augmenter`), each epoch's maps call the same traced
    functions: `draw_for_seeds` (RandAugment's draws for a batch of image seeds, run beside
    the seed stream) and `augment_image` (one image, its seed and its draws).
    """

    def __init__(self, image_size, flip, magnitude, num_layers):
        self.flip = flip
        self.randaugment = (randaugment_lib.RandAugment(magnitude, num_layers) if magnitude > 0 and num_layers > 0
                            else None)
        signature = [tf.TensorSpec([image_size, image_size, 3], tf.float32), tf.TensorSpec([2], tf.int64)]
        if self.randaugment is not None:
            layers = self.randaugment.num_layers
            signature.append({"choice": tf.TensorSpec([layers], tf.int32),
                              "values": tf.TensorSpec([layers, 6], tf.float32)})
        self.augment_image = tf.function(self._augment_image, autograph=False, input_signature=signature)
        self.draw_for_seeds = tf.function(self._draw_for_seeds, autograph=False)

    def seeded_placeholder(self):
        """Zeros shaped as an image's seed, or its seed and draws with RandAugment (a skipped record's stand-in)."""
        seed = tf.zeros([2], tf.int64)
        if self.randaugment is None:
            return seed
        layers = self.randaugment.num_layers
        return seed, {"choice": tf.zeros([layers], tf.int32), "values": tf.zeros([layers, 6])}

    def _draw_for_seeds(self, image_seeds):
        """image seeds int64 [N, 2] -> RandAugment's draw records [N, ...]."""
        # Each image's RandAugment seed is fold(image seed, 2), as _augment_image's flip seed is fold(seed, 1).
        return self.randaugment.draw(image_seeds, fold_in=2)

    def _augment_image(self, image, image_seed, draws=None):
        if self.flip:
            image = crops.random_flip(image, augment.fold(image_seed, 1))
        if self.randaugment is not None:
            image = self.randaugment.apply(image, draws)
        return image


@functools.lru_cache(maxsize=32)
def _image_augmenter(image_size, flip, magnitude, num_layers):
    return _ImageAugmenter(image_size, flip, magnitude, num_layers)


# RandAugment's draws are computed for this many image seeds at a time (one compiled call).
_DRAW_BATCH = 64


# Purposes of the per-call seeds (see _CallParams.sub_seed); the numbers are part of what fixes a
# seeded dataset's batches, so changing one changes every seeded run's data.
_SEED_FILE_ORDER, _SEED_SHUFFLE, _SEED_IMAGES, _SEED_BATCHES = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class _CallParams:
    """One build_dataset call's arguments, resolved once and read by every stage."""

    data: config_schema.DataConfig
    source: sources.DataSource
    split: str  # "train" or "eval"
    split_name: str  # data.train_split or data.eval_split
    image_size: int
    batch_size: int
    training: bool
    repeat: bool
    deterministic: bool
    seed: int | None  # None only without data.deterministic
    pipeline_id: int
    randaug_magnitude: float  # RandAugment magnitude and Mixup/CutMix alphas: the stage's, else the data config's
    mixup_alpha: float
    cutmix_alpha: float

    def sub_seed(self, purpose):
        # distinct, reproducible seeds per purpose and per input pipeline (hosts must not draw alike)
        if self.seed is None:
            return None
        return (int(self.seed) * 1_000_003 + self.pipeline_id * 7_919 + purpose) % (2**31 - 1)


def build_dataset(data_cfg, *, split, image_size, batch_size, stage=None, input_context=None, seed=None, repeat=None,
                  training=None):
    """tf.data.Dataset of (images float32 [B, S, S, 3] in [0, 255], labels float32 [B, num_classes]).

    split: "train" (data.train_split) or "eval" (data.eval_split). batch_size is per
    replica when `input_context` is given (this pipeline's share), else global.
    stage: a progressive.Stage whose RandAugment magnitude and Mixup/CutMix alphas
    replace data.ram / mixup_alpha / cutmix_alpha. training (default: split ==
    "train") selects random crop + augmentation + drop_remainder; repeat defaults to
    training. With data.deterministic (the default) a seed fixes every batch (seed None
    means 0); without it tf.data may reorder images for speed.
    """
    data = data_config(data_cfg)
    source = sources.get(data)
    if data.name == "folder":  # counted from the folder, whatever the config said
        data = dataclasses.replace(data, **source.counts())
        source = sources.get(data)
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval'. Received: {split!r}")
    for key, value in (("image_size", image_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer. Received: {value!r}")
    if stage is not None and stage.image_size != image_size:
        raise ValueError(f"image_size={image_size} differs from stage {stage.index}'s image_size={stage.image_size}.")
    call = _resolve_call(data, source, split, image_size, batch_size, stage, input_context, seed, repeat, training)

    records = _source_stage(call, input_context)
    dataset = _decode_stage(call, records)
    dataset = _augment_stage(call, dataset)
    dataset = _batch_and_mix_stage(call, dataset)
    return _prefetch_with_options(dataset, call.deterministic)


def _resolve_call(data, source, split, image_size, batch_size, stage, input_context, seed, repeat, training):
    """build_dataset's arguments with their defaults filled in -> _CallParams."""
    training = split == "train" if training is None else bool(training)
    # data.deterministic: same seed, same batches (the trainer's exact resume relies on it). Off,
    # tf.data may hand out whichever image is ready first (draws stay seeded, order does not).
    deterministic = data.deterministic
    return _CallParams(
        data=data,
        source=source,
        split=split,
        split_name=source.split_name(split),
        image_size=image_size,
        batch_size=batch_size,
        training=training,
        repeat=training if repeat is None else bool(repeat),
        deterministic=deterministic,
        seed=0 if seed is None and deterministic else seed,
        pipeline_id=input_context.input_pipeline_id if input_context is not None else 0,
        randaug_magnitude=stage.randaug_magnitude if stage is not None else data.randaug_magnitude,
        mixup_alpha=stage.mixup_alpha if stage is not None else data.mixup_alpha,
        cutmix_alpha=stage.cutmix_alpha if stage is not None else data.cutmix_alpha,
    )


def _source_stage(call, input_context):
    """-> the source's raw records: this input pipeline's share, shuffled when training."""
    data = call.data
    records = call.source.records(call.split, input_context, shuffle=call.training,
                                  seed=call.sub_seed(_SEED_FILE_ORDER), deterministic=call.deterministic)
    if data.cache and call.repeat:
        records = records.cache()  # encoded records, reused by every epoch of this repeated dataset
    if call.training:
        records = records.shuffle(data.shuffle_buffer, seed=call.sub_seed(_SEED_SHUFFLE), reshuffle_each_iteration=True)
    return records


def _decode_stage(call, records):
    """-> (image [S, S, 3], label): eval centre-cropped; training randomly cropped (or, for
    data.augment "ft", resized) and followed by the image's own seed for the augment stage.
    Corrupt records are skipped."""
    data, source, image_size, training = call.data, call.source, call.image_size, call.training

    def decode(record, seeded=None):
        # Everything that can fail on a corrupt record, and nothing more: this part runs in a
        # one-element dataset per record (see _map_skipping_corrupt), which costs per op.
        # `seeded`: the image's seed, or (seed, RandAugment draws); passed on to the augment stage.
        image, label = source.parse(record)
        if not training:
            return crops.center_crop(image, image_size, crop=data.center_crop), label
        if data.augment == "ft":
            image = crops.full_resize(image, image_size)
        else:
            image_seed = seeded[0] if isinstance(seeded, tuple) else seeded
            image = crops.random_crop(image, image_size, data.crop_area_min, augment.fold(image_seed, 0))
        return image, label, seeded

    augmenter = _augmenter(call) if training else None
    if training:
        # Each image's seed, with its RandAugment draws computed for a batch of seeds at once (~0.17 ms per
        # image less on one core than drawing them per image with TF's random kernels).
        image_seeds = _random_seeds(call.sub_seed(_SEED_IMAGES))
        if augmenter.randaugment is not None:
            image_seeds = image_seeds.batch(_DRAW_BATCH, drop_remainder=True)
            image_seeds = image_seeds.map(lambda seeds: (seeds, augmenter.draw_for_seeds(seeds))).unbatch()
        records = tf.data.Dataset.zip((records, image_seeds))
    else:
        records = records.map(lambda record: (record,))
    if source.in_memory:  # decoded arrays: nothing to decode, nothing can be corrupt
        return records.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=call.deterministic)
    what = f"{data.name}:{call.split_name}" if data.name != "tfds" else f"tfds {data.tfds_name}:{call.split_name}"
    placeholder = (tf.zeros([image_size, image_size, 3]), tf.zeros([data.num_classes]))
    if training:
        placeholder += (augmenter.seeded_placeholder(),)
    return _map_skipping_corrupt(records, decode, what, placeholder, call.deterministic, record_id=source.record_id)


def _augment_stage(call, dataset):
    """Training: flip + RandAugment each image with its seed and draws (dropped here) -> (image, label). Eval: as is."""
    if not call.training:
        return dataset
    augment_image = _augmenter(call).augment_image

    def augment_with_seed(image, label, seeded):  # seeded: the image's seed, or (seed, RandAugment draws)
        return augment_image(image, *(seeded if isinstance(seeded, tuple) else (seeded,))), label

    return dataset.map(augment_with_seed, num_parallel_calls=tf.data.AUTOTUNE, deterministic=call.deterministic)


def _augmenter(call):
    """The training call's flip + RandAugment (`_ImageAugmenter`, shared by calls with the same settings)."""
    data = call.data
    num_layers = data.ra_num_layers
    use_randaugment = data.augment == "randaugment" and float(call.randaug_magnitude) > 0 and num_layers > 0
    magnitude = float(call.randaug_magnitude) if use_randaugment else 0.0
    return _image_augmenter(call.image_size, data.random_flip, magnitude, num_layers if use_randaugment else 0)


def _batch_and_mix_stage(call, dataset):
    """repeat -> batch (static batch dimension when training) -> training: random erasing, Mixup/CutMix per batch."""
    if call.repeat:
        # After the skipping map, not before: if every record fails, an epoch is empty and
        # repeat() stops (Keras then reports the input ran out), instead of retrying forever.
        dataset = dataset.repeat()
    dataset = dataset.batch(call.batch_size, drop_remainder=call.training)
    if not call.training:
        return dataset

    data = call.data
    erasing = None
    if data.random_erasing > 0:
        erasing = augment.RandomErasing(data.random_erasing, data.erasing_scale)
    mixer = augment.BatchMixer(call.mixup_alpha, call.cutmix_alpha)
    if erasing is None and not mixer.active:
        return dataset
    if mixer.active and call.batch_size < 2:
        raise ValueError(f"Mixup/CutMix mix images within a batch; batch_size={call.batch_size} is too small.")

    def mix(batch, batch_seed):
        images, labels = batch
        if erasing is not None:
            images = erasing(images, augment.fold(batch_seed, 0))
        if mixer.active:
            images, labels = mixer(images, labels, augment.fold(batch_seed, 1))
        return images, labels

    batch_seeds = _random_seeds(call.sub_seed(_SEED_BATCHES))
    return tf.data.Dataset.zip((dataset, batch_seeds)).map(
        mix, num_parallel_calls=tf.data.AUTOTUNE, deterministic=call.deterministic)


def _prefetch_with_options(dataset, deterministic):
    options = tf.data.Options()
    options.deterministic = deterministic
    # automl's setting: many small per-image ops run best one thread each, images in parallel.
    options.threading.max_intra_op_parallelism = 1
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)
