"""The Transformer builder: name-keyed layers, template hooks, one shared block.

A family (BERT, ALBERT, GPT-2, T5...) subclasses :class:`Transformer` and fills in the
hooks ``get_inputs``, ``apply_embeddings``, ``apply_main_layers`` and
``apply_final_layers``; the block itself is :meth:`Transformer.apply_transformer_block`,
configured by class attributes and arguments (pre/post norm, norm type, attention and
FFN options) instead of being copied per family. Masks come from mixins
(:class:`LMMask`, :class:`UniLMMask`), so any encoder becomes a causal LM or a UniLM.

Layers are created and fetched by name through :meth:`Transformer.apply`, which is what
makes weight sharing (ALBERT), tied embeddings and re-running the same layers on eager
tensors with a KV cache (generation) work without copies.
"""
import numpy as np
import functools
import re
import warnings

import keras

from .. import remat
from ..checkpoints import loading
from ..checkpoints.readers import open_checkpoint
from ..initializers import TruncatedNormal
from ..layers import AttentionMask, FeedForward, LayerNormalization, MultiHeadAttention
from ..layers.attention import check_attention_implementation
from ..layers.masking import Add
from .keras_model import TransformerModel


# The final layer of every head (pooler, NSP, MLM/LM activation, ELECTRA discriminator)
# computes in float32 under a mixed precision policy, so heads return float32
# probabilities / logits (Keras's advice for the last softmax; bf16 probabilities keep
# only 8 significant bits).
HEAD_DTYPE = "float32"


