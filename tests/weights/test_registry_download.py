"""Weight ids: the registry covers what was published, downloads are hash-checked, errors say what to do."""

import hashlib
import os
import shutil
import tarfile

import numpy as np
import pytest

import effnet_keras
from effnet_keras.weights import download
from effnet_keras.weights import registry
from tests.weights.conftest import TIMM_V2, tiny_v2
from tests.weights.test_converters import write_automl_checkpoint

# What the reference lists as published (efficientnet.md §1.1, §7.3).
EXPECTED = {
    **{f"efficientnet-b{i}": {"imagenet", "advprop", "noisy-student"} for i in range(8)},
    "efficientnet-b8": {"imagenet", "advprop"},
    "efficientnet-l2": {"noisy-student"},
    **{f"efficientnetv2-{v}": {"imagenet", "imagenet21k", "imagenet21k-ft1k"} for v in ("b0", "b1", "b2", "b3", "s", "m", "l")},
    "efficientnetv2-xl": {"imagenet21k", "imagenet21k-ft1k"},
    # tensorflow/tpu's lite/README.md: efficientnet-lite0..4.tar.gz (ImageNet, EMA variables).
    **{f"efficientnet-lite{i}": {"imagenet"} for i in range(5)},
}


def test_registry_has_every_published_model_and_id_and_is_well_formed():
    assert {m: set(registry.weight_ids(m)) for m in registry.models_with_weights()} == EXPECTED
    assert registry.validate_table() == sum(len(v) for v in EXPECTED.values()) == 55
    lite4 = registry.lookup("efficientnet-lite4", "imagenet")
    assert (lite4.classes, lite4.preprocessing, lite4.format) == (1000, "centered_127_128", "tf_checkpoint")
    assert lite4.url.endswith("/efficientnet/lite/efficientnet-lite4.tar.gz")
    s21k = registry.lookup("efficientnetv2-s", "imagenet21k")
    assert (s21k.classes, s21k.preprocessing, s21k.format) == (21843, "centered_128", "tf_checkpoint")
    assert s21k.url.endswith("/efficientnet/v2/efficientnetv2-s-21k.tgz")
    b0 = registry.lookup("efficientnet-b0", "imagenet")
    assert (b0.hash, b0.preprocessing) == ("md5:902e53a9f72be733fc0bcb005b3ebbac", "imagenet_mean_std")
    assert b0.file(include_top=False) == (b0.notop_url, b0.notop_hash)
    assert registry.lookup("efficientnet-b3", "advprop").preprocessing == "centered_127_5"
    assert registry.lookup("efficientnetv2-b0", "imagenet").preprocessing == "imagenet_mean_std"
    assert registry.lookup("efficientnetv2-b0", "imagenet21k").preprocessing == "centered_128"
    # Every architecture in the zoo is either in the registry or has no published weights at all.
    for name in effnet_keras.list_models():
        assert name in EXPECTED or name.startswith("coatnet") or name == "efficientnetv2-nano", name


def test_bad_entries_are_refused():
    good = {"source": "s", "format": "keras_h5", "url": "https://x/y.h5", "hash": None, "classes": 1000,
            "preprocessing": "centered_128"}
    assert registry.validate_table({"m": {"imagenet": good}}) == 1
    for field, value in (("format", "onnx"), ("preprocessing", "caffe"), ("hash", "sha256:abc"), ("url", "http://x")):
        with pytest.raises(ValueError, match=field if field != "hash" else "sha256"):
            registry.validate_table({"m": {"imagenet": dict(good, **{field: value})}})


def test_unpublished_combination_fails_fast_listing_what_exists():
    # Raised before the 208 M-parameter graph is built.
    with pytest.raises(ValueError, match=r"No weights 'imagenet' for efficientnetv2-xl.*'imagenet21k', 'imagenet21k-ft1k'"):
        effnet_keras.EfficientNetV2XL(weights="imagenet")
    with pytest.raises(ValueError, match="never released CoAtNet"):
        effnet_keras.CoAtNet0(weights="imagenet")
    with pytest.raises(ValueError, match="'imagenet', 'advprop', 'noisy-student'"):
        effnet_keras.EfficientNetB0(weights="imagenet21k")
    with pytest.raises(ValueError, match="no such file"):
        effnet_keras.EfficientNetB0(weights="/nonexistent/b0.weights.h5", include_top=False, input_shape=(64, 64, 3))


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A weight id for efficientnetv2-nano served from a file:// URL (an automl-layout archive
    whose values are timm's golden tiny model), the Keras cache in tmp_path."""
    os.makedirs(tmp_path / "src" / "ckpt")
    archive = tmp_path / "src" / "nano-test.tgz"
    write_automl_checkpoint(str(tmp_path / "src" / "ckpt" / "model.ckpt"), TIMM_V2, "efficientnetv2-b0",
                            archive=str(archive))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    entry = {"source": "test", "format": "tf_checkpoint", "url": archive.as_uri(), "hash": f"sha256:{digest}",
             "classes": 10, "preprocessing": "centered_127_5"}
    table = dict(registry._table(), **{"efficientnetv2-nano": {"test": entry, "unpinned": dict(entry, hash=None)}})
    monkeypatch.setattr(registry, "_table", lambda: table)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return archive


