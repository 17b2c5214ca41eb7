"""EfficientNet-Lite0..4: the V1 network with Lite's changes (reference lite.md §1), built by the shared builder.

Exact parameter counts are in test_param_counts.py; the real ImageNet weights on real photos in
tests/weights/test_real_weights.py.
"""

import keras
import numpy as np
import pytest

import effnet_keras
from effnet_keras.models import efficientnet_lite
from effnet_keras.models import family as families
from effnet_keras.models import mbconv_net

# Stage repeats and output widths per model (reference lite.md §1, the per-model geometry table).
GEOMETRY = {
    "efficientnet-lite0": ((1, 2, 2, 3, 3, 4, 1), (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet-lite1": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 40, 80, 112, 192, 320)),
    "efficientnet-lite2": ((1, 3, 3, 4, 4, 5, 1), (16, 24, 48, 88, 120, 208, 352)),
    "efficientnet-lite3": ((1, 3, 3, 5, 5, 6, 1), (24, 32, 48, 96, 136, 232, 384)),
    "efficientnet-lite4": ((1, 4, 4, 6, 6, 8, 1), (24, 32, 56, 112, 160, 272, 448)),
}


@pytest.mark.parametrize("name", sorted(GEOMETRY))
def test_geometry_fixed_stem_head_and_first_last_stages(name):
    repeats, widths = GEOMETRY[name]
    spec = effnet_keras.get_spec(name)
    assert tuple(mbconv_net.stage_repeats(spec)) == repeats
    model = effnet_keras.get_model(name, include_top=False, input_shape=(64, 64, 3))
    assert model.get_layer("stem_conv").filters == 32 and model.get_layer("top_conv").filters == 1280
    for stage, (count, width) in enumerate(zip(repeats, widths), start=1):
        last = f"block{stage}{chr(96 + count)}_project_conv"
        assert model.get_layer(last).filters == width
    # Block 1 reads the unscaled 32-channel stem, although the table's scaled input is 40 / 48 for lite3 / lite4.
    assert model.get_layer("block1a_dwconv").kernel.shape[2] == 32


def test_keras_applications_v1_names_without_squeeze_excite_and_relu6_everywhere():
    lite = effnet_keras.EfficientNetLite0(input_shape=(64, 64, 3))
    b0 = effnet_keras.EfficientNetB0(input_shape=(64, 64, 3))

    def names(model, normalisation):  # after the input layer and the normalisation
        return [layer.name for layer in model.layers[1:] if layer.name != normalisation]

    lite_names = names(lite, "rescaling")
    assert lite_names == [n for n in names(b0, "normalization") if "_se_" not in n]
    activations = [layer for layer in lite.layers if isinstance(layer, keras.layers.Activation)]
    assert activations and all(keras.activations.serialize(a.activation) == "relu6" for a in activations)
    assert not any("_se_" in name for name in lite_names)
    assert lite.name == "efficientnetlite0" and lite.input_shape == (None, 64, 64, 3)


def test_normalisation_is_tensorflow_tpu_127_128():
    model = effnet_keras.EfficientNetLite0(input_shape=(32, 32, 3), include_top=False)
    rescaling = model.get_layer("rescaling")
    x = np.array([[[[0.0, 127.0, 255.0]]]], "float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(rescaling(x)), (x - 127.0) / 128.0, rtol=0, atol=1e-7)
    assert model.parts.normalization == "centered_127_128"
    assert effnet_keras.get_spec("efficientnet-lite3").family is families.EFFICIENTNET_LITE


def test_builders_and_registry():
    assert [f"efficientnet-lite{i}" for i in range(5)] == [n for n in effnet_keras.list_models() if "lite" in n]
    for i, builder in enumerate(efficientnet_lite.PUBLIC_BUILDERS):
        assert builder is getattr(effnet_keras, f"EfficientNetLite{i}")
        assert builder.spec.default_size == efficientnet_lite.LITE_VARIANTS[f"lite{i}"][2]
        assert "EfficientNet-Lite" in builder.__doc__ and '"relu6"' in builder.__doc__
    assert effnet_keras.get_spec("EfficientNetLite2").name == "efficientnet-lite2"
    assert effnet_keras.weights.weight_ids("efficientnet-lite4") == ("imagenet",)
