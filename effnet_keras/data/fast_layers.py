"""Keras 3 augmentation layers with faster CPU kernels, for one image at a time inside tf.data.

RandAugment runs two ops on every training image, one image per tf.data call,
on a single CPU thread. At 300 px several Keras layers spend 1.5-4.5 ms there
(measured per op, docs/data.md): the geometric ones in
`ImageProjectiveTransformV3`'s nearest kernel, the others in passes that
broadcast a [C] or [B, 1, 1, 1] tensor over the image, which TF's CPU kernels
run several times slower than a same-shape pass. Each class below is the Keras
layer itself (same constructor, same `get_random_transformation`, so the same
random draws from the same seed and the same matrices) with only the pixel
kernel replaced:

* geometric (rotation, shear, translation): nearest-neighbour warp as one row-gather
  of [H*W, C] pixels at indices computed from row and column terms drawn with the
  transformation (`warp_axes`);
* per-channel affine maps (auto-contrast, contrast, colour degeneration) and
  sharpness: elementwise expressions XLA fuses into one pass;
* equalisation: one segment sum and one gather over channel-offset bins;
* erasing: the box as a mask from integer bounds.

RandAugment runs these kernels XLA-compiled (randaugment.RandAugment.apply_ops), so each is
written with static shapes only. tests/data/test_fast_layers.py checks every class
against its Keras parent on the same transformation, and every RandAugment op
compiled against uncompiled. The fast kernels take one image (batch 1, as
RandAugment calls them); any other batch falls back to the parent's kernel.
"""

import keras
import tensorflow as tf

from effnet_keras import _keras_internals as keras_internals


def _single_image(images):
    shape = getattr(images, "shape", None)  # a dict of images and boxes falls back to Keras
    return shape is not None and len(shape) == 4 and shape[0] == 1


def warp_axes(transform, height, width, rounded=None):
    """An affine warp's source coordinates as row and column terms, [B, W] and [B, H] each.

    Output pixel (x, y) reads input (a0 x + (a1 y + a2), b0 x + (b1 y + b2)) (Keras'
    layout a0 a1 a2 b0 b1 b2 0 0). The pixel pass then only adds a row term to a column
    term. Every product here is rounded to float32 before it is added, as TF's kernels
    round it: XLA's CPU compiler contracts a multiply feeding an add into one fused
    multiply-add, whose different rounding would move a coordinate that lies within an
    ulp of a half to the neighbouring pixel. Computed inside XLA, pass `rounded`
    (`unfused_rounding`), which keeps a product from fusing into the add after it.
    """
    rounded = rounded or (lambda value: value)
    transform = tf.reshape(tf.cast(transform, tf.float32), [-1, 8])
    a0, a1, a2, b0, b1, b2 = (rounded(transform[:, k:k + 1]) for k in range(6))
    xs = tf.range(width, dtype=tf.float32)[None, :]
    ys = tf.range(height, dtype=tf.float32)[None, :]
    return {"x_by_column": rounded(a0 * xs), "x_by_row": rounded(a1 * ys) + a2,
            "y_by_column": rounded(b0 * xs), "y_by_row": rounded(b1 * ys) + b2}


def unfused_rounding(opaque_zero):
    """value -> value, unchanged, but opaque to XLA: a product passed through it is rounded to float32
    before any add, as in TF's kernels (XLA's CPU compiler would contract multiply + add into one fused
    multiply-add, rounding once). The float's bits go through an integer xor with `opaque_zero`, an int32
    zero XLA cannot prove to be zero (computed from an input), which no compiler pass can see through."""
    def rounded(value):
        return tf.bitcast(tf.bitwise.bitwise_xor(tf.bitcast(value, tf.int32), opaque_zero), tf.float32)
    return rounded


