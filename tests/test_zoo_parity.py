"""NEZHA, RoFormer, RoFormer-V2 and GAU-α against independent references.

* RoFormer: ``transformers.RoFormerForMaskedLM`` on the same random weights (saved with
  ``save_pretrained``), the same weights under bert4keras's Google TF names (a
  hand-written table in this file), and saving back into a checkpoint transformers loads.
* NEZHA, RoFormer-V2, GAU-α: ``transformers`` 5 has none of them, so the reference is a
  small numpy forward written here from the papers / articles (NEZHA arXiv:1909.00204 and
  Shaw et al. arXiv:1803.02155; kexue.fm/archives/8265, 8998, 9052, 8823), never calling
  kerasformer. Random weights are written under the Google TF checkpoint names of the
  released models and loaded with ``build_transformer_model``, so the name maps are
  checked too.

Tolerances: absolute max |Δ| in float32, stated in each assert. Runs under
``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``.
"""
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import google_names_of_bert_layers

from kerasformer import build_transformer_model
from kerasformer.checkpoints import TFCheckpointReader, save_tf_checkpoint
from kerasformer.layers import GatedAttentionUnit
from kerasformer.layers.attention import RelativePositionEmbedding
from kerasformer.ops import causal_mask

VOCAB, HIDDEN, LAYERS, HEADS, FFN = 97, 32, 2, 4, 37


def report(what, value):
    """Print an observed max |Δ| (shown with ``pytest -rP``)."""
    print(f"max|Δ| [{keras.backend.backend()}] {what}: {value:.3g}")
    return value


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def max_abs(a, b, where=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a - b)
    return float((diff[where] if where is not None else diff).max())


