"""The one place a classifier for training, export, Grad-CAM and predict is built.

`build_classifier(name, classes, image_size)` reads the family's traits from the spec:
a family that takes any input size (EfficientNet V1/V2) is built headless at
(None, None, 3) with the standard head, so every progressive stage and every export
size runs on one model; a family that needs a static size (CoAtNet's relative-position
tables) is built at `image_size`. Logits out (no softmax): the losses and exports add it.
"""

import keras

from effnet_keras.models import common
from effnet_keras.models import registry


def image_sizes(name, *, model_image_size=None, train_image_size=None, eval_image_size=None):
    """(train size, eval size): the one rule every tool uses.

    train: train.image_size, else model.image_size, else the variant's training size;
    eval (also what an export and predict use): eval.image_size, else model.image_size,
    else the variant's evaluation size.
    """
    spec = registry.get_spec(name)
    train = train_image_size or model_image_size or spec.train_size
    evaluation = eval_image_size or model_image_size or spec.default_size
    return int(train), int(evaluation)


def build_classifier(name, classes, image_size=None, *, weights=None, dropout_rate=None, drop_connect_rate=None,
                     bn_momentum=None):
    """A `classes`-way logits classifier of model `name` (see the module docstring).

    `image_size` matters only to a static-input family (default: its training size);
    None arguments take the variant's defaults.
    """
    spec = registry.get_spec(name)
    kwargs = {"weights": weights}
    if drop_connect_rate is not None:
        kwargs["drop_connect_rate"] = drop_connect_rate
    if bn_momentum is not None:
        kwargs["bn_momentum"] = bn_momentum
    if spec.family.static_input:
        size = int(image_size or spec.train_size)
        return registry.get_model(name, include_top=True, classes=classes, classifier_activation=None,
                                  input_shape=(size, size, 3), dropout_rate=dropout_rate, **kwargs)
    dropout = spec.dropout_rate if dropout_rate is None else dropout_rate
    backbone = registry.get_model(name, include_top=False, input_shape=(None, None, 3), dropout_rate=dropout,
                                  **kwargs)
    outputs = common.classifier_head(backbone.output, include_top=True, pooling=None, classes=classes,
                                     classifier_activation=None, dropout_rate=dropout)
    return keras.Model(backbone.inputs, outputs, name=backbone.name)


def build_backbone(name, image_size=None, *, weights=None):
    """A headless model of `name` (fine-tune initialisation from a weights file): at any size,
    or at `image_size` for a static-input family."""
    spec = registry.get_spec(name)
    shape = (None, None, 3)
    if spec.family.static_input:
        size = int(image_size or spec.train_size)
        shape = (size, size, 3)
    return registry.get_model(name, include_top=False, input_shape=shape, weights=weights)
