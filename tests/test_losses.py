"""kerasformer.losses against NumPy formulas written out from the papers / articles,
consistency between the dense and sparse forms, masking and gradient checks."""
import functools

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import losses

NEG = -1e9  # what kerasformer layers write into masked cells (float32)


def run(fn, *args):
    """``fn(*args)`` as NumPy (compiled once under JAX)."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.jit(fn)(*args))
    return ops.convert_to_numpy(fn(*args))


def grads(fn, x):
    """d sum(fn(x)) / dx for the active backend."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.jit(jax.grad(lambda v: ops.sum(fn(v))))(x))
    import tensorflow as tf

    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        out = tf.reduce_sum(fn(v))
    return tape.gradient(out, v).numpy()


def np_logsumexp(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    return (m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)))[..., 0]


def np_mlce(t, s, valid=None):
    """kexue.fm/archives/9064, written out: log(1 + sum (1-t) e^s) + log(1 + sum t e^-s),
    over the valid classes only."""
    t, s = np.asarray(t, "float64"), np.asarray(s, "float64")
    valid = np.ones(s.shape, bool) if valid is None else valid
    out = np.zeros(s.shape[:-1])
    for idx in np.ndindex(*s.shape[:-1]):
        v = valid[idx]
        out[idx] = (np.log1p(np.sum((1 - t[idx][v]) * np.exp(s[idx][v])))
                    + np.log1p(np.sum(t[idx][v] * np.exp(-s[idx][v]))))
    return out


@pytest.fixture(scope="module")
def multilabel_case():
    """Logits [4, 3, 10] with 0-3 distinct positive classes per row (class 0 never)."""
    rng = np.random.RandomState(0)
    logits = rng.randn(4, 3, 10).astype("float32") * 2
    dense = np.zeros(logits.shape, "float32")
    sparse = np.zeros((4, 3, 3), "int32")  # 0 = padding (mask_zero)
    for idx in np.ndindex(4, 3):
        k = rng.randint(0, 4)
        pos = rng.choice(np.arange(1, 10), size=k, replace=False)
        dense[idx][pos] = 1
        sparse[idx][:k] = pos
    return logits, dense, sparse


def test_multilabel_crossentropy_equals_numpy_formula(multilabel_case):
    logits, dense, _ = multilabel_case
    got = run(losses.multilabel_categorical_crossentropy, dense, logits)
    assert got.shape == (4, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, np_mlce(dense, logits), rtol=1e-5)
    # Hard-label form of kexue.fm/archives/7359: log(1+sum_neg e^s) + log(1+sum_pos e^-s).
    hard = np.log1p((np.exp(logits) * (1 - dense)).sum(-1)) + np.log1p(
        (np.exp(-logits) * dense).sum(-1))
    np.testing.assert_allclose(got, hard, rtol=1e-5)


def test_soft_labels(multilabel_case):
    logits, dense, _ = multilabel_case
    soft = np.random.RandomState(1).uniform(size=logits.shape).astype("float32")
    got = run(losses.multilabel_categorical_crossentropy, soft, logits)
    np.testing.assert_allclose(got, np_mlce(soft, logits), rtol=1e-5)
    # Labels nudged off 0/1 give (almost) the hard loss: the soft form is continuous.
    nudged = np.clip(dense, 1e-4, 1 - 1e-4)
    near = run(losses.multilabel_categorical_crossentropy, nudged, logits)
    hard = run(losses.multilabel_categorical_crossentropy, dense, logits)
    np.testing.assert_allclose(near, hard, rtol=1e-2)


def test_sparse_and_dense_multilabel_agree(multilabel_case):
    logits, dense, sparse = multilabel_case
    want = np_mlce(dense, logits)
    # mask_zero: class 0 dropped, so compare with the dense loss over classes 1..9.
    got = run(functools.partial(losses.sparse_multilabel_categorical_crossentropy,
                                mask_zero=True), sparse, logits)
    np.testing.assert_allclose(got, np_mlce(dense[..., 1:], logits[..., 1:]), rtol=1e-4)
    # Without mask_zero: the rows that have exactly 2 positives, given as 2 indices.
    rows = (dense.sum(-1) == 2)
    idx = np.sort(sparse, axis=-1)[..., 1:][rows]  # drop the one padding zero
    got = run(losses.sparse_multilabel_categorical_crossentropy, idx, logits[rows])
    np.testing.assert_allclose(got, want[rows], rtol=1e-4)
    dense_got = run(losses.multilabel_categorical_crossentropy, dense, logits)
    np.testing.assert_allclose(dense_got, want, rtol=1e-5)


