"""Format layer of checkpoint reading: tensor names, shapes and numpy arrays.

This module knows how tensors are *stored*, not what they *mean*: every
reader lists every tensor of the checkpoint (TF bookkeeping variables such as
``global_step`` or optimizer slots included); choosing and renaming tensors is
the job of the name-mapping layer built on top of it.

Supported formats:

* Google / bert4keras TensorFlow checkpoints (``prefix.index`` +
  ``prefix.data-*``), via :class:`TFCheckpointReader` (needs ``tensorflow``);
* Hugging Face ``.safetensors`` files, via :class:`SafetensorsReader`;
* PyTorch ``pytorch_model.bin`` / ``.pt`` / ``.pth`` state dicts, via
  :class:`TorchBinReader` (needs ``torch``);
* sharded Hugging Face checkpoints (``*.safetensors.index.json`` or
  ``pytorch_model.bin.index.json``), via :class:`ShardedReader`;
* Keras ``.weights.h5`` files of a kerasformer model, via :class:`KerasWeightsReader`
  (variables by layer and position: for inspection and the CLI, not for name-keyed
  loading, so :func:`open_checkpoint` does not pick it).

:func:`open_checkpoint` picks the right reader for a file, a TF prefix or a
model directory; :func:`find_config` finds the ``config.json`` next to it.

Every reader returns float16 and bfloat16 tensors as float32 numpy arrays;
other dtypes are returned unchanged.
"""
import json
import os
import re

import numpy as np

__all__ = [
    "CheckpointReader",
    "TFCheckpointReader",
    "SafetensorsReader",
    "ShardedReader",
    "TorchBinReader",
    "KerasWeightsReader",
    "is_bookkeeping",
    "open_checkpoint",
    "find_config",
]

# Files looked for, in this order, when a directory is given.
_DIR_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_TORCH_EXTENSIONS = (".bin", ".pt", ".pth")
_TF_DATA_RE = re.compile(r"\.data-\d+-of-\d+$")
_SUPPORTED = (
    "a TensorFlow checkpoint prefix (prefix.index + prefix.data-*), "
    "*.safetensors, *.safetensors.index.json / pytorch_model.bin.index.json "
    "(sharded), *.bin / *.pt / *.pth (PyTorch state dict), or a directory "
    "holding one of them"
)


# Tensors that are training state or buffers, never model weights: TF bookkeeping
# (global_step, loss scale, optimizer slots, EMA, the object graph) and Hugging Face
# buffers (position_ids, GPT-2's attention-mask bias, NEZHA's position table). The one
# list shared by loading (not "unexpected") and `kerasformer info` (not counted).
_BOOKKEEPING = re.compile(
    r"(^|[/.])(global_step|bad_steps|good_steps|loss_scale|current_loss_scale)$"
    r"|/adam_[mv]$|/lamb_[mv]$|/Adam(_1)?$|/Momentum$|ExponentialMovingAverage"
    r"|(^|\.)position_ids$|_CHECKPOINTABLE_OBJECT_GRAPH"
    r"|\.attn\.(masked_)?bias$|relative_positions_encoding\.positions_encoding$"
)


def is_bookkeeping(name):
    """Whether the checkpoint tensor `name` is training state or a buffer (optimizer
    slots, ``global_step``, ``position_ids``...), not a model weight."""
    return _BOOKKEEPING.search(name) is not None


def _import_tensorflow(path):
    """Import tensorflow quietly, or raise an ImportError naming ``path``."""
    # Must be set before the first import to silence TF's C++ logging; an
    # explicit user setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(
            f"Reading the TensorFlow checkpoint {path} needs tensorflow: "
            "pip install tensorflow-cpu"
        ) from e
    return tf


def _import_torch(path):
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading the PyTorch checkpoint {path} needs torch: "
            "pip install torch"
        ) from e
    return torch


