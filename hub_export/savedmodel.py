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

import tempfile

import keras
import numpy as np
import tensorflow as tf

from effnet_keras import _keras_internals as keras_internals
from effnet_keras import rundir

KINDS = ("feature_vector", "classification")
IMAGE_SPEC = tf.TensorSpec([None, None, None, 3], tf.float32, name="images")


def _classifier(model):
    last = model.layers[-1]
    if not isinstance(last, keras.layers.Dense):
        raise ValueError(f"{model.name}: the last layer {last.name!r} is not a Dense classifier; build the model "
                         "with include_top=True (or pooling='avg' for a feature vector).")
    return last


def _pooled_tensor(model):
    """The pooled features: the classifier's input, before its dropout if there is one."""
    last = model.layers[-1]
    if len(model.output.shape) == 2 and not isinstance(last, keras.layers.Dense):
        return model.output  # include_top=False, pooling="avg"/"max"
    tensor = _classifier(model).input
    producer = keras_internals.producing_layer(tensor)
    if isinstance(producer, keras.layers.Dropout):
        tensor = producer.input
    return tensor


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
            self._net = keras.Model(model.inputs, _pooled_tensor(model), name=f"{model.name}_feature_vector")
            self._kernel = self._bias = None
        else:
            classifier = _classifier(model)
            self._net = keras.Model(model.inputs, classifier.input, name=f"{model.name}_pre_logits")
            self._kernel, self._bias = classifier.kernel, classifier.bias if classifier.use_bias else None
        self._keras_model = model
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


LABELS_ASSET = "labels.txt"  # assets/labels.txt: class names, one per line, in output index order


def save(model, export_dir, kind="feature_vector", class_names=None):
    """tf.saved_model.save of an ExportModule; `class_names` travel inside it as the asset
    assets/labels.txt (`module.labels_file`, a tf.saved_model.Asset)."""
    module = ExportModule(model, kind)
    if class_names is not None:
        with tempfile.TemporaryDirectory(prefix="effnet_labels_") as tmp:
            # the Asset copies the file into export_dir/assets/ at save time, so a temp source is enough
            module.labels_file = tf.saved_model.Asset(rundir.write_labels(tmp, class_names))
            return _save(module, export_dir)
    return _save(module, export_dir)


def _save(module, export_dir):
    # One concrete function per value of `training` (no tf.cond on it inside a trace).
    module.__call__.get_concrete_function(IMAGE_SPEC, training=False)
    module.__call__.get_concrete_function(IMAGE_SPEC, training=True)
    serving = module.serve.get_concrete_function()
    tf.saved_model.save(module, export_dir, signatures={"serving_default": serving})
    return module


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
