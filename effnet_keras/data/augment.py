"""RandAugment, Mixup, CutMix and random erasing inside tf.data, built from Keras 3's preprocessing layers.

Every op is a Keras layer (`keras.layers.RandomRotation`, `MixUp`, `CutMix`,
`RandomErasing`, ...). We call each layer's `get_random_transformation` /
`transform_images` / `transform_labels` ourselves, for three reasons:

* Seeds. Keras' layers draw from a `SeedGenerator` variable. In a parallel
  tf.data map two images can read the same state (identical augmentations), a
  seeded pipeline is not reproducible, and under
  `tf.config.experimental.enable_op_determinism()` the variable update makes
  tf.data run every map serially. `ElementSeed` instead feeds each layer a
  stateless seed derived from the image's own seed.
* Backends. Under `KERAS_BACKEND=jax` the layers must run their TensorFlow
  implementation inside tf.data; `tensorflow_backend` switches them the way
  Keras' own `DataLayer.__call__` does.

RandAugment, built on this plumbing, is in randaugment.py.

CutMix: Keras' layer mixes each sample's label by the real-valued box area while
its mask pastes whole pixels; `CutMix` below sets each sample's label weight to
the exact fraction of its pixels that came from the partner (automl used one
batch-averaged weight for every sample).
"""

import contextlib

import keras
import tensorflow as tf

GREY = 128.0  # automl fills uncovered pixels with grey


# ---------------------------------------------------------------------- plumbing


class ElementSeed(keras.random.SeedGenerator):
    """A stateless stand-in for `keras.random.SeedGenerator` inside tf.data.

    Built from one image's (or batch's) int64 [2] seed; every `next()` folds in a
    fresh counter, so each random draw of each layer gets its own stream. No
    variable is created or updated.
    """

    def __init__(self, seed):  # noqa: super().__init__ would create the state variable we avoid
        self.name = "element_seed"
        self._seed = tf.cast(seed, tf.int64)
        self._draws = 0

    def next(self, ordered=True):
        self._draws += 1
        return tf.random.experimental.stateless_fold_in(self._seed, self._draws)


@contextlib.contextmanager
def tensorflow_backend(layer):
    """Run a Keras preprocessing layer's TF implementation whatever KERAS_BACKEND is (as DataLayer does)."""
    layer.backend.set_backend("tensorflow")
    try:
        yield
    finally:
        layer.backend.reset()


def apply_layer(layer, images, seed, labels=None):
    """images (rank 4) [, labels] through a Keras image preprocessing layer with a stateless seed."""
    with tensorflow_backend(layer):
        transformation = layer.get_random_transformation(images, training=True, seed=ElementSeed(seed))
        out = layer.transform_images(images, transformation, training=True)
        if labels is None:
            return out
        return out, layer.transform_labels(labels, transformation, training=True)


def fold(seed, index):
    return tf.random.experimental.stateless_fold_in(seed, index)


# ---------------------------------------------------------------------- batch mixing


class CutMix(keras.layers.CutMix):
    """Keras' CutMix with lambda ~ Beta(alpha, alpha) and exact per-sample label weights.

    Keras draws alpha itself from U(factor) (so `factor=(alpha, alpha)` pins it)
    and weights labels by the real-valued box area; its mask covers the pixels
    whose index lies in [x0, x1) x [y0, y1), up to a row and a column more or
    less (measured: labels off by up to 4.8 % at 32 px, 0.6 % at 224 px). We
    recompute each sample's weight from its mask: label = kept_fraction * own +
    pasted_fraction * partner.
    """

    def __init__(self, alpha, **kwargs):
        if not 0.0 < float(alpha) <= 1.0:
            raise ValueError(f"CutMix alpha must be in (0, 1] (Keras' bound). Received: {alpha}")
        super().__init__(factor=(float(alpha), float(alpha)), **kwargs)

    def get_random_transformation(self, data, training=True, seed=None):
        transformation = super().get_random_transformation(data, training=training, seed=seed)
        if transformation is not None:
            pasted = self.backend.numpy.mean(
                self.backend.cast(transformation["batch_masks"], "float32"), axis=(1, 2, 3)
            )
            transformation["mix_weight"] = 1.0 - pasted
        return transformation


class BatchMixer:
    """Mixup and/or CutMix over a batch (automl: with both on, first half Mixup, second half CutMix).

    Partners come from a permutation of the same (half) batch; every sample's label
    weights sum to 1 and equal its pixel mixing proportions. Layers are built here,
    outside tf.data's trace (Keras layers create variables when constructed).
    """

    def __init__(self, mixup_alpha, cutmix_alpha):
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(f"mixup/cutmix alpha must be >= 0. Received: {mixup_alpha}, {cutmix_alpha}")
        self.mixup = keras.layers.MixUp(alpha=self.mixup_alpha, dtype="float32") if self.mixup_alpha > 0 else None
        self.cutmix = CutMix(self.cutmix_alpha, dtype="float32") if self.cutmix_alpha > 0 else None

    @property
    def active(self):
        return self.mixup is not None or self.cutmix is not None

    def __call__(self, images, labels, seed):
        if self.mixup is not None and self.cutmix is not None:
            half = images.shape[0] // 2 if images.shape[0] is not None else tf.shape(images)[0] // 2
            a_images, a_labels = apply_layer(self.mixup, images[:half], fold(seed, 1), labels=labels[:half])
            b_images, b_labels = apply_layer(self.cutmix, images[half:], fold(seed, 2), labels=labels[half:])
            return tf.concat([_clip(a_images), b_images], 0), tf.concat([a_labels, b_labels], 0)
        if self.mixup is not None:
            mixed, mixed_labels = apply_layer(self.mixup, images, fold(seed, 1), labels=labels)
            return _clip(mixed), mixed_labels
        if self.cutmix is not None:
            return apply_layer(self.cutmix, images, fold(seed, 2), labels=labels)
        return images, labels


def _clip(images):
    # lam * a + (1 - lam) * b can round to 255.00002 in float32: keep the documented [0, 255].
    return tf.clip_by_value(images, 0.0, 255.0)


class RandomErasing:
    """Keras RandomErasing over a batch: each image, with `probability`, gets a grey box.

    `scale` is Keras' (low, high): each side of the box is sqrt(U(scale)) of the image side
    (automl's fine-tune cutout, a square of half the side, is scale (0.25, 0.25)).
    """

    def __init__(self, probability, scale=(0.02, 0.33)):
        if not 0.0 <= float(probability) <= 1.0:
            raise ValueError(f"data.random_erasing is a probability in [0, 1]. Received: {probability}")
        if len(scale) != 2 or not 0.0 < float(scale[0]) <= float(scale[1]) <= 1.0:
            raise ValueError(f"data.erasing_scale must be [low, high] with 0 < low <= high <= 1. Received: {scale}")
        self.layer = keras.layers.RandomErasing(factor=(float(probability),) * 2, scale=tuple(float(s) for s in scale),
                                                fill_value=GREY, value_range=(0, 255), dtype="float32")

    def __call__(self, images, seed):
        return apply_layer(self.layer, images, seed)
