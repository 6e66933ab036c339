"""bert4keras's ``backend`` module on Keras 3: ``keras``, ``K`` and the helper functions.

A ported script keeps ``from kerasformer.backend import keras, K, search_layer`` (was
``bert4keras.backend``). ``keras`` is Keras 3 itself (its ``Model`` builds a kerasformer
``TransformerModel``, see ``_keras_for_scripts``). ``K`` is a facade with the Keras 2
``keras.backend`` function names and *their* defaults and semantics, each forwarded to
``keras.ops`` / ``keras.config`` / ``keras.random`` (which run on JAX and TensorFlow):

- where Keras 2 and ``keras.ops`` differ, ``K`` follows Keras 2: ``K.l2_normalize(x,
  axis=None)`` normalises over all elements (``ops.normalize`` uses the last axis),
  ``K.cumsum(x)`` runs along axis 0 (``ops.cumsum`` flattens), ``K.switch`` lines a
  lower-rank condition up with the *leading* axes (``ops.where`` broadcasts from the
  right), ``K.transpose`` reverses all axes, ``K.dot``/``K.batch_dot`` contract the Keras 2
  axes, ``K.reshape(x, shape1, axis1, ...)`` is bert4keras's partial reshape;
- a name not listed here resolves to ``keras.ops.<name>`` (same arguments), then to
  ``keras.backend.<name>``; anything else raises ``AttributeError``;
- what Keras 3 removed raises :class:`NotImplementedError` naming the Keras 3 way:
  ``K.gradients``, ``K.function``, ``K.placeholder``, ``K.learning_phase``,
  ``K.set_learning_phase``, ``K.get_session``, ``K.set_session``, and ``K.in_train_phase``
  without an explicit ``training``.

``K.eval`` / ``K.get_value`` return numpy arrays of concrete tensors or variables and
``K.set_value`` assigns (Keras 3 variables are updated eagerly, as in tf.keras 2).

Source of the names and semantics: bert4keras ``backend.py`` and Keras 2.3
``keras/backend/tensorflow_backend.py`` (https://github.com/bojone/bert4keras).
"""
import math
import string

import keras
import keras as _keras  # Keras 3 itself; `keras` is rebound to the script facade below
import numpy as np
from keras import ops

from . import ops as _kf_ops
from .losses import multilabel_categorical_crossentropy as _mcce
from .losses import sparse_multilabel_categorical_crossentropy as _smcce
from .ops import gelu_erf, gelu_tanh, sequence_masking
from .optimizers import piecewise_linear

__all__ = [
    "keras",
    "K",
    "is_tf_keras",
    "gelu_erf",
    "gelu_tanh",
    "set_gelu",
    "infinity",
    "set_infinity",
    "piecewise_linear",
    "search_layer",
    "align",
    "reshape",
    "flatten",
    "sequence_masking",
    "batch_gather",
    "root_mean_square",
    "swish",
    "leaky_relu",
    "attention_normalize",
    "apply_rotary_position_embeddings",
    "multilabel_categorical_crossentropy",
    "sparse_multilabel_categorical_crossentropy",
    "symbolic",
    "recompute_grad",
    "get_available_gpus",
]

# bert4keras switched between keras and tf.keras with TF_KERAS; there is only Keras 3 now.
is_tf_keras = False

_INFINITY = [1e12]


# ---------------------------------------------------------------------------------------
# bert4keras helper functions
# ---------------------------------------------------------------------------------------
def set_gelu(version):
    """Choose what ``hidden_act: "gelu"`` means for models built afterwards (bert4keras).

    Args:
        version: ``"erf"`` (exact GELU, the default; Hugging Face's ``"gelu"``) or
            ``"tanh"`` (the approximation of Google's TF BERT), arXiv:1606.08415.

    Raises:
        ValueError: for another version.

    Layers already built keep their function; ``"gelu_new"``/``"gelu_erf"`` are unaffected.
    """
    version = str(version).lower()
    if version not in ("erf", "tanh"):
        raise ValueError(f"gelu version must be 'erf' or 'tanh', got {version!r}")
    # The activation registry of kerasformer.ops is the one place config names resolve.
    _kf_ops._ACTIVATIONS["gelu"] = gelu_erf if version == "erf" else gelu_tanh


def infinity():
    """The large finite value bert4keras uses for "infinity" in masks (default 1e12)."""
    return _INFINITY[0]


