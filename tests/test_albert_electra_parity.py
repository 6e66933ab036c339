"""ALBERT (shared and unshared) and ELECTRA parity with Hugging Face transformers.

The oracle is ``transformers`` (torch, float32, eval mode) on the very checkpoint
kerasformer loads: a tiny random ``AlbertForPreTraining`` (embedding 16, hidden 32,
2 layers, 4 heads, vocabulary 100, ``gelu_new``) whose MLM logits are also computed by
``AlbertForMaskedLM`` loaded from the same files, and a tiny ``ElectraForPreTraining``
(embedding 16 != hidden 32, so ``embeddings_project`` is used). Both are saved with
``save_pretrained`` after seeding torch with 0 and perturbing every bias / LayerNorm
parameter; ``initializer_range=0.2`` keeps the outputs far from constant.

Also: the same weights as Google-format TF checkpoints (written through hand-written
name tables in this file, independent of the library's mappings), saving back to HF
safetensors and reloading in transformers, ``albert_unshared`` against ``albert``, and
a BERT checkpoint rejected by ALBERT. Tolerances are absolute max |Δ| in float32, stated
in each assert. Runs under ``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``.
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
from kerasformer.ops import causal_mask

VOCAB = 100
TINY = dict(
    vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=2,
    num_attention_heads=4, intermediate_size=37, max_position_embeddings=64,
    type_vocab_size=2, initializer_range=0.2,
)
LAYERS = TINY["num_hidden_layers"]


def report(what, value):
    """Print an observed max |Δ| (shown with ``pytest -rP``)."""
    print(f"max|Δ| [{keras.backend.backend()}] {what}: {value:.3g}")
    return value


def run(model, token_ids, segment_ids):
    outputs = model([np.asarray(token_ids), np.asarray(segment_ids)])
    if isinstance(outputs, (list, tuple)):
        return [np.asarray(keras.ops.convert_to_numpy(o)) for o in outputs]
    return np.asarray(keras.ops.convert_to_numpy(outputs))


def max_abs(a, b, where=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a - b)
    return float((diff[where] if where is not None else diff).max())


def weights_by_path(model):
    return {w.path: np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights}


def assert_same_weights(model, other):
    mine, theirs = weights_by_path(model), weights_by_path(other)
    assert mine.keys() == theirs.keys()
    for path in mine:
        np.testing.assert_array_equal(mine[path], theirs[path], err_msg=path)


@pytest.fixture(scope="module")
def inputs():
    """``(token_ids, segment_ids, nonpad)``: int32 [3, 12], right-padded with 0 to
    lengths 12, 9, 5, each row a sentence pair (segment 0 then 1)."""
    rng = np.random.RandomState(0)
    token_ids = np.zeros((3, 12), "int32")
    segment_ids = np.zeros((3, 12), "int32")
    for row, n in enumerate([12, 9, 5]):
        token_ids[row, :n] = rng.randint(1, VOCAB, size=n)
        segment_ids[row, n // 2:n] = 1
    return token_ids, segment_ids, token_ids != 0


def torch_inputs(torch, token_ids, segment_ids):
    return dict(
        input_ids=torch.tensor(token_ids, dtype=torch.long),
        token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
        attention_mask=torch.tensor(token_ids != 0, dtype=torch.long),
    )


# ============================================================================ ALBERT


@pytest.fixture(scope="module")
def albert_dir(tmp_path_factory, torch, transformers, randomize_parameters):
    """``(directory, AlbertForPreTraining)`` saved with ``save_pretrained``."""
    config = transformers.AlbertConfig(**TINY)
    assert config.hidden_act == "gelu_new"  # HF's ALBERT default: the tanh GELU
    torch.manual_seed(0)
    model = transformers.AlbertForPreTraining(config)
    randomize_parameters(model)
    model.eval()
    path = str(tmp_path_factory.mktemp("tiny_albert"))
    model.save_pretrained(path)
    return path, model


def albert_oracle(path, hf_pretraining, transformers, torch, token_ids, segment_ids):
    """``(mlm_logits [B, T, V] from AlbertForMaskedLM, sop_probs [B, 2])``."""
    masked_lm = transformers.AlbertForMaskedLM.from_pretrained(path).eval()
    with torch.no_grad():
        mlm = masked_lm(**torch_inputs(torch, token_ids, segment_ids)).logits.numpy()
        out = hf_pretraining(**torch_inputs(torch, token_ids, segment_ids))
    # Two oracles, one checkpoint: AlbertForMaskedLM and AlbertForPreTraining agree.
    np.testing.assert_allclose(mlm, out.prediction_logits.numpy(), rtol=0, atol=1e-6)
    return mlm, torch.softmax(out.sop_logits, dim=-1).numpy()


@pytest.fixture(scope="module")
def albert_reference(albert_dir, transformers, torch, inputs):
    path, hf_model = albert_dir
    mlm, sop = albert_oracle(path, hf_model, transformers, torch, *inputs[:2])
    # a sane oracle: logits of a real scale that vary between tokens
    assert np.abs(mlm).max() > 1.0 and mlm[inputs[2]].std(axis=0).mean() > 0.1
    return mlm, sop


@pytest.fixture(scope="module")
def albert(albert_dir):
    path, _ = albert_dir
    return build_transformer_model(
        os.path.join(path, "config.json"), path, model="albert", with_mlm="linear",
        with_nsp=True, return_keras_model=False,
    )


@pytest.fixture(scope="module")
def albert_unshared(albert_dir):
    path, _ = albert_dir
    return build_transformer_model(
        os.path.join(path, "config.json"), path, model="albert_unshared",
        with_mlm="linear", with_nsp=True, return_keras_model=False,
    )


def test_albert_mlm_logits_and_sop(albert, albert_reference, inputs):
    token_ids, segment_ids, nonpad = inputs
    mlm, sop = albert_reference
    got_sop, got_mlm = run(albert.model, token_ids, segment_ids)
    assert got_mlm.shape == (3, 12, VOCAB) and got_sop.shape == (3, 2)
    d_mlm = report("tiny ALBERT MLM logits vs AlbertForMaskedLM (non-pad)",
                   max_abs(got_mlm, mlm, nonpad))
    d_sop = report("tiny ALBERT SOP probabilities", max_abs(got_sop, sop))
    assert d_mlm <= 1e-5 and d_sop <= 1e-5
    # One block shared by both layers: bert4keras names without an index.
    names = {layer.name for layer in albert.model.layers}
    assert {"Transformer-MultiHeadSelfAttention", "Transformer-FeedForward-Norm",
            "Embedding-Mapping", "MLM-Dense", "MLM-Norm"} <= names
    assert not any(n.startswith("Transformer-0") for n in names)
    assert albert.model.get_layer("MLM-Dense").kernel.shape == (32, 16)


def test_albert_unshared_equals_albert(albert, albert_unshared, albert_reference, inputs):
    token_ids, segment_ids, nonpad = inputs
    got = run(albert_unshared.model, token_ids, segment_ids)
    ref = run(albert.model, token_ids, segment_ids)
    d = report("albert_unshared vs albert, MLM logits", max_abs(got[1], ref[1]))
    assert d <= 1e-6 and max_abs(got[0], ref[0]) <= 1e-6
    assert max_abs(got[1], albert_reference[0], nonpad) <= 1e-5
    # Every block of albert_unshared holds its own copy of the one shared block.
    shared = weights_by_path(albert.model)
    unshared = weights_by_path(albert_unshared.model)
    block = [p for p in shared if p.startswith("Transformer-")]
    assert len(block) == 16
    assert len(unshared) == len(shared) + (LAYERS - 1) * len(block)
    for i in range(LAYERS):
        for path in block:
            own = path.replace("Transformer-", f"Transformer-{i}-", 1)
            np.testing.assert_array_equal(unshared[own], shared[path], err_msg=own)


def test_albert_hidden_act_follows_config(albert_dir, albert_reference, inputs):
    """The tiny ALBERT uses ``gelu_new`` (tanh); running its weights with erf ``gelu``
    is far outside the parity bound, so the bound is sensitive to the activation."""
    token_ids, segment_ids, nonpad = inputs
    path, _ = albert_dir
    model = build_transformer_model(os.path.join(path, "config.json"), path, model="albert",
                                    with_mlm="linear", hidden_act="gelu")
    wrong = run(model, token_ids, segment_ids)
    d = report("tiny ALBERT run with erf gelu instead of gelu_new (must be large)",
               max_abs(wrong, albert_reference[0], nonpad))
    assert d > 1e-4


def test_albert_lm_cached_forward_equals_full(albert_dir):
    """Blocks share their layers but not their KV caches ("self-i" per block)."""
    path, _ = albert_dir
    transformer = build_transformer_model(os.path.join(path, "config.json"), path,
                                          model="albert", application="lm",
                                          with_mlm="linear", return_keras_model=False)
    ids = np.random.default_rng(1).integers(1, VOCAB, size=(2, 7)).astype("int32")
    seg = np.zeros_like(ids)
    full = run(transformer.model, ids, seg)
    caches = transformer.init_caches(2, 10)
    assert sorted(caches) == ["self-0", "self-1"]
    steps = []
    for start, stop in [(0, 4), (4, 5), (5, 6), (6, 7)]:
        mask = causal_mask(stop - start, 10, offset=start)
        logits, caches = transformer.call_with_cache(
            [ids[:, start:stop], seg[:, start:stop]], caches, start, mask)
        steps.append(np.asarray(keras.ops.convert_to_numpy(logits)))
    d = report("ALBERT LM cached vs full forward, MLM logits",
               max_abs(np.concatenate(steps, axis=1), full))
    assert d <= 1e-5


def test_albert_config_layout_checked(albert_dir):
    path, _ = albert_dir
    with pytest.raises(ValueError, match="num_hidden_groups=2"):
        build_transformer_model(os.path.join(path, "config.json"), model="albert",
                                num_hidden_groups=2)


# ----------------------------------------------------------------- Google TF checkpoint


def albert_google_tensors(state_dict):
    """Hand-written HF ``AlbertForPreTraining`` -> Google ALBERT name table (independent
    of kerasformer's mapping). Linear weights are [out, in] in torch, [in, out] in TF;
    LayerNorm is gamma/beta; the SOP matrix is stored [2, hidden] like torch's."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    used, out = set(), {}

    def take(name):
        used.add(name)
        return sd[name]

    def dense(google, hf):
        out[f"{google}/kernel"] = np.ascontiguousarray(take(f"{hf}.weight").T)
        out[f"{google}/bias"] = take(f"{hf}.bias")

    def norm(google, hf):
        out[f"{google}/gamma"] = take(f"{hf}.weight")
        out[f"{google}/beta"] = take(f"{hf}.bias")

    for table in ("word", "token_type", "position"):
        out[f"bert/embeddings/{table}_embeddings"] = take(
            f"albert.embeddings.{table}_embeddings.weight")
    norm("bert/embeddings/LayerNorm", "albert.embeddings.LayerNorm")
    dense("bert/encoder/embedding_hidden_mapping_in",
          "albert.encoder.embedding_hidden_mapping_in")
    g = "bert/encoder/transformer/group_0/inner_group_0"
    h = "albert.encoder.albert_layer_groups.0.albert_layers.0"
    dense(f"{g}/attention_1/self/query", f"{h}.attention.query")
    dense(f"{g}/attention_1/self/key", f"{h}.attention.key")
    dense(f"{g}/attention_1/self/value", f"{h}.attention.value")
    dense(f"{g}/attention_1/output/dense", f"{h}.attention.dense")
    norm(f"{g}/LayerNorm", f"{h}.attention.LayerNorm")
    dense(f"{g}/ffn_1/intermediate/dense", f"{h}.ffn")
    dense(f"{g}/ffn_1/intermediate/output/dense", f"{h}.ffn_output")
    norm(f"{g}/LayerNorm_1", f"{h}.full_layer_layer_norm")
    dense("bert/pooler/dense", "albert.pooler")
    dense("cls/predictions/transform/dense", "predictions.dense")
    norm("cls/predictions/transform/LayerNorm", "predictions.LayerNorm")
    out["cls/predictions/output_bias"] = take("predictions.bias")
    out["cls/seq_relationship/output_weights"] = take("sop_classifier.classifier.weight")
    out["cls/seq_relationship/output_bias"] = take("sop_classifier.classifier.bias")
    tied = {"predictions.decoder.weight", "predictions.decoder.bias"}
    assert set(sd) - used <= tied, sorted(set(sd) - used)
    return out


@pytest.fixture(scope="module")
def albert_google(albert_dir, tmp_path_factory):
    """``(albert_config.json, ckpt prefix, tensors)``: the tiny ALBERT as a Google
    checkpoint with a config in the vocabulary of Google's released albert_config.json."""
    _, hf_model = albert_dir
    tensors = albert_google_tensors(hf_model.state_dict())
    folder = tmp_path_factory.mktemp("google_albert")
    prefix = str(folder / "model.ckpt-best")
    save_tf_checkpoint({**tensors, "global_step": np.array(10, np.int64)}, prefix)
    config = {
        "attention_probs_dropout_prob": 0, "hidden_dropout_prob": 0,
        # Google's files say "gelu" and Google's TF code computes the tanh GELU, which
        # kerasformer (like transformers' conversions) calls gelu_new.
        "hidden_act": "gelu_new",
        "embedding_size": 16, "hidden_size": 32, "initializer_range": 0.02,
        "intermediate_size": 37, "max_position_embeddings": 64, "num_attention_heads": 4,
        "num_hidden_layers": 2, "num_hidden_groups": 1, "net_structure_type": 0,
        "gap_size": 0, "num_memory_blocks": 0, "inner_group_num": 1,
        "down_scale_factor": 1, "type_vocab_size": 2, "vocab_size": VOCAB,
    }
    config_path = str(folder / "albert_config.json")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=2)
    return config_path, prefix, tensors


