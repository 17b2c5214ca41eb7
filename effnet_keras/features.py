"""Multi-scale feature maps P1..P5 (strides 2, 4, 8, 16, 32) for detection and segmentation.

P_i is the output of the last block that runs at stride 2**i, as the builder recorded it
(`model.parts.pyramid`): for EfficientNet the reduction endpoints automl/EfficientDet use
(B0: block1a, block2b, block3b, block5c, block7a); for CoAtNet the stem and stage outputs.
"""

import keras

from effnet_keras.model_parts import LEVELS
from effnet_keras.model_parts import model_parts


def feature_layers(model):
    """-> {"P1": layer_name, ..., "P5": layer_name}."""
    return dict(model_parts(model).pyramid)


def feature_extractor(model, levels=LEVELS):
    """A model with the same inputs whose outputs are a dict {level: feature map}."""
    names = feature_layers(model)
    unknown = [lvl for lvl in levels if lvl not in names]
    if unknown:
        raise ValueError(f"Unknown feature levels {unknown}; allowed: {sorted(names)}")
    outputs = {lvl: model.get_layer(names[lvl]).output for lvl in levels}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_features")
