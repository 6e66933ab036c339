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


@keras.saving.register_keras_serializable(package="kerasformer")
class TransformerModel(keras.Model):
    """A functional `keras.Model` built by a kerasformer :class:`Transformer` builder.

    Construct it like ``keras.Model(inputs, outputs, name=...)``.
    """

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
    rename it onto `filepath` (the same file system, so the rename is atomic)."""
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists and overwrite=False")
    folder = os.path.dirname(os.path.abspath(filepath))
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=".tmp-", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, filepath)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


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
