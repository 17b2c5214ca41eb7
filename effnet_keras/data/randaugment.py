"""automl's RandAugment policy (2 of 16 ops per image) over Keras' augmentation layers, inside tf.data.

`keras.layers.RandAugment` computes all 11 of its ops for every image and keeps 2
with `where` (16 img/s per core at 300 px in our measurement), picks the ops once
per call (shared by a whole batch) and maps one `factor` onto one-sided ranges
(rotation 0..360*factor degrees in one direction, brightness only up, sharpness only
blur). `RandAugment` here runs automl's 16-op policy per image, each op the matching
Keras layer set to automl's strength (docs/data.md has the magnitude table), only the
chosen ops' kernels running, XLA-compiled; `randaugment_draws.RandAugmentDraws` draws
what the layers would draw, for a batch of seeds at once (docs/data.md, *XLA-compiled
kernels and batched draws*).
"""

import functools

import keras
import tensorflow as tf

from effnet_keras.config_schema import check_randaug_magnitude
from effnet_keras.data import augment
from effnet_keras.data import fast_layers
from effnet_keras.data.randaugment_draws import RandAugmentDraws


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
    when traced) and an int64 [2] seed. It runs the two stages the input pipeline runs
    apart (pipeline.py):

    * `draw(seeds)`: for a batch of seeds, every layer's op choice and that op's random
      numbers, the same numbers from the same seeds as each op's Keras layer would draw
      (`RandAugmentDraws.uniforms`: TF's stateless Philox as vector ops over the batch, one
      compiled call; then `in_ranges`, a few TF ops). Drawn per image as TF kernels they
      cost ~85 ops and ~0.17 ms per image on one core; the pipeline draws them for 64 image
      seeds at a time, beside the seed stream. (The layers' own `get_random_transformation` costs 20-185 TF nodes per
      op, and inside a 16-way `tf.switch_case` all 16 branches' nodes would run.)
    * `apply(image, record)`: per layer, one XLA-compiled call that switches among the 16
      ops' pixel kernels (the Keras layers' `transform_images`, fast_layers' kernels)
      inside XLA, where an untaken branch costs nothing; the chosen branch first turns its
      row of draws into the op's transformation with Keras' arithmetic
      (`RandAugmentDraws.transformation`; tests check it equal to the layer's own draw for
      every op). (One call looping over the layers inside XLA was ~0.1 ms slower: XLA
      copies the image into and out of its loop; unrolled, it compiled for 17-20 s.)
    """

    def __init__(self, magnitude, num_layers=2):
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 0:
            raise ValueError(f"data.ra_num_layers must be an integer >= 0. Received: {num_layers!r}")
        self.magnitude, self.num_layers = float(magnitude), num_layers
        self.ops = randaugment_ops(magnitude)
        self.draws = RandAugmentDraws([layer for _, layer in self.ops])
        self._apply_op = compiled(self._switch_op)
        self._draw_uniforms = compiled(functools.partial(self.draws.uniforms, num_layers=num_layers))

    def __call__(self, image, seed):
        if self.num_layers == 0:
            return image
        record = self.draw(tf.convert_to_tensor(seed)[None])
        return self.apply(image, RandAugmentDraws.row(record, 0))

    def draw(self, seeds, choice=None, fold_in=None):
        """{"choice": int32 [N, L], "values": float32 [N, L, 6]}: the draws of N images from their seeds (int [N, 2]).

        `fold_in` (an int): each seed is fold(seed, fold_in) first (the pipeline passes image seeds and 2).
        `choice` ([L] op indices) replaces the drawn choices (the tests draw every op on the same seeds).
        """
        choice = None if choice is None else tf.constant(choice, tf.int32)
        return self.draws.in_ranges(self._draw_uniforms(seeds, choice=choice, fold_in=fold_in))

    def apply(self, image, record):
        """One [H, W, C] image through the ops its record ({"choice": [L], "values": [L, 6]}) names, in order."""
        shape = image.shape
        if len(shape) != 3 or None in shape:
            raise ValueError("RandAugment takes one [height, width, channels] image of known size. "
                             f"Received shape {shape}")
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