class Transformer:
    """Base builder of a Transformer `keras.Model` (the bert4keras design).

    Args:
        vocab_size: token vocabulary size V (before ``keep_tokens``/``compound_tokens``).
        hidden_size: model width H.
        num_hidden_layers: number of blocks L.
        num_attention_heads: attention heads N.
        intermediate_size: FFN inner size.
        hidden_act: FFN activation name (``"gelu"`` is exact erf, ``"gelu_new"`` tanh).
        dropout_rate / attention_dropout_rate: dropout probabilities (training only).
        embedding_size: embedding width E if different from H (a mapping Dense is added).
        attention_head_size / attention_key_size: per-head value / key sizes (default H/N).
        sequence_length: static sequence length of the inputs (None: variable).
        keep_tokens: list of checkpoint token ids to keep, in new-id order (shrinks the
            vocabulary; see ``tokenizers.load_vocab(simplified=True)``).
        compound_tokens: list of lists of checkpoint token ids; each adds one new token
            whose embedding is initialised to the mean of those tokens' embeddings.
        layer_norm_epsilon: epsilon of the normalization layers.
        initializer_range: stddev of the truncated-normal kernel initializer.
        pad_token_id: id treated as padding by the attention mask and by the Keras
            padding mask that ``Embedding-Token`` attaches to the sequence outputs.
        ignore_invalid_weights: load what matches and only warn about the rest.
        prefix: prepended to every layer name (two models in one graph).
        name: name of the keras.Model.
        gradient_checkpointing: recompute attention/FFN/norm activations in the backward
            pass instead of storing them (`kerasformer.remat`; Chen et al. 2016,
            arXiv:1604.06174); gradients are unchanged.
        attention_implementation: ``"auto"`` (default), ``"fused"`` or ``"explicit"``;
            how the attention layers compute attention (see
            :class:`~kerasformer.layers.MultiHeadAttention`): ``"fused"`` is
            ``keras.ops.dot_product_attention`` (cuDNN flash attention on JAX GPUs),
            ``"explicit"`` the einsum path, ``"auto"`` fused wherever that is exact
            (masks, T5 bias, RoPE, KV caches) and explicit otherwise (NEZHA's relative
            positions, attention dropout while training). README.md has the table per
            family.

    Raises:
        ValueError: an unknown ``attention_implementation`` (naming the allowed
            values), or ``"fused"`` for a family whose attention no fused kernel
            computes (NEZHA, GAU-α).
    """

    # Whether the block normalizes after the residual (BERT) or before (GPT-2, T5).
    pre_norm = False
    # Kwargs for every LayerNormalization of the model (family defaults).
    norm_kwargs = {}
    # Why this family's attention cannot take the fused kernel (None: it can).
    fused_attention_unsupported = None

    def __init__(self, vocab_size, hidden_size, num_hidden_layers, num_attention_heads,
                 intermediate_size, hidden_act="gelu", dropout_rate=0.0,
                 attention_dropout_rate=0.0, embedding_size=None, attention_head_size=None,
                 attention_key_size=None, sequence_length=None, keep_tokens=None,
                 compound_tokens=None, layer_norm_epsilon=1e-12, initializer_range=0.02,
                 pad_token_id=0, ignore_invalid_weights=False, prefix=None, name=None,
                 gradient_checkpointing=False, attention_implementation="auto"):
        _check_sizes(vocab_size=vocab_size, hidden_size=hidden_size,
                     num_hidden_layers=num_hidden_layers,
                     num_attention_heads=num_attention_heads,
                     intermediate_size=intermediate_size, embedding_size=embedding_size,
                     attention_head_size=attention_head_size,
                     attention_key_size=attention_key_size)
        _check_rates(dropout_rate=dropout_rate, attention_dropout_rate=attention_dropout_rate)
        _check_vocab_edits(vocab_size, keep_tokens, compound_tokens)
        check_attention_implementation(attention_implementation)
        if attention_implementation == "fused" and self.fused_attention_unsupported:
            raise ValueError(
                f"attention_implementation='fused' is not available for "
                f"{type(self).__name__}: {self.fused_attention_unsupported}; use 'auto' "
                "or 'explicit'"
            )
        if keep_tokens is not None:
            vocab_size = len(keep_tokens)
        if compound_tokens is not None:
            vocab_size += len(compound_tokens)
        if hidden_size % num_attention_heads and attention_head_size is None:
            raise ValueError(
                f"hidden_size {hidden_size} is not a multiple of num_attention_heads "
                f"{num_attention_heads}; give attention_head_size"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = attention_head_size or hidden_size // num_attention_heads
        self.attention_key_size = attention_key_size or self.attention_head_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout_rate or 0.0
        self.attention_dropout_rate = attention_dropout_rate or 0.0
        self.embedding_size = embedding_size or hidden_size
        self.sequence_length = sequence_length
        self.keep_tokens = keep_tokens
        self.compound_tokens = compound_tokens
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_range = initializer_range
        self.pad_token_id = pad_token_id
        self.ignore_invalid_weights = ignore_invalid_weights
        self.prefix = prefix or ""
        self.name = name
        self.gradient_checkpointing = gradient_checkpointing
        self.attention_implementation = attention_implementation
        self.layers = {}
        self.built = False
        # Per-call state read by the hooks: the attention mask of the current graph and,
        # during cached decoding, the KV caches (see `call_with_cache`).
        self.attention_mask = None
        self.context_mask = None
        self.position_ids = None
        self.caches = None
        self.cache_index = None
        self.layer_norm_conds = [None, None, None]
        # > 0 while `call` / `call_with_cache` run the hooks (see `__init_subclass__`).
        self._template_depth = 0

    def __init_subclass__(cls, **kwargs):
        # bert4keras scripts call `apply_embeddings` / `apply_main_layers` themselves,
        # also on inputs other than the model's (siamese towers, BERT-of-Theseus). The
        # blocks read `self.attention_mask`, so a family's `apply_embeddings` called from
        # outside the template first computes the mask of *its* inputs.
        super().__init_subclass__(**kwargs)
        if "apply_embeddings" in cls.__dict__:
            cls.apply_embeddings = _computes_attention_mask(cls.__dict__["apply_embeddings"])

    # ------------------------------------------------------------------ building

    def build(self, layer_norm_cond=None, layer_norm_cond_hidden_size=None,
              layer_norm_cond_hidden_act=None, additional_input_layers=None):
        """Create the keras.Model (``self.model``) and its layers.

        Args:
            layer_norm_cond: a Keras tensor [batch, cond_dim] that conditions every
                LayerNorm (conditional LayerNorm, kexue.fm/archives/7124); if it comes
                from a `keras.Input` that input is added to the model's inputs.
            layer_norm_cond_hidden_size / _act: optional Dense projection of the condition.
            additional_input_layers: an extra `keras.Input` tensor, or a list of them,
                appended to the inputs.
        """
        if self.built:
            return self.model
        inputs = self.get_inputs()
        self.set_inputs(inputs, additional_input_layers, layer_norm_cond)
        self.layer_norm_conds = [
            layer_norm_cond, layer_norm_cond_hidden_size, layer_norm_cond_hidden_act or "linear"
        ]
        outputs = self.call(inputs)
        self.set_outputs(outputs)
        self.model = self.make_model()
        self.built = True
        return self.model

    def set_inputs(self, inputs, additional_input_layers=None, layer_norm_cond=None):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        # One tensor or a list (bert4keras accepts both); never test a tensor's truth.
        if additional_input_layers is None:
            extra = []
        elif isinstance(additional_input_layers, (list, tuple)):
            extra = list(additional_input_layers)
        else:
            extra = [additional_input_layers]
        if layer_norm_cond is not None and _is_input(layer_norm_cond):
            if not any(t is layer_norm_cond for t in inputs + extra):
                extra.append(layer_norm_cond)
        self.inputs = inputs + extra

    def set_outputs(self, outputs):
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        self.outputs = list(outputs)
        self.output = self.outputs[0] if len(self.outputs) == 1 else self.outputs

    def make_model(self):
        """The `TransformerModel` from ``self.inputs`` to ``self.output``.

        A single input and a single output are passed bare: Keras 3 then exposes
        ``model.output`` as the tensor (a one-element list stays a list), so
        ``Dense(n)(model.output)`` works as in bert4keras, and ``model(token_ids)``
        takes the ids without a list. Several outputs give a list.
        """
        model_inputs = self.inputs[0] if len(self.inputs) == 1 else self.inputs
        return TransformerModel(model_inputs, self.output, name=self.name)

    def call(self, inputs):
        """Run the template: embeddings, the L blocks, the final layers."""
        self.attention_mask = self.compute_attention_mask(inputs)
        self._template_depth += 1
        try:
            x = self.apply_embeddings(inputs)
            for index in range(self.num_hidden_layers):
                x = self.apply_main_layers(x, index)
            return self.apply_final_layers(x)
        finally:
            self._template_depth -= 1

    def init_caches(self, batch_size, max_length, dtype=None):
        """Zero KV caches for :meth:`call_with_cache`: ``{"self-i": (keys, values)}`` for
        every block i, each [batch_size, max_length, heads, head_size]. Encoder-decoders
        add read-only ``"cross-i"`` entries (projected encoder output)."""
        dtype = dtype or keras.backend.floatx()
        zeros = keras.ops.zeros
        return {
            f"self-{i}": (
                zeros((batch_size, max_length, self.num_attention_heads,
                       self.attention_key_size), dtype),
                zeros((batch_size, max_length, self.num_attention_heads,
                       self.attention_head_size), dtype),
            )
            for i in range(self.num_hidden_layers)
        }

    def call_with_cache(self, inputs, caches, cache_index, attention_mask, position_ids=None,
                        context_mask=None):
        """Run the model's own layers on new tokens with a KV cache (for decoding).

        Args:
            inputs: the model's inputs for the new tokens only (same structure as
                ``self.model.inputs``), each [batch, new_len].
            caches: from :meth:`init_caches` or a previous call.
            cache_index: int scalar, absolute position of the first new token; keys and
                values of the new tokens are written there.
            attention_mask: bool [batch, 1, new_len, max_length]: which cache slots each
                new token may see (the caller knows padding and the LM/UniLM rule).
            position_ids: int [batch or 1, new_len] absolute positions of the new tokens
                (default ``cache_index + arange(new_len)``; left-padded batches pass
                per-row positions).
            context_mask: bool [batch, 1, 1, context_len], the encoder padding mask for
                the read-only ``"cross-i"`` caches of encoder-decoders.
        Returns:
            ``(outputs, new_caches)``; outputs as the model's for the new tokens.
        """
        new_len = keras.ops.shape(self.token_ids_of(inputs))[1]
        if position_ids is None:
            position_ids = keras.ops.arange(new_len, dtype="int32")[None] + cache_index
        self.position_ids = position_ids
        self.caches, self.cache_index = dict(caches), cache_index
        self.attention_mask, self.context_mask = attention_mask, context_mask
        self._template_depth += 1
        try:
            x = self.apply_embeddings(inputs)
            for index in range(self.num_hidden_layers):
                x = self.apply_main_layers(x, index)
            return self.apply_final_layers(x), self.caches
        finally:
            self._template_depth -= 1
            self.position_ids = self.caches = self.cache_index = None
            self.attention_mask = self.context_mask = None

    def prefixed(self, name):
        return self.prefix + name if name else name

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Create the layer ``layer(**kwargs)`` under the name ``kwargs["name"]`` the first
        time, reuse it afterwards, and call it on ``inputs`` with ``arguments``.

        Layers are keyed by name, so calling ``apply`` twice with one name shares the
        weights (ALBERT); with ``inputs=None`` the layer is only created and returned.

        Raises:
            ValueError: when a name is reused for a layer of another class.
        """
        name = self.prefixed(kwargs.get("name"))
        kwargs["name"] = name
        if name not in self.layers:
            created = layer(**kwargs)
            if self.gradient_checkpointing:
                created = remat.maybe_rematerialize(created)
            self.layers[name] = created
        elif not isinstance(self.layers[name], layer):
            raise ValueError(
                f"Layer name {name!r} already holds a {type(self.layers[name]).__name__}, "
                f"not a {layer.__name__}"
            )
        if inputs is None:
            return self.layers[name]
        return self.layers[name](inputs, **(arguments or {}))

    # ------------------------------------------------------------------ hooks

    def get_inputs(self):
        raise NotImplementedError

    def apply_embeddings(self, inputs):
        raise NotImplementedError

    def apply_main_layers(self, x, index):
        return self.apply_transformer_block(x, index)

    def apply_final_layers(self, x):
        raise NotImplementedError

    def compute_attention_mask(self, inputs):
        """The bidirectional padding mask [batch, 1, 1, seq_len] from the token ids."""
        return self.apply(
            self.token_ids_of(inputs), AttentionMask, mode="padding",
            pad_id=self.pad_token_id, name="Attention-Mask",
        )

    @property
    def embedding_pad_id(self):
        """The id whose positions the Keras padding mask of ``Embedding-Token`` hides:
        the attention mask's (GPT's ``attention_pad_id``); None attaches no mask."""
        return getattr(self, "attention_pad_id", self.pad_token_id)

    def token_ids_of(self, inputs):
        return inputs[0] if isinstance(inputs, (list, tuple)) else inputs

    def segment_ids_of(self, inputs):
        return None

    # ------------------------------------------------------------------ shared pieces

    @property
    def initializer(self):
        return TruncatedNormal(stddev=self.initializer_range)

    def norm(self, x, name, **kwargs):
        """A normalization layer, conditional when the model has ``layer_norm_cond``."""
        cond, hidden_units, hidden_act = self.layer_norm_conds
        options = dict(epsilon=self.layer_norm_epsilon)
        options.update(self.norm_kwargs)
        options.update(kwargs)
        if cond is not None:
            options.update(
                conditional=True, cond_hidden_units=hidden_units,
                cond_hidden_activation=hidden_act, cond_hidden_initializer=self.initializer,
            )
            x = [x, cond]
        return self.apply(x, LayerNormalization, name=name, **options)

    def attention_kwargs(self):
        """Constructor kwargs of the self-attention layers (families override)."""
        return dict(
            heads=self.num_attention_heads,
            head_size=self.attention_head_size,
            key_size=self.attention_key_size,
            attention_dropout=self.attention_dropout_rate,
            kernel_initializer=self.initializer,
            attention_implementation=self.attention_implementation,
        )

    def feedforward_kwargs(self):
        """Constructor kwargs of the FFN layers (families override)."""
        return dict(
            units=self.intermediate_size,
            activation=self.hidden_act,
            kernel_initializer=self.initializer,
        )

    def attention_arguments(self, index):
        """Call arguments of block `index`'s self-attention (families add position
        biases here)."""
        arguments = {"attention_mask": self.attention_mask}
        if self.position_ids is not None:
            arguments["position_ids"] = self.position_ids
        return arguments

    def cross_attention_kwargs(self):
        """Constructor kwargs of the cross-attention layers (encoder-decoders)."""
        return self.attention_kwargs()

    def cross_attention_arguments(self, index, context):
        """Call arguments of block `index`'s cross-attention over `context`."""
        return {"key_value": context, "attention_mask": self.context_mask}

    def apply_residual(self, x, index, name, layer, layer_kwargs, arguments=None,
                       cache_key=None):
        """One residual sub-block: ``[norm ->] sublayer -> dropout -> add [-> norm]``.

        Names follow bert4keras: ``{name}``, ``{name}-Dropout``, ``{name}-Add``,
        ``{name}-Norm``. While decoding (``self.caches`` set), the attention sub-block
        reads ``self.caches[cache_key]``: ``"self-i"`` entries are written at
        ``self.cache_index`` and replaced by the updated cache, ``"cross-i"`` entries are
        read-only.
        """
        arguments = dict(arguments or {})
        cached = self.caches is not None and cache_key in self.caches
        if cached:
            dynamic = cache_key.startswith("self-")
            arguments.update(cache=self.caches[cache_key],
                             cache_index=self.cache_index if dynamic else None)
        residual = x
        if self.pre_norm:
            x = self.norm(x, name=f"{name}-Norm")
        x = self.apply(x, layer, arguments=arguments, name=name, **layer_kwargs)
        if cached:
            x, new_cache = x
            if dynamic:
                self.caches[cache_key] = new_cache
        x = self.apply(x, keras.layers.Dropout, rate=self.dropout_rate, name=f"{name}-Dropout")
        x = self.apply([residual, x], Add, name=f"{name}-Add")
        if not self.pre_norm:
            x = self.norm(x, name=f"{name}-Norm")
        return x

    def apply_transformer_block(self, x, index, name=None, context=None):
        """The shared block: self-attention, cross-attention over `context` (decoders of
        encoder-decoders only), feed-forward; each a residual sub-block.

        ``name`` defaults to ``Transformer-{index}``; ALBERT passes one name for all
        blocks to share their weights, T5 prefixes ``Encoder-``/``Decoder-``.
        """
        name = name or f"Transformer-{index}"
        x = self.apply_residual(
            x, index, f"{name}-MultiHeadSelfAttention", MultiHeadAttention,
            self.attention_kwargs(), self.attention_arguments(index), f"self-{index}",
        )
        if context is not None:
            x = self.apply_residual(
                x, index, f"{name}-MultiHeadCrossAttention", MultiHeadAttention,
                self.cross_attention_kwargs(), self.cross_attention_arguments(index, context),
                f"cross-{index}",
            )
        x = self.apply_residual(
            x, index, f"{name}-FeedForward", FeedForward, self.feedforward_kwargs(),
        )
        return x

    # ------------------------------------------------------------------ weights

    def variable_mapping(self):
        """The checkpoint name map: a list of :class:`loading.TensorMap` rows for every
        weight this family can have (heads included). Families override."""
        return []

    def load_weights_from_checkpoint(self, checkpoint_path, ignore_invalid_weights=None):
        """Load a checkpoint (format detected: Google TF prefix, safetensors, sharded
        index, pytorch_model.bin, or a directory) into ``self.model`` by name.

        A checkpoint of a deeper model loads its first ``num_hidden_layers`` blocks
        (bert4keras; layer truncation, BERT-of-Theseus): the tensors of the deeper
        blocks are skipped with one warning line. Any other tensor the model has no
        place for is still an error.

        Raises:
            ValueError: listing every missing, unexpected and wrong-shape tensor (with
                both shapes), unless ``ignore_invalid_weights``.
            FileNotFoundError: when the path holds no checkpoint.
        """
        if ignore_invalid_weights is None:
            ignore_invalid_weights = self.ignore_invalid_weights
        deeper, blocks = self.deeper_layer_tensors(checkpoint_path)
        if not deeper:
            return loading.load_checkpoint_into(self, checkpoint_path, ignore_invalid_weights)
        warnings.warn(
            f"kerasformer: {checkpoint_path} has more blocks than num_hidden_layers="
            f"{self.num_hidden_layers}; loading the first ones and skipping the "
            f"{len(deeper)} tensors of blocks {blocks[0]}-{blocks[-1]} "
            f"(e.g. {sorted(deeper)[0]})", stacklevel=2,
        )
        return loading.load_checkpoint_into(
            _SkippingTensors(self, deeper), checkpoint_path, ignore_invalid_weights)

    def layer_count_holders(self):
        """The builders whose ``num_hidden_layers`` sets the checkpoint rows (T5: both
        stacks)."""
        return [self]

    def deeper_layer_tensors(self, checkpoint_path):
        """Names of `checkpoint_path`'s tensors that belong to blocks beyond this
        model's ``num_hidden_layers`` (found by extending the name map one block at a
        time). Returns ``(names, block_indices)``, both empty for a checkpoint no deeper
        than the model."""
        with open_checkpoint(checkpoint_path) as reader:
            present = set(reader.names())
        seen = self._mapping_names(0)
        found, blocks, extra = set(), [], 1
        while True:
            names = self._mapping_names(extra) - seen
            hits = names & present
            if not hits:
                return found, blocks
            found |= hits
            seen |= names
            blocks.append(min(h.num_hidden_layers for h in self.layer_count_holders())
                          + extra - 1)
            extra += 1

    def _mapping_names(self, extra):
        """Every checkpoint name (both conventions) of the name map with `extra` more
        blocks per stack."""
        holders = self.layer_count_holders()
        depths = [h.num_hidden_layers for h in holders]
        try:
            for holder, depth in zip(holders, depths):
                holder.num_hidden_layers = depth + extra
            rows = self.variable_mapping()
        finally:
            for holder, depth in zip(holders, depths):
                holder.num_hidden_layers = depth
        prefixes = getattr(self, "hf_prefixes", ())
        names = set()
        for row in rows:
            if row.google:
                names.add(row.google)
            for alternative in row.hf_names():
                names.update(loading._hf_candidates(alternative, prefixes))
        return names

    def checkpoint_tensors(self, format="tf"):
        """The weights as ``{checkpoint name: numpy array}`` in Google TF (``"tf"``) or
        Hugging Face (``"hf"``) names and layouts, as `save_weights_as_checkpoint`
        writes them."""
        return loading.checkpoint_tensors(self, format)

    def save_weights_as_checkpoint(self, path, format="tf"):
        """Save the weights under checkpoint names.

        Args:
            path: a TF checkpoint prefix (``format="tf"``, Google names) or a
                ``.safetensors`` file (``format="hf"``, Hugging Face names).
        """
        return loading.save_checkpoint_from(self, path, format)


