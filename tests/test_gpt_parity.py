"""GPT family parity: ``gpt2``, ``gpt`` and ``gpt2_ml`` on the same weights as a reference.

Oracles:

* GPT-2: a tiny random ``transformers.GPT2LMHeadModel`` saved with ``save_pretrained``
  (logits, right padding, left padding with a padding id, softmax output, save back to
  safetensors and reload in transformers, bert4keras TF names, cached decoding).
* GPT: a tiny random ``transformers.OpenAIGPTLMHeadModel`` (the OpenAI GPT / CDial-GPT
  architecture bert4keras's ``GPT`` builds), loaded from its HF files and from a Google/
  bert4keras-named TF checkpoint converted by a hand-written table in this file.
* gpt2-ml: no transformers model exists; random weights under the released checkpoint's
  ``newslm/...`` names and an independent float64 numpy forward written here from the
  gpt2-ml / Grover code (github.com/imcaspar/gpt2-ml ``train/modeling.py``).

Tolerances are absolute max |Δ| in float32 and stated in each assert. Runs under
``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``.
"""
import json
import math
import os
import shutil

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer.checkpoints import SafetensorsReader, TFCheckpointReader, save_tf_checkpoint
from kerasformer.models import LMMask
from kerasformer.models.gpt import GPT, GPT2, GPT2ML
from kerasformer.ops import causal_mask

VOCAB = 99
TINY = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64,
            initializer_range=0.3)


def report(what, value):
    """Print an observed max |Δ| (shown with ``pytest -rP``)."""
    print(f"max|Δ| [{keras.backend.backend()}] {what}: {value:.3g}")
    return value


def numpy(x):
    if isinstance(x, (list, tuple)):
        return [numpy(i) for i in x]
    return np.asarray(keras.ops.convert_to_numpy(x))