def set_infinity(value):
    """Set the value returned by :func:`infinity`."""
    _INFINITY[0] = value


def search_layer(inputs, name, exclude_from=None):
    """Find the layer called ``name`` upstream of ``inputs`` (bert4keras ``search_layer``).

    Args:
        inputs: a layer, a model, or a symbolic tensor produced by a layer.
        name: the layer name, e.g. ``"Embedding-Token"``.
        exclude_from: set of layers already visited (internal).

    Returns:
        The layer, or None when no layer of that name feeds ``inputs``. Nested models are
        searched too.
    """
    if exclude_from is None:
        exclude_from = set()
    if isinstance(inputs, keras.layers.Layer):
        layer = inputs
    else:
        history = getattr(inputs, "_keras_history", None)
        if history is None:
            return None
        layer = history[0]
    if layer.name == name:
        return layer
    if id(layer) in exclude_from:
        return None
    exclude_from.add(id(layer))
    if isinstance(layer, _keras.Model):
        for sub in layer.layers:
            if sub.name == name:
                return sub
    for node in getattr(layer, "_inbound_nodes", [])[:1]:
        for parent in node.parent_nodes:
            found = search_layer(parent.operation, name, exclude_from)
            if found is not None:
                return found
    return None


def align(tensor, axes, ndim=None):
    """Insert size-1 axes so that axis ``i`` of ``tensor`` lands at ``axes[i]`` (bert4keras).

    Args:
        tensor: tensor of rank ``len(axes)``.
        axes: target positions (negative ones count from ``ndim``).
        ndim: rank of the result (default ``max(axes) + 1``).
    """
    if len(axes) != len(tensor.shape):
        raise ValueError(f"align: {len(axes)} axes for a rank-{len(tensor.shape)} tensor")
    ndim = ndim or max(axes) + 1
    index = [None] * ndim
    for axis in axes:
        index[axis] = slice(None)
    return tensor[tuple(index)]


def reshape(tensor, *args):
    """``reshape(x, shape)``, or bert4keras's partial form ``reshape(x, shape1, axis1, ...)``
    that replaces axis ``axis1`` by the dims ``shape1`` (one of them may be -1)."""
    if len(args) == 1:
        return ops.reshape(tensor, args[0])
    if len(args) % 2:
        raise ValueError("reshape(x, shape1, axis1, shape2, axis2, ...) takes pairs")
    dynamic = ops.shape(tensor)
    shape = [[d] for d in dynamic]
    for dims, axis in zip(args[::2], args[1::2]):
        dims = list(dims)
        if dims.count(-1) > 1:
            raise ValueError(f"at most one -1 in {dims}")
        if -1 in dims:
            known = int(np.prod([d for d in dims if d != -1]))
            dims[dims.index(-1)] = shape[axis][0] // known
        shape[axis] = dims
    return ops.reshape(tensor, [d for dims in shape for d in dims])


def flatten(tensor, start=None, end=None):
    """Merge the axes ``[start, end)`` of ``tensor`` into one (bert4keras ``flatten``)."""
    dims = list(ops.shape(tensor))
    start, end = start or 0, end or len(dims)
    merged = 1
    for d in dims[start:end]:
        merged = merged * d
    return ops.reshape(tensor, dims[:start] + [merged] + dims[end:])


def batch_gather(params, indices):
    """``params[b, ..., indices[b, ..., j]]``: gather along the last axis of ``params``
    with the leading axes of ``indices`` as batch axes (``tf.gather(batch_dims=ndim-1)``).

    Args:
        params: tensor [batch..., n, ...]; indices: int tensor [batch..., k].
    Returns:
        tensor [batch..., k, ...] in ``params``'s dtype.
    """
    if "int" not in keras.backend.standardize_dtype(indices.dtype):
        indices = ops.cast(indices, "int32")
    batch_dims = len(indices.shape) - 1
    extra = len(params.shape) - batch_dims - 1
    index = ops.reshape(indices, tuple(ops.shape(indices)) + (1,) * extra)
    if extra:
        target = tuple(ops.shape(indices)) + tuple(ops.shape(params)[batch_dims + 1:])
        index = ops.broadcast_to(index, target)
    return ops.take_along_axis(params, index, axis=batch_dims)


def root_mean_square(x, axis=None, keepdims=False):
    """``sqrt(mean(x**2))`` over ``axis``."""
    return ops.sqrt(ops.mean(ops.square(x), axis=axis, keepdims=keepdims))


