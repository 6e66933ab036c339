"""Self-attention with 2-D rotary positions (kexue.fm/archives/8397)."""
import keras

from ..ops import apply_rotary_2d
from .attention import MultiHeadAttention


@keras.saving.register_keras_serializable(package="kerasformer")
class MultiHeadAttention2DRoPE(MultiHeadAttention):
    """Multi-head self-attention whose queries and keys are rotated by their 2-D
    (row, column) positions with :func:`kerasformer.ops.apply_rotary_2d` (Su,
    kexue.fm/archives/8397), for image patches or table cells: the score of two items
    depends on their contents and their 2-D offset only.

    Weights, arguments and the attention itself are those of
    :class:`~kerasformer.layers.MultiHeadAttention` (``rotary`` is fixed: the 2-D one);
    no KV cache.

    Call:
        ``layer(x, positions, attention_mask=None, attention_bias=None)`` with ``x``
        [batch, seq_len, hidden], ``positions`` int [batch or 1, seq_len, 2] (e.g.
        :func:`kerasformer.ops.grid_positions`), the mask / bias as in the base layer.

    Returns:
        [batch, seq_len, out_dim].

    Raises:
        ValueError: ``key_size`` not a multiple of 4 (at call).
    """

    def __init__(self, heads, head_size, rotary_style="interleaved", **kwargs):
        kwargs.pop("rotary", None)
        super().__init__(heads, head_size, **kwargs)
        self.rotary_style = rotary_style

    def build(self, query_shape, positions_shape=None, **kwargs):
        super().build(query_shape)

    def call(self, query, positions, attention_mask=None, attention_bias=None,
             training=None):
        rotate = lambda t: apply_rotary_2d(t, positions, style=self.rotary_style)
        q = rotate(self._split(self.q_dense(query), self.key_size))
        k = rotate(self._split(self.k_dense(query), self.key_size))
        v = self._split(self.v_dense(query), self.head_size)
        out = self._attend(q, k, v, attention_mask, attention_bias, training)
        return self.o_dense(out)

    def compute_output_spec(self, query, positions=None, **kwargs):
        return super().compute_output_spec(query)

    def get_config(self):
        config = super().get_config()
        config.pop("rotary", None)
        config["rotary_style"] = self.rotary_style
        return config
