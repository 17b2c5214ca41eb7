"""EfficientNetV2 (Tan & Le 2021): block tables for B0-B3 and S/M/L/XL.

Tables follow google/automl `efficientnetv2/effnetv2_configs.py`; the builder is
the shared `mbconv_net.build_mbconv_net`. Stages 1-3 are Fused-MBConv (no SE), the rest
MBConv with SE 0.25.
"""

from effnet_keras.models import family as families
from effnet_keras.models.efficientnet import DOC
from effnet_keras.models.mbconv_net import BlockArgs
from effnet_keras.models.mbconv_net import NetSpec
from effnet_keras.models.mbconv_net import public_builder


def _public_builder(spec, public_name, family):
    return public_builder(spec, public_name, family, DOC)


def _stages(rows):
    """rows: (repeats, strides, expand, filters_in, filters_out, se_ratio, fused); kernel 3 everywhere."""
    return tuple(BlockArgs(r, 3, s, e, fi, fo, se, fused) for r, s, e, fi, fo, se, fused in rows)


BASE_BLOCKS = _stages(
    [
        (1, 1, 1, 32, 16, 0.0, True),
        (2, 2, 4, 16, 32, 0.0, True),
        (2, 2, 4, 32, 48, 0.0, True),
        (3, 2, 4, 48, 96, 0.25, False),
        (5, 1, 6, 96, 112, 0.25, False),
        (8, 2, 6, 112, 192, 0.25, False),
    ]
)
S_BLOCKS = _stages(
    [
        (2, 1, 1, 24, 24, 0.0, True),
        (4, 2, 4, 24, 48, 0.0, True),
        (4, 2, 4, 48, 64, 0.0, True),
        (6, 2, 4, 64, 128, 0.25, False),
        (9, 1, 6, 128, 160, 0.25, False),
        (15, 2, 6, 160, 256, 0.25, False),
    ]
)
M_BLOCKS = _stages(
    [
        (3, 1, 1, 24, 24, 0.0, True),
        (5, 2, 4, 24, 48, 0.0, True),
        (5, 2, 4, 48, 80, 0.0, True),
        (7, 2, 4, 80, 160, 0.25, False),
        (14, 1, 6, 160, 176, 0.25, False),
        (18, 2, 6, 176, 304, 0.25, False),
        (5, 1, 6, 304, 512, 0.25, False),
    ]
)
L_BLOCKS = _stages(
    [
        (4, 1, 1, 32, 32, 0.0, True),
        (7, 2, 4, 32, 64, 0.0, True),
        (7, 2, 4, 64, 96, 0.0, True),
        (10, 2, 4, 96, 192, 0.25, False),
        (19, 1, 6, 192, 224, 0.25, False),
        (25, 2, 6, 224, 384, 0.25, False),
        (7, 1, 6, 384, 640, 0.25, False),
    ]
)
XL_BLOCKS = _stages(
    [
        (4, 1, 1, 32, 32, 0.0, True),
        (8, 2, 4, 32, 64, 0.0, True),
        (8, 2, 4, 64, 96, 0.0, True),
        (16, 2, 4, 96, 192, 0.25, False),
        (24, 1, 6, 192, 256, 0.25, False),
        (32, 2, 6, 256, 512, 0.25, False),
        (8, 1, 6, 512, 640, 0.25, False),
    ]
)

# variant: (blocks, width, depth, train_size, eval_size, dropout, preprocessing)
# B0-B3 were trained on ImageNet mean/std input, S/M/L/XL on (x - 128) / 128 (centered_128).
V2_VARIANTS = {
    "b0": (BASE_BLOCKS, 1.0, 1.0, 192, 224, 0.2, "imagenet_mean_std"),
    "b1": (BASE_BLOCKS, 1.0, 1.1, 192, 240, 0.2, "imagenet_mean_std"),
    "b2": (BASE_BLOCKS, 1.1, 1.2, 208, 260, 0.3, "imagenet_mean_std"),
    "b3": (BASE_BLOCKS, 1.2, 1.4, 240, 300, 0.3, "imagenet_mean_std"),
    "s": (S_BLOCKS, 1.0, 1.0, 300, 384, 0.2, "centered_128"),
    "m": (M_BLOCKS, 1.0, 1.0, 384, 480, 0.3, "centered_128"),
    "l": (L_BLOCKS, 1.0, 1.0, 384, 480, 0.4, "centered_128"),
    "xl": (XL_BLOCKS, 1.0, 1.0, 384, 512, 0.4, "centered_128"),
    # Not a paper model: the B0 table at width 0.25 / depth 0.34 (~0.2 M params), for the
    # digits demo, tests and CPU smoke runs. Same blocks, names and code paths as B0.
    "nano": (BASE_BLOCKS, 0.25, 0.34, 64, 64, 0.1, "imagenet_mean_std"),
}


def v2_spec(variant):
    blocks, width, depth, train_size, eval_size, dropout, preprocessing = V2_VARIANTS[variant]
    return NetSpec(
        name=f"efficientnetv2-{variant}",
        default_name=f"efficientnetv2-{variant}",
        blocks=blocks,
        width=width,
        depth=depth,
        default_size=eval_size,
        train_size=train_size,
        dropout_rate=dropout,
        bn_momentum=0.9,
        preprocessing=preprocessing,
        ten_percent_rule=False,
        dwconv_name="dwconv2",
        family=families.EFFICIENTNET_V2,
    )


V2_SPECS = {f"efficientnetv2-{v}": v2_spec(v) for v in V2_VARIANTS}

EfficientNetV2B0 = _public_builder(V2_SPECS["efficientnetv2-b0"], "EfficientNetV2B0", "EfficientNetV2")
EfficientNetV2B1 = _public_builder(V2_SPECS["efficientnetv2-b1"], "EfficientNetV2B1", "EfficientNetV2")
EfficientNetV2B2 = _public_builder(V2_SPECS["efficientnetv2-b2"], "EfficientNetV2B2", "EfficientNetV2")
EfficientNetV2B3 = _public_builder(V2_SPECS["efficientnetv2-b3"], "EfficientNetV2B3", "EfficientNetV2")
EfficientNetV2S = _public_builder(V2_SPECS["efficientnetv2-s"], "EfficientNetV2S", "EfficientNetV2")
EfficientNetV2M = _public_builder(V2_SPECS["efficientnetv2-m"], "EfficientNetV2M", "EfficientNetV2")
EfficientNetV2L = _public_builder(V2_SPECS["efficientnetv2-l"], "EfficientNetV2L", "EfficientNetV2")
EfficientNetV2XL = _public_builder(V2_SPECS["efficientnetv2-xl"], "EfficientNetV2XL", "EfficientNetV2")
EfficientNetV2Nano = _public_builder(V2_SPECS["efficientnetv2-nano"], "EfficientNetV2Nano", "EfficientNetV2 (demo size)")

PUBLIC_BUILDERS = (EfficientNetV2B0, EfficientNetV2B1, EfficientNetV2B2, EfficientNetV2B3, EfficientNetV2S,
                   EfficientNetV2M, EfficientNetV2L, EfficientNetV2XL, EfficientNetV2Nano)
