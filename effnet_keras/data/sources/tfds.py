"""TFDS datasets (data.tfds_name; their splits in effnet_keras/configs/datasets/*.yaml), read as encoded images.

Each host gets its own files when the split has enough of them (TFDS' input_context), else
its share of the examples. Images stay encoded (`SkipDecoding`): JPEGs are cropped while
decoding, and a shuffle buffer holds kilobytes per image instead of pixels.
"""

import os

import tensorflow as tf
from absl import logging

from effnet_keras.config_schema import TFDS_NAMES
from effnet_keras.data.sources.base import DataSource


class TFDSSource(DataSource):
    def builder(self):
        import tensorflow_datasets as tfds

        if not self.data.tfds_name:
            raise ValueError("data.name='tfds' needs data.tfds_name (one of " + ", ".join(TFDS_NAMES) + ").")
        return tfds.builder(self.data.tfds_name, data_dir=self.data.data_dir)

    def class_names(self):
        """The label feature's names (from the builder's info: no data read), or None."""
        try:
            names = list(self.builder().info.features["label"].names)
        except Exception as error:  # noqa: BLE001 - names are a convenience; never fail a run over them
            logging.info("No class names for TFDS %s: %s", self.data.tfds_name, error)
            return None
        return [str(n) for n in names] or None

    def info(self):
        return self._info(self.data.num_train_examples, self.data.num_eval_examples, class_names=self.class_names())

    def records(self, split, input_context, shuffle, seed, deterministic):
        import tensorflow_datasets as tfds

        builder, split_name, num_classes = self.builder(), self.split_name(split), self.data.num_classes
        read_kwargs = dict(shuffle_seed=seed, try_autocache=False)
        shard_elements = None
        if input_context is not None and input_context.num_input_pipelines > 1:
            try:
                num_files = len(builder.info.splits[split_name].file_instructions)
            except KeyError:  # not generated (tfds.testing.mock_data): no file list to shard
                num_files = 0
            if num_files >= input_context.num_input_pipelines:
                read_kwargs["input_context"] = input_context  # TFDS gives each host its own files
            else:
                shard_elements = (input_context.num_input_pipelines, input_context.input_pipeline_id)
        try:
            records = builder.as_dataset(
                split=split_name,
                shuffle_files=shuffle,
                decoders={"image": tfds.decode.SkipDecoding()},
                read_config=tfds.ReadConfig(**read_kwargs),
            )
        except AssertionError as error:
            if "could not find data" not in str(error):
                raise
            pattern = os.path.join(builder.data_dir, f"{builder.name}-*.tfrecord*")
            raise FileNotFoundError(
                f"TFDS dataset {builder.name!r} is not prepared under data_dir={builder.data_dir!r}: expected files "
                f"matching {pattern!r}. Prepare it where there is network (`tfds build {builder.name} "
                f"--data_dir=DIR`) and pass --data_dir=DIR."
            ) from error
        except ValueError as error:
            raise ValueError(f"TFDS {builder.name}: bad split {split_name!r} ({error}).") from error
        label_feature = builder.info.features["label"]
        if label_feature.num_classes != num_classes:
            raise ValueError(
                f"data.num_classes={num_classes} but TFDS {builder.name} has {label_feature.num_classes} classes."
            )
        records = records.map(lambda ex: {"image": ex["image"], "label": ex["label"]})
        if shard_elements:
            records = records.shard(*shard_elements)
        return records

    def parse(self, record):
        return record["image"], tf.one_hot(record["label"], self.data.num_classes, dtype=tf.float32)