def make_inputs(lengths, seq_len, seed=0):
    """Right-padded (token_ids, segment_ids) int32 [len(lengths), seq_len]; segment 1 on
    the second half of each row."""
    rng = np.random.RandomState(seed)
    ids = np.zeros((len(lengths), seq_len), "int32")
    segs = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.randint(1, VOCAB, size=n)
        segs[row, n // 2:n] = 1
    return ids, segs


def write_google_checkpoint(folder, tensors, config):
    """``(bert_config.json, ckpt prefix)`` of `tensors` under a bert4keras-style config."""
    os.makedirs(folder, exist_ok=True)
    prefix = os.path.join(folder, "bert_model.ckpt")
    save_tf_checkpoint(tensors, prefix)
    config_path = os.path.join(folder, "bert_config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    return config_path, prefix


# ---------------------------------------------------------------- numpy references


def np_gelu(x):
    return 0.5 * x * (1.0 + np.frompyfunc(math.erf, 1, 1)(x / math.sqrt(2.0)).astype(x.dtype))


def np_swish(x):
    return x / (1.0 + np.exp(-x))


def np_layer_norm(x, gamma=None, beta=None, eps=1e-7, zero_mean=True):
    if zero_mean:
        x = x - x.mean(-1, keepdims=True)
    x = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    if gamma is not None:
        x = x * gamma
    if beta is not None:
        x = x + beta
    return x


def np_softmax(a):
    a = a - a.max(-1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(-1, keepdims=True)


def np_rope(x, positions):
    """RoPE of RoFormer (arXiv:2104.09864, eq. 34): dims (2i, 2i+1) rotated by the angle
    ``m * 10000**(-2i/d)`` at position m. x: [..., seq, d] with seq on axis -2."""
    d = x.shape[-1]
    theta = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    angle = positions[:, None] * theta[None]  # [seq, d/2]
    cos, sin = np.cos(angle), np.sin(angle)
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def np_nezha_table(max_distance, dim):
    """NEZHA's functional relative encoding (arXiv:1909.00204, eq. 3-4; its TF code):
    row p = clipped distance + max_distance holds sin/cos of p / 10000**(2i/dim) at
    dims 2i / 2i+1."""
    table = np.zeros((2 * max_distance + 1, dim))
    for p in range(2 * max_distance + 1):
        for i in range(dim // 2):
            table[p, 2 * i] = math.sin(p / 10000 ** (2 * i / dim))
            table[p, 2 * i + 1] = math.cos(p / 10000 ** (2 * i / dim))
    return table


def np_split_heads(x, heads):
    b, t, h = x.shape
    return x.reshape(b, t, heads, h // heads).transpose(0, 2, 1, 3)  # [b, n, t, d]


def np_merge_heads(x):
    b, n, t, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, t, n * d)


def np_attention(x, w, prefix, mask, heads, relative=None, rotary=False, bias=True):
    """Multi-head self-attention of one BERT-style block from Google-named weights;
    mask: bool [b, q, k]; ``relative`` [t, t, d] adds Shaw et al.'s a_ij to keys and
    values (NEZHA)."""
    def dense(name, h):
        y = h @ w[f"{prefix}/{name}/kernel"]
        return y + w[f"{prefix}/{name}/bias"] if bias else y

    q = np_split_heads(dense("attention/self/query", x), heads)
    k = np_split_heads(dense("attention/self/key", x), heads)
    v = np_split_heads(dense("attention/self/value", x), heads)
    if rotary:
        positions = np.arange(x.shape[1], dtype=np.float64)
        q, k = np_rope(q, positions), np_rope(k, positions)
    logits = np.einsum("bnid,bnjd->bnij", q, k)
    if relative is not None:
        logits = logits + np.einsum("bnid,ijd->bnij", q, relative)
    logits = logits / math.sqrt(q.shape[-1])
    logits = np.where(mask[:, None], logits, -1e9)
    p = np_softmax(logits)
    out = np.einsum("bnij,bnjd->bnid", p, v)
    if relative is not None:
        out = out + np.einsum("bnij,ijd->bnid", p, relative)
    return dense("attention/output/dense", np_merge_heads(out))


# ============================================================================ RoFormer


@pytest.fixture(scope="module")
def hf_roformer(tmp_path_factory, torch, transformers, randomize_parameters):
    """``(directory, model)``: a random RoFormerForMaskedLM (embedding_size 24 != hidden
    32, so ``embeddings_project`` is exercised) with every bias / LayerNorm perturbed."""
    config = transformers.RoFormerConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, embedding_size=24, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=64,
        hidden_act="gelu", initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = transformers.RoFormerForMaskedLM(config)
    randomize_parameters(model)
    model.eval()
    path = str(tmp_path_factory.mktemp("hf_roformer"))
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def roformer_inputs():
    return make_inputs([20, 13, 6], 20, seed=1)


@pytest.fixture(scope="module")
def roformer_reference(hf_roformer, roformer_inputs, torch):
    _, model = hf_roformer
    ids, segs = roformer_inputs
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids, dtype=torch.long),
                       token_type_ids=torch.tensor(segs, dtype=torch.long),
                       attention_mask=torch.tensor(ids != 0, dtype=torch.long)).logits
    return logits.numpy()


@pytest.fixture(scope="module")
def roformer_keras(hf_roformer):
    path, _ = hf_roformer
    return build_transformer_model(os.path.join(path, "config.json"), path, model="roformer",
                                   with_mlm="linear", return_keras_model=False)


def test_roformer_mlm_logits_match_transformers(roformer_keras, roformer_inputs,
                                                roformer_reference):
    ids, segs = roformer_inputs
    got = to_numpy(roformer_keras.model([ids, segs]))
    assert np.abs(roformer_reference).max() > 1.0  # logits of a real scale
    assert roformer_keras.layer_norm_epsilon == 1e-12  # from config.json's layer_norm_eps
    delta = report("RoFormer MLM logits vs transformers (non-pad)",
                   max_abs(got, roformer_reference, ids != 0))
    assert delta <= 1e-5
    names = {layer.name for layer in roformer_keras.model.layers}
    assert "Embedding-Position" not in names and "Embedding-Mapping" in names


def test_roformer_positions_matter(roformer_keras, roformer_inputs, roformer_reference):
    """The rotation is what carries order: swapping two tokens changes the logits of the
    others (a bag-of-words model would only swap those two rows)."""
    ids, segs = roformer_inputs
    swapped = ids.copy()
    swapped[0, [3, 7]] = swapped[0, [7, 3]]
    got = to_numpy(roformer_keras.model([swapped, segs]))
    assert max_abs(got[0, 10], roformer_reference[0, 10]) > 1e-3


def test_roformer_custom_position_ids(hf_roformer, roformer_keras, roformer_inputs):
    """``Input-Position`` ids are the rotation positions: 0..n-1 give the default model,
    a shift changes nothing (RoPE is relative), a gap changes the result."""
    path, _ = hf_roformer
    model = build_transformer_model(os.path.join(path, "config.json"), path,
                                    model="roformer", with_mlm="linear",
                                    custom_position_ids=True)
    assert [i.name for i in model.inputs] == ["Input-Token", "Input-Segment", "Input-Position"]
    ids, segs = roformer_inputs
    positions = np.tile(np.arange(ids.shape[1], dtype="int32"), (len(ids), 1))
    ref = to_numpy(roformer_keras.model([ids, segs]))
    assert max_abs(to_numpy(model([ids, segs, positions])), ref) <= 1e-6
    assert max_abs(to_numpy(model([ids, segs, positions + 5])), ref, ids != 0) <= 1e-5
    gap = positions + (positions >= 4) * 3
    assert max_abs(to_numpy(model([ids, segs, gap])), ref, ids != 0) > 1e-3


def google_tensors_from_hf_roformer(state_dict):
    """Hand-written HF RoFormer -> bert4keras/Google name table (RoFormer checkpoints of
    ZhuiyiTechnology use BERT's names; there are no position embeddings)."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    out = {}

    def dense(google, hf):
        out[f"{google}/kernel"] = np.ascontiguousarray(sd[f"{hf}.weight"].T)
        out[f"{google}/bias"] = sd[f"{hf}.bias"]

    def norm(google, hf):
        out[f"{google}/gamma"] = sd[f"{hf}.weight"]
        out[f"{google}/beta"] = sd[f"{hf}.bias"]

    out["bert/embeddings/word_embeddings"] = sd["roformer.embeddings.word_embeddings.weight"]
    out["bert/embeddings/token_type_embeddings"] = sd[
        "roformer.embeddings.token_type_embeddings.weight"]
    norm("bert/embeddings/LayerNorm", "roformer.embeddings.LayerNorm")
    dense("bert/encoder/embedding_hidden_mapping_in", "roformer.embeddings_project")
    google_names_of_bert_layers(dense, norm, "bert", "roformer", LAYERS)
    dense("cls/predictions/transform/dense", "cls.predictions.transform.dense")
    norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm")
    out["cls/predictions/output_bias"] = sd["cls.predictions.bias"]
    return out


def test_roformer_google_checkpoint(hf_roformer, roformer_keras, roformer_inputs,
                                    roformer_reference, tmp_path):
    _, hf_model = hf_roformer
    tensors = google_tensors_from_hf_roformer(hf_model.state_dict())
    config = {  # bert4keras-style bert_config.json of a RoFormer release
        "hidden_act": "gelu", "hidden_size": HIDDEN, "embedding_size": 24,
        "intermediate_size": FFN, "max_position_embeddings": 64,
        "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "type_vocab_size": 2,
        "vocab_size": VOCAB, "layer_norm_eps": 1e-12,
    }
    config_path, prefix = write_google_checkpoint(str(tmp_path / "google"), tensors, config)
    model = build_transformer_model(config_path, prefix, model="roformer", with_mlm="linear")
    ids, segs = roformer_inputs
    got = to_numpy(model([ids, segs]))
    ref = to_numpy(roformer_keras.model([ids, segs]))
    d_keras = report("RoFormer Google ckpt vs HF-loaded", max_abs(got, ref))
    d_hf = report("RoFormer Google ckpt vs transformers (non-pad)",
                  max_abs(got, roformer_reference, ids != 0))
    assert d_keras <= 1e-6 and d_hf <= 1e-5
    # Saving back under Google names reproduces the hand-written table exactly.
    saved = str(tmp_path / "saved" / "bert_model.ckpt")
    roformer_keras.save_weights_as_checkpoint(saved, format="tf")
    with TFCheckpointReader(saved) as reader:
        assert set(reader.names()) == set(tensors)
        for name, array in tensors.items():
            np.testing.assert_array_equal(reader.get(name), array, err_msg=name)


def test_roformer_saved_hf_checkpoint_loads_in_transformers(
        hf_roformer, roformer_keras, roformer_inputs, roformer_reference, tmp_path,
        transformers, torch):
    path, _ = hf_roformer
    folder = tmp_path / "hf_saved"
    folder.mkdir()
    roformer_keras.save_weights_as_checkpoint(str(folder / "model.safetensors"), format="hf")
    with open(os.path.join(path, "config.json")) as f:
        (folder / "config.json").write_text(f.read())
    reloaded = transformers.RoFormerForMaskedLM.from_pretrained(str(folder)).eval()
    ids, segs = roformer_inputs
    with torch.no_grad():
        logits = reloaded(input_ids=torch.tensor(ids, dtype=torch.long),
                          token_type_ids=torch.tensor(segs, dtype=torch.long),
                          attention_mask=torch.tensor(ids != 0, dtype=torch.long)).logits
    assert max_abs(logits.numpy(), roformer_reference) <= 1e-6


# ============================================================================ NEZHA

NEZHA_SEQ = 72  # > 65, so distances beyond the ±64 clipping occur


def random_bert_google_tensors(rng, scale=0.2, position_embeddings=False, biases=True,
                               layer_norms=True, mlm_transform=True):
    """Random tensors under Google BERT names (as NEZHA / RoFormer-V2 checkpoints)."""
    def normal(*shape):
        return (scale * rng.standard_normal(shape)).astype("float32")

    t = {"bert/embeddings/word_embeddings": normal(VOCAB, HIDDEN),
         "bert/embeddings/token_type_embeddings": normal(2, HIDDEN)}
    if position_embeddings:
        t["bert/embeddings/position_embeddings"] = normal(NEZHA_SEQ, HIDDEN)

    def dense(name, n_in, n_out):
        t[f"{name}/kernel"] = normal(n_in, n_out)
        if biases:
            t[f"{name}/bias"] = normal(n_out) * 0.5

    def norm(name):
        if layer_norms:
            t[f"{name}/gamma"] = 1.0 + normal(HIDDEN) * 0.5
            t[f"{name}/beta"] = normal(HIDDEN) * 0.5

    norm("bert/embeddings/LayerNorm")
    for i in range(LAYERS):
        g = f"bert/encoder/layer_{i}"
        for part in ("query", "key", "value"):
            dense(f"{g}/attention/self/{part}", HIDDEN, HIDDEN)
        dense(f"{g}/attention/output/dense", HIDDEN, HIDDEN)
        norm(f"{g}/attention/output/LayerNorm")
        dense(f"{g}/intermediate/dense", HIDDEN, FFN)
        dense(f"{g}/output/dense", FFN, HIDDEN)
        norm(f"{g}/output/LayerNorm")
    if mlm_transform:
        dense("cls/predictions/transform/dense", HIDDEN, HIDDEN)
        norm("cls/predictions/transform/LayerNorm")
        t["cls/predictions/output_bias"] = normal(VOCAB)
    return t


def attention_mask(ids, causal=False):
    """bool [b, q, k]: non-padding keys (and k <= q when causal)."""
    t = ids.shape[1]
    mask = np.broadcast_to((ids != 0)[:, None, :], (len(ids), t, t))
    return mask & np.tril(np.ones((t, t), bool)) if causal else mask


def np_nezha_mlm(w, ids, segs, max_distance=64, eps=1e-7, causal=False):
    """NEZHA forward: BERT with no absolute positions and Shaw-style relative attention
    over NEZHA's fixed sinusoidal table, post-norm, erf-GELU, BERT's MLM head."""
    t = ids.shape[1]
    mask = attention_mask(ids, causal)
    x = w["bert/embeddings/word_embeddings"][ids] + w["bert/embeddings/token_type_embeddings"][segs]
    x = np_layer_norm(x, w["bert/embeddings/LayerNorm/gamma"],
                      w["bert/embeddings/LayerNorm/beta"], eps)
    table = np_nezha_table(max_distance, HIDDEN // HEADS)
    distance = np.arange(t)[None, :] - np.arange(t)[:, None]  # j - i
    relative = table[np.clip(distance, -max_distance, max_distance) + max_distance]
    for i in range(LAYERS):
        g = f"bert/encoder/layer_{i}"
        a = np_attention(x, w, g, mask, HEADS, relative=relative)
        x = np_layer_norm(x + a, w[f"{g}/attention/output/LayerNorm/gamma"],
                          w[f"{g}/attention/output/LayerNorm/beta"], eps)
        h = np_gelu(x @ w[f"{g}/intermediate/dense/kernel"] + w[f"{g}/intermediate/dense/bias"])
        h = h @ w[f"{g}/output/dense/kernel"] + w[f"{g}/output/dense/bias"]
        x = np_layer_norm(x + h, w[f"{g}/output/LayerNorm/gamma"],
                          w[f"{g}/output/LayerNorm/beta"], eps)
    y = np_gelu(x @ w["cls/predictions/transform/dense/kernel"]
                + w["cls/predictions/transform/dense/bias"])
    y = np_layer_norm(y, w["cls/predictions/transform/LayerNorm/gamma"],
                      w["cls/predictions/transform/LayerNorm/beta"], eps)
    return y @ w["bert/embeddings/word_embeddings"].T + w["cls/predictions/output_bias"]


@pytest.fixture(scope="module")
def nezha_checkpoint(tmp_path_factory):
    w = random_bert_google_tensors(np.random.default_rng(0))
    config = {"hidden_act": "gelu", "hidden_size": HIDDEN, "intermediate_size": FFN,
              "max_position_embeddings": 512, "max_relative_position": 64,
              "num_attention_heads": HEADS, "num_hidden_layers": LAYERS,
              "type_vocab_size": 2, "vocab_size": VOCAB}
    folder = str(tmp_path_factory.mktemp("nezha"))
    return w, write_google_checkpoint(folder, w, config)


def test_nezha_relative_table_formula():
    """The layer's table: bucket-index sinusoid, interleaved, clipped at ±64."""
    layer = RelativePositionEmbedding(max_distance=64, output_dim=8)
    got = to_numpy(layer(np.zeros((1, 70, 4), "float32")))
    assert got.shape == (70, 70, 8)
    table = np_nezha_table(64, 8)
    np.testing.assert_allclose(got[0, 0], table[64], atol=1e-7)  # distance 0
    np.testing.assert_allclose(got[0, 69], table[128], atol=1e-7)  # 69 clipped to 64
    np.testing.assert_allclose(got[69, 0], table[0], atol=1e-7)  # -69 clipped to -64
    np.testing.assert_allclose(got[10, 13], table[67], atol=1e-7)
    again = RelativePositionEmbedding.from_config(layer.get_config())
    np.testing.assert_array_equal(to_numpy(again(np.zeros((1, 5, 4), "float32"))), got[:5, :5])


@pytest.fixture(scope="module")
def nezha(nezha_checkpoint):
    w, (config_path, prefix) = nezha_checkpoint
    return w, build_transformer_model(config_path, prefix, model="nezha", with_mlm="linear",
                                      return_keras_model=False)


def left_padded_cached_decoding(transformer, rows, reference, new_tokens=2):
    """Max |Δ| between cached decoding and `reference`, generation-style: the prompts
    ``row[:-new_tokens]`` left-padded to one width and prefilled at once (per-row
    position ids), then the last `new_tokens` tokens of every row fed one per step.
    ``reference(ids [1, n]) -> [1, n, vocab]`` is the causal forward of one unpadded row."""
    prompts = [row[:-new_tokens] for row in rows]
    width = max(len(p) for p in prompts)
    max_length = width + new_tokens
    ids = np.zeros((len(rows), width), "int32")
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
    key_valid = np.zeros((len(rows), max_length), bool)
    key_valid[:, :width] = ids != 0
    positions = np.maximum(np.cumsum(ids != 0, axis=1) - 1, 0).astype("int32")
    mask = np.logical_and(to_numpy(causal_mask(width, max_length)), key_valid[:, None, None])
    caches = transformer.init_caches(len(rows), max_length)
    out, caches = transformer.call_with_cache([ids, np.zeros_like(ids)], caches, 0, mask,
                                              position_ids=positions)
    got = [[to_numpy(out)[i, width - len(p):] for i, p in enumerate(prompts)]]
    for step in range(new_tokens):
        slot = width + step
        token = np.array([[row[len(row) - new_tokens + step]] for row in rows], "int32")
        key_valid[:, slot] = True
        mask = (key_valid & (np.arange(max_length) <= slot))[:, None, None]
        position = np.array([[len(p) + step] for p in prompts], "int32")
        out, caches = transformer.call_with_cache([token, np.zeros_like(token)], caches, slot,
                                                  mask, position_ids=position)
        got.append([to_numpy(out)[i] for i in range(len(rows))])
    delta = 0.0
    for i, row in enumerate(rows):
        expected = reference(np.array([row], "int32"))[0]
        mine = np.concatenate([step[i] for step in got], axis=0)
        delta = max(delta, max_abs(mine, expected))
    return delta


def test_nezha_mlm_logits_match_numpy_reference(nezha):
    w, transformer = nezha
    assert transformer.layer_norm_epsilon == 1e-7  # bert4keras's, none in the config
    names = {layer.name for layer in transformer.model.layers}
    assert "Embedding-Position" not in names and "Embedding-Relative-Position" in names
    ids, segs = make_inputs([NEZHA_SEQ, 40], NEZHA_SEQ, seed=2)
    got = to_numpy(transformer.model([ids, segs]))
    expected = np_nezha_mlm(w, ids, segs)
    assert np.abs(expected).max() > 1.0
    delta = report("NEZHA MLM logits vs numpy reference (non-pad)",
                   max_abs(got, expected, ids != 0))
    assert delta <= 1e-5
    # The check is sensitive to the relative terms and to the clipping distance.
    assert max_abs(got, np_nezha_mlm(w, ids, segs, max_distance=32), ids != 0) > 1e-3


def test_nezha_left_padded_cached_decoding(nezha):
    """KV-cached decoding of a left-padded batch (as generation runs it) gives each row's
    causal NEZHA: relative distances are measured between cache slots, so the per-row
    padding offset cancels."""
    w, transformer = nezha
    rows = [[5, 17, 3, 88, 41, 9, 60, 2], [33, 7, 71, 12, 50]]
    delta = report("NEZHA left-padded cached decoding vs causal numpy reference",
                   left_padded_cached_decoding(
                       transformer, rows,
                       lambda ids: np_nezha_mlm(w, ids, np.zeros_like(ids), causal=True)))
    assert delta <= 1e-5


# ============================================================================ RoFormer-V2


def np_roformer_v2_mlm(w, ids, segs, eps=1e-7):
    """RoFormer-V2: no biases, parameter-free RMS norm after the embeddings and every
    residual, RoPE attention, ReLU FFN, MLM = hidden @ E^T."""
    mask = attention_mask(ids)
    x = w["bert/embeddings/word_embeddings"][ids] + w["bert/embeddings/token_type_embeddings"][segs]
    x = np_layer_norm(x, eps=eps, zero_mean=False)
    for i in range(LAYERS):
        g = f"bert/encoder/layer_{i}"
        x = np_layer_norm(x + np_attention(x, w, g, mask, HEADS, rotary=True, bias=False),
                          eps=eps, zero_mean=False)
        h = np.maximum(x @ w[f"{g}/intermediate/dense/kernel"], 0) @ w[f"{g}/output/dense/kernel"]
        x = np_layer_norm(x + h, eps=eps, zero_mean=False)
    return x @ w["bert/embeddings/word_embeddings"].T


def test_roformer_v2_mlm_logits_match_numpy_reference(tmp_path):
    w = random_bert_google_tensors(np.random.default_rng(1), scale=0.3, biases=False,
                                   layer_norms=False, mlm_transform=False)
    config = {"hidden_act": "relu", "hidden_size": HIDDEN, "intermediate_size": FFN,
              "max_position_embeddings": 512, "num_attention_heads": HEADS,
              "num_hidden_layers": LAYERS, "type_vocab_size": 2, "vocab_size": VOCAB}
    config_path, prefix = write_google_checkpoint(str(tmp_path / "v2"), w, config)
    transformer = build_transformer_model(config_path, prefix, model="roformer_v2",
                                          with_mlm="linear", return_keras_model=False)
    model = transformer.model
    assert not any("bias" in v.path or "gamma" in v.path for v in model.weights)
    ids, segs = make_inputs([16, 11, 4], 16, seed=4)
    got = to_numpy(model([ids, segs]))
    expected = np_roformer_v2_mlm(w, ids, segs)
    assert np.abs(expected).max() > 1.0
    delta = report("RoFormer-V2 MLM logits vs numpy reference (non-pad)",
                   max_abs(got, expected, ids != 0))
    assert delta <= 1e-5
    with pytest.raises(ValueError, match="pooler"):
        build_transformer_model(config_path, model="roformer_v2", with_pool=True)


# ============================================================================ GAU-α

KEY_SIZE = 16


def random_gau_alpha_google_tensors(rng, scale=0.3):
    def normal(*shape):
        return (scale * rng.standard_normal(shape)).astype("float32")

    t = {"bert/embeddings/word_embeddings": normal(VOCAB, HIDDEN),
         "bert/embeddings/token_type_embeddings": normal(2, HIDDEN)}
    for i in range(LAYERS):
        g = f"GAU_alpha/encoder/layer_{i}/gau"
        t[f"{g}/i_dense/kernel"] = normal(HIDDEN, 2 * FFN + KEY_SIZE)
        t[f"{g}/o_dense/kernel"] = normal(FFN, HIDDEN)
        t[f"{g}/q_scaleoffset/gamma"] = 1.0 + normal(KEY_SIZE)
        t[f"{g}/k_scaleoffset/gamma"] = 1.0 + normal(KEY_SIZE)
    return t


def np_gau_alpha_mlm(w, ids, segs, eps=1e-7, causal=False):
    """GAU-α: RoFormer-V2 embeddings/head; each block x = rms(x + GAU(x)) with
    u, v, z = swish(x W_i); q, k = RoPE(z * g_q), RoPE(z * g_k);
    A = softmax(log(n)/log(512) * q k^T / sqrt(s)) over the n unmasked keys;
    GAU(x) = (u * A v) W_o."""
    mask = attention_mask(ids, causal)
    n = mask.sum(-1, keepdims=True).astype(np.float64)  # visible keys per query row
    positions = np.arange(ids.shape[1], dtype=np.float64)
    x = w["bert/embeddings/word_embeddings"][ids] + w["bert/embeddings/token_type_embeddings"][segs]
    x = np_layer_norm(x, eps=eps, zero_mean=False)
    for i in range(LAYERS):
        g = f"GAU_alpha/encoder/layer_{i}/gau"
        h = np_swish(x @ w[f"{g}/i_dense/kernel"])
        u, v, z = h[..., :FFN], h[..., FFN:2 * FFN], h[..., 2 * FFN:]
        q = np_rope(z * w[f"{g}/q_scaleoffset/gamma"], positions)
        k = np_rope(z * w[f"{g}/k_scaleoffset/gamma"], positions)
        logits = np.einsum("bid,bjd->bij", q, k) / math.sqrt(KEY_SIZE)
        logits = logits * np.log(n) / np.log(512)
        logits = np.where(mask, logits, -np.inf)
        o = (u * np.einsum("bij,bjd->bid", np_softmax(logits), v)) @ w[f"{g}/o_dense/kernel"]
        x = np_layer_norm(x + o, eps=eps, zero_mean=False)
    return x @ w["bert/embeddings/word_embeddings"].T


@pytest.fixture(scope="module")
def gau_alpha(tmp_path_factory):
    """``(tensors, builder)``: random GAU-α weights under the release's Google names."""
    w = random_gau_alpha_google_tensors(np.random.default_rng(2))
    config = {"hidden_act": "swish", "hidden_size": HIDDEN, "intermediate_size": FFN,
              "attention_key_size": KEY_SIZE, "max_position_embeddings": 512,
              "num_attention_heads": 1, "num_hidden_layers": LAYERS, "type_vocab_size": 2,
              "vocab_size": VOCAB}
    folder = str(tmp_path_factory.mktemp("gau_alpha"))
    config_path, prefix = write_google_checkpoint(folder, w, config)
    transformer = build_transformer_model(config_path, prefix, model="gau_alpha",
                                          with_mlm="linear", return_keras_model=False)
    return w, transformer


def test_gau_alpha_mlm_logits_match_numpy_reference(gau_alpha):
    w, transformer = gau_alpha
    # One row shorter than 16 keys: the softmax_plus scale uses the plain log(n).
    ids, segs = make_inputs([18, 11, 3], 18, seed=5)
    got = to_numpy(transformer.model([ids, segs]))
    expected = np_gau_alpha_mlm(w, ids, segs)
    assert np.abs(expected).max() > 1.0
    delta = report("GAU-α MLM logits vs numpy reference (non-pad)",
                   max_abs(got, expected, ids != 0))
    assert delta <= 1e-5
    names = [layer.name for layer in transformer.model.layers]
    assert "Transformer-1-GatedAttentionUnit" in names
    assert "Transformer-1-GatedAttentionUnit-Norm" in names


def test_gau_alpha_keras_save_and_load(gau_alpha, tmp_path):
    """The whole model (GatedAttentionUnit, its initializer...) survives a `.keras` round
    trip, also in a fresh process that imports only ``kerasformer.layers``."""
    _, transformer = gau_alpha
    path = str(tmp_path / "gau_alpha.keras")
    transformer.model.save(path)
    loaded = keras.saving.load_model(path)
    layer = loaded.get_layer("Transformer-0-GatedAttentionUnit")
    assert isinstance(layer, GatedAttentionUnit)
    assert layer.normalization == "softmax_plus" and layer.rotary == "interleaved"
    ids, segs = make_inputs([10, 7], 10, seed=6)
    expected = to_numpy(transformer.model([ids, segs]))
    np.testing.assert_array_equal(to_numpy(loaded([ids, segs])), expected)
    inputs, outputs = str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npy")
    np.savez(inputs, ids=ids, segs=segs)
    script = (
        "import sys, keras, numpy as np, kerasformer.layers\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "x = np.load(sys.argv[2])\n"
        "np.save(sys.argv[3], keras.ops.convert_to_numpy(model([x['ids'], x['segs']])))\n"
    )
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    subprocess.run([sys.executable, "-c", script, path, inputs, outputs], check=True,
                   env=env, capture_output=True)
    np.testing.assert_array_equal(np.load(outputs), expected)


def test_gau_alpha_hf_names_round_trip(gau_alpha, tmp_path):
    """Saved under the PyTorch port's names (``gau_alpha.encoder.layer.N.gau...``) and
    loaded back bit for bit."""
    w, transformer = gau_alpha
    target = str(tmp_path / "model.safetensors")
    transformer.save_weights_as_checkpoint(target, format="hf")
    from kerasformer.checkpoints import SafetensorsReader

    with SafetensorsReader(target) as reader:
        names = set(reader.names())
        np.testing.assert_array_equal(
            reader.get("gau_alpha.encoder.layer.1.gau.i_dense.weight"),
            w["GAU_alpha/encoder/layer_1/gau/i_dense/kernel"].T)
    assert "gau_alpha.encoder.layer.0.gau.q_scaleoffset.weight" in names
    assert len(names) == 2 + 4 * LAYERS
    reloaded = build_transformer_model(
        None, target, model="gau_alpha", with_mlm="linear", hidden_act="swish",
        hidden_size=HIDDEN, intermediate_size=FFN, attention_key_size=KEY_SIZE,
        num_hidden_layers=LAYERS, vocab_size=VOCAB)
    for a, b in zip(reloaded.weights, transformer.model.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_gau_alpha_left_padded_cached_decoding(gau_alpha):
    """KV-cached decoding of a left-padded batch gives each row's causal GAU-α: RoPE
    takes the per-row positions and softmax_plus counts only the unpadded keys a token
    may see."""
    w, transformer = gau_alpha
    rows = [[5, 17, 3, 88, 41, 9, 60, 2], [33, 7, 71, 12, 50]]
    delta = report("GAU-α left-padded cached decoding vs causal numpy reference",
                   left_padded_cached_decoding(
                       transformer, rows,
                       lambda ids: np_gau_alpha_mlm(w, ids, np.zeros_like(ids), causal=True)))
    assert delta <= 1e-5


def test_gated_attention_unit_normalizations_and_config():
    layer = GatedAttentionUnit(units=8, key_size=4, normalization="squared_relu",
                               rotary="half", use_bias=True)
    x = np.random.default_rng(0).normal(size=(2, 5, 6)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
    out = to_numpy(layer(x, attention_mask=mask))
    assert out.shape == (2, 5, 6)
    assert sorted(w.path.split("/", 1)[1] for w in layer.weights) == [
        "i_dense/bias", "i_dense/kernel", "k_scaleoffset/beta", "k_scaleoffset/gamma",
        "o_dense/bias", "o_dense/kernel", "q_scaleoffset/beta", "q_scaleoffset/gamma"]
    clone = GatedAttentionUnit.from_config(layer.get_config())
    clone.build(x.shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(to_numpy(clone(x, attention_mask=mask)), out)
    with pytest.raises(ValueError, match="normalization"):
        GatedAttentionUnit(units=8, key_size=4, normalization="relu")
