"""Gated Attention Unit (FLASH; Hua et al. 2022, arXiv:2202.10447), the block of GAU-α
(kexue.fm/archives/9052), with the attention normalizations bert4keras offers."""
import math

import keras
from keras import ops

from ..initializers import TruncatedNormal
from ..ops import apply_rotary, get_activation, large_negative
from .masking import KeepsFirstInputMask

NORMALIZATIONS = ("softmax", "softmax_plus", "squared_relu")


# Defined with the layers (not in models/roformer.py) so that it is registered whenever
# kerasformer.layers is imported: the layers of a saved RoFormer-V2 / GAU-α model carry it
# in their config, and loading a `.keras` file must find it without the model builders.
@keras.saving.register_keras_serializable(package="kerasformer")
class RoFormerV2Initializer(TruncatedNormal):
    """bert4keras's RoFormer-V2 / GAU-α initializer: a truncated normal (±2 std) of
    std ``1.13684723 / sqrt(fan) * gain * num_layers**(-1/order)``, where ``fan`` is
    ``shape[0]`` (a Dense kernel's input size) unless ``shape[0]`` is above 10000 or below
    10 (an embedding table: then ``shape[1]``). 1.13684723 undoes the variance lost to the
    truncation, so the weights have std ``gain * num_layers**(-1/order) / sqrt(fan)``
    (kexue.fm/archives/8620, 8998).

    Args:
        num_layers: number of blocks L.
        order: 2 for RoFormer-V2, 3 for GAU-α.
        gain: extra factor.
        seed: int or None.
    Returns (call): a float array of `shape` (2-D) in `dtype`.
    """

    def __init__(self, num_layers, order=2, gain=1.0, seed=None):
        super().__init__(stddev=1.0, seed=seed)
        self.num_layers = num_layers
        self.order = order
        self.gain = gain

    def __call__(self, shape, dtype=None):
        fan = shape[1] if shape[0] > 10000 or shape[0] < 10 else shape[0]
        scale = self.gain * self.num_layers ** (-1.0 / self.order)
        self.stddev = 1.13684723 / math.sqrt(fan) * scale
        return super().__call__(shape, dtype)

    def get_config(self):
        return {"num_layers": self.num_layers, "order": self.order, "gain": self.gain,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="kerasformer")
class ScaleOffset(KeepsFirstInputMask, keras.layers.Layer):
    """``x * gamma (+ beta)`` over the last axis: GAU's cheap per-dimension transforms
    that turn one shared projection into queries and keys (arXiv:2202.10447, eq. 4).

    Args:
        scale: learn ``gamma`` (initialised to ones).
        offset: learn ``beta`` (initialised to zeros).
    Input/output: [..., dim].
    """

    def __init__(self, scale=True, offset=True, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.offset = offset

    def build(self, input_shape):
        dim = input_shape[-1]
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.offset:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")

    def call(self, x):
        if self.scale:
            x = x * ops.cast(self.gamma, x.dtype)
        if self.offset:
            x = x + ops.cast(self.beta, x.dtype)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package="kerasformer")
