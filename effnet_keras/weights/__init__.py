"""Weights: registered ids (downloaded, hash-checked) and files in every format we convert from.

`weights=` accepts None, a weight id published for the model (see `registry.json`,
`weight_ids(name)`), or a path:

    *.weights.h5                      ours (Keras 3 native), also into a headless model
    *.h5                              keras.applications legacy file, matched by layer name
    *.safetensors / *.pth / *.pt / *.bin   PyTorch state dict: timm (tf_efficientnet*, tf_efficientnet_lite*,
                                      coatnet_*) or efficientnet_pytorch (lukemelas: V1, Lite) names; torch
                                      files are read without torch, by an unpickler that runs no code
                                      (torch_file.py)
    directory, *.tar.gz, *.tgz, checkpoint prefix   automl / tensorflow/tpu TF checkpoint

Each format is read into `{our layer name: [arrays]}` (a pure converter per source format
and model family, `CONVERTERS`) and written by the one assigner, `assign.assign_by_name`.
Weights (a file or an id) trained for another class count than the model's classifier load
the backbone and leave the classifier freshly initialised, with a warning (fine-tuning a 21k
checkpoint on 10 classes); a headless model leaves the file's head out.
"""

import dataclasses
import os
import warnings

from effnet_keras import fileio
from effnet_keras.model_parts import LOGITS_LAYER
from effnet_keras.model_parts import model_parts
from effnet_keras.preprocessing import canonical_mode
from effnet_keras.weights import assign
from effnet_keras.weights import files
from effnet_keras.weights import keras_h5
from effnet_keras.weights import registry
from effnet_keras.weights.files import WeightsFileError
from effnet_keras.weights.registry import lookup
from effnet_keras.weights.registry import weight_ids

__all__ = ["resolve", "ResolvedWeights", "load_into", "load_file", "convert_file", "classifier_classes", "lookup",
           "weight_ids", "detect_format", "WeightsFileError"]

STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
FORMAT_NAMES = {"native": files.NATIVE, "keras_h5": files.KERAS_H5, "state_dict": files.TIMM,
                "tf_checkpoint": files.TF_CHECKPOINT}


@dataclasses.dataclass(frozen=True)
class ResolvedWeights:
    """What a builder needs to know about its `weights=` before it lays out a layer."""

    source: object  # None, a weight id or a path
    model_name: str
    preprocessing: str  # the in-model normalisation these weights were trained with
    converter: str  # the model family's converter (spec.family.converter)

    def load_into(self, model):
        if self.source is None:
            return []
        return load_into(model, self.source, model_name=self.model_name, converter=self.converter)


def resolve(model_name, weights, *, input_shape, preprocessing, converter, unpublished_note=None):
    """The one call a builder makes about `weights`, before building anything.

    A weight id is looked up now (an unpublished one is refused before V2-XL's 208 M
    parameters are allocated) and its normalisation (AdvProp, 21k) replaces the
    architecture's `preprocessing`. A classifier of another class count than the weights'
    is built all the same: it keeps a fresh head, with a warning (`assign`).
    """
    if registry.looks_like_weight_id(weights):
        preprocessing = lookup(model_name, weights, unpublished_note).preprocessing
    if weights is not None and input_shape[-1] != 3:
        raise ValueError(
            f"Pretrained weights for {model_name} expect 3 input channels. Received: input_shape={input_shape!r} "
            f"with weights={weights!r}"
        )
    return ResolvedWeights(weights, model_name, canonical_mode(preprocessing), converter)


