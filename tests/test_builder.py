"""Builder options, attention-mask applications and output conventions (random weights;
the properties tested follow from the definitions, not from stored outputs)."""
import numpy as np
import pytest

import keras

from kerasformer import build_transformer_model

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=24, max_position=32, initializer_range=0.5)


def _ids(batch, length, seed=0, low=1):
    rng = np.random.default_rng(seed)
    return rng.integers(low, TINY["vocab_size"], size=(batch, length)).astype("int32")


def _run(model, inputs):
    out = model(inputs, training=False)
    if isinstance(out, (list, tuple)):
        return [keras.ops.convert_to_numpy(o) for o in out]
    return keras.ops.convert_to_numpy(out)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1)


def test_output_conventions():
    ids, seg = _ids(2, 7), np.zeros((2, 7), "int32")
    plain = build_transformer_model(**TINY)
    assert _run(plain, [ids, seg]).shape == (2, 7, 16)
    pool = build_transformer_model(**TINY, with_pool=True)
    assert _run(pool, [ids, seg]).shape == (2, 16)
    nsp = build_transformer_model(**TINY, with_nsp=True)
    probs = _run(nsp, [ids, seg])
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    mlm = build_transformer_model(**TINY, with_mlm=True)
    probs = _run(mlm, [ids, seg])
    assert probs.shape == (2, 7, 50)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    both = build_transformer_model(**TINY, with_pool="linear", with_mlm="linear")
    pooled, logits = _run(both, [ids, seg])
    assert pooled.shape == (2, 16) and logits.shape == (2, 7, 50)
    assert (logits < 0).any()  # logits, not probabilities


def test_named_layers_follow_bert4keras():
    model = build_transformer_model(**TINY, with_pool=True, with_mlm=True)
    for name in ["Input-Token", "Input-Segment", "Embedding-Token", "Embedding-Segment",
                 "Embedding-Position", "Embedding-Norm", "Transformer-1-MultiHeadSelfAttention",
                 "Transformer-1-MultiHeadSelfAttention-Norm", "Transformer-1-FeedForward-Norm",
                 "Pooler-Dense", "MLM-Norm", "MLM-Bias"]:
        model.get_layer(name)


def test_segment_vocab_size_zero_removes_segment_input():
    model = build_transformer_model(**TINY, segment_vocab_size=0)
    assert [t.name for t in model.inputs] == ["Input-Token"]
    assert _run(model, [_ids(1, 5)]).shape == (1, 5, 16)


def test_lm_mask_is_causal():
    model = build_transformer_model(**TINY, application="lm")
    ids, seg = _ids(1, 9), np.zeros((1, 9), "int32")
    base = _run(model, [ids, seg])
    for j in (3, 8):
        changed = ids.copy()
        changed[0, j] = (changed[0, j] % 49) + 1 if changed[0, j] != 1 else 2
        out = _run(model, [changed, seg])
        np.testing.assert_allclose(out[0, :j], base[0, :j], atol=1e-6)  # past unaffected
        assert np.abs(out[0, j:] - base[0, j:]).max() > 1e-4  # the change is seen


def test_unilm_mask_source_bidirectional_target_causal():
    model = build_transformer_model(**TINY, application="unilm")
    ids = _ids(1, 10)
    seg = np.array([[0] * 5 + [1] * 5], "int32")
    base = _run(model, [ids, seg])
    # Changing a target token leaves every source row and earlier target rows unchanged.
    changed = ids.copy()
    changed[0, 7] = 1 if ids[0, 7] != 1 else 2
    out = _run(model, [changed, seg])
    np.testing.assert_allclose(out[0, :7], base[0, :7], atol=1e-6)
    assert np.abs(out[0, 7:] - base[0, 7:]).max() > 1e-4
    # Changing a late source token changes earlier source rows (bidirectional).
    changed = ids.copy()
    changed[0, 4] = 1 if ids[0, 4] != 1 else 2
    out = _run(model, [changed, seg])
    assert np.abs(out[0, 0] - base[0, 0]).max() > 1e-4


def test_unilm_without_segments_is_an_error():
    with pytest.raises(ValueError, match="segment"):
        build_transformer_model(**TINY, application="unilm", segment_vocab_size=0)


def test_padding_does_not_change_unpadded_rows():
    model = build_transformer_model(**TINY)
    ids = _ids(1, 6)
    seg = np.zeros((1, 6), "int32")
    short = _run(model, [ids, seg])
    padded = _run(model, [np.pad(ids, ((0, 0), (0, 4))), np.pad(seg, ((0, 0), (0, 4)))])
    np.testing.assert_allclose(padded[:, :6], short, atol=1e-5)


