"""Where examples come from, behind one interface: a `DataSource` per `data.name`, one module each.

    digits       scikit-learn's handwritten digits (no files)             digits.py
    imagenet     ImageNet-1k TFRecords (automl's layout)                  tfrecords.py
    imagenet21k  ImageNet-21k TFRecords (multi-hot labels)               tfrecords.py
    tfds         TFDS datasets (data.tfds_name)                           tfds.py
    folder       a folder of images, one sub-folder per class             folder.py

`get(data)` (a `config_schema.DataConfig`) gives the source. Every source answers:

    info()                                -> DatasetInfo (counts, class names, multilabel); reads no data
    records(split, input_context, shuffle, seed, deterministic)
                                          -> tf.data.Dataset of small raw records, already this input
                                             pipeline's share (`shard`)
    parse(record)                         -> (image: encoded bytes or uint8 [H, W, 3], label: float32
                                             one-hot / multi-hot); runs in the pipeline's decode map,
                                             so a corrupt record fails there and is skipped
    record_id(record) or None             -> what names a skipped record in the log (a folder's path)
    in_memory                             -> records are decoded pixels: nothing can be corrupt

A missing or empty data_dir is an error naming the path and the expected layout: there is no
fake-data fallback. A new source is one new module and one line in `get`.
"""

from effnet_keras.config_schema import ConfigError
from effnet_keras.data.sources.base import DataSource  # noqa: F401  (the interface, for users of the package)
from effnet_keras.data.sources.base import DatasetInfo  # noqa: F401
from effnet_keras.data.sources.base import shard  # noqa: F401


def get(data):
    """The DataSource for `data.name`."""
    from effnet_keras.data.sources import digits
    from effnet_keras.data.sources import folder
    from effnet_keras.data.sources import tfds
    from effnet_keras.data.sources import tfrecords

    sources = {"digits": digits.DigitsSource, "imagenet": tfrecords.TFRecordSource,
               "imagenet21k": tfrecords.TFRecordSource, "tfds": tfds.TFDSSource, "folder": folder.FolderSource}
    if data.name not in sources:
        raise ConfigError(f"data.name must be one of {tuple(sources)}. Received: {data.name!r}")
    return sources[data.name](data)