def swish(x):
    """``x * sigmoid(x)`` (SiLU)."""
    return ops.silu(x)


def leaky_relu(x, alpha=0.2):
    """Leaky ReLU with slope ``alpha`` for negative inputs."""
    return ops.leaky_relu(x, negative_slope=alpha)


def attention_normalize(a, axis=-1, method="softmax"):
    """Normalise attention scores (bert4keras): ``softmax``; ``squared_relu``
    (relu(a)^2 / n, arXiv:2202.10447); ``softmax_plus`` (softmax(a * log n / log 512),
    kexue.fm/archives/8823), ``n`` the number of unmasked keys (scores > -inf/10)."""
    if method == "softmax":
        return ops.softmax(a, axis=axis)
    mask = ops.cast(a > -infinity() / 10, a.dtype)
    n = ops.maximum(ops.sum(mask, axis=axis, keepdims=True), 1)
    if method == "squared_relu":
        return ops.square(ops.relu(a)) / n
    if method == "softmax_plus":
        return ops.softmax(a * ops.log(n) / math.log(512), axis=axis)
    return a


def apply_rotary_position_embeddings(sinusoidal, *tensors):
    """bert4keras's RoPE: rotate adjacent pairs (2i, 2i+1) of each tensor.

    Args:
        sinusoidal: [batch, seq, dim] with sin at even and cos at odd positions.
        tensors: [batch, seq, ..., dim] each.
    Returns:
        one tensor or a list, as many as given (arXiv:2104.09864).
    """
    if not tensors:
        raise ValueError("apply_rotary_position_embeddings needs at least one tensor")
    ndim = len(tensors[0].shape)
    sinusoidal = align(sinusoidal, [0, 1, -1], ndim)
    cos = ops.repeat(sinusoidal[..., 1::2], 2, axis=-1)
    sin = ops.repeat(sinusoidal[..., ::2], 2, axis=-1)
    outputs = []
    for x in tensors:
        rotated = ops.reshape(ops.stack([-x[..., 1::2], x[..., ::2]], axis=-1), ops.shape(x))
        outputs.append(x * ops.cast(cos, x.dtype) + rotated * ops.cast(sin, x.dtype))
    return outputs[0] if len(outputs) == 1 else outputs


def multilabel_categorical_crossentropy(y_true, y_pred):
    """bert4keras's name for :func:`kerasformer.losses.multilabel_categorical_crossentropy`
    (kexue.fm/archives/7359)."""
    return _mcce(y_true, y_pred)


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False):
    """bert4keras's name for
    :func:`kerasformer.losses.sparse_multilabel_categorical_crossentropy`."""
    return _smcce(y_true, y_pred, mask_zero=mask_zero)


def symbolic(f):
    """Identity decorator (bert4keras kept it for old Keras versions)."""
    return f


def recompute_grad(call):
    """bert4keras's ``RECOMPUTE=1`` decorator for a layer's ``call``: rematerialise the
    call in the backward pass (``keras.remat``; arXiv:1604.06174). kerasformer models use
    ``build_transformer_model(..., gradient_checkpointing=True)`` instead."""

    def inner(self, inputs, **kwargs):
        return keras.remat(lambda x: call(self, x, **kwargs))(inputs)

    return inner


def get_available_gpus():
    """Names of the GPU devices Keras sees (``keras.distribution.list_devices("gpu")``)."""
    try:
        return keras.distribution.list_devices("gpu")
    except Exception:  # no GPU platform at all
        return []


# ---------------------------------------------------------------------------------------
# K: the Keras 2 backend names
# ---------------------------------------------------------------------------------------
def _removed(name, instead):
    def removed(*args, **kwargs):
        raise NotImplementedError(f"K.{name} does not exist in Keras 3: {instead}")

    removed.__name__ = name
    return removed


def _static_shape(x):
    return tuple(None if d is None else int(d) for d in x.shape)


def _to_numpy(x):
    if isinstance(x, keras.Variable):
        return np.asarray(x.numpy())
    return np.asarray(ops.convert_to_numpy(x))


def _relu(x, alpha=0.0, max_value=None, threshold=0.0):
    if alpha == 0.0 and max_value is None and threshold == 0.0:
        return ops.relu(x)
    return keras.activations.relu(
        x, negative_slope=alpha, max_value=max_value, threshold=threshold
    )


