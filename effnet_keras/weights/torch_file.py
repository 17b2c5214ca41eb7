"""Read a `torch.save` state dict (`.pth/.pt/.bin`) into NumPy arrays, without torch and without running code.

    state = read_torch_file("model.pth")   # {name: np.ndarray}

A torch file is a pickle, and unpickling can call any Python function the file names; so
the pickle is read by a restricted unpickler that knows only the few globals a state dict
needs (OrderedDict, torch's tensor-rebuild functions, storage classes and dtypes), answered
with stand-ins defined here. Any other global (`os.system`, `builtins.eval`, a model class)
is refused, naming it, before anything is called.

Both containers `torch.save` writes:

- zip (torch >= 1.6, the default): `<archive>/data.pkl` is the pickle, each storage's bytes
  are the entry `<archive>/data/<key>`, `<archive>/byteorder` says "little" or "big";
- legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): five pickles in a row
  (magic number, protocol version 1001, system info, the object, the list of storage keys),
  then each listed storage as an 8-byte little-endian element count and its raw bytes.

In both the pickle refers to a storage by a persistent id `("storage", <Storage class>,
key, location, element count[, view])`; a tensor is a view into one (offset, size and
strides in elements), so tensors may share a storage and need not be contiguous.

Leaf module: the standard library, NumPy and `effnet_keras.weights.files` only.
"""

import collections
import io
import math
import os
import pickle
import struct
import typing
import zipfile

import numpy as np

from effnet_keras.weights import files

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy torch file
LEGACY_PROTOCOL = 1001  # the second
ZIP_SIGNATURE = b"PK\x03\x04"
# Training checkpoints keep the weights under one of these keys; the first one present wins.
STATE_DICT_WRAPPERS = ("state_dict", "model", "state_dict_ema")


# The pickle can reach every object below (and change a mutable one with its BUILD opcode, for
# the files read after it): so they are all NamedTuples, which no pickle opcode can change.


class TorchDType(typing.NamedTuple):
    """Stand-in for a torch dtype (`torch.float32`) and for the element type of a storage class."""

    name: str
    stored: np.dtype  # how one element is laid out in the file (little-endian)

    def to_numpy(self, array):
        """`array` (of `stored`) as what we return: bfloat16, which NumPy lacks, widened to float32."""
        if self.name == "bfloat16":  # the high 16 bits of a float32
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array


DTYPES = {
    name: TorchDType(name, np.dtype(stored))
    for name, stored in [("float32", "<f4"), ("float16", "<f2"), ("bfloat16", "<u2"), ("float64", "<f8"),
                         ("int64", "<i8"), ("int32", "<i4"), ("int16", "<i2"), ("int8", "i1"), ("uint8", "u1"),
                         ("bool", "?")]
}
TYPED_STORAGES = {"FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
                  "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
                  "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool"}
# Storages of bytes: a tensor on one carries its own dtype (`_rebuild_tensor_v3`).
UNTYPED_STORAGES = ("UntypedStorage", "TypedStorage")


class StorageClass(typing.NamedTuple):
    """Stand-in for `torch.FloatStorage` & co.: only its element type matters."""

    dtype: TorchDType


class StorageRef(typing.NamedTuple):
    """A storage named by a persistent id: its bytes are read once the pickle is done."""

    key: str
    dtype: TorchDType
    numel: int

    @property
    def nbytes(self):
        return self.numel * self.dtype.stored.itemsize


class TensorRef(typing.NamedTuple):
    """A tensor as the pickle describes it: a strided view into a storage (all in elements)."""

    storage: StorageRef
    dtype: TorchDType
    offset: int
    size: tuple
    stride: tuple


class Rebuild(typing.NamedTuple):
    """Stand-in for one of torch's functions that rebuild a tensor: calls `function`."""

    function: typing.Callable

    def __call__(self, *args):
        return self.function(*args)


def _tensor(storage, storage_offset, size, stride, dtype):
    if not isinstance(storage, StorageRef):
        raise ValueError(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(type(n) is int and n >= 0 for n in (storage_offset, *size, *stride))):
        raise ValueError(f"a tensor has offset {storage_offset!r}, size {size!r}, stride {stride!r}")
    return TensorRef(storage, dtype, storage_offset, size, stride)


def _tensor_v1(storage, storage_offset, size, stride):
    return _tensor(storage, storage_offset, size, stride, getattr(storage, "dtype", None))


