"""Format layer of checkpoint writing: name -> numpy array dicts to files.

* :func:`save_tf_checkpoint` writes a Google-format, name-based TensorFlow
  checkpoint (V2 bundle: ``prefix.index`` + ``prefix.data-00000-of-00001``),
  readable by ``tf.train.load_checkpoint``, Google's BERT code and
  bert4keras.
* :func:`save_safetensors` writes a Hugging Face ``.safetensors`` file that
  ``transformers`` ``from_pretrained`` loads.
* :func:`save_keras_weights` writes a model's Keras ``.weights.h5`` file.

All write through temporary files in the destination's folder and rename them into
place (:mod:`kerasformer.io_utils`): a failed write (disk full, ``ulimit -f``,
read-only folder) leaves the previous files byte-identical and no temporary file.

Which names to write is the mapping layer's business; these functions write
exactly the tensors they are given.
"""
import glob
import os

import numpy as np

from kerasformer import io_utils
from kerasformer.checkpoints.readers import _import_tensorflow

__all__ = ["save_tf_checkpoint", "save_safetensors", "save_keras_weights"]


def _check_tensors(tensors, what):
    """Validate a name -> array mapping; return a list of (name, ndarray)."""
    if not hasattr(tensors, "items"):
        raise TypeError(
            f"{what} needs a dict of name -> numpy array, got "
            f"{type(tensors).__name__}"
        )
    if not tensors:
        raise ValueError(f"{what}: no tensors to write")
    items = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise TypeError(
                f"{what}: tensor names must be non-empty str, got {name!r}"
            )
        array = np.asarray(value)
        if array.dtype == object:
            raise TypeError(
                f"{what}: tensor {name!r} is not numeric (dtype object)"
            )
        items.append((name, array))
    return items


def _c_contiguous(array):
    # Not np.ascontiguousarray: it turns 0-d arrays into shape (1,).
    return np.require(array, requirements="C")


def save_tf_checkpoint(tensors, prefix):
    """Write ``tensors`` as a name-based TensorFlow (V2) checkpoint.

    Args:
        tensors: dict[str, np.ndarray], variable name (e.g.
            ``"bert/encoder/layer_0/attention/self/query/kernel"``) -> array
            of any shape, in any dtype TensorFlow supports (float16/32/64,
            bfloat16 from ``ml_dtypes``, ints, bool). Names are written
            verbatim; no ``:0`` suffix and no object graph is added, so the
            result looks like Google's released BERT checkpoints.
        prefix: str or path-like, the checkpoint prefix, e.g.
            ``".../bert_model.ckpt"``; ``prefix.index`` and
            ``prefix.data-00000-of-00001`` are written (overwritten if
            present). Parent directories are created. No ``checkpoint``
            state file is written.

    Failure semantics: both files are written under a temporary prefix in the
    same folder, fsynced, checked (names and shapes read back), and renamed into
    place one by one, the data shard first and the index last. A write that fails
    (disk full, ``ulimit -f``, read-only folder) or is killed before the renames
    leaves the old ``prefix.index`` and ``prefix.data-*`` byte-identical (and, on
    failure, no temporary file). Each file is replaced atomically, the pair is
    not: a kill in the instant between the two renames leaves the new data shard
    next to the old index, which TensorFlow then refuses to read (checksums).

    Returns:
        The prefix (str).

    Raises:
        ImportError: tensorflow is not installed.
        TypeError: ``tensors`` is not a dict of str -> numeric arrays.
        ValueError: ``tensors`` is empty.
        RuntimeError: the written checkpoint does not list the expected
            names and shapes when read back.
    """
    prefix = os.path.abspath(os.path.expanduser(os.fspath(prefix)))
    items = sorted(
        _check_tensors(tensors, "save_tf_checkpoint"), key=lambda item: item[0]
    )
    tf = _import_tensorflow(prefix)
    # SaveV2 writes prefix.index + prefix.data-00000-of-00001: write both under a
    # temporary prefix in the same folder, check them, then rename each into place.
    temp = io_utils.temp_path_for(prefix)
    os.remove(temp)  # only the name is needed; SaveV2 creates temp.index / temp.data-*
    try:
        with tf.device("CPU:0"):
            tf.raw_ops.SaveV2(
                prefix=temp,
                tensor_names=[name for name, _ in items],
                shape_and_slices=[""] * len(items),
                tensors=[tf.constant(_c_contiguous(a)) for _, a in items],
            )
        # Cheap sanity check from the index only (no tensor data is read).
        shapes = tf.train.load_checkpoint(temp).get_variable_to_shape_map()
        expected = {name: list(a.shape) for name, a in items}
        if {k: list(v) for k, v in shapes.items()} != expected:
            raise RuntimeError(
                f"The TensorFlow checkpoint written at {prefix} does not read "
                "back with the expected names and shapes"
            )
        written = sorted(glob.glob(glob.escape(temp) + ".*"))
        for path in written:
            io_utils.fsync_path(path)
        # Data shards first, the index last: a reader opens the index, so until the
        # last rename it sees the old checkpoint's index.
        written.sort(key=lambda path: path.endswith(".index"))
        for path in written:
            os.replace(path, prefix + path[len(temp):])
    except BaseException:
        for path in glob.glob(glob.escape(temp) + "*"):
            os.remove(path)
        raise
    io_utils.fsync_directory(os.path.dirname(prefix))
    return prefix


