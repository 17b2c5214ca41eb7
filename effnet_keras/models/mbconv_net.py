"""The MBConv network builder every EfficientNet-style family shares (V1, V2, Lite).

`build_mbconv_net(spec, ...)` lays out stem -> stages of MBConv / Fused-MBConv blocks ->
1x1 head conv -> head from a `NetSpec`, and records the model's parts (`models/parts.py`)
as it goes. The families differ only in their data: block tables, width/depth, rounding
rule, BN momentum, activation, normalisation, and Lite's fixed stem/head and unscaled
first/last stages. Each family module (`efficientnet.py`, `efficientnet_v2.py`,
`efficientnet_lite.py`) is a table plus one-line builders, as timm's `_efficientnet_builder.py`
stands apart from `efficientnet.py`.
"""

import dataclasses

from keras import layers

from effnet_keras.layers import mbconv
from effnet_keras.models import common
from effnet_keras.models import family as families
from effnet_keras import model_parts as parts_lib


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
    preprocessing: str  # see effnet_keras.preprocessing.NORMALIZATIONS
    ten_percent_rule: bool  # V1 rounding; V2 is defined without it
    dwconv_name: str = "dwconv"
    head_filters: int = 1280
    family: families.Family = families.EFFICIENTNET
    activation: str = "swish"
    # Lite keeps the stem (32) and head (1280) widths and the first and last stages' repeats
    # unscaled (tensorflow/tpu efficientnet_model.py, fix_head_stem).
    scale_stem_head: bool = True
    scale_first_last_repeats: bool = True


def stage_repeats(spec):
    """Each stage's block count after depth scaling (Lite: first and last stages unscaled)."""
    last = len(spec.blocks) - 1
    repeats = [b.repeats if (not spec.scale_first_last_repeats and i in (0, last))
               else common.round_repeats(b.repeats, spec.depth) for i, b in enumerate(spec.blocks)]
    for stage, count in enumerate(repeats, start=1):
        if count <= 0:
            raise ValueError(f"{spec.name}: stage {stage} has {count} repeats; every stage needs at least one.")
    return repeats


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
    activation=None,
):
    input_shape = common.validate_common_args(
        model_name=spec.name,
        include_top=include_top,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        default_size=spec.default_size,
        static_input=spec.family.static_input,
    )
    resolved = common.resolve_weights(spec, weights, input_shape=input_shape)
    dropout_rate = spec.dropout_rate if dropout_rate is None else dropout_rate
    bn_momentum = spec.bn_momentum if bn_momentum is None else bn_momentum
    common.check_rate("dropout_rate", dropout_rate)
    common.check_rate("drop_connect_rate", drop_connect_rate)
    norm = dict(activation=activation or spec.activation, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
    normalization = resolved.preprocessing if include_preprocessing else "none"
    recorder = parts_lib.PartsRecorder(normalization)

    img_input = common.make_input(input_tensor, input_shape)
    x = common.preprocessing(img_input, normalization)
    x = _conv_bn_act(x, _stem_head_filters(spec, spec.blocks[0].filters_in), 3, 2, "stem", **norm)
    recorder.stem = ("stem_conv", "stem_bn")
    recorder.block_output(x, stride=2)
    x = _block_stages(x, spec, drop_connect_rate, recorder, **norm)
    x = _conv_bn_act(x, _stem_head_filters(spec, spec.head_filters), 1, 1, "top", **norm)
    recorder.head_conv = ("top_conv", "top_bn")
    recorder.feature_map(x)
    x = common.classifier_head(x, recorder, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation, dropout_rate=dropout_rate)
    return common.finish_model(common.model_inputs(input_tensor, img_input), x, name or spec.default_name,
                               recorder, resolved)


def _filters(spec, value):
    return common.round_filters(value, spec.width, ten_percent_rule=spec.ten_percent_rule)


def _stem_head_filters(spec, value):
    return _filters(spec, value) if spec.scale_stem_head else value


def _conv_bn_act(x, filters, kernel_size, strides, prefix, *, activation, bn_momentum, bn_epsilon):
    """The stem (3x3/2) and the 1x1 head conv: `{prefix}_conv`, `{prefix}_bn`, `{prefix}_activation`."""
    x = mbconv.conv2d(x, filters, kernel_size, strides, f"{prefix}_conv")
    x = mbconv.batch_norm(x, f"{prefix}_bn", bn_momentum, bn_epsilon)
    return layers.Activation(activation, name=f"{prefix}_activation")(x)


def _block_stages(x, spec, drop_connect_rate, recorder, *, activation, bn_momentum, bn_epsilon):
    """Every stage of the block table, depth-scaled; block i of N drops with rate * i / N."""
    repeats = stage_repeats(spec)
    rates = common.block_drop_rates(sum(repeats), drop_connect_rate)
    block_index, stride = 0, 2  # after the stem
    for stage, (args, count) in enumerate(zip(spec.blocks, repeats), start=1):
        filters_out = _filters(spec, args.filters_out)
        stride *= args.strides
        for j in range(count):
            block_rate, fraction = rates[block_index]
            kwargs = dict(
                # The tensor's own width: the table's filters_in scaled, except where Lite keeps
                # the stem at 32 while the table's stage-1 input would scale (lite3/4: 40/48).
                filters_in=int(x.shape[-1]),
                filters_out=filters_out,
                kernel_size=args.kernel_size,
                strides=args.strides if j == 0 else 1,
                expand_ratio=args.expand_ratio,
                se_ratio=args.se_ratio,
                activation=activation,
                bn_momentum=bn_momentum,
                bn_epsilon=bn_epsilon,
                drop_connect_rate=block_rate,
                schedule_fraction=fraction,
                prefix=f"block{stage}{mbconv.block_letters(j)}_",
            )
            if args.fused:
                x = mbconv.fused_mbconv_block(x, **kwargs)
            else:
                x = mbconv.mbconv_block(x, dwconv_name=spec.dwconv_name, **kwargs)
            recorder.block_output(x, stride)
            block_index += 1
    return x


def public_builder(spec, public_name, family, doc):
    """`EfficientNetB0 = public_builder(SPEC, "EfficientNetB0", "EfficientNet V1", DOC)`: the
    keras.applications-style builder of one variant (signature: `build_mbconv_net`'s)."""
    text = doc.format(name=public_name, family=family, size=spec.default_size, dropout=spec.dropout_rate,
                      activation=spec.activation)
    return common.public_builder(build_mbconv_net, spec, public_name, text)
