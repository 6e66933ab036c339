"""Compiled, KV-cached autoregressive decoding (greedy, beam search, sampling).

:func:`generate` runs the whole decode - prefill, the token loop, beam bookkeeping,
sampling - as ONE compiled XLA program per input shape: a preallocated fixed-size KV cache
(:meth:`Transformer.init_caches`), the model's own layers re-run on the new token with
:meth:`Transformer.call_with_cache`, and the loop inside ``keras.ops.while_loop``. It
serves three kinds of model:

- causal LMs: any encoder built with ``application="lm"`` (BERT, RoBERTa...), and the GPT
  families (``gpt``, ``gpt2``, ``gpt2_ml``);
- UniLM seq2seq models (``application="unilm"``; Dong et al. 2019, arXiv:1905.03197,
  kexue.fm/archives/6933): the source (segment 0) is attended bidirectionally, generated
  tokens are causal with segment id 1 - SimBERT-style generation from a BERT checkpoint;
- T5 encoder-decoders (Raffel et al. 2019, arXiv:1910.10683): the encoder runs once, the
  decoder reads its cross-attention K/V from read-only ``"cross-i"`` caches.

Design:

- **Compile boundary.** Everything inside is ``keras.ops``. Only :func:`_compile` is
  backend specific: on JAX a ``jax.jit`` of a *stateless* function that receives the
  model's variable values as arguments (mapped onto the variables with
  ``keras.StatelessScope``), so weights are never baked in as constants and a fine-tuned
  model decodes with its current weights without recompiling; on TensorFlow a
  ``tf.function(jit_compile=True)`` that captures the variables by reference. Other
  backends run the same code eagerly. The compiled function is cached on the transformer
  object, keyed by the input shapes and the structural options (strategy, beams, top-k...),
  so repeated calls with the same shapes reuse one compilation; continuous values
  (temperature, top-p, penalties, end id, seed) are runtime inputs.
- **Cache layout.** ``{"self-i": (keys, values)}`` each ``[rows, L, heads, head_size]``
  with ``L = prompt_len + max_new_tokens - 1`` (decoder-only) or ``max_new_tokens``
  (T5: the start token plus the fed generated tokens); rows are ``batch`` (greedy),
  ``batch * num_beams`` (beam) or ``batch * num_return_sequences`` (sample). Beam search
  reorders the rows after each step like Hugging Face does.
- **Padding side.** Prompts of different lengths are LEFT-padded internally, so every row
  writes its new token at the same cache slot (one scalar ``cache_index``) while its
  positions are ``slot - pad_len`` (passed as ``position_ids``) and its padding slots are
  masked as keys. T5 encoder inputs are right-padded (the encoder is bidirectional).

Search semantics follow Hugging Face ``transformers.generate`` exactly (so token ids are
identical on the same weights): greedy ``argmax``; beam search as HF's vectorised
``_beam_search`` (2 * num_beams candidates per step, finished hypotheses scored
``sum_logprobs / new_len ** length_penalty``, ``early_stopping`` False / True /
``"never"``); repetition penalty as CTRL (Keskar et al. 2019, arXiv:1909.05858): a
positive logit of an already present token is divided by the penalty, a negative one
multiplied; ``min_new_tokens`` forbids the end token; sampling applies temperature, then
top-k, then top-p (nucleus; Holtzman et al. 2019, arXiv:1904.09751).
"""
import functools

import numpy as np

import keras
from keras import ops

from .models import input_checks
from .models.base import LMMask, UniLMMask
from .ops import causal_mask, unilm_mask
from .snippets import AutoRegressiveDecoder  # noqa: F401  (the numpy, uncached API)

__all__ = ["generate", "trace_count", "AutoRegressiveDecoder"]

STRATEGIES = ("greedy", "beam", "sample")
# Hugging Face's "cannot be selected" offset for beam scores (kept identical so that the
# same candidates tie and win as in transformers).
_BEAM_NEG = -1.0e9
# Log-probabilities of models that output softmax probabilities are log(max(p, this)).
_MIN_PROBA = 1e-37
_CACHE_ATTRIBUTE = "_kerasformer_generate_cache"
# Padded prompt widths are rounded up to a multiple of this, so prompts of nearby lengths
# share one compiled program (the extra slots are masked padding: exact zeros).
WIDTH_MULTIPLE = 16