def _build(weights):
    return tiny_v2(weights=weights, classes=10, input_shape=(64, 96, 3), classifier_activation=None)


def test_weight_id_downloads_checks_hash_and_brings_its_preprocessing(served, golden):
    model = _build("test")
    # AdvProp-style x / 127.5 - 1 inside the model = the fixture's normalisation: raw uint8 in, timm logits out.
    assert model.get_layer("rescaling").scale == pytest.approx(1 / 127.5)
    logits = model.predict(golden["image"].astype("float32"), verbose=0)
    np.testing.assert_allclose(logits, golden["logits_v2"], atol=2e-5, rtol=1e-5)
    cached = os.path.join(download.cache_dir(), "efficientnetv2-nano--test--nano-test.tgz")
    assert os.path.exists(cached)

    # A truncated cache file is detected and fetched again, never loaded.
    with open(cached, "r+b") as f:
        f.truncate(100)
    _build("test")
    assert hashlib.sha256(open(cached, "rb").read()).hexdigest() == hashlib.sha256(served.read_bytes()).hexdigest()

    # The source changed (tampered): the fresh download fails its hash, is deleted, never loaded.
    served.write_bytes(served.read_bytes()[:-10] + b"0123456789")
    os.remove(cached)
    with pytest.raises(download.WeightsDownloadError, match="fails its sha256 check.*deleted, not loaded"):
        _build("test")
    assert not os.path.exists(cached)


def test_weight_id_into_another_class_count_keeps_the_backbone_and_a_fresh_head(served, golden):
    # One rule for ids and files (timm's num_classes=): the backbone loads, the 10-class head of the
    # weights has no place in a 4-class classifier, which keeps its initialisation and says so.
    reference = _build("test")
    with pytest.warns(UserWarning, match=r"classifier 'predictions' has shapes \[\(\d+, 10\), \(10,\)\].*freshly"):
        model = tiny_v2(weights="test", classes=4, input_shape=(64, 96, 3), classifier_activation=None)
    for layer in ("stem_conv", "block6a_project_conv", "top_bn"):
        for ours, theirs in zip(model.get_layer(layer).get_weights(), reference.get_layer(layer).get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    assert not np.any(model.get_layer("predictions").get_weights()[1])  # fresh: zero bias


def test_unpinned_entry_pins_first_download_and_checks_later_ones(served):
    _build("unpinned")
    cached = os.path.join(download.cache_dir(), "efficientnetv2-nano--unpinned--nano-test.tgz")
    with open(cached + ".sha256") as f:
        assert f.read().strip() == hashlib.sha256(served.read_bytes()).hexdigest()
    with open(cached, "r+b") as f:  # corrupted in the cache: re-fetched, still matches the pin
        f.truncate(100)
    _build("unpinned")
    shutil.copy(served, str(served) + ".orig")
    with tarfile.open(served, "w:gz") as tar:  # the server now sends another file
        tar.add(str(served) + ".orig", arcname="other")
    os.remove(cached)
    with pytest.raises(download.WeightsDownloadError, match="pinned sha256"):
        _build("unpinned")
    assert not os.path.exists(cached)


def test_offline_error_names_the_url_and_the_local_path_way(served, monkeypatch):
    table = registry._table()
    table["efficientnetv2-nano"]["test"] = dict(table["efficientnetv2-nano"]["test"],
                                                url="https://127.0.0.1:9/effnet/nano-test.tgz")
    with pytest.raises(download.WeightsDownloadError) as info:
        _build("test")
    message = str(info.value)
    assert "https://127.0.0.1:9/effnet/nano-test.tgz" in message and "weights='/path/to/nano-test.tgz'" in message
