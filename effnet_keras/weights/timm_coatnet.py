"""timm CoAtNet state dict -> an effnet_keras CoAtNet, by name, NumPy only.

timm's `coatnet_{0..5}_224` (`timm.models.maxxvit`) have exactly our structure when
the Keras model is built with the matching knobs:

    timm coatnet_N_224 (defaults)           CoAtNetN(downsample="dwconv", pool="avg", padding="symmetric")
    timm coatnet_N_224 + conv_stride_mode="1x1", conv_pool_type="max2",
        transformer_pool_type="max2", conv_padding="same"      CoAtNetN()   (paper Eqn 4/5)

(timm's CoAtNet-5 config uses head size 32: pass `head_dim=32` to CoAtNet5.) timm's
`*_rw_*` models are different networks and are rejected by the key check.

Layout changes done here: PyTorch OIHW kernels -> Keras HWIO, depthwise (C,1,k,k) ->
(k,k,C,1), Linear/1x1 (out,in) -> (in,out); timm's fused qkv (per head [q,k,v] when
`head_first=True`, its default) -> our [q | k | v]; the relative position table
((2H-1)(2W-1), heads) -> (heads, 2H-1, 2W-1) at the checkpoint's grid, which the one
assigner (`weights.assign`) resizes bilinearly when the model was built at another input
size, with one log line.

    model = effnet_keras.CoAtNet0(downsample="dwconv", pool="avg", padding="symmetric",
                                  weights="coatnet_0_224.safetensors")
"""

import re

import numpy as np

from effnet_keras.layers.attention import RelativeAttention
from effnet_keras.model_parts import model_parts

# Buffers timm keeps in its state dict that carry no learned value.
IGNORED_SUFFIXES = ("num_batches_tracked", "relative_position_index")
BN = ("weight", "bias", "running_mean", "running_var")
LN = ("weight", "bias")
WB = ("weight", "bias")

# Our layer-name suffix inside a block -> (timm module inside `stages.i.blocks.j`, tensor names).
BLOCK_MODULES = {
    "shortcut_proj": ("shortcut.expand", WB),
    "pre_bn": ("pre_norm", BN),
    "expand_conv": ("conv1_1x1", ("weight",)),
    "expand_bn": ("norm1", BN),
    "dwconv": ("conv2_kxk", ("weight",)),
    "bn": ("norm2", BN),
    "se_reduce": ("se.fc1", WB),
    "se_expand": ("se.fc2", WB),
    "project_conv": ("conv3_1x1", WB),
    "attn_norm": (("norm1.norm", "norm1"), LN),  # norm1 is (LN, pool) in a strided block
    "attn_qkv": ("attn.qkv", WB),
    "attn": ("attn.rel_pos", ("relative_position_bias_table",)),
    "attn_proj": ("attn.proj", WB),
    "ffn_norm": ("norm2", LN),
    "ffn_expand": ("mlp.fc1", WB),
    "ffn_project": ("mlp.fc2", WB),
}
TOP_MODULES = {
    "stem_conv1": ("stem.conv1", ("weight",)),
    "stem_bn": ("stem.norm1", BN),
    "stem_conv2": ("stem.conv2", ("weight",)),
    "head_norm": ("head.norm", LN),
    "head_pre_logits": ("head.pre_logits.fc", WB),
    "predictions": ("head.fc", WB),
}
BLOCK_NAME = re.compile(r"^stage(\d+)_block(\d+)_(.+)$")


def convert_timm_coatnet(state_dict, model, *, head_first=True, source_image_size=None):
    """A timm CoAtNet `state_dict` ({name: array}) -> {our layer name: [arrays]} for `model`.

    Pure: the model is read (its layer names, kinds and head count), not written; the
    arrays go to `weights.assign.assign_by_name`, which checks every shape and resizes the
    relative-position tables to the model's grid (one log line).
    `head_first`: timm's qkv channel order (True for `coatnet_*_224`, False for its
    `_tf_cfg` models). `source_image_size`: int or (H, W) the checkpoint was trained at,
    to unflatten its tables; default: the model's grid when the table fits it, else the
    square grid its size implies (timm's 224 checkpoints).
    Every model weight must be found and every checkpoint tensor used (a headless model
    leaves the head's); otherwise ValueError naming the tensors.
    """
    arrays = {k: np.asarray(v) for k, v in state_dict.items()}
    used, out = set(), {}
    input_hw = tuple(int(s) for s in model.inputs[0].shape[1:3])
    if source_image_size is None:
        source_hw = None
    else:
        source_hw = (source_image_size,) * 2 if isinstance(source_image_size, int) else tuple(source_image_size)

    # The attention core of block X is the layer "X_attn"; its qkv projection is "X_attn_qkv".
    attention = {layer.name + "_qkv": layer for layer in model.layers if isinstance(layer, RelativeAttention)}
    for layer in model.layers:
        if not layer.weights:
            continue
        module, names = _timm_module(layer.name, arrays)
        keys = [f"{module}.{n}" for n in names]
        missing = [k for k in keys if k not in arrays]
        if missing:
            raise ValueError(
                f"Layer {layer.name!r}: the state dict has no {missing} (is this a timm coatnet_*_224 checkpoint?)"
            )
        used.update(keys)
        values = [arrays[k] for k in keys]
        if isinstance(layer, RelativeAttention):
            out[layer.name] = [_table(values[0], layer, input_hw, source_hw)]
        else:
            out[layer.name] = [_to_keras(layer, v, i, head_first, attention) for i, v in enumerate(values)]

    headless = model_parts(model).logits is None  # the file's head has no place: left out, not an error
    unused = sorted(
        k
        for k in arrays
        if k not in used and not k.endswith(IGNORED_SUFFIXES) and not (headless and k.startswith("head."))
    )
    if unused:
        raise ValueError(
            f"{len(unused)} checkpoint tensors have no place in {model.name} (different variant or knobs?): "
            f"{unused[:8]}{' ...' if len(unused) > 8 else ''}"
        )
    return out


