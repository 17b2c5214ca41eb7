"""Model registry: canonical names (automl style) -> (spec, builder).

`get_model("efficientnetv2-s", **kwargs)`, `get_spec(name)` (the variant's table row and
its family's traits, which every tool reads instead of parsing the name) and
`list_models()`; a new family registers its variants with `register_model`.
"""

import dataclasses
import re

from effnet_keras.naming import canonical_name
from effnet_keras.models import coatnet
from effnet_keras.models import efficientnet
from effnet_keras.models import efficientnet_lite
from effnet_keras.models import efficientnet_v2


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    name: str
    spec: object  # NetSpec / CoAtNetSpec: name, family, default_size, train_size, dropout_rate, ...
    builder: object  # the public keras.applications-style builder


_REGISTRY = {}


def register_model(name, builder, spec=None):
    """Register `builder` under `name`; `spec` defaults to `builder.spec` and must carry `family`."""
    spec = spec if spec is not None else getattr(builder, "spec", None)
    if spec is None or not hasattr(spec, "family"):
        raise ValueError(f"register_model({name!r}): the builder needs a spec with a `family` (pass spec=, or set "
                         "builder.spec); training, export and the weight loaders read the family's traits from it.")
    if name in _REGISTRY and _REGISTRY[name].builder is not builder:
        raise ValueError(f"Model name {name!r} is already registered to {_REGISTRY[name].builder.__name__}.")
    _REGISTRY[name] = ModelEntry(name, spec, builder)
    return builder


def canonical(name):
    """The registered name `name` spells ('EfficientNetV2S', 'efficientnetv2_s' -> 'efficientnetv2-s'),
    or a ValueError listing the registered names."""
    return get_entry(name).name


def get_entry(name):
    key = canonical_name(name, _REGISTRY)
    if key is None:
        raise ValueError(f"Unknown model name {name!r}. Available models: {', '.join(list_models())}")
    return _REGISTRY[key]


def get_builder(name):
    return get_entry(name).builder


def get_spec(name):
    """The registered variant's spec (`spec.family` holds the family's traits)."""
    return get_entry(name).spec


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
    order = ["nano", "b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "b8", "l2", "lite0", "lite1", "lite2", "lite3",
             "lite4", "s", "m", "l", "xl"]
    if variant in order:
        return (family, order.index(variant), variant)
    return (family, len(order) + (int(variant) if variant.isdigit() else 0), variant)


for _module in (efficientnet, efficientnet_lite, efficientnet_v2, coatnet):
    for _builder in _module.PUBLIC_BUILDERS:
        register_model(_builder.spec.name, _builder)
