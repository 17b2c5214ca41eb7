"""The one place a classifier for training, export, Grad-CAM and predict is built.

`build_classifier(name, classes, image_size)` is the variant's own builder with its own head
(`include_top=True`), so a weights file or id whose classifier has `classes` classes keeps it
(another class count: a fresh head, with a warning). It reads the family's traits from the
spec: a family that takes any input size (EfficientNet V1/V2/Lite) is built at (None, None, 3),
so every progressive stage and every export size runs on one model; a family that needs a
static size (CoAtNet's relative-position tables) is built at `image_size`. Logits out (no
softmax): the losses, predict and the exports add it.
"""

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
    kwargs = {k: v for k, v in (("dropout_rate", dropout_rate), ("drop_connect_rate", drop_connect_rate),
                                ("bn_momentum", bn_momentum)) if v is not None}
    return registry.get_model(name, include_top=True, classes=classes, classifier_activation=None,
                              input_shape=_input_shape(name, image_size), weights=weights, **kwargs)


def build_backbone(name, image_size=None, *, weights=None, pooling=None):
    """A headless model of `name` (fine-tune initialisation from a weights file, a feature-vector
    export of headless weights): at any size, or at `image_size` for a static-input family."""
    return registry.get_model(name, include_top=False, input_shape=_input_shape(name, image_size), weights=weights,
                              pooling=pooling)


def _input_shape(name, image_size):
    spec = registry.get_spec(name)
    if spec.family.static_input:
        size = int(image_size or spec.train_size)
        return (size, size, 3)
    return (None, None, 3)
