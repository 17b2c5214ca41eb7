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
import math

import keras
import numpy as np
import tensorflow as tf

from effnet_keras import _keras_internals as keras_internals
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

    `__call__(image, seed)` takes a float32 [H, W, 3] image in [0, 255] (H and W known
    when traced) and an int64 [2] seed. Two stages per image:

    * `RandAugmentDraws` draws every layer's op choice and that op's random numbers in
      one short straight-line pass of TF ops: the same numbers, from the same seeds and
      the same float32 arithmetic, as each op's Keras layer would draw (tests check them
      equal for every op). The layers' own `get_random_transformation` costs 20-185 TF
      nodes per op, and inside a 16-way `tf.switch_case` all 16 branches' nodes are
      visited for every image (~1 us each on one core: ~0.7 ms per image for the draws).
    * per layer, one XLA-compiled call that switches among the 16 ops' pixel kernels (the
      Keras layers' `transform_images`, fast_layers' kernels) inside XLA, where an untaken
      branch costs nothing. (One call looping over the layers inside XLA was ~0.1 ms slower:
      XLA copies the image into and out of its loop; unrolled, it compiled for ~20 s.)
    """

    def __init__(self, magnitude, num_layers=2):
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"data.ra_num_layers must be an integer >= 0. Received: {num_layers!r}")
        self.magnitude, self.num_layers = float(magnitude), num_layers
        self.ops = randaugment_ops(magnitude)
        self.draws = RandAugmentDraws([layer for _, layer in self.ops])
        self._apply_op = compiled(self._switch_op)

    def __call__(self, image, seed):
        if self.num_layers == 0:
            return image
        shape = image.shape
        if len(shape) != 3 or None in shape:
            raise ValueError(f"RandAugment takes one [height, width, channels] image of known size. Received shape {shape}")
        record = self.draws(seed, self.num_layers, shape[0], shape[1])
        # Every op clips to (or stays inside) [0, 255] itself: no extra pass here.
        return tf.ensure_shape(self.apply_ops(image[None], record)[0], shape)

    def apply_ops(self, images, record):
        """images [1, H, W, C] through the ops record["choice"] names, in order: one compiled call per layer."""
        for layer_index in range(record["choice"].shape[0]):
            row = {key: value[layer_index] for key, value in record.items() if key != "axes"}
            row["axes"] = {key: value[layer_index][None] for key, value in record["axes"].items()}
            images = tf.ensure_shape(self._apply_op(images, row), images.shape)
        return images

    def _switch_op(self, images, row):
        branches = [functools.partial(self._run_op, op_index, images, row) for op_index in range(len(self.ops))]
        return tf.switch_case(row["choice"], branches)

    def _run_op(self, op_index, images, row):
        layer = self.ops[op_index][1]
        with _tensorflow_backend(layer):
            transformation = self.draws.transformation(op_index, row)
            return tf.cast(layer.transform_images(images, transformation, training=True), images.dtype)


class RandAugmentDraws:
    """The random draws of a list of RandAugment op layers, as one vectorised pass for the chosen ops.

    Every op draws from `ElementSeed(op_seed)`: its k-th draw is
    `tf.random.stateless_uniform(shape, [r, k], low, high)` with r fixed by op_seed, i.e.
    `u_k * (high - low) + low` in float32 with the same u_k for every op (the first one
    or two elements of one Philox block). So the draws of all ops are u_1..u_3 scaled by
    per-op constants, followed by each op kind's few lines of Keras arithmetic
    (rotation matrix, shear sign, translation in pixels, erasing box), all computed in
    TF's kernels as Keras computes them (XLA's CPU compiler would contract multiply-adds
    and has its own sin/cos). `tests/data/test_fast_layers.py` checks the result equal
    to each layer's `get_random_transformation` on the same seeds.
    """

    _DRAWS = 3  # u_1 (two elements: the erasing box's sides), u_2, u_3

    def __init__(self, layers):
        self.layers = list(layers)
        self.kinds, self._constants = [], []
        low, span, scale = np.zeros([len(self.layers), self._DRAWS], np.float32), None, []
        span = np.ones_like(low)
        for op_index, layer in enumerate(self.layers):
            kind, ranges, factor_scale, constant = _draw_spec(layer)
            self.kinds.append(kind)
            self._constants.append(constant)
            scale.append(factor_scale)
            for draw, (lo, hi) in ranges.items():  # float32 bounds and width, as tf.random.stateless_uniform
                low[op_index, draw] = np.float32(lo)
                span[op_index, draw] = np.float32(hi) - np.float32(lo)
        self.low, self.span, self.scale = low, span, np.asarray(scale, np.float32)
        self._is = {kind: np.asarray([k == kind for k in self.kinds]) for kind in ("rotate", "shear")}

    def __call__(self, seed, num_layers, height, width, choice=None):
        """The record of `num_layers` op choices and their draws: choice [L], matrix [L, 8], axes, factor [L], box [L, 4].

        `choice` ([L] op indices) replaces the drawn choices (the tests draw every op on the same seeds).
        """
        choices, uniforms = [], []
        for layer_index in range(num_layers):
            layer_seed = fold(seed, layer_index)
            choices.append(tf.random.stateless_uniform([], layer_seed, 0, len(self.layers), dtype=tf.int32))
            element_seed = ElementSeed(fold(layer_seed, 7919))
            uniforms.append(tf.concat([tf.random.stateless_uniform([2 if draw == 0 else 1], element_seed.next())
                                       for draw in range(self._DRAWS)], 0))
        choice = tf.stack(choices) if choice is None else tf.convert_to_tensor(choice, tf.int32)
        raw = tf.stack(uniforms)  # [L, 4]: u_1 (2 elements), u_2, u_3
        low, span = tf.gather(self.low, choice), tf.gather(self.span, choice)
        low, span = tf.concat([low[:, :1], low], 1), tf.concat([span[:, :1], span], 1)
        value = raw * span + low  # each op's draws in its own range, as Keras' uniform computes them
        first, second, third = value[:, 0], value[:, 2], value[:, 3]
        height_f, width_f = float(height), float(width)

        # RandomRotation (Keras' _compute_affine_matrix with no shear, translation or scale).
        radians = first * np.float32(math.pi / 180.0)
        # One element at a time: Eigen's vectorised sin/cos (8+ elements) round differently from its scalar path.
        cos = tf.concat([tf.cos(radians[i:i + 1]) for i in range(num_layers)], 0)
        sin = tf.concat([tf.sin(radians[i:i + 1]) for i in range(num_layers)], 0)
        center_x, center_y = np.float32(0.5) * (np.float32(width) - 1), np.float32(0.5) * (np.float32(height) - 1)
        a1, b0 = -sin, sin
        rotation = [cos, a1, (center_x - center_x * cos) - center_y * a1,
                    b0, cos, (center_y - center_x * b0) - center_y * cos]
        # RandomShear: sign from u_1, y from u_2, x from u_3.
        sign = tf.where(first > 0.5, -1.0, 1.0)
        ones, zeros = tf.ones_like(first), tf.zeros_like(first)
        shear = [ones, third * sign, zeros, second * sign, ones, zeros]
        # RandomTranslation: height from u_1, width from u_2, in pixels.
        translation = [ones, zeros, -(second * width_f), zeros, ones, -(first * height_f)]
        is_rotation, is_shear = tf.gather(self._is["rotate"], choice), tf.gather(self._is["shear"], choice)
        matrix = tf.stack([tf.where(is_rotation, r, tf.where(is_shear, s, t))
                           for r, s, t in zip(rotation, shear, translation)] + [zeros, zeros], 1)
        # RandomErasing (fast_layers.FastRandomErasing): sides from u_1, starts from u_2 and u_3.
        sides = tf.sqrt(tf.maximum(value[:, :2], 0.0))
        box_width, box_height = sides[:, 0] * width_f, sides[:, 1] * height_f
        x0, y0 = second * (width_f - box_width), third * (height_f - box_height)
        box = tf.cast(tf.math.ceil(tf.stack([x0, x0 + box_width, y0, y0 + box_height], 1)), tf.int32)
        return {"choice": choice, "matrix": matrix, "axes": fast_layers.warp_axes(matrix, height, width),
                "factor": first * tf.gather(self.scale, choice), "box": box}

    def transformation(self, op_index, row):
        """Op `op_index`'s transformation, as its layer's get_random_transformation returns it, from one record row."""
        kind = self.kinds[op_index]
        matrix = row["matrix"][None]
        if kind == "constant":
            constant = self._constants[op_index]
            return None if constant is None else {key: tf.constant(value) for key, value in constant.items()}
        if kind == "rotate":
            return {"rotation_matrix": matrix, "warp_axes": row["axes"]}
        if kind == "shear":
            return {"shear_factor": tf.stack([matrix[:, 1], matrix[:, 3]], 1), "warp_axes": row["axes"]}
        if kind == "translate":
            return {"translations": -tf.stack([matrix[:, 2], matrix[:, 5]], 1), "warp_axes": row["axes"]}
        if kind == "box":
            return {"fast_box": row["box"], "apply_erasing": tf.constant([True])}
        key, shape = kind  # a factor layer: its one drawn value under its own key and shape
        return {key: tf.reshape(row["factor"], shape)}


def _draw_spec(layer):
    """(kind, {draw: (low, high)}, factor scale, constant transformation) of one RandAugment op layer."""
    if isinstance(layer, (fast_layers.FastAutoContrast, fast_layers.FastEqualization)):
        return "constant", {}, 1.0, None  # no draw: the kernel reads the image only
    if isinstance(layer, fast_layers.FixedSolarization):
        return "constant", {}, 1.0, {"additions": np.full([1, 1, 1, 1], layer.fixed_addition, np.float32),
                                     "thresholds": np.full([1, 1, 1, 1], layer.fixed_threshold, np.float32)}
    if isinstance(layer, fast_layers.FastRandomInvert) and tuple(layer.factor) == (1.0, 1.0):
        return "constant", {}, 1.0, {"apply_inversion": np.array([True])}  # u < 1 always: inverted
    if isinstance(layer, keras.layers.RandomPosterization) and layer.factor[0] == layer.factor[1]:
        shift = keras_internals.posterization_shift(layer, layer.factor[0])
        return "constant", {}, 1.0, {"shift_factor": np.array([shift], np.uint8)}
    if isinstance(layer, fast_layers.FastRandomRotation):
        return "rotate", {0: (layer.factor[0] * 360.0, layer.factor[1] * 360.0)}, 1.0, None
    if isinstance(layer, fast_layers.FastRandomShear):
        return "shear", {0: (0.0, 1.0), 1: tuple(layer.y_factor), 2: tuple(layer.x_factor)}, 1.0, None
    if isinstance(layer, fast_layers.FastRandomTranslation):
        return "translate", {0: (layer.height_lower, layer.height_upper),
                             1: (layer.width_lower, layer.width_upper)}, 1.0, None
    if isinstance(layer, fast_layers.FastRandomErasing) and tuple(layer.factor) == (1.0, 1.0):
        return "box", {0: tuple(layer.scale)}, 1.0, None  # probability 1: always erased
    if isinstance(layer, fast_layers.FastRandomColorDegeneration):
        return ("factor", [1, 1, 1, 1]), {0: tuple(layer.factor)}, 1.0, None
    if isinstance(layer, fast_layers.FastRandomContrast):
        return ("contrast_factor", [1, 1, 1, 1]), {0: (1.0 - layer.factor[0], 1.0 + layer.factor[1])}, 1.0, None
    if isinstance(layer, keras.layers.RandomBrightness):
        span = layer.value_range[1] - layer.value_range[0]
        return ("rgb_delta", [1, 1, 1, 1]), {0: tuple(layer.factor)}, float(span), None
    if isinstance(layer, fast_layers.FastRandomSharpness):
        return ("factor", [1]), {0: tuple(layer.factor)}, 1.0, None
    raise TypeError(f"RandAugment has no draw table for {type(layer).__name__}")


def compiled(function):
    """`function` as an XLA-compiled tf.function (its random draws stay outside, in TF's kernels).

    XLA fuses each op's elementwise passes into one loop over the image and runs its
    gathers and histograms several times faster than TF's CPU kernels (docs/data.md).
    The kernels use static shapes only (a draw-dependent slice size would recompile per
    draw). Where this TensorFlow has no XLA CPU compiler, the same function runs uncompiled.
    """
    return tf.function(function, jit_compile=_xla_available(), autograph=False)


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