def _check_sizes(**sizes):
    """Sizes are positive ints (None: not given). A zero or negative size would build a
    model without blocks or heads, or fail later with a ZeroDivisionError."""
    for name, value in sizes.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_rates(**rates):
    for name, value in rates.items():
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def _check_vocab_edits(vocab_size, keep_tokens, compound_tokens):
    """``keep_tokens`` / ``compound_tokens`` index the checkpoint's embedding rows: every
    id is an int in ``[0, vocab_size)`` (a negative one would silently wrap to the end of
    the table, a large one fail at load time without naming the argument)."""
    groups = []
    if keep_tokens is not None:
        groups.append(("keep_tokens", list(keep_tokens)))
    for i, ids in enumerate(compound_tokens or []):
        ids = list(ids) if isinstance(ids, (list, tuple, range)) or hasattr(ids, "tolist") \
            else [ids]
        if not ids:
            raise ValueError(f"compound_tokens[{i}] is empty; each new token averages at "
                             "least one checkpoint token")
        groups.append((f"compound_tokens[{i}]", ids))
    for name, ids in groups:
        for value in ids:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must hold int token ids, got {value!r}")
            if not 0 <= int(value) < vocab_size:
                raise ValueError(
                    f"{name} holds id {int(value)}, outside the checkpoint vocabulary "
                    f"[0, {vocab_size}) (vocab_size of the config)"
                )


