"""kerasformer.optimizers: every extension against a hand (NumPy) computation, on the active
backend (run under KERAS_BACKEND=jax and KERAS_BACKEND=tensorflow).

Tolerances are stated per test; float32 throughout.
"""
import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import ops  # noqa: E402

from kerasformer import optimizers as kfo  # noqa: E402

BACKEND = keras.backend.backend()
tf_only = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="documents Keras behaviour with tf.IndexedSlices gradients (TensorFlow only)",
)


def _numpy(variables):
    return [ops.convert_to_numpy(v).copy() for v in variables]


def _named_model(kind="dense"):
    """Tiny functional model whose variable paths look like bert4keras layers:
    Dense-A/kernel, Dense-A/bias, Some-Norm/gamma, Some-Norm/beta, Dense-B/kernel, Dense-B/bias."""
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="Dense-A")(inputs)
    x = keras.layers.LayerNormalization(name="Some-Norm")(x)
    outputs = keras.layers.Dense(2, name="Dense-B")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.weights])
    return model


def _grads(variables, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return [scale * rng.normal(size=v.shape).astype("float32") for v in variables]


# ---------------------------------------------------------------------------------------
# Embedding + Dense model trained through model.fit
# ---------------------------------------------------------------------------------------
VOCAB, DIM, SEQ = 10, 3, 4


class OneHotEmbedding(keras.layers.Layer):
    """Embedding as one_hot @ table: the same function with a dense gradient on every
    backend, the oracle for the sparse-gradient path."""

    def build(self, input_shape):
        self.embeddings = self.add_weight(shape=(VOCAB, DIM), name="embeddings")

    def call(self, x):
        return ops.matmul(ops.one_hot(x, VOCAB), self.embeddings)


def _embedding_model(dense_oracle=False):
    inputs = keras.Input((SEQ,), dtype="int32")
    embed = OneHotEmbedding(name="Embedding-Token") if dense_oracle else keras.layers.Embedding(
        VOCAB, DIM, name="Embedding-Token")
    x = keras.layers.Flatten()(embed(inputs))
    outputs = keras.layers.Dense(1, name="Dense")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.weights])
    return model


@pytest.fixture(scope="module")
def embedding_data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, VOCAB, (6, SEQ)).astype("int32")
    # Every batch of 2 repeats some token: the case tf.IndexedSlices gets wrong.
    assert all(len(np.unique(x[i:i + 2])) < x[i:i + 2].size for i in range(0, 6, 2))
    y = rng.normal(size=(6, 1)).astype("float32")
    return x, y


