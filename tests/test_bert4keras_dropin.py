"""bert4keras's module layout on kerasformer: ``backend`` (keras, K, helpers),
``optimizers.Adam``/``Lion``, ``snippets.open``/``to_array``/``uniout``/``WebServing``,
``layers.Loss``, and the scripts of tests/dropin_scripts (bert4keras example API calls on
a tiny random BERT), on the active backend (run under both).

References: numpy of the Keras 2 / bert4keras formulas (``K`` semantics from Keras 2.3's
tensorflow_backend.py; Adam from arXiv:1412.6980 as bert4keras writes it).
"""
import json
import os
import pathlib
import runpy
import threading
import time
import urllib.request

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import backend as kb
from kerasformer.backend import K

SCRIPTS = pathlib.Path(__file__).parent / "dropin_scripts"
rng = np.random.default_rng(0)


def _np(x):
    return np.asarray(ops.convert_to_numpy(x))


# ---------------------------------------------------------------------------------------
# K: Keras 2 semantics where they differ from keras.ops
# ---------------------------------------------------------------------------------------
def test_k_reductions_and_keras2_defaults():
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    np.testing.assert_allclose(_np(K.sum(x, 1, keepdims=True)), x.sum(1, keepdims=True), 1e-6)
    np.testing.assert_allclose(_np(K.mean(x)), x.mean(), 1e-6)
    np.testing.assert_allclose(_np(K.max(x, -1)), x.max(-1))
    np.testing.assert_allclose(_np(K.prod(x, 0)), x.prod(0), 1e-5)
    np.testing.assert_allclose(_np(K.cumsum(x)), np.cumsum(x, axis=0), 1e-6)  # axis 0
    np.testing.assert_allclose(_np(K.logsumexp(x, -1)), np.log(np.exp(x).sum(-1)), 1e-5)
    # tf.math.l2_normalize: axis=None normalises over every element, epsilon 1e-12.
    np.testing.assert_allclose(_np(K.l2_normalize(x)), x / np.sqrt((x ** 2).sum()), 1e-5)
    np.testing.assert_allclose(_np(K.l2_normalize(x, axis=1)),
                               x / np.sqrt((x ** 2).sum(1, keepdims=True)), 1e-5)
    assert K.int_shape(keras.Input((None, 5))) == (None, None, 5)
    assert K.ndim(x) == 3 and K.dtype(ops.convert_to_tensor(x)) == "float32"
    assert K.floatx() == keras.config.floatx() and K.epsilon() == keras.config.epsilon()
    np.testing.assert_allclose(_np(K.pow(x, 2)), x ** 2, 1e-6)
    np.testing.assert_allclose(_np(K.clip(x, -0.5, None)), np.maximum(x, -0.5))
    np.testing.assert_allclose(_np(K.relu(x, alpha=0.1)), np.where(x > 0, x, 0.1 * x), 1e-6)


def test_k_switch_lines_condition_up_with_leading_axes():
    cond = np.array([True, False])
    a, b = np.ones((2, 3), "float32"), np.zeros((2, 3), "float32")
    np.testing.assert_array_equal(_np(K.switch(cond, a, b)), [[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(_np(K.switch(True, lambda: a, lambda: b)), a)


def test_k_dot_batch_dot_reshape_and_friends():
    x = rng.normal(size=(2, 3, 4)).astype("float32")
    y = rng.normal(size=(2, 4, 5)).astype("float32")
    np.testing.assert_allclose(_np(K.batch_dot(x, y)), np.einsum("bij,bjk->bik", x, y), 1e-5)
    np.testing.assert_allclose(_np(K.batch_dot(x, x, axes=[2, 2])),
                               np.einsum("bik,bjk->bij", x, x), 1e-5)
    m = rng.normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(_np(K.batch_dot(m, m, axes=1)), (m * m).sum(1, keepdims=True),
                               1e-5)
    w3 = rng.normal(size=(6, 4, 5)).astype("float32")
    np.testing.assert_allclose(_np(K.dot(x, w3)), np.tensordot(x, w3, axes=[[2], [1]]), 1e-5)
    np.testing.assert_allclose(_np(K.permute_dimensions(x, (0, 2, 1))), x.transpose(0, 2, 1))
    np.testing.assert_allclose(_np(K.transpose(x)), x.T)
    np.testing.assert_allclose(_np(kb.reshape(x, (2, -1), 2)), x.reshape(2, 3, 2, 2))
    np.testing.assert_allclose(_np(kb.flatten(x, 1)), x.reshape(2, 12))
    np.testing.assert_allclose(_np(K.repeat_elements(x, 2, 1)), np.repeat(x, 2, 1))
    np.testing.assert_allclose(_np(K.repeat(m, 3)), np.repeat(m[:, None], 3, 1))
    np.testing.assert_array_equal(_np(K.one_hot(np.array([0, 2]), 3)), np.eye(3)[[0, 2]])
    np.testing.assert_allclose(_np(K.gather(x, np.array([1]))), x[[1]])
    assert _np(K.arange(4)).tolist() == [0, 1, 2, 3]


def test_k_losses_and_random():
    p = np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]], "float32")
    t = np.eye(3, dtype="float32")[[2, 0]]
    np.testing.assert_allclose(_np(K.categorical_crossentropy(t, p)),
                               -np.log([0.5, 0.7]), 1e-5)
    np.testing.assert_allclose(_np(K.sparse_categorical_crossentropy(np.array([2, 0]), p)),
                               -np.log([0.5, 0.7]), 1e-5)
    draws = _np(K.random_binomial((2000,), p=0.3, seed=1))
    assert set(np.unique(draws)) <= {0.0, 1.0} and abs(draws.mean() - 0.3) < 0.05
    assert K.int_shape(K.random_normal((3, 2), seed=1)) == (3, 2)