@pytest.mark.parametrize("name", ["albert", "albert_unshared"])
def test_albert_google_checkpoint(name, albert_google, albert, albert_unshared,
                                  albert_reference, inputs):
    token_ids, segment_ids, nonpad = inputs
    config_path, prefix, _ = albert_google
    model = build_transformer_model(config_path, prefix, model=name, with_mlm="linear",
                                    with_nsp=True)
    same = albert if name == "albert" else albert_unshared
    assert_same_weights(model, same.model)  # bit for bit the HF-loaded weights
    got_sop, got_mlm = run(model, token_ids, segment_ids)
    d = report(f"{name} from Google ckpt vs transformers: MLM logits (non-pad)",
               max_abs(got_mlm, albert_reference[0], nonpad))
    assert d <= 1e-5 and max_abs(got_sop, albert_reference[1]) <= 1e-5


def test_albert_save_google_names(albert, albert_google, tmp_path):
    _, _, google = albert_google
    prefix = str(tmp_path / "albert.ckpt")
    albert.save_weights_as_checkpoint(prefix, format="tf")
    with TFCheckpointReader(prefix) as reader:
        assert set(reader.names()) == set(google)
        for name, array in google.items():
            np.testing.assert_array_equal(reader.get(name), array, err_msg=name)


# ----------------------------------------------------------------- saving back to HF


