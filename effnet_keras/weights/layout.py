"""The weight-carrying layers of an EfficientNet (V1 or V2) by role, in network order.

Converters from other layouts (automl / tensorflow/tpu checkpoints, timm state dicts)
name weights by block index and role; this walks our model once and says, for every
block, which of our layers plays which role:

    expand_conv expand_bn dwconv bn se_reduce se_expand project_conv project_bn

and the block kind: "mbconv" (depthwise, with or without expansion) or "fused".
"""

import dataclasses
import re

from effnet_keras.model_parts import model_parts

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
    """{"stem_conv", "stem_bn", "top_conv", "top_bn", "logits": our layer name} from the model's parts record."""
    parts = model_parts(model)
    if len(parts.stem) != 2 or len(parts.head_conv) != 2:
        raise ValueError(f"{model.name!r} records no EfficientNet stem / head conv (stem {parts.stem}, head conv "
                         f"{parts.head_conv}): not one of our EfficientNets built by its builder.")
    return {"stem_conv": parts.stem[0], "stem_bn": parts.stem[1], "top_conv": parts.head_conv[0],
            "top_bn": parts.head_conv[1], "logits": parts.logits or parts.head[-1]}


def refuse_unused(state, used, source, model_name):
    """Every key of a state dict must have gone somewhere: leftovers mean another model size or family."""
    unused = sorted(set(state) - set(used))
    if unused:
        raise ValueError(f"{source} state dict keys with no place in {model_name!r}: {unused[:8]}"
                         f"{' ...' if len(unused) > 8 else ''} (another model size or family?)")
