"""EfficientNet (V1): the B0 block table, compound scaling, and the shared MBConv-net builder.

`build_mbconv_net` lays out any EfficientNet-style network (stem -> stages of
MBConv / Fused-MBConv blocks -> 1x1 head conv -> head) from a `NetSpec`; V1 and
V2 differ only in their data (block tables, rounding rule, BN momentum,
preprocessing), so `efficientnet_v2.py` reuses it.
"""

import dataclasses

import keras
from keras import layers

from effnet_keras.layers import mbconv
from effnet_keras.models import common
from effnet_keras.models import family as families


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage of the block table (before width/depth scaling)."""

    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    filters_in: int
    filters_out: int
    se_ratio: float
    fused: bool = False


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """Everything that distinguishes one EfficientNet-style variant from another.

    Every spec (this one, `CoAtNetSpec`) answers the same questions for the tools:
    `name`, `default_name`, `family` (traits: static input, size multiple, recipe,
    converter), `default_size` (eval), `train_size`, `dropout_rate`, `preprocessing`.
    """

    name: str  # registry name, e.g. "efficientnet-b0"
    default_name: str  # keras.applications model name, e.g. "efficientnetb0"
    blocks: tuple
    width: float
    depth: float
    default_size: int  # eval resolution
    train_size: int
    dropout_rate: float
    bn_momentum: float
    preprocessing: str  # see effnet_keras.preprocessing.PREPROCESSING_MODES
    ten_percent_rule: bool  # V1 rounding; V2 is defined without it
    dwconv_name: str = "dwconv"
    head_filters: int = 1280
    family: families.Family = families.EFFICIENTNET


# EfficientNet-B0 (Tan & Le 2019, Table 1); every V1 size scales this table.
V1_BLOCKS = (
    BlockArgs(1, 3, 1, 1, 32, 16, 0.25),
    BlockArgs(2, 3, 2, 6, 16, 24, 0.25),
    BlockArgs(2, 5, 2, 6, 24, 40, 0.25),
    BlockArgs(3, 3, 2, 6, 40, 80, 0.25),
    BlockArgs(3, 5, 1, 6, 80, 112, 0.25),
    BlockArgs(4, 5, 2, 6, 112, 192, 0.25),
    BlockArgs(1, 3, 1, 6, 192, 320, 0.25),
)

# name: (width, depth, resolution, dropout). automl trains V1 at 0.8x resolution;
# the original tensorflow/tpu recipe at full resolution (train_size below).
V1_VARIANTS = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
    "b4": (1.4, 1.8, 380, 0.4),
    "b5": (1.6, 2.2, 456, 0.4),
    "b6": (1.8, 2.6, 528, 0.5),
    "b7": (2.0, 3.1, 600, 0.5),
    "b8": (2.2, 3.6, 672, 0.5),
    "l2": (4.3, 5.3, 800, 0.5),
}


def v1_spec(variant, width=None, depth=None, resolution=None, dropout_rate=None, name=None):
    if variant is not None:
        width, depth, resolution, dropout_rate = V1_VARIANTS[variant]
        name = f"efficientnet-{variant}"
    return NetSpec(
        name=name,
        default_name=name.replace("-", "") if variant is not None else name,
        blocks=V1_BLOCKS,
        width=width,
        depth=depth,
        default_size=resolution,
        train_size=resolution,
        dropout_rate=dropout_rate,
        bn_momentum=0.99,
        preprocessing="imagenet_mean_std",
        ten_percent_rule=True,
        dwconv_name="dwconv",
    )


V1_SPECS = {f"efficientnet-{v}": v1_spec(v) for v in V1_VARIANTS}


def compound_scaling(phi, alpha=1.2, beta=1.1, gamma=1.15):
    """Depth, width and resolution multipliers for compound coefficient `phi`.

    d = alpha**phi, w = beta**phi, r = gamma**phi. With the paper's grid-searched
    alpha=1.2, beta=1.1, gamma=1.15, alpha * beta**2 * gamma**2 = 1.92 ~ 2, so
    FLOPs grow by about 2**phi.
    Returns a dict with `depth`, `width`, `resolution` (multipliers) and
    `flops_ratio` (alpha * beta**2 * gamma**2) ** phi.
    """
    for label, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if value < 1.0:
            raise ValueError(f"`{label}` must be >= 1 (a multiplier per unit of phi). Received: {label}={value}")
    if phi < 0:
        raise ValueError(f"`phi` must be >= 0. Received: phi={phi}")
    return {
        "depth": alpha**phi,
        "width": beta**phi,
        "resolution": gamma**phi,
        "flops_ratio": (alpha * beta**2 * gamma**2) ** phi,
    }


def compound_spec(phi, alpha=1.2, beta=1.1, gamma=1.15):
    """A B0-based NetSpec at any (fractional) phi; resolution rounded to a multiple of 8."""
    scale = compound_scaling(phi, alpha, beta, gamma)
    resolution = int(round(224 * scale["resolution"] / 8.0)) * 8
    # Dropout grows with size as in B0..B7 (0.2 -> 0.5), capped at 0.5.
    dropout = min(0.5, 0.2 + 0.3 * phi / 7.0)
    name = f"efficientnet-phi{phi:g}"
    return v1_spec(None, scale["width"], scale["depth"], resolution, dropout, name=name)


def build_mbconv_net(
    spec,
    *,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    name=None,
    dropout_rate=None,
    drop_connect_rate=0.2,
    bn_momentum=None,
    bn_epsilon=1e-3,
    activation="swish",
):
    input_shape = common.validate_common_args(
        model_name=spec.name,
        include_top=include_top,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        default_size=spec.default_size,
    )
    resolved = common.resolve_weights(spec, weights, include_top=include_top, classes=classes,
                                      input_shape=input_shape)
    dropout_rate = spec.dropout_rate if dropout_rate is None else dropout_rate
    bn_momentum = spec.bn_momentum if bn_momentum is None else bn_momentum
    common.check_rate("dropout_rate", dropout_rate)
    common.check_rate("drop_connect_rate", drop_connect_rate)
    norm = dict(activation=activation, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)

    img_input = common.make_input(input_tensor, input_shape)
    x = common.preprocessing(img_input, resolved.preprocessing if include_preprocessing else "none")
    x = _conv_bn_act(x, spec, spec.blocks[0].filters_in, 3, 2, "stem", **norm)
    x = _block_stages(x, spec, drop_connect_rate, **norm)
    x = _conv_bn_act(x, spec, spec.head_filters, 1, 1, "top", **norm)
    x = common.classifier_head(
        x,
        include_top=include_top,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        dropout_rate=dropout_rate,
    )
    model = keras.Model(common.model_inputs(input_tensor, img_input), x, name=name or spec.default_name)
    resolved.load_into(model)
    return model


def _filters(spec, value):
    return common.round_filters(value, spec.width, ten_percent_rule=spec.ten_percent_rule)


def _conv_bn_act(x, spec, filters, kernel_size, strides, prefix, *, activation, bn_momentum, bn_epsilon):
    """The stem (3x3/2) and the 1x1 head conv: `{prefix}_conv`, `{prefix}_bn`, `{prefix}_activation`."""
    x = mbconv.conv2d(x, _filters(spec, filters), kernel_size, strides, f"{prefix}_conv")
    x = mbconv.batch_norm(x, f"{prefix}_bn", bn_momentum, bn_epsilon)
    return layers.Activation(activation, name=f"{prefix}_activation")(x)


def _block_stages(x, spec, drop_connect_rate, *, activation, bn_momentum, bn_epsilon):
    """Every stage of the block table, depth-scaled; block i of N drops with rate * i / N."""
    repeats = [common.round_repeats(b.repeats, spec.depth) for b in spec.blocks]
    for stage, count in enumerate(repeats, start=1):
        if count <= 0:
            raise ValueError(f"{spec.name}: stage {stage} has {count} repeats; every stage needs at least one.")
    num_blocks = float(sum(repeats))
    block_index = 0
    for stage, (args, count) in enumerate(zip(spec.blocks, repeats), start=1):
        filters_in, filters_out = _filters(spec, args.filters_in), _filters(spec, args.filters_out)
        for j in range(count):
            fraction = block_index / num_blocks
            kwargs = dict(
                filters_in=filters_in if j == 0 else filters_out,
                filters_out=filters_out,
                kernel_size=args.kernel_size,
                strides=args.strides if j == 0 else 1,
                expand_ratio=args.expand_ratio,
                se_ratio=args.se_ratio,
                activation=activation,
                bn_momentum=bn_momentum,
                bn_epsilon=bn_epsilon,
                drop_rate=drop_connect_rate * fraction,
                schedule_fraction=fraction,
                prefix=f"block{stage}{mbconv.block_letters(j)}_",
            )
            if args.fused:
                x = mbconv.fused_mbconv_block(x, **kwargs)
            else:
                x = mbconv.mbconv_block(x, dwconv_name=spec.dwconv_name, **kwargs)
            block_index += 1
    return x


def EfficientNet(phi, alpha=1.2, beta=1.1, gamma=1.15, **kwargs):
    """A B0-based EfficientNet at compound coefficient `phi` (fractional allowed).

    Width, depth and resolution come from `compound_scaling(phi, alpha, beta,
    gamma)`; the default input size is 224 * gamma**phi rounded to 8.
    Other keyword arguments are those of `EfficientNetB0`.
    """
    return build_mbconv_net(compound_spec(phi, alpha, beta, gamma), **kwargs)


_DOC = """Builds {name} ({family}) as a Keras Functional model, keras.applications style.

    Input: float RGB in [0, 255]; normalisation happens inside the model unless
    `include_preprocessing=False`. Default input size {size}.
    Args: include_top, weights (None, a weight id or a file path), input_tensor,
    input_shape, pooling (None/"avg"/"max"), classes, classifier_activation,
    include_preprocessing, name, dropout_rate (default {dropout}),
    drop_connect_rate (0.2), bn_momentum, bn_epsilon (1e-3), activation ("swish").
    """


def _public_builder(spec, public_name, family):
    doc = _DOC.format(name=public_name, family=family, size=spec.default_size, dropout=spec.dropout_rate)
    return common.public_builder(build_mbconv_net, spec, public_name, doc)


EfficientNetB0 = _public_builder(V1_SPECS["efficientnet-b0"], "EfficientNetB0", "EfficientNet V1")
EfficientNetB1 = _public_builder(V1_SPECS["efficientnet-b1"], "EfficientNetB1", "EfficientNet V1")
EfficientNetB2 = _public_builder(V1_SPECS["efficientnet-b2"], "EfficientNetB2", "EfficientNet V1")
EfficientNetB3 = _public_builder(V1_SPECS["efficientnet-b3"], "EfficientNetB3", "EfficientNet V1")
EfficientNetB4 = _public_builder(V1_SPECS["efficientnet-b4"], "EfficientNetB4", "EfficientNet V1")
EfficientNetB5 = _public_builder(V1_SPECS["efficientnet-b5"], "EfficientNetB5", "EfficientNet V1")
EfficientNetB6 = _public_builder(V1_SPECS["efficientnet-b6"], "EfficientNetB6", "EfficientNet V1")
EfficientNetB7 = _public_builder(V1_SPECS["efficientnet-b7"], "EfficientNetB7", "EfficientNet V1")
EfficientNetB8 = _public_builder(V1_SPECS["efficientnet-b8"], "EfficientNetB8", "EfficientNet V1")
EfficientNetL2 = _public_builder(V1_SPECS["efficientnet-l2"], "EfficientNetL2", "EfficientNet V1")

PUBLIC_BUILDERS = (EfficientNetB0, EfficientNetB1, EfficientNetB2, EfficientNetB3, EfficientNetB4, EfficientNetB5,
                   EfficientNetB6, EfficientNetB7, EfficientNetB8, EfficientNetL2)
