"""Exact parameter counts and MACs against ../shared/reference/efficientnet.md §1.8 and §7.

"total" = count_params() including BN moving statistics (what automl asserts);
"trainable" excludes them; "no top" = include_top=False (head conv/BN kept).
"""

import gc

import keras
import numpy as np
import pytest

import effnet_keras

# name: (total, trainable, total no-top, trainable no-top)
REFERENCE_COUNTS = {
    "efficientnet-b0": (5_330_564, 5_288_548, 4_049_564, 4_007_548),
    "efficientnet-b1": (7_856_232, 7_794_184, 6_575_232, 6_513_184),
    "efficientnet-b2": (9_177_562, 9_109_994, 7_768_562, 7_700_994),
    "efficientnet-b3": (12_320_528, 12_233_232, 10_783_528, 10_696_232),
    "efficientnet-b4": (19_466_816, 19_341_616, 17_673_816, 17_548_616),
    "efficientnet-b5": (30_562_520, 30_389_784, 28_513_520, 28_340_784),
    "efficientnet-b6": (43_265_136, 43_040_704, 40_960_136, 40_735_704),
    "efficientnet-b7": (66_658_680, 66_347_960, 64_097_680, 63_786_960),
    "efficientnet-b8": (87_793_174, 87_413_142, 84_976_174, 84_596_142),
    "efficientnet-l2": (481_399_996, 480_309_308, 475_894_996, 474_804_308),
    # EfficientNet-Lite: trainable counts of tensorflow/tpu lite/efficientnet_lite_builder_test.py
    # (reference lite.md §1); totals add the BN moving statistics.
    "efficientnet-lite0": (4_694_024, 4_652_008, 3_413_024, 3_371_008),
    "efficientnet-lite1": (5_470_344, 5_416_680, 4_189_344, 4_135_680),
    "efficientnet-lite2": (6_150_168, 6_092_072, 4_869_168, 4_811_072),
    "efficientnet-lite3": (8_273_768, 8_197_096, 6_992_768, 6_916_096),
    "efficientnet-lite4": (13_118_936, 13_006_568, 11_837_936, 11_725_568),
    "efficientnetv2-b0": (7_200_312, 7_139_704, 5_919_312, 5_858_704),
    "efficientnetv2-b1": (8_212_124, 8_141_052, 6_931_124, 6_860_052),
    "efficientnetv2-b2": (10_178_374, 10_096_086, 8_769_374, 8_687_086),
    "efficientnetv2-b3": (14_467_622, 14_358_406, 12_930_622, 12_821_406),
    "efficientnetv2-s": (21_612_360, 21_458_488, 20_331_360, 20_177_488),
    "efficientnetv2-m": (54_431_388, 54_139_356, 53_150_388, 52_858_356),
    "efficientnetv2-l": (119_027_848, 118_515_272, 117_746_848, 117_234_272),
    "efficientnetv2-xl": (208_896_832, 208_119_808, 207_615_832, 206_838_808),
}

# MACs (multiply-adds) at the eval size, reference §7 (analytic count).
REFERENCE_MACS = {
    "efficientnet-b0": (224, 0.386e9),
    "efficientnet-b3": (300, 1.827e9),
    "efficientnetv2-b0": (224, 0.718e9),
    "efficientnetv2-b3": (300, 3.011e9),
    "efficientnetv2-s": (384, 8.37e9),
    "efficientnetv2-m": (480, 24.58e9),
}

SMALL = [n for n in REFERENCE_COUNTS if REFERENCE_COUNTS[n][0] < 25_000_000]
LARGE = [n for n in REFERENCE_COUNTS if n not in SMALL]


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _check_counts(name):
    total, trainable, total_notop, trainable_notop = REFERENCE_COUNTS[name]
    # Build at a small static size: parameter counts do not depend on it.
    model = effnet_keras.get_model(name, input_shape=(64, 64, 3))
    assert model.count_params() == total
    assert _trainable(model) == trainable
    del model
    keras.backend.clear_session()
    model = effnet_keras.get_model(name, include_top=False)
    assert model.count_params() == total_notop
    assert _trainable(model) == trainable_notop
    del model
    keras.backend.clear_session()
    gc.collect()


# Counts do not depend on the backend: the JAX rerun in CI checks a representative few.
JAX_TOO = {"efficientnet-b0", "efficientnetv2-b0", "efficientnetv2-s"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.backend) if n in JAX_TOO else n for n in SMALL])
def test_param_counts_small(name):
    _check_counts(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", LARGE)
def test_param_counts_large(name):
    _check_counts(name)


def test_every_reference_model_is_registered():
    assert set(REFERENCE_COUNTS) <= set(effnet_keras.list_models())


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.backend) if n in JAX_TOO else n for n in sorted(REFERENCE_MACS)]
)
def test_macs_match_reference(name):
    size, macs = REFERENCE_MACS[name]
    model = effnet_keras.get_model(name, include_top=True, input_shape=(size, size, 3))
    stats = effnet_keras.model_stats(model)
    assert stats["image_size"] == (size, size)
    assert stats["macs"] == pytest.approx(macs, rel=2e-3)
    assert stats["params"] == REFERENCE_COUNTS[name][0]


@pytest.mark.backend
def test_model_stats_at_another_size_for_dynamic_model():
    model = effnet_keras.EfficientNetV2S(include_top=False)
    with pytest.raises(ValueError, match="image_size"):
        effnet_keras.model_stats(model)
    at_300 = effnet_keras.model_stats(model, image_size=300)["macs"]
    at_384 = effnet_keras.model_stats(model, image_size=384)["macs"]
    # Reference: 5.31 B at the final training size 300 (with top); head adds 1.28 M.
    assert at_300 == pytest.approx(5.31e9 - 1.28e6, rel=3e-3)
    # 8.37 B with top at 384, less the 1280 x 1000 classifier.
    assert at_384 == pytest.approx(8.3656e9 - 1.28e6, rel=1e-3)


@pytest.mark.backend
def test_automl_b3_difference_is_the_ten_percent_rule():
    # Stage-1 width of V1-B3 is 24 (original rule), V2-B3 keeps 16 (defined without it).
    v1 = effnet_keras.EfficientNetB3(include_top=False)
    v2 = effnet_keras.EfficientNetV2B3(include_top=False)
    assert v1.get_layer("block1a_project_conv").filters == 24
    assert v2.get_layer("block1a_project_conv").filters == 16
