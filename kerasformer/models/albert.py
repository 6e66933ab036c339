"""ALBERT (Lan et al. 2019, arXiv:1909.11942): BERT with a factorized embedding
(vocabulary -> embedding_size E -> ``Embedding-Mapping`` -> hidden H) and one set of
block weights shared by every layer.

Two builders, as in bert4keras:

* :class:`ALBERT` (``model="albert"``) names every block ``Transformer-...`` (no index),
  so the name-keyed ``apply`` hands all L blocks the same layers: the weights are
  shared, as in the paper.
* :class:`ALBERTUnshared` (``model="albert_unshared"``) builds L independent blocks
  ``Transformer-{i}-...`` (a BERT with ALBERT's embeddings) and loads the one shared
  tensor set of the checkpoint into every block, so they can be fine-tuned apart.

Only the released layout is supported: one hidden group of one inner layer
(``num_hidden_groups == inner_group_num == 1``), which is what every Google and Hugging
Face ALBERT checkpoint uses.
"""
import dataclasses
import warnings

import keras
import numpy as np

from .bert import BERT, _dense, _norm, bert_variable_mapping

# The one shared block of a Google ALBERT checkpoint and of a Hugging Face one.
_GOOGLE_BLOCK = "bert/encoder/transformer/group_0/inner_group_0"
_HF_BLOCK = "encoder.albert_layer_groups.0.albert_layers.0"

# Heads whose Hugging Face names differ from BERT's (the pooler is a bare Linear, the
# sentence-order head sits where BERT's NSP head is); Google names are BERT's.
_HF_HEAD_NAMES = {
    "Pooler-Dense/kernel": "pooler.weight",
    "Pooler-Dense/bias": "pooler.bias",
    "NSP-Proba/kernel": "sop_classifier.classifier.weight",
    "NSP-Proba/bias": "sop_classifier.classifier.bias",
}


class ALBERT(BERT):
    """ALBERT builder: BERT's inputs, embeddings (of width ``embedding_size``) and heads,
    with every block sharing one set of weights.

    Inputs / outputs as :class:`BERT`: ``Input-Token`` (and ``Input-Segment``) int
    [batch, seq_len]; the sequence output float [batch, seq_len, hidden], or the heads.
    With ``with_nsp`` the ``NSP-Proba`` head is ALBERT's sentence-order-prediction head
    (softmax [batch, 2]); ``with_mlm`` projects to ``embedding_size`` (``MLM-Dense``,
    ``MLM-Norm``) and is tied to ``Embedding-Token``.

    The block weights live in the layers ``Transformer-MultiHeadSelfAttention``,
    ``Transformer-MultiHeadSelfAttention-Norm``, ``Transformer-FeedForward`` and
    ``Transformer-FeedForward-Norm`` (bert4keras names).

    Checkpoints: Google TF (``bert/encoder/transformer/group_0/inner_group_0/...``,
    ``bert/encoder/embedding_hidden_mapping_in``, ``cls/predictions/...``,
    ``cls/seq_relationship/...``) and Hugging Face (``albert.encoder.albert_layer_groups.0
    .albert_layers.0...``, ``albert.pooler``, ``predictions.*``, ``sop_classifier.*``).

    ``Embedding-Mapping`` exists only when ``embedding_size != hidden_size`` (as in
    Google's code); Hugging Face always has ``embedding_hidden_mapping_in``, so an HF
    checkpoint with E == H is rejected with that tensor listed as unexpected. Every
    released ALBERT has E < H.

    Args (beyond :class:`BERT`):
        num_hidden_groups / inner_group_num: ALBERT config entries; only 1 is supported.

    Raises:
        ValueError: for ``num_hidden_groups`` or ``inner_group_num`` other than 1.
    """

    hf_prefixes = ("albert.",)
    hf_top_level = ("predictions.", "sop_classifier.")
    # The MLM decoder matrix is the tied token embedding; torch files may repeat it.
    checkpoint_ignore = (r"(^|\.)predictions\.decoder\.weight$",)
    # The layer-name stem of the shared block.
    shared_block_name = "Transformer"

    def __init__(self, num_hidden_groups=1, inner_group_num=1, **kwargs):
        if num_hidden_groups != 1 or inner_group_num != 1:
            raise ValueError(
                f"ALBERT with num_hidden_groups={num_hidden_groups} and inner_group_num="
                f"{inner_group_num} is not supported; only the released layout (1 and 1) "
                "is"
            )
        super().__init__(**kwargs)

    def apply_main_layers(self, x, index):
        return self.apply_transformer_block(x, index, name=self.shared_block_name)

    def block_names(self):
        """Layer-name stems of the blocks that load the checkpoint's shared block."""
        return [self.shared_block_name]

    def variable_mapping(self):
        rows = bert_variable_mapping(
            0, self.hidden_size != self.embedding_size,
            head_names={"dense": "predictions.dense", "norm": "predictions.LayerNorm",
                        "bias": ("predictions.bias", "predictions.decoder.bias")},
        )
        rows = [
            dataclasses.replace(r, hf=_HF_HEAD_NAMES[r.keras]) if r.keras in _HF_HEAD_NAMES
            else r
            for r in rows
        ]
        embeddings = [r for r in rows if r.keras.startswith("Embedding-")]
        heads = [r for r in rows if not r.keras.startswith("Embedding-")]
        blocks = [row for name in self.block_names() for row in albert_block_mapping(name)]
        return embeddings + blocks + heads


