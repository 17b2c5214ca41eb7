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

* geometric (rotation, shear): nearest-neighbour warp as one row-gather of
  [H*W, C] pixels at indices computed on the [H, W] grid; translation: a whole-
  pixel shift (pad + slice);
* per-channel affine maps (auto-contrast, contrast, colour degeneration): a
  1x1 convolution and `bias_add`, which TF fuses into one oneDNN kernel;
* equalisation: one `bincount` and one gather over channel-offset bins;
* erasing: the box as integer slices, not a full-size mask and fill image.

tests/pipeline/test_fast_layers.py checks every class against its Keras parent on
the same transformation. The fast kernels take one image (batch 1, as RandAugment
calls them); any other batch falls back to the parent's kernel.
"""

import keras
import tensorflow as tf

from effnet_keras import _keras_internals as keras_internals


def _single_image(images):
    shape = getattr(images, "shape", None)  # a dict of images and boxes falls back to Keras
    return shape is not None and len(shape) == 4 and shape[0] == 1


def warp_nearest(images, transform, fill_value):
    """`ImageProjectiveTransformV3` (NEAREST, CONSTANT fill) for affine transforms, as one row gather.

    images [B, H, W, C]; transform [B, 8] or [8] (a0 a1 a2 b0 b1 b2 0 0, Keras'
    layout): output pixel (x, y) reads input (a0 x + a1 y + a2, b0 x + b1 y + b2)
    rounded half away from zero (TF's std::round); outside the image it is
    `fill_value`. The projective terms must be 0 (rotation, shear and translation
    matrices are affine).
    """
    batch, height, width, channels = (images.shape[i] if images.shape[i] is not None else tf.shape(images)[i]
                                      for i in range(4))
    transform = tf.reshape(tf.cast(transform, tf.float32), [-1, 8])
    a0, a1, a2, b0, b1, b2 = (tf.reshape(transform[:, k], [-1, 1, 1]) for k in range(6))
    xs = tf.range(width, dtype=tf.float32)[None, None, :]
    ys = tf.range(height, dtype=tf.float32)[None, :, None]
    source_x = a0 * xs + (a1 * ys + a2)  # [B, H, W] from a row and a column: one full-size pass
    source_y = b0 * xs + (b1 * ys + b2)
    # round(v) lies in [0, n - 1]  <=>  -0.5 < v < n - 0.5 (halves round away from zero).
    inside = ((source_x > -0.5) & (source_x < tf.cast(width, tf.float32) - 0.5)
              & (source_y > -0.5) & (source_y < tf.cast(height, tf.float32) - 0.5))
    index = (tf.cast(tf.floor(source_y + 0.5), tf.int32) * width + tf.cast(tf.floor(source_x + 0.5), tf.int32))
    pixels = batch * height * width
    if not (isinstance(batch, int) and batch == 1):
        index += tf.range(batch)[:, None, None] * (height * width)
    index = tf.where(inside, index, pixels)  # one extra row holds the fill value
    flat = tf.concat([tf.reshape(images, [pixels, channels]),
                      tf.fill([1, channels], tf.cast(fill_value, images.dtype))], axis=0)
    return tf.reshape(tf.gather(flat, index), tf.shape(images))


def shift_image(images, shift_x, shift_y, fill_value):
    """Output pixel (x, y) = input (x + shift_x, y + shift_y), `fill_value` outside; integer shifts."""
    height, width = images.shape[1], images.shape[2]
    shift_x = tf.clip_by_value(shift_x, -width, width)
    shift_y = tf.clip_by_value(shift_y, -height, height)
    padded = tf.pad(images, [[0, 0], [tf.maximum(-shift_y, 0), tf.maximum(shift_y, 0)],
                             [tf.maximum(-shift_x, 0), tf.maximum(shift_x, 0)], [0, 0]],
                    constant_values=tf.cast(fill_value, images.dtype))
    out = padded[:, tf.maximum(shift_y, 0):tf.maximum(shift_y, 0) + height,
                 tf.maximum(shift_x, 0):tf.maximum(shift_x, 0) + width]
    return tf.ensure_shape(out, images.shape)


class _NearestWarp:
    """Mixin: Keras' geometric layer, its affine_transform replaced by `warp_nearest`."""

    def _matrix(self, transformation):
        raise NotImplementedError

    def _fast(self, images, interpolation):
        return (interpolation == "nearest" and self.fill_mode == "constant" and self.data_format == "channels_last"
                and len(images.shape) == 4 and None not in images.shape[1:])

    # Overrides keras_internals.IMAGE_TRANSFORM_HOOK (checked to exist by keras_internals.check_private_hooks).
    def _transform_images(self, images, transformation, interpolation):
        if transformation is None or not self._fast(images, interpolation):
            return super()._transform_images(images, transformation, interpolation)
        return warp_nearest(images, self._matrix(transformation), self.fill_value)


class FastRandomRotation(_NearestWarp, keras.layers.RandomRotation):
    def _matrix(self, transformation):
        return transformation["rotation_matrix"]


class FastRandomShear(_NearestWarp, keras.layers.RandomShear):
    def _matrix(self, transformation):
        return keras_internals.shear_matrix(self, transformation["shear_factor"])


class FastRandomTranslation(_NearestWarp, keras.layers.RandomTranslation):
    """Translation by whole pixels (nearest): a pad and a slice of one image, no gather."""

    def _matrix(self, transformation):
        return keras_internals.translation_matrix(self, transformation["translations"])

    def _transform_images(self, images, transformation, interpolation):
        if transformation is None or not self._fast(images, interpolation) or not _single_image(images):
            return super()._transform_images(images, transformation, interpolation)
        # Keras' matrix reads input x - dx at output x: round(x - dx) = x + round(-dx) for integer x
        # (they differ only when dx is exactly a half, where std::round's side depends on x's sign).
        shifts = tf.cast(_round_half_away(-tf.reshape(transformation["translations"], [2])), tf.int32)
        return shift_image(images, shifts[0], shifts[1], self.fill_value)


def _round_half_away(values):
    return tf.sign(values) * tf.floor(tf.abs(values) + 0.5)


def _channel_major(image):
    """[1, H, W, C] -> [C, H*W]: per-channel reductions along the fast axis."""
    return tf.transpose(tf.reshape(image, [-1, image.shape[-1]]))


def _per_channel_affine(image, matrix, offset=None, clip=True):
    """image [1, H, W, C] -> clip(pixels @ matrix + offset), matrix [C, C], offset [C].

    A 1x1 convolution and a bias_add: TF's graph optimiser fuses the two into one
    oneDNN kernel, the fastest per-channel affine map on CPU (measured in docs/data.md).
    """
    out = tf.nn.conv2d(image, matrix[None, None], strides=1, padding="VALID")
    if offset is not None:
        out = tf.nn.bias_add(out, offset)
    return tf.clip_by_value(out, 0.0, 255.0) if clip else out


def _channel_means(image):
    """[1, H, W, C] -> [C]: a [1, H*W] x [H*W, C] matmul, faster than a reduction over the pixel axis."""
    pixels = tf.reshape(image, [-1, image.shape[-1]])
    return tf.matmul(tf.fill([1, tf.shape(pixels)[0]], 1.0 / tf.cast(tf.shape(pixels)[0], tf.float32)), pixels)[0]


class FastAutoContrast(keras.layers.AutoContrast):
    """Per channel: [min, max] stretched to [0, 255]; a constant channel stays as it is (Keras: NaN -> input)."""

    def transform_images(self, images, transformation=None, training=True):
        if not _single_image(images) or tuple(self.value_range) != (0, 255):
            return super().transform_images(images, transformation, training)
        images = tf.cast(images, tf.float32)
        channels = _channel_major(images)
        low, high = tf.reduce_min(channels, axis=1), tf.reduce_max(channels, axis=1)
        stretch = high > low
        scale = tf.where(stretch, 255.0 / tf.where(stretch, high - low, 1.0), 1.0)
        offset = tf.where(stretch, -low * scale, 0.0)
        return _per_channel_affine(images, tf.linalg.diag(scale), offset)


class FastRandomContrast(keras.layers.RandomContrast):
    """(x - channel mean) * factor + channel mean, clipped."""

    def transform_images(self, images, transformation, training=True):
        if not training or not _single_image(images) or tuple(self.value_range) != (0, 255):
            return super().transform_images(images, transformation, training)
        factor = tf.reshape(tf.cast(transformation["contrast_factor"], tf.float32), [])
        images = tf.cast(images, tf.float32)
        mean = _channel_means(images)
        channels = images.shape[-1]
        return _per_channel_affine(images, factor * tf.eye(channels), mean * (1.0 - factor))


class FastRandomColorDegeneration(keras.layers.RandomColorDegeneration):
    """x + factor * (grey - x), clipped; grey uses rgb_to_grayscale's weights, so it is one 3x3 map."""

    GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)

    def transform_images(self, images, transformation=None, training=True):
        if not training or not _single_image(images) or images.shape[-1] != 3 or self.data_format != "channels_last":
            return super().transform_images(images, transformation, training)
        factor = tf.reshape(tf.cast(transformation["factor"], tf.float32), [])
        to_grey = tf.tile(tf.constant(self.GREY_WEIGHTS, tf.float32)[:, None], [1, 3])  # [from, to]
        matrix = (1.0 - factor) * tf.eye(3) + factor * to_grey
        low, high = self.value_range
        out = _per_channel_affine(tf.cast(images, tf.float32), matrix, clip=False)
        return tf.clip_by_value(out, float(low), float(high))