def warp_nearest(images, transform, fill_value, axes=None):
    """`ImageProjectiveTransformV3` (NEAREST, CONSTANT fill) for affine transforms, as one row gather.

    images [B, H, W, C]; transform [B, 8] or [8] (Keras' layout, see `warp_axes`), or
    None with the precomputed `axes`: output pixel (x, y) reads the input at its source
    coordinates rounded half away from zero (TF's std::round); outside the image it
    is `fill_value`. The projective terms must be 0 (rotation, shear and translation
    matrices are affine).
    """
    batch, height, width, channels = (images.shape[i] if images.shape[i] is not None else tf.shape(images)[i]
                                      for i in range(4))
    axes = axes if axes is not None else warp_axes(transform, height, width)
    source_x = axes["x_by_column"][:, None, :] + axes["x_by_row"][:, :, None]  # [B, H, W]: one full-size pass
    source_y = axes["y_by_column"][:, None, :] + axes["y_by_row"][:, :, None]
    # round(v) lies in [0, n - 1]  <=>  -0.5 < v < n - 0.5 (halves round away from zero).
    inside = ((source_x > -0.5) & (source_x < tf.cast(width, tf.float32) - 0.5)
              & (source_y > -0.5) & (source_y < tf.cast(height, tf.float32) - 0.5))
    index = (tf.cast(tf.floor(source_y + 0.5), tf.int32) * width + tf.cast(tf.floor(source_x + 0.5), tf.int32))
    if not (isinstance(batch, int) and batch == 1):
        index += tf.range(batch)[:, None, None] * (height * width)
    # Outside pixels read pixel 0 and are then replaced by the fill: a select after the gather, not a copy
    # of the image with a fill row appended (~0.2 ms less per 300 px image compiled).
    pixels = tf.gather(tf.reshape(images, [-1, channels]), tf.where(inside, index, 0))
    return tf.where(inside[..., None], pixels, tf.cast(fill_value, images.dtype))


class _NearestWarp:
    """Mixin: Keras' geometric layer, its affine_transform replaced by `warp_nearest`.

    The drawn transformation also carries the warp's row and column terms (`warp_axes`);
    RandAugment computes them inside its compiled kernels, with `unfused_rounding`.
    """

    def _matrix(self, transformation):
        raise NotImplementedError

    def _fast(self, images, interpolation):
        return (interpolation == "nearest" and self.fill_mode == "constant" and self.data_format == "channels_last"
                and len(images.shape) == 4 and None not in images.shape[1:])

    def get_random_transformation(self, data, training=True, seed=None):
        transformation = super().get_random_transformation(data, training=training, seed=seed)
        images = data["images"] if isinstance(data, dict) else data
        if transformation is not None and self._fast(images, self.interpolation):
            transformation["warp_axes"] = warp_axes(self._matrix(transformation), images.shape[1], images.shape[2])
        return transformation

    # Overrides keras_internals.IMAGE_TRANSFORM_HOOK (checked to exist by keras_internals.check_private_hooks).
    def _transform_images(self, images, transformation, interpolation):
        if transformation is None or not self._fast(images, interpolation):
            return super()._transform_images(images, transformation, interpolation)
        axes = transformation.get("warp_axes")  # drawn with the transformation; else made from the matrix here
        return warp_nearest(images, self._matrix(transformation) if axes is None else None, self.fill_value,
                            axes=axes)


class FastRandomRotation(_NearestWarp, keras.layers.RandomRotation):
    def _matrix(self, transformation):
        return transformation["rotation_matrix"]


class FastRandomShear(_NearestWarp, keras.layers.RandomShear):
    def _matrix(self, transformation):
        return keras_internals.shear_matrix(self, transformation["shear_factor"])


class FastRandomTranslation(_NearestWarp, keras.layers.RandomTranslation):
    def _matrix(self, transformation):
        return keras_internals.translation_matrix(self, transformation["translations"])


class FastAutoContrast(keras.layers.AutoContrast):
    """Per channel: [min, max] stretched to [0, 255]; a constant channel stays as it is (Keras: NaN -> input)."""

    def transform_images(self, images, transformation=None, training=True):
        if not _single_image(images) or None in images.shape[1:] or tuple(self.value_range) != (0, 255):
            return super().transform_images(images, transformation, training)
        images = tf.cast(images, tf.float32)
        low, high = _channel_min_max(images)
        stretch = high > low
        scale = tf.where(stretch, 255.0 / tf.where(stretch, high - low, 1.0), 1.0)
        offset = tf.where(stretch, -low * scale, 0.0)
        return tf.clip_by_value(images * scale + offset, 0.0, 255.0)