@pytest.mark.parametrize("name", ["albert", "albert_unshared"])
def test_albert_save_hf_and_reload_in_transformers(name, albert, albert_unshared, albert_dir,
                                                   albert_reference, inputs, tmp_path,
                                                   transformers, torch):
    token_ids, segment_ids, nonpad = inputs
    path, _ = albert_dir
    transformer = albert if name == "albert" else albert_unshared
    folder = tmp_path / "hf_saved"
    folder.mkdir()
    target = str(folder / "model.safetensors")
    transformer.save_weights_as_checkpoint(target, format="hf")
    shutil.copy(os.path.join(path, "config.json"), folder / "config.json")
    with SafetensorsReader(target) as reader:
        names = set(reader.names())
    # the shared block is written once, under ALBERT's single group/layer
    assert not any("albert_layers.1" in n or "albert_layer_groups.1" in n for n in names)
    assert "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight" in names
    assert "sop_classifier.classifier.weight" in names and "albert.pooler.weight" in names
    hf_model, info = transformers.AlbertForPreTraining.from_pretrained(
        str(folder), output_loading_info=True)
    hf_model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    mlm, sop = albert_oracle(str(folder), hf_model, transformers, torch, token_ids,
                             segment_ids)
    d = report(f"transformers on {name}'s saved safetensors: MLM logits",
               max_abs(mlm, albert_reference[0], nonpad))
    assert d <= 1e-6 and max_abs(sop, albert_reference[1]) <= 1e-6


