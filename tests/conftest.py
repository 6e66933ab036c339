"""Shared pytest setup: quiet, offline, deterministic, and the tiny reference checkpoints.

The suite runs once per Keras backend (``KERAS_BACKEND=jax`` and
``KERAS_BACKEND=tensorflow``); nothing here depends on which one is active.
"""
import os

# Before anything imports tensorflow / transformers / huggingface_hub.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Hugging Face config of the tiny BERT used by the parity and checkpoint-error tests.
TINY_BERT = dict(
    vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position_embeddings=64, type_vocab_size=2,
    hidden_act="gelu", initializer_range=0.2,
)


def _randomize_all_parameters(model, torch, scale=0.1):
    """HF initialises biases to 0 and LayerNorm to (1, 0): a swapped or dropped bias,
    gamma or beta would go unnoticed. Perturb every 1-D parameter (biases, LayerNorm)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if name.endswith("LayerNorm.weight") or name.endswith(
                    "layer_norm.weight") else 0.0
                p.copy_(base + scale * torch.randn_like(p))


def _save_tiny_bert(path, torch, transformers, **overrides):
    config = transformers.BertConfig(**{**TINY_BERT, **overrides})
    torch.manual_seed(0)
    model = transformers.BertForPreTraining(config)
    _randomize_all_parameters(model, torch)
    model.eval()
    model.save_pretrained(str(path))
    return model


@pytest.fixture(scope="session")
def torch():
    return pytest.importorskip("torch", reason="torch is the reference implementation")


@pytest.fixture(scope="session")
def transformers(torch):
    transformers = pytest.importorskip(
        "transformers", reason="transformers is the reference implementation"
    )
    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, torch, transformers):
    """``(directory, model)``: a random ``BertForPreTraining`` (TINY_BERT, seed 0, every
    bias and LayerNorm parameter perturbed) saved with ``save_pretrained``
    (``config.json`` + ``model.safetensors``), and the eval-mode torch model."""
    path = tmp_path_factory.mktemp("tiny_bert")
    return str(path), _save_tiny_bert(path, torch, transformers)


@pytest.fixture(scope="session")
def tiny_bert_inputs():
    """``(token_ids, segment_ids)`` int32 [3, 12] for TINY_BERT: right-padded with 0 to
    lengths 12, 9, 5, each row a sentence pair (segment 0 then 1; padding is segment 0)."""
    rng = np.random.RandomState(0)
    lengths = [12, 9, 5]
    token_ids = np.zeros((3, 12), "int32")
    segment_ids = np.zeros((3, 12), "int32")
    for row, n in enumerate(lengths):
        token_ids[row, :n] = rng.randint(1, TINY_BERT["vocab_size"], size=n)
        segment_ids[row, n // 2:n] = 1
    return token_ids, segment_ids


@pytest.fixture(scope="session")
def save_tiny_bert(torch, transformers):
    """``save_tiny_bert(path, **config_overrides) -> torch model``."""

    def save(path, **overrides):
        return _save_tiny_bert(path, torch, transformers, **overrides)

    return save


@pytest.fixture(scope="session")
def randomize_parameters(torch):
    """``randomize_parameters(torch_model)``: perturb every bias / LayerNorm parameter."""
    return lambda model, scale=0.1: _randomize_all_parameters(model, torch, scale)


def google_names_of_bert_layers(dense, norm, google_prefix, hf_prefix, num_layers):
    """The encoder-layer part of the tests' hand-written HF -> Google name tables
    (independent of the library's maps): calls ``dense(google, hf)`` / ``norm(google,
    hf)`` for every Dense / LayerNorm of layers 0..num_layers-1."""
    for i in range(num_layers):
        g = f"{google_prefix}/encoder/layer_{i}"
        h = f"{hf_prefix}.encoder.layer.{i}"
        dense(f"{g}/attention/self/query", f"{h}.attention.self.query")
        dense(f"{g}/attention/self/key", f"{h}.attention.self.key")
        dense(f"{g}/attention/self/value", f"{h}.attention.self.value")
        dense(f"{g}/attention/output/dense", f"{h}.attention.output.dense")
        norm(f"{g}/attention/output/LayerNorm", f"{h}.attention.output.LayerNorm")
        dense(f"{g}/intermediate/dense", f"{h}.intermediate.dense")
        dense(f"{g}/output/dense", f"{h}.output.dense")
        norm(f"{g}/output/LayerNorm", f"{h}.output.LayerNorm")
