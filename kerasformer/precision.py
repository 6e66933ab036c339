"""One switch for the precision of float32 matrix multiplications on accelerators.

On GPUs and TPUs the backends do not compute float32 matmuls in full float32 by default:
JAX uses its ``"default"`` precision (TF32 on NVIDIA Ampere+, bf16 passes on TPU) and
TensorFlow enables TensorFloat-32 on Ampere+. That is fast but inexact: bert-base hidden
states on an H200 differed from ``transformers`` by 2.5e-3 at JAX's default and by 6.9e-6
at ``"highest"`` (shared/measurements/2026-12-04-h200.md). CPUs compute float32 exactly
either way. This module is backend plumbing, so it calls the backends directly.

    import kerasformer
    kerasformer.set_float32_matmul_precision("highest")   # exact float32
    with kerasformer.float32_matmul_precision("highest"):  # only inside the block
        ...

JAX reads the setting when a function is traced: jitted functions (``predict``, ``fit``)
traced under one setting are retraced under another.
"""
import contextlib

import keras

PRECISIONS = ("highest", "default")


def _check(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def get_float32_matmul_precision():
    """The current setting of the active Keras backend: ``"highest"`` or ``"default"``
    (JAX: ``jax_default_matmul_precision`` is ``"highest"``/``"float32"``; TensorFlow:
    TensorFloat-32 execution disabled; torch: ``torch.get_float32_matmul_precision()``
    is ``"highest"``)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value = jax.config.jax_default_matmul_precision
        return "highest" if value in ("highest", "float32", "HIGHEST") else "default"
    if backend == "tensorflow":
        import tensorflow as tf

        enabled = tf.config.experimental.tensor_float_32_execution_enabled()
        return "default" if enabled else "highest"
    if backend == "torch":
        import torch

        value = torch.get_float32_matmul_precision()
        return "highest" if value == "highest" else "default"
    return "highest"  # numpy: always exact


def set_float32_matmul_precision(precision):
    """Set how float32 matmuls run on accelerators, for the active Keras backend.

    Args:
        precision: ``"highest"`` (exact float32: JAX
            ``jax_default_matmul_precision="highest"``, TensorFlow
            ``enable_tensor_float_32_execution(False)``, torch
            ``set_float32_matmul_precision("highest")``) or ``"default"`` (the
            backend's fast default: JAX unset, TF32 enabled, torch ``"high"``).

    Returns:
        The previous setting (``"highest"`` or ``"default"``).

    Raises:
        ValueError: for any other value, naming the allowed ones.
    """
    _check(precision)
    previous = get_float32_matmul_precision()
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision",
                          "highest" if precision == "highest" else None)
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(precision != "highest")
    elif backend == "torch":
        import torch

        torch.set_float32_matmul_precision("highest" if precision == "highest" else "high")
    return previous


@contextlib.contextmanager
def float32_matmul_precision(precision):
    """Context manager: :func:`set_float32_matmul_precision` inside the block, the
    previous setting restored after it (also on an exception)."""
    previous = set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        set_float32_matmul_precision(previous)