def test_k_values_fallback_and_removed_names():
    v = keras.Variable(np.zeros((2,), "float32"))
    K.set_value(v, np.array([1.0, 2.0]))
    np.testing.assert_array_equal(K.get_value(v), [1, 2])
    np.testing.assert_array_equal(K.eval(ops.ones((2,))), [1, 1])
    assert K.sigmoid is ops.sigmoid and K.stop_gradient is ops.stop_gradient  # fallback
    with pytest.raises(AttributeError, match="migrating_from_bert4keras"):
        K.no_such_function  # noqa: B018
    for name, hint in [("gradients", "kerasformer.training"), ("function", "keras.Model"),
                       ("placeholder", "keras.Input"), ("learning_phase", "training")]:
        with pytest.raises(NotImplementedError, match=hint):
            getattr(K, name)()
    with pytest.raises(NotImplementedError, match="training"):
        K.in_train_phase(1.0, 0.0)
    assert K.in_train_phase(1.0, 0.0, training=True) == 1.0
    assert K.infinity() == 1e12


# ---------------------------------------------------------------------------------------
# backend helpers
# ---------------------------------------------------------------------------------------
def test_batch_gather_and_sequence_masking():
    params = rng.normal(size=(2, 5, 3)).astype("float32")
    idx = np.array([[4, 0], [1, 1]])
    np.testing.assert_allclose(_np(kb.batch_gather(params, idx)),
                               np.take_along_axis(params, idx[..., None], axis=1))
    flat = rng.normal(size=(2, 5)).astype("float32")
    np.testing.assert_allclose(_np(kb.batch_gather(flat, idx)), np.take_along_axis(flat, idx, 1))
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])
    np.testing.assert_allclose(_np(kb.sequence_masking(params, mask, 0.0, 1)),
                               params * mask[..., None])


def test_multilabel_losses_are_kerasformer_losses():
    from kerasformer import losses

    y_pred = rng.normal(size=(2, 4)).astype("float32")
    y_true = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], "float32")
    np.testing.assert_allclose(
        _np(kb.multilabel_categorical_crossentropy(y_true, y_pred)),
        _np(losses.multilabel_categorical_crossentropy(y_true, y_pred)))
    # kexue.fm/archives/7359: log(1 + sum_neg e^s) + log(1 + sum_pos e^-s)
    pos, neg = y_true > 0, y_true == 0
    expected = [np.log1p(np.exp(y_pred[i][neg[i]]).sum()) + np.log1p(np.exp(-y_pred[i][pos[i]]).sum())
                for i in range(2)]
    np.testing.assert_allclose(_np(kb.multilabel_categorical_crossentropy(y_true, y_pred)),
                               expected, 1e-5)
    sparse = np.array([[0, 2], [3, 3]])
    np.testing.assert_allclose(
        _np(kb.sparse_multilabel_categorical_crossentropy(sparse, y_pred)),
        _np(losses.sparse_multilabel_categorical_crossentropy(sparse, y_pred)))


