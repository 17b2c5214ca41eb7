"""CoAtNet-0..7 (Dai et al. 2021): a variant table, one builder, one-line public builders.

Layout C-C-T-T: S0 two-conv stem, S1-S2 pre-norm MBConv + SE, S3-S4 pre-norm
Transformer blocks with per-head relative position bias; CoAtNet-6/7 have a mixed
S3 (MBConv blocks, then Transformer blocks at twice the width, both at 1/16).
Head: GAP -> LN -> Dense(D4) + tanh ("pre-logits", on by default: with it the
parameter counts match the paper, as in Google's and timm's paper configs) ->
dropout -> classifier. See docs/coatnet.md for every choice and its source.

Layer names: `stem_*`, then `stage{S}_block{j}_*` with S the paper's stage (1..4),
so `feature_extractor` finds P1 (stem) .. P5 (stage 4). `coatnet_structure_stats`
counts parameters and MACs from the same table without building anything, for
the multi-billion-parameter variants.
"""

import dataclasses

from effnet_keras.layers.attention import transformer_block
from effnet_keras.layers.coatnet_blocks import DOWNSAMPLE_MODES
from effnet_keras.layers.coatnet_blocks import PADDING_MODES
from effnet_keras.layers.coatnet_blocks import POOL_TYPES
from effnet_keras.layers.coatnet_blocks import coatnet_mbconv_block
from effnet_keras.layers.coatnet_blocks import conv_stem
from effnet_keras.models import common
from effnet_keras.models import family as families
from effnet_keras import model_parts as parts_lib

# Every CoAtNet down-samples 32x; the Transformer stages need whole grids at 1/16 and 1/32.
SIZE_MULTIPLE = families.COATNET.size_multiple


@dataclasses.dataclass(frozen=True)
class StageArgs:
    """A run of identical blocks. `stage` is the paper's S1..S4 (it names the layers)."""

    stage: int
    block: str  # "C" = MBConv, "T" = Transformer
    repeats: int
    filters: int
    strides: int  # of the run's first block


@dataclasses.dataclass(frozen=True)
class CoAtNetSpec:
    name: str  # registry name, e.g. "coatnet-0"
    default_name: str  # Keras model name, e.g. "coatnet0"
    stem_filters: int
    stages: tuple
    head_dim: int
    drop_connect_rate: float  # paper Table 10 (ImageNet-1k / 21k pre-training rates)
    default_size: int = 224
    dropout_rate: float = 0.0
    # timm's CoAtNet configs normalise with mean = std = 0.5: [0, 255] -> [-1, 1] (x / 127.5 - 1).
    preprocessing: str = "centered_127_5"
    family: families.Family = families.COATNET

    @property
    def train_size(self):
        return self.default_size  # the paper pre-trains at 224 and fine-tunes at 384/512


def paper_stages(depths, widths):
    """The C-C-T-T layout of paper Table 3: every stage starts with a stride-2 block."""
    return tuple(
        StageArgs(stage, block, repeats, filters, 2)
        for stage, (block, repeats, filters) in enumerate(zip("CCTT", depths, widths), start=1)
    )


# Paper Tables 3 and 12. name: (stem width, depths S1..S4, widths S1..S4, head size, drop_connect_rate).
PAPER_VARIANTS = {
    "0": (64, (2, 3, 5, 2), (96, 192, 384, 768), 32, 0.2),
    "1": (64, (2, 6, 14, 2), (96, 192, 384, 768), 32, 0.3),
    "2": (128, (2, 6, 14, 2), (128, 256, 512, 1024), 32, 0.5),
    "3": (192, (2, 6, 14, 2), (192, 384, 768, 1536), 32, 0.7),
    "4": (192, (2, 12, 28, 2), (192, 384, 768, 1536), 32, 0.7),
    "5": (192, (2, 12, 28, 2), (256, 512, 1280, 2048), 64, 0.2),
}


# CoAtNet-6/7 (Table 12): 2/3 of S2's MBConv blocks move to S3, which runs MBConv
# blocks and then Transformer blocks at double width, both at 1/16 resolution.
def _mixed(widths, transformer_width, s4_width):
    """Table 12 layout: S1 2 x C, S2 4 x C, S3 8 x C then 42 x T (wider, no pooling), S4 2 x T."""
    return (
        StageArgs(1, "C", 2, widths[0], 2),
        StageArgs(2, "C", 4, widths[1], 2),
        StageArgs(3, "C", 8, widths[2], 2),
        StageArgs(3, "T", 42, transformer_width, 1),
        StageArgs(4, "T", 2, s4_width, 2),
    )


