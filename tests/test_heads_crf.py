"""GlobalPointer / EfficientGlobalPointer / ConditionalRandomField / ViterbiDecoder
against independent references: explicit NumPy for the span logits, brute-force
enumeration of every label path for the CRF, and `.keras` round trips."""
import itertools

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer.layers import ConditionalRandomField, EfficientGlobalPointer, GlobalPointer
from kerasformer.layers.crf import crf_log_likelihood_terms, viterbi_decode
from kerasformer.snippets import ViterbiDecoder

MASKED = -1e8  # a masked cell is at or below this (kerasformer writes -1e9 in float32)


# ----------------------------------------------------------------------------- helpers


def np_rope(x):
    """Interleaved RoPE written out from the RoFormer paper (arXiv:2104.09864, eq. 34):
    x [n, ..., d] at positions 0..n-1; pair (2i, 2i+1) rotated by pos * 10000^(-2i/d)."""
    n, d = x.shape[0], x.shape[-1]
    out = np.empty_like(x)
    for pos in range(n):
        for i in range(d // 2):
            theta = pos * 10000.0 ** (-2.0 * i / d)
            c, s = np.cos(theta), np.sin(theta)
            a, b = x[pos, ..., 2 * i], x[pos, ..., 2 * i + 1]
            out[pos, ..., 2 * i] = a * c - b * s
            out[pos, ..., 2 * i + 1] = b * c + a * s
    return out


def np_global_pointer(x, kernel, bias, heads, head_size, mask, rope=True, tril=True):
    """Returns (logits [b, heads, n, n] float64, valid [b, heads, n, n] bool)."""
    bsz, n, _ = x.shape
    out = np.zeros((bsz, heads, n, n))
    valid = np.zeros((bsz, heads, n, n), bool)
    for b in range(bsz):
        proj = x[b].astype("float64") @ kernel + bias  # [n, heads * 2 * head_size]
        for h in range(heads):
            chunk = proj[:, h * 2 * head_size:(h + 1) * 2 * head_size]
            q, k = chunk[:, :head_size], chunk[:, head_size:]
            if rope:
                q, k = np_rope(q), np_rope(k)
            out[b, h] = q @ k.T / np.sqrt(head_size)
            for i in range(n):
                for j in range(n):
                    valid[b, h, i, j] = mask[b, i] and mask[b, j] and (j >= i or not tril)
    return out, valid


def np_efficient_global_pointer(x, p_kernel, p_bias, q_kernel, q_bias, heads, head_size,
                                mask):
    bsz, n, _ = x.shape
    out = np.zeros((bsz, heads, n, n))
    valid = np.zeros((bsz, heads, n, n), bool)
    for b in range(bsz):
        p = x[b].astype("float64") @ p_kernel + p_bias  # [n, 2 * head_size]
        q, k = np_rope(p[:, 0::2]), np_rope(p[:, 1::2])
        c = p @ q_kernel + q_bias  # [n, 2 * heads]
        shared = q @ k.T / np.sqrt(head_size)
        for h in range(heads):
            for i in range(n):
                for j in range(n):
                    out[b, h, i, j] = shared[i, j] + (c[j, 2 * h] + c[i, 2 * h + 1]) / 2
                    valid[b, h, i, j] = mask[b, i] and mask[b, j] and j >= i
    return out, valid


def brute_force_crf(emissions, trans, mask, labels):
    """Enumerate every label path over the real positions of each row.

    Returns (log_z [b], gold_score [b], best_path [b, n] with 0 at masked positions)."""
    bsz, n, k = emissions.shape
    log_z, gold, best = np.zeros(bsz), np.zeros(bsz), np.zeros((bsz, n), "int64")
    for b in range(bsz):
        real = [t for t in range(n) if mask[b, t]]
        if not real:
            continue

        def score(path):
            s = sum(emissions[b, t, y] for t, y in zip(real, path))
            return s + sum(trans[path[i - 1], path[i]] for i in range(1, len(path)))

        paths = list(itertools.product(range(k), repeat=len(real)))
        scores = np.array([score(p) for p in paths])
        log_z[b] = np.log(np.sum(np.exp(scores - scores.max()))) + scores.max()
        gold[b] = score([labels[b, t] for t in real])
        best[b, real] = paths[int(np.argmax(scores))]
    return log_z, gold, best


def run(fn, *args):
    """``fn(*args)`` as NumPy; compiled once under JAX, where eager dispatch compiles
    every primitive separately (slow on a loaded CPU)."""
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.jit(fn)(*args))
    return ops.convert_to_numpy(fn(*args))


