"""Format layer of checkpoint writing: name -> numpy array dicts to files.

* :func:`save_tf_checkpoint` writes a Google-format, name-based TensorFlow
  checkpoint (V2 bundle: ``prefix.index`` + ``prefix.data-00000-of-00001``),
  readable by ``tf.train.load_checkpoint``, Google's BERT code and
  bert4keras.
* :func:`save_safetensors` writes a Hugging Face ``.safetensors`` file that
  ``transformers`` ``from_pretrained`` loads.

Which names to write is the mapping layer's business; these functions write
exactly the tensors they are given.
"""
import os

import numpy as np

from kerasformer.checkpoints.readers import _import_tensorflow

__all__ = ["save_tf_checkpoint", "save_safetensors"]


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

    Returns:
        The prefix (str).

    Raises:
        ImportError: tensorflow is not installed.
        TypeError: ``tensors`` is not a dict of str -> numeric arrays.
        ValueError: ``tensors`` is empty.
        RuntimeError: the written checkpoint does not list the expected
            names and shapes when read back.
    """
    prefix = os.path.expanduser(os.fspath(prefix))
    items = sorted(
        _check_tensors(tensors, "save_tf_checkpoint"), key=lambda item: item[0]
    )
    tf = _import_tensorflow(prefix)
    parent = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(parent, exist_ok=True)
    with tf.device("CPU:0"):
        tf.raw_ops.SaveV2(
            prefix=prefix,
            tensor_names=[name for name, _ in items],
            shape_and_slices=[""] * len(items),
            tensors=[tf.constant(_c_contiguous(a)) for _, a in items],
        )
    # Cheap sanity check from the index only (no tensor data is read).
    shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    expected = {name: list(a.shape) for name, a in items}
    if {k: list(v) for k, v in shapes.items()} != expected:
        raise RuntimeError(
            f"The TensorFlow checkpoint written at {prefix} does not read "
            "back with the expected names and shapes"
        )
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
            parent directories are created.
        metadata: dict[str, str] or None, the header's ``__metadata__``.
            Default ``{"format": "pt"}``, which ``transformers`` expects to
            load the file into a PyTorch model.

    Returns:
        The path (str).

    Raises:
        TypeError: ``tensors`` is not a dict of str -> numeric arrays, or
            ``metadata`` is not a dict of str -> str.
        ValueError: ``tensors`` is empty.
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(
        {name: _c_contiguous(a) for name, a in items},
        path,
        metadata=dict(metadata),
    )
    return path
