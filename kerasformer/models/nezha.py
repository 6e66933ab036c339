"""NEZHA (Wei et al. 2019, arXiv:1909.00204): BERT without absolute position embeddings,
with fixed sinusoidal relative positions clipped at ±64 inside every attention layer
("typical" relative attention of Shaw et al. 2018, arXiv:1803.02155)."""
import dataclasses

import keras

from ..layers import PositionEmbedding
from ..layers.attention import RelativePositionEmbedding
from .bert import BERT, bert_variable_mapping


class NEZHA(BERT):
    """NEZHA builder (bert4keras ``NEZHA``).

    Inputs, heads and outputs as :class:`BERT` (``Input-Token``, ``Input-Segment``
    int [batch, seq_len]; pooler / NSP / MLM heads), but no ``Embedding-Position``: the
    embeddings are token + segment, and every ``Transformer-{i}-MultiHeadSelfAttention``
    receives the relative embeddings ``a_ij`` of ``Embedding-Relative-Position``
    ([seq_len, seq_len, attention_key_size]): ``logits_ij = q_i.(k_j + a_ij)/sqrt(d)``,
    ``out_i = sum_j p_ij (v_j + a_ij)``, with ``a_ij`` row ``clip(j - i, -m, m) + m`` of a
    fixed interleaved sinusoidal table (see
    :func:`kerasformer.layers.attention.nezha_sinusoidal_table`). Nothing of it is
    trained or stored in checkpoints.

    With ``custom_position_ids=True`` the ``Input-Position`` ids replace ``0..seq_len-1``
    in the distances ``j - i`` (of the full forward; cached decoding measures distances
    between cache slots).

    Checkpoints: Google/Huawei TF names are BERT's (``bert/...``) without
    ``bert/embeddings/position_embeddings``; Hugging Face names are BERT's under
    ``nezha.`` (``transformers`` 4.x ``NezhaModel``; not in ``transformers`` 5).

    Args (beyond :class:`BERT`):
        max_relative_position: the clipping distance ``m`` (64: a 129-row table).
        layer_norm_epsilon: default 1e-7, bert4keras's (configs may say otherwise).

    Raises:
        ValueError (when called): ``attention_key_size != attention_head_size``.
    """

    hf_prefixes = ("nezha.",)
    fused_attention_unsupported = (
        "its relative position embeddings enter the values as well as the logits")
    # transformers 4.x saved the fixed relative table with every layer.
    checkpoint_ignore = BERT.checkpoint_ignore + (
        r"relative_positions_encoding\.positions_encoding$",
    )

    def __init__(self, max_relative_position=64, layer_norm_epsilon=1e-7, **kwargs):
        super().__init__(layer_norm_epsilon=layer_norm_epsilon, **kwargs)
        self.max_relative_position = max_relative_position
        self.custom_positions = None
        self.relative_positions = None

    # ------------------------------------------------------------------ graph

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        # BERT's embeddings minus the absolute positions: the PositionEmbedding layer that
        # BERT.apply_embeddings asks for is not created; custom position ids it would
        # have consumed are kept for the position scheme of this family.
        if layer is PositionEmbedding:
            if self.custom_position_ids:
                inputs, self.custom_positions = inputs
            return inputs
        return super().apply(inputs, layer, arguments, **kwargs)

    def apply_embeddings(self, inputs):
        self.custom_positions = None
        x = super().apply_embeddings(inputs)
        self.relative_positions = self.compute_relative_positions(x)
        return x

    def compute_relative_positions(self, x):
        """``Embedding-Relative-Position`` for the queries of `x` against every key."""
        arguments = {}
        if self.caches is not None:
            # Decoding: distances between cache slots. They equal the distances between
            # positions for any per-row offset (left-padded batches), which the per-row
            # position ids measured against the slots would not.
            new_length = keras.ops.shape(x)[1]
            max_length = keras.ops.shape(self.caches["self-0"][0])[1]
            arguments["position_ids"] = (
                keras.ops.arange(new_length, dtype="int32")[None] + self.cache_index)
            arguments["key_positions"] = keras.ops.arange(max_length, dtype="int32")[None]
        elif self.custom_positions is not None:
            arguments["position_ids"] = self.custom_positions
        return self.apply(
            x, RelativePositionEmbedding, arguments=arguments,
            max_distance=self.max_relative_position, output_dim=self.attention_key_size,
            name="Embedding-Relative-Position",
        )

    def attention_arguments(self, index):
        arguments = super().attention_arguments(index)
        if self.relative_positions is not None:
            arguments["relative_positions"] = self.relative_positions
        return arguments

    # ------------------------------------------------------------------ names

    def variable_mapping(self):
        rows = bert_variable_mapping(self.num_hidden_layers,
                                     self.hidden_size != self.embedding_size)
        return [r for r in rows if r.keras != "Embedding-Position/embeddings"]


def replace_rows(rows, **changes_by_keras_path):
    """``rows`` with the :class:`TensorMap` fields in ``changes_by_keras_path[row.keras]``
    replaced (a dict of field -> value per Keras weight path)."""
    return [
        dataclasses.replace(row, **changes_by_keras_path[row.keras])
        if row.keras in changes_by_keras_path else row
        for row in rows
    ]