def _tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _tensor_v1(storage, storage_offset, size, stride)


def _tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    if not isinstance(dtype, TorchDType):
        raise ValueError(f"a tensor's dtype is {dtype!r}")
    return _tensor(storage, storage_offset, size, stride, dtype)


def _parameter(data, requires_grad, backward_hooks):
    return data  # an nn.Parameter is its tensor here


# (module, name) -> what the pickle gets for it. Nothing else is ever looked up.
SAFE_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,  # a container; calling it runs no file code
    ("torch._utils", "_rebuild_tensor"): Rebuild(_tensor_v1),
    ("torch._utils", "_rebuild_tensor_v2"): Rebuild(_tensor_v2),
    ("torch._utils", "_rebuild_tensor_v3"): Rebuild(_tensor_v3),
    ("torch._utils", "_rebuild_parameter"): Rebuild(_parameter),
    **{("torch", name): dtype for name, dtype in DTYPES.items()},
    **{("torch", name): StorageClass(DTYPES[dtype]) for name, dtype in TYPED_STORAGES.items()},
    **{(module, name): StorageClass(DTYPES["uint8"]) for module in ("torch", "torch.storage")
       for name in UNTYPED_STORAGES},
}


def refused(path, what):
    """A file we can read but will not: one line naming the path and why."""
    return files.WeightsFileError(f"Torch file {path!r} {what}", path=path)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a state dict with the stand-ins above; every storage it meets is recorded in `storages`."""

    def __init__(self, handle, path):
        super().__init__(handle)
        self.path = path
        self.storages = {}  # key -> StorageRef

    def find_class(self, module, name):
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise refused(self.path, f"refers to the Python global {module}.{name}, which is none of the "
                                     f"tensors, storages, dtypes ({', '.join(DTYPES)}) and OrderedDict a state "
                                     "dict is made of: the file may contain code, so it is not read.") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            kind = pid[0] if isinstance(pid, tuple) and pid else pid
            raise refused(self.path, f"holds a persistent object of kind {kind!r}; only tensor storages are read.")
        _, storage_class, key, _location, numel, *view = pid
        if view and view[0] is not None:
            raise refused(self.path, f"uses a view of storage {key!r} (a torch < 0.4 file), which is not read.")
        if not (isinstance(storage_class, StorageClass) and isinstance(key, str) and type(numel) is int
                and numel >= 0):
            raise ValueError(f"a storage is named by {pid!r}")
        ref = StorageRef(key, storage_class.dtype, numel)
        if self.storages.setdefault(key, ref) != ref:
            raise ValueError(f"storage {key!r} is named twice with different types or sizes")
        return ref


def unwrap_state_dict(state):
    """The weights inside a training checkpoint (`{"state_dict": {...}, "epoch": ...}`), else `state`."""
    for wrapper in STATE_DICT_WRAPPERS:
        if isinstance(state, dict) and wrapper in state and isinstance(state[wrapper], dict):
            return state[wrapper]
    return state


def _tensors_of(state, path):
    """{name: TensorRef}, or a refusal naming what the file holds instead."""
    state = unwrap_state_dict(state)
    if not isinstance(state, dict):
        raise refused(path, f"holds a {type(state).__name__}, not a dict of tensors (a state dict).")
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, TensorRef):
            raise refused(path, f"is not a dict of tensors (a state dict): its entry {name!r} is a "
                                f"{type(value).__name__}.")
    return state


def _array(tensor, raw):
    """`tensor`'s values from its storage's bytes `raw`: a writable array of its own."""
    itemsize = tensor.dtype.stored.itemsize
    flat = np.frombuffer(raw, dtype=tensor.dtype.stored, count=len(raw) // itemsize)
    count = math.prod(tensor.size)
    if count == 0:
        return tensor.dtype.to_numpy(np.zeros(tensor.size, tensor.dtype.stored))
    last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
    if last >= len(flat):
        raise ValueError(f"a tensor of size {tensor.size} reaches element {last} of storage "
                         f"{tensor.storage.key!r}, which has {len(flat)}")
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], shape=tensor.size,
                                           strides=[s * itemsize for s in tensor.stride])
    return tensor.dtype.to_numpy(view.copy(order="C"))  # its own, C-contiguous, whatever the strides


def _arrays(tensors, raw_storages):
    return {name: _array(tensor, raw_storages[tensor.storage.key]) for name, tensor in tensors.items()}


def _read_zip(path, archive):
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError(f"a zip archive with {len(pickles)} '<archive>/data.pkl' entries, not 1")
    prefix = pickles[0][: -len("data.pkl")]
    if prefix + "byteorder" in archive.namelist():
        byteorder = archive.read(prefix + "byteorder").decode("ascii", "replace").strip()
        if byteorder != "little":
            raise refused(path, f"was saved {byteorder!r}-endian; only little-endian files are read.")
    unpickler = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), path)
    tensors = _tensors_of(unpickler.load(), path)
    raw_storages = {}
    for key in {tensor.storage.key for tensor in tensors.values()}:
        storage = unpickler.storages[key]
        raw = archive.read(f"{prefix}data/{key}")
        if len(raw) < storage.nbytes:
            raise ValueError(f"storage {key!r} is cut short: {len(raw)} of its {storage.nbytes} bytes")
        raw_storages[key] = raw[: storage.nbytes]
    return _arrays(tensors, raw_storages)


def _read_exactly(handle, nbytes, what):
    data = handle.read(nbytes)
    if len(data) != nbytes:
        raise EOFError(f"{what} is cut short: {len(data)} of its {nbytes} bytes")
    return data


def _read_legacy(path, handle):
    def header(expected_type):
        value = RestrictedUnpickler(handle, path).load()  # none of them needs a global
        if not isinstance(value, expected_type):
            raise ValueError(f"a legacy torch header holds {value!r}, not a {expected_type.__name__}")
        return value

    try:
        magic = header(int)
    except files.WeightsFileError:  # a global: refused as such, whatever else the file is
        raise
    except Exception:  # noqa: BLE001 - whatever pickle makes of a file of another format
        magic = None
    if magic != LEGACY_MAGIC:
        raise ValueError("neither a zip archive (torch >= 1.6) nor a legacy torch file (no torch magic number)")
    protocol = header(int)
    if protocol != LEGACY_PROTOCOL:
        raise ValueError(f"legacy protocol version {protocol}, not {LEGACY_PROTOCOL}")
    if not header(dict).get("little_endian", True):
        raise refused(path, "was saved big-endian; only little-endian files are read.")
    unpickler = RestrictedUnpickler(handle, path)
    tensors = _tensors_of(unpickler.load(), path)
    keys = header(list)
    needed = {tensor.storage.key for tensor in tensors.values()}
    size = os.fstat(handle.fileno()).st_size
    raw_storages = {}
    for key in keys:
        storage = unpickler.storages.get(key)
        if storage is None:
            raise ValueError(f"storage {key!r} is listed but no tensor names it")
        (numel,) = struct.unpack("<q", _read_exactly(handle, 8, f"storage {key!r}"))
        if numel != storage.numel:
            raise ValueError(f"storage {key!r} has {numel} elements, its persistent id says {storage.numel}")
        nbytes = storage.nbytes
        if handle.tell() + nbytes > size:  # checked before reading: a bad count allocates nothing
            raise EOFError(f"storage {key!r} is cut short: it needs {nbytes} bytes, the file has "
                           f"{size - handle.tell()} left")
        if key in needed:
            raw_storages[key] = _read_exactly(handle, nbytes, f"storage {key!r}")
        else:  # an optimizer's state, say: skipped, not read
            handle.seek(nbytes, os.SEEK_CUR)
    missing = needed - raw_storages.keys()
    if missing:
        raise ValueError(f"storage {sorted(missing)[0]!r} is not in the file's list of storages")
    return _arrays(tensors, raw_storages)


def read_torch_file(path):
    """{name: np.ndarray} from a `torch.save` state dict, zip or legacy, unwrapped from a training checkpoint.

    Keeps each tensor's dtype (float32, float16, float64, int64, int32, int16, int8, uint8,
    bool), except bfloat16, read as float32. A damaged file raises WeightsFileError; so does
    one that names any Python global other than a state dict's (it may contain code), is
    big-endian, or holds something other than a dict of tensors.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such torch file: {path!r}")
    with files.reading(path, expected=files.TIMM):
        with open(path, "rb") as handle:
            if zipfile.is_zipfile(handle):
                with zipfile.ZipFile(handle) as archive:
                    return _read_zip(path, archive)
            handle.seek(0)
            if handle.read(len(ZIP_SIGNATURE)) == ZIP_SIGNATURE:
                raise ValueError("a zip archive without its directory at the end (cut short?)")
            handle.seek(0)
            return _read_legacy(path, handle)
