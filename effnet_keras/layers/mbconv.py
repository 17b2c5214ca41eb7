"""MBConv, Fused-MBConv and squeeze-excite as named functional blocks.

The blocks are built from stock Keras layers (plus `StochasticDepth`) and named
exactly like keras.applications (`block2a_expand_conv`, `block2a_dwconv`,
`block2a_se_reduce`, `block2a_project_bn`, ...). That keeps `model.get_layer`
code, feature-extraction recipes and keras.applications weight files working,
and every layer serialises with no custom objects but `StochasticDepth`.

All convolutions use padding="same", i.e. TF "SAME" semantics at any input
size, static or dynamic (keras.applications V1 pads for an even size and gets
odd dynamic sizes wrong).
"""

import string

from keras import layers
from keras import initializers

from effnet_keras.layers.drop import StochasticDepth

# Normal(0, sqrt(2 / fan_out)) as in the EfficientNet reference code.
CONV_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"},
}
# Uniform(+-1/sqrt(num_outputs)).
DENSE_KERNEL_INITIALIZER = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}


def conv_initializer():
    return initializers.get(CONV_KERNEL_INITIALIZER)


def dense_initializer():
    return initializers.get(DENSE_KERNEL_INITIALIZER)


def block_letters(index):
    """Repeat index -> letters: 0 'a' ... 25 'z', 26 'aa', 27 'ab', ...

    keras.applications uses chr(97 + index), which leaves ASCII letters after 26
    repeats (V2-XL has 32 in stage 6). Up to 26 repeats the names are identical.
    """
    if index < 0:
        raise ValueError(f"block index must be >= 0. Received: {index}")
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = string.ascii_lowercase[rem] + letters
    return letters


def batch_norm(x, name, momentum, epsilon):
    return layers.BatchNormalization(axis=-1, momentum=momentum, epsilon=epsilon, name=name)(x)


def conv2d(x, filters, kernel_size, strides, name, use_bias=False):
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=conv_initializer(),
        name=name,
    )(x)


def squeeze_excite(x, filters_se, activation, prefix):
    """GAP -> 1x1 conv (bias, activation) -> 1x1 conv (bias, sigmoid) -> gate."""
    filters = x.shape[-1]
    se = layers.GlobalAveragePooling2D(keepdims=True, name=prefix + "se_squeeze")(x)
    se = layers.Conv2D(
        filters_se,
        1,
        padding="same",
        activation=activation,
        kernel_initializer=conv_initializer(),
        name=prefix + "se_reduce",
    )(se)
    se = layers.Conv2D(
        filters,
        1,
        padding="same",
        activation="sigmoid",
        kernel_initializer=conv_initializer(),
        name=prefix + "se_expand",
    )(se)
    return layers.Multiply(name=prefix + "se_excite")([x, se])


def _residual(x, inputs, drop_connect_rate, schedule_fraction, prefix):
    x = StochasticDepth(drop_connect_rate, schedule_fraction=schedule_fraction, name=prefix + "drop")(x)
    # Shortcut first: Keras' functional graph mapping (`keras.src.ops.function._build_map`)
    # recurses depth-first into an Add's inputs in order, so with the shortcut first it
    # walks the chain of block inputs and its Python stack stays about #blocks + one
    # block's length deep instead of about #layers (V2-XL, 1251 layers, needed a
    # recursion limit above 1000). a + b == b + a bitwise; layer order, names and
    # weights are unchanged (tests/models/test_deep_models.py).
    return layers.Add(name=prefix + "add")([inputs, x])


def mbconv_block(
    inputs,
    *,
    filters_in,
    filters_out,
    kernel_size,
    strides,
    expand_ratio,
    se_ratio,
    activation,
    bn_momentum,
    bn_epsilon,
    drop_connect_rate,
    schedule_fraction,
    prefix,
    dwconv_name="dwconv",
):
    """Inverted residual: [1x1 expand] -> kxk depthwise -> SE -> 1x1 project."""
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = conv2d(x, filters, 1, 1, prefix + "expand_conv")
        x = batch_norm(x, prefix + "expand_bn", bn_momentum, bn_epsilon)
        x = layers.Activation(activation, name=prefix + "expand_activation")(x)
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        depthwise_initializer=conv_initializer(),
        name=prefix + dwconv_name,
    )(x)
    x = batch_norm(x, prefix + "bn", bn_momentum, bn_epsilon)
    x = layers.Activation(activation, name=prefix + "activation")(x)
    if 0 < se_ratio <= 1:
        x = squeeze_excite(x, max(1, int(filters_in * se_ratio)), activation, prefix)
    x = conv2d(x, filters_out, 1, 1, prefix + "project_conv")
    x = batch_norm(x, prefix + "project_bn", bn_momentum, bn_epsilon)
    if strides == 1 and filters_in == filters_out:
        x = _residual(x, inputs, drop_connect_rate, schedule_fraction, prefix)
    return x


def fused_mbconv_block(
    inputs,
    *,
    filters_in,
    filters_out,
    kernel_size,
    strides,
    expand_ratio,
    se_ratio,
    activation,
    bn_momentum,
    bn_epsilon,
    drop_connect_rate,
    schedule_fraction,
    prefix,
):
    """Fused-MBConv: kxk conv (expand, strided) -> [SE] -> 1x1 project.

    With expand_ratio 1 the block is a single kxk conv + BN + activation.
    """
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = conv2d(x, filters, kernel_size, strides, prefix + "expand_conv")
        x = batch_norm(x, prefix + "expand_bn", bn_momentum, bn_epsilon)
        x = layers.Activation(activation, name=prefix + "expand_activation")(x)
    if 0 < se_ratio <= 1:
        x = squeeze_excite(x, max(1, int(filters_in * se_ratio)), activation, prefix)
    if expand_ratio != 1:
        x = conv2d(x, filters_out, 1, 1, prefix + "project_conv")
    else:
        x = conv2d(x, filters_out, kernel_size, strides, prefix + "project_conv")
    x = batch_norm(x, prefix + "project_bn", bn_momentum, bn_epsilon)
    if expand_ratio == 1:
        x = layers.Activation(activation, name=prefix + "project_activation")(x)
    if strides == 1 and filters_in == filters_out:
        x = _residual(x, inputs, drop_connect_rate, schedule_fraction, prefix)
    return x