def _l2_normalize(x, axis=None):
    # tf.math.l2_normalize: x / sqrt(max(sum(x^2), 1e-12)); axis=None = all elements.
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, 1e-12))


def _switch(condition, then_expression, else_expression):
    then_value = then_expression() if callable(then_expression) else then_expression
    else_value = else_expression() if callable(else_expression) else else_expression
    condition = ops.cast(condition, "bool")
    rank = max(len(getattr(then_value, "shape", ())), len(getattr(else_value, "shape", ())))
    cond_rank = len(condition.shape)
    if 0 < cond_rank < rank:
        # Keras 2 lines the condition up with the leading axes.
        condition = ops.reshape(condition, tuple(ops.shape(condition)) + (1,) * (rank - cond_rank))
    return ops.where(condition, then_value, else_value)


def _dot(x, y):
    if len(y.shape) <= 2:
        return ops.matmul(x, y)
    # Keras 2: contract x's last axis with y's second-to-last.
    return ops.tensordot(x, y, axes=[[len(x.shape) - 1], [len(y.shape) - 2]])


def _batch_dot(x, y, axes=None):
    x_ndim, y_ndim = len(x.shape), len(y.shape)
    if axes is None:
        axes = [x_ndim - 1, y_ndim - 1 if y_ndim == 2 else y_ndim - 2]
    elif isinstance(axes, int):
        axes = [axes, axes]
    axes = [axes[0] % x_ndim, axes[1] % y_ndim]
    letters = iter(string.ascii_lowercase[2:])
    x_sub, y_sub = ["a"] + [None] * (x_ndim - 1), ["a"] + [None] * (y_ndim - 1)
    x_sub[axes[0]] = y_sub[axes[1]] = "b"
    x_sub = [s or next(letters) for s in x_sub]
    y_sub = [s or next(letters) for s in y_sub]
    out = ["a"] + [s for s in x_sub[1:] if s != "b"] + [s for s in y_sub[1:] if s != "b"]
    result = ops.einsum(f"{''.join(x_sub)},{''.join(y_sub)}->{''.join(out)}", x, y)
    if len(out) == 1:  # Keras 2 returns [batch, 1] for two matrices
        result = ops.expand_dims(result, 1)
    return result


def _in_train_phase(x, alt, training=None):
    if training is None:
        raise NotImplementedError(
            "K.in_train_phase without `training`: Keras 3 has no global learning phase. "
            "Take a `training` argument in your layer's call() and use "
            "`x if training else alt` (or pass training= here)."
        )
    if isinstance(training, (bool, int)):
        chosen = x if training else alt
        return chosen() if callable(chosen) else chosen
    return _switch(training, x, alt)


def _random_binomial(shape, p=0.0, dtype=None, seed=None):
    dtype = dtype or keras.config.floatx()
    uniform = keras.random.uniform(shape, seed=seed)
    return ops.cast(ops.less(uniform, p), dtype)


def _update(x, new_x):
    x.assign(new_x)
    return x


def _update_add(x, increment):
    x.assign_add(increment)
    return x


def _update_sub(x, decrement):
    x.assign_sub(decrement)
    return x


