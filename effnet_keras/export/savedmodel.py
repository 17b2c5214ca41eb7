"""Reusable TF2 SavedModels (TF Hub / Kaggle Models) from our Keras models.

What the file holds (the "Reusable SavedModel" contract, users-and-export §4):
- `__call__(images, training=False)`: images float32 [batch, height, width, 3] in [0, 1]
  (any batch and size), traced once per value of `training` (two concrete functions,
  no tf.cond on `training`: gradients through a restored cond break);
- `variables`, `trainable_variables` (no BN moving statistics), `regularization_losses` (empty);
- `serving_default` signature (inference) and the `serve` / `train` endpoints that
  Keras 3 `TFSMLayer(call_endpoint="serve", call_training_endpoint="train")` fine-tunes.
Feature vectors are the pooled features before the classifier's dropout;
classification outputs logits (pre-softmax), whatever the model's activation.
"""

import json
import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from effnet_keras import fileio
from effnet_keras import labels
from effnet_keras.model_parts import embedding_output
from effnet_keras.model_parts import get_classifier
from effnet_keras.model_parts import model_parts

KINDS = ("feature_vector", "classification")
IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")


class ExportModule(tf.__internal__.tracking.AutoTrackable):
    """A Keras model as a reusable SavedModel object.

    AutoTrackable, not tf.Module: the Hub contract wants plain `variables` /
    `trainable_variables` list attributes, which tf.Module reserves as properties.
    """

    def __init__(self, model, kind):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}. Received: {kind!r}")
        self.kind = kind
        if kind == "feature_vector":
            self._net = keras.Model(model.inputs, embedding_output(model), name=f"{model.name}_feature_vector")
            self._kernel = self._bias = None
        else:
            classifier = get_classifier(model)
            self._net = keras.Model(model.inputs, classifier.input, name=f"{model.name}_pre_logits")
            self._kernel, self._bias = classifier.kernel, classifier.bias if classifier.use_bias else None
        self._keras_model = model
        self.normalization = model_parts(model).normalization  # of its [0, 255] input (the export scales [0, 1])
        head = [] if self._kernel is None else [self._kernel.value] + ([self._bias.value] if self._bias is not None else [])
        self.variables = [v.value for v in self._net.variables] + head
        self.trainable_variables = [v.value for v in self._net.trainable_variables] + head
        self.regularization_losses = []
        self.num_outputs = int(self._net.output.shape[-1]) if kind == "feature_vector" else int(self._kernel.shape[-1])

    def _forward(self, images, training):
        outputs = self._net(images * 255.0, training=training)
        if self.kind == "classification":
            outputs = tf.matmul(tf.cast(outputs, tf.float32), tf.cast(self._kernel.value, tf.float32))
            if self._bias is not None:
                outputs = outputs + tf.cast(self._bias.value, tf.float32)
        return tf.cast(outputs, tf.float32)

    @tf.function
    def __call__(self, images, training=False):
        return self._forward(images, training)

    @tf.function(input_signature=[IMAGE_SPEC])
    def serve(self, images):
        return self._forward(images, False)

    @tf.function(input_signature=[IMAGE_SPEC])
    def train(self, images):
        return self._forward(images, True)


LABELS_ASSET = labels.LABELS_FILE  # assets/labels.txt: class names, one per line, in output index order
METADATA_ASSET = "effnet_export.json"  # assets/effnet_export.json: what a reader needs to feed and read it


class ExportError(ValueError):
    """A directory that is not a SavedModel of ours of the kind asked for (what is wrong is named)."""


def metadata(module, image_size, model_name):
    """What assets/effnet_export.json says: kind, input (size, range), output, the model and its normalisation."""
    return {
        "format": "effnet-keras SavedModel",
        "version": 1,
        "kind": module.kind,
        "model_name": model_name,
        "image_size": int(image_size),
        "input": "float32 RGB [batch, height, width, 3] in [0, 1]",
        "output": "logits (apply softmax)" if module.kind == "classification" else "pooled features",
        "num_outputs": module.num_outputs,
        "normalization": module.normalization,
    }


