"""The weight-carrying layers of an EfficientNet (V1 or V2) by role, in network order.

Converters from other layouts (automl / tensorflow/tpu checkpoints, timm state dicts)
name weights by block index and role; this walks our model once and says, for every
block, which of our layers plays which role:

    expand_conv expand_bn dwconv bn se_reduce se_expand project_conv project_bn

and the block kind: "mbconv" (depthwise, with or without expansion) or "fused".
"""

import dataclasses
import re

_BLOCK = re.compile(r"^(block\d+[a-z]+_)(.*)$")
ROLE_SUFFIXES = {
    "expand_conv": ("expand_conv",),
    "expand_bn": ("expand_bn",),
    "dwconv": ("dwconv", "dwconv2"),  # V1 / V2 keras.applications spellings
    "bn": ("bn",),
    "se_reduce": ("se_reduce",),
    "se_expand": ("se_expand",),
    "project_conv": ("project_conv",),
    "project_bn": ("project_bn",),
}
STEM_HEAD = {"stem_conv": "stem_conv", "stem_bn": "stem_bn", "top_conv": "top_conv", "top_bn": "top_bn",
             "predictions": "predictions"}


@dataclasses.dataclass
class Block:
    index: int  # 0-based over the whole network (automl's `blocks_<n>`)
    stage: int  # 0-based stage (timm's `blocks.<stage>.<j>`)
    position: int  # 0-based index inside the stage
    prefix: str
    layers: dict  # role -> our layer name

    @property
    def kind(self):
        return "mbconv" if "dwconv" in self.layers else "fused"

    @property
    def expands(self):
        return "expand_conv" in self.layers


def efficientnet_blocks(model):
    """[Block] in network order; raises for a model that is not one of our EfficientNets."""
    by_prefix = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        match = _BLOCK.match(layer.name)
        if not match:
            continue
        prefix, suffix = match.groups()
        for role, suffixes in ROLE_SUFFIXES.items():
            if suffix in suffixes:
                by_prefix.setdefault(prefix, {})[role] = layer.name
                break
        else:
            raise ValueError(f"Layer {layer.name!r} of {model.name!r} has no role in an EfficientNet block.")
    if not by_prefix:
        raise ValueError(f"{model.name!r} has no EfficientNet blocks (block<stage><letter>_*): not an EfficientNet.")
    blocks, stage_of = [], {}
    for index, prefix in enumerate(by_prefix):
        stage_number = int(re.match(r"block(\d+)", prefix).group(1))
        stage_of.setdefault(stage_number, []).append(prefix)
        blocks.append(Block(index, stage_number - 1, len(stage_of[stage_number]) - 1, prefix, by_prefix[prefix]))
    return blocks


def stem_and_head(model):
    names = {layer.name for layer in model.layers if layer.weights}
    return {role: name for role, name in STEM_HEAD.items() if name in names}