# name: (stem width, stages, head size, drop_connect_rate).
MIXED_VARIANTS = {
    "6": (192, _mixed((192, 384, 768), 1536, 2048), 128, 0.2),
    "7": (192, _mixed((256, 512, 1024), 2048, 3072), 128, 0.2),
}


def coatnet_spec(stem_filters, depths, widths, head_dim=32, drop_connect_rate=0.2, name="coatnet-custom"):
    """A C-C-T-T spec from stage depths and widths (e.g. a tiny model for tests)."""
    if len(depths) != 4 or len(widths) != 4:
        raise ValueError(f"CoAtNet has 4 stages: pass 4 depths and 4 widths. Received: {depths}, {widths}")
    stages = paper_stages(depths, widths)
    return CoAtNetSpec(name, name.replace("-", ""), stem_filters, stages, head_dim, drop_connect_rate)


COATNET_SPECS = {f"coatnet-{v}": coatnet_spec(*row, name=f"coatnet-{v}") for v, row in PAPER_VARIANTS.items()}
COATNET_SPECS.update(
    {f"coatnet-{v}": CoAtNetSpec(f"coatnet-{v}", f"coatnet{v}", *row) for v, row in MIXED_VARIANTS.items()}
)


def _check_choice(label, value, allowed):
    if value not in allowed:
        raise ValueError(f"`{label}` must be one of {allowed}. Received: {label}={value!r}")


def _validate_spec(spec, head_dim):
    for args in spec.stages:
        if args.repeats < 1 or args.strides not in (1, 2) or args.block not in ("C", "T"):
            raise ValueError(f"{spec.name}: invalid stage {args}")
        if args.block == "T" and args.filters % head_dim:
            raise ValueError(
                f"{spec.name}: Transformer width {args.filters} of stage {args.stage} is not a multiple of "
                f"head_dim={head_dim}."
            )


def _resolve_input_shape(spec, input_tensor, input_shape, include_top, *, pooling, classes):
    explicit = input_shape
    if explicit is None and input_tensor is not None and len(getattr(input_tensor, "shape", ()) or ()) == 4:
        explicit = tuple(input_tensor.shape[1:])
    input_shape = common.validate_common_args(
        model_name=spec.name,
        include_top=include_top,
        input_shape=explicit,
        default_size=spec.default_size,
        pooling=pooling,
        classes=classes,
    )
    if explicit is None:  # headless default: a static size too (the bias tables need one)
        input_shape = (spec.default_size, spec.default_size, input_shape[2])
    height, width = input_shape[:2]
    multiple = spec.family.size_multiple
    if height is None or width is None or height % multiple or width % multiple:
        raise ValueError(
            f"{spec.name}: input height and width must be static multiples of {multiple} (the relative "
            f"position tables are sized per grid; rebuild the model for another size). Received: "
            f"input_shape={input_shape!r}"
        )
    return input_shape