def _fit(optimizer, data, batch_size, epochs=2, dense_oracle=False):
    model = _embedding_model(dense_oracle)
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(*data, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return {w.path: ops.convert_to_numpy(w) for w in model.weights}


def _max_diff(a, b, key):
    return float(np.max(np.abs(a[key] - b[key])))


@tf_only
def test_keras_tf_sparse_gradients_documented(embedding_data):
    """Keras 3.15, TensorFlow backend (documents Keras, not kerasformer).

    The symptom of the issue: Adam(gradient_accumulation_steps=3) on 3 batches of 2 and
    Adam on one batch of 6 disagree on the Embedding (not on Dense). The wrong one is the
    *plain* update: Adam squares the IndexedSlices rows before duplicates are summed, so
    v gets sum(g_i^2) instead of (sum g_i)^2 for a repeated token; accumulation densifies
    (g + accumulator) and agrees with the dense-gradient oracle.
    """
    one_step = _fit(keras.optimizers.Adam(0.1), embedding_data, 6, epochs=1)
    accumulated = _fit(keras.optimizers.Adam(0.1, gradient_accumulation_steps=3),
                       embedding_data, 2, epochs=1)
    oracle = _fit(keras.optimizers.Adam(0.1), embedding_data, 6, epochs=1, dense_oracle=True)
    emb, kernel = "Embedding-Token/embeddings", "Dense/kernel"
    assert _max_diff(one_step, accumulated, emb) > 1e-2  # observed 0.098
    assert _max_diff(one_step, accumulated, kernel) < 1e-6
    assert _max_diff(accumulated, oracle, emb) < 1e-6
    assert _max_diff(one_step, oracle, emb) > 1e-2

    # The root cause on one variable: a token looked up twice with gradient 1 each.
    import tensorflow as tf

    sparse = tf.IndexedSlices(tf.ones((2, 2)), tf.constant([1, 1]), tf.constant([4, 2]))

    def step(optimizer, gradient):
        variable = keras.Variable(np.zeros((4, 2), "float32"))
        optimizer.apply([gradient], [variable])
        return ops.convert_to_numpy(variable)

    dense_update = step(keras.optimizers.Adam(0.1), tf.convert_to_tensor(sparse))
    keras_sparse_update = step(keras.optimizers.Adam(0.1), sparse)
    ours = step(kfo.extend_with_weight_decay(keras.optimizers.Adam)(
        0.1, weight_decay_rate=0.0), sparse)
    np.testing.assert_allclose(dense_update[1], -0.1, rtol=1e-4)
    np.testing.assert_allclose(keras_sparse_update[1], -0.1 * np.sqrt(2), rtol=1e-4)
    np.testing.assert_array_equal(ours, dense_update)


def test_gradient_accumulation_equals_large_batch(embedding_data):
    """k=3 micro-batches of 2 == one batch of 6, AdamW with decay (bias excluded), two
    updates through model.fit; Embedding included. Tolerance 1e-6 (observed 6e-8, both
    backends).
    The one-batch run is itself checked against the dense-gradient oracle run by Keras's
    own AdamW, so the two cannot agree by being wrong the same way."""
    AdamW = kfo.extend_with_weight_decay(keras.optimizers.Adam)
    AdamWGA = kfo.extend_with_gradient_accumulation(AdamW)
    kwargs = dict(learning_rate=0.05, weight_decay_rate=0.1, exclude_from_weight_decay=["bias"])
    accumulated = _fit(AdamWGA(grad_accum_steps=3, **kwargs), embedding_data, 2)
    one_batch = _fit(AdamW(**kwargs), embedding_data, 6)
    keras_adamw = keras.optimizers.AdamW(0.05, weight_decay=0.1)
    keras_adamw.exclude_from_weight_decay(var_names=["bias"])
    oracle = _fit(keras_adamw, embedding_data, 6, dense_oracle=True)
    for key in one_batch:
        assert _max_diff(accumulated, one_batch, key) <= 1e-6, key
        assert _max_diff(one_batch, oracle, key) <= 1e-6, key


# ---------------------------------------------------------------------------------------
# Piecewise linear learning rate
# ---------------------------------------------------------------------------------------
def test_piecewise_linear_values():
    steps = np.array([-1, 0, 250, 1000, 1500, 2000, 5000])
    values = ops.convert_to_numpy(kfo.piecewise_linear(steps, {1000: 1, 2000: 0.1}))
    np.testing.assert_allclose(values, [0, 0, 0.25, 1, 0.55, 0.1, 0.1], atol=1e-7)
    values = ops.convert_to_numpy(
        kfo.piecewise_linear(steps, {"1000": 1, "2000": 0.1}, from_zero=False))
    np.testing.assert_allclose(values, [1, 1, 1, 1, 0.55, 0.1, 0.1], atol=1e-7)
    values = ops.convert_to_numpy(kfo.piecewise_linear(steps, {0: 2}))
    np.testing.assert_allclose(values, [2] * 7)

    schedule = kfo.PiecewiseLinearSchedule(0.1, {1000: 1, 2000: 0.1})
    np.testing.assert_allclose(
        [float(ops.convert_to_numpy(schedule(s))) for s in (0, 500, 1500, 9999)],
        [0, 0.05, 0.055, 0.01], rtol=1e-6)
    # Deserialised as a saved model's config would be (keras.saving's serialize imports
    # TensorFlow even on JAX, which this file avoids for speed).
    restored = keras.optimizers.schedules.deserialize({
        "class_name": keras.saving.get_registered_name(kfo.PiecewiseLinearSchedule),
        "config": schedule.get_config()})
    assert restored.get_config() == schedule.get_config()
    with pytest.raises(ValueError):
        kfo.piecewise_linear(0, {})


def _scalar_run(optimizer, num_steps, gradient=1.0):
    variable = keras.Variable(np.zeros((1,), "float32"), name="w")
    history = []
    for _ in range(num_steps):
        optimizer.apply([np.full((1,), gradient, "float32")], [variable])
        history.append(float(ops.convert_to_numpy(variable)[0]))
    return -np.diff([0.0] + history)


def test_piecewise_linear_lr_optimizer():
    """SGD(0.1), gradient 1: the update at step t is 0.1 * multiplier(t), t counting updates
    already applied (0 first); under accumulation the schedule counts updates, not micro-steps."""
    expected = 0.1 * np.array([0, 0.5, 1, 0.75, 0.5, 0.5])
    SGDLR = kfo.extend_with_piecewise_linear_lr(keras.optimizers.SGD)
    np.testing.assert_allclose(
        _scalar_run(SGDLR(0.1, lr_schedule={2: 1, 4: 0.5}), 6), expected, atol=1e-7)
    # The same multipliers as a LearningRateSchedule for a plain Keras optimizer.
    np.testing.assert_allclose(
        _scalar_run(keras.optimizers.SGD(kfo.PiecewiseLinearSchedule(0.1, {2: 1, 4: 0.5})), 6),
        expected, atol=1e-7)

    SGDLRGA = kfo.extend_with_gradient_accumulation(SGDLR)
    deltas = _scalar_run(SGDLRGA(0.1, lr_schedule={2: 1, 4: 0.5}, grad_accum_steps=2), 6)
    np.testing.assert_allclose(deltas[1::2], expected[:3], atol=1e-7)
    np.testing.assert_allclose(deltas[0::2], 0.0, atol=0)
    # Keras itself feeds the micro-step counter to the schedule (documents Keras 3.15):
    # its updates use the multipliers of steps 1, 3, 5 instead of 0, 1, 2.
    keras_deltas = _scalar_run(keras.optimizers.SGD(
        kfo.PiecewiseLinearSchedule(0.1, {2: 1, 4: 0.5}), gradient_accumulation_steps=2), 6)
    np.testing.assert_allclose(keras_deltas[1::2], expected[[1, 3, 5]], atol=1e-7)


# ---------------------------------------------------------------------------------------
# Parameter-wise lr, weight decay
# ---------------------------------------------------------------------------------------
def test_parameter_wise_lr_scales_the_update():
    """First Adam step: matched variables move exactly `multiplier` x the plain update
    (products when several patterns match); atol 2e-7 for the float32 rounding of x1 - x0."""
    Adam = kfo.extend_with_parameter_wise_lr(keras.optimizers.Adam)
    schedule = {"Dense-A": 3.0, "kernel": 0.5}
    expected = {"Dense-A/kernel": 1.5, "Dense-A/bias": 3.0, "Some-Norm/gamma": 1.0,
                "Some-Norm/beta": 1.0, "Dense-B/kernel": 0.5, "Dense-B/bias": 1.0}
    deltas = []
    for optimizer in (Adam(0.1), Adam(0.1, paramwise_lr_schedule=schedule)):
        model = _named_model()
        variables = model.trainable_variables
        before = _numpy(variables)
        optimizer.apply(_grads(variables), variables)
        deltas.append([a - b for a, b in zip(_numpy(variables), before)])
    for variable, plain, scaled in zip(variables, *deltas):
        np.testing.assert_allclose(scaled, expected[variable.path] * plain, rtol=0, atol=2e-7)
        assert np.abs(plain).min() > 1e-2  # a real update, not noise

    # Why the update and not the gradient: Adam's update ignores the gradient scale (up to
    # epsilon), so a "multiplier" on the gradient would do (almost) nothing.
    updates = []
    for scale in (1.0, 3.0):
        model = _named_model()
        before = _numpy(model.trainable_variables)
        keras.optimizers.Adam(0.1).apply(_grads(model.trainable_variables, scale=scale),
                                         model.trainable_variables)
        updates.append(_numpy(model.trainable_variables)[0] - before[0])
    np.testing.assert_allclose(updates[0], updates[1], rtol=1e-4)


def test_weight_decay_exclusion():
    """Zero gradients, so Adam's own update is exactly 0: decayed variables become
    x * (1 - lr * rate * multiplier), excluded ones (paths matching "Norm" or "bias")
    are untouched (exact equality)."""
    AdamW = kfo.extend_with_weight_decay(keras.optimizers.Adam)
    model = _named_model()
    variables = model.trainable_variables
    before = _numpy(variables)
    AdamW(0.5, weight_decay_rate=0.1, exclude_from_weight_decay=["Norm", "bias"]).apply(
        [np.zeros(v.shape, "float32") for v in variables], variables)
    for variable, old, new in zip(variables, before, _numpy(variables)):
        if "Norm" in variable.path or "bias" in variable.path:
            np.testing.assert_array_equal(new, old)
        else:
            np.testing.assert_allclose(new, old * (1 - 0.05), rtol=1e-6)

    # The parameter-wise multiplier scales the decay too (bert4keras, PyTorch param groups).
    AdamWP = kfo.extend_with_parameter_wise_lr(AdamW)
    model = _named_model()
    variables = model.trainable_variables
    before = _numpy(variables)
    AdamWP(0.5, weight_decay_rate=0.1, exclude_from_weight_decay=["Norm", "bias"],
           paramwise_lr_schedule={"Dense-A": 2.0}).apply(
        [np.zeros(v.shape, "float32") for v in variables], variables)
    after = dict(zip([v.path for v in variables], _numpy(variables)))
    np.testing.assert_allclose(after["Dense-A/kernel"], before[0] * (1 - 0.1), rtol=1e-6)
    np.testing.assert_allclose(after["Dense-B/kernel"], before[4] * (1 - 0.05), rtol=1e-6)

    # Keras's own exclude_from_weight_decay(var_names=...) searches the *backend* variable's
    # name: "gamma" on JAX (so "Norm" does not exclude a LayerNorm) but the tf.Variable
    # name "Some-Norm/gamma:0" on TensorFlow (so it does). Documents Keras 3.15; the path
    # regexes above behave the same on both backends.
    model = _named_model()
    norm_gamma = model.get_layer("Some-Norm").gamma
    old = ops.convert_to_numpy(norm_gamma).copy()
    keras_adamw = keras.optimizers.AdamW(0.5, weight_decay=0.1)
    keras_adamw.exclude_from_weight_decay(var_names=["Norm"])
    keras_adamw.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables],
                      model.trainable_variables)
    expected = old if BACKEND == "tensorflow" else old * 0.95
    np.testing.assert_allclose(ops.convert_to_numpy(norm_gamma), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------
# EMA, Lookahead, LAMB
# ---------------------------------------------------------------------------------------
def test_ema_matches_hand_computation():
    """SGD(0.1) + EMA(0.9): ema_t = 0.9 ema_{t-1} + 0.1 w_t from 0, applied divided by
    1 - 0.9^t; with accumulation (k=2) the average moves once per real update.
    rtol 1e-6 (observed ~1e-7)."""
    SGDEMA = kfo.extend_with_exponential_moving_average(keras.optimizers.SGD)
    SGDEMAGA = kfo.extend_with_gradient_accumulation(SGDEMA)
    for accumulate in (1, 2):
        model = _named_model()
        variables = model.trainable_variables
        optimizer = (SGDEMA(0.1, ema_momentum=0.9) if accumulate == 1 else
                     SGDEMAGA(0.1, ema_momentum=0.9, grad_accum_steps=2))
        weights = [w.astype("float64") for w in _numpy(variables)]
        ema = [np.zeros_like(w) for w in weights]
        grads = [_grads(variables, seed=step) for step in range(4)]
        for step, g in enumerate(grads):
            optimizer.apply(g, variables)
        for update in range(4 // accumulate):
            g = [np.mean([grads[update * accumulate + j][i] for j in range(accumulate)], 0)
                 for i in range(len(weights))]
            weights = [w - 0.1 * gi for w, gi in zip(weights, g)]
            ema = [0.9 * e + 0.1 * w for e, w in zip(ema, weights)]
        trained = _numpy(variables)
        for w, got in zip(weights, trained):
            np.testing.assert_allclose(got, w, rtol=1e-6, atol=1e-6)
        optimizer.apply_ema_weights()
        corrected = 1 - 0.9 ** (4 // accumulate)
        for e, got in zip(ema, _numpy(variables)):
            np.testing.assert_allclose(got, e / corrected, rtol=1e-6, atol=1e-6)
        optimizer.reset_old_weights()
        for w, got in zip(trained, _numpy(variables)):
            np.testing.assert_array_equal(got, w)
    with pytest.raises(ValueError):
        SGDEMA(0.1, ema_momentum=0.9).apply_ema_weights()


def test_lookahead_on_a_quadratic():
    """f(w) = 0.5 * sum(c * w^2), SGD(0.1), k=3, alpha=0.5, 8 steps, against the loop of
    Lookahead's Algorithm 1 (slow weights start at w0). atol 1e-6."""
    c = np.array([0.5, 1.0, 2.0, 4.0], "float32")
    w0 = np.array([1.0, -2.0, 0.5, 3.0], "float32")
    SGDLA = kfo.extend_with_lookahead(keras.optimizers.SGD)
    optimizer = SGDLA(0.1, steps_per_slow_update=3, slow_step_size=0.5)
    variable = keras.Variable(w0, name="w")
    fast, slow = w0.astype("float64"), w0.astype("float64")
    for step in range(1, 9):
        optimizer.apply([c * ops.convert_to_numpy(variable)], [variable])
        fast = fast - 0.1 * c * fast
        if step % 3 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow.copy()
        np.testing.assert_allclose(ops.convert_to_numpy(variable), fast, atol=1e-6)
    assert np.abs(fast - w0).max() > 0.1  # it moved


def test_lamb_trust_ratio_one_step():
    """Adam + layer adaptation, one step, against NumPy: kernel update u * ||x|| * lr / ||u||,
    bias (excluded) the plain Adam update u. atol 1e-6."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-6
    LAMB = kfo.extend_with_layer_adaptation(keras.optimizers.Adam)
    model = _named_model()
    variables = model.trainable_variables
    before = _numpy(variables)
    grads = _grads(variables)
    LAMB(lr, beta_1=b1, beta_2=b2, epsilon=eps,
         exclude_from_layer_adaptation=["bias"]).apply(grads, variables)
    for variable, x, g, new in zip(variables, before, grads, _numpy(variables)):
        x, g = x.astype("float64"), g.astype("float64")
        m, v = (1 - b1) * g, (1 - b2) * g * g
        u = lr * np.sqrt(1 - b2) / (1 - b1) * m / (np.sqrt(v) + eps)
        if "bias" not in variable.path:
            u = u * np.linalg.norm(x) * lr / np.linalg.norm(u)
        np.testing.assert_allclose(new, x - u, atol=1e-6)


# ---------------------------------------------------------------------------------------
# Layer-wise decay, config, errors
# ---------------------------------------------------------------------------------------
def test_layerwise_lr_decay_on_bert_names():
    from kerasformer import build_transformer_model

    model = build_transformer_model(
        None, None, model="bert", vocab_size=30, hidden_size=8, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=12, max_position_embeddings=16,
        with_pool=True)
    schedule = kfo.layerwise_lr_decay(model, 0.5)
    assert schedule == kfo.layerwise_lr_decay(None, 0.5, num_layers=2)
    optimizer = kfo.extend_with_parameter_wise_lr(keras.optimizers.Adam)(
        1e-3, paramwise_lr_schedule=schedule)
    optimizer.build(model.trainable_variables)
    got = {v.path: m for v, m in zip(model.trainable_variables, optimizer._kf.multipliers)}
    assert got["Embedding-Token/embeddings"] == 0.125
    assert got["Embedding-Norm/gamma"] == 0.125
    assert got["Transformer-0-MultiHeadSelfAttention/q_dense/kernel"] == 0.25
    assert got["Transformer-1-FeedForward-Norm/beta"] == 0.5
    assert got["Pooler-Dense/kernel"] == 1.0
    assert set(got.values()) == {0.125, 0.25, 0.5, 1.0}
    with pytest.raises(ValueError, match="num_layers"):
        kfo.layerwise_lr_decay(model, 0.5, num_layers=3)
    with pytest.raises(ValueError, match="Transformer"):
        kfo.layerwise_lr_decay(_named_model(), 0.5)


def test_config_round_trip_and_errors():
    Stacked = kfo.extend_with_lookahead(kfo.extend_with_layer_adaptation(
        kfo.extend_with_parameter_wise_lr(kfo.extend_with_exponential_moving_average(
            kfo.extend_with_gradient_accumulation(kfo.extend_with_piecewise_linear_lr(
                kfo.extend_with_weight_decay(keras.optimizers.Adam)))))))
    optimizer = Stacked(
        1e-3, weight_decay_rate=0.02, exclude_from_weight_decay=["Norm"],
        lr_schedule={10: 1, 20: 0.1}, grad_accum_steps=4, ema_momentum=0.99,
        paramwise_lr_schedule={"Embedding-": 0.5}, exclude_from_layer_adaptation=["bias"],
        steps_per_slow_update=6, slow_step_size=0.4)
    config = optimizer.get_config()
    assert config["weight_decay_rate"] == 0.02 and "weight_decay" not in config
    assert config["grad_accum_steps"] == 4 and "gradient_accumulation_steps" not in config
    assert config["lr_schedule"] == {"10": 1.0, "20": 0.1}
    assert Stacked.from_config(config).get_config() == config
    restored = keras.optimizers.deserialize({"class_name": Stacked.__name__, "config": config})
    assert type(restored) is Stacked and restored.get_config() == config

    with pytest.raises(ValueError, match="already extended"):
        kfo.extend_with_weight_decay(kfo.extend_with_lookahead(
            kfo.extend_with_weight_decay(keras.optimizers.SGD)))
    with pytest.raises(TypeError):
        kfo.extend_with_weight_decay(keras.optimizers.Adam())
    with pytest.raises(ValueError, match="weight_decay_rate"):
        kfo.extend_with_weight_decay(keras.optimizers.Adam)(weight_decay=0.1)
    with pytest.raises(ValueError, match="grad_accum_steps"):
        kfo.extend_with_gradient_accumulation(keras.optimizers.Adam)(grad_accum_steps=1)
    with pytest.raises(ValueError, match="use_ema"):
        kfo.extend_with_exponential_moving_average(keras.optimizers.Adam)(use_ema=True)


def _gradients(model, loss_fn, x, y):
    """Backend gradients for an eager replay (TensorFlow: IndexedSlices for the Embedding)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        return tape.gradient(loss, model.trainable_variables)
    import jax

    def loss_of(trainable, x, y):
        out, _ = model.stateless_call(
            trainable, [v.value for v in model.non_trainable_variables], x)
        return loss_fn(y, out)

    if not hasattr(model, "_test_grad_fn"):
        model._test_grad_fn = jax.jit(jax.grad(loss_of))
    return model._test_grad_fn([v.value for v in model.trainable_variables], x, y)


def test_all_extensions_compiled_equal_eager(embedding_data):
    """Every extension stacked, trained by model.fit (compiled: jax.jit / tf.function) and
    by eager optimizer.apply on the same gradients: weights and EMA weights agree to 1e-6
    (observed <= 1.2e-7; JAX and TensorFlow runs also agree with each other to 1.2e-7)."""
    Stacked = kfo.extend_with_lookahead(kfo.extend_with_layer_adaptation(
        kfo.extend_with_parameter_wise_lr(kfo.extend_with_exponential_moving_average(
            kfo.extend_with_gradient_accumulation(kfo.extend_with_piecewise_linear_lr(
                kfo.extend_with_weight_decay(keras.optimizers.Adam)))))))

    def optimizer():
        return Stacked(0.05, weight_decay_rate=0.02, exclude_from_weight_decay=["bias"],
                       lr_schedule={1: 1, 3: 0.1}, grad_accum_steps=2, ema_momentum=0.9,
                       paramwise_lr_schedule={"Embedding-": 0.5},
                       exclude_from_layer_adaptation=["bias"],
                       steps_per_slow_update=2, slow_step_size=0.5)

    x, y = embedding_data
    fitted, fit_optimizer = _embedding_model(), optimizer()
    fitted.compile(optimizer=fit_optimizer, loss="mse")
    fitted.fit(x, y, batch_size=1, epochs=1, shuffle=False, verbose=0)
    eager, eager_optimizer = _embedding_model(), optimizer()
    loss_fn = keras.losses.MeanSquaredError()
    for i in range(len(x)):
        eager_optimizer.apply(_gradients(eager, loss_fn, x[i:i + 1], y[i:i + 1]),
                              eager.trainable_variables)
    assert int(ops.convert_to_numpy(fit_optimizer.iterations)) == 3
    for a, b in zip(_numpy(fitted.weights), _numpy(eager.weights)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    fit_optimizer.apply_ema_weights()
    eager_optimizer.apply_ema_weights()
    for a, b in zip(_numpy(fitted.weights), _numpy(eager.weights)):
        np.testing.assert_allclose(a, b, atol=1e-6)