def load_into(model, weights, *, model_name, converter=None):
    """Load `weights` (a path or a registered weight id of `model_name`) into a freshly built model."""
    path = os.fspath(weights) if isinstance(weights, os.PathLike) else weights
    if not isinstance(path, str):
        raise ValueError(f"`weights` must be None, a weight id or a file path. Received: weights={weights!r}")
    if fileio.is_remote(path) and files.remote_exists(path):  # a bucket: read from a local temp copy
        with fileio.local_copy(path, reader="the weights loader") as local:
            return load_file(model, local, converter=converter)
    if os.path.exists(path) or os.path.exists(path + ".index"):
        return load_file(model, path, converter=converter)
    if registry.looks_like_weight_id(path):
        entry = lookup(model_name, path)  # raises, listing this model's ids, when it has no such id
        from effnet_keras.weights import download

        has_head = model_parts(model).logits is not None
        local = os.path.normpath(download.fetch(entry, include_top=has_head))
        try:
            return load_file(model, local, file_format=entry.format, converter=converter)
        except WeightsFileError as err:  # passed the download's hash check, yet unreadable: fetch afresh next time
            download.discard(local)
            raise WeightsFileError(
                f"{err} The cached copy of weights {path!r} for {model_name} was deleted; the next call "
                "downloads it again.", path=local
            ) from None
    ids = weight_ids(model_name)
    raise ValueError(
        f"`weights` for {model_name} must be None, one of its weight ids "
        f"({', '.join(repr(i) for i in ids) if ids else 'none are published'}), or the path to a weights file. "
        f"Received: weights={weights!r} (no such file, and no weight id of that name)."
    )


def detect_format(path):
    """'native' | 'keras_h5' | 'state_dict' | 'tf_checkpoint' for a weights path, or a ValueError."""
    if path.endswith(".h5"):  # by content: a keras.applications file renamed `.weights.h5` loads too
        if keras_h5.is_legacy_h5(path):
            return "keras_h5"
        return "native"
    if path.endswith(STATE_DICT_SUFFIXES):
        return "state_dict"
    if path.endswith(ARCHIVE_SUFFIXES) or os.path.isdir(path) or os.path.exists(path + ".index"):
        return "tf_checkpoint"
    raise ValueError(
        f"Cannot tell the format of weights file {path!r}. Supported: our `.weights.h5`, a keras.applications "
        "`.h5`, a PyTorch state dict (timm or efficientnet_pytorch: `.safetensors`/`.pth`/`.pt`/`.bin`), or an "
        "automl/tensorflow-tpu checkpoint (directory, .tar.gz/.tgz, or checkpoint prefix)."
    )


def _efficientnet_state_dict(state, model):
    """timm `tf_efficientnet*` or efficientnet_pytorch (lukemelas) names, told apart by the stem's key."""
    from effnet_keras.weights import efficientnet_pytorch
    from effnet_keras.weights import timm_efficientnet

    if efficientnet_pytorch.is_efficientnet_pytorch(state):
        return efficientnet_pytorch.convert_efficientnet_pytorch(state, model)
    return timm_efficientnet.convert_timm_efficientnet(state, model)


def _coatnet_state_dict(state, model):
    from effnet_keras.weights import timm_coatnet

    return timm_coatnet.convert_timm_coatnet(state, model)


def _efficientnet_checkpoint(variables, model):
    from effnet_keras.weights import automl_checkpoint

    return automl_checkpoint.convert_automl_checkpoint(variables, model)


# Source format -> model family's converter (spec.family.converter) -> converter(state, model) ->
# {our layer name: [arrays]}. Every converter is pure; `assign.assign_by_name` writes the model.
CONVERTERS = {
    "state_dict": {"efficientnet": _efficientnet_state_dict, "coatnet": _coatnet_state_dict},
    "tf_checkpoint": {"efficientnet": _efficientnet_checkpoint},
}


def _read_source(path, file_format):
    if file_format == "state_dict":
        from effnet_keras.weights.state_dict import read_state_dict

        return read_state_dict(path)
    from effnet_keras.weights.automl_checkpoint import read_checkpoint

    return read_checkpoint(path)


def convert_file(model, path, *, file_format=None, converter=None):
    """{our layer name: [arrays]} for `model` from the weights file at `path`, in any format we read."""
    file_format = file_format or detect_format(path)
    if file_format == "native":
        return read_native_h5(path)
    if file_format == "keras_h5":
        return keras_h5.read_legacy_h5(path)
    if file_format not in CONVERTERS:
        raise ValueError(f"Unknown weights format {file_format!r} for {path!r}.")
    families = CONVERTERS[file_format]
    if converter not in families:
        raise ValueError(f"{path!r} is {FORMAT_NAMES[file_format]}: it converts into the families "
                         f"{sorted(families)} (the model's `spec.family.converter`). Received: converter={converter!r}")
    return families[converter](_read_source(path, file_format), model)