def max_abs(a, b, where=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a - b)
    return float((diff[where] if where is not None else diff).max())


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def randomize(model, torch):
    """Every bias / LayerNorm parameter perturbed (HF starts them at 0 / 1, which would
    hide a swapped or dropped one); LayerNorm gains stay near 1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if (".ln_" in name and name.endswith(".weight")) else 0.0
                p.copy_(base + 0.1 * torch.randn_like(p))


def hf_logits(model, torch, ids, attention_mask=None, token_type_ids=None):
    kwargs = {}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.tensor(attention_mask, dtype=torch.long)
    if token_type_ids is not None:
        kwargs["token_type_ids"] = torch.tensor(token_type_ids, dtype=torch.long)
    with torch.no_grad():
        return model(torch.tensor(ids, dtype=torch.long), **kwargs).logits.numpy()


# ============================================================================ GPT-2


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, torch, transformers):
    """``(directory, eval-mode torch model)``: a random GPT2LMHeadModel saved with
    save_pretrained (bos = eos = 98, no pad id, as GPT-2)."""
    path = str(tmp_path_factory.mktemp("tiny_gpt2"))
    config = transformers.GPT2Config(**TINY, bos_token_id=98, eos_token_id=98)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    randomize(model, torch)
    model.eval()
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def gpt2_lm(gpt2_dir):
    """The builder of the tiny GPT-2 with logits output, loaded from the HF files."""
    path, _ = gpt2_dir
    return build_transformer_model(os.path.join(path, "config.json"), path, model="gpt2",
                                   final_activation="linear", return_keras_model=False)


@pytest.fixture(scope="module")
def gpt2_batch():
    """``(ids, attention_mask)`` [3, 10], right-padded to lengths 10, 7, 4; the padding
    holds arbitrary ids and id 0 (GPT-2's real token "!") occurs inside the text."""
    rng = np.random.RandomState(0)
    ids = rng.randint(0, VOCAB, size=(3, 10)).astype("int32")
    ids[0, 3] = ids[1, 1] = 0
    mask = np.zeros_like(ids)
    for row, n in enumerate([10, 7, 4]):
        mask[row, :n] = 1
    return ids, mask


def test_gpt2_logits_match_transformers(gpt2_dir, gpt2_lm, gpt2_batch, torch):
    _, hf_model = gpt2_dir
    ids = gpt2_batch[0][:2]
    expected = hf_logits(hf_model, torch, ids)
    # the oracle is sane: logits of a real scale that depend on the position
    assert np.abs(expected).max() > 1.0
    assert max_abs(expected[:, 0], expected[:, -1]) > 0.5
    model = gpt2_lm.model
    assert [t.name for t in model.inputs] == ["Input-Token"]
    for name in ("Embedding-Token", "Embedding-Position", "Transformer-1-MultiHeadSelfAttention",
                 "Transformer-1-MultiHeadSelfAttention-Norm", "Transformer-1-FeedForward",
                 "Transformer-1-FeedForward-Norm", "Output-Norm", "LM-Activation"):
        model.get_layer(name)
    got = numpy(model([ids]))
    assert got.shape == (2, 10, VOCAB)
    delta = report("GPT-2 logits", max_abs(got, expected))
    assert delta <= 1e-5


def test_gpt2_right_padding(gpt2_dir, gpt2_lm, gpt2_batch, torch):
    """No padding id (the default): the causal rule alone makes right padding exact,
    and id 0 inside the text is an ordinary token."""
    _, hf_model = gpt2_dir
    ids, mask = gpt2_batch
    expected = hf_logits(hf_model, torch, ids, attention_mask=mask)
    got = numpy(gpt2_lm.model([ids]))
    delta = report("GPT-2 logits, right padding (non-pad)", max_abs(got, expected, mask == 1))
    assert delta <= 1e-5


def test_gpt2_left_padding_with_pad_token_id(gpt2_dir, gpt2_lm, torch):
    """``pad_token_id`` hides padding keys (here left padding, as HF's attention_mask
    does with default positions); the default output is softmax probabilities."""
    path, hf_model = gpt2_dir
    rng = np.random.RandomState(1)
    ids = rng.randint(1, VOCAB, size=(2, 8)).astype("int32")
    ids[1, :3] = 0
    mask = (ids != 0).astype("int32")
    expected = hf_logits(hf_model, torch, ids, attention_mask=mask)
    model = build_transformer_model(os.path.join(path, "config.json"), path, model="gpt2",
                                    pad_token_id=0)
    probs = numpy(model([ids]))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    delta = report("GPT-2 probabilities, left padding, pad_token_id=0 (non-pad)",
                   max_abs(probs, softmax(expected), mask == 1))
    assert delta <= 1e-6
    # the padding mask matters here: without it the padded row is visibly different
    no_pad_id = softmax(numpy(gpt2_lm.model([ids])))
    assert max_abs(no_pad_id, softmax(expected), mask == 1) > 1e-3


def test_padding_id_defaults_and_pad_equal_to_eos():
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    assert GPT2(**common).attention_pad_id is None
    assert GPT(**common).attention_pad_id is None
    assert GPT2ML(**common).attention_pad_id == 0
    assert GPT2(**common, pad_token_id=0).attention_pad_id == 0
    assert GPT2(**common, pad_token_id=98, eos_token_id=98).attention_pad_id is None
    assert GPT2(**common, pad_token_id=98, bos_token_id=98).attention_pad_id is None


def test_gpt2_save_hf_and_reload_in_transformers(gpt2_dir, gpt2_lm, gpt2_batch, tmp_path,
                                                 transformers, torch):
    path, hf_model = gpt2_dir
    folder = tmp_path / "hf_saved"
    folder.mkdir()
    target = str(folder / "model.safetensors")
    gpt2_lm.save_weights_as_checkpoint(target, format="hf")
    shutil.copy(os.path.join(path, "config.json"), folder / "config.json")
    # the same names and values as transformers' own file (fused c_attn rebuilt)
    with SafetensorsReader(target) as mine, \
            SafetensorsReader(os.path.join(path, "model.safetensors")) as theirs:
        assert set(mine.names()) == set(theirs.names())
        assert "transformer.h.1.attn.c_attn.weight" in mine.names()
        for name in theirs.names():
            np.testing.assert_array_equal(mine.get(name), theirs.get(name), err_msg=name)
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(str(folder)).eval()
    ids, mask = gpt2_batch
    delta = report("GPT-2 saved as HF safetensors, reloaded in transformers",
                   max_abs(hf_logits(reloaded, torch, ids, mask),
                           hf_logits(hf_model, torch, ids, mask)))
    assert delta == 0.0


def test_gpt2_bert4keras_tf_checkpoint(gpt2_dir, gpt2_lm, gpt2_batch, tmp_path):
    """Saving under bert4keras's GPT-2 TF names and loading into a fresh model."""
    path, _ = gpt2_dir
    prefix = str(tmp_path / "gpt2" / "model.ckpt")
    gpt2_lm.save_weights_as_checkpoint(prefix, format="tf")
    with TFCheckpointReader(prefix) as reader:
        names = set(reader.names())
    for name in ("gpt/embeddings/word_embeddings", "gpt/embeddings/position_embeddings",
                 "gpt/transformer/layer_1/attention/self/query/kernel",
                 "gpt/transformer/layer_1/attention/output/dense/bias",
                 "gpt/transformer/layer_1/attention/input/LayerNorm/gamma",
                 "gpt/transformer/layer_1/intermediate/dense/kernel",
                 "gpt/transformer/layer_1/output/dense/kernel",
                 "gpt/transformer/layer_1/input/LayerNorm/beta", "gpt/output/LayerNorm/gamma"):
        assert name in names, name
    assert len(names) == 2 + 16 * 2 + 2
    fresh = build_transformer_model(os.path.join(path, "config.json"), prefix, model="gpt2",
                                    final_activation="linear")
    ids = gpt2_batch[0]
    assert max_abs(numpy(fresh([ids])), numpy(gpt2_lm.model([ids]))) == 0.0


def test_gpt2_cached_forward_equals_full(gpt2_lm, gpt2_batch):
    """Prefill 3 tokens, then one at a time, through init_caches / call_with_cache."""
    ids = gpt2_batch[0][:2, :7]
    full = numpy(gpt2_lm.model([ids]))
    max_len = 12
    caches = gpt2_lm.init_caches(2, max_len)
    steps = []
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, 6), (6, 7)]:
        mask = causal_mask(stop - start, max_len, offset=start)
        logits, caches = gpt2_lm.call_with_cache([ids[:, start:stop]], caches, start, mask)
        steps.append(numpy(logits))
    delta = report("GPT-2 cached vs full logits", max_abs(np.concatenate(steps, 1), full))
    assert delta <= 1e-5


