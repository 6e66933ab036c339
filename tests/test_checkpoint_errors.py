"""Every way a checkpoint or a build call can be wrong raises what it says.

Checkpoints are the tiny random ``BertForPreTraining`` of conftest (``tiny_bert``, saved
by ``transformers.save_pretrained``), edited per case (a tensor deleted, a config
changed), a Google TF checkpoint written from it, and a tiny ``GPT2Model`` (another
family). Messages are asserted on content: the tensor names, the Keras weight names,
both shapes. Runs under ``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``.
"""
import os
import re

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer.checkpoints import TFCheckpointReader, save_safetensors, save_tf_checkpoint

DELETED = "bert.encoder.layer.0.attention.self.query.weight"


def read_safetensors(path):
    from safetensors.numpy import load_file

    return load_file(path)


def weight(model, path):
    for variable in model.weights:
        if variable.path == path:
            return np.asarray(keras.ops.convert_to_numpy(variable))
    raise KeyError(path)


@pytest.fixture(scope="module")
def config_path(tiny_bert):
    return os.path.join(tiny_bert[0], "config.json")


@pytest.fixture(scope="module")
def state(tiny_bert):
    """The tiny BERT's safetensors contents (HF names, as saved)."""
    return read_safetensors(os.path.join(tiny_bert[0], "model.safetensors"))


@pytest.fixture(scope="module")
def without_one_tensor(state, tmp_path_factory):
    """The tiny BERT's safetensors minus ``DELETED``."""
    assert DELETED in state
    path = str(tmp_path_factory.mktemp("missing") / "model.safetensors")
    save_safetensors({k: v for k, v in state.items() if k != DELETED}, path)
    return path


@pytest.fixture(scope="module")
def with_foreign_tensors(state, tmp_path_factory):
    """The tiny BERT's safetensors minus ``DELETED`` plus 16 tensors of no BERT
    (layer 1's under a ``foreign.`` prefix)."""
    foreign = {"foreign." + n: v for n, v in state.items()
               if n.startswith("bert.encoder.layer.1.")}
    assert len(foreign) == 16
    path = str(tmp_path_factory.mktemp("foreign") / "model.safetensors")
    save_safetensors({**{k: v for k, v in state.items() if k != DELETED}, **foreign}, path)
    return path


def error_message(excinfo):
    return str(excinfo.value)


# ---------------------------------------------------------------- mismatches, one by one


def test_missing_tensor_names_it_and_the_keras_weight(config_path, without_one_tensor):
    with pytest.raises(ValueError) as excinfo:
        build_transformer_model(config_path, without_one_tensor)
    message = error_message(excinfo)
    assert without_one_tensor in message
    assert "missing (1)" in message
    line = next(l for l in message.splitlines() if "attention.self.query.weight" in l)
    # checkpoint name (without the optional `bert.` prefix), Keras weight, its shape
    assert "encoder.layer.0.attention.self.query.weight" in line
    assert "Transformer-0-MultiHeadSelfAttention/q_dense/kernel" in line
    assert "(32, 32)" in line
    assert "wrong shape" not in message and "unexpected" not in message
    assert "ignore_invalid_weights=True" in message  # the way out is named


def test_missing_tensor_in_google_checkpoint_names_google_name(tiny_bert, config_path,
                                                               tmp_path):
    """Same report for a Google TF checkpoint, in Google names."""
    path, _ = tiny_bert
    transformer = build_transformer_model(config_path, path, return_keras_model=False)
    full = str(tmp_path / "full" / "bert_model.ckpt")
    transformer.save_weights_as_checkpoint(full, format="tf")
    dropped = "bert/encoder/layer_1/output/LayerNorm/gamma"
    with TFCheckpointReader(full) as reader:
        assert dropped in reader.names()
        tensors = {n: reader.get(n) for n in reader.names() if n != dropped}
    partial = str(tmp_path / "partial" / "bert_model.ckpt")
    save_tf_checkpoint(tensors, partial)
    with pytest.raises(ValueError) as excinfo:
        build_transformer_model(config_path, partial)
    message = error_message(excinfo)
    assert "Google TF names" in message and "missing (1)" in message
    assert f"{dropped} -> Transformer-1-FeedForward-Norm/gamma (32,)" in message