def save_safetensors(tensors, path, metadata=None):
    """Write ``tensors`` to a Hugging Face ``.safetensors`` file.

    Args:
        tensors: dict[str, np.ndarray], tensor name (e.g.
            ``"encoder.layer.0.attention.self.query.weight"``) -> array of any
            shape; float16/32/64, ``ml_dtypes.bfloat16``, ints and bool are
            supported. Arrays are made C-contiguous (a transposed view is
            fine); 0-d arrays stay 0-d.
        path: str or path-like, the file to write (overwritten if present);
            parent directories are created. Written to a temporary file in the
            same folder and renamed into place: a failed or killed write leaves
            the old file byte-identical.
        metadata: dict[str, str] or None, the header's ``__metadata__``.
            Default ``{"format": "pt"}``, which ``transformers`` expects to
            load the file into a PyTorch model.

    Returns:
        The path (str).

    Raises:
        TypeError: ``tensors`` is not a dict of str -> numeric arrays, or
            ``metadata`` is not a dict of str -> str.
        ValueError: ``tensors`` is empty.
        OSError: the file cannot be written (disk full, read-only folder...);
            the previous file is then left byte-identical.
    """
    from safetensors.numpy import save_file

    path = os.path.expanduser(os.fspath(path))
    items = _check_tensors(tensors, "save_safetensors")
    if metadata is None:
        metadata = {"format": "pt"}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise TypeError(
            f"save_safetensors: metadata must be a dict of str -> str, got "
            f"{metadata!r}"
        )
    # Through our own temporary file: older safetensors versions truncate the
    # destination in place, and a failed write must not cost the old file.
    with io_utils.atomic_write(path) as temp:
        try:
            save_file(
                {name: _c_contiguous(a) for name, a in items},
                temp,
                metadata=dict(metadata),
            )
        except Exception as e:
            if type(e).__name__ != "SafetensorError":
                raise
            # The library reports disk errors (disk full, EFBIG) as its own type.
            raise OSError(f"Cannot write {path}: {e}") from None
    return path


def save_keras_weights(model, path):
    """Write ``model.save_weights``'s ``.weights.h5`` file atomically.

    Args:
        model: a built ``keras.Model``.
        path: str or path-like ending in ``.weights.h5`` (overwritten if present;
            parent directories are created).

    Returns:
        The path (str).

    Raises:
        OSError: the file cannot be written (disk full, ``ulimit -f``, read-only
            folder); the previous file is then left byte-identical and no
            temporary file remains.

    Why not ``model.save_weights(temp)``: HDF5 reports a failed disk write only
    when it flushes its cache, and h5py then crashes the process (segmentation
    fault measured with Keras 3.15 / h5py under ``ulimit -f``) or leaves a stub.
    So the file is built in memory with the same Keras writer
    (``H5IOStore`` on an ``io.BytesIO``, which Keras supports for ``.keras``
    archives) and written with plain Python I/O, where a failure is an OSError.
    Without that Keras internal, ``model.save_weights`` writes the temporary file.
    """
    import io

    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"A Keras weights file must end in .weights.h5, got {path}")
    try:
        from keras.src.saving.saving_lib import H5IOStore, _save_state
    except ImportError:  # pragma: no cover - another Keras layout
        with io_utils.atomic_write(path, suffix=".weights.h5") as temp:
            model.save_weights(temp)
        return path
    if not model.built:
        raise ValueError("Cannot save the weights of a model that is not built")
    buffer = io.BytesIO()
    store = H5IOStore(buffer, mode="w")
    try:
        _save_state(model, weights_store=store, assets_store=None, inner_path="",
                    visited_saveables=set())
    finally:
        store.close()
    return io_utils.atomic_write_bytes(path, buffer.getvalue())