class _Backend:
    """``K``: Keras 2 backend names over Keras 3 (see the module docstring)."""

    # shapes and dtypes
    shape = staticmethod(ops.shape)
    int_shape = staticmethod(_static_shape)
    ndim = staticmethod(lambda x: len(x.shape))
    dtype = staticmethod(lambda x: keras.backend.standardize_dtype(x.dtype))
    cast = staticmethod(ops.cast)
    floatx = staticmethod(keras.config.floatx)
    set_floatx = staticmethod(keras.config.set_floatx)
    epsilon = staticmethod(keras.config.epsilon)
    set_epsilon = staticmethod(keras.config.set_epsilon)
    image_data_format = staticmethod(keras.config.image_data_format)
    backend = staticmethod(keras.backend.backend)
    clear_session = staticmethod(keras.backend.clear_session)
    is_keras_tensor = staticmethod(keras.backend.is_keras_tensor)
    is_tensor = staticmethod(ops.is_tensor)
    name_scope = staticmethod(keras.name_scope)
    count_params = staticmethod(lambda x: int(np.prod(_static_shape(x))))
    # values
    eval = staticmethod(_to_numpy)
    get_value = staticmethod(_to_numpy)
    batch_get_value = staticmethod(lambda xs: [_to_numpy(x) for x in xs])
    set_value = staticmethod(lambda x, value: x.assign(value))
    batch_set_value = staticmethod(lambda pairs: [x.assign(v) for x, v in pairs] and None)
    variable = staticmethod(
        lambda value, dtype=None, name=None: keras.Variable(value, dtype=dtype, name=name)
    )
    constant = staticmethod(
        lambda value, dtype=None, shape=None: (
            ops.full(shape, value, dtype=dtype) if shape is not None
            else ops.convert_to_tensor(value, dtype=dtype)
        )
    )
    update = staticmethod(_update)
    update_add = staticmethod(_update_add)
    update_sub = staticmethod(_update_sub)
    # reductions (Keras 2 argument order and defaults)
    sum = staticmethod(lambda x, axis=None, keepdims=False: ops.sum(x, axis, keepdims))
    mean = staticmethod(lambda x, axis=None, keepdims=False: ops.mean(x, axis, keepdims))
    max = staticmethod(lambda x, axis=None, keepdims=False: ops.max(x, axis, keepdims))
    min = staticmethod(lambda x, axis=None, keepdims=False: ops.min(x, axis, keepdims))
    prod = staticmethod(lambda x, axis=None, keepdims=False: ops.prod(x, axis, keepdims))
    std = staticmethod(lambda x, axis=None, keepdims=False: ops.std(x, axis, keepdims))
    var = staticmethod(lambda x, axis=None, keepdims=False: ops.var(x, axis, keepdims))
    any = staticmethod(lambda x, axis=None, keepdims=False: ops.any(x, axis, keepdims))
    all = staticmethod(lambda x, axis=None, keepdims=False: ops.all(x, axis, keepdims))
    logsumexp = staticmethod(
        lambda x, axis=None, keepdims=False: ops.logsumexp(x, axis, keepdims)
    )
    argmax = staticmethod(lambda x, axis=-1: ops.argmax(x, axis))
    argmin = staticmethod(lambda x, axis=-1: ops.argmin(x, axis))
    cumsum = staticmethod(lambda x, axis=0: ops.cumsum(x, axis))
    cumprod = staticmethod(lambda x, axis=0: ops.cumprod(x, axis))
    l2_normalize = staticmethod(_l2_normalize)
    # element-wise
    pow = staticmethod(ops.power)
    clip = staticmethod(
        lambda x, min_value=None, max_value=None: ops.clip(
            x,
            -np.inf if min_value is None else min_value,
            np.inf if max_value is None else max_value,
        )
    )
    relu = staticmethod(_relu)
    softmax = staticmethod(lambda x, axis=-1: ops.softmax(x, axis=axis))
    switch = staticmethod(_switch)
    in_train_phase = staticmethod(_in_train_phase)
    in_test_phase = staticmethod(lambda x, alt, training=None: _in_train_phase(alt, x, training))
    # shapes of tensors
    reshape = staticmethod(reshape)
    flatten = staticmethod(flatten)
    batch_flatten = staticmethod(lambda x: ops.reshape(x, (ops.shape(x)[0], -1)))
    concatenate = staticmethod(lambda tensors, axis=-1: ops.concatenate(tensors, axis=axis))
    stack = staticmethod(lambda x, axis=0: ops.stack(x, axis=axis))
    expand_dims = staticmethod(lambda x, axis=-1: ops.expand_dims(x, axis))
    permute_dimensions = staticmethod(lambda x, pattern: ops.transpose(x, pattern))
    transpose = staticmethod(lambda x: ops.transpose(x))
    repeat_elements = staticmethod(lambda x, rep, axis: ops.repeat(x, rep, axis=axis))
    repeat = staticmethod(lambda x, n: ops.repeat(ops.expand_dims(x, 1), n, axis=1))
    tile = staticmethod(ops.tile)
    gather = staticmethod(lambda reference, indices: ops.take(reference, indices, axis=0))
    one_hot = staticmethod(lambda indices, num_classes: ops.one_hot(indices, num_classes))
    arange = staticmethod(
        lambda start, stop=None, step=1, dtype="int32": ops.arange(start, stop, step, dtype=dtype)
    )
    dot = staticmethod(_dot)
    batch_dot = staticmethod(_batch_dot)
    # losses (Keras 2 order: target, output)
    categorical_crossentropy = staticmethod(
        lambda target, output, from_logits=False, axis=-1: ops.categorical_crossentropy(
            target, output, from_logits=from_logits, axis=axis
        )
    )
    sparse_categorical_crossentropy = staticmethod(
        lambda target, output, from_logits=False, axis=-1: ops.sparse_categorical_crossentropy(
            target, output, from_logits=from_logits, axis=axis
        )
    )
    binary_crossentropy = staticmethod(
        lambda target, output, from_logits=False: ops.binary_crossentropy(
            target, output, from_logits=from_logits
        )
    )
    # random
    random_uniform = staticmethod(
        lambda shape, minval=0.0, maxval=1.0, dtype=None, seed=None: keras.random.uniform(
            shape, minval, maxval, dtype=dtype, seed=seed
        )
    )
    random_normal = staticmethod(
        lambda shape, mean=0.0, stddev=1.0, dtype=None, seed=None: keras.random.normal(
            shape, mean, stddev, dtype=dtype, seed=seed
        )
    )
    random_binomial = staticmethod(_random_binomial)
    random_bernoulli = staticmethod(_random_binomial)
    dropout = staticmethod(
        lambda x, level, noise_shape=None, seed=None: keras.random.dropout(
            x, level, noise_shape=noise_shape, seed=seed
        )
    )
    # bert4keras additions to K
    infinity = staticmethod(infinity)
    set_infinity = staticmethod(set_infinity)
    symbolic = staticmethod(symbolic)
    # removed in Keras 3
    gradients = staticmethod(_removed(
        "gradients",
        "compute gradients in a train step (jax.grad / tf.GradientTape), or use "
        "kerasformer.training (adversarial_training, gradient_penalty...).",
    ))
    function = staticmethod(_removed(
        "function",
        "build keras.Model(inputs, outputs) and call model.predict(x) or model(x).",
    ))
    placeholder = staticmethod(_removed("placeholder", "use keras.Input(shape, dtype)."))
    learning_phase = staticmethod(_removed(
        "learning_phase", "layers receive `training` in call(); model(x, training=True).",
    ))
    set_learning_phase = staticmethod(_removed(
        "set_learning_phase", "pass training=True/False to model(x, training=...).",
    ))
    get_session = staticmethod(_removed("get_session", "Keras 3 has no sessions."))
    set_session = staticmethod(_removed("set_session", "Keras 3 has no sessions."))

    def __getattr__(self, name):
        for namespace in (ops, keras.backend):
            if not name.startswith("_") and hasattr(namespace, name):
                return getattr(namespace, name)
        raise AttributeError(
            f"K.{name} has no Keras 3 counterpart in kerasformer.backend.K; "
            "see docs/migrating_from_bert4keras.md"
        )

    def __dir__(self):
        return sorted(set(dir(type(self))) | {n for n in dir(ops) if not n.startswith("_")})