def _channel_min_max(images):
    """Per-channel min and max of one [1, H, W, C] image, in two row-wise passes.

    Min and max do not depend on the order of reduction, so this equals reduce_min/max over
    (0, 1, 2), which XLA's CPU compiler runs ~5x slower: a reduction keeping only the
    3-wide minor axis is not vectorised; one keeping the W*C-wide row is.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    rows = tf.reshape(images, [height, width * channels])
    low = tf.reduce_min(tf.reshape(tf.reduce_min(rows, 0), [width, channels]), 0)
    high = tf.reduce_max(tf.reshape(tf.reduce_max(rows, 0), [width, channels]), 0)
    return low, high


class FastRandomContrast(keras.layers.RandomContrast):
    """(x - channel mean) * factor + channel mean, clipped."""

    def transform_images(self, images, transformation, training=True):
        if not training or not _single_image(images) or tuple(self.value_range) != (0, 255):
            return super().transform_images(images, transformation, training)
        factor = tf.reshape(tf.cast(transformation["contrast_factor"], tf.float32), [])
        images = tf.cast(images, tf.float32)
        mean = tf.reduce_mean(images, axis=(0, 1, 2))
        return tf.clip_by_value(images * factor + mean * (1.0 - factor), 0.0, 255.0)


class FastRandomColorDegeneration(keras.layers.RandomColorDegeneration):
    """x + factor * (grey - x), clipped; grey with rgb_to_grayscale's weights."""

    GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)

    def transform_images(self, images, transformation=None, training=True):
        if not training or not _single_image(images) or images.shape[-1] != 3 or self.data_format != "channels_last":
            return super().transform_images(images, transformation, training)
        factor = tf.reshape(tf.cast(transformation["factor"], tf.float32), [])
        images = tf.cast(images, tf.float32)
        red, green, blue = tf.unstack(images, axis=-1)
        weight_r, weight_g, weight_b = self.GREY_WEIGHTS
        grey = (red * weight_r + green * weight_g + blue * weight_b)[..., None]
        low, high = self.value_range
        return tf.clip_by_value(images + factor * (grey - images), float(low), float(high))


class FastEqualization(keras.layers.Equalization):
    """Per-channel histogram equalisation with Keras' bins, look-up table and rounding.

    One `bincount` and one gather over the pixel-major image: each channel's values are
    offset by channel * bins, so the three histograms and tables sit side by side.
    """

    def transform_images(self, images, transformation, training=True):
        if not training or not _single_image(images) or tuple(self.value_range) != (0, 255) \
                or self.data_format != "channels_last" or int(self.bins) != 256 or None in images.shape[1:] \
                or images.shape[1] * images.shape[2] >= 2**24:
            return super().transform_images(images, transformation, training)
        images = tf.cast(images, tf.float32)
        channels = images.shape[-1]
        # Keras bins int(x * 255 / 255); for x in [0, 255] (RandAugment's input) that is int(x), up
        # to one ulp below an integer. Channel c's bins are offset by 256 c, so one segment sum
        # counts all three (float counts: exact below 2**24 pixels, and XLA's fastest scatter).
        index = tf.cast(images, tf.int32) + tf.range(channels) * 256
        counts = tf.math.unsorted_segment_sum(tf.ones_like(index, tf.float32), index, 256 * channels)
        hist = tf.reshape(tf.cast(counts, tf.int32), [channels, 256])
        cdf = tf.cumsum(hist, axis=1)
        cdf_min = tf.reduce_min(tf.where(cdf > 0, cdf, cdf[:, -1:]), axis=1, keepdims=True)
        denominator = cdf[:, -1:] - cdf_min
        denominator = tf.where(denominator == 0, tf.ones_like(denominator), denominator)
        table = tf.clip_by_value(tf.round(tf.cast((cdf - cdf_min) * 255, tf.float32)
                                          / tf.cast(denominator, tf.float32)), 0.0, 255.0)
        # Each channel's table is non-decreasing (a clipped, rounded, scaled cdf), so sorting it changes
        # nothing. The sort is there for XLA: without it XLA fuses the table's division and rounding into
        # the gather and recomputes them for each of the H*W*C lookups (0.95 ms at 300 px); XLA never fuses
        # a sort, so the 768 entries are computed once (the lookup then takes ~0.2 ms).
        table = tf.sort(table, axis=1)
        equalized = tf.reshape(tf.gather(tf.reshape(table, [-1]), index), tf.shape(images))
        # A channel with at most one non-empty bin stays as it is (rare: a constant channel).
        flat = tf.math.count_nonzero(hist, axis=1) <= 1
        return tf.where(tf.reshape(flat, [1, 1, 1, -1]), images, equalized)


class FastRandomSharpness(keras.layers.RandomSharpness):
    """x + (1 - 2 factor) * (smooth(x) - x), clipped; smooth = Keras' 3x3 kernel (1/13, centre 5/13), zero-padded.

    The 3x3 depthwise convolution as nine shifted slices of one padded image: XLA fuses
    them into one pass (its CPU depthwise convolution takes ~14 ms at 300 px).
    """

    def transform_images(self, images, transformation=None, training=True):
        if not training or not _single_image(images) or self.data_format != "channels_last" \
                or None in images.shape[1:]:
            return super().transform_images(images, transformation, training)
        images = tf.cast(images, tf.float32)
        height, width = images.shape[1], images.shape[2]
        padded = tf.pad(images, [[0, 0], [1, 1], [1, 1], [0, 0]])
        ring = tf.add_n([padded[:, dy:dy + height, dx:dx + width] for dy in range(3) for dx in range(3)
                         if (dy, dx) != (1, 1)])
        smoothed = ring * (1.0 / 13.0) + images * (5.0 / 13.0)
        factor = tf.reshape(tf.cast(transformation["factor"], tf.float32), []) * 2.0
        low, high = self.value_range
        return tf.clip_by_value(images + (1.0 - factor) * (smoothed - images), float(low), float(high))


