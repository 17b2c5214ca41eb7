"""Damaged or foreign weights files: every loader raises one WeightsFileError naming the path."""

import hashlib
import os
import subprocess
import sys

import h5py
import pytest

from effnet_keras.models import convert as convert_lib
from effnet_keras import weights as weights_lib
from effnet_keras.weights import WeightsFileError
from effnet_keras.weights import download
from effnet_keras.weights import keras_h5
from effnet_keras.weights import read_native_h5
from effnet_keras.weights import registry
from effnet_keras.weights.state_dict import read_state_dict
from tests.weights.conftest import TIMM_V2, tiny_v2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KWARGS = dict(classes=10, input_shape=(32, 32, 3), classifier_activation=None)


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    """The first bytes of a real file of each format (a truncated download)."""
    folder = tmp_path_factory.mktemp("real")
    native = folder / "nano.weights.h5"
    tiny_v2(weights=None, **KWARGS).save_weights(str(native))
    return {"h5": native.read_bytes(), "safetensors": open(TIMM_V2, "rb").read()}


def damaged(tmp_path, real_files, kind, suffix):
    """A truncated file (first 1000 bytes of a real one) or a text file, named `*suffix`."""
    path = tmp_path / f"weights{suffix}"
    if kind == "truncated":
        source = real_files["safetensors" if suffix == ".safetensors" else "h5"]
        path.write_bytes(source[:1000])
    else:
        path.write_text("<html>404: this is not the file you asked for</html>\n")
    return str(path)


def check(info, path):
    message = str(info.value)
    assert path in message and "damaged or not" in message and "again" in message, message


KINDS = ("truncated", "text")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("suffix", [".weights.h5", ".h5", ".safetensors", ".tgz"])
def test_builder_weights_path(kind, suffix, real_files, tmp_path):
    if suffix == ".tgz":
        pytest.importorskip("tensorflow")
    path = damaged(tmp_path, real_files, kind, suffix)
    with pytest.raises(WeightsFileError) as info:
        tiny_v2(weights=path, **KWARGS)
    check(info, path)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "loader, suffix",
    [
        ("legacy_h5", ".h5"),  # keras.applications path
        ("native_reader", ".weights.h5"),
        ("timm_efficientnet", ".safetensors"),
        ("timm_efficientnet", ".pth"),  # torch_file's reader
        ("timm_coatnet", ".safetensors"),
        ("automl", ".tgz"),
        ("convert", ".h5"),
        ("convert", ".safetensors"),
        ("convert", ".pth"),
    ],
)
def test_converter_functions(kind, loader, suffix, real_files, tmp_path):
    path = damaged(tmp_path, real_files, kind, suffix)
    if loader == "automl":
        pytest.importorskip("tensorflow")
    calls = {
        "legacy_h5": lambda: weights_lib.load_file(tiny_v2(**KWARGS), path, file_format="keras_h5"),
        "native_reader": lambda: read_native_h5(path),
        "timm_efficientnet": lambda: weights_lib.load_file(tiny_v2(**KWARGS), path, converter="efficientnet"),
        "timm_coatnet": lambda: read_state_dict(path),
        "automl": lambda: weights_lib.load_file(tiny_v2(**KWARGS), path, converter="efficientnet"),
        "convert": lambda: convert_lib.convert("keras" if suffix == ".h5" else "timm", "efficientnetv2-nano", path,
                                               str(tmp_path / "out.weights.h5")),
    }
    with pytest.raises(WeightsFileError) as info:
        calls[loader]()
    check(info, path)
    assert not os.path.exists(tmp_path / "out.weights.h5")


def test_file_of_the_other_hdf5_flavour_is_refused_by_the_strict_readers(real_files, tmp_path):
    native = tmp_path / "nano.weights.h5"
    native.write_bytes(real_files["h5"])
    with pytest.raises(WeightsFileError, match=r"Keras 3 `\.weights\.h5`: pass it as weights= directly"):
        keras_h5.read_legacy_h5(str(native))  # `convert --from keras` given one of our files
    legacy = tmp_path / "legacy.h5"
    with h5py.File(legacy, "w") as f:
        f.attrs["layer_names"] = [b"stem_conv"]
        f.create_group("stem_conv").attrs["weight_names"] = []
    with pytest.raises(WeightsFileError, match="no 'layers' group"):
        read_native_h5(str(legacy))


@pytest.mark.parametrize("source, kind, suffix", [("keras", "truncated", ".h5"), ("timm", "text", ".safetensors")])
def test_convert_cli_one_line_error(source, kind, suffix, real_files, tmp_path):
    path = damaged(tmp_path, real_files, kind, suffix)
    done = subprocess.run([sys.executable, "-m", "effnet_keras.cli.convert", "--from", source, "--model",
                           "efficientnetv2-nano", path, str(tmp_path / "out.weights.h5")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "WeightsFileError" in done.stderr and path in done.stderr and "Traceback" not in done.stderr


def test_damaged_file_behind_a_weight_id_is_deleted_from_the_cache(tmp_path, monkeypatch):
    """The download passed its hash (the server's file itself is bad): the loader names the cached copy,
    deletes it, and says the next call downloads it again."""
    served = tmp_path / "nano-bad.h5"
    served.write_text("not hdf5\n")
    entry = {"source": "test", "format": "keras_h5", "url": served.as_uri(),
             "hash": "sha256:" + hashlib.sha256(served.read_bytes()).hexdigest(), "classes": 10,
             "preprocessing": "none"}
    table = dict(registry._table(), **{"efficientnetv2-nano": {"bad": entry}})
    monkeypatch.setattr(registry, "_table", lambda: table)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    cached = os.path.join(download.cache_dir(), "efficientnetv2-nano--bad--nano-bad.h5")
    with pytest.raises(WeightsFileError, match="was deleted; the next call downloads it again") as info:
        tiny_v2(weights="bad", **KWARGS)
    assert cached in str(info.value)
    assert not os.path.exists(cached)