def generate(transformer, token_ids, segment_ids=None, *, max_new_tokens,
             strategy="greedy", num_beams=1, top_k=None, top_p=None, temperature=1.0,
             repetition_penalty=1.0, length_penalty=1.0, min_new_tokens=0, end_id=None,
             num_return_sequences=1, seed=None, early_stopping=False):
    """Generate tokens with a compiled KV-cache decoding loop.

    Args:
        transformer: the builder object returned by ``build_transformer_model(...,
            return_keras_model=False)``: a model built with ``application="lm"`` or
            ``"unilm"``, a GPT family model, or a T5 encoder-decoder.
        token_ids: the prompts (decoder-only models), the sources (UniLM: segment 0 part)
            or the encoder inputs (T5). Either a list of token-id lists of any lengths, or
            an int array ``[batch, seq_len]`` padded on either side. Tokens equal to the
            padding id that the model's attention mask hides (``pad_token_id``; GPT
            models' ``attention_pad_id``) are treated as padding wherever they are and
            dropped, as the model's own forward pass ignores them. GPT-2 has no padding
            id (id 0 is a real token): give it a list of lists.
        segment_ids: same structure as `token_ids` (None: zeros). Generated tokens take
            segment id 1 for UniLM models and the last prompt token's segment id for LMs.
        max_new_tokens: int >= 1, the number N of tokens generated per sequence.
        strategy: ``"greedy"``, ``"beam"`` or ``"sample"``.
        num_beams: beam width (``strategy="beam"``; 1 means greedy decoding, as in
            Hugging Face).
        top_k: sampling keeps the k most likely tokens (``strategy="sample"``).
        top_p: sampling keeps the smallest set of most likely tokens whose probability
            reaches top_p, as Hugging Face's ``TopPLogitsWarper`` (ties at the threshold
            are kept).
        temperature: > 0; divides the logits before sampling; beam search scores with
            ``log_softmax(logits / temperature)`` (as bert4keras; 1.0 is HF's beam
            search). Irrelevant to greedy decoding.
        repetition_penalty: > 0; CTRL penalty (arXiv:1909.05858) on the tokens of the
            prompt and those generated so far (T5: the decoder start token and the
            generated tokens), as Hugging Face: positive logits are divided by it,
            negative ones multiplied. Beam search applies it to log-probabilities, as HF.
        length_penalty: beam search scores a finished hypothesis with
            ``sum_logprobs / new_len ** length_penalty`` (new_len counts the end token).
        min_new_tokens: the end token cannot be generated before this many new tokens.
        end_id: the end token id, or None to always generate N tokens.
        num_return_sequences: sequences per prompt: <= num_beams for beam search, any
            number of independent samples for sampling, 1 for greedy decoding.
        seed: int seed of sampling; the same seed and inputs give the same samples on
            a given backend (JAX and TensorFlow draw different streams). None draws one
            from NumPy's global generator, so ``keras.utils.set_random_seed`` also makes
            runs reproducible.
        early_stopping: beam search stopping rule, as Hugging Face: False (stop when the
            best running beam cannot beat the worst finished one, measured at the
            current length), True (stop when num_beams hypotheses are finished) or
            ``"never"`` (the canonical rule).

    Returns:
        int32 NumPy array ``[batch * num_return_sequences, max_new_tokens]`` of the new
        tokens only (the prompt is not repeated), the sequences of a prompt next to each
        other (best beam first). After a sequence's end token, every position holds
        ``end_id`` again (the pad value); without ``end_id`` nothing is padded.

    Raises:
        ValueError: for an unknown strategy, an option that does not apply to it or is
            out of range, an empty prompt, prompt ids that are not integers or lie
            outside the model's vocabulary / segments, an ``end_id`` outside the output
            vocabulary, a model that is not generative
            (``application="encoder"``) or whose inputs generation cannot fill, or a
            length beyond the model's position table.
    """
    options = _Options.check(
        strategy=strategy, max_new_tokens=max_new_tokens, num_beams=num_beams,
        top_k=top_k, top_p=top_p, temperature=temperature,
        repetition_penalty=repetition_penalty, length_penalty=length_penalty,
        min_new_tokens=min_new_tokens, end_id=end_id,
        num_return_sequences=num_return_sequences, seed=seed, early_stopping=early_stopping,
    )
    runner = _runner_for(transformer)
    options.end_id = _check_end_id(end_id, runner)
    _check_prompt_ids(runner, token_ids, segment_ids)
    arrays = runner.prepare(token_ids, segment_ids, options.max_new_tokens)
    key = (runner.kind, tuple((k, v.shape) for k, v in arrays.items()), options.static_key())
    compiled = _compiled(transformer, key, runner, options)
    dynamic = options.dynamic_inputs(_seed_dtype(transformer))
    outputs = compiled(arrays, dynamic)
    return np.asarray(ops.convert_to_numpy(outputs)).astype("int32")


# ---------------------------------------------------------------------------- options


