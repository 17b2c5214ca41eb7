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
  implementation inside tf.data; `_tensorflow_backend` switches them the way
  Keras' own `DataLayer.__call__` does.
* RandAugment. `keras.layers.RandAugment` computes all 11 of its ops for every
  image and keeps 2 with `where` (16 img/s per core at 300 px in our
  measurement), picks the ops once per call (shared by a whole batch) and
  maps one `factor` onto one-sided ranges (rotation 0..360*factor degrees in
  one direction, brightness only up, sharpness only blur). `RandAugment` below
  runs automl's 16-op policy with `tf.switch_case`, so only the chosen ops run,
  each from the matching Keras layer set to automl's strength (docs/data.md
  has the magnitude table), its pixel kernel compiled by XLA.

CutMix: Keras' layer mixes each sample's label by the real-valued box area while
its mask pastes whole pixels; `CutMix` below sets each sample's label weight to
the exact fraction of its pixels that came from the partner (automl used one
batch-averaged weight for every sample).
"""

import contextlib
import functools

import keras
import tensorflow as tf

from effnet_keras.config_schema import check_randaug_magnitude
from effnet_keras.data import fast_layers

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
def _tensorflow_backend(layer):
    """Run a Keras preprocessing layer's TF implementation whatever KERAS_BACKEND is (as DataLayer does)."""
    layer.backend.set_backend("tensorflow")
    try:
        yield
    finally:
        layer.backend.reset()


def apply_layer(layer, images, seed, labels=None):
    """images (rank 4) [, labels] through a Keras image preprocessing layer with a stateless seed."""
    with _tensorflow_backend(layer):
        transformation = layer.get_random_transformation(images, training=True, seed=ElementSeed(seed))
        out = layer.transform_images(images, transformation, training=True)
        if labels is None:
            return out
        return out, layer.transform_labels(labels, transformation, training=True)


def fold(seed, index):
    return tf.random.experimental.stateless_fold_in(seed, index)


# ---------------------------------------------------------------------- RandAugment


def randaugment_ops(magnitude, fill_value=GREY):
    """automl's 16 RandAugment ops as (name, Keras layer) at magnitude m (automl scale, 0..30).

    level = m / 10 (automl's _MAX_LEVEL is 10). Geometric strengths follow automl
    (rotate 30*level degrees, shear 0.3*level, translate level * 100 px of automl's
    300 px V2-S images = level / 3 of the side, cutout side 80*level px = 0.27 * level);
    photometric ones use level capped at 1 with a symmetric range, so a larger
    magnitude is always stronger (automl's Posterize, Solarize and enhance ops get
    weaker or pass through identity as m grows).
    """
    check_randaug_magnitude("RandAugment magnitude", magnitude)
    level = float(magnitude) / 10.0
    capped = min(level, 1.0)
    geo = dict(interpolation="nearest", fill_mode="constant", fill_value=fill_value, dtype="float32")
    color = dict(value_range=(0, 255), dtype="float32")
    rotate = min(30.0 * level / 360.0, 0.5)
    shear = min(0.3 * level, 1.0)
    translate = min(level / 3.0, 1.0)
    cutout_side = min(0.27 * level, 1.0)
    bits = 8 - round(4 * capped)
    layers = keras.layers
    return [
        ("auto_contrast", fast_layers.FastAutoContrast(**color)),
        ("equalize", fast_layers.FastEqualization(**color)),
        ("invert", fast_layers.FastRandomInvert(factor=(1.0, 1.0), **color)),
        ("rotate", fast_layers.FastRandomRotation(factor=(-rotate, rotate), **geo)),
        ("posterize", layers.RandomPosterization(factor=(bits, bits), **color)),
        ("solarize", fast_layers.FixedSolarization(threshold=256.0 - 128.0 * capped, dtype="float32")),
        ("color", fast_layers.FastRandomColorDegeneration(factor=0.9 * capped, **color)),
        ("contrast", fast_layers.FastRandomContrast(factor=(0.9 * capped, 0.9 * capped), **color)),
        ("brightness", layers.RandomBrightness(factor=0.4 * capped, **color)),
        ("sharpness", fast_layers.FastRandomSharpness(factor=((1 - 0.9 * capped) / 2, (1 + 0.9 * capped) / 2), **color)),
        # x/y shear with strength exactly 0.3*level and a random sign, as automl.
        ("shear_x", fast_layers.FastRandomShear(x_factor=(shear, shear), y_factor=0.0, **geo)),
        ("shear_y", fast_layers.FastRandomShear(x_factor=0.0, y_factor=(shear, shear), **geo)),
        ("translate_x", fast_layers.FastRandomTranslation(height_factor=0.0, width_factor=translate, **geo)),
        ("translate_y", fast_layers.FastRandomTranslation(height_factor=translate, width_factor=0.0, **geo)),
        ("cutout", fast_layers.FastRandomErasing(factor=(1.0, 1.0), scale=(cutout_side**2, cutout_side**2),
                                                 fill_value=fill_value, value_range=(0, 255), dtype="float32")),
        # automl's SolarizeAdd (+110*level below 128) has no Keras layer; Keras' additive
        # Solarization inverts above the threshold instead. Use it with a fixed 128 threshold.
        ("solarize_add", fast_layers.FixedSolarization(threshold=128.0, addition=110.0 * capped, dtype="float32")),
    ]


