"""automl's RandAugment policy (2 of 16 ops per image) over Keras' augmentation layers, inside tf.data.

`keras.layers.RandAugment` computes all 11 of its ops for every image and keeps 2
with `where` (16 img/s per core at 300 px in our measurement), picks the ops once
per call (shared by a whole batch) and maps one `factor` onto one-sided ranges
(rotation 0..360*factor degrees in one direction, brightness only up, sharpness only
blur). `RandAugment` here runs automl's 16-op policy per image, each op the matching
Keras layer set to automl's strength (docs/data.md has the magnitude table), only the
chosen ops' kernels running, XLA-compiled; `RandAugmentDraws` draws what the layers
would draw in one short pass (docs/data.md, *XLA-compiled kernels and one draw pass*).
"""

import functools
import math

import keras
import numpy as np
import tensorflow as tf

from effnet_keras import _keras_internals as keras_internals
from effnet_keras.config_schema import check_randaug_magnitude
from effnet_keras.data import augment
from effnet_keras.data import fast_layers

def randaugment_ops(magnitude, fill_value=augment.GREY):
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
      one short straight-line pass of TF ops (~85 besides constants): the same numbers,
      from the same seeds, as each op's Keras layer would draw. The layers' own
      `get_random_transformation` costs 20-185 TF nodes per op, and inside a 16-way
      `tf.switch_case` all 16 branches' nodes are visited for every image (~1 us each on
      one core: ~0.7 ms per image for the draws).
    * per layer, one XLA-compiled call that switches among the 16 ops' pixel kernels (the
      Keras layers' `transform_images`, fast_layers' kernels) inside XLA, where an untaken
      branch costs nothing; the chosen branch first turns its row of draws into the op's
      transformation with Keras' arithmetic (`RandAugmentDraws.transformation`; tests check
      it equal to the layer's own draw for every op). (One call looping over the layers
      inside XLA was ~0.1 ms slower: XLA copies the image into and out of its loop;
      unrolled, it compiled for 17-20 s.)
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
            raise ValueError("RandAugment takes one [height, width, channels] image of known size. "
                             f"Received shape {shape}")
        record = self.draws(seed, self.num_layers)
        # Every op clips to (or stays inside) [0, 255] itself: no extra pass here.
        return tf.ensure_shape(self.apply_ops(image[None], record)[0], shape)

    def apply_ops(self, images, record):
        """images [1, H, W, C] through the ops record["choice"] names, in order: one compiled call per layer."""
        for layer_index in range(record["choice"].shape[0]):
            images = tf.ensure_shape(self._apply_op(images, record, tf.constant(layer_index)), images.shape)
        return images

    def _switch_op(self, images, record, layer_index):
        # The layer's row is sliced here, inside XLA (free), not as TF nodes outside.
        row = RandAugmentDraws.row(record, layer_index)
        branches = [functools.partial(self._run_op, op_index, images, row) for op_index in range(len(self.ops))]
        return tf.switch_case(row["choice"], branches)

    def _run_op(self, op_index, images, row):
        layer = self.ops[op_index][1]
        with augment.tensorflow_backend(layer):
            transformation = self.draws.transformation(op_index, row, images.shape[1], images.shape[2])
            return tf.cast(layer.transform_images(images, transformation, training=True), images.dtype)