def test_custom_position_ids_equal_default_positions():
    tr = build_transformer_model(**TINY, return_keras_model=False)
    custom = build_transformer_model(**TINY, custom_position_ids=True)
    custom.set_weights(tr.model.get_weights())
    assert [t.name for t in custom.inputs][-1] == "Input-Position"
    ids, seg = _ids(2, 6), np.zeros((2, 6), "int32")
    pos = np.tile(np.arange(6, dtype="int32"), (2, 1))
    np.testing.assert_allclose(_run(custom, [ids, seg, pos]), _run(tr.model, [ids, seg]),
                               atol=1e-6)
    shifted = _run(custom, [ids, seg, pos + 3])
    assert np.abs(shifted - _run(tr.model, [ids, seg])).max() > 1e-4


def test_hierarchical_position_extends_the_table():
    tr = build_transformer_model(**TINY, hierarchical_position=True, return_keras_model=False)
    flat = build_transformer_model(**TINY)
    flat.set_weights(tr.model.get_weights())
    seg = np.zeros((1, 20), "int32")
    ids = _ids(1, 20)
    # Within the original table the hierarchical embedding is the table itself.
    np.testing.assert_allclose(_run(tr.model, [ids, seg]), _run(flat, [ids, seg]), atol=1e-5)
    # Beyond it: p(i) = a*u[i // n] + (1-a)*u[i % n], u = (P - a*P[0]) / (1-a).
    layer = tr.model.get_layer("Embedding-Position")
    table = keras.ops.convert_to_numpy(layer.embeddings)
    n, alpha = table.shape[0], 0.4
    u = (table - alpha * table[:1]) / (1 - alpha)
    x = np.zeros((1, 70, 16), "float32")
    got = keras.ops.convert_to_numpy(layer(x))
    i = np.arange(70)
    np.testing.assert_allclose(got[0], alpha * u[i // n] + (1 - alpha) * u[i % n], atol=1e-5)


def test_conditional_layer_norm():
    cond = keras.Input((4,), name="Input-Condition")
    tr = build_transformer_model(**TINY, layer_norm_cond=cond, layer_norm_cond_hidden_size=8,
                                 return_keras_model=False)
    model = tr.model
    assert [t.name for t in model.inputs] == ["Input-Token", "Input-Segment", "Input-Condition"]
    plain = build_transformer_model(**TINY)
    # Copy the shared weights; the condition Dense layers are zero-initialised, so the
    # conditional model starts as the plain one.
    plain_weights = {w.path: w for w in plain.weights}
    for w in model.weights:
        if w.path in plain_weights:
            plain_weights[w.path].assign(w)
    ids, seg = _ids(2, 5), np.zeros((2, 5), "int32")
    c = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(_run(model, [ids, seg, c]), _run(plain, [ids, seg]), atol=1e-5)
    norm = model.get_layer("Embedding-Norm")
    norm.gamma_dense.kernel.assign(np.ones((8, 16), "float32"))
    out = _run(model, [ids, seg, c])
    assert np.abs(out[0] - out[1]).max() > 1e-3  # now the condition matters per example


def test_additional_input_layers_are_model_inputs():
    extra = keras.Input((3,), name="Extra")
    model = build_transformer_model(**TINY, additional_input_layers=[extra])
    assert model.inputs[-1].name == "Extra"


def test_keras_serialisation_round_trip(tmp_path):
    model = build_transformer_model(**TINY, with_pool=True, with_mlm="linear",
                                    application="unilm")
    ids = _ids(2, 6)
    seg = np.array([[0, 0, 0, 1, 1, 1]] * 2, "int32")
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    for a, b in zip(_run(model, [ids, seg]), _run(restored, [ids, seg])):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_unknown_kwarg_names_it():
    with pytest.raises(TypeError, match="with_poll"):
        build_transformer_model(**TINY, with_poll=True)


def test_xla_compiled_predict_and_fit():
    """The model compiles with XLA (jit_compile) on either backend and trains."""
    model = build_transformer_model(**TINY, with_mlm="linear")
    ids, seg = _ids(4, 8), np.zeros((4, 8), "int32")
    eager = _run(model, [ids, seg])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    # XLA fuses differently: float32 rounding only (values are O(1)).
    np.testing.assert_allclose(model.predict([ids, seg], verbose=0), eager, rtol=1e-4, atol=1e-4)
    history = model.fit([ids, seg], ids, epochs=5, batch_size=4, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
