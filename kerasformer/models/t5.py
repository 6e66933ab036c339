"""T5 (Raffel et al. 2019, arXiv:1910.10683): the encoder-decoder of bert4keras's
``T5_Encoder`` / ``T5_Decoder`` / ``T5``, exact against Hugging Face's
``T5ForConditionalGeneration`` / ``MT5ForConditionalGeneration``.

Architecture: pre-norm blocks with RMSNorm (no centring, no bias, epsilon 1e-6, float32),
no biases anywhere, attention logits *not* scaled by 1/sqrt(d), a bucketed relative
position bias owned by the first block of each stack and added in every block
(bidirectional in the encoder, causal in the decoder; cross-attention has none), a final
norm per stack, and a decoder whose blocks add cross-attention over the encoder output.

Versions:

* ``t5`` / ``t5.1.0`` (:class:`T5`): ReLU FFN; the LM head is the shared token embedding
  and the decoder output is multiplied by ``d_model**-0.5`` before it.
* ``t5.1.1`` / ``mt5.1.1`` (:class:`T5V11`; kexue.fm/archives/7867): gated-GELU FFN
  (``gelu_new`` x linear), an untied ``lm_head`` and no rescaling.

The FFN follows the config's ``feed_forward_proj`` whatever the version.

Generation protocol (what ``kerasformer.generation`` relies on), for a built
:class:`T5` / :class:`T5V11` builder ``t5`` (``return_keras_model=False``):

* ``t5.encoder`` / ``t5.decoder``: the encoder and decoder as `keras.Model`s, as in
  bert4keras (they share the layers of ``t5.model``); ``t5.encoder_builder`` /
  ``t5.decoder_builder``: their builders (bert4keras ``t5._encoder`` / ``t5._decoder``);
* ``t5.encoder``: ``Encoder-Input-Token`` int [B, S] -> encoder output float
  [B, S, H] (padding positions zeroed); ``t5.decoder``: ``[Input-Context,
  Decoder-Input-Token]`` -> the decoder output;
* ``t5.decoder_builder.init_caches(batch_size, max_length, context)`` -> dict: ``"self-i"``
  zeros ([B, max_length, heads, d_kv] keys and values) and ``"cross-i"`` the keys and
  values of `context` ([B, S, H] encoder output) projected by block i's cross-attention
  (read-only);
* ``t5.decoder_builder.call_with_cache([decoder_token_ids], caches, cache_index, attention_mask,
  context_mask=encoder_mask)`` -> ``(outputs, caches)``: `decoder_token_ids` int
  [B, new_len] are written at ``cache_index``; `attention_mask` bool
  [B or 1, 1, new_len, max_length] says which cache slots each new token sees (causal
  over the written slots); `encoder_mask` bool [B, 1, 1, S] is the encoder padding mask
  (``encoder_token_ids != pad_token_id``); outputs are probabilities
  [B, new_len, vocab] (``with_lm=True``, the default) or logits (``with_lm="linear"``).
  The relative bias uses the query slots ``cache_index + i`` against key slots
  ``0..max_length-1``, as Hugging Face's cached decoding does.
* ``t5.decoder_start_token_id`` (HF ``decoder_start_token_id``, default 0 = pad) and
  ``t5.eos_token_id`` (default 1).
"""
import keras
import numpy as np
from keras import ops

from ..checkpoints.loading import TensorMap
from ..checkpoints.readers import open_checkpoint
from ..layers import Activation, AttentionMask, Embedding
from ..layers.masking import DropsMask, KeepsFirstInputMask
from ..layers.relative_position import RelativePositionBiasT5
from .base import HEAD_DTYPE, LMMask, Transformer, UniLMMask
from .keras_model import TransformerModel

# Hugging Face's T5 stores copies of the shared embedding under the stacks, and a
# relative bias that no cross-attention uses in old checkpoints; Mesh TensorFlow
# checkpoints carry Adafactor slots (`*_slot_vc`, `*_slot_vr`, `*_slot_v`).
_T5_IGNORE = (
    r"^(encoder|decoder)\.embed_tokens\.weight$",
    r"^decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight$",
    r"_slot_v[cr]?$",
)


