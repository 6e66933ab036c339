"""The GPT family of bert4keras: causal language models with a tied LM head.

* :class:`GPT` — OpenAI GPT (Radford et al. 2018, "Improving Language Understanding by
  Generative Pre-Training"; github.com/openai/finetune-transformer-lm) as bert4keras
  builds it: BERT's post-norm blocks, no embedding LayerNorm, causal mask. CDial-GPT
  (arXiv:2008.03946) is this model.
* :class:`GPT2` — GPT-2 (Radford et al. 2019, "Language Models are Unsupervised
  Multitask Learners"): pre-norm blocks and a final ``Output-Norm``.
* :class:`GPT2ML` — gpt2-ml (github.com/imcaspar/gpt2-ml, built on Grover,
  arXiv:1905.12616): embedding LayerNorm, an attention sub-block without normalization
  and a feed-forward sub-block normalized both before and after.

All three are causal language models by construction: they inherit :class:`LMMask`
(as bert4keras's ``GPT(LM_Mask, BERT)``; generation recognizes causal models by it) and
refine its mask in :meth:`GPT.compute_attention_mask`. ``application="encoder"`` and
``application="lm"`` build the same causal model; ``application="unilm"`` gives GPT
(with segments) a UniLM mask. All end in
the token embedding used as the output projection followed by ``LM-Activation``
(softmax by default, as bert4keras; ``final_activation="linear"`` gives logits).

Checkpoints: Hugging Face ``OpenAIGPTLMHeadModel`` / ``GPT2LMHeadModel`` files
(``transformer.*``; Conv1D weights are [in, out] like Keras kernels, and ``c_attn`` holds
the query, key and value projections side by side) and the Google/bert4keras TF names
(``gpt/...`` for GPT and GPT-2, gpt2-ml's ``newslm/...``).
"""
import keras

from ..checkpoints.loading import TensorMap
from ..layers import Activation, AttentionMask, Embedding
from .base import HEAD_DTYPE, LMMask
from .bert import BERT

# Hugging Face OpenAI GPT's `afn` names: its "gelu" is the tanh approximation.
_OPENAI_ACTIVATIONS = {"gelu": "gelu_new", "swish": "silu"}


