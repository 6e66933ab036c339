"""ELECTRA (Clark et al. 2020, arXiv:2003.10555): the discriminator, a BERT encoder
(with an ``embeddings_project`` Dense when ``embedding_size != hidden_size``) trained to
tell replaced tokens from original ones, with its per-token head."""
import dataclasses

import keras

from ..ops import get_activation
from .base import HEAD_DTYPE
from .bert import BERT, _dense, bert_variable_mapping


class ELECTRA(BERT):
    """ELECTRA discriminator builder (bert4keras ``ELECTRA``).

    Inputs as :class:`BERT`: ``Input-Token`` (and ``Input-Segment``) int [batch, seq_len].

    Outputs: the sequence output float [batch, seq_len, hidden], or with
    ``with_discriminator`` the replaced-token head [batch, seq_len, 1]:
    ``Discriminator-Dense`` (hidden units, the config's ``hidden_act``) then
    ``Discriminator-Prediction`` (1 unit). Hugging Face's ``ElectraForPreTraining``
    returns the same logits squeezed to [batch, seq_len].

    Checkpoints: Google TF (``electra/embeddings/...``, ``electra/embeddings_project``,
    ``electra/encoder/layer_{i}/...``, ``discriminator_predictions/dense``,
    ``discriminator_predictions/dense_1``) and Hugging Face (``electra.*``,
    ``discriminator_predictions.dense``, ``discriminator_predictions.dense_prediction``).
    The generator's tensors in a pretraining checkpoint (``generator/...``,
    ``generator_predictions...``, ``generator_lm_head``) are skipped.

    Args (beyond :class:`BERT`, which ELECTRA takes except the heads):
        with_discriminator: add the discriminator head; True means sigmoid
            probabilities, or an activation name (``"linear"`` for logits).

    Raises:
        TypeError: for ``with_pool``, ``with_nsp`` or ``with_mlm``: the ELECTRA
            discriminator has no pooler, NSP or MLM head.
    """

    hf_prefixes = ("electra.",)
    hf_top_level = ("discriminator_predictions.",)
    checkpoint_ignore = (
        r"^generator(_predictions)?/",
        r"(^|\.)generator_predictions\.",
        r"(^|\.)generator_lm_head\.",
    )

    def __init__(self, with_discriminator=False, **kwargs):
        heads = sorted(k for k in ("with_pool", "with_nsp", "with_mlm") if kwargs.get(k))
        if heads:
            raise TypeError(
                f"ELECTRA has no pooler, NSP or MLM head; got {heads} (use "
                "with_discriminator for the replaced-token head)"
            )
        super().__init__(**kwargs)
        self.with_discriminator = with_discriminator

    def apply_final_layers(self, x):
        if not self.with_discriminator:
            return x
        activation = "sigmoid" if self.with_discriminator is True else self.with_discriminator
        x = self.apply(
            x, keras.layers.Dense, units=self.hidden_size,
            activation=get_activation(self.hidden_act),
            kernel_initializer=self.initializer, name="Discriminator-Dense",
        )
        return self.apply(
            x, keras.layers.Dense, units=1, activation=get_activation(activation),
            kernel_initializer=self.initializer, name="Discriminator-Prediction",
            dtype=HEAD_DTYPE,
        )

    def hf_save_prefix(self):
        # ElectraForPreTraining nests the encoder under `electra.`; ElectraModel is bare.
        return self.hf_prefixes[0] if self.with_discriminator else ""

    def variable_mapping(self):
        rows = []
        for row in bert_variable_mapping(self.num_hidden_layers,
                                         self.hidden_size != self.embedding_size):
            if row.keras.startswith(("Pooler-", "NSP-", "MLM-")):
                continue
            if row.keras.startswith("Embedding-Mapping/"):
                leaf = row.keras.rsplit("/", 1)[1]
                hf_leaf = "weight" if leaf == "kernel" else "bias"
                row = dataclasses.replace(row, google=f"electra/embeddings_project/{leaf}",
                                          hf=f"embeddings_project.{hf_leaf}")
            else:
                row = dataclasses.replace(row, google="electra/" + row.google[len("bert/"):])
            rows.append(row)
        rows += _dense("Discriminator-Dense", "discriminator_predictions/dense",
                       "discriminator_predictions.dense")
        rows += _dense("Discriminator-Prediction", "discriminator_predictions/dense_1",
                       "discriminator_predictions.dense_prediction")
        return rows
