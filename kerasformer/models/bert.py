"""BERT (Devlin et al. 2018, arXiv:1810.04805) and RoBERTa (Liu et al. 2019,
arXiv:1907.11692): post-norm encoder with learned absolute positions and the
pooler / NSP / MLM heads of bert4keras."""
import keras

from ..checkpoints.loading import TensorMap
from ..layers import Activation, BiasAdd, Embedding, PositionEmbedding, TakeToken
from ..layers.masking import Add
from ..ops import get_activation
from .base import HEAD_DTYPE, Transformer


class BERT(Transformer):
    """BERT builder.

    Inputs: ``Input-Token`` int [batch, seq_len]; ``Input-Segment`` int [batch, seq_len]
    unless ``segment_vocab_size=0``; ``Input-Position`` int [batch, seq_len] with
    ``custom_position_ids=True``.

    Outputs (bert4keras convention): the sequence output [batch, seq_len, hidden] when no
    head is on; with one head, that head; with pool/NSP and MLM, ``[pool_or_nsp, mlm]``.
    Sequence outputs (hidden states, MLM) carry the Keras padding mask
    (``token_ids != pad_token_id``, :class:`~kerasformer.layers.Embedding`); pooled ones
    do not. One output is ``model.output`` itself; several are a list.

    Args (beyond :class:`Transformer`):
        max_position: number of learned positions (``max_position_embeddings``).
        segment_vocab_size: segment (token type) vocabulary; 0 drops the segment input.
        with_pool: add the pooler (``Pooler``, ``Pooler-Dense``); True means tanh, or an
            activation name.
        with_nsp: add the next-sentence head (``NSP-Proba``, softmax [batch, 2]);
            implies the pooler.
        with_mlm: add the MLM head tied to ``Embedding-Token``; True means softmax
            probabilities [batch, seq_len, vocab]; an activation name (``"linear"`` for
            logits) otherwise.
        hierarchical_position: extend positions hierarchically (True = alpha 0.4, or a
            float; kexue.fm/archives/7947).
        custom_position_ids: take position ids as an input instead of 0..seq_len-1.
    """

    hf_prefixes = ("bert.",)
    hf_top_level = ("cls.",)
    # The MLM decoder matrix is the tied token embedding; torch files may repeat it.
    checkpoint_ignore = (r"predictions\.decoder\.weight$", r"lm_head\.decoder\.weight$")

    def __init__(self, max_position=512, segment_vocab_size=2, with_pool=False,
                 with_nsp=False, with_mlm=False, hierarchical_position=None,
                 custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        self.max_position = max_position
        self.segment_vocab_size = segment_vocab_size
        self.with_pool = with_pool or with_nsp
        self.with_nsp = with_nsp
        self.with_mlm = with_mlm
        self.hierarchical_position = hierarchical_position
        self.custom_position_ids = custom_position_ids

    # ------------------------------------------------------------------ graph

    def get_inputs(self):
        shape = (self.sequence_length,)
        inputs = [keras.Input(shape, dtype="int32", name=self.prefixed("Input-Token"))]
        if self.segment_vocab_size > 0:
            inputs.append(keras.Input(shape, dtype="int32", name=self.prefixed("Input-Segment")))
        if self.custom_position_ids:
            inputs.append(keras.Input(shape, dtype="int32", name=self.prefixed("Input-Position")))
        return inputs

    def segment_ids_of(self, inputs):
        return inputs[1] if self.segment_vocab_size > 0 else None

    def apply_token_embeddings(self, inputs):
        """``Embedding-Token`` plus, with segments, ``Embedding-Segment`` (or the token
        table itself when ``shared_segment_embeddings``, as GPT does)."""
        x = self.apply(
            inputs[0], Embedding, input_dim=self.vocab_size, output_dim=self.embedding_size,
            embeddings_initializer=self.initializer, pad_token_id=self.embedding_pad_id,
            name="Embedding-Token",
        )
        if self.segment_vocab_size > 0:
            if getattr(self, "shared_segment_embeddings", False):
                s = self.apply(inputs[1], Embedding, name="Embedding-Token")
            else:
                s = self.apply(
                    inputs[1], Embedding, input_dim=self.segment_vocab_size,
                    output_dim=self.embedding_size, embeddings_initializer=self.initializer,
                    name="Embedding-Segment",
                )
            x = self.apply([x, s], Add, name="Embedding-Token-Segment")
        return x

    def apply_position_embeddings(self, x, inputs):
        """Adds ``Embedding-Position`` (learned absolute positions; custom ids, cached
        decoding offsets and hierarchical extension handled here)."""
        arguments = {}
        if self.custom_position_ids:
            x = [x, inputs[-1]]
        elif self.position_ids is not None:
            arguments["position_ids"] = self.position_ids
        return self.apply(
            x, PositionEmbedding, arguments=arguments, input_dim=self.max_position,
            output_dim=self.embedding_size, merge_mode="add",
            hierarchical=self.hierarchical_position,
            custom_position_ids=self.custom_position_ids,
            embeddings_initializer=self.initializer, name="Embedding-Position",
        )

    def apply_embeddings(self, inputs):
        x = self.apply_token_embeddings(inputs)
        x = self.apply_position_embeddings(x, inputs)
        x = self.norm(x, name="Embedding-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                x, keras.layers.Dense, units=self.hidden_size,
                kernel_initializer=self.initializer, name="Embedding-Mapping",
            )
        return x

    def apply_final_layers(self, x):
        outputs = [x]
        if self.with_pool:
            pool_activation = "tanh" if self.with_pool is True else self.with_pool
            y = self.apply(x, TakeToken, index=0, name="Pooler")
            y = self.apply(
                y, keras.layers.Dense, units=self.hidden_size,
                activation=get_activation(pool_activation),
                kernel_initializer=self.initializer, name="Pooler-Dense",
                dtype=HEAD_DTYPE,
            )
            if self.with_nsp:
                y = self.apply(
                    y, keras.layers.Dense, units=2, activation="softmax",
                    kernel_initializer=self.initializer, name="NSP-Proba",
                    dtype=HEAD_DTYPE,
                )
            outputs.append(y)
        if self.with_mlm:
            mlm_activation = "softmax" if self.with_mlm is True else self.with_mlm
            y = self.apply(
                x, keras.layers.Dense, units=self.embedding_size,
                activation=get_activation(self.hidden_act),
                kernel_initializer=self.initializer, name="MLM-Dense",
            )
            y = self.norm(y, name="MLM-Norm")
            y = self.apply(y, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
            y = self.apply(y, BiasAdd, name="MLM-Bias")
            y = self.apply(y, Activation, activation=mlm_activation, name="MLM-Activation",
                           dtype=HEAD_DTYPE)
            outputs.append(y)
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]

    # ------------------------------------------------------------------ names

    def hf_save_prefix(self):
        # HF stores the encoder under `bert.` in models with heads (BertForPreTraining)
        # and bare in BertModel; from_pretrained accepts both.
        return self.hf_prefixes[0] if (self.with_mlm or self.with_nsp) else ""

    def variable_mapping(self):
        return bert_variable_mapping(self.num_hidden_layers, self.hidden_size != self.embedding_size)


def _dense(keras_path, google, hf):
    return [
        TensorMap(f"{keras_path}/kernel", f"{google}/kernel", f"{hf}.weight", hf_transpose=True),
        TensorMap(f"{keras_path}/bias", f"{google}/bias", f"{hf}.bias"),
    ]


def _norm(keras_path, google, hf):
    return [
        TensorMap(f"{keras_path}/gamma", f"{google}/gamma", f"{hf}.weight"),
        TensorMap(f"{keras_path}/beta", f"{google}/beta", f"{hf}.bias"),
    ]


def bert_variable_mapping(num_layers, embedding_mapping=False, head_names=None):
    """Every BERT weight's Google TF name and Hugging Face name (heads included).

    Args:
        num_layers: number of blocks.
        embedding_mapping: the model has ``Embedding-Mapping`` (embedding_size != hidden).
        head_names: HF names of the MLM head as a dict with keys ``dense``, ``norm``,
            ``bias`` (RoBERTa uses ``lm_head.*``); default BERT's ``cls.predictions.*``.
    """
    heads = head_names or {
        "dense": "cls.predictions.transform.dense",
        "norm": "cls.predictions.transform.LayerNorm",
        "bias": ("cls.predictions.bias", "cls.predictions.decoder.bias"),
    }
    rows = [
        TensorMap("Embedding-Token/embeddings", "bert/embeddings/word_embeddings",
                  "embeddings.word_embeddings.weight", vocab=True),
        TensorMap("Embedding-Segment/embeddings", "bert/embeddings/token_type_embeddings",
                  "embeddings.token_type_embeddings.weight"),
        TensorMap("Embedding-Position/embeddings", "bert/embeddings/position_embeddings",
                  "embeddings.position_embeddings.weight"),
        *_norm("Embedding-Norm", "bert/embeddings/LayerNorm", "embeddings.LayerNorm"),
    ]
    if embedding_mapping:
        rows += _dense("Embedding-Mapping", "bert/encoder/embedding_hidden_mapping_in",
                       "encoder.embedding_hidden_mapping_in")
    for i in range(num_layers):
        att = f"Transformer-{i}-MultiHeadSelfAttention"
        ffn = f"Transformer-{i}-FeedForward"
        g = f"bert/encoder/layer_{i}"
        h = f"encoder.layer.{i}"
        rows += _dense(f"{att}/q_dense", f"{g}/attention/self/query", f"{h}.attention.self.query")
        rows += _dense(f"{att}/k_dense", f"{g}/attention/self/key", f"{h}.attention.self.key")
        rows += _dense(f"{att}/v_dense", f"{g}/attention/self/value", f"{h}.attention.self.value")
        rows += _dense(f"{att}/o_dense", f"{g}/attention/output/dense", f"{h}.attention.output.dense")
        rows += _norm(f"{att}-Norm", f"{g}/attention/output/LayerNorm",
                      f"{h}.attention.output.LayerNorm")
        rows += _dense(f"{ffn}/i0_dense", f"{g}/intermediate/dense", f"{h}.intermediate.dense")
        rows += _dense(f"{ffn}/o_dense", f"{g}/output/dense", f"{h}.output.dense")
        rows += _norm(f"{ffn}-Norm", f"{g}/output/LayerNorm", f"{h}.output.LayerNorm")
    rows += _dense("Pooler-Dense", "bert/pooler/dense", "pooler.dense")
    rows += [
        # Google stores the NSP matrix as [2, hidden] (like torch), not [hidden, 2].
        TensorMap("NSP-Proba/kernel", "cls/seq_relationship/output_weights",
                  "cls.seq_relationship.weight", google_transpose=True, hf_transpose=True),
        TensorMap("NSP-Proba/bias", "cls/seq_relationship/output_bias",
                  "cls.seq_relationship.bias"),
    ]
    rows += _dense("MLM-Dense", "cls/predictions/transform/dense", heads["dense"])
    rows += _norm("MLM-Norm", "cls/predictions/transform/LayerNorm", heads["norm"])
    rows.append(TensorMap("MLM-Bias/bias", "cls/predictions/output_bias", heads["bias"],
                          vocab=True))
    return rows


class RoBERTa(BERT):
    """RoBERTa: BERT's architecture; Hugging Face checkpoints use the ``roberta.`` prefix,
    an ``lm_head`` and position ids that start at ``pad_token_id + 1`` (those first rows
    of the table are dropped on load, so positions here start at 0 as in BERT; exact for
    right-padded input). Google-format Chinese RoBERTa-wwm checkpoints are plain BERT."""

    hf_prefixes = ("roberta.",)
    hf_top_level = ("lm_head.",)

    def variable_mapping(self):
        rows = bert_variable_mapping(
            self.num_hidden_layers, self.hidden_size != self.embedding_size,
            head_names={"dense": "lm_head.dense", "norm": "lm_head.layer_norm",
                        "bias": ("lm_head.bias", "lm_head.decoder.bias")},
        )
        offset = self.pad_token_id + 1
        for i, row in enumerate(rows):
            if row.keras == "Embedding-Position/embeddings":
                rows[i] = TensorMap(
                    row.keras, row.google, row.hf,
                    hf_load=lambda a: a[offset:],
                    hf_save=lambda a: _prepend_zero_rows(a, offset),
                )
        return rows


def _prepend_zero_rows(array, n):
    import numpy as np

    return np.concatenate([np.zeros((n,) + array.shape[1:], array.dtype), array], axis=0)