class GPT(LMMask, BERT):
    """GPT builder (bert4keras ``GPT``): embeddings token + segment + position without a
    LayerNorm, BERT's post-norm blocks under a causal mask, tied LM head.

    Inputs: ``Input-Token`` int [batch, seq_len]; ``Input-Segment`` int [batch, seq_len]
    unless ``segment_vocab_size=0``; ``Input-Position`` with ``custom_position_ids``.

    Output: ``LM-Activation`` [batch, seq_len, vocab] float — softmax probabilities by
    default, logits with ``final_activation="linear"``.

    Args (beyond :class:`BERT`, whose pooler/NSP/MLM heads GPT does not have):
        final_activation: activation of the LM output (``"softmax"`` or ``"linear"``).
        shared_segment_embeddings: embed segment ids with ``Embedding-Token`` (segment
            ids are token ids, e.g. CDial-GPT's speaker tokens; Hugging Face OpenAI GPT
            embeds ``token_type_ids`` this way). Set it for HF OpenAI GPT checkpoints,
            which hold no segment table (or use ``segment_vocab_size=0``).
        intermediate_size: FFN size; None means 4 * hidden_size (HF OpenAI GPT/GPT-2).
        hidden_act: FFN activation; None takes ``afn`` (an HF OpenAI GPT config key,
            whose ``"gelu"`` is the tanh form) or else the family default.
        tie_word_embeddings: must be True (the LM head is the token embedding).
        pad_token_id: default None: only the causal rule masks attention. That is exact
            for right-padded batches (no real token attends to a later position) and safe
            where id 0 is a real token (OpenAI GPT's and GPT-2's BPE vocabularies). Give
            an id to hide keys holding it as well, which left padding needs
            (bert4keras masked id 0, the ``[PAD]`` of CDial-GPT's BERT vocabulary). An id
            equal to ``bos_token_id`` or ``eos_token_id`` is not used by the mask:
            configs often set pad = eos (GPT-2's ``<|endoftext|>``, which also opens its
            prompts), and hiding it would hide real tokens.
        bos_token_id / eos_token_id: ids of the special tokens (HF config keys).
        layer_norm_epsilon: default 1e-12 as bert4keras's GPT (HF configs say 1e-5).

    Raises:
        TypeError: for ``with_pool`` / ``with_nsp`` / ``with_mlm``.
        ValueError: when ``embedding_size`` differs from ``hidden_size`` (the tied head
            reads the hidden state directly).
        NotImplementedError: for ``tie_word_embeddings=False``.
    """

    hf_prefixes = ("transformer.",)
    hf_top_level = ()
    # The LM head is the tied token embedding; `attn.bias`/`masked_bias` are causal-mask
    # buffers that older torch files store.
    checkpoint_ignore = (r"(^|\.)lm_head\.weight$", r"\.attn\.bias$", r"\.attn\.masked_bias$")
    default_hidden_act = "gelu"
    # bert4keras's GPT has no embedding LayerNorm; gpt2-ml has one.
    embedding_norm = False
    # Hugging Face names (OpenAI GPT) and the scope of the block LayerNorms in the
    # Google/bert4keras names ("output": BERT's post-norm names).
    hf_token_embeddings = "tokens_embed.weight"
    hf_position_embeddings = "positions_embed.weight"
    google_norm_scope = "output"

    def __init__(self, final_activation="softmax", shared_segment_embeddings=False,
                 intermediate_size=None, hidden_act=None, afn=None, tie_word_embeddings=True,
                 pad_token_id=None, bos_token_id=None, eos_token_id=None, **kwargs):
        for head in ("with_pool", "with_nsp", "with_mlm"):
            if kwargs.pop(head, False):
                raise TypeError(
                    f"{type(self).__name__} has no {head} head; its output is the tied LM "
                    f"head (final_activation={final_activation!r})"
                )
        if not tie_word_embeddings:
            raise NotImplementedError(
                f"{type(self).__name__} ties its LM head to Embedding-Token; untied "
                "output embeddings (tie_word_embeddings=False) are not supported"
            )
        hidden_size = kwargs.get("hidden_size")
        embedding_size = kwargs.get("embedding_size")
        if embedding_size and hidden_size and embedding_size != hidden_size:
            raise ValueError(
                f"{type(self).__name__}'s tied LM head needs embedding_size == hidden_size "
                f"(got {embedding_size} and {hidden_size})"
            )
        if hidden_act is None:
            hidden_act = _OPENAI_ACTIVATIONS.get(afn, afn) if afn else self.default_hidden_act
        if intermediate_size is None and hidden_size is not None:
            intermediate_size = 4 * hidden_size
        super().__init__(intermediate_size=intermediate_size, hidden_act=hidden_act,
                         pad_token_id=pad_token_id, **kwargs)
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.final_activation = final_activation
        self.shared_segment_embeddings = shared_segment_embeddings

    # ------------------------------------------------------------------ graph

    def compute_attention_mask(self, inputs):
        """Causal mask [batch, 1, seq_len, seq_len], also hiding keys equal to the
        padding id when there is one (:attr:`attention_pad_id`)."""
        pad = self.attention_pad_id
        return self.apply(
            self.token_ids_of(inputs), AttentionMask, mode="causal",
            # Token ids are non-negative, so -1 hides nothing.
            pad_id=-1 if pad is None else pad, name="Attention-Mask",
        )

    @property
    def attention_pad_id(self):
        """The id whose keys the attention mask hides (None: causal rule only)."""
        pad = self.pad_token_id
        if pad is None or pad in (self.bos_token_id, self.eos_token_id):
            return None
        return pad

    def apply_embeddings(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        x = self.apply_token_embeddings(inputs)
        x = self.apply_position_embeddings(x, inputs)
        if self.embedding_norm:
            x = self.norm(x, name="Embedding-Norm")
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                          name="Embedding-Dropout")

    def apply_final_layers(self, x):
        x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(x, Activation, activation=self.final_activation,
                          name="LM-Activation", dtype=HEAD_DTYPE)

    # ------------------------------------------------------------------ names

    def hf_save_prefix(self):
        return self.hf_prefixes[0]

    def variable_mapping(self):
        rows = [
            TensorMap("Embedding-Token/embeddings", "gpt/embeddings/word_embeddings",
                      self.hf_token_embeddings, vocab=True),
            TensorMap("Embedding-Segment/embeddings", "gpt/embeddings/token_type_embeddings"),
            TensorMap("Embedding-Position/embeddings", "gpt/embeddings/position_embeddings",
                      self.hf_position_embeddings),
        ]
        scope = self.google_norm_scope
        for i in range(self.num_hidden_layers):
            att = f"Transformer-{i}-MultiHeadSelfAttention"
            ffn = f"Transformer-{i}-FeedForward"
            g, h = f"gpt/transformer/layer_{i}", f"h.{i}"
            rows += self.fused_attention_rows(att, f"{g}/attention", f"{h}.attn")
            rows += _layer_norm(f"{att}-Norm", f"{g}/attention/{scope}/LayerNorm", f"{h}.ln_1")
            rows += _linear(f"{ffn}/i0_dense", f"{g}/intermediate/dense", f"{h}.mlp.c_fc")
            rows += _linear(f"{ffn}/o_dense", f"{g}/output/dense", f"{h}.mlp.c_proj")
            rows += _layer_norm(f"{ffn}-Norm", f"{g}/{scope}/LayerNorm", f"{h}.ln_2")
        return rows

    def fused_attention_rows(self, keras_path, google, hf):
        """Rows of one self-attention layer: Google/bert4keras names keep query, key and
        value apart (BERT's names under `google`); Hugging Face's ``{hf}.c_attn``
        concatenates them on its last axis ([in, 3*out] Conv1D weight, [3*out] bias)."""
        q = self.num_attention_heads * self.attention_key_size
        v = self.num_attention_heads * self.attention_head_size
        return [
            *_linear(f"{keras_path}/q_dense", f"{google}/self/query", f"{hf}.c_attn", (0, q)),
            *_linear(f"{keras_path}/k_dense", f"{google}/self/key", f"{hf}.c_attn", (q, 2 * q)),
            *_linear(f"{keras_path}/v_dense", f"{google}/self/value", f"{hf}.c_attn",
                     (2 * q, 2 * q + v)),
            *_linear(f"{keras_path}/o_dense", f"{google}/output/dense", f"{hf}.c_proj"),
        ]