def test_albert_unshared_saves_block_zero(albert_dir, tmp_path):
    """A randomly initialised albert_unshared has different blocks: saving warns and
    writes block 0."""
    path, _ = albert_dir
    transformer = build_transformer_model(os.path.join(path, "config.json"),
                                          model="albert_unshared", return_keras_model=False)
    prefix = str(tmp_path / "unshared.ckpt")
    with pytest.warns(UserWarning, match=r"blocks \[1\] differ from block 0"):
        transformer.save_weights_as_checkpoint(prefix, format="tf")
    block0 = transformer.model.get_layer("Transformer-0-MultiHeadSelfAttention")
    with TFCheckpointReader(prefix) as reader:
        saved = reader.get("bert/encoder/transformer/group_0/inner_group_0/attention_1/"
                           "self/query/kernel")
    np.testing.assert_array_equal(saved, keras.ops.convert_to_numpy(block0.q_dense.kernel))


# ----------------------------------------------------------------- wrong family


@pytest.mark.parametrize("format", ["tf", "hf"])
def test_bert_checkpoint_into_albert_fails(format, albert_dir, tmp_path):
    path, _ = albert_dir
    bert = build_transformer_model(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=37, max_position=64, return_keras_model=False,
    )
    target = str(tmp_path / ("bert_model.ckpt" if format == "tf" else "model.safetensors"))
    bert.save_weights_as_checkpoint(target, format=format)
    with pytest.raises(ValueError) as error:
        build_transformer_model(os.path.join(path, "config.json"), target, model="albert")
    message = str(error.value)
    # BERT's 32-wide embeddings where ALBERT's are 16 wide, its per-layer blocks where
    # ALBERT has one shared block
    assert "wrong shape" in message and "(100, 32) vs model (100, 16)" in message
    if format == "tf":
        assert "bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate" in message
        assert "bert/encoder/layer_1/output/dense/kernel" in message
    else:
        assert "encoder.albert_layer_groups.0.albert_layers.0.ffn.weight" in message
        assert "encoder.layer.1.output.dense.weight" in message
    assert "missing" in message and "unexpected" in message


