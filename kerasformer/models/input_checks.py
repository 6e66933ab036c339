"""Host-side checks of a model's id inputs (token, segment and position ids).

An id outside the embedding table is not an error inside a compiled program: JAX's gather
returns NaN rows (or clamps), XLA on TensorFlow clamps to the last row, and a negative id
wraps around. A sequence longer than the position table passes as soon as Keras relaxes
the traced shape. So every batch is checked on the host, in NumPy, before it reaches a
compiled function: :func:`check_inputs` for arrays, :func:`checked_data` for the data
given to ``fit``/``evaluate``/``predict`` (whole arrays once; generators, ``PyDataset``
and ``tf.data`` batch by batch).

What is checked comes from the model's graph, not from the builder: an input consumed by
an ``Embedding`` layer holds ids in ``[0, input_dim)``; an input consumed as the position
ids of a ``PositionEmbedding`` holds ids below its number of positions; when the model
has a ``PositionEmbedding`` computing positions itself, every id input is at most that
many tokens long. So the checks also hold for a ``TransformerModel`` a user builds around
a kerasformer model's layers.
"""
import numpy as np

import keras

_SPECS_ATTRIBUTE = "_kerasformer_id_inputs"


class IdInput:
    """One id input: its name and position among the model's inputs, the exclusive upper
    bound of its values (and the table that bound comes from), and the longest sequence
    the model accepts (None: no limit)."""

    def __init__(self, name, index, high, table, max_length=None):
        self.name, self.index, self.high, self.table = name, index, high, table
        self.max_length = max_length

    def check(self, value, where):
        """Raise ValueError if the concrete array `value` breaks this input's contract."""
        array = value if isinstance(value, np.ndarray) else np.asarray(value)
        if array.dtype.kind not in "iu":
            nan = " (it holds NaN)" if array.dtype.kind == "f" and np.isnan(array).any() else ""
            raise ValueError(
                f"{where}: input {self.name!r} must hold integer ids, got dtype "
                f"{array.dtype}{nan}; ids are never truncated or rounded, cast them first"
            )
        if self.max_length is not None and array.ndim >= 2 and array.shape[1] > self.max_length:
            raise ValueError(
                f"{where}: input {self.name!r} has sequence length {array.shape[1]}, which "
                f"exceeds the model's {self.max_length} positions (max_position_embeddings); "
                "truncate the input"
            )
        if array.size == 0:
            return
        if array.min() < 0 or array.max() >= self.high:
            bad = np.argwhere((array < 0) | (array >= self.high))[0]
            raise ValueError(
                f"{where}: input {self.name!r} holds id {array[tuple(bad)]} at index "
                f"{tuple(int(i) for i in bad)}, outside [0, {self.high}) ({self.table})"
            )


def id_inputs(model):
    """The :class:`IdInput` of every id input of a functional `model` (cached on it)."""
    specs = getattr(model, _SPECS_ATTRIBUTE, None)
    if specs is None:
        specs = _derive(model)
        object.__setattr__(model, _SPECS_ATTRIBUTE, specs)
    return specs


def _derive(model):
    from ..layers.embeddings import PositionEmbedding

    inputs = list(getattr(model, "inputs", None) or [])
    index_of = {id(t): i for i, t in enumerate(inputs)}
    bounds = {}
    max_length = None
    for layer in model._flatten_layers(include_self=False):
        for node in getattr(layer, "_inbound_nodes", []):
            tensors = list(node.input_tensors)
            if isinstance(layer, keras.layers.Embedding) and tensors:
                entry = (layer.input_dim, f"the vocabulary of {layer.name}")
                _tighten(bounds, index_of.get(id(tensors[0])), entry)
            elif isinstance(layer, PositionEmbedding):
                limit = layer._limit()
                if layer.custom_position_ids and len(tensors) > 1:
                    entry = (limit, f"the positions of {layer.name}")
                    _tighten(bounds, index_of.get(id(tensors[1])), entry)
                elif not layer.custom_position_ids:
                    max_length = limit if max_length is None else min(max_length, limit)
    return [
        IdInput(inputs[i].name, i, high, table, max_length)
        for i, (high, table) in sorted(bounds.items())
    ]


def _tighten(bounds, index, entry):
    if index is not None and (index not in bounds or entry[0] < bounds[index][0]):
        bounds[index] = entry


def _as_named(model, x, strict):
    """Map the structure `x` (one array, a list/tuple in input order, or a dict by input
    name) onto the model's input names; None when `x` does not match and not `strict`."""
    names = [t.name for t in model.inputs]
    if isinstance(x, dict):
        missing = [n for n in names if n not in x]
        if missing and strict:
            raise ValueError(f"missing model input(s) {missing}; the model takes {names}")
        return None if missing else {n: x[n] for n in names}
    if len(names) == 1:
        if isinstance(x, (list, tuple)) and len(x) == 1 and _is_array_like(x[0]):
            x = x[0]
        return {names[0]: x}
    if isinstance(x, (list, tuple)) and len(x) == len(names):
        return dict(zip(names, x))
    if strict:
        got = f"{len(x)} arrays" if isinstance(x, (list, tuple)) else "one array"
        raise ValueError(f"the model takes {len(names)} inputs {names}, got {got}")
    return None


def _is_array_like(value):
    return hasattr(value, "shape") or isinstance(value, (list, tuple))