def test_set_gelu_switches_config_gelu():
    from kerasformer import ops as kf_ops

    try:
        kb.set_gelu("tanh")
        assert kf_ops.get_activation("gelu") is kf_ops.gelu_tanh
        kb.set_gelu("erf")
        assert kf_ops.get_activation("gelu") is kf_ops.gelu_erf
    finally:
        kb.set_gelu("erf")
    with pytest.raises(ValueError):
        kb.set_gelu("relu")


def test_search_layer_walks_up_the_graph():
    inputs = keras.Input((3,), dtype="int32")
    h = keras.layers.Embedding(5, 2, name="Embedding-Token")(inputs)
    inner = keras.Model(inputs, h, name="inner")
    outer_in = keras.Input((3,), dtype="int32")
    out = keras.layers.Dense(1, name="head")(inner(outer_in))
    assert kb.search_layer(out, "Embedding-Token") is inner.get_layer("Embedding-Token")
    assert kb.search_layer(out, "head").name == "head"
    assert kb.search_layer(out, "missing") is None


def test_rotary_matches_pairwise_rotation():
    seq, dim = 4, 6
    pos = np.arange(seq)[:, None] / 10000 ** (2 * np.arange(dim // 2) / dim)
    sinusoidal = np.stack([np.sin(pos), np.cos(pos)], -1).reshape(1, seq, dim).astype("float32")
    x = rng.normal(size=(1, seq, dim)).astype("float32")
    expected = x.copy()
    expected[..., 0::2] = x[..., 0::2] * np.cos(pos) - x[..., 1::2] * np.sin(pos)
    expected[..., 1::2] = x[..., 1::2] * np.cos(pos) + x[..., 0::2] * np.sin(pos)
    np.testing.assert_allclose(_np(kb.apply_rotary_position_embeddings(sinusoidal, x)),
                               expected, atol=1e-5)


# ---------------------------------------------------------------------------------------
# optimizers.Adam (bert4keras) and Lion defaults
# ---------------------------------------------------------------------------------------
def _adam_reference(x, grads, lr, b1, b2, eps, bias_correction):
    m = v = np.zeros_like(x)
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mh, vh = (m / (1 - b1 ** t), v / (1 - b2 ** t)) if bias_correction else (m, v)
        x = x - lr * mh / (np.sqrt(vh) + eps)
    return x


@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_matches_bert4keras_formula(bias_correction):
    from kerasformer.optimizers import Adam

    x0 = rng.normal(size=(3, 2)).astype("float64")
    grads = [1e-3 * rng.normal(size=(3, 2)) for _ in range(3)]  # small v: epsilon matters
    variable = keras.Variable(x0.astype("float32"))
    optimizer = Adam(0.1, bias_correction=bias_correction, name="my_adam")
    assert optimizer.name == "my_adam" and optimizer.epsilon == 1e-6
    for g in grads:
        optimizer.apply_gradients([(ops.convert_to_tensor(g.astype("float32")), variable)])
    expected = _adam_reference(x0, grads, 0.1, 0.9, 0.999, 1e-6, bias_correction)
    np.testing.assert_allclose(_np(variable), expected, rtol=1e-5, atol=1e-6)
    if bias_correction:  # Keras's Adam puts epsilon before the correction: not the same
        keras_variable = keras.Variable(x0.astype("float32"))
        keras_adam = keras.optimizers.Adam(0.1, epsilon=1e-6)
        for g in grads:
            keras_adam.apply_gradients([(ops.convert_to_tensor(g.astype("float32")),
                                         keras_variable)])
        assert np.abs(_np(keras_variable) - expected).max() > 1e-4


def test_adam_composes_with_extensions_and_serialises():
    from kerasformer.optimizers import Adam, extend_with_weight_decay

    AdamW = extend_with_weight_decay(Adam, "AdamW")
    optimizer = AdamW(0.1, weight_decay_rate=0.5, bias_correction=False)
    x0 = rng.normal(size=(4,))
    g = 1e-2 * rng.normal(size=(4,))
    variable = keras.Variable(x0.astype("float32"))
    optimizer.apply_gradients([(ops.convert_to_tensor(g.astype("float32")), variable)])
    decayed = x0 - 0.1 * 0.5 * x0  # decoupled decay first (kerasformer.optimizers order)
    expected = _adam_reference(decayed, [g], 0.1, 0.9, 0.999, 1e-6, False)
    np.testing.assert_allclose(_np(variable), expected, rtol=1e-5, atol=1e-6)
    config = Adam(2e-5, bias_correction=False).get_config()
    restored = Adam.from_config(config)
    assert restored.bias_correction is False and restored.epsilon == 1e-6


def test_lion_has_bert4keras_defaults():
    from kerasformer.optimizers import Lion

    lion = Lion()
    assert (float(_np(lion.learning_rate)), lion.beta_1, lion.beta_2, lion.name) == (
        pytest.approx(3e-4), 0.95, 0.98, "Lion")


# ---------------------------------------------------------------------------------------
# snippets: open, to_array, uniout, WebServing
# ---------------------------------------------------------------------------------------
def test_open_indexable_and_to_array(tmp_path):
    from kerasformer.snippets import open as kf_open
    from kerasformer.snippets import to_array, uniout  # noqa: F401

    path = tmp_path / "lines.txt"
    lines = ["第一行\n", "second\n", "三\n"]
    path.write_text("".join(lines), encoding="utf-8")
    with kf_open(str(path), encoding="utf-8") as f:
        assert list(f) == lines
    index_file = str(tmp_path / "index.json")
    f = kf_open(str(path), encoding="utf-8", indexable=index_file)
    assert len(f) == 3 and f[2] == lines[2] and f[0] == lines[0]
    f.close()
    assert os.path.exists(index_file)
    with kf_open(str(path), encoding="utf-8", indexable=index_file) as g:  # cached offsets
        assert g[1] == lines[1]
    a, b = to_array([1, 2], [[3]])
    assert a.shape == (2,) and b.shape == (1, 1)
    assert to_array([1]).shape == (1,)


def test_web_serving_roundtrip():
    pytest.importorskip("bottle", reason="WebServing needs the `web` extra (bottle)")
    from kerasformer.snippets import WebServing

    def add(a, b=1):
        if a < 0:
            raise ValueError("negative")
        return {"sum": a + b}

    web = WebServing(host="127.0.0.1", port=0, server="wsgiref")
    web.route("/add", add, {"a": (int, True), "b": (int, False)})
    web.route("/add_post", add, {"a": (int, True)}, method="POST")
    thread = threading.Thread(target=web.start, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while web.bound_port is None and time.time() < deadline:
        time.sleep(0.02)
    base = f"http://127.0.0.1:{web.bound_port}"

    def get(url, data=None):
        with urllib.request.urlopen(base + url, data=data, timeout=20) as response:
            return json.loads(response.read().decode("utf-8"))

    try:
        assert get("/add?a=2&b=5") == {"code": 0, "desc": "succeeded", "data": {"sum": 7}}
        assert get("/add?b=5")["code"] == 1
        assert get("/add?a=-1") == {"code": 2, "desc": "negative", "data": {}}
        assert get("/add_post", data=b"a=3")["data"] == {"sum": 4}
    finally:
        web.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


# ---------------------------------------------------------------------------------------
# layers.Loss
# ---------------------------------------------------------------------------------------
def test_loss_layer_trains_with_fit_none_and_receives_mask():
    from kerasformer.layers import Loss

    seen = {}

    class MaskedSquare(Loss):
        def compute_loss(self, inputs, mask=None):
            seen["mask"] = mask is not None
            h, target = inputs
            m = ops.cast(mask[0], h.dtype)[..., None]
            return ops.sum(ops.square(h - target) * m) / ops.sum(m)

    ids = keras.Input((None,), dtype="int32")
    target = keras.Input((None, 2))
    h = keras.layers.Embedding(6, 2, mask_zero=True)(ids)
    out = MaskedSquare(output_axis=0)([h, target])
    model = keras.Model([ids, target], out)
    model.compile(keras.optimizers.SGD(0.5))
    x = np.array([[1, 2, 0], [3, 0, 0]])
    y = rng.normal(size=(2, 3, 2)).astype("float32")
    table = model.get_layer(index=1).embeddings
    e = _np(table)[x]
    keep = (x > 0)[..., None]
    expected = ((e - y) ** 2 * keep).sum() / keep.sum()
    history = model.fit([x, y], None, batch_size=2, epochs=2, verbose=0).history["loss"]
    assert seen["mask"]
    np.testing.assert_allclose(history[0], expected, rtol=1e-5)
    assert history[1] < history[0]
    assert model.output.shape == (None, None, 2)  # output_axis=0 returns the embeddings


# ---------------------------------------------------------------------------------------
# The drop-in scripts on a tiny random BERT
# ---------------------------------------------------------------------------------------
CHARS = list("今天天气不错很好我们你他她它是的了在有和这那个人们来去上下大小中国文学习"
             "工作生活时间问题开心难过喜欢讨厌电影音乐书好坏真假")


@pytest.fixture(scope="module")
def dropin_env(tiny_bert, tmp_path_factory):
    from tests.conftest import TINY_BERT

    directory, _ = tiny_bert
    work = tmp_path_factory.mktemp("dropin")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted(set(CHARS))
    vocab = specials + chars + [f"[unused{i}]" for i in range(TINY_BERT["vocab_size"])]
    (work / "vocab.txt").write_text("\n".join(vocab[:TINY_BERT["vocab_size"]]) + "\n",
                                    encoding="utf-8")
    sample = np.random.default_rng(0)
    rows = []
    for i in range(12):
        text = "".join(sample.choice(chars, size=int(sample.integers(6, 12))))
        rows.append(f"{text}\t{i % 2}")
    (work / "data.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {
        "DROPIN_CONFIG": os.path.join(directory, "config.json"),
        "DROPIN_CHECKPOINT": os.path.join(directory, "model.safetensors"),
        "DROPIN_VOCAB": str(work / "vocab.txt"),
        "DROPIN_DATA": str(work / "data.tsv"),
    }


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py")))
def test_dropin_script_runs(script, dropin_env, monkeypatch, tmp_path, capsys):
    if script == "basic_simple_web_serving.py":
        pytest.importorskip("bottle", reason="WebServing needs the `web` extra (bottle)")
    for key, value in dropin_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    keras.utils.set_random_seed(0)
    try:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    finally:
        kb.set_gelu("erf")  # a script's set_gelu('tanh') must not leak into later tests
    assert "dropin ok" in capsys.readouterr().out


def test_small_snippets_against_references():
    import difflib

    from kerasformer import snippets

    a, b = "今天天气不错我们去公园", "明天天气不错他们去"
    length, (i0, i1, j0, j1) = snippets.longest_common_substring(a, b)
    match = difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(
        0, len(a), 0, len(b))
    assert length == match.size and a[i0:i1] == b[j0:j1] and i1 - i0 == length
    length, mapping = snippets.longest_common_subsequence("ABCBDAB", "BDCABA")
    assert length == 4 and all("ABCBDAB"[i] == "BDCABA"[j] for i, j in mapping)
    assert len(mapping) == 4 and mapping == sorted(mapping)
    np.testing.assert_allclose(snippets.softmax(np.array([[1.0, 2.0]])),
                               [[1 / (1 + np.e), np.e / (1 + np.e)]])
    assert snippets.parallel_apply(abs, range(-5, 0), workers=2, max_queue_size=2,
                                   dummy=True) == [5, 4, 3, 2, 1]
    assert snippets.convert_to_unicode("中".encode()) == "中"


def test_script_models_built_with_backend_keras_are_transformer_models(tmp_path):
    """``keras.models.Model(bert.model.input, head)`` from ``kerasformer.backend`` is a
    TransformerModel: the bert4keras ending ``save_weights("best_model.weights")``
    round-trips and bad ids are refused; subclassed models stay Keras's own."""
    from kerasformer import build_transformer_model
    from kerasformer.models.keras_model import TransformerModel

    keras_ = kb.keras
    keras.utils.set_random_seed(0)
    bert = build_transformer_model(None, None, vocab_size=50, hidden_size=8,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=16, return_keras_model=False)
    out = keras_.layers.Lambda(lambda x: x[:, 0])(bert.model.output)
    out = keras_.layers.Dense(2, activation="softmax")(out)
    model = keras_.models.Model(bert.model.input, out)
    assert isinstance(model, TransformerModel)
    x = [np.array([[1, 5, 7, 2, 0, 0]] * 2, "int32"), np.zeros((2, 6), "int32")]
    before = model.predict(x, verbose=0)
    path = str(tmp_path / "best_model.weights")
    with pytest.warns(UserWarning, match="Keras 3 weights format"):
        model.save_weights(path)
    for w in model.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    model.load_weights(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)
    with pytest.raises(ValueError, match=r"holds id 60 .*outside \[0, 50\)"):
        model.predict([np.full((1, 6), 60, "int32"), np.zeros((1, 6), "int32")], verbose=0)

    class Subclassed(keras_.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras_.layers.Dense(3)

        def call(self, inputs):
            return self.dense(inputs)

    assert tuple(Subclassed()(np.ones((2, 4), "float32")).shape) == (2, 3)