class _Options:
    """Validated options: static ones (shape the compiled graph) and dynamic ones (fed as
    runtime tensors so that changing them does not recompile)."""

    @classmethod
    def check(cls, **kw):
        self = cls()
        self.__dict__.update(kw)
        strategy = kw["strategy"]
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        n = kw["max_new_tokens"]
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {n!r}")
        self.max_new_tokens = int(n)
        if not isinstance(kw["num_beams"], (int, np.integer)) or kw["num_beams"] < 1:
            raise ValueError(f"num_beams must be an int >= 1, got {kw['num_beams']!r}")
        if strategy != "beam" and kw["num_beams"] != 1:
            raise ValueError(f"num_beams={kw['num_beams']} needs strategy='beam'")
        nrs = kw["num_return_sequences"]
        if not isinstance(nrs, (int, np.integer)) or nrs < 1:
            raise ValueError(f"num_return_sequences must be an int >= 1, got {nrs!r}")
        if strategy == "greedy" and nrs != 1:
            raise ValueError("greedy decoding returns one sequence per prompt; use "
                             "strategy='beam' or 'sample' for num_return_sequences > 1")
        if strategy == "beam" and nrs > kw["num_beams"]:
            raise ValueError(f"num_return_sequences ({nrs}) must be <= num_beams "
                             f"({kw['num_beams']})")
        if strategy != "sample":
            for name in ("top_k", "top_p", "seed"):
                if kw[name] is not None:
                    raise ValueError(f"{name} applies to strategy='sample' only")
        if kw["top_k"] is not None and (not isinstance(kw["top_k"], (int, np.integer))
                                        or kw["top_k"] < 1):
            raise ValueError(f"top_k must be an int >= 1, got {kw['top_k']!r}")
        if kw["top_p"] is not None and not 0.0 < kw["top_p"] <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {kw['top_p']!r}")
        if not kw["temperature"] > 0:
            raise ValueError(f"temperature must be > 0, got {kw['temperature']!r}")
        if not kw["repetition_penalty"] > 0:
            raise ValueError(
                f"repetition_penalty must be > 0, got {kw['repetition_penalty']!r}")
        if not isinstance(kw["min_new_tokens"], (int, np.integer)) or kw["min_new_tokens"] < 0:
            raise ValueError(f"min_new_tokens must be an int >= 0, got {kw['min_new_tokens']!r}")
        if kw["early_stopping"] not in (False, True, "never"):
            raise ValueError("early_stopping must be False, True or 'never', got "
                             f"{kw['early_stopping']!r}")
        self.num_beams = int(kw["num_beams"])
        if strategy == "beam" and self.num_beams == 1:
            # One beam is greedy decoding (as transformers decides it; the beam
            # bookkeeping with one beam could return a longer, better-normalised one).
            self.strategy = "greedy"
        self.num_return_sequences = int(nrs)
        self.has_end = kw["end_id"] is not None
        self.use_penalty = kw["repetition_penalty"] != 1.0
        if strategy == "sample" and kw["seed"] is None:
            self.seed = int(np.random.randint(0, 2**31 - 1))
        return self

    def static_key(self):
        return (
            self.strategy, self.max_new_tokens, self.num_beams, self.num_return_sequences,
            self.top_k, self.top_p is not None, self.has_end, self.use_penalty,
            self.early_stopping if self.strategy == "beam" else None,
        )

    def dynamic_inputs(self, seed_dtype):
        n = self.max_new_tokens
        lp = float(self.length_penalty)
        # Length-penalty denominators computed in float64 then rounded, as Python does for
        # HF (`score / (length ** length_penalty)` with a Python float).
        lengths = np.arange(1, n + 1, dtype=np.float64)
        finished_den = np.array([float(x) ** lp for x in lengths], np.float32)
        if self.early_stopping == "never" and lp > 0.0:
            best_den = np.full((n,), float(n) ** lp, np.float32)
        else:
            best_den = finished_den
        seed = self.seed if self.strategy == "sample" else 0
        return {
            "temperature": np.float32(self.temperature),
            "top_p": np.float32(self.top_p if self.top_p is not None else 1.0),
            "repetition_penalty": np.float32(self.repetition_penalty),
            "min_new_tokens": np.int32(self.min_new_tokens),
            "end_id": np.int32(self.end_id if self.end_id is not None else 0),
            "finished_den": finished_den,
            "best_den": best_den,
            "seed": np.array([seed, 0], dtype=seed_dtype),
        }


# ---------------------------------------------------------------------------- models


def _runner_for(transformer):
    decoder = getattr(transformer, "decoder_builder", None)
    if decoder is not None and hasattr(decoder, "call_with_cache"):
        return _Seq2SeqRunner(transformer)
    if isinstance(transformer, UniLMMask):
        return _CausalRunner(transformer, "unilm")
    if isinstance(transformer, LMMask):
        return _CausalRunner(transformer, "lm")
    if isinstance(transformer, keras.Model):
        raise ValueError(
            "generate() needs the builder object: build_transformer_model(..., "
            "return_keras_model=False)"
        )
    raise ValueError(
        f"{type(transformer).__name__} is not a generative model: build it with "
        "application='lm' or 'unilm', or use a GPT / T5 family model"
    )


def _is_probas(model):
    """Whether a keras.Model's (last) output is a softmax, judged by the layer that made
    it (bert4keras MLM heads default to probabilities)."""
    output = model.outputs[-1]
    history = getattr(output, "_keras_history", None)
    layer = history[0] if history is not None else None
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    name = activation if isinstance(activation, str) else getattr(activation, "__name__", "")
    return name == "softmax"


def _to_log_scores(outputs, probas):
    """The last position of the model output as float32 logits [rows, vocab] (log of the
    probabilities for softmax heads: the same argmax / log_softmax)."""
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[-1]
    x = ops.cast(outputs[:, -1, :], "float32")
    if probas:
        x = ops.log(ops.maximum(x, _MIN_PROBA))
    return x


