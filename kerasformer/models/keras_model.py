"""The `keras.Model` subclass that `build_transformer_model` returns.

It is a plain functional Keras model (same layers, weights, ``fit``/``predict``, ``.keras``
saving) with a place for kerasformer's own behaviour around Keras's entry points: input
validation before Keras's loops, restoring state after a failed call, and bert4keras-style
file names. Behaviour is added here as small methods, each documented where it is defined.
"""
import contextlib
import os
import shutil
import tempfile
import warnings

import keras

from ..io_utils import atomic_write
from . import input_checks


@keras.saving.register_keras_serializable(package="kerasformer")
class TransformerModel(keras.Model):
    """A functional `keras.Model` built by a kerasformer :class:`Transformer` builder.

    Construct it like ``keras.Model(inputs, outputs, name=...)``.
    """

    # ------------------------------------------------------------------ input checks and
    # state safety around Keras's entry points (see input_checks.py and _state_guard).

    def __call__(self, *args, **kwargs):
        """Eager calls on concrete arrays check the id inputs on the host first (raises
        ValueError as :func:`input_checks.check_inputs`); symbolic and traced calls pass
        through unchanged."""
        inputs = args[0] if args else kwargs.get("inputs")
        host = input_checks.concrete(inputs)
        if host is not None:
            input_checks.check_inputs(self, host, "model call", strict=False)
        return super().__call__(*args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, with the id inputs checked on the host (all of `x` now,
        or every batch of a generator / PyDataset / tf.data.Dataset) and the model's
        state restored if anything fails.

        Raises:
            ValueError: for ids outside ``[0, vocab)`` / ``[0, segments)``, non-integer
                ids, a sequence longer than the position table, a missing input or an
                empty batch (input_checks.check_inputs); any other error as Keras.
        """
        with self._state_guard():
            x = input_checks.checked_data(self, x, "predict")
            return super().predict(x, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate` with the checks and state safety of :meth:`predict`."""
        with self._state_guard():
            x = input_checks.checked_data(self, x, "evaluate")
            return super().evaluate(x, y, *args, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` with the checks of :meth:`predict` (``validation_data``
        included). If it fails, every variable holds a valid value again: the weights of
        the last completed step (Keras's own rule, so an interrupted fit keeps its
        progress), or their values before the call when the failure came before any step.
        """
        with self._state_guard():
            x = input_checks.checked_data(self, x, "fit")
            validation = kwargs.get("validation_data")
            if validation is not None:
                if isinstance(validation, (list, tuple)):
                    validation = type(validation)(
                        [input_checks.checked_data(self, validation[0], "fit (validation)")]
                        + list(validation[1:]))
                else:
                    validation = input_checks.checked_data(
                        self, validation, "fit (validation)")
                kwargs["validation_data"] = validation
            return super().fit(x, y, *args, **kwargs)

    def predict_on_batch(self, x):
        """`keras.Model.predict_on_batch` with the checks and safety of :meth:`predict`."""
        with self._state_guard():
            input_checks.check_inputs(self, x, "predict_on_batch")
            return super().predict_on_batch(x)

    def test_on_batch(self, x, y=None, *args, **kwargs):
        """`keras.Model.test_on_batch` with the checks and safety of :meth:`predict`."""
        with self._state_guard():
            input_checks.check_inputs(self, x, "test_on_batch")
            return super().test_on_batch(x, y, *args, **kwargs)

    def train_on_batch(self, x, y=None, *args, **kwargs):
        """`keras.Model.train_on_batch` with the checks of :meth:`predict`; a failed call
        leaves every variable as it was."""
        with self._state_guard():
            input_checks.check_inputs(self, x, "train_on_batch")
            return super().train_on_batch(x, y, *args, **kwargs)

    @contextlib.contextmanager
    def _state_guard(self):
        """Keep every variable valid through a call that may fail.

        Keras 3.15's JAX ``predict``/``evaluate`` set the variables' values to None
        ("purge") before their loop and reattach them only on success, so one exception
        (a bad input, an interrupt) left the model unusable and ``save_weights`` failing.
        Here the values before the call are remembered (JAX arrays are immutable: no
        copy) and, on failure, Keras's own pending state is synced first (the last
        completed step), then any variable still empty gets its remembered value back.
        Variables created during the call (an optimizer built by its first ``fit``) that
        are left empty start again from zeros, their initial value.
        """
        if keras.backend.backend() != "jax":
            yield
            return
        if getattr(self, "_jax_state", None) is not None:
            # Anything pending belongs to an earlier call: attach it now, so it cannot be
            # mistaken for this call's state below.
            self.jax_state_sync()
            self._jax_state = None
        # With several steps per compiled call, a failure between them loses the state
        # Keras holds in a local variable after the earlier steps consumed (donated) the
        # arrays remembered here; keep private copies then.
        copy = getattr(self, "steps_per_execution", 1) > 1
        saved = {id(v): (keras.ops.copy(v.value) if copy else v.value)
                 for v in self._stateful_variables()}
        try:
            yield
        except BaseException:
            self._restore_state(saved)
            raise

    def _stateful_variables(self):
        variables = list(self.variables)
        optimizer = getattr(self, "optimizer", None)
        if optimizer is not None and getattr(optimizer, "built", False):
            variables += list(optimizer.variables)
        variables += list(getattr(self, "metrics_variables", []))
        return variables

    def _restore_state(self, saved):
        if getattr(self, "_jax_state", None) is not None:
            try:
                self.jax_state_sync()
            except Exception:  # noqa: BLE001  the arrays may have been donated; below
                pass
        self._jax_state = None
        self._jax_state_synced = True
        for v in self._stateful_variables():
            value = v._value
            if value is not None and not _deleted(value):
                continue
            old = saved.get(id(v))
            if old is not None and not _deleted(old):
                v.assign(old)
            else:
                v.assign(keras.ops.zeros(v.shape, v.dtype))


    # ------------------------------------------------------------------ file names

    def save_weights(self, filepath, overwrite=True, max_shard_size=None):
        """Save the weights in the Keras 3 ``.weights.h5`` format, under any file name.

        bert4keras scripts end with ``model.save_weights("best_model.weights")``, a name
        Keras 3 refuses. Here the Keras 3 file is written under exactly the given name
        (one warning says so for names not ending in ``.weights.h5``), so the same name
        round-trips through :meth:`load_weights`. The write goes to a temporary file in
        the same folder renamed into place: a failed write leaves an existing file as
        it was.

        Raises:
            FileExistsError: when ``overwrite=False`` and the file exists.
        """
        filepath = os.fspath(filepath)
        if max_shard_size is not None:  # sharded: several files, Keras's own naming
            return super().save_weights(filepath, overwrite, max_shard_size)
        if not str(filepath).endswith(_WEIGHTS_SUFFIX):
            _warn_legacy_name(filepath, "weights", _WEIGHTS_SUFFIX)
        _atomic_write(filepath, overwrite, _WEIGHTS_SUFFIX,
                      lambda tmp: super(TransformerModel, self).save_weights(tmp))

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Load weights saved by :meth:`save_weights` under any file name (or by Keras
        under its own names: ``.weights.h5``, ``.keras``, sharded ``.weights.json``,
        legacy Keras 2 ``.h5``)."""
        filepath = os.fspath(filepath)
        if str(filepath).endswith(_KERAS_SUFFIXES) or not os.path.isfile(filepath):
            return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)
        try:
            with _suffixed_alias(filepath, _WEIGHTS_SUFFIX) as alias:
                return super().load_weights(alias, skip_mismatch=skip_mismatch, **kwargs)
        except Exception:
            if str(filepath).endswith((".h5", ".hdf5")):  # a Keras 2 HDF5 file
                return super().load_weights(filepath, skip_mismatch=skip_mismatch,
                                            **kwargs)
            raise

    def save(self, filepath, overwrite=True, zipped=None, **kwargs):
        """Save the whole model in the Keras 3 ``.keras`` format, under any file name
        (``model.save("best_model.model")`` as in bert4keras scripts; one warning for
        names not ending in ``.keras``), atomically like :meth:`save_weights`. Load it
        with ``keras.models.load_model`` after renaming it to ``*.keras``.

        Raises:
            FileExistsError: when ``overwrite=False`` and the file exists.
        """
        filepath = os.fspath(filepath)
        if zipped is False or str(filepath).endswith((".h5", ".hdf5")):
            return super().save(filepath, overwrite=overwrite, zipped=zipped, **kwargs)
        if not str(filepath).endswith(".keras"):
            _warn_legacy_name(filepath, "model", ".keras")
        _atomic_write(filepath, overwrite, ".keras",
                      lambda tmp: super(TransformerModel, self).save(tmp, **kwargs))



def _deleted(array):
    is_deleted = getattr(array, "is_deleted", None)
    return bool(is_deleted()) if callable(is_deleted) else False



_WEIGHTS_SUFFIX = ".weights.h5"
_KERAS_SUFFIXES = (".weights.h5", ".keras", ".weights.json")


def _warn_legacy_name(filepath, what, suffix):
    warnings.warn(
        f"kerasformer: {filepath!r} is written in the Keras 3 {what} format (the contents "
        f"of a '{suffix}' file; Keras 3 itself only accepts names ending in '{suffix}')",
        stacklevel=3,
    )


def _atomic_write(filepath, overwrite, suffix, write):
    """Run ``write(tmp)`` on a temporary ``*{suffix}`` file next to `filepath`, then
    rename it onto `filepath` (:func:`kerasformer.io_utils.atomic_write`)."""
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists and overwrite=False")
    with atomic_write(filepath, suffix=suffix) as tmp:
        write(tmp)


@contextlib.contextmanager
def _suffixed_alias(filepath, suffix):
    """A temporary ``*{suffix}`` name for `filepath` (a symbolic link, or a copy where
    links are not allowed), since Keras picks the reader by the name's suffix."""
    folder = tempfile.mkdtemp(prefix="kerasformer-")
    alias = os.path.join(folder, "model" + suffix)
    try:
        try:
            os.symlink(os.path.abspath(filepath), alias)
        except OSError:
            shutil.copyfile(filepath, alias)
        yield alias
    finally:
        shutil.rmtree(folder, ignore_errors=True)
