"""Grad-CAM (Selvaraju et al. 2017) for any of our models, on any Keras backend.

The model is split at the feature map: `backbone(images) -> features` and
`head(features) -> pooled`, and the class logit is `pooled @ W + b` from the
classifier's own kernel. Differentiating only the head w.r.t. the features is
what every backend's autodiff can do directly (tf.GradientTape, jax.grad,
torch.autograd); the class score is the pre-softmax logit, so a softmax
classifier does not squash the gradients.
"""

import keras
import numpy as np
from keras import ops

from effnet_keras.model_parts import get_classifier
from effnet_keras.model_parts import model_parts


def default_feature_layer(model):
    """Name of the model's last feature map, as its builder recorded it (`model.parts.features`).

    EfficientNet: `top_activation`; CoAtNet: the last stage's output.
    """
    return model_parts(model).features


def split_model(model, layer_name=None):
    """-> (backbone: images -> features, head: features -> classifier input, classifier Dense)."""
    layer_name = layer_name or default_feature_layer(model)
    try:
        feature_layer = model.get_layer(layer_name)
    except ValueError as error:
        raise ValueError(f"{model.name} has no layer named {layer_name!r}.") from error
    features = feature_layer.output
    if len(features.shape) != 4:
        raise ValueError(f"Layer {layer_name!r} outputs shape {features.shape}; Grad-CAM needs a 4-D feature map.")
    classifier = get_classifier(model)
    backbone = keras.Model(model.inputs[0], features, name=f"{model.name}_cam_backbone")
    head = keras.Model(features, classifier.input, name=f"{model.name}_cam_head")
    return backbone, head, classifier


def _logits(head, classifier, features):
    pooled = head(features, training=False)
    logits = ops.matmul(ops.cast(pooled, "float32"), ops.cast(classifier.kernel, "float32"))
    if classifier.use_bias:
        logits = logits + ops.cast(classifier.bias, "float32")
    return logits


def _gradients(head, classifier, features, class_index):
    """d(sum_i logit[i, class_i]) / d(features), by the active backend's autodiff."""
    backend = keras.backend.backend()
    onehot = ops.one_hot(ops.convert_to_tensor(class_index, "int32"), classifier.units)

    def score(f):
        return ops.sum(_logits(head, classifier, f) * onehot)

    if backend == "tensorflow":
        import tensorflow as tf

        features = tf.convert_to_tensor(features)
        with tf.GradientTape() as tape:
            tape.watch(features)
            value = score(features)
        return tape.gradient(value, features), _logits(head, classifier, features)
    if backend == "jax":
        import jax

        grads = jax.grad(lambda f: score(f))(features)
        return grads, _logits(head, classifier, features)
    if backend == "torch":
        import torch

        features = features.detach().clone().requires_grad_(True)
        value = score(features)
        (grads,) = torch.autograd.grad(value, features)
        return grads, _logits(head, classifier, features.detach())
    raise ValueError(f"Grad-CAM supports the tensorflow, jax and torch backends. Active backend: {backend!r}")


def class_activation_map(model, images, class_index=None, layer_name=None, return_logits=False):
    """Grad-CAM heatmaps at input resolution, each scaled to [0, 1].

    images: [batch, H, W, C] in the model's input range (ours: RGB in [0, 255]).
    class_index: None (each image's top class), an int, or one int per image.
    layer_name: the feature map to explain (default: the one feeding global pooling).
    Returns heatmaps [batch, H, W] float32 numpy (and the logits when return_logits).
    """
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4:
        raise ValueError(f"images must be a 4-D batch [batch, height, width, channels]. Received shape {images.shape}")
    backbone, head, classifier = split_model(model, layer_name)
    features = backbone(images, training=False)
    if class_index is None:
        logits = keras.ops.convert_to_numpy(_logits(head, classifier, features))
        class_index = logits.argmax(axis=-1)
    class_index = np.broadcast_to(np.asarray(class_index, dtype="int64"), (images.shape[0],)).copy()
    if class_index.min() < 0 or class_index.max() >= classifier.units:
        raise ValueError(f"class_index must be in [0, {classifier.units}). Received: {class_index.tolist()}")
    grads, logits = _gradients(head, classifier, features, class_index)
    weights = ops.mean(ops.cast(grads, "float32"), axis=(1, 2), keepdims=True)  # alpha_k per channel
    cam = ops.relu(ops.sum(weights * ops.cast(features, "float32"), axis=-1, keepdims=True))
    cam = ops.image.resize(cam, images.shape[1:3], interpolation="bilinear")[..., 0]
    cam = keras.ops.convert_to_numpy(cam)
    peak = cam.reshape(cam.shape[0], -1).max(axis=1).reshape(-1, 1, 1)
    cam = np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0).astype("float32")
    if return_logits:
        return cam, keras.ops.convert_to_numpy(logits)
    return cam
