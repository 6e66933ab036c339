"""kerasformer.contrastive.GradientCache: gradients of an in-batch contrastive loss
computed in micro-batches equal the full-batch gradients (GradCache, arXiv:2101.06983;
kexue.fm/archives/8471), on a tiny BERT with masked mean pooling and SimCSE's loss.

The oracle is one ordinary gradient over the whole batch, written here per backend
(``jax.grad`` of ``stateless_call`` / ``tf.GradientTape``), independent of the module.
With dropout the oracle runs the same micro-batches one after another under a single
gradient (so it draws the same masks as GradCache's first pass) and the loss of their
concatenated embeddings. Runs under ``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``;
float32; tolerances are max |Δ| relative to the largest gradient entry, stated per assert.
"""
import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.contrastive import GradientCache, contrastive_gradients
from kerasformer.losses import simcse_loss

BACKEND = keras.backend.backend()
# One block: the result does not depend on depth, and XLA compile time (which
# dominates this file on JAX) grows with it.
CONFIG = dict(
    vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    intermediate_size=37, max_position=16, initializer_range=0.2,
)
BATCH, SEQ = 8, 9


class MaskedMeanPool(keras.layers.Layer):
    """Mean of the hidden states over the non-padding tokens: [B, T, H], [B, T] -> [B, H]."""

    def call(self, hidden, token_ids):
        mask = ops.cast(ops.not_equal(token_ids, 0), hidden.dtype)[..., None]
        return ops.sum(hidden * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)


def _encoder(dropout=0.0):
    keras.utils.set_random_seed(0)
    bert = build_transformer_model(model="bert", dropout_rate=dropout,
                                   attention_dropout_rate=dropout, **CONFIG)
    pooled = MaskedMeanPool(name="Pool")(bert.outputs[0], bert.inputs[0])
    model = keras.Model(bert.inputs, pooled)
    rng = np.random.default_rng(0)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype("float32")
                       if w.ndim == 1 else w for w in model.get_weights()])
    return model


def _inputs(seed=0):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, CONFIG["vocab_size"], (BATCH, SEQ)).astype("int32")
    for row, length in enumerate(rng.randint(3, SEQ + 1, BATCH)):
        tokens[row, length:] = 0
    return [tokens, np.zeros_like(tokens)]


def loss_fn(embeddings):
    # Rows 2i and 2i+1 are a positive pair (SimBERT-style paraphrases / SimCSE views).
    return ops.mean(simcse_loss(None, embeddings, scale=20.0))


_ORACLES = {}  # compiled JAX oracles, reused across tests (compiling dominates runtime)


def _oracle(model, inputs, training, bounds=(0, BATCH)):
    """(loss, grads) of loss_fn over the batch, under one gradient; the batch is run as
    consecutive forward passes over rows bounds[i]:bounds[i+1] (default one pass: the
    plain full-batch gradient)."""
    parts = [[x[a:b] for x in inputs] for a, b in zip(bounds[:-1], bounds[1:])]
    if BACKEND == "jax":
        import jax

        def full(trainable, non_trainable, parts):
            state, outs = non_trainable, []
            for part in parts:
                out, state = model.stateless_call(trainable, state, part, training=training)
                outs.append(out)
            return loss_fn(ops.concatenate(outs, axis=0)), state

        key = (id(model), training, tuple(bounds))
        if key not in _ORACLES:
            _ORACLES[key] = jax.jit(jax.value_and_grad(full, has_aux=True))
        (loss, state), grads = _ORACLES[key](
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables], parts)
        for variable, value in zip(model.non_trainable_variables, state):
            variable.assign(value)
        return loss, [np.asarray(g) for g in grads]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        outs = [model(part, training=training) for part in parts]
        loss = loss_fn(ops.concatenate(outs, axis=0))
    grads = tape.gradient(loss, model.trainable_variables)
    return loss, [tf.convert_to_tensor(g).numpy() for g in grads]


def _rel_diff(got, expected):
    scale = max(float(np.max(np.abs(e))) for e in expected)
    worst = max(float(np.max(np.abs(ops.convert_to_numpy(g) - e)))
                for g, e in zip(got, expected))
    return worst / scale


def report(what, value):
    print(f"max|Δ|/max|g| [{BACKEND}] {what}: {value:.3g}")
    return value