def check_inputs(model, x, where, strict=True):
    """Check the concrete model inputs `x` against the model's id inputs.

    Args:
        model: a functional `keras.Model` (a :class:`TransformerModel`).
        x: the inputs as ``model(x)`` / ``predict(x)`` take them.
        where: the entry point named in the error (``"predict"``...).
        strict: raise for a structure that does not match the model's inputs, and for an
            empty batch (False: leave those to Keras, as an eager call may be legitimate).

    Raises:
        ValueError: naming the input, the bad value (and its index) and the allowed range,
            for non-integer (float, NaN) ids, ids outside ``[0, vocab)`` / ``[0, segments)``
            / ``[0, positions)``, a sequence longer than the position table, a missing
            input or (strict) an empty batch.
    """
    specs = id_inputs(model)
    if not specs:
        return
    named = _as_named(model, x, strict)
    if named is None:
        return
    for spec in specs:
        value = named[spec.name]
        if value is None:
            if strict:
                raise ValueError(f"{where}: input {spec.name!r} is None")
            continue
        if strict and np.size(value) == 0:
            raise ValueError(f"{where}: input {spec.name!r} is an empty batch "
                             f"(shape {np.shape(value)})")
        spec.check(value, where)


def concrete(x):
    """`x` as NumPy arrays (same structure), or None when any leaf is symbolic or traced
    (a KerasTensor, a JAX tracer, a tensor inside tf.function): then no host check runs
    and the caller's compiled function is responsible (Keras's loops are checked before)."""
    leaves = keras.tree.flatten(x)
    for leaf in leaves:
        if isinstance(leaf, keras.KerasTensor):
            return None
    try:
        return keras.tree.map_structure(
            lambda leaf: leaf if isinstance(leaf, np.ndarray) or leaf is None
            else np.asarray(leaf), x)
    except (TypeError, NotImplementedError, AttributeError, ValueError):
        # Tracers and graph tensors refuse conversion; so do exotic leaves Keras handles.
        return None


# ------------------------------------------------------------------ data for Keras's loops


def checked_data(model, data, where):
    """The `data` of ``fit``/``evaluate``/``predict`` (x, or a dataset of x / (x, y) /
    (x, y, w) batches), checked now when it is arrays and batch by batch otherwise.

    Returns the data to hand to Keras (a wrapped generator / PyDataset / tf.data.Dataset,
    or `data` itself)."""
    if data is None or not id_inputs(model):
        return data
    if isinstance(data, keras.utils.PyDataset):
        return _CheckedPyDataset(data, lambda batch: _check_batch(model, batch, where))
    if _is_tf_dataset(data):
        return _checked_tf_dataset(model, data, where)
    if _is_iterator(data):
        return _checked_generator(data, lambda batch: _check_batch(model, batch, where))
    check_inputs(model, data, where)
    return data


def _check_batch(model, batch, where):
    x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
    host = concrete(x)
    if host is not None:
        check_inputs(model, host, f"{where} (a batch of the data)")


def _is_iterator(data):
    return hasattr(data, "__next__") and hasattr(data, "__iter__")


def _checked_generator(generator, check):
    for batch in generator:
        check(batch)
        yield batch


class _CheckedPyDataset(keras.utils.PyDataset):
    """A `PyDataset` that checks each batch of another one as Keras fetches it."""

    def __init__(self, inner, check):
        super().__init__(workers=inner.workers, use_multiprocessing=inner.use_multiprocessing,
                         max_queue_size=inner.max_queue_size)
        self.inner, self.check = inner, check

    def __getitem__(self, index):
        batch = self.inner[index]
        self.check(batch)
        return batch

    @property
    def num_batches(self):
        return self.inner.num_batches

    def on_epoch_begin(self):
        self.inner.on_epoch_begin()

    def on_epoch_end(self):
        self.inner.on_epoch_end()


def _is_tf_dataset(data):
    module = type(data).__module__ or ""
    return module.startswith("tensorflow") and hasattr(data, "element_spec") and hasattr(
        data, "map")


def _checked_tf_dataset(model, dataset, where):
    """A tf.data pipeline runs on the host (never inside XLA), so its assertions are
    host-side checks; dtypes are checked now, from the element spec."""
    import tensorflow as tf  # the data is a tf.data.Dataset, so TensorFlow is there

    specs = id_inputs(model)

    def assert_batch(x):
        named = _as_named(model, x, strict=True)
        checked = dict(named)
        for spec in specs:
            t = named[spec.name]
            if not t.dtype.is_integer:
                raise ValueError(f"{where}: input {spec.name!r} must hold integer ids, got "
                                 f"dtype {t.dtype.name} in the tf.data.Dataset")
            message = f"{where}: input {spec.name!r} holds ids outside [0, {spec.high}) " \
                      f"({spec.table})"
            deps = [tf.debugging.assert_non_negative(t, message=message),
                    tf.debugging.assert_less(t, tf.cast(spec.high, t.dtype), message=message)]
            if spec.max_length is not None and t.shape.rank and t.shape.rank >= 2:
                deps.append(tf.debugging.assert_less_equal(
                    tf.shape(t)[1], spec.max_length,
                    message=f"{where}: input {spec.name!r} is longer than the model's "
                            f"{spec.max_length} positions; truncate the input"))
            with tf.control_dependencies(deps):
                checked[spec.name] = tf.identity(t)
        if isinstance(x, dict):
            return dict(x, **checked)
        values = [checked[t.name] for t in model.inputs]
        if len(values) == 1 and not isinstance(x, (list, tuple)):
            return values[0]
        return type(x)(values) if isinstance(x, tuple) else values

    def check_element(*element):
        # tf.data passes a tuple element as positional arguments: rebuild the same
        # structure ((x,), (x, y), (x, y, w) or a bare x) so Keras unpacks it as before.
        if not isinstance(dataset.element_spec, tuple):
            return assert_batch(element[0])
        return (assert_batch(element[0]),) + tuple(element[1:])

    return dataset.map(check_element)
