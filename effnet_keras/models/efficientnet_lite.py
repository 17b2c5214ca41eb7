"""EfficientNet-Lite0..4 (tensorflow/tpu `models/official/efficientnet/lite/`): a table and one-line builders.

Lite is the V1 network made for integer accelerators and mobile CPUs: ReLU6 everywhere
("easier quantization"), no squeeze-excite, the stem fixed at 32 channels and the head at
1280, the first and last stages' repeats not depth-scaled, and (x - 127) / 128 input
normalisation (tensorflow/tpu's MEAN_RGB 127, STDDEV 128). The blocks are V1's; the builder
is the shared `mbconv_net.build_mbconv_net`. Layer names are keras.applications' V1 names
without the `_se_*` layers.
"""

import dataclasses

from effnet_keras.models import family as families
from effnet_keras.models.efficientnet import DOC
from effnet_keras.models.efficientnet import V1_BLOCKS
from effnet_keras.models.mbconv_net import NetSpec
from effnet_keras.models.mbconv_net import public_builder

# V1's B0 table without squeeze-excite (tensorflow/tpu keeps "se0.25" in the block strings and
# turns it off with use_se=False).
LITE_BLOCKS = tuple(dataclasses.replace(block, se_ratio=0.0) for block in V1_BLOCKS)

# name: (width, depth, resolution, dropout), tensorflow/tpu lite/efficientnet_lite_builder.py.
LITE_VARIANTS = {
    "lite0": (1.0, 1.0, 224, 0.2),
    "lite1": (1.0, 1.1, 240, 0.2),
    "lite2": (1.1, 1.2, 260, 0.3),
    "lite3": (1.2, 1.4, 280, 0.3),
    "lite4": (1.4, 1.8, 300, 0.3),
}


def lite_spec(variant):
    width, depth, resolution, dropout = LITE_VARIANTS[variant]
    return NetSpec(
        name=f"efficientnet-{variant}",
        default_name=f"efficientnet{variant}",
        blocks=LITE_BLOCKS,
        width=width,
        depth=depth,
        default_size=resolution,
        train_size=resolution,
        dropout_rate=dropout,
        bn_momentum=0.99,
        preprocessing="centered_127_128",
        ten_percent_rule=True,
        dwconv_name="dwconv",
        family=families.EFFICIENTNET_LITE,
        activation="relu6",
        scale_stem_head=False,
        scale_first_last_repeats=False,
    )


LITE_SPECS = {f"efficientnet-{v}": lite_spec(v) for v in LITE_VARIANTS}


def _public_builder(spec, public_name):
    return public_builder(spec, public_name, "EfficientNet-Lite", DOC)


EfficientNetLite0 = _public_builder(LITE_SPECS["efficientnet-lite0"], "EfficientNetLite0")
EfficientNetLite1 = _public_builder(LITE_SPECS["efficientnet-lite1"], "EfficientNetLite1")
EfficientNetLite2 = _public_builder(LITE_SPECS["efficientnet-lite2"], "EfficientNetLite2")
EfficientNetLite3 = _public_builder(LITE_SPECS["efficientnet-lite3"], "EfficientNetLite3")
EfficientNetLite4 = _public_builder(LITE_SPECS["efficientnet-lite4"], "EfficientNetLite4")

PUBLIC_BUILDERS = (EfficientNetLite0, EfficientNetLite1, EfficientNetLite2, EfficientNetLite3, EfficientNetLite4)