class FastRandomInvert(keras.layers.RandomInvert):
    def transform_images(self, images, transformation, training=True):
        if not training or not _single_image(images):
            return super().transform_images(images, transformation, training)
        images = tf.cast(images, tf.float32)
        top = float(self.value_range[1])
        return tf.cond(tf.reshape(transformation["apply_inversion"], []), lambda: top - images, lambda: images)


class FixedSolarization(keras.layers.Solarization):
    """Keras' Solarization at a fixed addition and threshold: clip(x + a), inverted where >= t.

    (Keras draws both from ranges; automl's Solarize and our SolarizeAdd stand-in fix them.)
    """

    def __init__(self, threshold, addition=0.0, **kwargs):
        super().__init__(addition_factor=0.0, threshold_factor=0.0, value_range=(0, 255), **kwargs)
        self.fixed_threshold, self.fixed_addition = float(threshold), float(addition)

    def get_random_transformation(self, data, training=True, seed=None):
        return {"additions": tf.fill([1, 1, 1, 1], self.fixed_addition),
                "thresholds": tf.fill([1, 1, 1, 1], self.fixed_threshold)}

    def transform_images(self, images, transformation, training=True):
        if not training or not _single_image(images):
            return super().transform_images(images, transformation, training)
        images = tf.cast(images, tf.float32)
        if self.fixed_addition:
            images = tf.minimum(images + self.fixed_addition, 255.0)  # >= 0 stays >= 0
        inverted = tf.cast(images >= self.fixed_threshold, tf.float32)
        return images + inverted * (255.0 - 2.0 * images)

    def get_config(self):
        # The parent's ranges are fixed by __init__; the fixed values are what a copy needs.
        config = super().get_config()
        for key in ("addition_factor", "threshold_factor", "value_range"):
            config.pop(key, None)
        return {**config, "threshold": self.fixed_threshold, "addition": self.fixed_addition}


class FastRandomErasing(keras.layers.RandomErasing):
    """Keras' RandomErasing with a constant fill: the same box draws, the box pasted as slices.

    Keras' mask covers the columns x0 <= c < x1 (rows likewise), i.e. ceil(x0)..ceil(x1) - 1.
    """

    def get_random_transformation(self, data, training=True, seed=None):
        if not training or not _single_image(data) or not isinstance(self.fill_value, (int, float)) \
                or self.data_format != "channels_last":
            return super().get_random_transformation(data, training, seed)
        seed = seed or keras_internals.layer_seed_generator(self)
        height, width = data.shape[1], data.shape[2]
        # The parent's draws, in its order: box sides, x then y offsets, probability, threshold.
        sides = tf.sqrt(self.backend.random.uniform((1, 2), self.scale[0], self.scale[1], seed=seed))
        x0, x1 = keras_internals.crop_bounds(self, 1, width, sides[:, 0], seed)
        y0, y1 = keras_internals.crop_bounds(self, 1, height, sides[:, 1], seed)
        probability = self.backend.random.uniform((1,), self.factor[0], self.factor[1], seed=seed)
        threshold = self.backend.random.uniform((1,), 0.0, 1.0, seed=seed)
        corners = tf.cast(tf.math.ceil(tf.concat([x0, x1, y0, y1], 0)), tf.int32)
        return {"fast_box": corners, "apply_erasing": threshold < probability}

    def transform_images(self, images, transformation=None, training=True):
        if not training or transformation is None or "fast_box" not in transformation:
            return super().transform_images(images, transformation, training)
        images = tf.cast(images, tf.float32)
        height, width = images.shape[1], images.shape[2]
        box = transformation["fast_box"]
        rows, columns = tf.range(height)[:, None], tf.range(width)[None, :]
        # A mask, not slices: slice sizes that depend on the draw would make XLA compile per box.
        inside = (rows >= box[2]) & (rows < box[3]) & (columns >= box[0]) & (columns < box[1])
        inside &= tf.reshape(transformation["apply_erasing"], [])
        fill = min(max(float(self.fill_value), float(self.value_range[0])), float(self.value_range[1]))
        return tf.where(inside[None, :, :, None], fill, images)
