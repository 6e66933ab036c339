"""Backend-neutral numerics on `keras.ops`: activations, masks and position encodings.

Everything here works on the JAX and TensorFlow backends, inside `jit`/XLA and on
symbolic Keras tensors. Nothing here holds weights.
"""
import math

import keras
from keras import ops

# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="kerasformer")
def gelu_erf(x):
    """Exact GELU, `x * Phi(x)` with the normal CDF via erf (Hendrycks & Gimpel,
    arXiv:1606.08415). This is Hugging Face's ``"gelu"``."""
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


@keras.saving.register_keras_serializable(package="kerasformer")
def gelu_tanh(x):
    """Tanh approximation of GELU (arXiv:1606.08415, eq. 3): Google's original TF BERT,
    GPT-2, and Hugging Face's ``"gelu_new"`` / ``"gelu_pytorch_tanh"``."""
    return 0.5 * x * (1.0 + ops.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


@keras.saving.register_keras_serializable(package="kerasformer")
def relu2(x):
    return ops.square(ops.relu(x))


# Names accepted in configs (`hidden_act`) -> function. Keys are Hugging Face's
# ACT2FN names where one exists, so a `config.json` maps exactly.
_ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_erf": gelu_erf,
    "gelu_python": gelu_erf,
    "gelu_new": gelu_tanh,
    "gelu_tanh": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "relu": ops.relu,
    "relu2": relu2,
    "swish": ops.silu,
    "silu": ops.silu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "softmax": ops.softmax,
    "linear": keras.activations.linear,
}