def build_coatnet(
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
    drop_connect_rate=None,
    bn_momentum=0.99,
    bn_epsilon=1e-5,
    ln_epsilon=1e-6,
    activation="gelu",
    downsample="conv1x1",
    pool="max",
    padding="same",
    pre_logits=True,
    head_dim=None,
):
    _check_choice("downsample", downsample, DOWNSAMPLE_MODES)
    _check_choice("pool", pool, POOL_TYPES)
    _check_choice("padding", padding, PADDING_MODES)
    head_dim = spec.head_dim if head_dim is None else int(head_dim)
    _validate_spec(spec, head_dim)
    input_shape = _resolve_input_shape(spec, input_tensor, input_shape, include_top, pooling=pooling, classes=classes)
    resolved = common.resolve_weights(spec, weights, input_shape=input_shape)
    dropout_rate = spec.dropout_rate if dropout_rate is None else dropout_rate
    drop_connect_rate = spec.drop_connect_rate if drop_connect_rate is None else drop_connect_rate
    common.check_rate("dropout_rate", dropout_rate)
    common.check_rate("drop_connect_rate", drop_connect_rate)

    normalization = resolved.preprocessing if include_preprocessing else "none"
    recorder = parts_lib.PartsRecorder(normalization)
    img_input = common.make_input(input_tensor, input_shape)
    x = common.preprocessing(img_input, normalization)
    bn = dict(bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
    x = conv_stem(x, filters=spec.stem_filters, activation=activation, padding=padding, **bn)
    recorder.stem = ("stem_conv1", "stem_bn", "stem_conv2")
    recorder.block_output(x, stride=2)

    x = _block_stages(x, spec, drop_connect_rate, recorder, head_dim=head_dim, ln_epsilon=ln_epsilon,
                      downsample=downsample, pool=pool, padding=padding, activation=activation, bn=bn)
    recorder.feature_map(x)

    # GAP -> LN -> [Dense(D4) + tanh] -> dropout -> logits
    x = common.classifier_head(x, recorder, include_top=include_top, pooling=pooling, classes=classes,
                               classifier_activation=classifier_activation, dropout_rate=dropout_rate,
                               norm_epsilon=ln_epsilon, pre_logits=pre_logits)
    return common.finish_model(common.model_inputs(input_tensor, img_input), x, name or spec.default_name,
                               recorder, resolved)


def _block_stages(x, spec, drop_connect_rate, recorder, *, head_dim, ln_epsilon, downsample, pool, padding,
                  activation, bn):
    """S1..S4 from the table: MBConv ("C") and Transformer ("T") runs; block i of N drops with rate * i / N."""
    rates = common.block_drop_rates(sum(args.repeats for args in spec.stages), drop_connect_rate)
    block_index, stride = 0, 2  # after the stem
    stage_block = {}  # blocks are numbered per paper stage (a mixed S3 counts on)
    for args in spec.stages:
        stride *= args.strides
        for j in range(args.repeats):
            index_in_stage = stage_block.get(args.stage, 0)
            stage_block[args.stage] = index_in_stage + 1
            block_rate, fraction = rates[block_index]
            common_kwargs = dict(
                filters_out=args.filters,
                strides=args.strides if j == 0 else 1,
                pool=pool,
                activation=activation,
                drop_connect_rate=block_rate,
                schedule_fraction=fraction,
                prefix=f"stage{args.stage}_block{index_in_stage}_",
            )
            if args.block == "C":
                x = coatnet_mbconv_block(x, downsample=downsample, padding=padding, **bn, **common_kwargs)
            else:
                x = transformer_block(x, head_dim=head_dim, ln_epsilon=ln_epsilon, **common_kwargs)
            recorder.block_output(x, stride)
            block_index += 1
    return x


def coatnet_structure_stats(
    spec, image_size=224, *, include_top=True, classes=1000, pre_logits=True, downsample="conv1x1", head_dim=None
):
    """Parameters and MACs of `build_coatnet(spec, ...)` counted from the table, nothing allocated.

    Same conventions as `effnet_keras.model_stats` (convolutions, dense layers and
    the attention matmuls; BN moving statistics are non-trainable parameters).
    `image_size`: int or (height, width), multiples of 32. Returns a dict with
    params, trainable_params, non_trainable_params, macs.
    """
    # One function (~75 lines) on purpose: it mirrors the layer layout of build_coatnet and its
    # blocks term by term, so each count can be read against the layer it counts; split, the
    # three accumulators would be threaded through every piece.
    spec = COATNET_SPECS[spec] if isinstance(spec, str) else spec
    _check_choice("downsample", downsample, DOWNSAMPLE_MODES)
    head_dim = spec.head_dim if head_dim is None else int(head_dim)
    _validate_spec(spec, head_dim)
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(f"image_size must be a multiple of {SIZE_MULTIPLE}. Received: image_size={image_size!r}")
    trainable = non_trainable = macs = 0

    def conv(cin, cout, k, out_pixels, bias):
        nonlocal trainable, macs
        trainable += k * k * cin * cout + (cout if bias else 0)
        macs += out_pixels * k * k * cin * cout

    def batch_norm(channels):
        nonlocal trainable, non_trainable
        trainable += 2 * channels
        non_trainable += 2 * channels

    h, w, channels = height // 2, width // 2, spec.stem_filters
    conv(3, channels, 3, h * w, False)
    batch_norm(channels)
    conv(channels, channels, 3, h * w, False)
    for args in spec.stages:
        for j in range(args.repeats):
            strides = args.strides if j == 0 else 1
            cin, cout, hin, win = channels, args.filters, h, w
            h, w = h // strides, w // strides
            pixels = h * w
            if cin != cout:  # shortcut projection (after pooling when strided)
                conv(cin, cout, 1, pixels, True)
            if args.block == "C":
                hidden = 4 * cout
                batch_norm(cin)
                conv(cin, hidden, 1, pixels if downsample == "conv1x1" else hin * win, False)
                batch_norm(hidden)
                trainable += 9 * hidden
                macs += pixels * hidden * 9
                batch_norm(hidden)
                squeezed = max(1, int(cout * 0.25))
                conv(hidden, squeezed, 1, 1, True)
                conv(squeezed, hidden, 1, 1, True)
                conv(hidden, cout, 1, pixels, True)
            else:
                trainable += 2 * cin + 2 * cout  # two LayerNorms
                conv(cin, 3 * cout, 1, pixels, True)
                trainable += (cout // head_dim) * (2 * h - 1) * (2 * w - 1)
                macs += 2 * pixels * pixels * cout
                conv(cout, cout, 1, pixels, True)
                conv(cout, 4 * cout, 1, pixels, True)
                conv(4 * cout, cout, 1, pixels, True)
            channels = cout
    if include_top:
        trainable += 2 * channels
        if pre_logits:
            conv(channels, channels, 1, 1, True)
        conv(channels, classes, 1, 1, True)
    return {
        "params": trainable + non_trainable,
        "trainable_params": trainable,
        "non_trainable_params": non_trainable,
        "macs": macs,
        "image_size": (height, width),
    }


_DOC = """Builds {name} (CoAtNet, Dai et al. 2021) as a Keras Functional model, keras.applications style.

    Input: float RGB in [0, 255], normalised inside the model to [-1, 1] (timm's
    mean = std = 0.5) unless `include_preprocessing=False`. Default input size 224;
    any static size that is a multiple of 32 works.
    Args: include_top, weights (None, a weight id or a file path), input_tensor,
    input_shape, pooling (None/"avg"/"max"), classes, classifier_activation,
    include_preprocessing, name, dropout_rate (0.0), drop_connect_rate ({drop}),
    bn_momentum (0.99), bn_epsilon (1e-5), ln_epsilon (1e-6), activation ("gelu", exact),
    downsample ("conv1x1" = paper Eqn 5, or "dwconv"), pool ("max" = paper, or "avg"),
    padding ("same" or "symmetric" = PyTorch), pre_logits (True), head_dim ({head_dim}).
    timm's `coatnet_{variant}_224` = downsample="dwconv", pool="avg", padding="symmetric".
    """


def CoAtNet(stem_filters, depths, widths, head_dim=32, **kwargs):
    """A custom C-C-T-T CoAtNet from stem width, 4 stage depths and 4 stage widths.

    Other keyword arguments are those of `CoAtNet0`.
    """
    return build_coatnet(coatnet_spec(stem_filters, depths, widths, head_dim), **kwargs)


def _public_builder(spec, public_name):
    variant = spec.name.rsplit("-", 1)[-1]
    doc = _DOC.format(name=public_name, drop=spec.drop_connect_rate, head_dim=spec.head_dim, variant=variant)
    return common.public_builder(build_coatnet, spec, public_name, doc)


CoAtNet0 = _public_builder(COATNET_SPECS["coatnet-0"], "CoAtNet0")
CoAtNet1 = _public_builder(COATNET_SPECS["coatnet-1"], "CoAtNet1")
CoAtNet2 = _public_builder(COATNET_SPECS["coatnet-2"], "CoAtNet2")
CoAtNet3 = _public_builder(COATNET_SPECS["coatnet-3"], "CoAtNet3")
CoAtNet4 = _public_builder(COATNET_SPECS["coatnet-4"], "CoAtNet4")
CoAtNet5 = _public_builder(COATNET_SPECS["coatnet-5"], "CoAtNet5")
CoAtNet6 = _public_builder(COATNET_SPECS["coatnet-6"], "CoAtNet6")
CoAtNet7 = _public_builder(COATNET_SPECS["coatnet-7"], "CoAtNet7")

PUBLIC_BUILDERS = (CoAtNet0, CoAtNet1, CoAtNet2, CoAtNet3, CoAtNet4, CoAtNet5, CoAtNet6, CoAtNet7)
