"""RandAugment's random draws for a batch of seeds, and each op's transformation from its row of draws.

`randaugment.RandAugment` draws with `RandAugmentDraws.uniforms` (compiled) and `in_ranges`, and
its compiled per-layer call turns a row into the chosen op's transformation with `transformation`.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from effnet_keras import _keras_internals as keras_internals
from effnet_keras.data import fast_layers
from effnet_keras.data import philox


class RandAugmentDraws:
    """The random draws of a list of RandAugment op layers, for a batch of seeds at once.

    Every op draws from `augment.ElementSeed(op_seed)`: its k-th draw is
    `tf.random.stateless_uniform(shape, [r, k], low, high)` with r fixed by op_seed, i.e.
    `u_k * (high - low) + low` in float32 with the same u_k for every op (the first one
    or two elements of one Philox block). `uniforms` computes the op choices and u_1..u_3 with
    TF's stateless Philox written as integer ops (`philox`, bit-exact) over a batch of
    seeds; `in_ranges` scales them into the chosen ops' ranges and adds the cosine and
    sine of the first as an angle (TF's kernels, a few ops per batch). `transformation`
    turns one layer's row into the op's transformation (rotation matrix, shear sign,
    translation in pixels, erasing box, the warp's row and column terms) with
    Keras' float32 arithmetic, inside the compiled kernel, every product kept apart from
    the add after it (`fast_layers.unfused_rounding`). `tests/data/test_fast_layers.py`
    checks the result, compiled, equal to each layer's `get_random_transformation`.
    """

    _DRAWS = 3  # u_1 (two elements: the erasing box's sides), u_2, u_3
    _ELEMENT_SEED_FOLD = 7919  # each layer's ops draw from fold(fold(seed, layer), 7919)
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

    def uniforms(self, seeds, num_layers, choice=None, fold_in=None):
        """`num_layers` op choices and their uniforms for each seed (int [N, 2]):
        {"choice": int32 [N, L], "uniforms": float32 [N, L, 4]} (u_1's two elements, u_2, u_3, in [0, 1)).
        Layer l's choice is `tf.random.stateless_uniform([], fold(seed, l), 0, 16, tf.int32)` and its op
        draws from `ElementSeed(fold(fold(seed, l), 7919))`, as the layers would.

        `choice` ([L] op indices) replaces the drawn choices for every seed; `fold_in` (an int) is folded into
        every seed first. Integer ops only (XLA-compiled in `RandAugment.draw`); `in_ranges` scales them.
        """
        seeds = tf.cast(seeds, tf.int64)
        if fold_in is not None:
            seeds = philox.fold_in(seeds, fold_in)
        choices, uniforms = [], []
        for layer_index in range(num_layers):
            layer_seed = philox.fold_in(seeds, layer_index)
            choices.append(philox.uniform_int(philox.first_words(layer_seed)[0], 0, len(self.layers)))
            element_seed = philox.fold_in(layer_seed, self._ELEMENT_SEED_FOLD)
            # ElementSeed's k-th draw: fold(element seed, k), k = 1, 2, 3; u_1 takes two elements.
            words = [philox.first_words(philox.fold_in(element_seed, draw + 1)) for draw in range(self._DRAWS)]
            uniforms.append(tf.stack([philox.uniform(words[0][0]), philox.uniform(words[0][1]),
                                      philox.uniform(words[1][0]), philox.uniform(words[2][0])], -1))
        drawn = tf.stack(choices, 1)  # [N, L]
        if choice is None:
            choice = drawn
        else:
            choice = tf.broadcast_to(tf.cast(choice, tf.int32)[None], tf.shape(drawn))
        return {"choice": choice, "uniforms": tf.stack(uniforms, 1)}

    def in_ranges(self, record):
        """A record from `uniforms` -> {"choice", "values": [..., 6]}: each uniform scaled into the chosen op's
        range, then the cosine and sine of the first as an angle in degrees, as Keras computes them.

        TF's kernels, not XLA: XLA's CPU compiler would fuse the multiply and the add (one rounding, where
        Keras' uniform rounds twice; measured: angles one ulp off). Keras takes the cosine of one angle at a
        time, i.e. Eigen's scalar cos; on 4 or more values Eigen's vectorised cos runs, which rounds
        differently (measured), so the angles go through cos and sin 3 at a time.
        """
        choice = record["choice"]
        values = record["uniforms"] * tf.gather(self.span, choice) + tf.gather(self.low, choice)
        radians = tf.reshape(values[..., 0] * np.float32(math.pi / 180.0), [-1])
        count = radians.shape[0]
        if count is None:
            raise ValueError("RandAugment draws a static number of seeds at a time.")
        pieces = [radians[start:start + 3] for start in range(0, count, 3)]
        cos = tf.reshape(tf.concat([tf.cos(piece) for piece in pieces], 0), tf.shape(values)[:-1])
        sin = tf.reshape(tf.concat([tf.sin(piece) for piece in pieces], 0), tf.shape(values)[:-1])
        return {"choice": choice, "values": tf.concat([values, tf.stack([cos, sin], -1)], -1)}

    @staticmethod
    def row(record, index):
        """Row `index` of a record: one image's draws from a batch's, or one layer's from an image's."""
        return {key: value[index] for key, value in record.items()}

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