class GPT2(GPT):
    """GPT-2 builder (bert4keras ``GPT2``; Hugging Face ``GPT2LMHeadModel``).

    Pre-norm blocks (``LN -> attention -> add``, ``LN -> FFN -> add``; Radford et al.
    2019, section 2.3), learned positions, a final ``Output-Norm`` and the LM head tied
    to ``Embedding-Token``.

    Inputs: ``Input-Token`` int [batch, seq_len] only (``segment_vocab_size`` defaults
    to 0; ``custom_position_ids=True`` adds ``Input-Position``).
    Output: ``LM-Activation`` [batch, seq_len, vocab]: softmax probabilities, or logits
    with ``final_activation="linear"``.

    Args (beyond :class:`GPT`; Hugging Face ``config.json`` keys are understood):
        hidden_act: default ``"gelu_new"`` (tanh), HF's ``activation_function``.
        layer_norm_epsilon: default 1e-5.
        pad_token_id: default None, as :class:`GPT` (GPT-2 has no padding token; id 0
            is the real token ``"!"``).
        scale_attn_weights: divide attention logits by sqrt(head size) (HF key).
        scale_attn_by_inverse_layer_idx: HF option, not supported (must be False).

    Raises:
        NotImplementedError: for ``scale_attn_by_inverse_layer_idx=True``.
    """

    pre_norm = True
    default_hidden_act = "gelu_new"
    hf_token_embeddings = "wte.weight"
    hf_position_embeddings = "wpe.weight"
    google_norm_scope = "input"

    def __init__(self, segment_vocab_size=0, layer_norm_epsilon=1e-5, scale_attn_weights=True,
                 scale_attn_by_inverse_layer_idx=False, **kwargs):
        if scale_attn_by_inverse_layer_idx:
            raise NotImplementedError(
                "GPT2 with scale_attn_by_inverse_layer_idx=True is not supported"
            )
        super().__init__(segment_vocab_size=segment_vocab_size,
                         layer_norm_epsilon=layer_norm_epsilon, **kwargs)
        self.scale_attn_weights = scale_attn_weights

    def attention_kwargs(self):
        return dict(super().attention_kwargs(), attention_scale=self.scale_attn_weights)

    def apply_final_layers(self, x):
        # No dropout after Output-Norm, as in GPT-2 (bert4keras adds one; training only).
        x = self.norm(x, name="Output-Norm")
        return super().apply_final_layers(x)

    def variable_mapping(self):
        return super().variable_mapping() + _layer_norm(
            "Output-Norm", "gpt/output/LayerNorm", "ln_f")


