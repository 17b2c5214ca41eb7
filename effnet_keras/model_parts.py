"""The parts of a model, recorded by its builder: what every tool reads instead of layer names.

A foundation module (Keras only): the weights layer (which loads a head or leaves it) and every
tool above it read the record; the builders in models/ fill it in.

A builder of ours lays out stem -> blocks -> [head conv] -> head and, while it does, notes
which layer plays which part (`ModelParts`, layer names):

    stem        the stem's weight layers, in order          ("stem_conv", "stem_bn")
    head_conv   the 1x1 head conv and its BN (EfficientNets) ("top_conv", "top_bn")
    features    the last 4-D feature map (Grad-CAM's default) "top_activation"
    pyramid     P1..P5: the output of the last block at stride 2, 4, 8, 16, 32
    pooling     the global pooling layer                     "avg_pool" (None without one)
    embedding   the vector the classifier reads, before its dropout: the pooled features,
                or CoAtNet's pre-logits; what a feature-vector export returns
    dropout     the head's dropout                           "top_dropout"
    logits      the classifier                               "predictions"
    head        the head's weight layers, built or not        ("head_norm", ..., "predictions")
    normalization  the in-model input normalisation mode (effnet_keras.preprocessing)

The record travels with the model: `EffnetModel` (a Functional model) keeps it, writes it into
`get_config()`, so `.keras` files and `from_config` bring it back. `keras.models.clone_model`
rebuilds the graph with the same layer names but calls the constructor without it; the record
is then recovered from the graph itself (`recover_parts`: the head by layer type from the
outputs back, the pyramid by a stride probe over the blocks, the normalisation from the input's
Rescaling constants; `stem` and `head_conv`, which only the weight converters read from a
freshly built model, stay empty), which also serves models built elsewhere (keras.applications'
EfficientNets).

Anchors: keras-hub keeps `pooler` / `output_dropout` / `output_dense` on its classifiers and
fills `pyramid_outputs` while building; timm has `get_classifier()` and `forward_head(pre_logits=True)`.
"""

import dataclasses
import math

import keras
import numpy as np

from effnet_keras import _keras_internals as keras_internals

LEVELS = ("P1", "P2", "P3", "P4", "P5")
# The classifier's layer name in every model of ours, as in keras.applications: weight files of both
# hold it under this name (the builders name it so; readers of a file's head look it up).
LOGITS_LAYER = "predictions"


@dataclasses.dataclass(frozen=True)
class ModelParts:
    features: str
    pyramid: dict  # {"P1": layer name, ..., "P5": layer name} (a network cut short has fewer)
    stem: tuple = ()
    head_conv: tuple = ()
    pooling: str | None = None
    embedding: str | None = None
    dropout: str | None = None
    logits: str | None = None
    head: tuple = ()
    normalization: str = "none"

    @property
    def has_classifier(self):
        return self.logits is not None

    def to_config(self):
        config = dataclasses.asdict(self)
        config.update(stem=list(self.stem), head_conv=list(self.head_conv), head=list(self.head),
                      pyramid=dict(self.pyramid))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("stem", "head_conv", "head"):
            config[key] = tuple(config.get(key) or ())
        config["pyramid"] = dict(config["pyramid"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="effnet_keras")
class EffnetModel(keras.Model):
    """A Functional model that keeps its builder's `ModelParts` (`model.parts`).

    Everything else is keras.Model's: calling, training, saving; `get_config()` adds the
    record, so it survives `.keras` files and `from_config`.
    """

    def __init__(self, *args, parts=None, **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(parts, dict):
            parts = ModelParts.from_config(parts)
        # keras.models.clone_model builds the copy through this constructor without the record.
        self._parts = parts

    @property
    def parts(self):
        if self._parts is None:
            self._parts = recover_parts(self)
        return self._parts

    def get_config(self):
        config = super().get_config()
        config["parts"] = self.parts.to_config()
        return config


def model_parts(model):
    """The `ModelParts` of `model`: its builder's record, or (a model without one) recovered from its graph."""
    parts = getattr(model, "parts", None)
    return parts if isinstance(parts, ModelParts) else recover_parts(model)


def get_classifier(model):
    """The classifier Dense layer (timm's `get_classifier()`); a ValueError for a headless model."""
    parts = model_parts(model)
    if parts.logits is None:
        raise ValueError(f"{model.name} has no classifier (built with include_top=False): build it with "
                         "include_top=True, or pass pooling='avg' for features.")
    return model.get_layer(parts.logits)


def embedding_output(model):
    """The tensor a feature vector is: the classifier's input before its dropout (timm's
    forward_head(pre_logits=True)), or the pooled output of a headless model with pooling."""
    parts = model_parts(model)
    if parts.embedding is None:
        raise ValueError(f"{model.name} has no pooled features (include_top=False, pooling=None): build it with "
                         "pooling='avg' or include_top=True.")
    return model.get_layer(parts.embedding).output


def logits_model(model):
    """`model` with pre-activation logits as its output (the same layers and weights), whatever the
    classifier's activation. A model whose classifier has no activation is returned as is."""
    classifier = get_classifier(model)
    if keras.activations.serialize(classifier.activation) in ("linear", {"class_name": "linear"}) or \
            classifier.activation is keras.activations.linear:
        return model
    logits = keras.layers.Dense(classifier.units, use_bias=classifier.use_bias, dtype=classifier.dtype_policy,
                                name=f"{classifier.name}_logits")
    outputs = logits(classifier.input)
    logits.set_weights(classifier.get_weights())
    return keras.Model(model.inputs, outputs, name=f"{model.name}_logits")


# ---------------------------------------------------------------------- recovery from the graph


def recover_parts(model, probe_size=256):
    """`ModelParts` from a model's graph, for a model that does not carry its builder's record.

    The head is found by layer type, from the output back: Dense (logits) <- Dropout <-
    [Dense pre-logits] <- [LayerNormalization] <- global pooling <- the feature map. The
    pyramid is the last layer of each block group (layers sharing a `<block>_` name prefix,
    as keras.applications and our builders name them) at stride 2, 4, 8, 16, 32, the strides
    taken from a symbolic pass at `probe_size`.
    """
    output_layer = keras_internals.producing_layer(model.outputs[0])
    logits = dropout = embedding = pooling = None
    head = []
    layer = output_layer
    if isinstance(layer, keras.layers.Dense) and len(model.outputs[0].shape) == 2:
        logits = layer
        head.insert(0, layer.name)
        layer = keras_internals.producing_layer(layer.input)
        if isinstance(layer, keras.layers.Dropout):
            dropout = layer
            layer = keras_internals.producing_layer(layer.input)
        embedding = layer
        while isinstance(layer, (keras.layers.Dense, keras.layers.LayerNormalization)):
            head.insert(0, layer.name)
            layer = keras_internals.producing_layer(layer.input)
    if _is_global_pool(layer):
        pooling = layer
        embedding = embedding or layer
        layer = keras_internals.producing_layer(layer.input)
    features = layer
    if features is None or len(features.output.shape) != 4:
        raise ValueError(f"{model.name}: cannot find its parts (no 4-D feature map before its head); "
                         "it is not a classification or feature model of the EfficientNet/CoAtNet kind.")
    return ModelParts(
        features=features.name,
        pyramid=_probe_pyramid(model, features, probe_size),
        normalization=_input_normalization(model),
        pooling=pooling.name if pooling is not None else None,
        embedding=embedding.name if embedding is not None else None,
        dropout=dropout.name if dropout is not None else None,
        logits=logits.name if logits is not None else None,
        head=tuple(head),
    )


def _input_normalization(model):
    """The mode whose constants the Rescaling layer fed by the input holds ("none" without one)."""
    from effnet_keras.preprocessing import NORMALIZATIONS
    from effnet_keras.preprocessing import scale_offset

    for layer in model.layers:
        if isinstance(layer, keras.layers.Rescaling) and keras_internals.producing_layer(layer.input) is not None \
                and isinstance(keras_internals.producing_layer(layer.input), keras.layers.InputLayer):
            channels = int(model.inputs[0].shape[-1])
            for mode in NORMALIZATIONS:
                scale, offset = scale_offset(mode, channels)
                if np.allclose(layer.scale, scale) and np.allclose(layer.offset, offset):
                    return mode
    return "none"


def _is_global_pool(layer):
    return (isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D))
            and not getattr(layer, "keepdims", False))