class GatedAttentionUnit(KeepsFirstInputMask, keras.layers.Layer):
    """Gated Attention Unit: one layer in place of attention + FFN (Hua et al. 2022,
    arXiv:2202.10447; kexue.fm/archives/8934), as bert4keras's ``GatedAttentionUnit``:

        ``u, v, z = split(act(i_dense(x)), [units, units, key_size])``
        ``q, k = q_scaleoffset(z), k_scaleoffset(z)`` (then RoPE when ``rotary``)
        ``A = normalize(q k^T / sqrt(key_size) + bias, mask)``
        ``out = o_dense(u * (A v))``

    Weights (bert4keras / GAU-α checkpoint layout): ``i_dense`` [hidden,
    2*units + key_size], ``o_dense`` [units, hidden], ``q_scaleoffset/gamma``,
    ``k_scaleoffset/gamma`` [key_size] (and the biases / ``beta`` with ``use_bias``).

    Normalizations of the attention logits ``a`` over the ``n`` keys a query may see:
        - ``"softmax"``: ``softmax(a)``.
        - ``"softmax_plus"``: ``softmax(a * log(n) / log(512))``, the entropy-invariant
          scale of kexue.fm/archives/8823 that GAU-α was trained with. Later bert4keras
          versions floor ``n`` at 16; this layer does not. GAU-α's PyTorch port has no
          floor either, and its authors report a 3.9e-5 max difference from bert4keras
          on a batch with a 15-token row, so the bert4keras version used for the release
          very likely had none.
        - ``"squared_relu"``: ``relu(a)**2 / n`` (arXiv:2202.10447).

    Call:
        ``layer(x, attention_mask=None, attention_bias=None, position_ids=None,
        cache=None, cache_index=None)``

        - x: [batch, q_len, hidden].
        - attention_mask: bool, broadcastable to [batch, 1, q_len, k_len] (the model
          masks of :class:`~kerasformer.layers.AttentionMask`); True = may attend. ``n``
          counts the True keys of each query row (at least 1).
        - attention_bias: float, broadcastable to [batch, 1, q_len, k_len], added to the
          logits before the normalization.
        - position_ids: int [batch or 1, q_len] positions for RoPE (default
          ``0..q_len-1``, shifted by ``cache_index`` when decoding).
        - cache: ``(key_cache [batch, max_len, key_size], value_cache [batch, max_len,
          units])`` with ``cache_index`` (int scalar): the new keys/values are written at
          ``cache_index`` and attention runs over the whole cache (the mask must hide the
          unwritten slots); the call then returns ``(output, new_cache)``.

    Returns:
        float [batch, q_len, hidden] in the compute dtype (and the updated cache).

    Args:
        units: size of ``u`` and ``v`` (the expanded width ``e``; ``intermediate_size``).
        key_size: size of the shared query/key projection (``s``; GAU-α: 128).
        activation: applied to the whole ``i_dense`` output (GAU-α: ``"swish"``).
        use_bias: biases on the Dense layers and ``beta`` on the scale-offsets.
        normalization: one of ``"softmax"``, ``"softmax_plus"``, ``"squared_relu"``.
        attention_scale: divide the logits by ``sqrt(key_size)``.
        attention_dropout: dropout rate on the normalized attention.
        rotary: None, ``"interleaved"`` (RoFormer/bert4keras) or ``"half"`` RoPE on q/k.
        kernel_initializer: initializer of the Dense kernels.

    Raises:
        ValueError: for an unknown normalization, or a cache without ``cache_index``.
    """

    def __init__(self, units, key_size, activation="swish", use_bias=True,
                 normalization="squared_relu", attention_scale=True, attention_dropout=0.0,
                 rotary=None, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if normalization not in NORMALIZATIONS:
            raise ValueError(
                f"Unknown attention normalization {normalization!r}; use one of "
                f"{NORMALIZATIONS}"
            )
        self.units = units
        self.key_size = key_size
        self.activation = activation
        self.use_bias = use_bias
        self.normalization = normalization
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout or 0.0
        self.rotary = rotary
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape, **kwargs):
        hidden = input_shape[-1]
        self._act = get_activation(self.activation)
        self.i_dense = keras.layers.Dense(
            2 * self.units + self.key_size, use_bias=self.use_bias, name="i_dense",
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy,
        )
        self.i_dense.build(input_shape)
        self.o_dense = keras.layers.Dense(
            hidden, use_bias=self.use_bias, name="o_dense",
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy,
        )
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))
        key_shape = tuple(input_shape[:-1]) + (self.key_size,)
        self.q_scaleoffset = ScaleOffset(offset=self.use_bias, name="q_scaleoffset",
                                         dtype=self.dtype_policy)
        self.q_scaleoffset.build(key_shape)
        self.k_scaleoffset = ScaleOffset(offset=self.use_bias, name="k_scaleoffset",
                                         dtype=self.dtype_policy)
        self.k_scaleoffset.build(key_shape)
        self.dropout = keras.layers.Dropout(self.attention_dropout)

    def _rotate(self, x, position_ids):
        # apply_rotary works on [batch, seq, heads, size]; the GAU has one "head".
        return apply_rotary(x[:, :, None, :], position_ids, style=self.rotary)[:, :, 0, :]

    def call(self, x, attention_mask=None, attention_bias=None, position_ids=None,
             cache=None, cache_index=None, training=None):
        if cache is not None and cache_index is None:
            raise ValueError("GatedAttentionUnit is self-attention: a cache needs cache_index")
        h = self._act(self.i_dense(x))
        u = h[..., : self.units]
        v = h[..., self.units: 2 * self.units]
        z = h[..., 2 * self.units:]
        q, k = self.q_scaleoffset(z), self.k_scaleoffset(z)
        if self.rotary:
            if position_ids is None:
                position_ids = ops.arange(ops.shape(x)[1], dtype="int32")[None]
                if cache_index is not None:
                    position_ids = position_ids + cache_index
            q = self._rotate(q, position_ids)
            k = self._rotate(k, position_ids)
        if cache is not None:
            k = ops.slice_update(cache[0], (0, cache_index, 0), ops.cast(k, cache[0].dtype))
            v = ops.slice_update(cache[1], (0, cache_index, 0), ops.cast(v, cache[1].dtype))
        probs = self._normalize(q, k, attention_mask, attention_bias)
        probs = self.dropout(ops.cast(probs, v.dtype), training=training)
        out = self.o_dense(u * ops.einsum("bqk,bkd->bqd", probs, v))
        if cache is not None:
            return out, (k, v)
        return out

    def _normalize(self, q, k, attention_mask, attention_bias):
        """The attention matrix [batch, q_len, k_len] in float32."""
        scores = ops.cast(ops.einsum("bqd,bkd->bqk", q, k), "float32")[:, None]
        if self.attention_scale:
            scores = scores / math.sqrt(self.key_size)
        if attention_bias is not None:
            scores = scores + ops.cast(attention_bias, "float32")
        if self.normalization != "softmax":
            if attention_mask is None:
                n = ops.cast(ops.shape(scores)[-1], "float32")
            else:
                visible = ops.broadcast_to(attention_mask, ops.shape(scores))
                n = ops.sum(ops.cast(visible, "float32"), axis=-1, keepdims=True)
                n = ops.maximum(n, 1.0)
        if self.normalization == "softmax_plus":
            # Scaled before masking: a row with one visible key gets scale 0 there and
            # must still ignore the masked ones.
            scores = scores * (ops.log(n) / math.log(512.0))
        if attention_mask is not None:
            scores = ops.where(attention_mask, scores, large_negative("float32"))
        if self.normalization == "squared_relu":
            probs = ops.square(ops.relu(scores)) / n
        else:
            probs = ops.softmax(scores, axis=-1)
        return probs[:, 0]

    def compute_output_spec(self, x, cache=None, **kwargs):
        out = keras.KerasTensor(tuple(x.shape), dtype=self.compute_dtype)
        if cache is not None:
            return out, cache
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units, key_size=self.key_size,
            activation=(self.activation if isinstance(self.activation, str)
                        else keras.saving.serialize_keras_object(self.activation)),
            use_bias=self.use_bias, normalization=self.normalization,
            attention_scale=self.attention_scale,
            attention_dropout=self.attention_dropout, rotary=self.rotary,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
