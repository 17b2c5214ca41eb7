"""Relative-position bias, relative self-attention and the CoAtNet Transformer block.

CoAtNet's attention (Dai et al. 2021, Eqn 3) adds an input-independent bias to
the attention logits before the softmax:

    softmax(q . k / sqrt(d) + P[h, qy - ky + H - 1, qx - kx + W - 1])

with one trainable table P of shape (2H - 1, 2W - 1) per head and per layer
(no bucketing, not shared). We store the tables as (heads, 2H - 1, 2W - 1): one
small image per head, which is what a bilinear resize to a new resolution wants
(paper A.1). The (query, key) -> table-cell index is a NumPy constant computed
once per grid size, and the whole (heads, N, N) bias is one gather per call.

Only the attention core lives in custom layers; the q/k/v, output and FFN
projections are stock `Dense` layers, so `model_stats` counts them like any
other layer and weight converters see plain kernels.
"""

import functools

import keras
import numpy as np
from keras import layers
from keras import ops

from effnet_keras.layers.drop import StochasticDepth
from effnet_keras.layers.mbconv import conv_initializer


@functools.lru_cache(maxsize=None)
def relative_position_index(height, width):
    """(N*N,) int32 index into a flattened (2H-1)*(2W-1) table, N = H*W, tokens row-major.

    Cell for query (qy, qx) and key (ky, kx): (qy - ky + H - 1) * (2W - 1) + (qx - kx + W - 1),
    i.e. the paper's P[i - i' + H, j - j' + W] (1-based there), and timm's `RelPosBias` layout.
    Cached: computed once per grid size, shared by every layer at that size.
    """
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[:, None] - ys[None, :] + height - 1
    dx = xs[:, None] - xs[None, :] + width - 1
    index = (dy * (2 * width - 1) + dx).reshape(-1).astype("int32")
    index.setflags(write=False)
    return index


def resize_relative_position_table(table, grid_size):
    """Bilinearly resize a (heads, 2H-1, 2W-1) table to the tables of a new (H', W') grid.

    Same sampling as `tf.image.resize(..., "bilinear")` (half-pixel centres, no
    antialiasing), the resize of Google's CoAtNet/MaxViT code. The centre cell
    (zero offset) maps to the centre cell. NumPy only, float64 inside.
    """
    table = np.asarray(table)
    if table.ndim != 3:
        raise ValueError(f"Expected a (heads, 2H-1, 2W-1) table. Received shape {table.shape}")
    new_h, new_w = 2 * int(grid_size[0]) - 1, 2 * int(grid_size[1]) - 1
    out = table.astype("float64")
    out = _resize_axis(out, new_h, axis=1)
    out = _resize_axis(out, new_w, axis=2)
    return out.astype(table.dtype)


def _resize_axis(array, new_size, axis):
    old_size = array.shape[axis]
    if old_size == new_size:
        return array
    src = (np.arange(new_size) + 0.5) * (old_size / new_size) - 0.5
    src = np.clip(src, 0.0, old_size - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, old_size - 1)
    frac = (src - lo).reshape([-1 if a == axis else 1 for a in range(array.ndim)])
    return np.take(array, lo, axis=axis) * (1.0 - frac) + np.take(array, hi, axis=axis) * frac