def test_wrong_shape_shows_both_shapes(config_path, tiny_bert):
    path, _ = tiny_bert
    with pytest.raises(ValueError) as excinfo:
        build_transformer_model(config_path, path, intermediate_size=40)
    message = error_message(excinfo)
    assert "wrong shape (6)" in message  # i0 kernel + bias, o kernel, in each of 2 layers
    line = next(l for l in message.splitlines()
                if "encoder.layer.1.intermediate.dense.weight" in l)
    # checkpoint [37, 32] in torch layout is [32, 37] in Keras layout; the model has 40
    assert "checkpoint (32, 37)" in line and "model (32, 40)" in line
    assert "Transformer-1-FeedForward/i0_dense/kernel" in line
    line = next(l for l in message.splitlines() if "encoder.layer.0.output.dense.weight" in l)
    assert "(37, 32)" in line and "(40, 32)" in line
    assert "missing" not in message and "unexpected" not in message


def test_unexpected_tensors_are_listed(config_path, state, tmp_path):
    """Tensors the model has no place for are an error. (The blocks of a deeper model
    of the same family are not: they are skipped, tests/test_dropin_models.py.)"""
    foreign = {"foreign." + n: v for n, v in state.items()
               if n.startswith("bert.encoder.layer.1.")}
    assert len(foreign) == 16
    path = str(tmp_path / "model.safetensors")
    save_safetensors({**state, **foreign}, path)
    with pytest.raises(ValueError) as excinfo:
        build_transformer_model(config_path, path)
    message = error_message(excinfo)
    assert "unexpected (16)" in message
    for name in foreign:
        assert re.search(rf"^\s+{re.escape(name)}$", message, re.MULTILINE), name
    assert "bert.encoder.layer.0." not in message
    assert "missing" not in message and "wrong shape" not in message


def test_all_three_problems_in_one_error(config_path, with_foreign_tensors):
    with pytest.raises(ValueError) as excinfo:
        build_transformer_model(config_path, with_foreign_tensors, num_hidden_layers=1,
                                intermediate_size=40)
    message = error_message(excinfo)
    assert "missing (1)" in message
    assert "Transformer-0-MultiHeadSelfAttention/q_dense/kernel" in message
    assert "wrong shape (3)" in message
    assert "checkpoint (32, 37) vs model (32, 40)" in message
    assert "unexpected (16)" in message
    assert "foreign.bert.encoder.layer.1.output.dense.weight" in message
    assert message.index("missing") < message.index("wrong shape") < message.index("unexpected")


def test_ignore_invalid_weights_loads_the_rest_and_warns(config_path, with_foreign_tensors,
                                                          state):
    with pytest.warns(UserWarning) as record:
        transformer = build_transformer_model(
            config_path, with_foreign_tensors, num_hidden_layers=1, intermediate_size=40,
            ignore_invalid_weights=True, return_keras_model=False,
        )
    message = "\n".join(str(w.message) for w in record)
    assert "missing (1)" in message and "wrong shape (3)" in message
    assert "unexpected (16)" in message
    model = transformer.model
    # matching tensors are loaded (exactly) ...
    np.testing.assert_array_equal(
        weight(model, "Transformer-0-MultiHeadSelfAttention/k_dense/kernel"),
        state["bert.encoder.layer.0.attention.self.key.weight"].T,
    )
    np.testing.assert_array_equal(
        weight(model, "Embedding-Token/embeddings"),
        state["bert.embeddings.word_embeddings.weight"],
    )
    # ... the missing one keeps its initial value, the wrong-shape ones keep their shape
    assert not np.array_equal(
        weight(model, "Transformer-0-MultiHeadSelfAttention/q_dense/kernel"),
        state[DELETED].T,
    )
    assert weight(model, "Transformer-0-FeedForward/i0_dense/kernel").shape == (32, 40)
    # and the builder's own call reports the same lists
    with pytest.warns(UserWarning, match="missing"):
        report = transformer.load_weights_from_checkpoint(with_foreign_tensors,
                                                          ignore_invalid_weights=True)
    assert len(report["missing"]) == 1 and len(report["mismatched"]) == 3
    assert len(report["unexpected"]) == 16
    assert "Transformer-0-MultiHeadSelfAttention/k_dense/kernel" in report["loaded"]


