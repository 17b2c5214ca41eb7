"""Reading image files for the tools: one decode, one crop, one resize for predict, Grad-CAM and export checks.

A leaf module (Pillow and NumPy; no TensorFlow), so the models-only install predicts on any
Keras backend. Every tool that looks at a picture takes its pixels from `load_image`, so
Grad-CAM explains exactly the pixels effnet-predict classifies, and a run's Keras model and
its SavedModel see the same input.

    load_image(path, 224)                        the whole image resized to 224 x 224
    load_image(path, 224, crop_fraction=1.0)     the centre square of the shorter side, resized
    load_image(path, 224, crop_fraction="eval")  the evaluation pipeline's centre crop, resized

By default nothing is cropped, as keras.applications' `load_img(target_size=...)`: a photo
framed by a person keeps what is at its edges (matplotlib's Grace Hopper is "military
uniform" whole, "academic gown" after the 0.875 crop ImageNet's evaluation uses). "eval" is
the evaluation pipeline's crop (`effnet_keras.data.crops.center_crop`): a square of side
size / (size + 32) of the shorter side (0.875 at 224). Resizing is bilinear with antialiasing
(Pillow's), the first frame of a GIF is read, and grey / palette / RGBA images are converted
to RGB.
"""

import io

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
CROP_PADDING = 32  # as the evaluation pipeline: crop side = size / (size + 32) of the shorter side


def eval_crop_fraction(size):
    return size / (size + CROP_PADDING)


def load_image(path, size, crop_fraction=None):
    """float32 [size, size, 3] RGB in [0, 255] from an image file (local or a bucket path).

    `crop_fraction`: None (no crop: the whole image resized to size x size), a number in
    (0, 1] (the centre square of that fraction of the shorter side), or "eval" (the evaluation
    pipeline's centre crop, size / (size + 32)). Raises on an unreadable file; the tools
    report it and go on.
    """
    from PIL import Image

    from effnet_keras import fileio

    if crop_fraction == "eval":
        crop_fraction = eval_crop_fraction(size)
    if crop_fraction is not None and not 0.0 < float(crop_fraction) <= 1.0:
        raise ValueError(f"crop_fraction must be 'eval', None or in (0, 1]. Received: {crop_fraction!r}")
    with Image.open(io.BytesIO(fileio.read_bytes(path))) as image:
        image.seek(0)  # the first frame of an animation
        image = image.convert("RGB")
        if crop_fraction is not None:
            width, height = image.size
            side = max(1, int(float(crop_fraction) * min(width, height)))
            left, top = (width - side + 1) // 2, (height - side + 1) // 2
            image = image.crop((left, top, left + side, top + side))
        image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype=np.float32)
