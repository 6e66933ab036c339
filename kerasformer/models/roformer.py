"""RoFormer (Su et al. 2021, arXiv:2104.09864; kexue.fm/archives/8265): BERT with rotary
position embeddings on the queries and keys of every attention layer, and RoFormer-V2
(kexue.fm/archives/8998): RoFormer without biases, with parameter-free RMS norms and a
bias-free tied MLM head."""
import keras

from ..checkpoints.loading import TensorMap
from ..layers import Activation, Embedding
from ..layers.gau import RoFormerV2Initializer
from .base import HEAD_DTYPE
from .nezha import NEZHA, replace_rows


class RoFormer(NEZHA):
    """RoFormer builder (bert4keras ``RoFormer``).

    Inputs, heads and outputs as :class:`~kerasformer.models.bert.BERT`, without
    absolute position embeddings: each ``Transformer-{i}-MultiHeadSelfAttention``
    rotates its queries and keys by their positions, pairing dims (2i, 2i+1) with
    frequencies ``10000**(-2i/d)`` (``rotary="interleaved"``; d = attention key size).
    With ``custom_position_ids=True`` the ``Input-Position`` ids are the rotation
    positions.

    Checkpoints: Google TF names as bert4keras (``bert/...``, the ZhuiyiTechnology
    releases); Hugging Face ``RoFormerForMaskedLM`` / ``RoFormerModel`` names
    (``roformer.embeddings...``, ``roformer.embeddings_project``,
    ``roformer.encoder.layer.N...``, ``cls.predictions...``). The fixed sinusoidal table
    ``roformer.encoder.embed_positions.weight`` is recomputed, not loaded.

    Args (beyond :class:`BERT`):
        rotary_value: Hugging Face's option to rotate the values too; only False (the
            published models, and bert4keras) is supported.
        layer_norm_epsilon: default 1e-7, bert4keras's (Hugging Face configs say 1e-12).

    Raises:
        ValueError: for ``rotary_value=True``.
    """

    hf_prefixes = ("roformer.",)
    fused_attention_unsupported = None  # RoPE rotates q and k before the kernel
    checkpoint_ignore = NEZHA.checkpoint_ignore + (r"encoder\.embed_positions\.weight$",)

    def __init__(self, rotary_value=False, **kwargs):
        if rotary_value:
            raise ValueError("rotary_value=True (RoPE on the values) is not supported")
        super().__init__(**kwargs)

    def compute_relative_positions(self, x):
        return None  # positions enter through the rotation of q and k

    def attention_kwargs(self):
        return dict(super().attention_kwargs(), rotary="interleaved")

    def attention_arguments(self, index):
        arguments = super().attention_arguments(index)
        if self.custom_positions is not None:
            arguments["position_ids"] = self.custom_positions
        return arguments

    def variable_mapping(self):
        return replace_rows(super().variable_mapping(), **{
            f"Embedding-Mapping/{w}": {"hf": f"embeddings_project.{t}"}
            for w, t in (("kernel", "weight"), ("bias", "bias"))
        })


class RoFormerV2(RoFormer):
    """RoFormer-V2 builder (bert4keras ``RoFormerV2``; kexue.fm/archives/8998).

    RoFormer without any bias, with parameter-free RMS normalization (``LayerNormalization``
    with ``zero_mean=False, center=False, scale=False``) after every residual (post-norm)
    and after the embeddings, and bert4keras's fan-in initializer
    (:class:`RoFormerV2Initializer`, order 2).

    Layers: ``Embedding-Token``, ``Embedding-Segment``, ``Embedding-Token-Segment``,
    ``Embedding-Dropout``, ``Embedding-Norm`` (, ``Embedding-Mapping``), the blocks
    ``Transformer-{i}-MultiHeadSelfAttention`` / ``-FeedForward`` (+ ``-Norm`` ...), and
    with ``with_mlm`` (``Output-Mapping`` when ``embedding_size != hidden_size``,)
    ``Output-MLM-Dropout``, the tied ``Embedding-Token`` and ``Output-MLM-Activation``
    (no dense transform, no bias).

    Outputs: the sequence output float [batch, seq_len, hidden], or with ``with_mlm`` the
    MLM probabilities (``True``) / activations (a name such as ``"linear"``)
    [batch, seq_len, vocab].

    Checkpoints: Google TF names of bert4keras (``bert/embeddings/word_embeddings``,
    ``bert/encoder/layer_N/attention/self/query/kernel``...; kernels only). The
    ``Output-Mapping`` has no checkpoint name (bert4keras leaves it untrained).

    Raises:
        ValueError: for ``with_pool`` / ``with_nsp`` (RoFormer-V2 has no such heads).
    """

    norm_kwargs = dict(zero_mean=False, center=False, scale=False)
    initializer_order = 2

    def __init__(self, **kwargs):
        for head in ("with_pool", "with_nsp"):
            if kwargs.get(head):
                raise ValueError(f"{type(self).__name__} has no pooler/NSP head ({head})")
        super().__init__(**kwargs)

    @property
    def initializer(self):
        return RoFormerV2Initializer(self.num_hidden_layers, order=self.initializer_order)

    # ------------------------------------------------------------------ graph

    def apply_embeddings(self, inputs):
        self.custom_positions = inputs[-1] if self.custom_position_ids else None
        self.relative_positions = None
        x = self.apply_token_embeddings(inputs)
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        x = self.norm(x, name="Embedding-Norm")
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x, keras.layers.Dense, units=self.hidden_size, use_bias=False,
                kernel_initializer=self.initializer, name="Embedding-Mapping",
            )
        return x

    def attention_kwargs(self):
        return dict(super().attention_kwargs(), use_bias=False)

    def feedforward_kwargs(self):
        return dict(super().feedforward_kwargs(), use_bias=False)

    def apply_final_layers(self, x):
        if not self.with_mlm:
            return x
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x, keras.layers.Dense, units=self.embedding_size, use_bias=False,
                kernel_initializer=self.initializer, name="Output-Mapping",
            )
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name="Output-MLM-Dropout")
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        activation = "softmax" if self.with_mlm is True else self.with_mlm
        return self.apply(x, Activation, activation=activation, name="Output-MLM-Activation",
                          dtype=HEAD_DTYPE)

    # ------------------------------------------------------------------ names

    def variable_mapping(self):
        # bert4keras keeps RoFormer's names minus every beta, gamma and bias; the MLM
        # head has no weight of its own (tied embedding, no transform, no bias).
        rows = [
            row for row in super().variable_mapping()
            if row.keras.endswith(("/kernel", "/embeddings"))
            and not row.keras.startswith(("MLM-", "Pooler-", "NSP-"))
        ]
        rows.append(TensorMap("Output-Mapping/kernel"))
        return rows