def test_gpt_family_is_always_causal():
    """The plain build is a causal LM (an LMMask, which generation relies on) whose mask
    hides no padding id for GPT-2."""
    assert issubclass(GPT2, LMMask) and issubclass(GPT2ML, LMMask)
    tiny = dict(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    model = build_transformer_model(model="gpt2", **tiny)
    layer = model.get_layer("Attention-Mask")
    assert layer.mode == "causal" and layer.pad_id == -1
    with pytest.raises(TypeError, match="with_mlm"):
        build_transformer_model(model="gpt2", vocab_size=VOCAB, hidden_size=32,
                                num_hidden_layers=1, num_attention_heads=4, with_mlm=True)
    with pytest.raises(NotImplementedError):
        GPT2(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
             scale_attn_by_inverse_layer_idx=True)


# ============================================================================ GPT


@pytest.fixture(scope="module")
def openai_gpt_dir(tmp_path_factory, torch, transformers):
    path = str(tmp_path_factory.mktemp("tiny_openai_gpt"))
    config = transformers.OpenAIGPTConfig(**TINY)
    torch.manual_seed(0)
    model = transformers.OpenAIGPTLMHeadModel(config)
    randomize(model, torch)
    model.eval()
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def gpt_batch():
    """``(ids, speaker_ids, attention_mask)`` [2, 9]: CDial-GPT style, segment ids are
    speaker token ids (96/97), right-padded with 0."""
    rng = np.random.RandomState(2)
    ids = rng.randint(1, 96, size=(2, 9)).astype("int32")
    speakers = np.where(np.arange(9) < 5, 96, 97)[None].repeat(2, 0).astype("int32")
    ids[1, 6:] = 0
    speakers[1, 6:] = 0
    return ids, speakers, (ids != 0).astype("int32")


@pytest.fixture(scope="module")
def gpt_from_hf(openai_gpt_dir):
    path, _ = openai_gpt_dir
    return build_transformer_model(os.path.join(path, "config.json"), path, model="gpt",
                                   shared_segment_embeddings=True, final_activation="linear")


def test_gpt_matches_transformers_openai_gpt(openai_gpt_dir, gpt_from_hf, gpt_batch, torch):
    _, hf_model = openai_gpt_dir
    ids, speakers, mask = gpt_batch
    expected = hf_logits(hf_model, torch, ids, attention_mask=mask, token_type_ids=speakers)
    assert np.abs(expected).max() > 1.0
    assert [t.name for t in gpt_from_hf.inputs] == ["Input-Token", "Input-Segment"]
    got = numpy(gpt_from_hf([ids, speakers]))
    delta = report("GPT (OpenAI GPT) logits, right padding (non-pad)",
                   max_abs(got, expected, mask == 1))
    assert delta <= 1e-5


def bert4keras_gpt_tensors(state_dict, num_layers, hidden):
    """Hand-written HF OpenAI GPT -> bert4keras GPT (``gpt/...``) name table: c_attn
    [in, 3*hidden] splits into query/key/value; Conv1D weights are already [in, out]."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    out = {
        "gpt/embeddings/word_embeddings": sd["transformer.tokens_embed.weight"],
        "gpt/embeddings/position_embeddings": sd["transformer.positions_embed.weight"],
    }
    for i in range(num_layers):
        g, h = f"gpt/transformer/layer_{i}", f"transformer.h.{i}"
        w, b = sd[f"{h}.attn.c_attn.weight"], sd[f"{h}.attn.c_attn.bias"]
        for j, part in enumerate(("query", "key", "value")):
            out[f"{g}/attention/self/{part}/kernel"] = w[:, j * hidden:(j + 1) * hidden]
            out[f"{g}/attention/self/{part}/bias"] = b[j * hidden:(j + 1) * hidden]
        for google, hf in (("attention/output/dense", "attn.c_proj"),
                           ("intermediate/dense", "mlp.c_fc"), ("output/dense", "mlp.c_proj")):
            out[f"{g}/{google}/kernel"] = sd[f"{h}.{hf}.weight"]
            out[f"{g}/{google}/bias"] = sd[f"{h}.{hf}.bias"]
        for google, hf in (("attention/output/LayerNorm", "ln_1"), ("output/LayerNorm", "ln_2")):
            out[f"{g}/{google}/gamma"] = sd[f"{h}.{hf}.weight"]
            out[f"{g}/{google}/beta"] = sd[f"{h}.{hf}.bias"]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def test_gpt_bert4keras_checkpoint(openai_gpt_dir, gpt_from_hf, gpt_batch, tmp_path):
    """The same weights under bert4keras's GPT names with a bert4keras-style config
    (CDial-GPT's: shared segment embeddings) give the same model."""
    _, hf_model = openai_gpt_dir
    tensors = bert4keras_gpt_tensors(hf_model.state_dict(), 2, 32)
    prefix = str(tmp_path / "gpt_model.ckpt")
    save_tf_checkpoint(tensors, prefix)
    config = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=128, hidden_act="gelu_new",
                  max_position_embeddings=64, layer_norm_eps=1e-5,
                  shared_segment_embeddings=True)
    config_path = str(tmp_path / "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    transformer = build_transformer_model(config_path, prefix, model="gpt",
                                          final_activation="linear", return_keras_model=False)
    ids, speakers, mask = gpt_batch
    delta = max_abs(numpy(transformer.model([ids, speakers])),
                    numpy(gpt_from_hf([ids, speakers])))
    assert report("GPT bert4keras TF checkpoint vs HF-loaded", delta) == 0.0
    # and saving writes exactly those names back
    assert set(loading_names(transformer, "tf")) == set(tensors)


def loading_names(transformer, format):
    return transformer.checkpoint_tensors(format).keys()


# ============================================================================ gpt2-ml

ML = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
          intermediate_size=48, max_position_embeddings=64)