@keras.saving.register_keras_serializable(package="effnet_keras")
class RelativePositionBias(keras.layers.Layer):
    """Per-head trainable (2H-1, 2W-1) tables -> the (1, heads, N, N) attention bias.

    The grid (H, W) comes from the (batch, H, W, C) input shape at build time; the
    input's values are never read. Tables start as truncated normal(0.02), like timm.
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        if int(num_heads) < 1:
            raise ValueError(f"num_heads must be >= 1. Received: num_heads={num_heads}")
        self.num_heads = int(num_heads)

    def build(self, input_shape):
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                f"{self.name}: relative position bias needs a static grid size. Received input shape {input_shape}"
            )
        self.grid_size = (int(height), int(width))
        self.table = self.add_weight(
            name="relative_position_bias_table",
            shape=(self.num_heads, 2 * height - 1, 2 * width - 1),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            trainable=True,
        )

    def call(self, inputs):
        height, width = self.grid_size
        tokens = height * width
        index = ops.convert_to_tensor(relative_position_index(height, width))
        flat = ops.reshape(self.table, (self.num_heads, -1))
        # One gather for all heads; XLA folds it into a constant at inference.
        bias = ops.take(flat, index, axis=1)
        return ops.reshape(bias, (1, self.num_heads, tokens, tokens))

    def compute_output_shape(self, input_shape):
        tokens = input_shape[1] * input_shape[2]
        return (1, self.num_heads, tokens, tokens)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads)
        return config


@keras.saving.register_keras_serializable(package="effnet_keras")
class RelativeAttention(keras.layers.Layer):
    """Multi-head self-attention with a relative position bias over a 2-D grid.

    Input: the fused q/k/v projection, (batch, H, W, 3 * heads * head_dim), laid out
    [q of all heads | k of all heads | v of all heads] with heads contiguous inside
    each part. Output: (batch, H, W, heads * head_dim), before the output projection.
    Uses `keras.ops.dot_product_attention` (fused kernel where the backend has one;
    TF and JAX's XLA path take the softmax in float32 under mixed precision).
    """

    def __init__(self, num_heads, head_dim, **kwargs):
        super().__init__(**kwargs)
        if int(head_dim) < 1:
            raise ValueError(f"head_dim must be >= 1. Received: head_dim={head_dim}")
        self.num_heads = int(num_heads)
        self.head_dim = int(head_dim)
        self.relative_position_bias = RelativePositionBias(num_heads, name="relative_position_bias")

    def build(self, input_shape):
        expected = 3 * self.num_heads * self.head_dim
        if input_shape[-1] != expected:
            raise ValueError(
                f"{self.name}: expected {expected} input channels (3 x {self.num_heads} heads x "
                f"{self.head_dim}). Received input shape {input_shape}"
            )
        self.relative_position_bias.build(input_shape)

    def call(self, inputs):
        height, width = self.relative_position_bias.grid_size
        dim = self.num_heads * self.head_dim
        tokens = ops.reshape(inputs, (-1, height * width, 3, self.num_heads, self.head_dim))
        query, key, value = tokens[:, :, 0], tokens[:, :, 1], tokens[:, :, 2]
        bias = ops.cast(self.relative_position_bias(inputs), query.dtype)
        out = ops.dot_product_attention(query, key, value, bias=bias, scale=self.head_dim**-0.5)
        return ops.reshape(out, (-1, height, width, dim))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.num_heads * self.head_dim,)

    def count_macs(self, input_shapes, output_shape):
        """q.k^T and attention.v: 2 * heads * N^2 * head_dim multiply-adds."""
        tokens = int(input_shapes[0][0]) * int(input_shapes[0][1])
        return 2 * self.num_heads * tokens * tokens * self.head_dim

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads, head_dim=self.head_dim)
        return config


def relative_attention_layers(model):
    """Every `RelativeAttention` layer of a (possibly nested) model, in graph order."""
    found = []
    for layer in model.layers:
        if isinstance(layer, RelativeAttention):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(relative_attention_layers(layer))
    return found


def spatial_pool(x, pool, name):
    """The 2x2 stride-2 pooling of a down-sampling block's branches (paper Eqn 4/5)."""
    if pool == "max":
        return layers.MaxPooling2D(2, strides=2, padding="valid", name=name)(x)
    return layers.AveragePooling2D(2, strides=2, padding="valid", name=name)(x)


def shortcut_projection(x, filters_out, strides, pool, prefix):
    """Proj(Pool(x)) on the identity branch when a block changes size or width."""
    if strides == 2:
        x = spatial_pool(x, pool, prefix + "shortcut_pool")
    if x.shape[-1] != filters_out:
        x = layers.Conv2D(
            filters_out, 1, use_bias=True, kernel_initializer=conv_initializer(), name=prefix + "shortcut_proj"
        )(x)
    return x


def transformer_block(
    inputs,
    *,
    filters_out,
    strides,
    head_dim,
    pool,
    ln_epsilon,
    activation,
    drop_connect_rate,
    schedule_fraction,
    prefix,
    mlp_ratio=4,
):
    """Pre-norm Transformer block with relative attention (paper Eqn 3/4).

    x <- Proj(Pool(x)) + Attention(Pool(LN(x)));  x <- x + FFN(LN(x)).
    Heads come from the output width (filters_out / head_dim). With strides 1 and a
    width change (first Transformer block of CoAtNet-6/7's mixed stage) the shortcut
    is a 1x1 projection without pooling.
    """
    if strides not in (1, 2):
        raise ValueError(f"{prefix}: strides must be 1 or 2. Received: {strides}")
    if filters_out % head_dim:
        raise ValueError(
            f"{prefix}: width {filters_out} is not a multiple of head_dim={head_dim}; heads must divide the width."
        )
    dense = functools.partial(layers.Dense, kernel_initializer="glorot_uniform")
    shortcut = shortcut_projection(inputs, filters_out, strides, pool, prefix)
    x = layers.LayerNormalization(epsilon=ln_epsilon, name=prefix + "attn_norm")(inputs)
    if strides == 2:
        x = spatial_pool(x, pool, prefix + "attn_pool")
    x = dense(3 * filters_out, name=prefix + "attn_qkv")(x)
    x = RelativeAttention(filters_out // head_dim, head_dim, name=prefix + "attn")(x)
    x = dense(filters_out, name=prefix + "attn_proj")(x)
    x = StochasticDepth(drop_connect_rate, schedule_fraction=schedule_fraction, name=prefix + "attn_drop")(x)
    x = layers.Add(name=prefix + "attn_add")([shortcut, x])

    y = layers.LayerNormalization(epsilon=ln_epsilon, name=prefix + "ffn_norm")(x)
    y = dense(mlp_ratio * filters_out, name=prefix + "ffn_expand")(y)
    y = layers.Activation(activation, name=prefix + "ffn_activation")(y)
    y = dense(filters_out, name=prefix + "ffn_project")(y)
    y = StochasticDepth(drop_connect_rate, schedule_fraction=schedule_fraction, name=prefix + "ffn_drop")(y)
    return layers.Add(name=prefix + "add")([x, y])


def resize_relative_position_tables(arrays_by_layer, model):
    """Weights saved at one input size -> the bias-table shapes of `model` (another size).

    `arrays_by_layer`: {layer_name: [arrays in `layer.get_weights()` order]} as weight
    readers produce them (a bare array is accepted too). Every entry that belongs to
    one of `model`'s `RelativeAttention` layers and whose table shape differs is
    resized bilinearly (paper A.1); everything else is passed through. Returns a new
    dict; the input is not modified. Raises ValueError on a head-count mismatch.
    """
    out = dict(arrays_by_layer)
    for layer in relative_attention_layers(model):
        if layer.name not in out:
            continue
        value = out[layer.name]
        arrays = [value] if isinstance(value, np.ndarray) else list(value)
        if len(arrays) != 1 or np.ndim(arrays[0]) != 3:
            raise ValueError(
                f"{layer.name}: expected one (heads, 2H-1, 2W-1) relative position table. "
                f"Received shapes {[np.shape(a) for a in arrays]}"
            )
        table = np.asarray(arrays[0])
        target = tuple(layer.relative_position_bias.table.shape)
        if table.shape[0] != target[0]:
            raise ValueError(
                f"{layer.name}: the saved table has {table.shape[0]} heads, the model {target[0]}. "
                "Only the spatial size can be resized."
            )
        if table.shape != target:
            table = resize_relative_position_table(table, layer.relative_position_bias.grid_size)
        out[layer.name] = [table] if not isinstance(value, np.ndarray) else table
    return out