def _first_line(error):
    """The first line of an exception's message (TF's carry C++ stack traces)."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _to_float32_if_half(array):
    """float16 / bfloat16 (any flavour: ml_dtypes, TF's) -> float32."""
    array = np.asarray(array)
    if array.dtype == np.float16 or array.dtype.name == "bfloat16":
        return array.astype(np.float32)
    return array


class CheckpointReader:
    """Base class: read-only, name-addressed access to a checkpoint's tensors.

    Attributes:
        path: str, the file / prefix / index this reader was opened on.
        format: str, one of ``"tf"``, ``"safetensors"``, ``"torch"``.

    Supports ``name in reader``, ``len(reader)``, iteration over the sorted
    names and use as a context manager (which calls :meth:`close`).
    Subclasses implement ``_names()``, ``_shape(name)`` and ``_get(name)``.
    """

    format = None

    def __init__(self, path):
        self.path = os.fspath(path)
        self._sorted_names = None

    # -- subclass hooks ---------------------------------------------------
    def _names(self):
        raise NotImplementedError

    def _shape(self, name):
        raise NotImplementedError

    def _get(self, name):
        raise NotImplementedError

    # -- public API --------------------------------------------------------
    def names(self):
        """Sorted list of every tensor name (str) in the checkpoint."""
        if self._sorted_names is None:
            self._sorted_names = sorted(self._names())
            self._name_set = frozenset(self._sorted_names)
        return list(self._sorted_names)

    def _check(self, name):
        if name not in self:
            raise KeyError(
                f"No tensor named {name!r} in the {self.format} checkpoint "
                f"{self.path} ({len(self)} tensors)"
            )

    def shape(self, name):
        """Shape of tensor ``name`` as a tuple of ints.

        Does not load the tensor's data where the format allows (TF,
        safetensors); a PyTorch ``.bin`` has to be loaded whole anyway.

        Raises:
            KeyError: no tensor ``name``; the message names it and the path.
        """
        self._check(name)
        return tuple(int(d) for d in self._shape(name))

    def get(self, name):
        """Tensor ``name`` as a numpy array.

        float16 and bfloat16 tensors are returned as float32; every other
        dtype is returned as stored. The array is never a view into reader
        state that a later call could change.

        Raises:
            KeyError: no tensor ``name``; the message names it and the path.
        """
        self._check(name)
        return _to_float32_if_half(self._get(name))

    def __contains__(self, name):
        if self._sorted_names is None:
            self.names()
        return name in self._name_set

    def __len__(self):
        if self._sorted_names is None:
            self.names()
        return len(self._sorted_names)

    def __iter__(self):
        return iter(self.names())

    def close(self):
        """Release open files / loaded state dicts. Idempotent."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"{type(self).__name__}({self.path!r})"


class TFCheckpointReader(CheckpointReader):
    """TensorFlow checkpoint (Google BERT / bert4keras style), by prefix.

    Args:
        prefix: str or path-like, the checkpoint prefix, e.g.
            ``".../bert_model.ckpt"`` (the files are ``prefix.index`` and
            ``prefix.data-00000-of-00001``).

    Every variable is listed, bookkeeping ones (``global_step``, Adam slots,
    ``_CHECKPOINTABLE_OBJECT_GRAPH``) included.

    Raises:
        FileNotFoundError: neither ``prefix.index`` nor ``prefix`` exists.
        ImportError: tensorflow is not installed.
    """

    format = "tf"

    def __init__(self, prefix):
        super().__init__(prefix)
        if not (
            os.path.exists(self.path + ".index") or os.path.isfile(self.path)
        ):
            raise FileNotFoundError(
                f"No TensorFlow checkpoint at prefix {self.path}: "
                f"{self.path}.index does not exist"
            )
        tf = _import_tensorflow(self.path)
        try:
            self._reader = tf.train.load_checkpoint(self.path)
            self._shapes = self._reader.get_variable_to_shape_map()
            dtypes = self._reader.get_variable_to_dtype_map()
        except (tf.errors.OpError, ValueError) as e:
            raise ValueError(
                f"Corrupt TensorFlow checkpoint index {self.path}.index: "
                f"{_first_line(e)}"
            ) from None
        if os.path.exists(self.path + ".index"):  # V2 bundle (V1: one file)
            self._check_data_size(dtypes)

    def _check_data_size(self, dtypes):
        """Refuse missing or truncated data shards from the index alone.

        The bundle stores each tensor's bytes back to back in the
        ``.data-K-of-N`` shards, so the shards together hold at least the byte
        size of every fixed-size tensor (exactly that, when no tensor is a
        variable-length string): a cut shard falls short.
        """
        pattern = re.escape(os.path.basename(self.path)) + r"\.data-(\d+)-of-(\d+)$"
        folder = os.path.dirname(os.path.abspath(self.path))
        shards = [m for m in map(re.compile(pattern).match, os.listdir(folder)) if m]
        if not shards:
            raise ValueError(
                f"TensorFlow checkpoint {self.path}: no data shard "
                f"({self.path}.data-00000-of-0000N) next to the index"
            )
        count = int(shards[0].group(2))
        names = {int(m.group(1)) for m in shards if int(m.group(2)) == count}
        missing = [k for k in range(count) if k not in names]
        if missing:
            raise ValueError(
                f"TensorFlow checkpoint {self.path}: data shard(s) "
                f"{[f'{self.path}.data-{k:05d}-of-{count:05d}' for k in missing]} "
                "missing"
            )
        actual = sum(
            os.path.getsize(os.path.join(folder, m.group(0)))
            for m in shards if int(m.group(2)) == count
        )
        expected, strings = 0, False
        for name, dtype in dtypes.items():
            if dtype.name == "string":
                strings = True
                continue
            elements = int(np.prod(self._shapes[name], dtype=np.int64))
            expected += elements * dtype.size
        if actual < expected or (actual != expected and not strings):
            raise ValueError(
                f"Truncated or corrupt TensorFlow checkpoint {self.path}: the "
                f"index describes {expected} bytes of tensor data, the data "
                f"shard(s) hold {actual}"
            )

    def _names(self):
        return self._shapes.keys()

    def _shape(self, name):
        return self._shapes[name]

    def _get(self, name):
        tf = _import_tensorflow(self.path)
        try:
            return np.array(self._reader.get_tensor(name), copy=True)
        except tf.errors.OpError as e:
            raise ValueError(
                f"Cannot read tensor {name!r} of the TensorFlow checkpoint "
                f"{self.path}: {_first_line(e)}"
            ) from None

    def close(self):
        self._reader = None


# safetensors dtype string -> numpy dtype, for reading raw bytes ourselves.
_ST_NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
    "BOOL": "?",
}


# Bytes per element of each safetensors dtype (for checking the header's offsets).
_ST_ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1,
    "BOOL": 1,
}


def _read_safetensors_header(path):
    """Return ``(header: dict, data_start: int)`` of a safetensors file.

    Checks what the format promises, from the header and the file size alone (no
    tensor data is read): each entry has a known dtype, a shape of non-negative
    ints and ``data_offsets`` [begin, end] whose length is the shape's byte size;
    the tensors tile the data area without gaps or overlaps, and the file holds
    exactly that many bytes after the header (a file cut after its header, or
    with offsets past its end, is refused).

    Raises:
        ValueError: naming `path` and what is wrong.
    """
    with open(path, "rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        n = int.from_bytes(raw_len, "little")
        size = os.fstat(f.fileno()).st_size
        if n <= 0 or 8 + n > size:
            raise ValueError(
                f"{path} is not a safetensors file (bad header length {n})"
            )
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"{path} is not a safetensors file (unreadable header: {e})"
            ) from e
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (bad header)")
    _check_safetensors_layout(path, header, size - 8 - n)
    return header, 8 + n


def _check_safetensors_layout(path, header, data_size):
    """Raise ValueError unless the header's tensors exactly tile `data_size` bytes."""
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        problem = None
        if not isinstance(info, dict):
            problem = "entry is not an object"
        else:
            dtype, shape = info.get("dtype"), info.get("shape")
            offsets = info.get("data_offsets")
            if dtype not in _ST_ITEMSIZE:
                problem = f"unknown dtype {dtype!r}"
            elif not isinstance(shape, list) or not all(
                type(d) is int and d >= 0 for d in shape
            ):
                problem = f"bad shape {shape!r}"
            elif not (
                isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]
            ):
                problem = f"bad data_offsets {offsets!r}"
            else:
                nbytes = _ST_ITEMSIZE[dtype] * int(np.prod(shape, dtype=np.int64))
                if offsets[1] - offsets[0] != nbytes:
                    problem = (
                        f"data_offsets {offsets} span {offsets[1] - offsets[0]} "
                        f"bytes, but a {dtype} tensor of shape {shape} has {nbytes}"
                    )
                elif offsets[1] > data_size:
                    problem = (
                        f"data_offsets {offsets} run past the end of the data "
                        f"({data_size} bytes): the file is truncated"
                    )
        if problem:
            raise ValueError(
                f"Corrupt safetensors file {path}: tensor {name!r}: {problem}"
            )
        spans.append((offsets[0], offsets[1], name))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            what = "overlaps the previous tensor" if begin < end else "leaves a gap"
            raise ValueError(
                f"Corrupt safetensors file {path}: tensor {name!r} at "
                f"data_offsets [{begin}, {stop}] {what}"
            )
        end = stop
    if end != data_size:
        raise ValueError(
            f"Corrupt safetensors file {path}: the header describes {end} bytes "
            f"of tensor data, the file holds {data_size}"
            + (" (truncated)" if end > data_size else "")
        )


