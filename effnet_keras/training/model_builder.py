"""The model a run trains: TF-free (keras only), so the JAX/GPU benchmarks build the same one."""

import keras

from effnet_keras.models import common
from effnet_keras.models import registry


def model_spec(name):
    builder = registry.get_builder(name)
    return getattr(builder, "spec", None)


def default_sizes(config):
    """(final train size, eval size) from the config, else the model's recipe sizes."""
    spec = model_spec(config["model"]["name"])
    train_size = config["train"]["image_size"] or config["model"]["image_size"] or getattr(spec, "train_size", 224)
    eval_size = config["eval"]["image_size"] or config["model"]["image_size"] or getattr(spec, "default_size", train_size)
    return int(train_size), int(eval_size)


def build_training_model(config, num_classes, image_size=None):
    """EfficientNets: headless at a dynamic size + the standard head, so every progressive
    stage runs on the same model. CoAtNet needs a static size (relative-position tables)."""
    model_cfg = config["model"]
    name = model_cfg["name"]
    kwargs = dict(weights=model_cfg["weights"], drop_connect_rate=model_cfg["drop_connect_rate"])
    if model_cfg["dropout_rate"] is not None:
        kwargs["dropout_rate"] = model_cfg["dropout_rate"]
    if model_cfg["bn_momentum"] is not None:
        kwargs["bn_momentum"] = model_cfg["bn_momentum"]
    if name.lower().startswith("coatnet"):
        return registry.get_model(name, include_top=True, classes=num_classes, classifier_activation=None,
                                  input_shape=(image_size, image_size, 3), **kwargs)
    spec = model_spec(name)
    backbone = registry.get_model(name, include_top=False, input_shape=(None, None, 3), **kwargs)
    dropout = model_cfg["dropout_rate"] if model_cfg["dropout_rate"] is not None else spec.dropout_rate
    outputs = common.classifier_head(backbone.output, include_top=True, pooling=None, classes=num_classes,
                                     classifier_activation=None, dropout_rate=dropout)
    return keras.Model(backbone.inputs, outputs, name=backbone.name)