def _check_end_id(end_id, runner):
    """`end_id` as one int in ``[0, vocab)`` of the model's output (or None).

    A list is accepted when it holds one id: the compiled loop stops at a single id."""
    if end_id is None:
        return None
    ids = list(end_id) if isinstance(end_id, (list, tuple, np.ndarray)) else [end_id]
    vocab = runner.output_vocab_size()
    for value in ids:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"end_id must be an int id (or a list of one), got {end_id!r}")
        if not 0 <= int(value) < vocab:
            raise ValueError(
                f"end_id {int(value)} is outside the model's output vocabulary [0, {vocab}); "
                "generation would never stop"
            )
    if len(ids) != 1:
        raise ValueError(f"generate() stops at one end_id; got {len(ids)} ids {list(ids)}")
    return int(ids[0])


def _check_prompt_ids(runner, token_ids, segment_ids):
    """Prompt (and segment) ids are integers inside the model's tables, on the host: the
    compiled loop would turn a bad id into NaN rows or a clamped / wrapped embedding."""
    specs = {spec.name: spec for spec in input_checks.id_inputs(runner.model_for_checks())}
    for role, values in (("token", token_ids), ("segment", segment_ids)):
        spec = specs.get(runner.input_name(role))
        if values is None or spec is None:
            continue
        # No length limit here: prepare() checks prompt + new tokens against the table.
        spec = input_checks.IdInput(f"{role}_ids", spec.index, spec.high, spec.table)
        if isinstance(values, (list, tuple)):
            for row in values:
                if len(row):  # an empty prompt is reported by prepare()
                    spec.check(np.asarray(row), "generate")
        else:
            spec.check(np.asarray(ops.convert_to_numpy(values)), "generate")


def _split_prompts(token_ids, segment_ids, pad_id):
    """Host side: the list of (tokens, segments) of every row, padding dropped."""
    def rows(x):
        if isinstance(x, (list, tuple)):
            return [np.asarray(r, dtype=np.int64).reshape(-1) for r in x]
        x = np.asarray(ops.convert_to_numpy(x) if not isinstance(x, np.ndarray) else x)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2:
            raise ValueError(f"token_ids must be [batch, seq_len], got shape {x.shape}")
        return list(x.astype(np.int64))

    tokens = rows(token_ids)
    if not tokens:
        raise ValueError("token_ids is empty")
    segments = rows(segment_ids) if segment_ids is not None else [np.zeros_like(t) for t in tokens]
    if len(segments) != len(tokens) or any(len(s) != len(t) for s, t in zip(segments, tokens)):
        raise ValueError("segment_ids must have the same structure as token_ids")
    out = []
    for i, (t, s) in enumerate(zip(tokens, segments)):
        if pad_id is not None:
            keep = t != pad_id
            t, s = t[keep], s[keep]
        if len(t) == 0:
            raise ValueError(f"prompt {i} is empty (after dropping padding)")
        out.append((t, s))
    return out