def random_weights(layer, rng):
    layer.set_weights([rng.randn(*w.shape).astype("float32") * 0.5
                       for w in layer.get_weights()])


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


# Rows: full, right padded, left padded, a hole, a single token, empty.
CRF_MASK = np.array([
    [1, 1, 1, 1, 1],
    [1, 1, 1, 0, 0],
    [0, 0, 1, 1, 1],
    [1, 1, 0, 1, 1],
    [1, 0, 0, 0, 0],
    [0, 0, 0, 0, 0],
], bool)


@pytest.fixture(scope="module")
def crf_case():
    rng = np.random.RandomState(0)
    b, n, k = CRF_MASK.shape + (3,)
    emissions = rng.randn(b, n, k).astype("float32") * 2
    trans = rng.randn(k, k).astype("float32")
    labels = rng.randint(0, k, size=(b, n))
    crf = ConditionalRandomField(lr_multiplier=10)
    crf.build((None, None, k))
    crf.set_weights([trans / 10])  # the variable holds trans / lr_multiplier
    return crf, emissions, trans, labels


# ------------------------------------------------------------------------ GlobalPointer


@pytest.mark.parametrize("rope,tril", [(True, True), (False, False)])
def test_global_pointer_logits_equal_numpy(rope, tril):
    rng = np.random.RandomState(1)
    heads, head_size = 3, 8
    x = rng.randn(2, 6, 10).astype("float32")
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2], bool)
    layer = GlobalPointer(heads, head_size, RoPE=rope, tril_mask=tril,
                          kernel_initializer="zeros")
    layer.build(x.shape)
    random_weights(layer, rng)
    kernel, bias = layer.get_weights()
    got = run(lambda a, m: layer(a, mask=m), x, mask)
    want, valid = np_global_pointer(x, kernel, bias, heads, head_size, mask, rope, tril)
    assert got.shape == (2, heads, 6, 6) and got.dtype == np.float32
    err = np.abs(got - want)[valid].max()
    assert err < 1e-5, err
    assert (got[~valid] <= MASKED).all()
    # Padded tokens can never be predicted as span start or end.
    assert not (got[1, :, 4:, :] > 0).any() and not (got[1, :, :, 4:] > 0).any()


def test_efficient_global_pointer_logits_equal_numpy():
    rng = np.random.RandomState(2)
    heads, head_size = 4, 6
    x = rng.randn(2, 7, 10).astype("float32")
    mask = np.array([[1] * 7, [1] * 3 + [0] * 4], bool)
    layer = EfficientGlobalPointer(heads, head_size, kernel_initializer="zeros")
    layer.build(x.shape)
    random_weights(layer, rng)
    p_kernel, p_bias = layer.p_dense.get_weights()
    q_kernel, q_bias = layer.q_dense.get_weights()
    assert p_kernel.shape == (10, 2 * head_size) and q_kernel.shape == (2 * head_size, 2 * heads)
    got = run(lambda a, m: layer(a, mask=m), x, mask)
    want, valid = np_efficient_global_pointer(
        x, p_kernel, p_bias, q_kernel, q_bias, heads, head_size, mask)
    err = np.abs(got - want)[valid].max()
    assert err < 1e-5, err
    assert (got[~valid] <= MASKED).all()


def test_global_pointer_keras_mask_and_rope_is_relative():
    # The Keras mask of an Embedding(mask_zero=True) output is picked up automatically.
    ids = np.array([[5, 6, 7, 0, 0]])
    emb = keras.layers.Embedding(10, 8, mask_zero=True, embeddings_initializer="zeros")
    gp = GlobalPointer(2, 4, kernel_initializer="zeros")
    gp(emb(ids[:, :1]))  # build eagerly, outside the compiled function
    random_weights(emb, np.random.RandomState(8))
    random_weights(gp, np.random.RandomState(9))
    out = run(lambda t: gp(emb(t)), ids)
    assert (out[0, :, 3:, :] <= MASKED).all() and (out[0, :, :, 3:] <= MASKED).all()
    assert (out[0, :, :3, :3][:, np.triu_indices(3)[0], np.triu_indices(3)[1]] > MASKED).all()
    # RoPE: with the same vector at every position, each diagonal (fixed j - i) of the
    # logits is constant.
    layer = GlobalPointer(2, 8, tril_mask=False, kernel_initializer="zeros")
    v = np.random.RandomState(3).randn(1, 1, 6).astype("float32")
    x = np.repeat(v, 5, axis=1)
    layer.build(x.shape)
    random_weights(layer, np.random.RandomState(10))
    logits = run(layer, x)[0]
    for d in range(-4, 5):
        diag = np.diagonal(logits, offset=d, axis1=1, axis2=2)
        assert np.allclose(diag, diag[:, :1], atol=1e-5)