# Where each format keeps its classifier: our files and keras.applications' under the layer name
# `predictions`; timm's EfficientNets `classifier`, its CoAtNets `head.fc`; efficientnet_pytorch `_fc`;
# automl / tensorflow-tpu checkpoints `<scope>/head/dense`.
STATE_DICT_CLASSIFIERS = ("classifier.weight", "head.fc.weight", "_fc.weight")


def classifier_classes(path, *, file_format=None):
    """The class count of the classifier a weights file holds, or None for a headless file (a local path)."""
    file_format = file_format or detect_format(path)
    if file_format == "native":
        head = read_native_h5(path).get(LOGITS_LAYER)
        return int(head[0].shape[-1]) if head else None
    if file_format == "keras_h5":
        head = keras_h5.read_legacy_h5(path).get(LOGITS_LAYER)
        return int(head[0].shape[-1]) if head else None
    if file_format == "state_dict":
        from effnet_keras.weights.state_dict import read_state_dict

        state = read_state_dict(path)
        key = next((k for k in STATE_DICT_CLASSIFIERS if k in state), None)
        return int(state[key].shape[0]) if key else None
    from effnet_keras.weights import automl_checkpoint

    variables = automl_checkpoint.read_checkpoint(path)
    kernel = variables.get(f"{automl_checkpoint.model_scope(variables)}/head/dense/kernel")
    return int(kernel.shape[-1]) if kernel is not None else None


def load_file(model, path, *, file_format=None, converter=None):
    """Load a weights file into `model`. `converter`: the model family's (`spec.family.converter`:
    "efficientnet" | "coatnet"), needed for state dicts and TF checkpoints. Returns the file layers
    left out on purpose (normalisation constants, a head the model lacks or of another class count)."""
    file_format = file_format or detect_format(path)
    if file_format == "native":
        return load_native(model, path)
    return assign.assign_by_name(model, convert_file(model, path, file_format=file_format, converter=converter),
                                 source=str(path))


def load_native(model, path):
    """Our `.weights.h5`. Same graph: Keras' loader. Otherwise (a full file into a headless model,
    another class count) by layer name, every mismatch named."""
    if fileio.is_remote(path):  # a bucket path (train.ft_init_ckpt on gs://): a local temp copy
        with fileio.local_copy(path, reader="the weights loader") as local:
            return load_native(model, local)
    with files.open_h5(path, expected=files.NATIVE) as f:  # damaged / foreign files: WeightsFileError
        if "layers" not in f:
            raise files.weights_file_error(path, "no 'layers' group", expected=files.NATIVE)
    # Keras warns per sublayer it skips before it gives up on another graph: hold its warnings
    # back, and load by name (every layer checked) when it skipped anything.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with files.reading(path, expected=files.NATIVE, only=(OSError,)):  # h5py: a dataset cut off
                model.load_weights(path)
            loaded = not any("Skipping" in str(w.message) for w in caught)
        except WeightsFileError:
            raise
        except ValueError:  # another graph or input size: by name below, every mismatch named
            loaded = False
    if loaded:
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return []
    return assign.assign_by_name(model, read_native_h5(path), source=path)


def read_native_h5(path):
    """{layer name: [arrays]} from a Keras 3 `.weights.h5` (layers stored under generated keys,
    the layer name in the `vars` group's attributes; a sublayer's variables, e.g. a
    RelativeAttention's bias table, in a group under its layer's)."""
    out = {}
    with files.open_h5(path, expected=files.NATIVE) as f:
        if "layers" not in f:
            raise files.weights_file_error(path, "no 'layers' group", expected=files.NATIVE)
        for key, group in f["layers"].items():
            if "vars" not in group:
                continue
            if "layers" in group and len(group["layers"]):
                raise ValueError(
                    f"{path!r}: layer {group['vars'].attrs.get('name', key)!r} nests sublayers; load it into the "
                    "same graph (same include_top/classes) with model.load_weights instead."
                )
            arrays = _group_arrays(group)
            if arrays:
                out[str(group["vars"].attrs.get("name", key))] = arrays
    return out


def _group_arrays(group):
    """A layer group's own variables, then those of its sublayer groups (Keras' `layer.weights` order)."""
    values = group["vars"]
    arrays = [values[str(i)][()] for i in range(len(values))]
    for key, child in group.items():
        if key not in ("vars", "layers") and hasattr(child, "items") and "vars" in child:
            arrays += _group_arrays(child)
    return arrays