class _CausalRunner:
    """Decoder-only models (``application="lm"``, GPT families) and UniLM models."""

    def __init__(self, transformer, kind):
        self.transformer = transformer
        self.kind = kind
        # The id whose keys the model's own attention mask hides (GPT families expose it
        # as `attention_pad_id`: None when pad is a real token or equals bos/eos).
        self.pad_id = getattr(transformer, "attention_pad_id",
                              getattr(transformer, "pad_token_id", None))
        self.probas = _is_probas(transformer.model)
        self.roles = _input_roles(transformer)
        if kind == "unilm" and "segment" not in self.roles:
            raise ValueError("a UniLM model needs a segment input (segment_vocab_size > 0)")

    def variables(self):
        return _unique_variables([self.transformer.model])

    def model_for_checks(self):
        return self.transformer.model

    def input_name(self, role):
        index = self.roles.index(role) if role in self.roles else None
        return None if index is None else self.transformer.model.inputs[index].name

    def output_vocab_size(self):
        return int(self.transformer.model.outputs[-1].shape[-1])

    def prepare(self, token_ids, segment_ids, max_new_tokens):
        prompts = _split_prompts(token_ids, segment_ids, self.pad_id)
        longest = max(len(t) for t, _ in prompts)
        length = longest + max_new_tokens - 1
        limit = _position_limit(self.transformer)
        if limit is not None and length > limit:
            raise ValueError(
                f"prompt length {longest} + max_new_tokens {max_new_tokens} - 1 = {length} "
                f"exceeds the model's {limit} positions"
            )
        width = _round_up(longest)
        batch = len(prompts)
        tokens = np.full((batch, width), self.pad_id or 0, np.int32)
        segments = np.zeros((batch, width), np.int32)
        pad_len = np.zeros((batch,), np.int32)
        for i, (t, s) in enumerate(prompts):
            tokens[i, width - len(t):] = t
            segments[i, width - len(t):] = s
            pad_len[i] = width - len(t)
        return {"tokens": tokens, "segments": segments, "pad_len": pad_len}

    def _inputs(self, tokens, segments, positions):
        values = {"token": tokens, "segment": segments, "position": positions}
        return [values[role] for role in self.roles]

    def prefill(self, arrays, cache_length):
        tokens, segments, pad_len = arrays["tokens"], arrays["segments"], arrays["pad_len"]
        batch, width = tokens.shape
        slots = ops.arange(width, dtype="int32")[None]
        valid = ops.greater_equal(slots, pad_len[:, None])  # left padding is invalid
        extra = cache_length - width
        key_valid = ops.concatenate([valid, ops.zeros((batch, extra), "bool")], axis=1)
        if self.kind == "unilm":
            # Source bidirectional (and any target part of it causal): the UniLM rule on
            # the prompt's own segment ids; no prompt token sees the unwritten slots.
            mask = ops.logical_and(unilm_mask(segments), valid[:, None, None, :])
            mask = ops.concatenate(
                [mask, ops.zeros((batch, 1, width, extra), "bool")], axis=-1)
        else:
            mask = ops.logical_and(causal_mask(width, cache_length),
                                   key_valid[:, None, None, :])
        positions = ops.maximum(slots - pad_len[:, None], 0)
        caches = self.transformer.init_caches(batch, cache_length)
        outputs, caches = self.transformer.call_with_cache(
            self._inputs(tokens, segments, positions), caches, 0, mask,
            position_ids=positions,
        )
        if self.kind == "unilm":
            new_segment = ops.ones((batch,), "int32")
        else:
            new_segment = ops.cast(segments[:, -1], "int32")
        rows = {"caches": caches, "key_valid": key_valid, "pad_len": pad_len,
                "segment": new_segment}
        presence_ids, presence_valid = tokens, valid
        return _to_log_scores(outputs, self.probas), rows, {}, (presence_ids, presence_valid)

    def step(self, token, index, rows, fixed, width, cache_length):
        slot = width + index
        key_valid = rows["key_valid"]
        is_key = ops.ones_like(token, "bool") if self.pad_id is None else ops.not_equal(
            token, self.pad_id)
        key_valid = ops.slice_update(key_valid, (0, slot), is_key[:, None])
        seen = ops.less_equal(ops.arange(cache_length, dtype="int32"), slot)
        mask = ops.logical_and(key_valid, seen[None])[:, None, None, :]
        positions = (slot - rows["pad_len"])[:, None]
        inputs = self._inputs(token[:, None], rows["segment"][:, None], positions)
        outputs, caches = self.transformer.call_with_cache(
            inputs, rows["caches"], slot, mask, position_ids=positions)
        rows = dict(rows, caches=caches, key_valid=key_valid)
        return _to_log_scores(outputs, self.probas), rows

    @staticmethod
    def cache_length(arrays, max_new_tokens):
        return arrays["tokens"].shape[1] + max_new_tokens - 1

    @staticmethod
    def width(arrays):
        return arrays["tokens"].shape[1]


class _Seq2SeqRunner:
    """T5-style encoder-decoders: ``t.encoder_builder.model`` (token ids -> [B, S, H]) and
    ``t.decoder_builder.init_caches(batch, length, context)`` / ``call_with_cache(...,
    context_mask=...)``."""

    kind = "seq2seq"

    def __init__(self, transformer):
        self.transformer = transformer
        self.encoder = transformer.encoder_builder
        self.decoder = transformer.decoder_builder
        self.pad_id = getattr(self.encoder, "pad_token_id",
                              getattr(transformer, "pad_token_id", 0))
        start = getattr(transformer, "decoder_start_token_id", None)
        if start is None:
            start = getattr(self.decoder, "decoder_start_token_id", None)
        self.start_id = 0 if start is None else int(start)
        self.probas = _is_probas(self.decoder.model)

    def variables(self):
        return _unique_variables([self.encoder.model, self.decoder.model])

    def model_for_checks(self):
        return self.encoder.model

    def input_name(self, role):
        inputs = self.encoder.model.inputs
        return inputs[0].name if role == "token" else None

    def output_vocab_size(self):
        return int(self.decoder.model.outputs[-1].shape[-1])

    def prepare(self, token_ids, segment_ids, max_new_tokens):
        if segment_ids is not None:
            raise ValueError("T5 models take no segment_ids")
        prompts = _split_prompts(token_ids, None, self.pad_id)
        width = _round_up(max(len(t) for t, _ in prompts))
        tokens = np.full((len(prompts), width), self.pad_id or 0, np.int32)
        for i, (t, _) in enumerate(prompts):
            tokens[i, :len(t)] = t
        return {"tokens": tokens}

    def prefill(self, arrays, cache_length):
        tokens = arrays["tokens"]
        batch = tokens.shape[0]
        context = self.encoder.model(tokens)
        if isinstance(context, (list, tuple)):
            context = context[0]
        context_mask = ops.not_equal(tokens, self.pad_id)[:, None, None, :]
        caches = self.decoder.init_caches(batch, cache_length, context)
        self_caches = {k: v for k, v in caches.items() if k.startswith("self-")}
        fixed = {"cross": {k: v for k, v in caches.items() if not k.startswith("self-")},
                 "context_mask": context_mask}
        start = ops.full((batch,), self.start_id, "int32")
        logits, rows = self._run(start, 0, {"caches": self_caches}, fixed, cache_length)
        presence = (start[:, None], ops.ones((batch, 1), "bool"))
        return logits, rows, fixed, presence

    def _run(self, token, slot, rows, fixed, cache_length):
        seen = ops.less_equal(ops.arange(cache_length, dtype="int32"), slot)
        mask = seen[None, None, None, :]
        caches = dict(rows["caches"], **fixed["cross"])
        outputs, caches = self.decoder.call_with_cache(
            [token[:, None]], caches, slot, mask, context_mask=fixed["context_mask"])
        self_caches = {k: v for k, v in caches.items() if k.startswith("self-")}
        return _to_log_scores(outputs, self.probas), dict(rows, caches=self_caches)

    def step(self, token, index, rows, fixed, width, cache_length):
        return self._run(token, index + 1, rows, fixed, cache_length)

    @staticmethod
    def cache_length(arrays, max_new_tokens):
        return max_new_tokens

    @staticmethod
    def width(arrays):
        return 0


