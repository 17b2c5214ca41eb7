"""Kaggle Models / TF Hub upload bundle: SavedModel tarball, metadata JSONs, model card."""

import json
import os
import tarfile

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


def write_bundle(export_dir, *, model_name, kind, num_outputs, image_size, weights_provenance, owner="effnet-keras"):
    """Write `<export_dir>_bundle/` with saved_model.tar.gz, model-metadata.json,
    model-instance-metadata.json and README.md (the model card). Returns the folder."""
    out = export_dir.rstrip("/") + "_bundle"
    os.makedirs(out, exist_ok=True)
    tarball = os.path.join(out, "saved_model.tar.gz")
    with tarfile.open(tarball, "w:gz") as tar:
        for name in sorted(os.listdir(export_dir)):
            if name.endswith(".tflite"):
                continue
            tar.add(os.path.join(export_dir, name), arcname=name)
    what = "pooled features (no dropout)" if kind == "feature_vector" else "class logits (apply softmax yourself)"
    usage = USAGE.format(size=image_size, outputs=num_outputs, what=what)
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
    with open(os.path.join(out, "model-metadata.json"), "w") as f:
        json.dump(model_meta, f, indent=2)
    with open(os.path.join(out, "model-instance-metadata.json"), "w") as f:
        json.dump(instance_meta, f, indent=2)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(f"# {model_name} — {kind}\n\nInput spec: float32 [batch, height, width, 3] in [0, 1]. "
                f"Output size: {num_outputs}. Recommended image size: {image_size}. Weights provenance: "
                f"{weights_provenance}.\n\n{usage}")
    return out
