"""TensorFlow input pipelines: scikit-learn digits, ImageNet / ImageNet-21k TFRecords, TFDS datasets, image folders."""

from effnet_keras.data.pipeline import build_dataset
from effnet_keras.data.pipeline import dataset_info
from effnet_keras.data.pipeline import resolve_data_counts

__all__ = ["build_dataset", "dataset_info", "resolve_data_counts"]