def _input_roles(transformer):
    """Which tensor feeds each model input, from the bert4keras input names."""
    roles = []
    prefix = getattr(transformer, "prefix", "") or ""
    for tensor in transformer.inputs:
        name = tensor.name[len(prefix):] if tensor.name.startswith(prefix) else tensor.name
        role = {"Input-Token": "token", "Input-Segment": "segment",
                "Input-Position": "position"}.get(name)
        if role is None:
            raise ValueError(
                f"generate() cannot fill the model input {tensor.name!r}; supported inputs "
                "are Input-Token, Input-Segment and Input-Position"
            )
        roles.append(role)
    return roles


def _round_up(width):
    return -(-width // WIDTH_MULTIPLE) * WIDTH_MULTIPLE


def _position_limit(transformer):
    limit = getattr(transformer, "max_position", None)
    if limit is None or getattr(transformer, "hierarchical_position", None):
        return None
    return int(limit)


def _unique_variables(models):
    seen, variables = set(), []
    for model in models:
        for v in model.variables:
            if id(v) not in seen:
                seen.add(id(v))
                variables.append(v)
    return variables


# ---------------------------------------------------------------------------- decoding


def _take_rows(tree, index):
    return keras.tree.map_structure(lambda x: ops.take(x, index, axis=0), tree)


def _repeat_rows(tree, k):
    if k == 1:
        return tree
    return keras.tree.map_structure(lambda x: ops.repeat(x, k, axis=0), tree)


def _prompt_presence(ids, valid, vocab_size):
    """bool [rows, vocab]: which tokens occur (where `valid`) in each row of `ids`."""
    rows, width = ops.shape(ids)[0], ops.shape(ids)[1]
    row_index = ops.repeat(ops.arange(rows, dtype="int32")[:, None], width, axis=1)
    indices = ops.stack([ops.reshape(row_index, (-1,)),
                         ops.reshape(ops.cast(ids, "int32"), (-1,))], axis=1)
    counts = ops.scatter(indices, ops.reshape(ops.cast(valid, "float32"), (-1,)),
                         (rows, vocab_size))
    return ops.greater(counts, 0)


def _add_token(presence, token):
    vocab = ops.shape(presence)[1]
    return ops.logical_or(presence, ops.equal(ops.arange(vocab, dtype="int32")[None],
                                              token[:, None]))


def _process(scores, index, presence, options, dyn):
    """HF's logits processors in HF's order: repetition penalty, then min_new_tokens."""
    if options.use_penalty:
        penalty = dyn["repetition_penalty"]
        penalized = ops.where(scores < 0, scores * penalty, scores / penalty)
        scores = ops.where(presence, penalized, scores)
    if options.has_end:
        vocab = ops.shape(scores)[1]
        is_end = ops.equal(ops.arange(vocab, dtype="int32"), dyn["end_id"])[None]
        forbid = ops.logical_and(is_end, index < dyn["min_new_tokens"])
        scores = ops.where(forbid, float("-inf"), scores)
    return scores


def _warp(scores, options, dyn):
    """Sampling filters in HF's order: temperature, top-k, top-p (removed: -inf)."""
    scores = scores / dyn["temperature"]
    if options.top_k is not None:
        k = min(int(options.top_k), int(scores.shape[-1]))
        kth = ops.top_k(scores, k)[0][:, -1:]
        scores = ops.where(scores < kth, float("-inf"), scores)
    if options.top_p is not None:
        # HF: sort ascending, drop the prefix whose cumulative probability is
        # <= 1 - top_p, always keep the most likely token.
        ascending = ops.sort(scores, axis=-1)
        cumulative = ops.cumsum(ops.softmax(ascending, axis=-1), axis=-1)
        removed = ops.sum(ops.cast(cumulative <= 1.0 - dyn["top_p"], "int32"), axis=-1)
        removed = ops.minimum(removed, ops.shape(scores)[-1] - 1)
        threshold = ops.take_along_axis(ascending, removed[:, None], axis=-1)
        scores = ops.where(scores < threshold, float("-inf"), scores)
    return scores


def _sample(scores, index, dyn, seed_generator):
    # Stateless sampling: the seed of step `index` is (seed, index), so results depend on
    # the seed and the inputs only, not on how often anything was called before.
    state = dyn["seed"] + ops.cast(ops.stack([0, index]), dyn["seed"].dtype)
    with keras.StatelessScope(state_mapping=[(seed_generator.state, state)]):
        token = keras.random.categorical(scores, 1, seed=seed_generator)
    return ops.cast(token[:, 0], "int32")


def _decode(runner, options, arrays, dyn, seed_generator):
    """The whole generation as keras.ops (the body of the compiled function)."""
    n = options.max_new_tokens
    width = runner.width(arrays)
    cache_length = runner.cache_length(arrays, n)
    logits, rows, fixed, (presence_ids, presence_valid) = runner.prefill(arrays, cache_length)
    vocab = int(logits.shape[-1])
    if options.use_penalty:
        presence = _prompt_presence(presence_ids, presence_valid, vocab)
    else:
        presence = ops.zeros((ops.shape(logits)[0], 1), "bool")  # unused placeholder
    pad_value = dyn["end_id"] if options.has_end else ops.convert_to_tensor(0, "int32")
    start = ops.convert_to_tensor(0, "int32")

    def step(token, index, rows):
        return runner.step(token, index, rows, fixed, width, cache_length)

    if options.strategy == "beam":
        return _beam_search(step, options, dyn, logits, rows, fixed, presence, pad_value,
                            start, vocab)

    copies = options.num_return_sequences
    logits, rows, presence = _repeat_rows((logits, rows, presence), copies)
    fixed.update(_repeat_rows(fixed, copies))
    total = ops.shape(logits)[0]
    outputs = ops.full((total, n), pad_value, "int32")
    done = ops.zeros((total,), "bool")

    def cond(index, logits, rows, outputs, done, presence):
        return ops.logical_and(index < n, ops.logical_not(ops.all(done)))

    def body(index, logits, rows, outputs, done, presence):
        scores = _process(logits, index, presence, options, dyn)
        if options.strategy == "sample":
            token = _sample(_warp(scores, options, dyn), index, dyn, seed_generator)
        else:
            token = ops.cast(ops.argmax(scores, axis=-1), "int32")
        if options.has_end:
            token = ops.where(done, pad_value, token)
            done = ops.logical_or(done, ops.equal(token, dyn["end_id"]))
        outputs = ops.slice_update(outputs, (0, index), token[:, None])
        if options.use_penalty:
            presence = _add_token(presence, token)
        logits, rows = step(token, index, rows)
        return index + 1, logits, rows, outputs, done, presence

    state = ops.while_loop(cond, body, (start, logits, rows, outputs, done, presence))
    return state[3]


def _beam_search(step, options, dyn, logits, rows, fixed, presence, pad_value, start,
                 vocab):
    """Hugging Face's vectorised beam search (transformers ``_beam_search``) on a
    preallocated cache: running beams [B, K], finished hypotheses [B, K]."""
    n, beams = options.max_new_tokens, options.num_beams
    keep = 2 * beams  # HF: max(2, 1 + number of end tokens) * num_beams
    batch = ops.shape(logits)[0]
    logits, rows, presence = _repeat_rows((logits, rows, presence), beams)
    fixed.update(_repeat_rows(fixed, beams))
    neg = _BEAM_NEG
    running_seqs = ops.full((batch, beams, n), pad_value, "int32")
    # Only beam 0 is live at first, so the K beams do not all pick the same token.
    first = ops.concatenate([ops.zeros((1,), "float32"),
                             ops.full((beams - 1,), neg, "float32")])
    running_scores = ops.repeat(first[None], batch, axis=0)
    seqs = running_seqs
    scores = ops.full((batch, beams), neg, "float32")
    finished = ops.zeros((batch, beams), "bool")
    improvable = ops.ones((batch, 1), "bool")
    hits = ops.zeros((batch, keep), "bool")
    top_mask = ops.arange(keep) < beams
    row_offset = ops.arange(batch, dtype="int32")[:, None] * beams

    def gather(x, index):
        while len(index.shape) < len(x.shape):
            index = index[..., None]
        return ops.take_along_axis(x, index, axis=1)

    def cond(index, logits, rows, presence, running_seqs, running_scores, seqs, scores,
             finished, improvable, hits):
        go = ops.logical_and(index < n, ops.any(improvable))
        if options.early_stopping is True:
            go = ops.logical_and(go, ops.logical_not(ops.all(finished)))
        return ops.logical_and(go, ops.logical_not(ops.all(hits)))

    def body(index, logits, rows, presence, running_seqs, running_scores, seqs, scores,
             finished, improvable, hits):
        log_probs = ops.log_softmax(logits / dyn["temperature"], axis=-1)
        log_probs = _process(log_probs, index, presence, options, dyn)
        log_probs = ops.reshape(log_probs, (batch, beams, vocab)) + running_scores[:, :, None]
        log_probs = ops.reshape(log_probs, (batch, beams * vocab))
        topk_scores, topk_index = ops.top_k(log_probs, keep)
        topk_index = ops.cast(topk_index, "int32")
        topk_beam = topk_index // vocab
        topk_token = topk_index % vocab
        topk_seqs = gather(running_seqs, topk_beam)
        topk_seqs = ops.slice_update(topk_seqs, (0, 0, index), topk_token[:, :, None])
        hits = ops.broadcast_to(ops.equal(index, n - 1), (batch, keep))
        if options.has_end:
            hits = ops.logical_or(hits, ops.equal(topk_token, dyn["end_id"]))
        hit_penalty = ops.cast(hits, "float32") * neg

        # Running beams: the best K candidates that did not stop.
        candidate = topk_scores + hit_penalty
        _, next_index = ops.top_k(candidate, beams)
        next_index = ops.cast(next_index, "int32")
        running_seqs = gather(topk_seqs, next_index)
        running_scores = gather(candidate, next_index)
        origin = gather(topk_beam, next_index)

        # Finished hypotheses: merge the top-K candidates that just stopped.
        just_finished = ops.logical_and(hits, top_mask[None])
        final = topk_scores / ops.take(dyn["finished_den"], index)
        if options.early_stopping is True:
            full = ops.all(finished, axis=-1, keepdims=True)
            final = final + ops.cast(full, "float32") * neg
        final = final + ops.cast(ops.logical_not(improvable), "float32") * neg
        final = final + ops.cast(ops.logical_not(just_finished), "float32") * neg
        merged_seqs = ops.concatenate([seqs, topk_seqs], axis=1)
        merged_scores = ops.concatenate([scores, final], axis=1)
        merged_finished = ops.concatenate([finished, just_finished], axis=1)
        _, best = ops.top_k(merged_scores, beams)
        best = ops.cast(best, "int32")
        seqs = gather(merged_seqs, best)
        scores = gather(merged_scores, best)
        finished = gather(merged_finished, best)

        # Can a running beam still beat the worst finished hypothesis?
        best_running = running_scores[:, :1] / ops.take(dyn["best_den"], index)
        worst = ops.where(finished, ops.min(scores, axis=1, keepdims=True), neg)
        improvable = ops.logical_and(
            improvable, ops.any(best_running > worst, axis=-1, keepdims=True))

        # Reorder the caches to the surviving beams and feed their new tokens.
        flat = ops.reshape(row_offset + origin, (-1,))
        rows = _take_rows(rows, flat)
        token = ops.reshape(running_seqs[:, :, index], (-1,))
        if options.use_penalty:
            presence = _add_token(ops.take(presence, flat, axis=0), token)
        logits, rows = step(token, index, rows)
        return (index + 1, logits, rows, presence, running_seqs, running_scores, seqs,
                scores, finished, improvable, hits)

    state = ops.while_loop(cond, body, (start, logits, rows, presence, running_seqs,
                                        running_scores, seqs, scores, finished, improvable,
                                        hits))
    seqs = state[6][:, :options.num_return_sequences]
    return ops.reshape(seqs, (-1, n))


# ---------------------------------------------------------------------------- compiling


def _seed_generator(transformer):
    store = _store(transformer)
    if "seed_generator" not in store:
        store["seed_generator"] = keras.random.SeedGenerator(0)
    return store["seed_generator"]


def _seed_dtype(transformer):
    return keras.backend.standardize_dtype(_seed_generator(transformer).state.dtype)


def _store(transformer):
    store = getattr(transformer, _CACHE_ATTRIBUTE, None)
    if store is None:
        store = {"functions": {}, "traces": 0}
        setattr(transformer, _CACHE_ATTRIBUTE, store)
    return store


def trace_count(transformer):
    """How many times a decoding function was traced (compiled) for `transformer`:
    calls with the same shapes and structural options reuse the first compilation."""
    return _store(transformer)["traces"]


def _compiled(transformer, key, runner, options):
    store = _store(transformer)
    if key not in store["functions"]:
        seed_generator = _seed_generator(transformer)

        def decode(arrays, dyn):
            store["traces"] += 1  # runs while tracing only
            return _decode(runner, options, arrays, dyn, seed_generator)

        store["functions"][key] = _compile(decode, runner.variables())
    return store["functions"][key]


def _compile(function, variables):
    """The only backend-specific code: compile `function(arrays, dyn)` into one XLA
    program that reads the model's variables at call time."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        def stateless(values, arrays, dyn):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return function(arrays, dyn)

        jitted = jax.jit(stateless)
        return lambda arrays, dyn: jitted([v.value for v in variables], arrays, dyn)
    if backend == "tensorflow":
        import tensorflow as tf

        # A distinct callable per compiled program: TF's "frequent retracing" warning is
        # keyed by the code object, and every key here is meant to trace once.
        compiled = tf.function(functools.partial(function), jit_compile=True,
                               autograph=False)

        def call(arrays, dyn):
            convert = lambda x: tf.convert_to_tensor(x)  # noqa: E731
            return compiled(tf.nest.map_structure(convert, arrays),
                            tf.nest.map_structure(convert, dyn))

        return call

    def eager(arrays, dyn):
        convert = lambda x: ops.convert_to_tensor(x)  # noqa: E731
        return function(keras.tree.map_structure(convert, arrays),
                        keras.tree.map_structure(convert, dyn))

    return eager