def gpt2_ml_weights(rng):
    """Random weights under the released gpt2-ml checkpoint names."""
    h, f = ML["hidden_size"], ML["intermediate_size"]
    w = {"newslm/embeddings/word_embed": rng.normal(0, 0.3, (VOCAB, h)),
         "newslm/embeddings/pos_embed": rng.normal(0, 0.3, (64, h)),
         "newslm/embeddings/LayerNorm_embed_norm/gamma": 1 + 0.1 * rng.normal(size=h),
         "newslm/embeddings/LayerNorm_embed_norm/beta": 0.1 * rng.normal(size=h)}
    for i in range(ML["num_hidden_layers"]):
        g = f"newslm/layer{i:02d}"
        shapes = {"query_layer": (h, h), "key_layer": (h, h), "value_layer": (h, h),
                  "context_projection_layer": (h, h), "intermediate": (h, f), "output": (f, h)}
        for name, shape in shapes.items():
            w[f"{g}/{name}/kernel"] = rng.normal(0, 0.3, shape)
            w[f"{g}/{name}/bias"] = 0.1 * rng.normal(size=shape[1])
        for ln in ("LayerNorm_mlp_ln0", "LayerNorm_mlp_ln1"):
            w[f"{g}/{ln}/gamma"] = 1 + 0.1 * rng.normal(size=h)
            w[f"{g}/{ln}/beta"] = 0.1 * rng.normal(size=h)
    return {k: v.astype("float32") for k, v in w.items()}