class GPT2ML(GPT):
    """gpt2-ml builder (bert4keras ``GPT2_ML``; github.com/imcaspar/gpt2-ml, the Grover
    code of arXiv:1905.12616). Despite the name its block is closer to GPT's:

    ``Embedding-Norm(token + position)``, then per block
    ``x = x + Attention(x)`` (no normalization) and
    ``x = Norm-1(x + FFN(Norm-0(x)))``; the LM head is the tied token embedding.

    Inputs: ``Input-Token`` int [batch, seq_len] (``segment_vocab_size`` defaults to 0).
    Output: ``LM-Activation`` [batch, seq_len, vocab] (softmax, or logits with
    ``final_activation="linear"``).

    Checkpoints: the released TF checkpoints' ``newslm/...`` names (no HF format).
    Defaults: ``hidden_act="gelu"`` (exact erf, as gpt2-ml's code whatever its config
    says), ``layer_norm_epsilon=1e-5``, ``pad_token_id=0`` (the ``[PAD]`` of the BERT
    vocabulary it was released with, never a text token; bert4keras masked it too).
    """

    # The shared block normalizes before each sub-block; `norm` below removes the
    # attention one and renames the FFN one, `apply_main_layers` adds the closing norm.
    pre_norm = True
    embedding_norm = True

    def __init__(self, segment_vocab_size=0, layer_norm_epsilon=1e-5, pad_token_id=0,
                 **kwargs):
        super().__init__(segment_vocab_size=segment_vocab_size,
                         layer_norm_epsilon=layer_norm_epsilon, pad_token_id=pad_token_id,
                         **kwargs)

    def norm(self, x, name, **kwargs):
        if name.endswith("-MultiHeadSelfAttention-Norm"):
            return x
        if name.endswith("-FeedForward-Norm"):
            name += "-0"
        return super().norm(x, name, **kwargs)

    def apply_main_layers(self, x, index):
        x = super().apply_main_layers(x, index)
        return self.norm(x, name=f"Transformer-{index}-FeedForward-Norm-1")

    def variable_mapping(self):
        rows = [
            TensorMap("Embedding-Token/embeddings", "newslm/embeddings/word_embed",
                      vocab=True),
            TensorMap("Embedding-Position/embeddings", "newslm/embeddings/pos_embed"),
            *_layer_norm("Embedding-Norm", "newslm/embeddings/LayerNorm_embed_norm"),
        ]
        for i in range(self.num_hidden_layers):
            att = f"Transformer-{i}-MultiHeadSelfAttention"
            ffn = f"Transformer-{i}-FeedForward"
            g = f"newslm/layer{i:02d}"
            rows += _linear(f"{att}/q_dense", f"{g}/query_layer")
            rows += _linear(f"{att}/k_dense", f"{g}/key_layer")
            rows += _linear(f"{att}/v_dense", f"{g}/value_layer")
            rows += _linear(f"{att}/o_dense", f"{g}/context_projection_layer")
            rows += _layer_norm(f"{ffn}-Norm-0", f"{g}/LayerNorm_mlp_ln0")
            rows += _linear(f"{ffn}/i0_dense", f"{g}/intermediate")
            rows += _linear(f"{ffn}/o_dense", f"{g}/output")
            rows += _layer_norm(f"{ffn}-Norm-1", f"{g}/LayerNorm_mlp_ln1")
        return rows


# ---------------------------------------------------------------------- name helpers


class _Slice:
    """``hf_load`` of one part of a fused tensor: ``array[..., start:stop]``."""

    def __init__(self, start, stop):
        self.start, self.stop = start, stop

    def __call__(self, array):
        return array[..., self.start:self.stop]


def _linear(keras_path, google, hf=None, hf_slice=None):
    """Kernel and bias rows of a Dense layer. HF GPT's Conv1D weights are [in, out] like
    Keras kernels (no transpose); `hf_slice` = (start, stop) selects a fused part."""
    load = _Slice(*hf_slice) if hf_slice else None
    return [
        TensorMap(f"{keras_path}/kernel", f"{google}/kernel", hf and f"{hf}.weight",
                  hf_load=load, hf_fused=bool(hf_slice)),
        TensorMap(f"{keras_path}/bias", f"{google}/bias", hf and f"{hf}.bias", hf_load=load,
                  hf_fused=bool(hf_slice)),
    ]


def _layer_norm(keras_path, google, hf=None):
    return [
        TensorMap(f"{keras_path}/gamma", f"{google}/gamma", hf and f"{hf}.weight"),
        TensorMap(f"{keras_path}/beta", f"{google}/beta", hf and f"{hf}.bias"),
    ]
