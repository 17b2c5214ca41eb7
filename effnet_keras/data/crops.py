"""Per-image decode, crop and resize. Output float32 [size, size, 3] in [0, 255]; the models normalise inside
(their "preprocessing", effnet_keras.preprocessing, is the input normalisation only).

`image` is encoded bytes (JPEG, or PNG/GIF/BMP as TFDS stores CIFAR) or uint8
[H, W, 3] pixels. JPEGs are cropped while decoding (`decode_and_crop_jpeg`
decodes only the window), other formats are decoded, then cropped.

Train (EfficientNet / inception crop): a box of area `area_min`..1 of the image
and aspect 3/4..4/3 (`stateless_sample_distorted_bounding_box`, the whole image
when 10 tries find none), bilinear resize, random horizontal flip.
Eval: centre square of side size / (size + 32) of the shorter side, resize
(`center_crop=False`: plain resize of the whole image). Fine-tune train: resize
the whole image (automl's `ft` path), flip.

All randomness is stateless and comes from a per-image `seed` (int64 [2]) so
a seeded pipeline is reproducible however tf.data schedules it.
"""

import tensorflow as tf

ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_PADDING = 32
MAX_CROP_ATTEMPTS = 10


def _decode_window(image, window_fn):
    """Crop `image` to window_fn(shape) -> (offset_y, offset_x, height, width), decoding if encoded."""
    if image.dtype != tf.string:
        offset_y, offset_x, height, width = window_fn(tf.shape(image))
        return image[offset_y:offset_y + height, offset_x:offset_x + width, :3]

    def jpeg():
        offset_y, offset_x, height, width = window_fn(tf.image.extract_jpeg_shape(image))
        return tf.image.decode_and_crop_jpeg(image, tf.stack([offset_y, offset_x, height, width]), channels=3)

    def other():
        decoded = tf.io.decode_image(image, channels=3, expand_animations=False)
        offset_y, offset_x, height, width = window_fn(tf.shape(decoded))
        return decoded[offset_y:offset_y + height, offset_x:offset_x + width, :]

    return tf.cond(tf.io.is_jpeg(image), jpeg, other)


def _resize(image, size):
    # Bilinear weights are convex: uint8 in, float32 in [0, 255] out, no clip needed.
    image = tf.image.resize(image, (size, size), method="bilinear", antialias=False)
    return tf.ensure_shape(image, [size, size, 3])


def random_crop(image, size, area_min, seed):
    """Inception-style crop (area area_min..1, aspect 3/4..4/3) resized to size x size."""
    if not 0.0 < area_min <= 1.0:
        raise ValueError(f"data.crop_area_min must be in (0, 1]. Received: {area_min}")

    def window(shape):
        begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.cast(shape, tf.int32),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seed,
            min_object_covered=0.0,
            aspect_ratio_range=ASPECT_RATIO_RANGE,
            area_range=(float(area_min), 1.0),
            max_attempts=MAX_CROP_ATTEMPTS,
            use_image_if_no_bounding_boxes=True,
        )
        return begin[0], begin[1], extent[0], extent[1]

    return _resize(_decode_window(image, window), size)


def center_crop(image, size, crop=True):
    """Eval: centre square of side size/(size+32) of the shorter side (crop=False: whole image), resized."""

    def window(shape):
        height, width = shape[0], shape[1]
        if not crop:
            return 0, 0, height, width
        fraction = size / (size + CROP_PADDING)
        side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
        side = tf.maximum(side, 1)
        return (height - side + 1) // 2, (width - side + 1) // 2, side, side

    return _resize(_decode_window(image, window), size)


def full_resize(image, size):
    """The whole image resized to size x size (automl's fine-tune `ft` training path)."""
    return center_crop(image, size, crop=False)


def random_flip(image, seed):
    return tf.image.stateless_random_flip_left_right(image, seed)