def feed_forward_activations(feed_forward_proj):
    """Hugging Face's ``feed_forward_proj`` as kerasformer FFN activations.

    ``"relu"`` -> ``"relu"``; ``"gated-gelu"`` -> ``["gelu_new", "linear"]`` (HF keeps the
    tanh GELU for this name, as the released v1.1 checkpoints were trained with it);
    ``"gated-X"`` -> ``["X", "linear"]``; ``"X"`` -> ``"X"``.

    Raises:
        ValueError: for a name that is not ``X`` or ``gated-X``.
    """
    parts = str(feed_forward_proj).split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
        raise ValueError(
            f"feed_forward_proj must be 'ACT' or 'gated-ACT' (e.g. 'relu', 'gated-gelu'), "
            f"got {feed_forward_proj!r}"
        )
    if len(parts) == 1:
        return parts[0]
    return ["gelu_new" if parts[1] == "gelu" else parts[1], "linear"]


# ---------------------------------------------------------------------- small layers


@keras.saving.register_keras_serializable(package="kerasformer")
class PaddingZeros(KeepsFirstInputMask, keras.layers.Layer):
    """``[x, token_ids] -> x`` with the positions whose token is `pad_id` set to 0
    (bert4keras ``Encoder-Output-Masked``), so a decoder given only the encoder output
    can tell padding apart (:class:`ContextMask`). x: [B, S, H]; token_ids: int [B, S]."""

    def __init__(self, pad_id=0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, inputs):
        x, token_ids = inputs
        keep = ops.not_equal(token_ids, self.pad_id)[..., None]
        return ops.where(keep, x, ops.zeros((), x.dtype))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="kerasformer")
class ContextMask(DropsMask, keras.layers.Layer):
    """Encoder padding mask from an encoder output whose padding rows are all zero:
    float [B, S, H] -> bool [B, 1, 1, S] (True = may attend)."""

    def call(self, context):
        return ops.any(ops.not_equal(context, 0), axis=-1)[:, None, None, :]

    def compute_output_spec(self, context):
        return keras.KerasTensor((context.shape[0], 1, 1, context.shape[1]), dtype="bool")