K = _Backend()


def _keras_for_scripts():
    """``keras`` as ported scripts see it: Keras 3 itself, except that ``keras.Model`` and
    ``keras.models.Model`` are :class:`kerasformer.models.keras_model.TransformerModel` (a
    `keras.Model` subclass). A script's own model around ``bert.model.output`` then keeps
    the last line of most bert4keras scripts, ``model.save_weights("best_model.weights")``
    (Keras 3 refuses that name), and gets the id checks and failure safety of the models
    kerasformer builds. A subclassed model (``class M(keras.Model)`` with its own ``call``)
    has no functional inputs, so the checks find nothing to check and Keras runs as usual.
    """
    import types

    from .models.keras_model import TransformerModel

    class Model(keras.Model):
        """`keras.Model`; built functionally (``Model(inputs, outputs)``) it is a
        :class:`TransformerModel`, subclassed it is Keras's own."""

        def __new__(cls, *args, **kwargs):
            functional = len(args) + ("inputs" in kwargs) + ("outputs" in kwargs) >= 2
            if cls is Model and functional:
                return TransformerModel(*args, **kwargs)
            return super().__new__(cls, *args, **kwargs)

    models = types.ModuleType(keras.models.__name__, keras.models.__doc__)
    models.__dict__.update(vars(keras.models))
    models.Model = Model
    facade = types.ModuleType(keras.__name__, keras.__doc__)
    facade.__dict__.update(vars(keras))
    facade.Model = Model
    facade.models = models
    return facade


keras = _keras_for_scripts()
