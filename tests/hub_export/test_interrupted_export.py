"""Exports are staged beside the target and moved into place only after the reload check:
an interrupted export leaves the target absent (or the previous one intact) and no stray
files; a rerun writes a clean export. Local paths (atomic rename) and `ram://` (TF's in-memory
filesystem, standing in for a bucket: no atomic directory rename, copy + verify) alike."""

import uuid

import keras
import pytest
import tensorflow as tf

import hub_export
from effnet_keras import fileio
from effnet_keras.export import bundle as bundle_lib
from effnet_keras.export import savedmodel

SAVED_MODEL_FILES = ["assets/effnet_export.json", "fingerprint.pb", "saved_model.pb", "variables/variables.data-00000-of-00001",
                     "variables/variables.index"]
BUNDLE_FILES = ["README.md", "model-instance-metadata.json", "model-metadata.json", "saved_model.tar.gz"]


@pytest.fixture(scope="module")
def model():
    """A classifier of our exporter's shape (features -> dropout -> Dense), small enough that the
    tests time the staging, not the tracing; test_remote_storage.py exports efficientnetv2-nano."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.1)(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="predictions")(x), name="tiny")


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path)
        return
    path = f"ram://export-{uuid.uuid4().hex[:8]}"
    fileio.makedirs(path)
    yield path
    fileio.rmtree(path)


def _fail(*args, **kwargs):
    raise RuntimeError("injected: reload check failed")


def test_interrupted_export_leaves_nothing_then_rerun_is_clean(model, root, monkeypatch):
    target = fileio.join(root, "export", "fv")
    with monkeypatch.context() as patch:
        patch.setattr(savedmodel, "check_reloaded", _fail)
        with pytest.raises(RuntimeError, match="injected"):
            hub_export.export(model, target, image_size=32)
    assert not fileio.exists(target)
    assert fileio.listdir(fileio.join(root, "export")) == []  # no staging directory left behind

    result = hub_export.export(model, target, image_size=32, tflite=True, bundle=True)
    assert fileio.walk_files(target) == sorted(SAVED_MODEL_FILES + ["model_float32.tflite"])
    assert fileio.listdir(fileio.join(root, "export")) == ["fv", "fv_bundle"]
    assert fileio.walk_files(result["bundle"]) == BUNDLE_FILES
    assert result["tflite"]["float"] == fileio.join(target, "model_float32.tflite")
    assert tf.saved_model.load(target)(tf.zeros([1, 32, 32, 3])).shape == (1, result["num_outputs"])


def test_interrupted_reexport_keeps_the_previous_one_and_kill_debris_is_cleaned(model, root, monkeypatch):
    target = fileio.join(root, "fv")
    hub_export.export(model, target, image_size=32, bundle=True)
    before = {rel: fileio.read_bytes(fileio.join(target, rel)) for rel in fileio.walk_files(target)}
    with monkeypatch.context() as patch:
        patch.setattr(savedmodel, "check_reloaded", _fail)
        with pytest.raises(RuntimeError, match="injected"):
            hub_export.export(model, target, image_size=32)
    assert {rel: fileio.read_bytes(fileio.join(target, rel)) for rel in fileio.walk_files(target)} == before
    assert fileio.listdir(root) == ["fv", "fv_bundle"]

    # What a `kill -9` inside tf.saved_model.save leaves: a staging directory with TF's temp state.
    debris = fileio.join(root, ".fv.tmp-999-deadbeef", "variables", "variables_temp")
    fileio.makedirs(debris)
    fileio.write_bytes(fileio.join(debris, "part-00000-of-00001.data-00000-of-00001.tempstate1"), b"x" * 1000)
    with monkeypatch.context() as patch:  # a bundle interrupted mid-write: the previous bundle stays
        patch.setattr(bundle_lib, "_write_tarball", _fail)
        with pytest.raises(RuntimeError, match="injected"):
            hub_export.export(model, target, image_size=32, bundle=True)
    assert fileio.walk_files(fileio.join(root, "fv_bundle")) == BUNDLE_FILES
    assert fileio.listdir(root) == ["fv", "fv_bundle"]  # the debris went with the next export

    hub_export.export(model, target, image_size=32, bundle=True)
    assert fileio.walk_files(target) == SAVED_MODEL_FILES
    assert fileio.listdir(root) == ["fv", "fv_bundle"]
