"""GAU-α (Su et al. 2022, kexue.fm/archives/9052; github.com/ZhuiyiTechnology/GAU-alpha):
RoFormer-V2 whose blocks are single Gated Attention Units (FLASH, Hua et al. 2022,
arXiv:2202.10447) with the ``softmax_plus`` attention scale (kexue.fm/archives/8823)."""
import keras

from ..checkpoints.loading import TensorMap
from ..layers import GatedAttentionUnit
from .roformer import RoFormerV2


class GAUAlpha(RoFormerV2):
    """GAU-α builder (the ``GAU_alpha`` class of the GAU-α repository, on bert4keras).

    Embeddings, heads and outputs as :class:`RoFormerV2` (token + segment, parameter-free
    RMS norm, tied bias-free MLM head). Block ``i`` is one residual sub-block
    ``Transformer-{i}-GatedAttentionUnit`` (``-Dropout``, ``-Add``, ``-Norm``: post-norm,
    parameter-free) of a :class:`~kerasformer.layers.GatedAttentionUnit` with
    ``units=intermediate_size``, ``key_size=attention_key_size``,
    ``activation=hidden_act`` (``swish``), no biases, RoPE (interleaved) on q/k and the
    ``normalization`` of its logits (``softmax_plus``). Initializer: RoFormer-V2's fan-in
    truncated normal with order 3.

    Inputs: ``Input-Token`` (and ``Input-Segment``) int [batch, seq_len]. Outputs: float
    [batch, seq_len, hidden], or the MLM head [batch, seq_len, vocab] with ``with_mlm``.

    Checkpoints: the released Google-format TF checkpoint (``bert/embeddings/...``,
    ``GAU_alpha/encoder/layer_N/gau/{i_dense,o_dense}/kernel``,
    ``.../gau/{q,k}_scaleoffset/gamma``) and the PyTorch port's names
    (``gau_alpha.embeddings...``, ``gau_alpha.encoder.layer.N.gau.i_dense.weight``,
    ``...q_scaleoffset.weight``).

    Args (beyond :class:`RoFormerV2`):
        num_attention_heads: unused by the GAU (one shared attention); default 1.
        normalization: ``"softmax_plus"`` (GAU-α), ``"softmax"`` or ``"squared_relu"``.
    """

    hf_prefixes = ("gau_alpha.",)
    fused_attention_unsupported = (
        "its gated attention unit (one head, softmax_plus scaling per query row) has no "
        "fused kernel; it always takes the explicit path")
    checkpoint_ignore = (r"(^|\.)predictions\.decoder\.weight$",)
    initializer_order = 3

    def __init__(self, num_attention_heads=1, normalization="softmax_plus", **kwargs):
        super().__init__(num_attention_heads=num_attention_heads, **kwargs)
        self.normalization = normalization

    def gau_kwargs(self):
        """Constructor kwargs of the Gated Attention Units."""
        return dict(
            units=self.intermediate_size,
            key_size=self.attention_key_size,
            activation=self.hidden_act,
            use_bias=False,
            normalization=self.normalization,
            attention_scale=True,
            attention_dropout=self.attention_dropout_rate,
            rotary="interleaved",
            kernel_initializer=self.initializer,
        )

    def apply_main_layers(self, x, index):
        return self.apply_residual(
            x, index, f"Transformer-{index}-GatedAttentionUnit", GatedAttentionUnit,
            self.gau_kwargs(), self.attention_arguments(index), f"self-{index}",
        )

    def init_caches(self, batch_size, max_length, dtype=None):
        """Zero caches ``{"self-i": (keys [batch, max_length, key_size], values [batch,
        max_length, intermediate_size])}`` for :meth:`call_with_cache`."""
        dtype = dtype or keras.backend.floatx()
        zeros = keras.ops.zeros
        return {
            f"self-{i}": (zeros((batch_size, max_length, self.attention_key_size), dtype),
                          zeros((batch_size, max_length, self.intermediate_size), dtype))
            for i in range(self.num_hidden_layers)
        }

    def variable_mapping(self):
        rows = [
            TensorMap("Embedding-Token/embeddings", "bert/embeddings/word_embeddings",
                      "embeddings.word_embeddings.weight", vocab=True),
            TensorMap("Embedding-Segment/embeddings", "bert/embeddings/token_type_embeddings",
                      "embeddings.token_type_embeddings.weight"),
        ]
        for i in range(self.num_hidden_layers):
            keras_path = f"Transformer-{i}-GatedAttentionUnit"
            google, hf = f"GAU_alpha/encoder/layer_{i}/gau", f"encoder.layer.{i}.gau"
            for dense in ("i_dense", "o_dense"):
                rows.append(TensorMap(f"{keras_path}/{dense}/kernel", f"{google}/{dense}/kernel",
                                      f"{hf}.{dense}.weight", hf_transpose=True))
            for scale in ("q_scaleoffset", "k_scaleoffset"):
                rows.append(TensorMap(f"{keras_path}/{scale}/gamma", f"{google}/{scale}/gamma",
                                      f"{hf}.{scale}.weight"))
        rows.append(TensorMap("Output-Mapping/kernel"))
        return rows
