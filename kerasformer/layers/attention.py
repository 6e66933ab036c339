"""Multi-head attention with masks, additive position biases, RoPE, Shaw-style relative
position embeddings (NEZHA) and a KV cache, computed by a fused kernel
(``keras.ops.dot_product_attention``) or by explicit einsums."""
import math

import keras
import numpy as np
from keras import ops

from ..ops import apply_rotary, large_negative
from .masking import DropsMask, KeepsFirstInputMask

ATTENTION_IMPLEMENTATIONS = ("auto", "fused", "explicit")


def check_attention_implementation(value):
    """Return `value` if it is one of :data:`ATTENTION_IMPLEMENTATIONS`.

    Raises:
        ValueError: naming ``attention_implementation`` and the allowed values.
    """
    if value not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(
            f"attention_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, "
            f"got {value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="kerasformer")
class MultiHeadAttention(KeepsFirstInputMask, keras.layers.Layer):
    """Scaled dot-product multi-head attention (Vaswani et al. 2017, arXiv:1706.03762).

    Weights: ``q_dense``, ``k_dense``, ``v_dense`` ([hidden, heads*size]) and ``o_dense``
    ([heads*size, out_dim]), the bert4keras layout, so Google/HF checkpoints map 1:1.

    Call:
        ``layer(query, key_value=None, attention_mask=None, attention_bias=None,
        position_ids=None, cache=None, cache_index=None)``

        - query: [batch, q_len, hidden]; key_value: [batch, k_len, hidden_kv] for
          cross-attention (None: self-attention).
        - attention_mask: bool, broadcastable to [batch, heads, q_len, k_len];
          True = may attend. Masked logits get a large negative *finite* value (float32).
        - attention_bias: float, broadcastable to [batch, heads, q_len, k_len], added to the
          logits (T5 relative bias, ALiBi...).
        - position_ids: int [batch or 1, q_len] absolute positions of the queries; used
          only with ``rotary`` (keys of a cache were rotated when written).
        - relative_positions: float [q_len, k_len, key_size] (or
          [batch, q_len, k_len, key_size]) relative position embeddings ``a_ij`` used
          the "typical relative" way of Shaw et al. 2018 (arXiv:1803.02155) and NEZHA
          (arXiv:1909.00204): ``logits_ij = q_i . (k_j + a_ij) / sqrt(key_size)`` and
          ``out_i = sum_j p_ij (v_j + a_ij)``; see :class:`RelativePositionEmbedding`.
          Needs ``key_size == head_size`` (ValueError otherwise).
        - cache: ``(key_cache, value_cache)``, each [batch, max_len, heads, size].
          With ``cache_index`` (int scalar) the new keys/values are written at
          ``cache_index`` and attention runs over the whole cache (the mask must hide the
          unwritten slots); the call then returns ``(output, new_cache)``. With
          ``cache_index=None`` the cache is a precomputed, read-only K/V (e.g. T5
          cross-attention) and ``key_value`` is not projected.

    Returns:
        [batch, q_len, out_dim] (and the updated cache when a cache is given).

    Args:
        heads: number of heads; head_size: size of values per head;
        key_size: size of queries/keys per head (default head_size);
        out_dim: output size (default: the query's hidden size);
        use_bias: biases on the projections;
        attention_scale: divide logits by sqrt(key_size) (T5 does not);
        attention_dropout: dropout rate on attention probabilities;
        rotary: None, ``"interleaved"`` (RoFormer) or ``"half"`` (NeoX) RoPE on q/k;
        attention_implementation: how ``softmax(q k^T * scale + bias, mask) v`` is
            computed (see below).

    Attention implementations:
        - ``"fused"``: ``keras.ops.dot_product_attention`` (JAX: cuDNN flash attention
          on Ampere+ GPUs for bf16/fp16 with head size a multiple of 8, Splash on TPU
          where Keras allows, else XLA's fused softmax; TensorFlow: the same einsum
          computation as Keras's reference). Masks are passed as booleans broadcast to
          [batch, 1, q_len, k_len] (cuDNN needs full-length bias), additive biases
          (T5) and the scale (``1.0`` when ``attention_scale=False``) as they are.
          Exact (same formula, float32 softmax) for masks, biases, RoPE and KV caches;
          it has no attention dropout and no Shaw/NEZHA relative positions, and needs
          ``key_size == head_size``.
        - ``"explicit"``: ``einsum`` -> float32 logits -> scale, bias, mask -> float32
          softmax -> dropout -> ``einsum``. Materializes [batch, heads, q_len, k_len].
        - ``"auto"`` (default): fused, except for what it cannot do exactly:
          ``relative_positions`` given (NEZHA), attention dropout while training
          (``attention_dropout > 0`` and ``training=True``), ``key_size != head_size``.

        Both paths give a query row whose keys are all masked the uniform average of
        the values (a large finite negative logit, never NaN).

    Raises:
        ValueError: an unknown ``attention_implementation`` (at construction);
            ``"fused"`` with ``key_size != head_size`` (at construction), with
            ``relative_positions`` or with attention dropout while training (at call).
    """

    def __init__(self, heads, head_size, out_dim=None, key_size=None, use_bias=True,
                 attention_scale=True, attention_dropout=0.0, rotary=None,
                 kernel_initializer="glorot_uniform", attention_implementation="auto",
                 **kwargs):
        super().__init__(**kwargs)
        self.attention_implementation = check_attention_implementation(
            attention_implementation)
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout
        self.rotary = rotary
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        if attention_implementation == "fused" and self.key_size != head_size:
            raise ValueError(
                "attention_implementation='fused' needs key_size == head_size "
                f"(keras.ops.dot_product_attention); got {self.key_size} and {head_size}"
            )

    def _dense(self, units, name, input_shape):
        dense = keras.layers.Dense(
            units, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
            name=name, dtype=self.dtype_policy,
        )
        dense.build(input_shape)
        return dense

    def build(self, query_shape, key_value_shape=None, **kwargs):
        key_value_shape = key_value_shape or query_shape
        out_dim = self.out_dim or query_shape[-1]
        self.q_dense = self._dense(self.heads * self.key_size, "q_dense", query_shape)
        self.k_dense = self._dense(self.heads * self.key_size, "k_dense", key_value_shape)
        self.v_dense = self._dense(self.heads * self.head_size, "v_dense", key_value_shape)
        self.o_dense = self._dense(
            out_dim, "o_dense", tuple(query_shape[:-1]) + (self.heads * self.head_size,)
        )
        self.dropout = keras.layers.Dropout(self.attention_dropout)

    def _split(self, x, size):
        b, t = ops.shape(x)[0], ops.shape(x)[1]
        return ops.reshape(x, (b, t, self.heads, size))

    def call(self, query, key_value=None, attention_mask=None, attention_bias=None,
             position_ids=None, cache=None, cache_index=None, training=None,
             relative_positions=None):
        if relative_positions is not None and self.key_size != self.head_size:
            raise ValueError(
                "relative_positions are added to keys and values alike, so they need "
                f"key_size == head_size; got {self.key_size} and {self.head_size}"
            )
        q = self._split(self.q_dense(query), self.key_size)
        if self.rotary:
            if position_ids is None:
                position_ids = ops.arange(ops.shape(query)[1], dtype="int32")[None]
                if cache_index is not None:
                    position_ids = position_ids + cache_index
            q = apply_rotary(q, position_ids, style=self.rotary)
        if cache is not None and cache_index is None:
            k, v = cache  # precomputed, read-only (cross-attention)
        else:
            source = query if key_value is None else key_value
            k = self._split(self.k_dense(source), self.key_size)
            v = self._split(self.v_dense(source), self.head_size)
            if self.rotary:
                k = apply_rotary(k, position_ids, style=self.rotary)
            if cache is not None:
                start = (0, cache_index, 0, 0)
                k = ops.slice_update(cache[0], start, ops.cast(k, cache[0].dtype))
                v = ops.slice_update(cache[1], start, ops.cast(v, cache[1].dtype))
        if self.uses_fused(relative_positions, training):
            out = self._attend_fused(q, k, v, attention_mask, attention_bias)
        else:
            out = self._attend(q, k, v, attention_mask, attention_bias, training,
                               relative_positions)
        out = self.o_dense(out)
        if cache is not None:
            return out, (k, v)
        return out

    def uses_fused(self, relative_positions=None, training=None):
        """Whether a call with these arguments takes the fused path.

        Raises:
            ValueError: ``attention_implementation="fused"`` with what the fused
                kernel cannot compute exactly.
        """
        if self.attention_implementation == "explicit":
            return False
        reasons = []
        if relative_positions is not None:
            reasons.append("relative_positions (Shaw/NEZHA) enter the values too")
        if training and (self.attention_dropout or 0) > 0:
            reasons.append(
                f"attention dropout ({self.attention_dropout}) while training is not "
                "part of keras.ops.dot_product_attention"
            )
        if self.key_size != self.head_size:
            reasons.append("key_size != head_size")
        if reasons and self.attention_implementation == "fused":
            raise ValueError(
                "attention_implementation='fused' cannot compute this attention exactly: "
                + "; ".join(reasons) + ". Use 'auto' (explicit path for these calls) or "
                "'explicit'."
            )
        return not reasons

    def _attend_fused(self, q, k, v, attention_mask, attention_bias):
        scale = 1.0 / math.sqrt(self.key_size) if self.attention_scale else 1.0
        if attention_mask is not None:
            # Full [batch, 1, q_len, k_len]: cuDNN turns the mask into a bias that must
            # span both lengths (a [batch, 1, 1, k_len] padding mask would make JAX fall
            # back to XLA with a logged exception).
            shape = ops.shape(attention_mask)
            attention_mask = ops.broadcast_to(
                ops.cast(attention_mask, "bool"),
                (ops.shape(q)[0], shape[1], ops.shape(q)[1], ops.shape(k)[1]),
            )
        out = ops.dot_product_attention(q, k, v, bias=attention_bias, mask=attention_mask,
                                        scale=scale)
        b, t = ops.shape(out)[0], ops.shape(out)[1]
        return ops.reshape(out, (b, t, self.heads * self.head_size))

    def _attend(self, q, k, v, attention_mask, attention_bias, training,
                relative_positions=None):
        scores = ops.einsum("bqnd,bknd->bnqk", q, k)
        if relative_positions is not None:
            # Added before the 1/sqrt(d) scale, as in NEZHA's and bert4keras's code.
            relative_positions = ops.cast(relative_positions, q.dtype)
            scores = scores + _relative_einsum("bqnd,{r}->bnqk", q, relative_positions)
        # Scale, bias, mask and softmax in float32 under mixed precision: bf16 logits
        # would keep 8 bits before the exponential (the largest error term of bf16
        # attention). Under XLA (jit) the cast fuses into the softmax kernels, so no
        # float32 [B, N, T, T] buffer is written in the forward; only the probabilities
        # leave in the compute dtype. The fused path (the default) does the same inside
        # its kernel without materializing the scores at all.
        scores = ops.cast(scores, "float32")
        if self.attention_scale:
            scores = scores / math.sqrt(self.key_size)
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, "float32")
        if attention_mask is not None:
            scores = ops.where(attention_mask, scores, large_negative("float32"))
        probs = ops.cast(ops.softmax(scores, axis=-1), v.dtype)
        probs = self.dropout(probs, training=training)
        out = ops.einsum("bnqk,bknd->bqnd", probs, v)
        if relative_positions is not None:
            out = out + _relative_einsum("bnqk,{r}->bqnd", probs, relative_positions)
        b, t = ops.shape(out)[0], ops.shape(out)[1]
        return ops.reshape(out, (b, t, self.heads * self.head_size))

    def compute_output_spec(self, query, key_value=None, cache=None, cache_index=None,
                            **kwargs):
        out_dim = self.out_dim or query.shape[-1]
        out = keras.KerasTensor(tuple(query.shape[:-1]) + (out_dim,), dtype=self.compute_dtype)
        if cache is not None:
            return out, cache
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            heads=self.heads, head_size=self.head_size, out_dim=self.out_dim,
            key_size=self.key_size, use_bias=self.use_bias,
            attention_scale=self.attention_scale, attention_dropout=self.attention_dropout,
            rotary=self.rotary,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            attention_implementation=self.attention_implementation,
        )
        return config


