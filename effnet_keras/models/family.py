"""What a model family needs every tool to know, carried by each spec (`spec.family`).

Training, export, Grad-CAM, predict and the weight loaders read these traits from the
spec; none of them tells families apart by name.
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    recipe: str  # effnet_keras/configs/recipes/<recipe>.yaml: the family's training defaults
    converter: str  # which timm state-dict converter reads its checkpoints (weights/timm_<converter>.py)
    static_input: bool  # needs a static input height/width (CoAtNet: per-grid relative-position tables)
    size_multiple: int  # input sides must be multiples of this (1: any size >= 32)
    progressive: bool  # can change image size between training stages on one model
    weights_note: str = ""  # why a model of the family has no published weights, when none has


EFFICIENTNET = Family("efficientnet", recipe="efficientnet", converter="efficientnet", static_input=False,
                      size_multiple=1, progressive=True)
EFFICIENTNET_V2 = Family("efficientnetv2", recipe="efficientnet", converter="efficientnet", static_input=False,
                         size_multiple=1, progressive=True)
# tensorflow/tpu's Lite recipe: V1's RMSProp schedule, V1 crops, no RandAugment (configs/recipes/).
EFFICIENTNET_LITE = Family("efficientnet_lite", recipe="efficientnet_lite", converter="efficientnet",
                           static_input=False, size_multiple=1, progressive=True)
# Every CoAtNet downsamples 32x and its Transformer stages need whole grids at 1/16 and 1/32.
COATNET = Family("coatnet", recipe="coatnet", converter="coatnet", static_input=True, size_multiple=32,
                 progressive=False, weights_note="Google never released CoAtNet checkpoints")