def _timm_module(layer_name, arrays):
    if layer_name in TOP_MODULES:
        return TOP_MODULES[layer_name]
    match = BLOCK_NAME.match(layer_name)
    if not match or match.group(3) not in BLOCK_MODULES:
        raise ValueError(f"Layer {layer_name!r} has no timm counterpart; is this an effnet_keras CoAtNet?")
    stage, block, suffix = int(match.group(1)), int(match.group(2)), match.group(3)
    module, names = BLOCK_MODULES[suffix]
    prefix = f"stages.{stage - 1}.blocks.{block}."
    if isinstance(module, tuple):  # first alternative present in the checkpoint wins
        module = next((m for m in module if f"{prefix}{m}.{names[0]}" in arrays), module[-1])
    return prefix + module, names


def _to_keras(layer, value, index, head_first, attention):
    kind = type(layer).__name__
    if value.ndim == 4 and kind == "DepthwiseConv2D":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return value.transpose(2, 3, 0, 1)
    if value.ndim == 4 and kind == "Conv2D":  # (O, I, kh, kw) -> (kh, kw, I, O)
        return value.transpose(2, 3, 1, 0)
    if kind == "Dense":
        if index == 0:  # (O, I) or a 1x1 conv (O, I, 1, 1) -> (I, O)
            value = value.reshape(value.shape[0], -1)
        if layer.name in attention and head_first:
            value = _qkv_head_first_to_parts(value, attention[layer.name])
        return value.T if index == 0 else value
    return value


def _qkv_head_first_to_parts(value, attention):
    """timm head_first: channel h*3d + part*d + i -> ours: part*D + h*d + i (rows = output channels)."""
    heads, head_dim = attention.num_heads, attention.head_dim
    rest = value.shape[1:]
    value = value.reshape((heads, 3, head_dim) + rest)
    return value.transpose((1, 0, 2) + tuple(range(3, value.ndim))).reshape((3 * heads * head_dim,) + rest)


def _table_hw(value, layer):
    """(2H-1, 2W-1) of a timm table: the model's grid when the cell count fits it, else a square grid."""
    grid = layer.relative_position_bias.grid_size
    cells = np.shape(value)[0] if np.ndim(value) else 0
    if cells == (2 * grid[0] - 1) * (2 * grid[1] - 1):
        return (2 * grid[0] - 1, 2 * grid[1] - 1)
    side = int(round(np.sqrt(cells)))
    return (side, side) if side * side == cells and side % 2 else (2 * grid[0] - 1, 2 * grid[1] - 1)


def _table(value, layer, input_hw, source_hw):
    """timm ((2H-1)(2W-1), heads) -> ours (heads, 2H-1, 2W-1) at the checkpoint's grid (the assigner
    resizes it to the model's). `source_hw` None: the model's grid, or the square grid the table's
    size implies."""
    grid = layer.relative_position_bias.grid_size
    if source_hw is None:
        src = tuple((n + 1) // 2 for n in _table_hw(value, layer))
    else:
        stride = input_hw[0] // grid[0], input_hw[1] // grid[1]
        src = source_hw[0] // stride[0], source_hw[1] // stride[1]
    cells = (2 * src[0] - 1) * (2 * src[1] - 1)
    if value.ndim != 2 or value.shape != (cells, layer.num_heads):
        raise ValueError(
            f"Layer {layer.name!r}: relative position table {value.shape} does not fit a {src} grid with "
            f"{layer.num_heads} heads; pass source_image_size= the checkpoint's input size."
        )
    return value.T.reshape(layer.num_heads, 2 * src[0] - 1, 2 * src[1] - 1)