# ---------------------------------------------------------------------------------- CRF


def test_crf_log_partition_and_gold_score_equal_brute_force(crf_case):
    crf, emissions, trans, labels = crf_case
    np.testing.assert_allclose(ops.convert_to_numpy(crf.trans), trans, rtol=1e-6)
    out_np = run(lambda e, m: crf(e, mask=m), emissions, CRF_MASK)
    assert (out_np[~CRF_MASK] <= MASKED).all()
    np.testing.assert_array_equal(out_np[CRF_MASK], emissions[CRF_MASK])
    log_z, gold, _ = brute_force_crf(emissions.astype("float64"), trans, CRF_MASK, labels)
    got_z, got_gold = run(
        lambda y, e, m: ops.stack(crf_log_likelihood_terms(y, e, trans, m)),
        np.eye(3, dtype="float32")[labels], emissions, CRF_MASK)
    np.testing.assert_allclose(got_z, log_z, atol=1e-5)
    np.testing.assert_allclose(got_gold, gold, atol=1e-5)
    # The losses find the mask in the layer's output, and ignore labels at padding.
    noisy = np.where(CRF_MASK, labels, 2)
    loss = run(crf.sparse_loss, noisy.astype("float32"), out_np)
    np.testing.assert_allclose(loss, log_z - gold, atol=1e-5)
    dense = run(crf.dense_loss, np.eye(3, dtype="float32")[labels], out_np)
    np.testing.assert_allclose(dense, log_z - gold, atol=1e-5)
    assert (loss[:-1] > 0).all() and loss[-1] == 0  # the empty row costs nothing


def test_crf_viterbi_equals_brute_force(crf_case):
    crf, emissions, trans, labels = crf_case
    _, _, best = brute_force_crf(emissions.astype("float64"), trans, CRF_MASK, labels)
    paths = run(lambda e, m: crf.decode(e, mask=m), emissions, CRF_MASK)
    assert paths.dtype == np.int32
    np.testing.assert_array_equal(paths, best)
    # decode=True without a mask recognises padding in already-masked emissions.
    masked = run(lambda e, m: crf(e, mask=m), emissions, CRF_MASK)
    np.testing.assert_array_equal(run(crf.decode, masked), best)


def test_viterbi_decoder_numpy_equals_brute_force_and_keeps_input():
    rng = np.random.RandomState(4)
    k = 4
    trans = rng.randn(k, k)
    nodes = rng.randn(4, k)
    before = nodes.copy()
    starts, ends = [0, 2], [1, 3]
    path = ViterbiDecoder(trans, starts=starts, ends=ends).decode(nodes)
    np.testing.assert_array_equal(nodes, before)
    scores = {}
    for p in itertools.product(range(k), repeat=4):
        if p[0] in starts and p[-1] in ends:
            scores[p] = nodes[np.arange(4), p].sum() + sum(trans[a, b] for a, b in zip(p, p[1:]))
    assert tuple(path) == max(scores, key=scores.get)
    assert ViterbiDecoder(trans).decode(np.zeros((0, k))).shape == (0,)
    with pytest.raises(ValueError):
        ViterbiDecoder(trans).decode(np.zeros((3, k + 1)))


def test_keras_viterbi_equals_numpy_viterbi_decoder():
    rng = np.random.RandomState(5)
    b, n, k = 8, 12, 5
    emissions = rng.randn(b, n, k).astype("float32")
    trans = rng.randn(k, k).astype("float32")
    lengths = rng.randint(1, n + 1, size=b)
    mask = np.arange(n)[None] < lengths[:, None]
    paths = run(lambda e, m: viterbi_decode(e, trans, m), emissions, mask)
    decoder = ViterbiDecoder(trans)
    for row in range(b):
        want = decoder.decode(emissions[row, : lengths[row]])
        np.testing.assert_array_equal(paths[row, : lengths[row]], want)
        assert (paths[row, lengths[row]:] == 0).all()


def test_crf_gradients_finite_under_masking(crf_case):
    crf, emissions, trans, labels = crf_case
    masked = run(lambda e, m: crf(e, mask=m), emissions, CRF_MASK)
    g = grads(lambda e: crf.sparse_loss(labels, e), masked)
    assert np.isfinite(g).all()
    assert (g[~CRF_MASK] == 0).all()
    # d loss / d emission = marginal - one_hot: negative on the gold label.
    gold = np.take_along_axis(g, labels[..., None], -1)[..., 0]
    assert (gold[CRF_MASK] < 0).all()
    assert np.allclose(g.sum(-1)[CRF_MASK], 0, atol=1e-5)