# ---------------------------------------------------------------- another family


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, torch, transformers):
    config = transformers.GPT2Config(vocab_size=120, n_embd=32, n_layer=1, n_head=4,
                                     n_positions=64, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    path = str(tmp_path_factory.mktemp("gpt2"))
    transformers.GPT2Model(config).save_pretrained(path)
    return path


def test_checkpoint_of_another_family(config_path, gpt2_dir):
    with pytest.raises(ValueError) as excinfo:
        build_transformer_model(config_path, gpt2_dir)
    message = error_message(excinfo)
    assert os.path.join(gpt2_dir, "model.safetensors") in message
    # every BERT weight is missing, every GPT-2 tensor is unexpected
    assert "missing (37)" in message
    assert "embeddings.word_embeddings.weight -> Embedding-Token/embeddings (120, 32)" in message
    for name in ("wte.weight", "wpe.weight", "h.0.attn.c_attn.weight", "h.0.mlp.c_fc.weight",
                 "ln_f.weight"):
        assert re.search(rf"^\s+{re.escape(name)}$", message, re.MULTILINE), name
    # even when told to ignore mismatches, nothing matching at all is an error
    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match=r"No tensor of .* matches the model"):
            build_transformer_model(config_path, gpt2_dir, ignore_invalid_weights=True)


# ---------------------------------------------------------------- bad arguments


def test_unknown_kwarg_is_a_type_error_naming_it(config_path):
    with pytest.raises(TypeError, match=r"with_nps"):
        build_transformer_model(config_path, with_nps=True)
    with pytest.raises(TypeError, match=r"max_position_embedings"):
        build_transformer_model(config_path, max_position_embedings=128)


def test_unknown_model_lists_known_ones(config_path):
    with pytest.raises(ValueError) as excinfo:
        build_transformer_model(config_path, model="bart")
    message = error_message(excinfo)
    assert "'bart'" in message
    assert "'bert'" in message and "'roberta'" in message


def test_unknown_application(config_path):
    with pytest.raises(ValueError) as excinfo:
        build_transformer_model(config_path, application="seq2seq")
    message = error_message(excinfo)
    assert "'seq2seq'" in message
    for known in ("encoder", "lm", "unilm"):
        assert known in message


def test_nonexistent_checkpoint_path(config_path, tmp_path):
    missing = str(tmp_path / "nowhere" / "bert_model.ckpt")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        build_transformer_model(config_path, missing)
    # also without a config: the checkpoint path is what is wrong, not the config
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        build_transformer_model(checkpoint_path=missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(empty))):
        build_transformer_model(config_path, str(empty))


def test_nonexistent_config_path(tmp_path):
    missing = str(tmp_path / "bert_config.json")
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
        build_transformer_model(missing)


def test_sequence_longer_than_max_position(config_path, tiny_bert):
    path, _ = tiny_bert
    model = build_transformer_model(config_path, path)
    ids = np.ones((1, 65), "int32")
    with pytest.raises(ValueError) as excinfo:
        model([ids, np.zeros_like(ids)])  # eager call: the length is known
    message = error_message(excinfo)
    assert "65" in message and "64" in message
    assert "max_position_embeddings" in message
    # 64 tokens is fine
    out = model([ids[:, :64], np.zeros_like(ids[:, :64])])
    assert tuple(out.shape) == (1, 64, 32)
