"""Kaggle Models / TF Hub upload bundle: SavedModel tarball, metadata JSONs, model card."""

import json
import os
import tarfile
import tempfile

from effnet_keras import fileio
from effnet_keras import labels

USAGE = """## Usage

Input: float32 images `[batch, height, width, 3]`, RGB in **[0, 1]**, any batch and size
(recommended: {size}x{size}). Output: `[batch, {outputs}]` {what}.

### tf_keras + tensorflow_hub

```python
import os; os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tensorflow_hub as hub, tf_keras
model = tf_keras.Sequential([
    tf_keras.layers.InputLayer(input_shape=({size}, {size}, 3)),
    hub.KerasLayer("PATH_OR_HANDLE", trainable=True),   # trainable=False to freeze
    tf_keras.layers.Dense(NUM_CLASSES),
])
```

### Keras 3 (TensorFlow backend)

```python
import keras
layer = keras.layers.TFSMLayer("PATH", call_endpoint="serve", call_training_endpoint="train", trainable=True)
inputs = keras.Input(({size}, {size}, 3)); outputs = keras.layers.Dense(NUM_CLASSES)(layer(inputs))
model = keras.Model(inputs, outputs)
```

Fine-tuning: BatchNorm statistics update when called with `training=True` (`trainable=True` in
hub.KerasLayer). Use a small learning rate (e.g. SGD 0.005, momentum 0.9) and label smoothing 0.1.
"""


def write_bundle(export_dir, *, model_name, kind, num_outputs, image_size, weights_provenance, owner="effnet-keras",
                 class_names=None):
    """Write `<export_dir>_bundle/` with saved_model.tar.gz, model-metadata.json,
    model-instance-metadata.json and README.md (the model card), and labels.txt when
    `class_names` are given (the tarball's SavedModel holds it too, as assets/labels.txt).
    Returns the folder."""
    out = export_dir.rstrip("/") + "_bundle"
    # Staged beside `out` and moved into place complete (local and bucket paths alike).
    with fileio.staged_dir(out, commit_last=("saved_model.tar.gz",)) as staging:
        _write_bundle_files(staging, export_dir, model_name=model_name, kind=kind, num_outputs=num_outputs,
                            image_size=image_size, weights_provenance=weights_provenance, owner=owner,
                            class_names=class_names)
    return out


def _write_tarball(export_dir, tarball):
    """saved_model.tar.gz of the SavedModel (without TFLite files), built in a local temp folder."""
    with tempfile.TemporaryDirectory(prefix="effnet_bundle_") as tmp:
        local_tar = os.path.join(tmp, "saved_model.tar.gz")
        with fileio.local_copy(export_dir, reader="tarfile") as local_dir:
            with tarfile.open(local_tar, "w:gz") as tar:
                for name in sorted(os.listdir(local_dir)):
                    if name.endswith(".tflite"):
                        continue
                    tar.add(os.path.join(local_dir, name), arcname=name)
        fileio.copy(local_tar, tarball)


def _write_bundle_files(out, export_dir, *, model_name, kind, num_outputs, image_size, weights_provenance, owner,
                        class_names=None):
    _write_tarball(export_dir, os.path.join(out, "saved_model.tar.gz"))
    what = "pooled features (no dropout)" if kind == "feature_vector" else "class logits (apply softmax yourself)"
    usage = USAGE.format(size=image_size, outputs=num_outputs, what=what)
    if class_names is not None:
        labels.write_labels(out, class_names)
        usage += (f"\nClass names ({len(class_names)}, in output index order): `labels.txt`, also inside the "
                  "SavedModel as `assets/labels.txt`.\n")
    slug = model_name.lower().replace("_", "-")
    model_meta = {
        "ownerSlug": owner,
        "title": f"{model_name} ({kind.replace('_', ' ')})",
        "slug": slug,
        "subtitle": f"{model_name} {kind} as a reusable TF2 SavedModel",
        "isPrivate": True,
        "description": f"# {model_name}\n\n{what.capitalize()}. Weights: {weights_provenance}.\n\n{usage}",
        "publishTime": "",
        "provenanceSources": weights_provenance,
    }
    instance_meta = {
        "ownerSlug": owner,
        "modelSlug": slug,
        "instanceSlug": kind.replace("_", "-"),
        "framework": "tensorFlow2",
        "overview": f"{kind} of {model_name}; input [0, 1] RGB, recommended size {image_size}",
        "usage": usage,
        "licenseName": "Apache 2.0",
        "fineTunable": True,
        "trainingData": [],
        "modelInstanceType": "Unspecified",
    }
    fileio.write_text(os.path.join(out, "model-metadata.json"), json.dumps(model_meta, indent=2))
    fileio.write_text(os.path.join(out, "model-instance-metadata.json"), json.dumps(instance_meta, indent=2))
    fileio.write_text(os.path.join(out, "README.md"),
                      f"# {model_name} — {kind}\n\nInput spec: float32 [batch, height, width, 3] in [0, 1]. "
                      f"Output size: {num_outputs}. Recommended image size: {image_size}. Weights provenance: "
                      f"{weights_provenance}.\n\n{usage}")