# ============================================================================ ELECTRA


@pytest.fixture(scope="module")
def electra_dir(tmp_path_factory, torch, transformers, randomize_parameters):
    """``(directory, ElectraForPreTraining)`` saved with ``save_pretrained``."""
    config = transformers.ElectraConfig(**TINY, hidden_act="gelu")
    torch.manual_seed(0)
    model = transformers.ElectraForPreTraining(config)
    assert hasattr(model.electra, "embeddings_project")
    randomize_parameters(model)
    model.eval()
    path = str(tmp_path_factory.mktemp("tiny_electra"))
    model.save_pretrained(path)
    return path, model


def electra_oracle(hf_model, torch, token_ids, segment_ids):
    with torch.no_grad():
        return hf_model(**torch_inputs(torch, token_ids, segment_ids)).logits.numpy()


@pytest.fixture(scope="module")
def electra_reference(electra_dir, torch, inputs):
    logits = electra_oracle(electra_dir[1], torch, *inputs[:2])
    assert np.abs(logits).max() > 1.0 and logits[inputs[2]].std() > 0.1
    return logits


@pytest.fixture(scope="module")
def electra(electra_dir):
    path, _ = electra_dir
    return build_transformer_model(os.path.join(path, "config.json"), path, model="electra",
                                   with_discriminator="linear", return_keras_model=False)


def test_electra_discriminator_logits(electra, electra_reference, inputs):
    token_ids, segment_ids, nonpad = inputs
    got = run(electra.model, token_ids, segment_ids)
    assert got.shape == (3, 12, 1)  # bert4keras keeps the unit axis; HF squeezes it
    d = report("tiny ELECTRA discriminator logits (non-pad)",
               max_abs(got[..., 0], electra_reference, nonpad))
    assert d <= 1e-5
    names = {layer.name for layer in electra.model.layers}
    assert {"Embedding-Mapping", "Discriminator-Dense", "Discriminator-Prediction"} <= names
    assert not any(n.startswith(("Pooler", "MLM", "NSP")) for n in names)


def test_electra_discriminator_probabilities(electra_dir, electra_reference, inputs):
    token_ids, segment_ids, nonpad = inputs
    path, _ = electra_dir
    model = build_transformer_model(os.path.join(path, "config.json"), path,
                                    model="electra", with_discriminator=True)
    probs = run(model, token_ids, segment_ids)[..., 0]
    d = report("tiny ELECTRA discriminator sigmoid probabilities (non-pad)",
               max_abs(probs, 1 / (1 + np.exp(-electra_reference)), nonpad))
    assert d <= 1e-6


