"""TensorFlow input pipelines: scikit-learn digits, ImageNet / ImageNet-21k TFRecords, TFDS datasets."""

from effnet_keras.data.pipeline import build_dataset
from effnet_keras.data.pipeline import dataset_info

__all__ = ["build_dataset", "dataset_info"]
