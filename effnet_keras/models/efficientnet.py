"""EfficientNet (V1, Tan & Le 2019): the B0 block table, compound scaling, one-line builders.

The network itself is laid out by the shared MBConv builder (`mbconv_net.build_mbconv_net`).
"""

from effnet_keras.models.mbconv_net import BlockArgs
from effnet_keras.models.mbconv_net import NetSpec
from effnet_keras.models.mbconv_net import build_mbconv_net
from effnet_keras.models.mbconv_net import public_builder


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


def EfficientNet(phi, alpha=1.2, beta=1.1, gamma=1.15, **kwargs):
    """A B0-based EfficientNet at compound coefficient `phi` (fractional allowed).

    Width, depth and resolution come from `compound_scaling(phi, alpha, beta,
    gamma)`; the default input size is 224 * gamma**phi rounded to 8.
    Other keyword arguments are those of `EfficientNetB0`.
    """
    return build_mbconv_net(compound_spec(phi, alpha, beta, gamma), **kwargs)


DOC = """Builds {name} ({family}) as a Keras Functional model, keras.applications style.

    Input: float RGB in [0, 255]; normalisation happens inside the model unless
    `include_preprocessing=False`. Default input size {size}.
    Args: include_top, weights (None, a weight id or a file path), input_tensor,
    input_shape, pooling (None/"avg"/"max"), classes, classifier_activation,
    include_preprocessing, name, dropout_rate (default {dropout}),
    drop_connect_rate (0.2), bn_momentum, bn_epsilon (1e-3), activation ("{activation}").
    """


def _public_builder(spec, public_name, family):
    return public_builder(spec, public_name, family, DOC)


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