def _relative_einsum(equation, x, relative_positions):
    """``einsum`` with a relative table shared by the batch ([q, k, d]: "qkd") or given
    per example ([batch, q, k, d]: "bqkd")."""
    r = "qkd" if len(relative_positions.shape) == 3 else "bqkd"
    return ops.einsum(equation.format(r=r), x, relative_positions)


def nezha_sinusoidal_table(rows, dim):
    """NEZHA's fixed relative-position table (arXiv:1909.00204, section 3.2): row ``p``
    holds ``sin(p / 10000**(2i/dim))`` at dim ``2i`` and ``cos(...)`` at ``2i + 1``
    (interleaved), where ``p`` is the bucket index ``0..rows-1`` (clipped distance plus
    the maximum distance), not the signed distance -- as in NEZHA's TF code and
    bert4keras's ``Sinusoidal`` initializer.

    Returns:
        float64 numpy array [rows, dim].
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding size must be even, got {dim}")
    positions = np.arange(rows, dtype=np.float64)[:, None]
    inv = np.power(10000.0, -2.0 * np.arange(dim // 2, dtype=np.float64) / dim)
    angles = positions * inv
    return np.stack([np.sin(angles), np.cos(angles)], axis=-1).reshape(rows, dim)


@keras.saving.register_keras_serializable(package="kerasformer")
class RelativePositionEmbedding(DropsMask, keras.layers.Layer):
    """Clipped relative position embeddings ``a_ij = T[clip(j - i, -m, m) + m]`` (Shaw et
    al. 2018, arXiv:1803.02155) with NEZHA's functional sinusoidal table ``T`` of
    ``2m + 1`` rows (Wei et al. 2019, arXiv:1909.00204; :func:`nezha_sinusoidal_table`).
    The table is a constant, not a weight: nothing to train, load or save.

    Call: ``layer(x, position_ids=None, key_positions=None)``

        - x: [batch, q_len, ...]; only its length is read when ``position_ids`` is None.
        - position_ids: int [batch or 1, q_len] positions of the queries
          (default ``0..q_len-1``).
        - key_positions: int [batch or 1, k_len] positions of the keys (default: the
          query positions; cached decoding passes the cache slots ``0..max_len-1``).

    Returns:
        [q_len, k_len, output_dim] in the compute dtype when the positions are shared by
        the batch (leading dimension 1 or defaults), else [batch, q_len, k_len, output_dim].
        Feed it to :class:`MultiHeadAttention` as ``relative_positions``.

    Args:
        max_distance: ``m``, the clipping distance (NEZHA: 64, i.e. 129 rows).
        output_dim: embedding size (the attention key size).
    """

    def __init__(self, max_distance=64, output_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.max_distance = max_distance
        self.output_dim = output_dim
        self._table = nezha_sinusoidal_table(2 * max_distance + 1, output_dim)

    def call(self, inputs, position_ids=None, key_positions=None):
        if position_ids is None:
            position_ids = ops.arange(ops.shape(inputs)[1], dtype="int32")[None]
        position_ids = ops.cast(position_ids, "int32")
        key_positions = position_ids if key_positions is None else ops.cast(
            key_positions, "int32")
        distance = key_positions[:, None, :] - position_ids[:, :, None]
        buckets = ops.clip(distance, -self.max_distance, self.max_distance) + self.max_distance
        table = ops.convert_to_tensor(self._table.astype(self.compute_dtype))
        out = ops.take(table, buckets, axis=0)  # [batch or 1, q_len, k_len, dim]
        if self._shared(position_ids, key_positions):
            out = out[0]
        return out

    @staticmethod
    def _shared(position_ids, key_positions):
        return position_ids.shape[0] == 1 and key_positions.shape[0] == 1

    def compute_output_spec(self, inputs, position_ids=None, key_positions=None):
        q_len = inputs.shape[1] if position_ids is None else position_ids.shape[1]
        if key_positions is None:
            k_len, key_batch = q_len, None
        else:
            k_len, key_batch = key_positions.shape[1], key_positions.shape[0]
        shape = (q_len, k_len, self.output_dim)
        query_batch = 1 if position_ids is None else position_ids.shape[0]
        key_batch = query_batch if key_batch is None else key_batch
        if not (query_batch == 1 and key_batch == 1):
            batch = query_batch if query_batch != 1 else key_batch
            shape = (batch,) + shape
        return keras.KerasTensor(shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(max_distance=self.max_distance, output_dim=self.output_dim)
        return config