def gpt2_ml_numpy_forward(w, ids, heads=4, eps=1e-5):
    """gpt2-ml (Grover) logits in float64, from its modeling code: embed + LN; per layer
    x += attention(x); x = LN1(x + FFN(LN0(x))) with exact-erf GELU; tied output."""
    w = {k: v.astype(np.float64) for k, v in w.items()}
    erf = np.vectorize(math.erf)

    def ln(x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[f"{name}/gamma"] + w[f"{name}/beta"]

    def dense(x, name):
        return x @ w[f"{name}/kernel"] + w[f"{name}/bias"]

    b, t = ids.shape
    x = w["newslm/embeddings/word_embed"][ids] + w["newslm/embeddings/pos_embed"][:t]
    x = ln(x, "newslm/embeddings/LayerNorm_embed_norm")
    d = x.shape[-1] // heads
    causal = np.tril(np.ones((t, t), bool))
    for i in range(ML["num_hidden_layers"]):
        g = f"newslm/layer{i:02d}"
        q, k, v = (dense(x, f"{g}/{n}_layer").reshape(b, t, heads, d).transpose(0, 2, 1, 3)
                   for n in ("query", "key", "value"))
        scores = np.where(causal, q @ k.transpose(0, 1, 3, 2) / math.sqrt(d), -1e10)
        ctx = (softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(b, t, heads * d)
        x = x + dense(ctx, f"{g}/context_projection_layer")
        h = dense(ln(x, f"{g}/LayerNorm_mlp_ln0"), f"{g}/intermediate")
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
        x = ln(x + dense(h, f"{g}/output"), f"{g}/LayerNorm_mlp_ln1")
    return x @ w["newslm/embeddings/word_embed"].T


@pytest.fixture(scope="module")
def gpt2_ml(tmp_path_factory):
    """``(builder with logits output, weights)`` loaded from a TF checkpoint with
    gpt2-ml names and a config in gpt2-ml's own format (configs/mega.json keys)."""
    folder = tmp_path_factory.mktemp("gpt2_ml")
    weights = gpt2_ml_weights(np.random.RandomState(3))
    save_tf_checkpoint(weights, str(folder / "model.ckpt"))
    config = dict(ML, hidden_act="gelu", attention_probs_dropout_prob=0.1,
                  hidden_dropout_prob=0.1, initializer_range=0.014)
    with open(folder / "mega.json", "w") as f:
        json.dump(config, f)
    transformer = build_transformer_model(str(folder / "mega.json"), str(folder / "model.ckpt"),
                                          model="gpt2_ml", final_activation="linear",
                                          return_keras_model=False)
    return transformer, weights


def test_gpt2_ml_matches_numpy_forward(gpt2_ml):
    transformer, weights = gpt2_ml
    ids = np.random.RandomState(4).randint(1, VOCAB, size=(2, 9)).astype("int32")
    expected = gpt2_ml_numpy_forward(weights, ids)
    assert np.abs(expected).max() > 1.0
    model = transformer.model
    for name in ("Embedding-Norm", "Transformer-1-FeedForward-Norm-0",
                 "Transformer-1-FeedForward-Norm-1", "LM-Activation"):
        model.get_layer(name)
    assert not any(layer.name.endswith("MultiHeadSelfAttention-Norm") for layer in model.layers)
    got = numpy(model([ids]))
    delta = report("gpt2-ml logits vs numpy forward", max_abs(got, expected))
    assert delta <= 1e-5
    # cached decoding goes through the same norms
    caches = transformer.init_caches(2, 9)
    steps = []
    for start, stop in [(0, 3)] + [(i, i + 1) for i in range(3, 9)]:
        mask = causal_mask(stop - start, 9, offset=start)
        logits, caches = transformer.call_with_cache([ids[:, start:stop]], caches, start, mask)
        steps.append(numpy(logits))
    delta = report("gpt2-ml cached vs full logits", max_abs(np.concatenate(steps, 1), got))
    assert delta <= 1e-5