class SafetensorsReader(CheckpointReader):
    """A single Hugging Face ``.safetensors`` file.

    Args:
        path: str or path-like, the ``.safetensors`` file.

    Names, shapes and dtypes come from the file's JSON header (no tensor is
    loaded to list or shape them). Tensors are read with
    ``safetensors.safe_open(framework="numpy")``, except BF16 (and FP8) ones,
    which numpy's framework cannot read: their raw bytes are read and
    widened to float32 here.

    Attributes:
        metadata: dict[str, str], the header's ``__metadata__`` (may be {}).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a safetensors file.
    """

    format = "safetensors"

    def __init__(self, path):
        super().__init__(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No safetensors file at {self.path}")
        header, self._data_start = _read_safetensors_header(self.path)
        self.metadata = dict(header.pop("__metadata__", None) or {})
        self._header = header
        self._handle = None

    def _names(self):
        return self._header.keys()

    def _shape(self, name):
        return self._header[name]["shape"]

    def dtype(self, name):
        """The stored safetensors dtype string of ``name``, e.g. ``"BF16"``."""
        self._check(name)
        return self._header[name]["dtype"]

    def _raw(self, name):
        info = self._header[name]
        begin, end = info["data_offsets"]
        with open(self.path, "rb") as f:
            f.seek(self._data_start + begin)
            data = f.read(end - begin)
        if len(data) != end - begin:
            raise ValueError(
                f"Truncated safetensors file {self.path}: tensor {name!r}"
            )
        return data, tuple(info["shape"])

    def _get(self, name):
        dtype = self._header[name]["dtype"]
        if dtype == "BF16":
            data, shape = self._raw(name)
            bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
            return bits.view(np.float32).reshape(shape)
        if dtype.startswith("F8"):
            try:
                import ml_dtypes
            except ImportError as e:
                raise ImportError(
                    f"Reading {dtype} tensor {name!r} of {self.path} needs "
                    "ml_dtypes: pip install ml_dtypes"
                ) from e
            np_dtype = {
                "F8_E4M3": ml_dtypes.float8_e4m3fn,
                "F8_E5M2": ml_dtypes.float8_e5m2,
            }.get(dtype)
            if np_dtype is None:
                raise ValueError(
                    f"Unsupported safetensors dtype {dtype} for tensor "
                    f"{name!r} in {self.path}"
                )
            data, shape = self._raw(name)
            return (
                np.frombuffer(data, dtype=np_dtype)
                .astype(np.float32)
                .reshape(shape)
            )
        if self._handle is None:
            from safetensors import safe_open

            self._handle = safe_open(self.path, framework="numpy")
        return self._handle.get_tensor(name)

    def close(self):
        if self._handle is not None:
            try:
                self._handle.__exit__(None, None, None)
            except Exception:  # pragma: no cover - already closed
                pass
            self._handle = None


def _unwrap_state_dict(obj, torch, path):
    """The flat name -> tensor dict inside a ``torch.load`` result."""
    def is_tensor_dict(d):
        return isinstance(d, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor)
            for k, v in d.items()
        )

    if is_tensor_dict(obj) and obj:
        return obj
    if isinstance(obj, dict):
        # A training checkpoint like {"state_dict": {...}, "epoch": 3}: use
        # the single obvious nested state dict, never guess between several.
        nested = [
            k for k in ("state_dict", "model", "model_state_dict", "module")
            if is_tensor_dict(obj.get(k)) and obj.get(k)
        ]
        if len(nested) == 1:
            return obj[nested[0]]
        keys = sorted(map(str, obj))[:10]
        raise ValueError(
            f"{path} is not a flat PyTorch state dict (name -> tensor), and "
            "no single nested 'state_dict'/'model' entry holds one; "
            f"top-level keys: {keys}"
        )
    raise ValueError(
        f"{path} holds a {type(obj).__name__}, not a PyTorch state dict"
    )