class RandAugment:
    """Per image: `num_layers` times, pick one of the 16 ops uniformly and apply it (automl's policy).

    `__call__(image, seed)` takes a float32 [H, W, 3] image in [0, 255] and an
    int64 [2] seed; only the chosen ops execute (`tf.switch_case`), each one's draw
    by its Keras layer and its pixel kernel XLA-compiled (`compiled_kernel`).
    """

    def __init__(self, magnitude, num_layers=2):
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"data.ra_num_layers must be an integer >= 0. Received: {num_layers!r}")
        self.magnitude, self.num_layers = float(magnitude), num_layers
        self.ops = randaugment_ops(magnitude)
        self.kernels = [compiled_kernel(layer) for _, layer in self.ops]

    def __call__(self, image, seed):
        shape = image.shape
        if self.num_layers == 0:
            return image

        def one_layer(layer_index, images):
            layer_seed = fold(seed, layer_index)
            choice = tf.random.stateless_uniform([], layer_seed, 0, len(self.ops), dtype=tf.int32)
            op_seed = fold(layer_seed, 7919)
            branches = [self._branch(layer, kernel, images, op_seed)
                        for (_, layer), kernel in zip(self.ops, self.kernels)]
            return layer_index + 1, tf.ensure_shape(tf.switch_case(choice, branches), images.shape)

        # A loop, not num_layers unrolled copies: the 16 branches are traced and instantiated
        # once (each new tf.data iterator instantiates them: ~0.3 s per copy at 300 px).
        _, images = tf.while_loop(lambda layer_index, _: layer_index < self.num_layers, one_layer,
                                  (tf.constant(0, tf.int32), image[None]))
        # Every op clips to (or stays inside) [0, 255] itself: no extra pass here.
        return tf.ensure_shape(images[0], shape)

    @staticmethod
    def _branch(layer, kernel, images, seed):
        def run():
            with _tensorflow_backend(layer):
                transformation = layer.get_random_transformation(images, training=True, seed=ElementSeed(seed))
            return tf.cast(kernel(images, transformation), tf.float32)

        return run


def compiled_kernel(layer):
    """layer.transform_images as an XLA-compiled function (its random draws stay outside, in TF's kernels).

    XLA fuses each op's elementwise passes into one loop over the image and runs its
    gathers and histograms several times faster than TF's CPU kernels (docs/data.md).
    The kernels use static shapes only (a draw-dependent slice size would recompile per
    draw). Where this TensorFlow has no XLA CPU compiler, the same kernel runs uncompiled.
    """

    def kernel(images, transformation):
        with _tensorflow_backend(layer):
            return layer.transform_images(images, transformation, training=True)

    if not _xla_available():
        return kernel
    return tf.function(kernel, jit_compile=True, autograph=False)


@functools.lru_cache(maxsize=None)
def _xla_available():
    try:
        tf.function(lambda x: x + 1.0, jit_compile=True)(tf.zeros([1]))
        return True
    except (tf.errors.OpError, NotImplementedError, ValueError):
        return False


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