def test_electra_has_no_bert_heads(electra_dir):
    path, _ = electra_dir
    with pytest.raises(TypeError, match="with_mlm"):
        build_transformer_model(os.path.join(path, "config.json"), model="electra",
                                with_mlm=True)


def electra_google_tensors(state_dict):
    """Hand-written HF ``ElectraForPreTraining`` -> Google ELECTRA name table."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    used, out = set(), {}

    def take(name):
        used.add(name)
        return sd[name]

    def dense(google, hf):
        out[f"{google}/kernel"] = np.ascontiguousarray(take(f"{hf}.weight").T)
        out[f"{google}/bias"] = take(f"{hf}.bias")

    def norm(google, hf):
        out[f"{google}/gamma"] = take(f"{hf}.weight")
        out[f"{google}/beta"] = take(f"{hf}.bias")

    for table in ("word", "token_type", "position"):
        out[f"electra/embeddings/{table}_embeddings"] = take(
            f"electra.embeddings.{table}_embeddings.weight")
    norm("electra/embeddings/LayerNorm", "electra.embeddings.LayerNorm")
    dense("electra/embeddings_project", "electra.embeddings_project")
    google_names_of_bert_layers(dense, norm, "electra", "electra", LAYERS)
    dense("discriminator_predictions/dense", "discriminator_predictions.dense")
    dense("discriminator_predictions/dense_1", "discriminator_predictions.dense_prediction")
    assert set(sd) == used, sorted(set(sd) - used)
    return out


def test_electra_google_checkpoint(electra_dir, electra, electra_reference, inputs,
                                   tmp_path):
    token_ids, segment_ids, nonpad = inputs
    _, hf_model = electra_dir
    google = electra_google_tensors(hf_model.state_dict())
    # A pretraining checkpoint also holds the generator, which the discriminator skips.
    generator = {
        "generator/encoder/layer_0/output/dense/kernel": np.zeros((37, 8), np.float32),
        "generator_predictions/output_bias": np.zeros((VOCAB,), np.float32),
        "global_step": np.array(7, np.int64),
    }
    prefix = str(tmp_path / "google" / "electra.ckpt")
    save_tf_checkpoint({**google, **generator}, prefix)
    config = {"vocab_size": VOCAB, "embedding_size": 16, "hidden_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37,
              "max_position_embeddings": 64, "type_vocab_size": 2, "hidden_act": "gelu"}
    config_path = str(tmp_path / "google" / "config.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    transformer = build_transformer_model(config_path, prefix, model="electra",
                                          with_discriminator="linear",
                                          return_keras_model=False)
    assert_same_weights(transformer.model, electra.model)
    got = run(transformer.model, token_ids, segment_ids)[..., 0]
    d = report("ELECTRA from Google ckpt vs transformers: discriminator logits (non-pad)",
               max_abs(got, electra_reference, nonpad))
    assert d <= 1e-5
    # and it writes exactly those Google names back
    saved = str(tmp_path / "saved" / "electra.ckpt")
    transformer.save_weights_as_checkpoint(saved, format="tf")
    with TFCheckpointReader(saved) as reader:
        assert set(reader.names()) == set(google)
        for name, array in google.items():
            np.testing.assert_array_equal(reader.get(name), array, err_msg=name)


def test_electra_save_hf_and_reload_in_transformers(electra, electra_dir, electra_reference,
                                                    inputs, tmp_path, transformers, torch):
    token_ids, segment_ids, nonpad = inputs
    path, _ = electra_dir
    folder = tmp_path / "hf_saved"
    folder.mkdir()
    electra.save_weights_as_checkpoint(str(folder / "model.safetensors"), format="hf")
    shutil.copy(os.path.join(path, "config.json"), folder / "config.json")
    hf_model, info = transformers.ElectraForPreTraining.from_pretrained(
        str(folder), output_loading_info=True)
    hf_model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    logits = electra_oracle(hf_model, torch, token_ids, segment_ids)
    d = report("transformers on ELECTRA's saved safetensors: discriminator logits",
               max_abs(logits, electra_reference, nonpad))
    assert d <= 1e-6
