"""Multi-head attention with masks, additive position biases, RoPE and a KV cache."""
import math

import keras
from keras import ops

from ..ops import apply_rotary, large_negative


@keras.saving.register_keras_serializable(package="kerasformer")
class MultiHeadAttention(keras.layers.Layer):
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
        rotary: None, ``"interleaved"`` (RoFormer) or ``"half"`` (NeoX) RoPE on q/k.
    """

    def __init__(self, heads, head_size, out_dim=None, key_size=None, use_bias=True,
                 attention_scale=True, attention_dropout=0.0, rotary=None,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout
        self.rotary = rotary
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

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
             position_ids=None, cache=None, cache_index=None, training=None):
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
        out = self._attend(q, k, v, attention_mask, attention_bias, training)
        out = self.o_dense(out)
        if cache is not None:
            return out, (k, v)
        return out

    def _attend(self, q, k, v, attention_mask, attention_bias, training):
        scores = ops.einsum("bqnd,bknd->bnqk", q, k)
        scores = ops.cast(scores, "float32")  # softmax in float32 under mixed precision
        if self.attention_scale:
            scores = scores / math.sqrt(self.key_size)
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, "float32")
        if attention_mask is not None:
            scores = ops.where(attention_mask, scores, large_negative("float32"))
        probs = ops.cast(ops.softmax(scores, axis=-1), v.dtype)
        probs = self.dropout(probs, training=training)
        out = ops.einsum("bnqk,bknd->bqnd", probs, v)
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
        )
        return config
