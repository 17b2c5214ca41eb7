"""One contract, every registered model (timm tests/test_models.py, keras-hub run_backbone_test).

Every name in `list_models()` passes the same table-level checks: its spec carries the family
traits every tool reads, its builder exposes the keras.applications signature, its weight ids
resolve, its recipe and converter exist, and the image-size rule gives its recipe sizes. The
build checks (output shape, get_config round trip, feature_extractor, .keras serialisation,
the training classifier) run on every model small enough to build in a unit test; the large
ones are built by test_param_counts.py (exact counts) and test_deep_models.py.
"""

import inspect
import os

import keras
import numpy as np
import pytest

import effnet_keras
from effnet_keras import preprocessing
from effnet_keras import weights as weights_lib
from effnet_keras.models import factory
from effnet_keras.models import family as families
from effnet_keras.models import registry

NAMES = registry.list_models()
KERAS_APPLICATIONS_ARGS = ("include_top", "weights", "input_tensor", "input_shape", "pooling", "classes",
                           "classifier_activation", "include_preprocessing", "name", "dropout_rate",
                           "drop_connect_rate")
# Small enough to build, save and reload in a few seconds each on 2 CPU cores.
BUILT = [n for n in NAMES if n in ("efficientnet-b0", "efficientnet-lite0", "efficientnetv2-nano", "efficientnetv2-b0",
                                   "coatnet-0")]
FAMILIES = {families.EFFICIENTNET, families.EFFICIENTNET_LITE, families.EFFICIENTNET_V2, families.COATNET}


def test_every_family_is_registered_and_nothing_else():
    assert {registry.get_spec(n).family for n in NAMES} == FAMILIES
    assert len(NAMES) == 10 + 5 + 9 + 8
    assert {registry.get_spec(n).family for n in BUILT} == FAMILIES


@pytest.mark.parametrize("name", NAMES)
def test_spec_carries_the_family_traits(name):
    entry = registry.get_entry(name)
    spec = entry.spec
    assert spec.name == name and entry.builder.spec is spec and registry.get_spec(name.upper()) is spec
    family = spec.family
    assert isinstance(family, families.Family)
    assert spec.preprocessing in preprocessing.PREPROCESSING_MODES
    assert 0.0 <= spec.dropout_rate < 1.0
    for size in (spec.default_size, spec.train_size):
        assert isinstance(size, int) and size >= 32 and size % family.size_multiple == 0
    assert family.progressive == (not family.static_input)
    recipe = os.path.join(os.path.dirname(effnet_keras.__file__), "configs", "recipes", f"{family.recipe}.yaml")
    assert os.path.exists(recipe), recipe
    assert family.converter in ("efficientnet", "coatnet")
    assert factory.image_sizes(name) == (spec.train_size, spec.default_size)
    assert factory.image_sizes(name, model_image_size=96, eval_image_size=128) == (96, 128)


@pytest.mark.parametrize("name", NAMES)
def test_builder_has_the_keras_applications_signature(name):
    builder = registry.get_builder(name)
    params = inspect.signature(builder).parameters
    assert tuple(params)[: len(KERAS_APPLICATIONS_ARGS)] == KERAS_APPLICATIONS_ARGS
    assert params["include_top"].default is True and params["weights"].default is None
    assert params["classes"].default == 1000
    assert builder.__name__ in dir(effnet_keras)
    assert str(builder.spec.default_size) in builder.__doc__
    with pytest.raises(TypeError, match="unexpected keyword argument 'poling'"):
        builder(poling="avg")


@pytest.mark.parametrize("name", NAMES)
def test_weight_ids_resolve(name):
    spec = registry.get_spec(name)
    for weight_id in weights_lib.weight_ids(name):
        entry = weights_lib.lookup(name, weight_id)
        resolved = weights_lib.resolve(name, weight_id, input_shape=(spec.default_size, spec.default_size, 3),
                                       preprocessing=spec.preprocessing, converter=spec.family.converter)
        assert resolved.preprocessing == entry.preprocessing
    with pytest.raises(ValueError, match=f"No weights 'no-such-id' for {name}"):
        weights_lib.lookup(name, "no-such-id", spec.family.weights_note)


def _images(size, batch=2):
    return np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")


@pytest.mark.backend
@pytest.mark.parametrize("name", BUILT)
def test_build_round_trip_features_and_classifier(name, tmp_path):
    spec = registry.get_spec(name)
    size = 64
    model = registry.get_model(name, input_shape=(size, size, 3), classes=7)
    images = _images(size)
    out = keras.ops.convert_to_numpy(model(images, training=False))
    assert out.shape == (2, 7)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)  # softmax by default

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(images, training=False)), out, rtol=1e-5, atol=1e-6)

    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(images, training=False)), out, rtol=1e-5,
                               atol=1e-6)

    headless = registry.get_model(name, include_top=False, input_shape=(size, size, 3))
    features = effnet_keras.feature_extractor(headless)
    shapes = {k: tuple(v.shape[1:3]) for k, v in features(images).items()}
    assert shapes == {f"P{i}": (size // 2**i, size // 2**i) for i in range(1, 6)}

    classifier = factory.build_classifier(name, 5, size)
    logits = keras.ops.convert_to_numpy(classifier(images, training=False))
    assert logits.shape == (2, 5) and not np.allclose(logits.sum(axis=-1), 1.0)  # logits, no softmax
    assert (classifier.input_shape[1] is None) == (not spec.family.static_input)