class TorchBinReader(CheckpointReader):
    """A PyTorch state dict saved with ``torch.save`` (``.bin``/``.pt``/``.pth``).

    Args:
        path: str or path-like, the file.

    Loaded with ``torch.load(path, map_location="cpu", weights_only=True)``
    (no arbitrary unpickling). A checkpoint that is a dict whose single
    ``"state_dict"`` / ``"model"`` / ``"model_state_dict"`` / ``"module"``
    entry is the state dict is unwrapped. bfloat16 tensors are converted
    through float32 (numpy has no bfloat16).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ImportError: torch is not installed.
        ValueError: the file does not hold a state dict.
    """

    format = "torch"

    def __init__(self, path):
        super().__init__(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No PyTorch checkpoint at {self.path}")
        self._torch = _import_torch(self.path)
        try:
            obj = self._torch.load(
                self.path, map_location="cpu", weights_only=True
            )
        except Exception as e:  # UnpicklingError, RuntimeError (bad zip), EOFError
            if "weights_only" in str(e) or "Unsupported global" in str(e):
                raise ValueError(
                    f"Refused to load {self.path}: it holds pickled Python objects "
                    "that are not tensors, and kerasformer never runs pickle code "
                    f"(torch.load weights_only=True): {_first_line(e)}"
                ) from None
            raise ValueError(
                f"Cannot read the PyTorch checkpoint {self.path} (truncated or not "
                f"a torch.save file): {type(e).__name__}: {_first_line(e)}"
            ) from None
        self._state = _unwrap_state_dict(obj, self._torch, self.path)

    def _names(self):
        return self._state.keys()

    def _shape(self, name):
        return tuple(self._state[name].shape)

    def _get(self, name):
        t = self._state[name].detach()
        if t.dtype == self._torch.bfloat16:
            return t.to(self._torch.float32).numpy()
        return t.numpy().copy()

    def close(self):
        self._state = {}


class ShardedReader(CheckpointReader):
    """A sharded Hugging Face checkpoint, from its index JSON.

    Args:
        index_json_path: str or path-like, ``*.safetensors.index.json`` or
            ``pytorch_model.bin.index.json``; its ``weight_map`` maps each
            tensor name to a shard file, relative to the index's folder.

    Shards are opened on first use (a shard's reader is then kept until
    :meth:`close`). ``format`` is ``"safetensors"`` or ``"torch"``, from the
    shards' extension.

    Raises:
        FileNotFoundError: the index or one of its shards does not exist.
        ValueError: the index has no ``weight_map``, or shards of an unknown
            or mixed format.
    """

    def __init__(self, index_json_path):
        super().__init__(index_json_path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No checkpoint index at {self.path}")
        try:
            with open(self.path, encoding="utf-8") as f:
                index = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(
                f"Sharded checkpoint index {self.path} is not valid JSON: {e}"
            ) from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(
                f"{self.path} is not a sharded checkpoint index: it has no "
                "'weight_map'"
            )
        self.metadata = dict(index.get("metadata") or {})
        folder = os.path.dirname(os.path.abspath(self.path))
        self._weight_map = {
            name: os.path.join(folder, shard)
            for name, shard in weight_map.items()
        }
        shards = sorted(set(self._weight_map.values()))
        formats = set()
        for shard in shards:
            if shard.endswith(".safetensors"):
                formats.add("safetensors")
            elif shard.endswith(_TORCH_EXTENSIONS):
                formats.add("torch")
            else:
                raise ValueError(
                    f"Shard {shard} listed in {self.path} has an unsupported "
                    "extension (expected .safetensors or .bin/.pt/.pth)"
                )
        if len(formats) != 1:
            raise ValueError(f"{self.path} mixes shard formats: {formats}")
        self.format = formats.pop()
        missing = [s for s in shards if not os.path.isfile(s)]
        if missing:
            raise FileNotFoundError(
                f"Shard(s) listed in {self.path} not found: {missing}"
            )
        self._shards = {}

    def shard_files(self):
        """Sorted list of the absolute shard file paths."""
        return sorted(set(self._weight_map.values()))

    def _reader(self, name):
        shard = self._weight_map[name]
        reader = self._shards.get(shard)
        if reader is None:
            if self.format == "safetensors":
                reader = SafetensorsReader(shard)
            else:
                reader = TorchBinReader(shard)
            self._shards[shard] = reader
        if name not in reader:
            raise KeyError(
                f"{self.path} maps tensor {name!r} to {shard}, which does "
                "not contain it"
            )
        return reader

    def _names(self):
        return self._weight_map.keys()

    def _shape(self, name):
        return self._reader(name).shape(name)

    def _get(self, name):
        return self._reader(name).get(name)

    def close(self):
        for reader in self._shards.values():
            reader.close()
        self._shards = {}


class KerasWeightsReader(CheckpointReader):
    """A Keras ``.weights.h5`` file saved from a kerasformer model (read-only).

    Args:
        path: str or path-like, the ``.weights.h5`` file.

    Tensor names are the layer names recorded in the file joined with ``/`` and the
    index of the variable, e.g. ``Transformer-0-MultiHeadSelfAttention/q_dense/0``
    (Keras stores variables by position, not by name). ``format`` is ``"keras"``.

    Attributes:
        layer_paths: dict, HDF5 group of each top-level layer (``layers/dense_3``)
            -> the layer name recorded in it.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming `path`: not an HDF5 file (or a cut one), no ``layers``
            group, or no weights at all.
    """

    format = "keras"

    def __init__(self, path):
        import h5py

        super().__init__(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"No file at {self.path}")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise ValueError(f"{self.path} is not an HDF5 file: {e}") from None
        self._datasets = {}
        # One group per top-level layer under "layers/", named by the Keras class
        # (dense_3...); the layer's own name is an attribute of its "vars" group.
        self.layer_paths = {}
        layers = self._file.get("layers")
        if layers is None:
            self._file.close()
            raise ValueError(f"{self.path} is not a Keras .weights.h5 file of a model "
                             "(no 'layers' group)")
        for key in layers:
            self.layer_paths[f"layers/{key}"] = self._walk(layers[key], [])
        if not self._datasets:
            self._file.close()
            raise ValueError(f"{self.path} holds no weights (an empty or cut .weights.h5)")

    def _walk(self, group, names):
        own = group.get("vars")
        name = own.attrs.get("name") if own is not None else None
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        here = names + [name or group.name.rsplit("/", 1)[-1]]
        if own is not None:
            for index in sorted(own, key=int):
                self._datasets["/".join(here + [index])] = own[index]
        for key in group:
            if key != "vars":
                self._walk(group[key], here)
        return here[0]

    def _names(self):
        return self._datasets.keys()

    def _shape(self, name):
        return self._datasets[name].shape

    def _get(self, name):
        return self._datasets[name][()]

    def layers_with_weights(self):
        """Names of the top-level layers that hold at least one variable."""
        return {name.split("/", 1)[0] for name in self._datasets}

    def close(self):
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None


def _tf_prefix_of(path):
    """``path`` as a TF prefix if it names one (or one of its files), else None."""
    if os.path.isfile(path + ".index"):
        return path
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if _TF_DATA_RE.search(path) and os.path.isfile(path):
        prefix = _TF_DATA_RE.sub("", path)
        if os.path.isfile(prefix + ".index"):
            return prefix
    return None


def _parse_checkpoint_state(state_file):
    """``model_checkpoint_path`` from a TF ``checkpoint`` state file, or None."""
    try:
        with open(state_file, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return None
    m = re.search(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"',
                  text, re.MULTILINE)
    if not m:
        return None
    value = m.group(1)
    try:  # text-proto string escapes
        value = value.encode("latin-1", "backslashreplace").decode(
            "unicode_escape"
        )
    except UnicodeDecodeError:
        pass
    return value


def _tf_prefix_in_dir(directory):
    """The TF checkpoint prefix in ``directory``, or None.

    Uses the ``checkpoint`` state file's ``model_checkpoint_path`` when it
    resolves to an existing checkpoint (relative to ``directory``; an absolute
    path from another machine falls back to its basename in ``directory``),
    else the single ``*.index`` file. Raises ValueError when several
    ``*.index`` files make the choice ambiguous.
    """
    state = os.path.join(directory, "checkpoint")
    if os.path.isfile(state):
        recorded = _parse_checkpoint_state(state)
        if recorded:
            candidates = [os.path.join(directory, recorded)]
            if os.path.isabs(recorded):
                candidates.append(
                    os.path.join(directory, os.path.basename(recorded))
                )
            for prefix in candidates:
                if os.path.isfile(prefix + ".index"):
                    return prefix
    prefixes = sorted(
        os.path.join(directory, f[: -len(".index")])
        for f in os.listdir(directory)
        if f.endswith(".index") and os.path.isfile(os.path.join(directory, f))
    )
    if len(prefixes) > 1:
        raise ValueError(
            f"Several TensorFlow checkpoints in {directory} and no usable "
            "'checkpoint' state file to choose between them; pass one of "
            f"these prefixes: {prefixes}"
        )
    return prefixes[0] if prefixes else None


def open_checkpoint(path):
    """Open the checkpoint at ``path`` with the reader for its format.

    Args:
        path: str or path-like; one of

            * a TF checkpoint prefix (``prefix.index`` exists), or the
              ``.index`` / ``.data-*-of-*`` file of one;
            * a ``.safetensors`` file;
            * a ``*.index.json`` sharded-checkpoint index;
            * a ``.bin`` / ``.pt`` / ``.pth`` PyTorch state dict;
            * a directory, searched in this order for ``model.safetensors``,
              ``model.safetensors.index.json``, ``pytorch_model.bin``,
              ``pytorch_model.bin.index.json``, then a TF checkpoint (the
              ``checkpoint`` state file's ``model_checkpoint_path``, else the
              single ``*.index`` prefix, e.g. ``bert_model.ckpt``).

    Returns:
        A :class:`CheckpointReader` (close it, or use it as a context manager).

    Raises:
        FileNotFoundError: ``path`` does not exist, or is a directory holding
            no recognised checkpoint (the message lists what was looked for).
        ValueError: unknown file extension, or a directory with several TF
            checkpoints and no usable ``checkpoint`` state file.
        ImportError: the format needs tensorflow / torch, which is missing.
    """
    path = os.path.expanduser(os.fspath(path))
    prefix = _tf_prefix_of(path)
    if prefix is not None:
        return TFCheckpointReader(prefix)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No checkpoint at {path}: it does not exist")
    if os.path.isdir(path):
        for name in _DIR_CANDIDATES:
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return open_checkpoint(candidate)
        prefix = _tf_prefix_in_dir(path)
        if prefix is not None:
            return TFCheckpointReader(prefix)
        present = sorted(os.listdir(path))
        shown = present[:20] + (["..."] if len(present) > 20 else [])
        raise FileNotFoundError(
            f"No checkpoint found in directory {path}: looked for "
            f"{', '.join(_DIR_CANDIDATES)}, a TF 'checkpoint' state file and "
            f"a TF checkpoint prefix (*.index); the directory holds {shown}"
        )
    lower = path.lower()
    if lower.endswith(".safetensors"):
        return SafetensorsReader(path)
    if lower.endswith(".index.json"):
        return ShardedReader(path)
    if lower.endswith(_TORCH_EXTENSIONS):
        return TorchBinReader(path)
    ext = os.path.splitext(path)[1] or "(no extension)"
    raise ValueError(
        f"Unknown checkpoint format {ext!r} for {path}; supported: {_SUPPORTED}"
    )


def find_config(path):
    """The model config JSON that goes with a checkpoint, or None.

    Args:
        path: str or path-like, a checkpoint file, TF prefix or directory.

    Returns:
        The path (str) of ``config.json``, else ``bert_config.json``, in the
        directory itself or in the checkpoint's folder; None if neither
        exists.
    """
    from kerasformer.config import config_file_in

    path = os.path.expanduser(os.fspath(path))
    folder = path if os.path.isdir(path) else (os.path.dirname(path) or ".")
    return config_file_in(folder)
