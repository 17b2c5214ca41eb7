"""Multi-scale feature maps P1..P5 (strides 2, 4, 8, 16, 32) for detection and segmentation.

P_i is the output of the last block that runs at stride 2**i: for EfficientNet
the reduction endpoints automl/EfficientDet use (B0: block1a, block2b, block3b,
block5c, block7a); for CoAtNet the stem and stage outputs. A block is the group
of layers sharing a name prefix (`block2b_...`, `stem_...`, `stage3_...`); its
last layer in graph order is its output. Strides come from a symbolic pass at a
probe size, so models with dynamic input sizes work too.
"""

import math

import keras

EXCLUDED_PREFIXES = ("top", "avg", "max", "predictions", "head", "pre", "input", "rescaling", "normalization")


def _prefix(name):
    return name.split("_")[0]


def feature_layers(model, probe_size=256):
    """-> {"P1": layer_name, ..., "P5": layer_name}."""
    last_of_group = {}
    for layer in model.layers:
        prefix = _prefix(layer.name)
        if prefix.lower().startswith(EXCLUDED_PREFIXES) or isinstance(layer, keras.layers.InputLayer):
            continue
        last_of_group[prefix] = layer
    candidates = [layer for layer in last_of_group.values() if len(layer.output.shape) == 4]
    height, width = model.inputs[0].shape[1:3]
    probe = (height or probe_size, width or probe_size)
    probe_model = keras.Model(model.inputs, [layer.output for layer in candidates])
    specs = probe_model.compute_output_spec(keras.KerasTensor((1, probe[0], probe[1], model.inputs[0].shape[-1])))
    endpoints = {}
    for layer, spec in zip(candidates, keras.tree.flatten(specs)):
        # SAME padding gives ceil(size / stride): at sizes that are not multiples of 32 the
        # ratio is below the stride (48 px -> 2x2 at stride 32), so round in log2.
        ratio = max(probe) / max(spec.shape[1], spec.shape[2])
        level = int(round(math.log2(ratio))) if ratio >= 1.5 else 0
        if 1 <= level <= 5:
            endpoints[f"P{level}"] = layer.name  # later layers at the same stride win
    missing = [f"P{i}" for i in range(1, 6) if f"P{i}" not in endpoints]
    if missing:
        raise ValueError(f"{model.name}: could not find feature levels {missing} (found {endpoints}).")
    return {k: endpoints[k] for k in sorted(endpoints)}


def feature_extractor(model, levels=("P1", "P2", "P3", "P4", "P5")):
    """A model with the same inputs whose outputs are a dict {level: feature map}."""
    names = feature_layers(model)
    unknown = [lvl for lvl in levels if lvl not in names]
    if unknown:
        raise ValueError(f"Unknown feature levels {unknown}; allowed: {sorted(names)}")
    outputs = {lvl: model.get_layer(names[lvl]).output for lvl in levels}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")