def _computes_attention_mask(apply_embeddings):
    """Wrap a family's ``apply_embeddings``: called from outside :meth:`Transformer.call`
    / ``call_with_cache`` (on the model's or on new inputs), it first sets
    ``self.attention_mask`` to the mask of those inputs, so the blocks applied next
    attend as they do in the built model."""

    @functools.wraps(apply_embeddings)
    def wrapper(self, inputs, *args, **kwargs):
        if not getattr(self, "_template_depth", 0):
            self.attention_mask = self.compute_attention_mask(inputs)
        self._template_depth = getattr(self, "_template_depth", 0) + 1
        try:
            return apply_embeddings(self, inputs, *args, **kwargs)
        finally:
            self._template_depth -= 1

    return wrapper


class _SkippingTensors:
    """The builder as `loading.load_checkpoint_into` sees it, with some checkpoint
    tensors added to its ``checkpoint_ignore``."""

    def __init__(self, transformer, names):
        self._transformer = transformer
        self.checkpoint_ignore = tuple(getattr(transformer, "checkpoint_ignore", ())) + tuple(
            f"^{re.escape(name)}$" for name in sorted(names))

    def __getattr__(self, name):
        return getattr(self._transformer, name)


def _is_input(tensor):
    history = getattr(tensor, "_keras_history", None)
    return history is not None and isinstance(history[0], keras.layers.InputLayer)


