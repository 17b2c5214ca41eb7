"""scikit-learn's handwritten digits (1,797 8x8 scans, shipped with scikit-learn): the demo's data, no files."""

import functools

import numpy as np
import tensorflow as tf

from effnet_keras.data.sources.base import DataSource
from effnet_keras.data.sources.base import shard

SPLITS = ("train", "test")


@functools.lru_cache(maxsize=8)
def _digits_arrays(image_size, test_fraction, split_seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 ink levels -> 0..255, bilinear upscaling of the 8x8 strokes, grey -> RGB.
    images = digits.images.astype("float32") * (255.0 / 16.0)
    big = tf.image.resize(images[..., None], (image_size, image_size), method="bilinear").numpy()
    big = np.repeat(np.clip(np.round(big), 0, 255).astype("uint8"), 3, axis=-1)
    labels = digits.target.astype("int64")
    train_x, test_x, train_y, test_y = train_test_split(
        big, labels, test_size=test_fraction, random_state=split_seed, stratify=labels
    )
    return {"train": (train_x, train_y), "test": (test_x, test_y)}


class DigitsSource(DataSource):
    in_memory = True  # uint8 pixels already: nothing to decode, nothing can be corrupt

    def arrays(self, split_name):
        """(uint8 [N, S, S, 3], int64 [N]) of split 'train' or 'test'."""
        data = self.data
        if not 8 <= data.digits_image_size <= 512:
            raise ValueError(f"data.digits_image_size must be in [8, 512]. Received: {data.digits_image_size}")
        if not 0.0 < data.test_fraction < 1.0:
            raise ValueError(f"data.test_fraction must be in (0, 1). Received: {data.test_fraction}")
        if split_name not in SPLITS:
            raise ValueError(f"digits has splits {SPLITS}. Received: {split_name!r}")
        return _digits_arrays(data.digits_image_size, data.test_fraction, data.split_seed)[split_name]

    def info(self):
        from absl import logging

        data = self.data
        counted = len(self.arrays("train")[1]), len(self.arrays("test")[1])
        if counted != (data.num_train_examples, data.num_eval_examples):
            logging.warning("digits split has %d/%d train/test images (test_fraction=%s); data.num_*_examples "
                            "said %d/%d: using the real counts.", *counted, data.test_fraction,
                            data.num_train_examples, data.num_eval_examples)
        return self._info(*counted, class_names=[str(k) for k in range(10)])

    def records(self, split, input_context, shuffle, seed, deterministic):
        images, labels = self.arrays(self.split_name(split))
        return shard(tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}), input_context)

    def parse(self, record):
        return record["image"], tf.one_hot(record["label"], self.data.num_classes, dtype=tf.float32)
