"""Reads a legacy (pre-zip) ``torch.save`` file into numpy arrays, without torch.

Before PyTorch 1.6, ``torch.save`` wrote a plain sequence of pickles followed
by the raw tensor storages:

1. a magic number, 2. the protocol version (1001), 3. system info (byte
order, type sizes), 4. the saved object itself, in which every tensor is a
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` call
whose storage is a *persistent id* ``('storage', StorageType, key, location,
numel, view_metadata)``, 5. the list of storage keys in file order, and then
for each key an int64 element count followed by the storage's bytes.

We replay the pickles with an unpickler that knows only the handful of
globals such files use (so unpickling cannot run arbitrary code), then read
the storages with numpy and apply each tensor's offset, shape and stride.
"""

import collections
import pickle
import struct

import numpy as np

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.dtype = np.dtype(_STORAGE_DTYPES[name]).newbyteorder("<")


class _TensorRef:
    """A tensor whose storage has not been read yet."""

    def __init__(self, storage_key, offset, shape, stride):
        self.storage_key = storage_key
        self.offset = offset
        self.shape = tuple(shape)
        self.stride = tuple(stride)


def _rebuild_tensor(storage_key, offset, shape, stride, *unused):
    return _TensorRef(storage_key, offset, shape, stride)


class _LegacyUnpickler(pickle.Unpickler):
    def __init__(self, file, storage_dtypes):
        super().__init__(file)
        self._storage_dtypes = storage_dtypes

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"unsupported global in legacy torch file: {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _numel, view_metadata = pid
        if kind != "storage" or view_metadata is not None:
            raise pickle.UnpicklingError(f"unsupported storage record {pid!r}")
        self._storage_dtypes[key] = storage_type.dtype
        return key


def load_state_dict(path):
    """Loads a legacy ``torch.save`` file holding a dict of tensors.

    Args:
      path: path to the ``.pth`` file.

    Returns:
      A dict mapping each key to a numpy array (a copy, in C order).

    Raises:
      ValueError: the file is a zip-format save or not a torch file at all.
    """
    with open(path, "rb") as f:
        if f.read(2) == b"PK":
            raise ValueError(f"{path} is a zip-format torch file; only the legacy format is supported")
        f.seek(0)
        try:
            magic = pickle.load(f)
        except Exception as e:
            raise ValueError(f"{path} is not a legacy torch.save file: {e}") from e
        if magic != _MAGIC_NUMBER:
            raise ValueError(f"{path} is not a legacy torch.save file (bad magic number)")
        version = pickle.load(f)
        if version != _PROTOCOL_VERSION:
            raise ValueError(f"{path}: unsupported torch protocol version {version}")
        sys_info = pickle.load(f)
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path} was saved on a big-endian machine")

        storage_dtypes = {}
        saved = _LegacyUnpickler(f, storage_dtypes).load()
        storage_keys = pickle.load(f)
        storages = {}
        for key in storage_keys:
            (numel,) = struct.unpack("<q", f.read(8))
            dtype = storage_dtypes[key]
            data = f.read(numel * dtype.itemsize)
            if len(data) != numel * dtype.itemsize:
                raise ValueError(f"{path} is truncated (storage {key})")
            storages[key] = np.frombuffer(data, dtype=dtype)

    def materialize(ref):
        storage = storages[ref.storage_key]
        itemsize = storage.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            storage[ref.offset:],
            shape=ref.shape,
            strides=tuple(s * itemsize for s in ref.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view, dtype=storage.dtype.newbyteorder("="))

    return {name: materialize(value) for name, value in saved.items() if isinstance(value, _TensorRef)}