def save(model, export_dir, kind="feature_vector", class_names=None, image_size=224, model_name=None):
    """tf.saved_model.save of an ExportModule. Two assets travel inside it: `class_names` as
    assets/labels.txt and the export's metadata (`metadata`) as assets/effnet_export.json,
    which effnet-predict reads for the image size."""
    module = ExportModule(model, kind)
    with tempfile.TemporaryDirectory(prefix="effnet_assets_") as tmp:
        # An Asset copies its file into export_dir/assets/ at save time, so a temp source is enough.
        if class_names is not None:
            module.labels_file = tf.saved_model.Asset(labels.write_labels(tmp, class_names))
        path = os.path.join(tmp, METADATA_ASSET)
        with open(path, "w", encoding="utf8") as f:
            json.dump(metadata(module, image_size, model_name or model.name), f, indent=2)
        module.metadata_file = tf.saved_model.Asset(path)
        return _save(module, export_dir)


def _save(module, export_dir):
    # One concrete function per value of `training` (no tf.cond on it inside a trace).
    module.__call__.get_concrete_function(IMAGE_SPEC, training=False)
    module.__call__.get_concrete_function(IMAGE_SPEC, training=True)
    serving = module.serve.get_concrete_function()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": serving})
    return module


class LoadedClassifier:
    """A classification SavedModel of ours, read back: `logits(images in [0, 255])`, its image size,
    class count and labels file."""

    def __init__(self, export_dir):
        if not fileio.exists(os.path.join(export_dir, "saved_model.pb")):
            raise ExportError(f"{export_dir}: no saved_model.pb there; pass a SavedModel written by effnet-export "
                              "--kind=classification.")
        meta_path = os.path.join(export_dir, "assets", METADATA_ASSET)
        self.metadata = json.loads(fileio.read_text(meta_path)) if fileio.exists(meta_path) else {}
        if self.metadata.get("kind", "classification") != "classification":
            raise ExportError(f"{export_dir} is a {self.metadata['kind']} export: it has no classifier to predict "
                              "with. Export with --kind=classification.")
        self.loaded = tf.saved_model.load(export_dir)
        self.serve = self.loaded.signatures.get("serving_default")
        self.image_size = self.metadata.get("image_size")
        self.num_outputs = self.metadata.get("num_outputs")
        if self.image_size is None or self.num_outputs is None:
            raise ExportError(f"{export_dir} has no assets/{METADATA_ASSET} (written by effnet-keras since 0.2): its "
                              "image size is unknown. Export it again with effnet-export.")
        labels_path = os.path.join(export_dir, "assets", LABELS_ASSET)
        self.labels_file = labels_path if fileio.exists(labels_path) else None

    def logits(self, images):
        """images float32 [N, H, W, 3] in [0, 255] -> logits [N, classes] (the export takes [0, 1])."""
        batch = tf.constant(np.asarray(images, "float32") / 255.0)
        out = self.serve(images=batch) if self.serve is not None else self.loaded(batch)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        return out.numpy()


def load_classifier(export_dir):
    return LoadedClassifier(export_dir)


def check_reloaded(module, export_dir, image_size, atol=1e-5, seed=0):
    """Reload and compare with the in-memory module on a few [0, 1] images; returns max |diff|."""
    reloaded = tf.saved_model.load(export_dir)
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    images = tf.constant(np.random.default_rng(seed).uniform(0, 1, (3, height, width, 3)).astype("float32"))
    expected = module(images, training=False).numpy()
    got = reloaded(images, training=False).numpy()
    served = reloaded.signatures["serving_default"](images=images)
    served = next(iter(served.values())).numpy()
    diff = float(max(np.abs(expected - got).max(), np.abs(expected - served).max()))
    if not diff <= atol:
        raise RuntimeError(f"The reloaded SavedModel in {export_dir} differs from the Keras model by {diff:.3g} "
                           f"(allowed {atol}); refusing to finish the export.")
    return diff
