"""The interface every data source implements (see the package docstring), and input sharding."""

import dataclasses



@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is, read without its data (digits: computed; folder: listed)."""

    name: str
    num_classes: int
    num_train_examples: int
    num_eval_examples: int
    multilabel: bool
    class_names: tuple | None  # where known (digits, folder, TFDS)


class DataSource:
    """The interface (see the package docstring); `data` is the run's DataConfig."""

    in_memory = False
    record_id = None  # a source that names its records (folder: the path) defines record_id(record)

    def __init__(self, data):
        self.data = data

    def info(self):
        raise NotImplementedError

    def records(self, split, input_context, shuffle, seed, deterministic):
        raise NotImplementedError

    def parse(self, record):
        raise NotImplementedError

    def split_name(self, split):
        """'train' / 'eval' -> this dataset's split (data.train_split / data.eval_split)."""
        return self.data.train_split if split == "train" else self.data.eval_split

    def _info(self, num_train, num_eval, class_names=None, num_classes=None):
        data = self.data
        num_classes = data.num_classes if num_classes is None else num_classes
        if class_names is not None and len(class_names) != num_classes:
            class_names = None
        return DatasetInfo(name=data.config_name or data.name, num_classes=num_classes,
                           num_train_examples=num_train, num_eval_examples=num_eval, multilabel=data.multilabel,
                           class_names=tuple(class_names) if class_names is not None else None)


def shard(records, input_context):
    """This input pipeline's share of `records`, element by element (hosts read disjoint examples)."""
    if input_context is not None and input_context.num_input_pipelines > 1:
        return records.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return records
