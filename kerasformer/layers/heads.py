"""Span-classification heads: GlobalPointer and EfficientGlobalPointer.

Both score every (start, end) pair of a sequence for every entity type at once and are
trained with :func:`kerasformer.losses.global_pointer_crossentropy` (or its sparse form);
at prediction time a span ``(i, j)`` of type ``h`` is predicted when ``logits[b, h, i, j]
> 0``.
"""
import math

import keras
from keras import ops

from ..ops import apply_rotary, large_negative


def _mask_span_logits(logits, mask, tril_mask):
    """Sets invalid (start, end) cells of float32 logits [b, heads, n, n] to the large
    negative value: rows and columns of padded tokens, and (with ``tril_mask``) the cells
    below the diagonal, where a span would end before it starts."""
    n = ops.shape(logits)[-1]
    keep = None
    if mask is not None:
        mask = ops.cast(mask, "bool")
        keep = ops.logical_and(mask[:, None, :, None], mask[:, None, None, :])
    if tril_mask:
        upper = ops.cast(ops.triu(ops.ones((n, n), dtype="int32")), "bool")[None, None]
        keep = upper if keep is None else ops.logical_and(keep, upper)
    if keep is None:
        return logits
    return ops.where(keep, logits, ops.full((), large_negative("float32"), "float32"))


@keras.saving.register_keras_serializable(package="kerasformer")
class GlobalPointer(keras.layers.Layer):
    """GlobalPointer: every (start, end) span scored as a whole, one score matrix per
    entity type (Su, kexue.fm/archives/8373; bert4keras ``layers.GlobalPointer``).

    For each head ``h`` a Dense layer produces a query ``q_i`` and a key ``k_j`` of size
    ``head_size`` per token (bert4keras layout: the Dense output is split into ``heads``
    chunks of ``2 * head_size``, query first); with ``RoPE`` both are rotated by their
    token position ``0..n-1`` (interleaved pairs ``(2i, 2i+1)``, base 10000 — RoFormer's
    layout, :func:`kerasformer.ops.apply_rotary` ``style="interleaved"``) so that the
    score depends on the relative distance ``j - i``:
    ``logits[b, h, i, j] = <q_i, k_j> / sqrt(head_size)``.

    Cells that are not a valid span get ``large_negative("float32")`` (-1e9; finite, so
    losses and gradients stay finite): any cell whose row or column is a padded token
    and, with ``tril_mask``, every cell with ``i > j``.

    Args:
        heads: number of entity types.
        head_size: size of the per-type query and key vectors (even when ``RoPE``).
        RoPE: apply rotary position embeddings to queries and keys.
        use_bias: bias on the Dense projection.
        tril_mask: mask the strictly lower triangle (spans with end < start).
        kernel_initializer: of the Dense kernel (bert4keras default ``lecun_normal``).

    Call:
        ``layer(hidden, mask=None)``; ``hidden`` float [batch, seq_len, hidden_size];
        ``mask`` bool/int [batch, seq_len], True/1 for real tokens (taken from the Keras
        mask of ``hidden`` when not given).

    Returns:
        float32 [batch, heads, seq_len, seq_len] logits (float32 even under a mixed
        precision policy, so the large negative value of masked cells is representable).
        The layer produces no Keras mask.

    Raises:
        ValueError: odd ``head_size`` with ``RoPE``.
    """

    def __init__(self, heads, head_size, RoPE=True, use_bias=True, tril_mask=True,
                 kernel_initializer="lecun_normal", **kwargs):
        super().__init__(**kwargs)
        if RoPE and head_size % 2:
            raise ValueError(f"RoPE needs an even head_size, got {head_size}")
        self.heads = heads
        self.head_size = head_size
        self.RoPE = RoPE
        self.use_bias = use_bias
        self.tril_mask = tril_mask
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def _dense(self, units, name, input_shape):
        dense = keras.layers.Dense(
            units, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            name=name, dtype=self.dtype_policy,
        )
        dense.build(input_shape)
        return dense

    def build(self, input_shape):
        self.dense = self._dense(self.heads * self.head_size * 2, "dense", input_shape)

    def _rotate(self, x):
        """RoPE on [batch, n, heads, head_size] at positions 0..n-1."""
        if not self.RoPE:
            return x
        positions = ops.arange(ops.shape(x)[1], dtype="int32")[None]
        return apply_rotary(x, positions, style="interleaved")

    def call(self, inputs, mask=None):
        x = self.dense(inputs)
        b, n = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (b, n, self.heads, 2 * self.head_size))
        qw = self._rotate(x[..., : self.head_size])
        kw = self._rotate(x[..., self.head_size:])
        logits = ops.einsum("bmhd,bnhd->bhmn", qw, kw)
        logits = ops.cast(logits, "float32") / math.sqrt(self.head_size)
        return _mask_span_logits(logits, mask, self.tril_mask)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.heads, input_shape[1], input_shape[1])

    def compute_output_spec(self, inputs, mask=None):
        return keras.KerasTensor(self.compute_output_shape(inputs.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads,
            head_size=self.head_size,
            RoPE=self.RoPE,
            use_bias=self.use_bias,
            tril_mask=self.tril_mask,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="kerasformer")
class EfficientGlobalPointer(GlobalPointer):
    """Parameter-efficient GlobalPointer (Su, kexue.fm/archives/8877; bert4keras
    ``layers.EfficientGlobalPointer``).

    One query/key pair is shared by all entity types and each type adds its own start and
    end bias (a linear function of the same projected features):

    - ``p = p_dense(hidden)`` [b, n, 2 * head_size]; ``q = p[..., 0::2]``,
      ``k = p[..., 1::2]`` (even/odd channels), RoPE on both as in :class:`GlobalPointer`;
    - ``c = q_dense(p)`` [b, n, 2 * heads]; for type ``h`` the channel ``2h`` scores the
      end token and ``2h + 1`` the start token;
    - ``logits[b, h, i, j] = <q_i, k_j> / sqrt(head_size) + (c[b, j, 2h] + c[b, i, 2h+1]) / 2``.

    Masking, arguments, call signature and output are those of :class:`GlobalPointer`.
    """

    def build(self, input_shape):
        self.p_dense = self._dense(self.head_size * 2, "p_dense", input_shape)
        self.q_dense = self._dense(
            self.heads * 2, "q_dense", tuple(input_shape[:-1]) + (self.head_size * 2,)
        )

    def call(self, inputs, mask=None):
        p = self.p_dense(inputs)
        qw = self._rotate(p[..., 0::2][:, :, None, :])[:, :, 0]
        kw = self._rotate(p[..., 1::2][:, :, None, :])[:, :, 0]
        logits = ops.cast(ops.einsum("bmd,bnd->bmn", qw, kw), "float32")
        logits = logits / math.sqrt(self.head_size)
        bias = ops.transpose(ops.cast(self.q_dense(p), "float32"), (0, 2, 1)) / 2.0
        logits = logits[:, None] + bias[:, 0::2, None, :] + bias[:, 1::2, :, None]
        return _mask_span_logits(logits, mask, self.tril_mask)