# Layer-name groups that are not blocks: the input's normalisation, the 1x1 head conv ("top_*",
# keras.applications' and ours) and the head.
NOT_BLOCKS = ("input", "rescaling", "normalization", "top", "head", "avg", "max", "predictions")


def _probe_pyramid(model, features, probe_size):
    """P1..P5 of a model without a record: the last layer of each name-prefix group, by stride."""
    last_of_group = {}
    for layer in model.layers:
        group = layer.name.split("_")[0]
        if not isinstance(layer, keras.layers.InputLayer) and not group.lower().startswith(NOT_BLOCKS):
            last_of_group[group] = layer
        if layer is features:
            break
    candidates = [layer for layer in last_of_group.values() if len(layer.output.shape) == 4]
    height, width = model.inputs[0].shape[1:3]
    probe = (height or probe_size, width or probe_size)
    probe_model = keras.Model(model.inputs, [layer.output for layer in candidates])
    specs = probe_model.compute_output_spec(keras.KerasTensor((1, probe[0], probe[1], model.inputs[0].shape[-1])))
    pyramid = {}
    for layer, spec in zip(candidates, keras.tree.flatten(specs)):
        # SAME padding gives ceil(size / stride): round the ratio in log2.
        ratio = max(probe) / max(spec.shape[1], spec.shape[2])
        level = int(round(math.log2(ratio))) if ratio >= 1.5 else 0
        if 1 <= level <= 5:
            pyramid[f"P{level}"] = layer.name  # later groups at the same stride win
    return {level: pyramid[level] for level in LEVELS if level in pyramid}


class PartsRecorder:
    """What a builder fills in as it lays out the layers (see `ModelParts`).

    The builder names the stem and head convs, reports each block's output with its stride
    (`block_output`), and the head (`common.classifier_head`) reports its layers; `finish`
    makes the record.
    """

    def __init__(self, normalization):
        self.normalization = normalization
        self.stem, self.head_conv, self.head = (), (), ()
        self.pyramid = {}
        self.features = self.pooling = self.embedding = self.dropout = self.logits = None

    def block_output(self, tensor, stride):
        """A block (or the stem) ends with `tensor` at `stride` (2, 4, ..., 32): the last one per level wins."""
        level = int(round(math.log2(stride)))
        if 1 <= level <= 5:
            self.pyramid[f"P{level}"] = keras_internals.producing_layer(tensor).name

    def feature_map(self, tensor):
        self.features = keras_internals.producing_layer(tensor).name

    def finish(self):
        # A network cut short (a custom table with fewer stages) has fewer levels: feature_extractor
        # refuses the missing ones by name.
        return ModelParts(features=self.features, pyramid={k: self.pyramid[k] for k in LEVELS if k in self.pyramid},
                          stem=self.stem,
                          head_conv=self.head_conv, pooling=self.pooling, embedding=self.embedding,
                          dropout=self.dropout, logits=self.logits, head=self.head,
                          normalization=self.normalization)