# ---------------------------------------------------------------------- mask mixins


class LMMask:
    """Causal (left-to-right LM) attention mask mixin (bert4keras ``LM_Mask``)."""

    def compute_attention_mask(self, inputs):
        return self.apply(
            self.token_ids_of(inputs), AttentionMask, mode="causal",
            pad_id=self.pad_token_id, name="Attention-Mask",
        )


class UniLMMask:
    """UniLM seq2seq mask mixin (bert4keras ``UniLM_Mask``; arXiv:1905.03197): segment 0
    is bidirectional, segment 1 is causal and sees all of segment 0.

    Raises:
        ValueError: when the model has no segment input (``segment_vocab_size=0``).
    """

    def compute_attention_mask(self, inputs):
        segment_ids = self.segment_ids_of(inputs)
        if segment_ids is None:
            raise ValueError(
                "application='unilm' needs segment ids to tell source from target; "
                "this model has no segment input (segment_vocab_size=0)"
            )
        return self.apply(
            [self.token_ids_of(inputs), segment_ids], AttentionMask, mode="unilm",
            pad_id=self.pad_token_id, name="Attention-Mask",
        )


def extend_with_language_model(base):
    """Return a subclass of `base` with the causal mask and, for encoders with an MLM
    head, that head on by default (as bert4keras). A model that is already causal
    (GPT family) is returned unchanged."""
    if issubclass(base, LMMask):
        return base

    class LanguageModel(LMMask, base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if hasattr(self, "with_mlm"):
                self.with_mlm = self.with_mlm or True

    LanguageModel.__name__ = LanguageModel.__qualname__ = f"LanguageModel{base.__name__}"
    return LanguageModel


def extend_with_unified_language_model(base):
    """Return a subclass of `base` with the UniLM mask (and the MLM head on by default);
    its mask replaces a causal model's own (bert4keras allows UniLM on GPT)."""

    class UnifiedLanguageModel(UniLMMask, base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if hasattr(self, "with_mlm"):
                self.with_mlm = self.with_mlm or True

    UnifiedLanguageModel.__name__ = f"UnifiedLanguageModel{base.__name__}"
    UnifiedLanguageModel.__qualname__ = UnifiedLanguageModel.__name__
    return UnifiedLanguageModel