def test_masked_logits_are_ignored(multilabel_case):
    logits, dense, sparse = multilabel_case
    masked = logits.copy()
    masked[..., 7:] = NEG
    labels = dense.copy()
    labels[0, 0, 8] = 1  # a target on a masked class is dropped too
    valid = np.broadcast_to(np.arange(10) < 7, logits.shape)
    want = np_mlce(labels, logits, valid)
    got = run(losses.multilabel_categorical_crossentropy, labels, masked)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.isfinite(got).all()
    g = grads(lambda s: losses.multilabel_categorical_crossentropy(labels, s), masked)
    assert np.isfinite(g).all() and (g[..., 7:] == 0).all()
    # Targets are pushed up, non-targets down.
    assert (g[..., :7][labels[..., :7] == 1] < 0).all()
    assert (g[..., :7][labels[..., :7] == 0] > 0).all()
    # The sparse form: masked non-targets vanish as well.
    keep = sparse.max(-1) < 7
    got = run(functools.partial(losses.sparse_multilabel_categorical_crossentropy,
                                mask_zero=True), sparse, masked)
    np.testing.assert_allclose(got[keep], np_mlce(dense, logits, valid & (np.arange(10) > 0))[keep],
                               rtol=1e-4)


def span_case(rng, b=3, heads=2, n=6):
    """GlobalPointer-like logits with masked padding and lower triangle, and spans."""
    lengths = [6, 4, 2][:b]
    logits = rng.randn(b, heads, n, n).astype("float32") * 2
    valid = np.zeros(logits.shape, bool)
    dense = np.zeros(logits.shape, "float32")
    sparse = np.zeros((b, heads, 3, 2), "int32")
    for i in range(b):
        for h in range(heads):
            for s in range(1, lengths[i]):
                valid[i, h, s, s:lengths[i]] = True
            cells = np.argwhere(valid[i, h])
            picks = cells[rng.choice(len(cells), size=min(2, len(cells)), replace=False)]
            for k, (s, e) in enumerate(picks):
                dense[i, h, s, e] = 1
                sparse[i, h, k] = (s, e)
    valid[:, :, 0, 0] = False  # [CLS]: the sparse form reserves cell (0, 0) for padding
    logits[~valid] = NEG
    return logits, valid, dense, sparse


def test_global_pointer_crossentropy_dense_and_sparse():
    logits, valid, dense, sparse = span_case(np.random.RandomState(2))
    b, h, n, _ = logits.shape
    per_head = np_mlce(dense.reshape(b, h, -1), logits.reshape(b, h, -1),
                       valid.reshape(b, h, -1))
    got = run(losses.global_pointer_crossentropy, dense, logits)
    assert got.shape == (b,)
    np.testing.assert_allclose(got, per_head.mean(1), rtol=1e-5)
    got_sparse = run(losses.sparse_global_pointer_crossentropy, sparse, logits)
    np.testing.assert_allclose(got_sparse, per_head.sum(1), rtol=1e-4)
    # Integer-valued float labels (what Keras hands a loss) work the same.
    np.testing.assert_allclose(
        run(losses.sparse_global_pointer_crossentropy, sparse.astype("float32"), logits),
        got_sparse, rtol=1e-6)
    # Gradients: finite, zero on masked cells, signs by label.
    for fn in (losses.global_pointer_crossentropy,
               functools.partial(losses.sparse_global_pointer_crossentropy, sparse)):
        if fn is losses.global_pointer_crossentropy:
            g = grads(lambda s: fn(dense, s), logits)
        else:
            g = grads(fn, logits)
        assert np.isfinite(g).all() and (g[~valid] == 0).all()
        assert (g[valid & (dense == 1)] < 0).all() and (g[valid & (dense == 0)] > 0).all()


