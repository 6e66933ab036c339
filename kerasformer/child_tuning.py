"""ChildTuning-D's mask: the Fisher information of each weight and the top-``p`` child
network (Xu et al. 2021, arXiv:2109.05687; kexue.fm/archives/8764). The optimizer side is
:func:`kerasformer.optimizers.extend_with_child_tuning`."""
import keras
import numpy as np
from keras import ops

__all__ = ["fisher_information", "child_tuning_masks"]


def _variable_path(variable):
    return getattr(variable, "path", None) or variable.name


def _gradients(model, loss_fn, x, y):
    """Gradients of ``loss_fn(y, model(x))`` w.r.t. ``model.trainable_variables``, as
    numpy arrays (JAX: ``jax.grad`` of a stateless call; TensorFlow: ``GradientTape``)."""
    variables = model.trainable_variables
    if keras.backend.backend() == "jax":
        import jax

        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(params):
            y_pred, _ = model.stateless_call(params, non_trainable, x, training=False)
            return loss_fn(y, y_pred)

        grads = jax.grad(loss)([v.value for v in variables])
    elif keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = loss_fn(y, model(x, training=False))
        grads = [None if g is None else tf.convert_to_tensor(g)
                 for g in tape.gradient(value, variables)]
    else:
        raise NotImplementedError("fisher_information supports the JAX and TensorFlow backends")
    return [np.zeros(tuple(v.shape), "float64") if g is None
            else ops.convert_to_numpy(g).astype("float64") for g, v in zip(grads, variables)]


def fisher_information(model, loss_fn, batches, variable_filter=None):
    """The (empirical, diagonal) Fisher information of each trainable weight as the
    authors' code estimates it: the mean over ``batches`` of the squared gradient of the
    batch loss.

    Args:
        model: a built ``keras.Model``.
        loss_fn: ``loss_fn(y_true, y_pred) -> scalar`` (keras.ops).
        batches: iterable of ``(x, y)``.
        variable_filter: None, or a regular expression searched in variable paths: only
            matching variables are returned (the paper masks the encoder only, e.g.
            ``r"Transformer-\\d+-"``).

    Returns:
        dict ``{variable path: float64 array of the variable's shape}``.

    Raises:
        ValueError: ``batches`` is empty.
    """
    import re

    pattern = re.compile(variable_filter) if variable_filter else None
    total, count = None, 0
    for x, y in batches:
        squares = [g * g for g in _gradients(model, loss_fn, x, y)]
        total = squares if total is None else [t + s for t, s in zip(total, squares)]
        count += 1
    if not count:
        raise ValueError("fisher_information: no batches")
    return {
        _variable_path(v): t / count
        for v, t in zip(model.trainable_variables, total)
        if pattern is None or pattern.search(_variable_path(v))
    }


def child_tuning_masks(fisher, reserve_p):
    """ChildTuning-D's child network: keep the weights whose Fisher information is in the
    top ``reserve_p`` fraction of all the given weights together (one threshold, the
    ``(1 - reserve_p)`` percentile, as the authors' code does).

    Args:
        fisher: dict ``{path: array}`` from :func:`fisher_information`.
        reserve_p: float in (0, 1], the paper's ``p_D``.

    Returns:
        dict ``{path: float32 0/1 array}``, the ``gradient_masks`` of
        :func:`~kerasformer.optimizers.extend_with_child_tuning` (``child_tuning_mode="D"``).

    Raises:
        ValueError: ``reserve_p`` out of range or ``fisher`` empty.
    """
    if not 0.0 < float(reserve_p) <= 1.0:
        raise ValueError(f"reserve_p must be in (0, 1], got {reserve_p!r}")
    if not fisher:
        raise ValueError("child_tuning_masks: fisher is empty")
    values = np.concatenate([np.ravel(v) for v in fisher.values()])
    threshold = np.percentile(values, (1.0 - float(reserve_p)) * 100.0)
    return {path: (np.asarray(v) >= threshold).astype("float32") for path, v in fisher.items()}