class FastEqualization(keras.layers.Equalization):
    """Per-channel histogram equalisation with Keras' bins, look-up table and rounding.

    One `bincount` and one gather over the pixel-major image: each channel's values are
    offset by channel * bins, so the three histograms and tables sit side by side.
    """

    def transform_images(self, images, transformation, training=True):
        if not training or not _single_image(images) or tuple(self.value_range) != (0, 255) \
                or self.data_format != "channels_last" or int(self.bins) != 256:
            return super().transform_images(images, transformation, training)
        images = tf.cast(images, tf.float32)
        channels = images.shape[-1]
        # Keras bins int(x * 255 / 255); for x in [0, 255] (RandAugment's input) that is int(x), up
        # to one ulp below an integer. Channel c's bins are offset by 256 c: an exact float add done
        # by `_per_channel_affine` (a broadcast add of a [C] vector is 3x slower on CPU).
        offsets = tf.range(channels, dtype=tf.float32) * 256.0
        index = tf.cast(_per_channel_affine(images, tf.eye(channels), offsets, clip=False), tf.int32)
        hist = tf.reshape(tf.math.bincount(index, minlength=256 * channels, maxlength=256 * channels),
                          [channels, 256])
        cdf = tf.cumsum(hist, axis=1)
        cdf_min = tf.reduce_min(tf.where(cdf > 0, cdf, cdf[:, -1:]), axis=1, keepdims=True)
        denominator = cdf[:, -1:] - cdf_min
        denominator = tf.where(denominator == 0, tf.ones_like(denominator), denominator)
        table = tf.clip_by_value(tf.round(tf.cast((cdf - cdf_min) * 255, tf.float32)
                                          / tf.cast(denominator, tf.float32)), 0.0, 255.0)
        equalized = tf.reshape(tf.gather(tf.reshape(table, [-1]), index), tf.shape(images))
        # A channel with at most one non-empty bin stays as it is (rare: a constant channel).
        flat = tf.math.count_nonzero(hist, axis=1) <= 1
        return tf.cond(tf.reduce_any(flat),
                       lambda: tf.where(tf.reshape(flat, [1, 1, 1, -1]), images, equalized),
                       lambda: equalized)


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
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        box = transformation["fast_box"]
        x0, x1 = tf.clip_by_value(box[0], 0, width), tf.clip_by_value(box[1], 0, width)
        y0, y1 = tf.clip_by_value(box[2], 0, height), tf.clip_by_value(box[3], 0, height)
        x1, y1 = tf.maximum(x0, x1), tf.maximum(y0, y1)
        fill = min(max(float(self.fill_value), float(self.value_range[0])), float(self.value_range[1]))
        band = images[:, y0:y1]
        band = tf.concat([band[:, :, :x0], tf.fill([1, y1 - y0, x1 - x0, channels], fill), band[:, :, x1:]], axis=2)
        erased = tf.concat([images[:, :y0], band, images[:, y1:]], axis=1)
        erased = tf.ensure_shape(erased, images.shape)
        return tf.cond(tf.reshape(transformation["apply_erasing"], []), lambda: erased, lambda: images)