def _seed_state(model):
    return [ops.convert_to_numpy(v) for v in model.non_trainable_variables]


@pytest.fixture(scope="module")
def encoder():
    """One encoder for every test (dropout 0.1, active only with training=True), so
    compiled steps are shared; tests restore its weights and seed state."""
    return _encoder(dropout=0.1)


@pytest.fixture
def fresh(encoder):
    weights, state = encoder.get_weights(), _seed_state(encoder)
    yield encoder
    encoder.set_weights(weights)


def test_micro_batches_give_the_full_batch_gradient(fresh):
    encoder = fresh
    inputs = _inputs()
    loss, expected = _oracle(encoder, inputs, training=False)
    # 8 rows in chunks of 3, 3, 2: pairs (rows 2i, 2i+1) straddle chunk boundaries.
    cache = GradientCache(encoder, loss_fn, micro_batch_size=3, training=False)
    got_loss, grads = cache.gradients(inputs)
    assert len(grads) == len(encoder.trainable_variables)
    for g, v in zip(grads, encoder.trainable_variables):
        assert tuple(g.shape) == tuple(v.shape)
    assert abs(float(got_loss) - float(loss)) <= 1e-6 * abs(float(loss))
    assert report("GradCache (3,3,2) vs full batch", _rel_diff(grads, expected)) <= 1e-5
    # Every weight, the token embedding (sparse gradient on TF) included, gets one.
    embedding = [i for i, v in enumerate(encoder.trainable_variables)
                 if v.path == "Embedding-Token/embeddings"][0]
    assert float(np.max(np.abs(ops.convert_to_numpy(grads[embedding])))) > 0
    # The one-shot helper reuses the compiled steps and gives the same numbers.
    _, again = contrastive_gradients(encoder, loss_fn, inputs, micro_batch_size=3,
                                     training=False)
    assert _rel_diff(again, [ops.convert_to_numpy(g) for g in grads]) == 0.0


def test_dropout_masks_are_replayed(fresh):
    model = fresh
    inputs = _inputs(1)
    start = _seed_state(model)
    _, expected = _oracle(model, inputs, training=True, bounds=(0, 4, BATCH))
    after_oracle = _seed_state(model)
    assert any(not np.array_equal(a, b) for a, b in zip(start, after_oracle))

    for variable, value in zip(model.non_trainable_variables, start):
        variable.assign(value)
    cache = GradientCache(model, loss_fn, micro_batch_size=4, training=True)
    _, grads = cache.gradients(inputs)
    # Same masks in pass 1 (embeddings) and pass 3 (recomputation) as the oracle's; a
    # mask drawn afresh in pass 3 would change the gradient by O(1).
    assert report("GradCache with dropout vs same-mask oracle",
                  _rel_diff(grads, expected)) <= 1e-5
    # The seed state advanced exactly as one forward pass per micro-batch would.
    for a, b in zip(_seed_state(model), after_oracle):
        np.testing.assert_array_equal(a, b)


def test_train_step_applies_the_full_batch_gradient(fresh):
    model = fresh
    initial = model.get_weights()
    batches = [_inputs(2), _inputs(3)]
    # SGD: the update is linear in the gradient, so equal gradients give equal weights
    # (Adam's g / (|g| + eps) amplifies the rounding of near-zero gradient entries).
    lr = 0.5
    cache = GradientCache(model, loss_fn, micro_batch_size=3, training=False)
    optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    losses = [float(cache.train_step(optimizer, batch)) for batch in batches]
    got = model.get_weights()

    model.set_weights(initial)
    reference_optimizer = keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    for batch, loss in zip(batches, losses):
        expected_loss, grads = _oracle(model, batch, training=False)
        reference_optimizer.apply_gradients(zip(grads, model.trainable_variables))
        assert abs(loss - float(expected_loss)) <= 1e-6 * abs(float(expected_loss))
    expected = model.get_weights()
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(got, initial)) > 1e-3
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected))
    # The steps move weights by up to ~1 (lr 0.5, momentum 0.9); gradients agree to
    # ~1e-6 relative, so the weights do to a few 1e-6.
    assert report("2 SGD steps, GradCache vs full batch (abs)", worst) <= 1e-5