def albert_block_mapping(name):
    """Rows tying the block with layer-name stem `name` (``Transformer`` or
    ``Transformer-{i}``) to the checkpoint's one shared block."""
    att, ffn = f"{name}-MultiHeadSelfAttention", f"{name}-FeedForward"
    g, h = _GOOGLE_BLOCK, _HF_BLOCK
    return [
        *_dense(f"{att}/q_dense", f"{g}/attention_1/self/query", f"{h}.attention.query"),
        *_dense(f"{att}/k_dense", f"{g}/attention_1/self/key", f"{h}.attention.key"),
        *_dense(f"{att}/v_dense", f"{g}/attention_1/self/value", f"{h}.attention.value"),
        *_dense(f"{att}/o_dense", f"{g}/attention_1/output/dense", f"{h}.attention.dense"),
        *_norm(f"{att}-Norm", f"{g}/LayerNorm", f"{h}.attention.LayerNorm"),
        *_dense(f"{ffn}/i0_dense", f"{g}/ffn_1/intermediate/dense", f"{h}.ffn"),
        *_dense(f"{ffn}/o_dense", f"{g}/ffn_1/intermediate/output/dense", f"{h}.ffn_output"),
        *_norm(f"{ffn}-Norm", f"{g}/LayerNorm_1", f"{h}.full_layer_layer_norm"),
    ]


class ALBERTUnshared(ALBERT):
    """ALBERT with the sharing undone (bert4keras ``ALBERT_Unshared``): L independent
    blocks ``Transformer-{i}-...`` as in :class:`BERT`, each loaded from the checkpoint's
    one shared block, so a freshly loaded model computes exactly what :class:`ALBERT`
    does and fine-tuning may then move the layers apart.

    Saving (:meth:`save_weights_as_checkpoint`) writes ALBERT's format, which holds one
    block: block 0's weights are written; a warning names the blocks whose weights
    differ from block 0 (they are not saved).
    """

    def apply_main_layers(self, x, index):
        return self.apply_transformer_block(x, index)

    def block_names(self):
        # Several rows name the same checkpoint tensor; when saving, the last row
        # written wins, so block 0 comes last and is the one saved.
        return [f"Transformer-{i}" for i in reversed(range(self.num_hidden_layers))]

    def save_weights_as_checkpoint(self, path, format="tf"):
        """Save in ALBERT's format (one shared block, taken from block 0); see
        :meth:`Transformer.save_weights_as_checkpoint` for `path` and `format`.

        Warns (``UserWarning``) when blocks 1..L-1 differ from block 0."""
        weights = {w.path: w for w in self.model.weights}
        first = albert_block_mapping("Transformer-0")
        diverged = []
        for i in range(1, self.num_hidden_layers):
            for row0, row in zip(first, albert_block_mapping(f"Transformer-{i}")):
                a = keras.ops.convert_to_numpy(weights[self.prefix + row0.keras])
                b = keras.ops.convert_to_numpy(weights[self.prefix + row.keras])
                if not np.array_equal(a, b):
                    diverged.append(i)
                    break
        if diverged:
            warnings.warn(
                f"albert_unshared: blocks {diverged} differ from block 0, but ALBERT's "
                "checkpoint format holds one shared block; only block 0 is saved",
                stacklevel=2,
            )
        return super().save_weights_as_checkpoint(path, format)
