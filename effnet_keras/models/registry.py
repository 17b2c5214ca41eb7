"""Model registry: canonical names (automl style) -> builders.

`get_model("efficientnetv2-s", **kwargs)` and `list_models()`; other families
(CoAtNet) add themselves with `register_model`.
"""

import re

from effnet_keras.models import coatnet
from effnet_keras.models import efficientnet
from effnet_keras.models import efficientnet_v2

_REGISTRY = {}


def register_model(name, builder):
    if name in _REGISTRY and _REGISTRY[name] is not builder:
        raise ValueError(f"Model name {name!r} is already registered to {_REGISTRY[name].__name__}.")
    _REGISTRY[name] = builder
    return builder


def _canonical(name):
    """'EfficientNetV2S', 'efficientnetv2_s', 'efficientnetb0' -> registry spelling."""
    key = str(name).strip().lower().replace("_", "-")
    if key in _REGISTRY:
        return key
    compact = key.replace("-", "")
    for registered in _REGISTRY:
        if registered.replace("-", "") == compact:
            return registered
    return None


def get_builder(name):
    key = _canonical(name)
    if key is None:
        raise ValueError(f"Unknown model name {name!r}. Available models: {', '.join(list_models())}")
    return _REGISTRY[key]


def get_model(name, **kwargs):
    """Build a registered model by name, e.g. `get_model("efficientnet-b3", weights=None)`."""
    return get_builder(name)(**kwargs)


def list_models(pattern=None):
    """Registered model names, sorted by family then size; `pattern` is a regex filter."""
    names = sorted(_REGISTRY, key=_sort_key)
    if pattern:
        names = [n for n in names if re.search(pattern, n)]
    return names


def _sort_key(name):
    family, _, variant = name.rpartition("-")
    order = ["nano", "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "l2", "s", "m", "l", "xl"]
    if variant in order:
        return (family, order.index(variant), variant)
    return (family, len(order) + (int(variant) if variant.isdigit() else 0), variant)


for _spec_name, _builder in (
    [(f"efficientnet-{v}", getattr(efficientnet, f"EfficientNet{v.upper()}")) for v in efficientnet.V1_VARIANTS]
    + [(f"efficientnetv2-{v}", getattr(efficientnet_v2, "EfficientNetV2" + ("Nano" if v == "nano" else v.upper()))) for v in efficientnet_v2.V2_VARIANTS]
):
    register_model(_spec_name, _builder)

for _variant in sorted(coatnet.COATNET_SPECS):
    register_model(_variant, getattr(coatnet, "CoAtNet" + _variant.rsplit("-", 1)[1]))


def build_classifier(name, classes, image_size=None, **kwargs):
    """The training architecture: a classifier that takes any input size.

    keras.applications builders require a static size with include_top=True; for
    progressive training (sizes change per stage) and for exports, EfficientNets
    are built headless at (None, None, 3) with the standard head (`avg_pool`,
    `top_dropout`, `predictions`, logits). CoAtNet's relative-position tables need
    a static size, so it is built at `image_size`.
    """
    from effnet_keras.models import common

    if name.lower().startswith("coatnet"):
        if not image_size:
            raise ValueError(f"{name} needs a static image_size (a multiple of 32).")
        return get_model(name, include_top=True, classes=classes, classifier_activation=None,
                         input_shape=(image_size, image_size, 3), **kwargs)
    builder = get_builder(name)
    dropout = kwargs.pop("dropout_rate", None)
    if dropout is None:
        dropout = builder.spec.dropout_rate
    import keras

    backbone = builder(include_top=False, input_shape=(None, None, 3), dropout_rate=dropout, **kwargs)
    outputs = common.classifier_head(backbone.output, include_top=True, pooling=None, classes=classes,
                                     classifier_activation=None, dropout_rate=dropout)
    return keras.Model(backbone.inputs, outputs, name=backbone.name)
