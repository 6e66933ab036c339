"""The `keras.Model` subclass that `build_transformer_model` returns.

It is a plain functional Keras model (same layers, weights, ``fit``/``predict``, ``.keras``
saving) with a place for kerasformer's own behaviour around Keras's entry points: input
validation before Keras's loops, restoring state after a failed call, and bert4keras-style
file names. Behaviour is added here as small methods, each documented where it is defined.
"""
import contextlib

import keras

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


def _deleted(array):
    is_deleted = getattr(array, "is_deleted", None)
    return bool(is_deleted()) if callable(is_deleted) else False
