"""timm `tf_efficientnet_*` / `tf_efficientnetv2_*` state dicts -> our EfficientNets, NumPy only.

timm's `tf_` variants are Google's checkpoints ported to PyTorch with TF "SAME" padding and
BN eps 1e-3, i.e. exactly our networks. (The non-`tf_` timm EfficientNets use symmetric
padding and are trained by timm: their weights load, but outputs differ at stride-2 convs.)

timm block modules by kind, inside `blocks.<stage>.<j>`:

    DepthwiseSeparable (MBConv, expansion 1)  conv_dw bn1 [se] conv_pw bn2
    InvertedResidual   (MBConv)               conv_pw bn1 conv_dw bn2 [se] conv_pwl bn3
    EdgeResidual       (Fused-MBConv)         conv_exp bn1 [se] conv_pwl bn2
    ConvBnAct          (Fused, expansion 1)   conv bn1

plus conv_stem/bn1, conv_head/bn2, classifier. Layout changes: conv OIHW -> HWIO,
depthwise (C, 1, k, k) -> (k, k, C, 1), Linear (out, in) -> (in, out).
"""

import numpy as np

from effnet_keras.weights import layout

TIMM_MODULES = {
    ("mbconv", False): {"dwconv": "conv_dw", "bn": "bn1", "project_conv": "conv_pw", "project_bn": "bn2"},
    ("mbconv", True): {"expand_conv": "conv_pw", "expand_bn": "bn1", "dwconv": "conv_dw", "bn": "bn2",
                       "project_conv": "conv_pwl", "project_bn": "bn3"},
    ("fused", True): {"expand_conv": "conv_exp", "expand_bn": "bn1", "project_conv": "conv_pwl", "project_bn": "bn2"},
    ("fused", False): {"project_conv": "conv", "project_bn": "bn1"},
}
IGNORED_SUFFIXES = ("num_batches_tracked",)


def _conv(value):
    return np.transpose(value, (2, 3, 1, 0))


def _depthwise(value):
    return np.transpose(value, (2, 3, 0, 1))


def convert_timm_efficientnet(state_dict, model):
    """{our layer name: [arrays in Keras weight order]} (pure: `model` is only read, for its parts and
    blocks); every timm key must be used exactly once."""
    state = {k: np.asarray(v) for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}
    used = set()

    def take(key):
        if key not in state:
            raise ValueError(f"timm state dict has no {key!r}: not a timm EfficientNet of this size?")
        used.add(key)
        return state[key]

    def bn(module):
        return [take(f"{module}.{n}") for n in ("weight", "bias", "running_mean", "running_var")]

    out = {}
    roles = layout.stem_and_head(model)
    out[roles["stem_conv"]] = [_conv(take("conv_stem.weight"))]
    out[roles["stem_bn"]] = bn("bn1")
    for block in layout.efficientnet_blocks(model):
        where = f"blocks.{block.stage}.{block.position}"
        for role, module in TIMM_MODULES[(block.kind, block.expands)].items():
            ours = block.layers[role]
            if role.endswith("bn"):
                out[ours] = bn(f"{where}.{module}")
            elif role == "dwconv":
                out[ours] = [_depthwise(take(f"{where}.{module}.weight"))]
            else:
                out[ours] = [_conv(take(f"{where}.{module}.weight"))]
        for role, module in (("se_reduce", "se.conv_reduce"), ("se_expand", "se.conv_expand")):
            if role in block.layers:
                out[block.layers[role]] = [_conv(take(f"{where}.{module}.weight")), take(f"{where}.{module}.bias")]
    out[roles["top_conv"]] = [_conv(take("conv_head.weight"))]
    out[roles["top_bn"]] = bn("bn2")
    if "classifier.weight" in state:  # the assigner leaves it out for a headless model
        out[roles["logits"]] = [take("classifier.weight").T, take("classifier.bias")]
    layout.refuse_unused(state, used, "timm", model.name)
    return out