class RandAugmentDraws:
    """The random draws of a list of RandAugment op layers: a short TF pass, the rest inside XLA.

    Every op draws from `augment.ElementSeed(op_seed)`: its k-th draw is
    `tf.random.stateless_uniform(shape, [r, k], low, high)` with r fixed by op_seed, i.e.
    `u_k * (high - low) + low` in float32 with the same u_k for every op (the first one
    or two elements of one Philox block). `__call__` (TF's kernels, once per image) draws
    u_1..u_3, scales them into the chosen op's ranges and takes the rotation angle's cosine
    and sine, as Keras computes them (XLA has its own cos and sin, which round differently).
    `transformation` turns one layer's row into the op's transformation (rotation matrix,
    shear sign, translation in pixels, erasing box, the warp's row and column terms) with
    Keras' float32 arithmetic, inside the compiled kernel, every product kept apart from
    the add after it (`fast_layers.unfused_rounding`). `tests/data/test_fast_layers.py`
    checks the result, compiled, equal to each layer's `get_random_transformation`.
    """

    _DRAWS = 3  # u_1 (two elements: the erasing box's sides), u_2, u_3
    # Columns of record["values"]: u_1 (2), u_2, u_3 in the op's ranges, then the cosine and sine of
    # the first as an angle in degrees (used by rotations only).
    _COS, _SIN = 4, 5

    def __init__(self, layers):
        self.layers = list(layers)
        self.kinds, self._constants, scale = [], [], []
        low = np.zeros([len(self.layers), self._DRAWS], np.float32)  # a draw an op does not use: u_k itself
        span = np.ones_like(low)
        for op_index, layer in enumerate(self.layers):
            kind, ranges, factor_scale, constant = _draw_spec(layer)
            self.kinds.append(kind)
            self._constants.append(constant)
            scale.append(factor_scale)
            for draw, (lo, hi) in ranges.items():  # float32 bounds and width, as tf.random.stateless_uniform
                low[op_index, draw] = np.float32(lo)
                span[op_index, draw] = np.float32(hi) - np.float32(lo)
        # u_1's two elements share draw 0's range.
        self.low, self.span = np.concatenate([low[:, :1], low], 1), np.concatenate([span[:, :1], span], 1)
        self.scale = np.asarray(scale, np.float32)

    def __call__(self, seed, num_layers, choice=None):
        """`num_layers` op choices and their draws: {"choice": int32 [L], "values": float32 [L, 6]}.

        `choice` ([L] op indices) replaces the drawn choices (the tests draw every op on the same seeds).
        """
        choices, uniforms = [], []
        for layer_index in range(num_layers):
            layer_seed = augment.fold(seed, layer_index)
            choices.append(tf.random.stateless_uniform([], layer_seed, 0, len(self.layers), dtype=tf.int32))
            element_seed = augment.ElementSeed(augment.fold(layer_seed, 7919))
            uniforms.append(tf.concat([tf.random.stateless_uniform([2 if draw == 0 else 1], element_seed.next())
                                       for draw in range(self._DRAWS)], 0))
        choice = tf.stack(choices) if choice is None else tf.convert_to_tensor(choice, tf.int32)
        # Each op's draws in its own range, as Keras' uniform computes them (in TF: XLA would fuse the add).
        values = tf.stack(uniforms) * tf.gather(self.span, choice) + tf.gather(self.low, choice)
        radians = values[:, 0] * np.float32(math.pi / 180.0)
        # Keras takes the cosine of one angle at a time, i.e. Eigen's scalar cos; on 4 or more elements
        # Eigen's vectorised cos would run, which rounds differently (measured).
        if num_layers < 4:
            cos, sin = tf.cos(radians), tf.sin(radians)
        else:
            cos = tf.concat([tf.cos(radians[i:i + 1]) for i in range(num_layers)], 0)
            sin = tf.concat([tf.sin(radians[i:i + 1]) for i in range(num_layers)], 0)
        return {"choice": choice, "values": tf.concat([values, tf.stack([cos, sin], 1)], 1)}

    @staticmethod
    def row(record, layer_index):
        """One layer's draws from a record: {"choice": int32 [], "values": float32 [6]}."""
        return {key: value[layer_index] for key, value in record.items()}

    def transformation(self, op_index, row, height, width):
        """Op `op_index`'s transformation, as its layer's get_random_transformation returns it for one
        [1, height, width, C] image, from one record row (inside the compiled kernel)."""
        kind = self.kinds[op_index]
        if kind == "constant":
            constant = self._constants[op_index]
            return None if constant is None else {key: tf.constant(value) for key, value in constant.items()}
        values = row["values"]
        first, second, third = values[0], values[2], values[3]
        # choice >> 31 is 0 (choices are >= 0), which XLA cannot know: see fast_layers.unfused_rounding.
        rounded = fast_layers.unfused_rounding(tf.bitwise.right_shift(row["choice"], 31))
        height_f, width_f = float(height), float(width)
        zero, one = tf.zeros([]), tf.ones([])
        if kind in ("rotate", "shear", "translate"):
            if kind == "rotate":  # Keras' _compute_affine_matrix with no shear, translation or scale
                cos, sin = values[self._COS], values[self._SIN]
                center_x = np.float32(0.5) * (np.float32(width) - 1)
                center_y = np.float32(0.5) * (np.float32(height) - 1)
                a1, b0 = -sin, sin
                entries = [cos, a1, (center_x - rounded(center_x * cos)) - rounded(center_y * a1),
                           b0, cos, (center_y - rounded(center_x * b0)) - rounded(center_y * cos)]
            elif kind == "shear":  # sign from u_1, y from u_2, x from u_3
                sign = tf.where(first > 0.5, -1.0, 1.0)
                entries = [one, third * sign, zero, second * sign, one, zero]
            else:  # translation: height from u_1, width from u_2, in pixels
                entries = [one, zero, -(second * width_f), zero, one, -(first * height_f)]
            matrix = tf.stack(entries + [zero, zero])[None]
            axes = fast_layers.warp_axes(matrix, height, width, rounded)
            if kind == "rotate":
                return {"rotation_matrix": matrix, "warp_axes": axes}
            if kind == "shear":
                return {"shear_factor": tf.stack([matrix[:, 1], matrix[:, 3]], 1), "warp_axes": axes}
            return {"translations": -tf.stack([matrix[:, 2], matrix[:, 5]], 1), "warp_axes": axes}
        if kind == "box":  # fast_layers.FastRandomErasing: sides from u_1, starts from u_2 and u_3
            sides = tf.sqrt(tf.maximum(values[:2], 0.0))
            box_width, box_height = rounded(sides[0] * width_f), rounded(sides[1] * height_f)
            x0, y0 = rounded(second * (width_f - box_width)), rounded(third * (height_f - box_height))
            box = tf.cast(tf.math.ceil(tf.stack([x0, x0 + box_width, y0, y0 + box_height])), tf.int32)
            return {"fast_box": box, "apply_erasing": tf.constant([True])}
        key, shape = kind  # a factor layer: its one drawn value under its own key and shape
        # rounded: the kernel adds it (brightness) or multiplies and adds (contrast) next.
        return {key: tf.reshape(rounded(first * self.scale[op_index]), shape)}


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
