"""CoAtNet's stem and pre-norm MBConv block, as named functional blocks.

CoAtNet's MBConv (Dai et al. 2021, Eqn 5 and A.1) differs from EfficientNet's:
pre-activation BN on the input, expansion 4x of the *output* width, SE reduced to
0.25 x output width (SiLU inside, as in Google's and timm's code), a projection
conv with bias and no BN, and down-sampling by Proj(Pool(x)) on the shortcut with
the stride on the first 1x1 conv ("conv1x1", the paper's default) or on the
depthwise conv ("dwconv", paper Table 9 and timm's `coatnet_*_224` default).

`padding`: "same" is TF SAME (what Google's code uses, and timm's
`conv_padding='same'`); "symmetric" pads 1 on every side before a strided 3x3
conv, as PyTorch/timm do by default. The two differ only for stride-2 3x3 convs
(even inputs: SAME pads 0 before / 1 after), so it matters for weight conversion.
"""

from keras import layers

from effnet_keras.layers.attention import shortcut_projection
from effnet_keras.layers.drop import StochasticDepth
from effnet_keras.layers.mbconv import batch_norm
from effnet_keras.layers.mbconv import conv_initializer
from effnet_keras.layers.mbconv import squeeze_excite

DOWNSAMPLE_MODES = ("conv1x1", "dwconv")
POOL_TYPES = ("max", "avg")
PADDING_MODES = ("same", "symmetric")


def _strided_kxk(x, conv_layer, strides, padding, name):
    """Apply a 3x3 conv layer built with padding="valid" or "same" per `padding`."""
    if strides > 1 and padding == "symmetric":
        x = layers.ZeroPadding2D(1, name=name + "_pad")(x)
    return conv_layer(x)


def conv_stem(inputs, *, filters, activation, bn_momentum, bn_epsilon, padding):
    """S0: conv 3x3 stride 2 -> BN -> activation -> conv 3x3 (no bias, no norm after)."""
    symmetric = padding == "symmetric"
    conv1 = layers.Conv2D(
        filters,
        3,
        strides=2,
        padding="valid" if symmetric else "same",
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name="stem_conv1",
    )
    x = _strided_kxk(inputs, conv1, 2, padding, "stem_conv1")
    x = batch_norm(x, "stem_bn", bn_momentum, bn_epsilon)
    x = layers.Activation(activation, name="stem_activation")(x)
    return layers.Conv2D(
        filters, 3, padding="same", use_bias=False, kernel_initializer=conv_initializer(), name="stem_conv2"
    )(x)


def coatnet_mbconv_block(
    inputs,
    *,
    filters_out,
    strides,
    downsample,
    pool,
    padding,
    activation,
    bn_momentum,
    bn_epsilon,
    drop_connect_rate,
    schedule_fraction,
    prefix,
    expand_ratio=4,
    se_ratio=0.25,
):
    """x <- Proj(Pool(x)) + Project(SE(DW(Expand(BN(x))))), stride per `downsample`."""
    if downsample not in DOWNSAMPLE_MODES:
        raise ValueError(f"`downsample` must be one of {DOWNSAMPLE_MODES}. Received: downsample={downsample!r}")
    hidden = filters_out * expand_ratio
    stride_expand = strides if downsample == "conv1x1" else 1
    stride_dw = strides if downsample == "dwconv" else 1

    shortcut = shortcut_projection(inputs, filters_out, strides, pool, prefix)
    x = batch_norm(inputs, prefix + "pre_bn", bn_momentum, bn_epsilon)
    x = layers.Conv2D(
        hidden,
        1,
        strides=stride_expand,
        use_bias=False,
        kernel_initializer=conv_initializer(),
        name=prefix + "expand_conv",
    )(x)
    x = batch_norm(x, prefix + "expand_bn", bn_momentum, bn_epsilon)
    x = layers.Activation(activation, name=prefix + "expand_activation")(x)
    dwconv = layers.DepthwiseConv2D(
        3,
        strides=stride_dw,
        padding="valid" if (stride_dw > 1 and padding == "symmetric") else "same",
        use_bias=False,
        depthwise_initializer=conv_initializer(),
        name=prefix + "dwconv",
    )
    x = _strided_kxk(x, dwconv, stride_dw, padding, prefix + "dwconv")
    x = batch_norm(x, prefix + "bn", bn_momentum, bn_epsilon)
    x = layers.Activation(activation, name=prefix + "activation")(x)
    x = squeeze_excite(x, max(1, int(filters_out * se_ratio)), "swish", prefix)
    x = layers.Conv2D(
        filters_out, 1, use_bias=True, kernel_initializer=conv_initializer(), name=prefix + "project_conv"
    )(x)
    x = StochasticDepth(drop_connect_rate, schedule_fraction=schedule_fraction, name=prefix + "drop")(x)
    return layers.Add(name=prefix + "add")([shortcut, x])