@keras.saving.register_keras_serializable(package="kerasformer")
class Scale(KeepsFirstInputMask, keras.layers.Layer):
    """Multiplies by a constant (T5 v1.0's ``d_model**-0.5`` before the tied LM head)."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * ops.cast(self.factor, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


# ---------------------------------------------------------------------- builders


class T5Base(Transformer):
    """What the T5 encoder and decoder share (bert4keras ``T5_Base``).

    Args (beyond :class:`Transformer`; Hugging Face config names in brackets):
        hidden_size [d_model], num_hidden_layers [num_layers], num_attention_heads
        [num_heads], intermediate_size [d_ff], attention_head_size [d_kv] (``d_kv *
        heads`` need not equal ``d_model``), layer_norm_epsilon (default 1e-6),
        dropout_rate.
        relative_attention_num_buckets: buckets of the relative bias (32).
        relative_attention_max_distance: distance sharing the last bucket (128).
        feed_forward_proj: ``"relu"``, ``"gated-gelu"``, ``"gated-X"`` or ``"X"``; the
            version's default (v1.0 ``relu``, v1.1 ``gated-gelu``) when None.
        hidden_act: a kerasformer activation or list (bert4keras configs, e.g.
            ``["gelu", "linear"]``); used only when ``feed_forward_proj`` is not given.

    Raises:
        ValueError: for ``embedding_size`` other than ``hidden_size`` (T5 has no
            embedding mapping) or a bad ``feed_forward_proj``.
    """

    version = "t5.1.0"
    pre_norm = True
    # RMSNorm: no mean subtraction, no bias (float32 inside the layer).
    norm_kwargs = {"center": False, "zero_mean": False}
    hf_prefixes = ()

    def __init__(self, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                 feed_forward_proj=None, hidden_act=None, layer_norm_epsilon=1e-6, **kwargs):
        super().__init__(layer_norm_epsilon=layer_norm_epsilon, **kwargs)
        if self.embedding_size != self.hidden_size:
            raise ValueError(
                f"T5 has no embedding mapping: embedding_size ({self.embedding_size}) must "
                f"equal hidden_size ({self.hidden_size})"
            )
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        if feed_forward_proj is None and hidden_act is None:
            feed_forward_proj = "gated-gelu" if self.version == "t5.1.1" else "relu"
        self.feed_forward_proj = feed_forward_proj
        self.hidden_act = (
            feed_forward_activations(feed_forward_proj) if feed_forward_proj is not None
            else hidden_act
        )
        self.position_bias = None

    @property
    def gated(self):
        return isinstance(self.hidden_act, (list, tuple)) and len(self.hidden_act) > 1

    # ------------------------------------------------------------------ block options

    def attention_kwargs(self):
        kwargs = super().attention_kwargs()
        kwargs.update(use_bias=False, attention_scale=False, out_dim=self.hidden_size)
        return kwargs

    def feedforward_kwargs(self):
        kwargs = super().feedforward_kwargs()
        kwargs.update(use_bias=False)
        return kwargs

    def attention_arguments(self, index):
        arguments = super().attention_arguments(index)
        arguments["attention_bias"] = self.position_bias
        return arguments

    def apply_token_embedding(self, token_ids, stack):
        x = self.apply(
            token_ids, Embedding, input_dim=self.vocab_size, output_dim=self.hidden_size,
            embeddings_initializer=self.initializer, pad_token_id=self.embedding_pad_id,
            name="Embedding-Token",
        )
        return self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                          name=f"{stack}-Embedding-Dropout")

    def apply_position_bias(self, x, key, stack, bidirectional, cache_index=None):
        """The stack's relative bias [1, heads, q_len, k_len], kept in
        ``self.position_bias`` for every block of this call."""
        arguments = {} if cache_index is None else {"cache_index": cache_index}
        self.position_bias = self.apply(
            [x, key], RelativePositionBiasT5, arguments=arguments,
            heads=self.num_attention_heads, num_buckets=self.relative_attention_num_buckets,
            max_distance=self.relative_attention_max_distance, bidirectional=bidirectional,
            embeddings_initializer=self.initializer,
            name=f"{stack}-Embedding-Relative-Position",
        )
        return self.position_bias

    # ------------------------------------------------------------------ names

    @property
    def google_norm(self):
        # Mesh TensorFlow renamed the norms for v1.1 (bert4keras T5_Base mapping).
        return "rms_norm" if self.version == "t5.1.1" else "layer_norm"

    def stack_mapping(self, stack, num_layers):
        """Rows of one stack (``"encoder"`` / ``"decoder"``): token embedding, relative
        bias, blocks and final norm."""
        title = stack.capitalize()
        norm = self.google_norm
        final = f"{stack}/rms_norm/scale" if norm == "rms_norm" else \
            f"{stack}/final_layer_norm/scale"
        rows = [
            TensorMap("Embedding-Token/embeddings", "shared/embedding",
                      ("shared.weight", f"{stack}.embed_tokens.weight"), vocab=True),
            TensorMap(f"{title}-Embedding-Relative-Position/embeddings",
                      f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias",
                      f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                      google_transpose=True),
            TensorMap(f"{title}-Output-Norm/gamma", final, f"{stack}.final_layer_norm.weight"),
        ]
        sublayers = [("MultiHeadSelfAttention", "SelfAttention")]
        if stack == "decoder":
            sublayers.append(("MultiHeadCrossAttention", "EncDecAttention"))
        for i in range(num_layers):
            name = f"{title}-Transformer-{i}"
            google, hf = f"{stack}/block_{i:03d}", f"{stack}.block.{i}"
            for j, (keras_name, module) in enumerate(sublayers):
                for w in "qkvo":
                    rows.append(TensorMap(
                        f"{name}-{keras_name}/{w}_dense/kernel",
                        f"{google}/layer_{j:03d}/{module}/{w}",
                        f"{hf}.layer.{j}.{module}.{w}.weight", hf_transpose=True,
                    ))
                rows.append(TensorMap(f"{name}-{keras_name}-Norm/gamma",
                                      f"{google}/layer_{j:03d}/{norm}/scale",
                                      f"{hf}.layer.{j}.layer_norm.weight"))
            j = len(sublayers)
            inputs = [f"wi_{k}" for k in range(len(self.hidden_act))] if self.gated else ["wi"]
            ffn = f"{name}-FeedForward"
            for k, wi in enumerate(inputs):
                rows.append(TensorMap(f"{ffn}/i{k}_dense/kernel",
                                      f"{google}/layer_{j:03d}/DenseReluDense/{wi}/kernel",
                                      f"{hf}.layer.{j}.DenseReluDense.{wi}.weight",
                                      hf_transpose=True))
            rows.append(TensorMap(f"{ffn}/o_dense/kernel",
                                  f"{google}/layer_{j:03d}/DenseReluDense/wo/kernel",
                                  f"{hf}.layer.{j}.DenseReluDense.wo.weight",
                                  hf_transpose=True))
            rows.append(TensorMap(f"{ffn}-Norm/gamma", f"{google}/layer_{j:03d}/{norm}/scale",
                                  f"{hf}.layer.{j}.layer_norm.weight"))
        return rows

    def _reject_mask_mixins(self):
        if isinstance(self, (LMMask, UniLMMask)):
            raise ValueError(
                f"{type(self).__name__.replace('LanguageModel', '').replace('Unified', '')}"
                " can not be used as an 'lm' or 'unilm' application: the T5 decoder is "
                "already causal and attends to the encoder output"
            )


class T5Encoder(T5Base):
    """The T5 encoder (bert4keras ``T5_Encoder``; ``t5_encoder`` / ``t5.1.0_encoder``).

    Input: ``Encoder-Input-Token`` int [batch, seq_len] (padding = ``pad_token_id``).
    Output: float [batch, seq_len, hidden], the final-normed sequence with padding
    positions set to 0 (``Encoder-Output-Masked``).

    Loads the encoder half of any T5 checkpoint (``T5EncoderModel`` or a full
    ``T5ForConditionalGeneration``; decoder tensors are skipped).
    """

    checkpoint_ignore = _T5_IGNORE + (r"^decoder[./]", r"^lm_head\.")

    def get_inputs(self):
        return keras.Input((self.sequence_length,), dtype="int32",
                           name=self.prefixed("Encoder-Input-Token"))

    def compute_attention_mask(self, inputs):
        return self.apply(self.token_ids_of(inputs), AttentionMask, mode="padding",
                          pad_id=self.pad_token_id, name="Encoder-Attention-Mask")

    def apply_embeddings(self, inputs):
        x = self.apply_token_embedding(self.token_ids_of(inputs), "Encoder")
        self.apply_position_bias(x, x, "Encoder", bidirectional=True)
        return x

    def apply_main_layers(self, x, index):
        return self.apply_transformer_block(x, index, name=f"Encoder-Transformer-{index}")

    def apply_final_layers(self, x):
        x = self.norm(x, name="Encoder-Output-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name="Encoder-Output-Dropout")
        return self.apply([x, self.token_ids_of(self.inputs)], PaddingZeros,
                          pad_id=self.pad_token_id, name="Encoder-Output-Masked")

    def variable_mapping(self):
        return self.stack_mapping("encoder", self.num_hidden_layers)


class _T5DecoderBase(T5Base):
    """The T5 decoder (bert4keras ``T5_Decoder``); see :class:`T5Decoder`."""

    tie_word_embeddings = False
    scale_decoder_outputs = False

    def __init__(self, num_decoder_layers=None, with_lm=True, decoder_start_token_id=0,
                 eos_token_id=1, **kwargs):
        super().__init__(**kwargs)
        self._reject_mask_mixins()
        if num_decoder_layers is not None:
            self.num_hidden_layers = num_decoder_layers
        self.with_lm = with_lm
        self.decoder_start_token_id = decoder_start_token_id
        self.eos_token_id = eos_token_id
        self.context = None

    @property
    def checkpoint_ignore(self):
        return _T5_IGNORE + (r"^encoder[./]",) + _tied_head_ignore(self)

    def get_inputs(self):
        return [
            keras.Input((self.sequence_length, self.hidden_size),
                        name=self.prefixed("Input-Context")),
            keras.Input((self.sequence_length,), dtype="int32",
                        name=self.prefixed("Decoder-Input-Token")),
        ]

    def token_ids_of(self, inputs):
        # [context, token_ids] when building; [token_ids] in `call_with_cache`.
        return inputs[-1] if isinstance(inputs, (list, tuple)) else inputs

    def compute_attention_mask(self, inputs):
        # Causal only: the decoder starts from the pad id (decoder_start_token_id 0), so
        # no decoder key is masked by its id (Hugging Face's default without a
        # decoder_attention_mask); pad_id -1 matches no token.
        return self.apply(self.token_ids_of(inputs), AttentionMask, mode="causal",
                          pad_id=-1, name="Decoder-Attention-Mask")

    def call(self, inputs, context_mask=None):
        """Build the decoder graph on ``[context, token_ids]``. The encoder padding mask
        is `context_mask` (bool [B, 1, 1, S]) or, when None, read off the all-zero rows
        of the context (``Decoder-Context-Mask``)."""
        context = inputs[0]
        if context_mask is None:
            context_mask = self.apply(context, ContextMask, name="Decoder-Context-Mask")
        self.context, self.context_mask = context, context_mask
        try:
            return super().call(inputs)
        finally:
            self.context = self.context_mask = None

    def apply_embeddings(self, inputs):
        x = self.apply_token_embedding(self.token_ids_of(inputs), "Decoder")
        if self.caches is not None:
            # Queries at slots cache_index + i, keys at every slot of the cache.
            self.apply_position_bias(x, self.caches["self-0"][0], "Decoder",
                                     bidirectional=False, cache_index=self.cache_index)
        else:
            self.apply_position_bias(x, x, "Decoder", bidirectional=False)
        return x

    def apply_main_layers(self, x, index):
        # With a cache the cross-attention reads the precomputed "cross-i" keys/values.
        context = self.context if self.caches is None else self.caches[f"cross-{index}"]
        return self.apply_transformer_block(x, index, name=f"Decoder-Transformer-{index}",
                                            context=context)

    def cross_attention_arguments(self, index, context):
        if self.caches is not None:
            return {"attention_mask": self.context_mask}
        return {"key_value": context, "attention_mask": self.context_mask}

    def apply_final_layers(self, x):
        x = self.norm(x, name="Decoder-Output-Norm")
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate,
                       name="Decoder-Output-Dropout")
        if self.scale_decoder_outputs:
            x = self.apply(x, Scale, factor=self.hidden_size**-0.5,
                           name="Decoder-Output-Scale")
        if not self.with_lm:
            return x
        if self.tie_word_embeddings:
            x = self.apply(x, Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        else:
            # An Embedding used as a dense layer, [vocab, hidden]: rows indexed by token
            # so keep_tokens / compound_tokens apply to it as to the input embedding.
            x = self.apply(x, Embedding, arguments={"mode": "dense"},
                           input_dim=self.vocab_size, output_dim=self.hidden_size,
                           embeddings_initializer=self.initializer, name="Decoder-Output-LM")
        activation = "softmax" if self.with_lm is True else self.with_lm
        return self.apply(x, Activation, activation=activation,
                          name="Decoder-Output-LM-Activation", dtype=HEAD_DTYPE)

    # ------------------------------------------------------------------ caches

    def init_caches(self, batch_size, max_length, context, dtype=None):
        """KV caches for :meth:`call_with_cache`.

        Args:
            batch_size: B; max_length: decoder cache length (slots).
            context: float [B, S, H], the encoder output.
            dtype: dtype of the self-attention caches (default floatx).
        Returns:
            dict: ``"self-i"``: zero (keys, values) [B, max_length, heads, d_kv];
            ``"cross-i"``: (keys, values) [B, S, heads, d_kv] of `context` projected by
            ``Decoder-Transformer-i-MultiHeadCrossAttention`` (read-only).
        Raises:
            ValueError: before the decoder is built.
        """
        if not self.built:
            raise ValueError("Build the decoder (build() / build_transformer_model) first")
        caches = super().init_caches(batch_size, max_length, dtype)
        context = ops.convert_to_tensor(context)
        b, s = ops.shape(context)[0], ops.shape(context)[1]
        for i in range(self.num_hidden_layers):
            layer = self.layers[self.prefixed(f"Decoder-Transformer-{i}-MultiHeadCrossAttention")]
            keys = ops.reshape(layer.k_dense(context), (b, s, layer.heads, layer.key_size))
            values = ops.reshape(layer.v_dense(context), (b, s, layer.heads, layer.head_size))
            caches[f"cross-{i}"] = (keys, values)
        return caches

    # ------------------------------------------------------------------ names

    def head_mapping(self):
        if self.tie_word_embeddings:
            return []
        # transformers >= 5 saves tied T5/mT5 heads only as `shared.weight`.
        return [TensorMap("Decoder-Output-LM/embeddings", "decoder/logits/kernel",
                          ("lm_head.weight", "shared.weight"), google_transpose=True,
                          vocab=True)]

    def variable_mapping(self):
        return self.stack_mapping("decoder", self.num_hidden_layers) + self.head_mapping()

    def load_weights_from_checkpoint(self, checkpoint_path, ignore_invalid_weights=None):
        _check_tied_head(self, checkpoint_path)
        return super().load_weights_from_checkpoint(checkpoint_path, ignore_invalid_weights)


class _TiedHeadOptions:
    """``tie_word_embeddings`` / ``scale_decoder_outputs`` of T5 v1.0 builders."""

    def _set_head_options(self, tie_word_embeddings, scale_decoder_outputs):
        self.tie_word_embeddings = bool(tie_word_embeddings)
        # Hugging Face: the output is rescaled unless tie_word_embeddings is False.
        self.scale_decoder_outputs = (
            self.tie_word_embeddings if scale_decoder_outputs is None
            else bool(scale_decoder_outputs)
        )


class T5Decoder(_TiedHeadOptions, _T5DecoderBase):
    """The T5 v1.0 decoder (``t5_decoder`` / ``t5.1.0_decoder``).

    Inputs: ``Input-Context`` float [batch, ctx_len, hidden] (the encoder output, padding
    rows all zero as :class:`T5Encoder` returns them) and ``Decoder-Input-Token`` int
    [batch, seq_len] (starting with ``decoder_start_token_id``).
    Output: probabilities [batch, seq_len, vocab] (``with_lm=True``), logits
    (``with_lm="linear"``, or any activation name), or the normed hidden states
    (``with_lm=False``).

    Args (beyond :class:`T5Base`):
        num_decoder_layers: decoder blocks (default ``num_layers``).
        with_lm: the LM head and its activation, as above.
        tie_word_embeddings: the head is ``Embedding-Token`` (True, v1.0) or its own
            ``Decoder-Output-LM`` (False).
        scale_decoder_outputs: multiply by ``d_model**-0.5`` before the head (default:
            ``tie_word_embeddings``, as Hugging Face).
        decoder_start_token_id / eos_token_id: kept for generation.

    Raises:
        ValueError: for ``application="lm"``/``"unilm"``; when loading a checkpoint whose
            ``lm_head.weight`` differs from ``shared.weight`` into a tied head.
    """

    def __init__(self, tie_word_embeddings=True, scale_decoder_outputs=None, **kwargs):
        super().__init__(**kwargs)
        self._set_head_options(tie_word_embeddings, scale_decoder_outputs)


class T5V11Decoder(_T5DecoderBase):
    """The T5 v1.1 / mT5 decoder (``t5.1.1_decoder`` / ``mt5.1.1_decoder``): as
    :class:`T5Decoder` with a gated-GELU FFN by default, the untied head
    ``Decoder-Output-LM`` and no rescaling.

    The head is always untied and loads ``lm_head.weight``, or ``shared.weight`` when the
    checkpoint has no ``lm_head`` (transformers' own rule). ``tie_word_embeddings`` is
    not read: transformers >= 5 writes ``true`` into every T5/mT5 config it saves, also
    next to a distinct ``lm_head.weight``.
    """

    version = "t5.1.1"


# ---------------------------------------------------------------------- encoder-decoder


class _T5EncoderDecoder(T5Base):
    """Encoder + decoder in one `keras.Model` (bert4keras ``T5``); see :class:`T5`."""

    encoder_class = T5Encoder
    decoder_class = T5Decoder

    def __init__(self, num_decoder_layers=None, with_lm=True, decoder_start_token_id=0,
                 eos_token_id=1, **kwargs):
        self._decoder_kwargs = dict(
            num_decoder_layers=num_decoder_layers, with_lm=with_lm,
            decoder_start_token_id=decoder_start_token_id, eos_token_id=eos_token_id,
        )
        super().__init__(**kwargs)
        self._reject_mask_mixins()
        self._kwargs = kwargs
        self.with_lm = with_lm
        self.decoder_start_token_id = decoder_start_token_id
        self.eos_token_id = eos_token_id
        # bert4keras: `encoder` / `decoder` are the stacks' keras.Models once built.
        self.encoder = None
        self.decoder = None
        self.encoder_builder = None
        self.decoder_builder = None

    def _make_stacks(self, decoder_kwargs):
        kwargs = {k: v for k, v in self._kwargs.items() if k != "name"}
        # keras.Model names as bert4keras: "Encoder" / "Decoder", "{name}_Encoder"...
        names = [f"{self.name}_{stack}" if self.name else stack
                 for stack in ("Encoder", "Decoder")]
        self.encoder_builder = self.encoder_class(name=names[0], **kwargs)
        self.decoder_builder = self.decoder_class(
            name=names[1], **kwargs, **self._decoder_kwargs, **decoder_kwargs)
        # One name -> layer dict: both stacks (and the joint model) hold the same
        # Embedding-Token and every other layer once.
        self.encoder_builder.layers = self.decoder_builder.layers = self.layers

    def build(self, **build_kwargs):
        """Build the stacks' models ``self.encoder`` and ``self.decoder`` and the joint
        ``self.model``: ``[Encoder-Input-Token, Decoder-Input-Token]`` -> the decoder
        output (probabilities by default), using the encoder's padding mask for the
        cross-attention."""
        if self.built:
            return self.model
        if self.encoder_builder is None:
            self._make_stacks({})
        encoder, decoder = self.encoder_builder, self.decoder_builder
        self.encoder = encoder.build(**build_kwargs)
        self.decoder = decoder.build(**build_kwargs)
        encoder_tokens, decoder_tokens = encoder.inputs[0], decoder.inputs[1]
        outputs = decoder.call([encoder.output, decoder_tokens],
                               context_mask=encoder.attention_mask)
        decoder.attention_mask = None
        extra = []
        for t in encoder.inputs[1:] + decoder.inputs[2:]:
            if not any(t is e for e in extra):
                extra.append(t)
        self.set_inputs([encoder_tokens, decoder_tokens], extra)
        self.set_outputs(outputs)
        self.model = self.make_model()
        self.built = True
        return self.model

    @property
    def checkpoint_ignore(self):
        return _T5_IGNORE + _tied_head_ignore(self.decoder_builder)

    def layer_count_holders(self):
        return [self.encoder_builder, self.decoder_builder]

    def init_caches(self, batch_size, max_length, context, dtype=None):
        """Same as ``self.decoder_builder.init_caches``."""
        return self.decoder_builder.init_caches(batch_size, max_length, context, dtype)

    def call_with_cache(self, *args, **kwargs):
        """Same as ``self.decoder_builder.call_with_cache``."""
        return self.decoder_builder.call_with_cache(*args, **kwargs)

    def variable_mapping(self):
        rows = self.encoder_builder.variable_mapping()
        seen = {r.keras for r in rows}
        rows += [r for r in self.decoder_builder.variable_mapping() if r.keras not in seen]
        return rows

    def load_weights_from_checkpoint(self, checkpoint_path, ignore_invalid_weights=None):
        _check_tied_head(self.decoder_builder, checkpoint_path)
        return super().load_weights_from_checkpoint(checkpoint_path, ignore_invalid_weights)


class T5(_TiedHeadOptions, _T5EncoderDecoder):
    """T5 v1.0 encoder-decoder (``t5`` / ``t5.1.0``; bert4keras ``T5``).

    Inputs: ``Encoder-Input-Token`` int [batch, src_len] (padding = ``pad_token_id``),
    ``Decoder-Input-Token`` int [batch, tgt_len] (starting with
    ``decoder_start_token_id``). Output: as :class:`T5Decoder` (probabilities
    [batch, tgt_len, vocab] by default; ``with_lm="linear"`` for logits).

    Attributes after ``build``: ``model`` (joint), ``encoder`` and ``decoder`` (the
    stacks' keras.Models sharing its layers, as bert4keras), ``encoder_builder`` and
    ``decoder_builder`` (see the module docstring for the generation protocol).

    Args: those of :class:`T5Base` and :class:`T5Decoder` (``num_decoder_layers``,
    ``with_lm``, ``tie_word_embeddings``, ``scale_decoder_outputs``,
    ``decoder_start_token_id``, ``eos_token_id``).

    Raises:
        ValueError: for ``application="lm"``/``"unilm"``, or as :class:`T5Decoder`.
    """

    def __init__(self, tie_word_embeddings=True, scale_decoder_outputs=None, **kwargs):
        super().__init__(**kwargs)
        self._set_head_options(tie_word_embeddings, scale_decoder_outputs)
        self._make_stacks(dict(tie_word_embeddings=tie_word_embeddings,
                               scale_decoder_outputs=scale_decoder_outputs))


class T5V11Encoder(T5Encoder):
    """The T5 v1.1 / mT5 encoder (``t5.1.1_encoder`` / ``mt5.1.1_encoder``): gated-GELU
    FFN by default and v1.1 Google checkpoint names (``rms_norm``)."""

    version = "t5.1.1"


class T5V11(_T5EncoderDecoder):
    """T5 v1.1 / mT5 encoder-decoder (``t5.1.1`` / ``mt5.1.1``): as :class:`T5` with a
    gated-GELU FFN by default, the untied head ``Decoder-Output-LM`` and no rescaling
    (see :class:`T5V11Decoder` about ``tie_word_embeddings``)."""

    version = "t5.1.1"
    encoder_class = T5V11Encoder
    decoder_class = T5V11Decoder

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._make_stacks({})


def _tied_head_ignore(decoder):
    # A tied head makes a checkpoint's lm_head.weight redundant (and
    # `_check_tied_head` makes sure it is the shared embedding).
    return (r"^lm_head\.weight$",) if decoder.tie_word_embeddings else ()


def _check_tied_head(decoder, checkpoint_path):
    """Before loading into a tied head, make sure the checkpoint's ``lm_head.weight`` (if
    any) is the shared embedding: a distinct one belongs to an untied model (T5 v1.1 /
    mT5) and would otherwise be dropped silently.

    Raises:
        ValueError: naming the way out (``model="t5.1.1"`` or
            ``tie_word_embeddings=False``).
    """
    if not (decoder.with_lm and decoder.tie_word_embeddings):
        return
    with open_checkpoint(checkpoint_path) as reader:
        names = set(reader.names())
        if "lm_head.weight" in names and "shared.weight" in names and not np.array_equal(
                reader.get("lm_head.weight"), reader.get("shared.weight")):
            raise ValueError(
                f"{checkpoint_path} has an lm_head.weight distinct from shared.weight (an "
                "untied T5 v1.1 / mT5 head), but this model ties its head to the token "
                "embedding; use model='t5.1.1' (or tie_word_embeddings=False)"
            )