def test_global_pointer_kl_divergence():
    rng = np.random.RandomState(3)
    s, valid, _, _ = span_case(rng)
    t = s + rng.randn(*s.shape).astype("float32") * np.where(valid, 1.0, 0.0).astype("float32")
    t[~valid] = NEG
    sig = lambda x: 0.5 * (1 + np.tanh(x.astype("float64") / 2))  # noqa: E731
    want = np.where(valid, (sig(s) - sig(t)) * (s - t), 0).reshape(len(s), -1).sum(1)
    got = run(losses.global_pointer_kl_divergence, s, t)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert (got > 0).all()
    np.testing.assert_allclose(run(losses.global_pointer_kl_divergence, t, s), got, rtol=1e-6)
    np.testing.assert_allclose(run(losses.global_pointer_kl_divergence, s, s), 0, atol=1e-7)
    g = grads(lambda x: losses.global_pointer_kl_divergence(x, t), s)
    assert np.isfinite(g).all() and (g[~valid] == 0).all()


def np_log_softmax(x):
    x = np.asarray(x, "float64")
    return x - np_logsumexp(x)[..., None]


def test_rdrop():
    rng = np.random.RandomState(4)
    logits = rng.randn(6, 5).astype("float32")
    labels = rng.randint(0, 5, size=(6, 1))
    lp = np_log_softmax(logits)
    p = np.exp(lp)
    kl = lambda a, b: np.sum(np.exp(a) * (a - b), -1)  # noqa: E731
    partner = [1, 0, 3, 2, 5, 4]
    want_kl = 0.5 * (kl(lp, lp[partner]) + kl(lp[partner], lp))
    got = run(functools.partial(losses.rdrop_kl_divergence, from_logits=True),
              logits, logits[partner])
    np.testing.assert_allclose(got, want_kl, rtol=1e-4)
    got = run(losses.rdrop_kl_divergence, p.astype("float32"), p[partner].astype("float32"))
    np.testing.assert_allclose(got, want_kl, rtol=1e-3)
    ce = -lp[np.arange(6), labels[:, 0]]
    got = run(functools.partial(losses.rdrop_loss, alpha=4.0, from_logits=True),
              labels, logits)
    np.testing.assert_allclose(got, ce + 4.0 * want_kl, rtol=1e-4)
    got = run(losses.rdrop_loss, labels, p.astype("float32"))
    np.testing.assert_allclose(got, ce + 4.0 * want_kl, rtol=1e-3)
    with pytest.raises(ValueError):
        losses.rdrop_loss(labels[:5], logits[:5])


def test_simcse():
    rng = np.random.RandomState(5)
    vectors = rng.randn(6, 8).astype("float32")
    unit = vectors.astype("float64")
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    want = []
    for i in range(6):
        j = i + 1 if i % 2 == 0 else i - 1
        others = [k for k in range(6) if k != i]
        sims = 20.0 * unit[i] @ unit[others].T
        want.append(np_logsumexp(sims) - 20.0 * unit[i] @ unit[j])
    got = run(losses.simcse_loss, np.zeros(6, "float32"), vectors)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)
    # Identical pairs far apart from each other: loss near zero.
    pairs = np.repeat(np.eye(3, 8, dtype="float32"), 2, axis=0)
    assert run(losses.simcse_loss, np.zeros(6, "float32"), pairs).max() < 1e-6
    g = grads(lambda v: losses.simcse_loss(None, v), vectors)
    assert np.isfinite(g).all()


def test_am_softmax():
    rng = np.random.RandomState(6)
    cos = np.tanh(rng.randn(5, 4)).astype("float32")
    labels = rng.randint(0, 4, size=5)
    onehot = np.eye(4, dtype="float32")[labels]
    logits = 30.0 * (cos - 0.35 * onehot)
    want = -np_log_softmax(logits)[np.arange(5), labels]
    np.testing.assert_allclose(run(losses.am_softmax_loss, onehot, cos), want, rtol=1e-5)
    np.testing.assert_allclose(run(losses.sparse_am_softmax_loss, labels[:, None], cos),
                               want, rtol=1e-5)
    # The margin makes the loss larger than the plain scaled softmax cross-entropy.
    plain = -np_log_softmax(30.0 * cos)[np.arange(5), labels]
    assert (want > plain).all()


def test_losses_train_a_model():
    """Keras hands float32 targets to losses; the sparse GlobalPointer loss and
    multilabel CE must still work inside ``fit``."""
    rng = np.random.RandomState(7)
    x = rng.randn(8, 5).astype("float32")
    y = (rng.uniform(size=(8, 6)) < 0.3).astype("float32")
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(6)])
    model.compile(keras.optimizers.Adam(0.05),
                  loss=losses.multilabel_categorical_crossentropy)
    history = model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