def get_activation(name):
    """Return the activation function for a config name.

    Args:
        name: a string such as ``"gelu"`` (exact erf), ``"gelu_new"`` (tanh), ``"relu"``,
            ``"swish"``, ``"linear"``; a callable is returned unchanged; None means linear.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name is None:
        return _ACTIVATIONS["linear"]
    if callable(name):
        return name
    key = str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"Unknown activation {name!r}; known: {sorted(_ACTIVATIONS)}"
        )
    return _ACTIVATIONS[key]


# ---------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------


def large_negative(dtype):
    """The additive value used for masked attention logits in `dtype`: finite, so a row
    whose keys are all masked yields a uniform softmax instead of NaN, and far below any
    real logit (-1e9 in float32, the dtype's own minimum / 2 in float16/bfloat16)."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype in ("float16", "bfloat16"):
        return -3.0e4 if dtype == "float16" else -1.0e30
    return -1.0e9


def padding_mask(token_ids, pad_id=0):
    """Key-padding mask.

    Args:
        token_ids: int tensor [batch, seq_len].
        pad_id: the padding token id.
    Returns:
        bool tensor [batch, 1, 1, seq_len], True where the key may be attended.
    """
    mask = ops.not_equal(token_ids, pad_id)
    return mask[:, None, None, :]


def causal_mask(query_len, key_len=None, offset=0):
    """Lower-triangular mask for causal (GPT-style) attention.

    Query i (at absolute position ``offset + i``) sees keys ``j <= offset + i``.

    Returns:
        bool tensor [1, 1, query_len, key_len].
    """
    key_len = query_len if key_len is None else key_len
    q = ops.arange(query_len)[:, None] + offset
    k = ops.arange(key_len)[None, :]
    return ops.greater_equal(q, k)[None, None]


def unilm_mask(segment_ids):
    """UniLM seq2seq mask from segment ids (Dong et al. 2019, arXiv:1905.03197;
    kexue.fm/archives/6933): the source (segment 0) is bidirectional, each target token
    (segment 1) sees the source and the targets before it.

    Args:
        segment_ids: int tensor [batch, seq_len] of 0 (source) / 1 (target).
    Returns:
        bool tensor [batch, 1, seq_len, seq_len].
    """
    idx = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
    return ops.less_equal(idx[:, None, :], idx[:, :, None])[:, None]


def mask_to_bias(mask, dtype="float32"):
    """Turn a boolean mask (True = keep) into an additive bias of 0 / large negative."""
    return ops.where(mask, ops.zeros((), dtype), ops.full((), large_negative(dtype), dtype))


def sequence_masking(x, mask, value=0.0, axis=1):
    """Replace positions where `mask` is False with `value` (bert4keras `sequence_masking`).

    Args:
        x: tensor [batch, ..., seq_len at `axis`, ...].
        mask: bool/int tensor [batch, seq_len] (or None to return `x` unchanged).
        value: a float, or ``"-inf"`` / ``"inf"`` for the dtype's large finite value.
        axis: the sequence axis of `x`.
    """
    if mask is None:
        return x
    if value in ("-inf", "inf"):
        value = large_negative(x.dtype) * (1 if value == "-inf" else -1)
    mask = ops.cast(mask, "bool")
    axis = axis % len(x.shape)
    for _ in range(axis - 1):
        mask = ops.expand_dims(mask, 1)
    while len(mask.shape) < len(x.shape):
        mask = ops.expand_dims(mask, -1)
    return ops.where(mask, x, ops.cast(value, x.dtype))


# ---------------------------------------------------------------------------
# Position encodings
# ---------------------------------------------------------------------------


def sinusoidal_embeddings(positions, dim, base=10000.0, interleaved=True):
    """Sinusoidal position encodings (Vaswani et al. 2017, arXiv:1706.03762).

    Args:
        positions: float/int tensor of any shape [...].
        dim: even embedding size.
        interleaved: True puts (sin, cos) pairs at dims (2i, 2i+1) as bert4keras does;
            False concatenates [sin..., cos...].
    Returns:
        float32 tensor [..., dim].
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding size must be even, got {dim}")
    inv = ops.power(base, -ops.arange(0, dim // 2, dtype="float32") * (2.0 / dim))
    angles = ops.cast(positions, "float32")[..., None] * inv
    sin, cos = ops.sin(angles), ops.cos(angles)
    if interleaved:
        out = ops.stack([sin, cos], axis=-1)
        return ops.reshape(out, tuple(ops.shape(angles)[:-1]) + (dim,))
    return ops.concatenate([sin, cos], axis=-1)


def apply_rotary(x, positions, base=10000.0, style="interleaved"):
    """Rotary position embedding (RoPE; Su et al. 2021, arXiv:2104.09864,
    kexue.fm/archives/8265).

    Args:
        x: tensor [batch, seq_len, heads, head_size].
        positions: int tensor [batch or 1, seq_len].
        style: ``"interleaved"`` rotates adjacent pairs (2i, 2i+1) as RoFormer/bert4keras;
            ``"half"`` rotates (i, i + d/2) as GPT-NeoX/LLaMA ("rotate_half").
    """
    dim = x.shape[-1]
    inv = ops.power(base, -ops.arange(0, dim // 2, dtype="float32") * (2.0 / dim))
    angles = ops.cast(positions, "float32")[..., None] * inv  # [b, t, d/2]
    sin = ops.cast(ops.sin(angles)[:, :, None, :], x.dtype)
    cos = ops.cast(ops.cos(angles)[:, :, None, :], x.dtype)
    if style == "interleaved":
        x1, x2 = x[..., 0::2], x[..., 1::2]
        y1 = x1 * cos - x2 * sin
        y2 = x2 * cos + x1 * sin
        return ops.reshape(ops.stack([y1, y2], axis=-1), ops.shape(x))
    if style == "half":
        x1, x2 = x[..., : dim // 2], x[..., dim // 2 :]
        return ops.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    raise ValueError(f"Unknown rotary style {style!r}; use 'interleaved' or 'half'")


# ---------------------------------------------------------------------------
# 2-D rotary position embedding (recipes)
# ---------------------------------------------------------------------------


def grid_positions(height, width):
    """Row-major (row, column) positions of a ``height x width`` grid (image patches,
    table cells): int32 ``[1, height * width, 2]``, row ``r * width + c`` holding
    ``(r, c)``; the ``positions`` argument of :func:`apply_rotary_2d`."""
    rows = ops.repeat(ops.arange(height, dtype="int32"), width)
    cols = ops.tile(ops.arange(width, dtype="int32"), (height,))
    return ops.stack([rows, cols], axis=-1)[None]


def apply_rotary_2d(x, positions, base=10000.0, style="interleaved"):
    """2-D rotary position embedding (Su, kexue.fm/archives/8397): the first half of each
    head's dimensions gets the 1-D RoPE of the row, the second half the 1-D RoPE of the
    column. The rotation of a 2-D position ``(r, c)`` is the block-diagonal
    ``R_(r,c) = diag(R_r, R_c)`` of two 1-D rotations (each of size ``head_size / 2``,
    frequencies ``base ** (-2i / (head_size / 2))``), so ``R_(r,c)^T R_(r',c') =
    R_(r'-r, c'-c)``: a query-key score depends on the 2-D offset only.

    Args:
        x: float tensor [batch, seq_len, heads, head_size], ``head_size % 4 == 0``.
        positions: int tensor [batch or 1, seq_len, 2] of (row, column) pairs, e.g.
            :func:`grid_positions`.
        style: pairing of dimensions inside each half, as :func:`apply_rotary`.

    Returns:
        tensor shaped and typed like ``x``.

    Raises:
        ValueError: ``head_size`` is not a multiple of 4 or ``positions`` has no last
            axis of size 2.
    """
    dim = x.shape[-1]
    if dim is None or dim % 4:
        raise ValueError(f"apply_rotary_2d: head_size must be a multiple of 4, got {dim}")
    if len(positions.shape) != 3 or positions.shape[-1] != 2:
        raise ValueError("apply_rotary_2d: positions must be [batch, seq_len, 2] "
                         f"(row, column), got shape {positions.shape}")
    half = dim // 2
    rows = apply_rotary(x[..., :half], positions[..., 0], base=base, style=style)
    cols = apply_rotary(x[..., half:], positions[..., 1], base=base, style=style)
    return ops.concatenate([rows, cols], axis=-1)