def test_mixed_precision_masks_survive_the_float32_cast(crf_case):
    """Under a mixed policy the CRF computes its emissions in float16 and returns them
    in float32 (heads return float32); the masked padding must still be recognised by
    the loss and the decoder."""
    _, emissions, trans, labels = crf_case
    crf = ConditionalRandomField(dtype="mixed_float16")
    crf.build((None, None, 3))
    crf.set_weights([trans])
    out = run(lambda e, m: crf(e, mask=m), emissions, CRF_MASK)
    assert out.dtype == np.float32
    rounded = out.astype("float32")
    log_z, gold, best = brute_force_crf(np.where(CRF_MASK[..., None], rounded, 0).astype(
        "float64"), trans, CRF_MASK, labels)
    loss = run(crf.sparse_loss, labels, rounded)
    np.testing.assert_allclose(loss, log_z - gold, atol=1e-4)
    np.testing.assert_array_equal(run(crf.decode, rounded), best)
    gp = GlobalPointer(2, 4, dtype="mixed_float16")
    logits = run(lambda x, m: gp(x, mask=m), emissions, CRF_MASK)
    assert logits.dtype == np.float32 and (logits[1, :, 3:] <= MASKED).all()


def test_crf_accuracy_ignores_padding():
    crf = ConditionalRandomField()
    emissions = np.array([[[3.0, 0, 0], [0, 3, 0], [0, 0, 3]]], "float32")
    mask = np.array([[1, 1, 0]], bool)
    out = crf(emissions, mask=mask)
    acc = float(ops.convert_to_numpy(crf.sparse_accuracy(np.array([[0, 2, 2]]), out)))
    assert acc == pytest.approx(0.5)
    acc = float(ops.convert_to_numpy(crf.dense_accuracy(np.eye(3)[[[0, 1, 1]]], out)))
    assert acc == pytest.approx(1.0)


def test_crf_trains_transitions_in_fit():
    """The loss reads ``trans``: the trainer must differentiate through it (JAX's
    stateless loss computation included)."""
    rng = np.random.RandomState(6)
    x = rng.randn(16, 6, 4).astype("float32")
    mask = (np.arange(6)[None] < rng.randint(2, 7, size=(16, 1))).astype("int32")
    y = rng.randint(0, 3, size=(16, 6))
    inputs, mask_in = keras.Input((None, 4)), keras.Input((None,), dtype="int32")
    crf = ConditionalRandomField(lr_multiplier=5)
    emissions = crf(keras.layers.Dense(3)(inputs), mask=mask_in)
    model = keras.Model([inputs, mask_in], emissions)
    model.compile(keras.optimizers.Adam(0.05), loss=crf.sparse_loss,
                  metrics=[crf.sparse_accuracy])
    before = ops.convert_to_numpy(crf.trans).copy()
    history = model.fit([x, mask], y, epochs=3, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.abs(ops.convert_to_numpy(crf.trans) - before).max() > 1e-3


# --------------------------------------------------------------------------- round trips


def test_keras_round_trip(tmp_path):
    rng = np.random.RandomState(7)
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    # Padding reaches the heads as the Keras mask of the embeddings.
    zeros = dict(kernel_initializer="zeros")  # random initializers compile slowly on JAX
    hidden = keras.layers.Embedding(20, 16, mask_zero=True,
                                    embeddings_initializer="zeros")(tokens)
    gp = GlobalPointer(2, 8, name="gp", **zeros)(hidden)
    egp = EfficientGlobalPointer(3, 8, name="egp", **zeros)(hidden)
    crf = ConditionalRandomField(lr_multiplier=3, name="crf")
    dense = keras.layers.Dense(4, **zeros)(hidden)
    emissions = crf(dense)
    paths = crf(dense, decode=True)
    model = keras.Model(tokens, [gp, egp, emissions, paths])
    random_weights(model, rng)
    ids = np.array([[3, 4, 5, 6, 7], [8, 9, 0, 0, 0]])
    before = model.predict(ids, verbose=0)
    path = str(tmp_path / "heads.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    after = loaded.predict(ids, verbose=0)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert after[3].dtype == np.int32 and (after[3][1, 2:] == 0).all()
    crf2 = loaded.get_layer("crf")
    assert crf2.lr_multiplier == 3
    np.testing.assert_array_equal(ops.convert_to_numpy(crf2.trans),
                                  ops.convert_to_numpy(crf.trans))
    assert loaded.get_layer("gp").get_config()["RoPE"] is True
