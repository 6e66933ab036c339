"""Catalogue of bad configs (issue 11): one test per case, each a clear ValueError /
TypeError naming the key, the value and the allowed range, raised before any layer is
built. Configs come as a JSON file (Hugging Face / bert4keras keys) or as keyword
arguments; keyword arguments override the file by design, but two keys of one source
that name the same setting with different values are refused, naming both.

The accepted ranges are the definitions of the quantities (a count of heads or layers is
a positive integer, a dropout rate is a probability below 1, an epsilon is positive), so
no reference implementation is needed. Runs under ``KERAS_BACKEND=jax`` and
``KERAS_BACKEND=tensorflow``.
"""
import json

import pytest

from kerasformer import build_transformer_model

BASE = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=24, max_position_embeddings=32, type_vocab_size=2)


def config_file(tmp_path, **changes):
    raw = {**BASE, **changes}
    raw = {k: v for k, v in raw.items() if v is not ...}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return str(path)


def test_zero_attention_heads_in_the_file(tmp_path):
    path = config_file(tmp_path, num_attention_heads=0)
    with pytest.raises(ValueError, match=r"num_attention_heads=0 .*int >= 1") as e:
        build_transformer_model(path, model="bert")
    assert path in str(e.value)


def test_zero_attention_heads_as_a_keyword(tmp_path):
    with pytest.raises(ValueError, match=r"num_attention_heads=0 in the keyword arguments"):
        build_transformer_model(config_file(tmp_path), model="bert", num_attention_heads=0)


def test_string_hidden_size(tmp_path):
    with pytest.raises(TypeError, match=r"hidden_size='768' .*int >= 1, got str"):
        build_transformer_model(config_file(tmp_path, hidden_size="768"), model="bert")


def test_float_layer_count(tmp_path):
    with pytest.raises(TypeError, match=r"num_hidden_layers=2.5"):
        build_transformer_model(config_file(tmp_path, num_hidden_layers=2.5), model="bert")


def test_bool_size_is_not_an_int(tmp_path):
    with pytest.raises(TypeError, match=r"vocab_size=True"):
        build_transformer_model(config_file(tmp_path), model="bert", vocab_size=True)


def test_negative_intermediate_size(tmp_path):
    with pytest.raises(ValueError, match=r"intermediate_size=-4 .*int >= 1"):
        build_transformer_model(config_file(tmp_path, intermediate_size=-4), model="bert")


def test_negative_size_under_an_alias(tmp_path):
    with pytest.raises(ValueError, match=r"max_position_embeddings \(max_position\)=-1"):
        build_transformer_model(config_file(tmp_path, max_position_embeddings=-1),
                                model="bert")


def test_negative_segment_vocab_size(tmp_path):
    with pytest.raises(ValueError, match=r"type_vocab_size \(segment_vocab_size\)=-2 .*>= 0"):
        build_transformer_model(config_file(tmp_path, type_vocab_size=-2), model="bert")


def test_dropout_rate_out_of_range(tmp_path):
    with pytest.raises(ValueError, match=r"hidden_dropout_prob \(dropout_rate\)=1.5 .*\[0, 1\)"):
        build_transformer_model(config_file(tmp_path, hidden_dropout_prob=1.5), model="bert")


def test_non_positive_layer_norm_epsilon(tmp_path):
    with pytest.raises(ValueError, match=r"layer_norm_eps \(layer_norm_epsilon\)=0.0 .*> 0"):
        build_transformer_model(config_file(tmp_path, layer_norm_eps=0.0), model="bert")


def test_conflicting_gpt2_and_bert_names_in_the_file(tmp_path):
    path = config_file(tmp_path, n_embd=32)
    with pytest.raises(ValueError, match=r"'hidden_size'=16 and 'n_embd'=32") as e:
        build_transformer_model(path, model="bert")
    assert path in str(e.value)


def test_conflicting_position_names_in_the_file(tmp_path):
    path = config_file(tmp_path, max_position=64)
    with pytest.raises(ValueError, match=r"max_position.*max_position_embeddings|"
                                         r"max_position_embeddings.*max_position"):
        build_transformer_model(path, model="bert")


def test_conflicting_aliases_in_the_keywords(tmp_path):
    with pytest.raises(ValueError, match=r"'max_position'=16 and 'max_position_embeddings'=24"):
        build_transformer_model(config_file(tmp_path), model="bert", max_position=16,
                                max_position_embeddings=24)


def test_equal_aliases_are_fine(tmp_path):
    model = build_transformer_model(config_file(tmp_path, n_embd=16), model="bert",
                                    return_keras_model=False)
    assert model.hidden_size == 16


def test_keywords_override_the_file(tmp_path):
    """By design (bert4keras): a keyword argument, under either name, wins over the file."""
    model = build_transformer_model(config_file(tmp_path), model="bert",
                                    max_position_embeddings=20, return_keras_model=False)
    assert model.max_position == 20
