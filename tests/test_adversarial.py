"""kerasformer.training hooks against a numpy oracle of one training step.

The model is tiny and linear enough to differentiate by hand: token ids -> Embedding
("Embedding-Token") -> mean over positions -> Dense softmax. The oracle computes in
float64 numpy the perturbation each method defines (FGM arXiv:1605.07725, PGD
arXiv:1706.06083, VAT arXiv:1704.03976, gradient penalty kexue.fm/archives/7234) and the
gradient at the perturbed point; with SGD(lr) the step applied by ``model.fit`` must be
``-lr`` times that gradient, on both backends.
"""
import keras
import numpy as np
import pytest

from kerasformer import training

V, D, C, B, T = 7, 4, 3, 2, 5
LR = 0.5


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    ids = keras.Input((T,), dtype="int32")
    h = keras.layers.Embedding(V, D, name="Embedding-Token",
                               embeddings_initializer=keras.initializers.RandomNormal(0, 1.0))(ids)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(C, activation="softmax")(h)
    return keras.Model(ids, out)


def _data():
    rng = np.random.default_rng(1)
    x = rng.integers(0, V, size=(B, T)).astype("int32")
    x[0, :2] = 3  # a repeated token: its matrix gradient sums two rows
    y = np.eye(C)[rng.integers(0, C, size=B)].astype("float32")
    return x, y


def _weights(model):
    return [np.asarray(w, dtype="float64") for w in model.get_weights()]  # E, W, b


# -- numpy oracle ------------------------------------------------------------------------
def _forward(params, x):
    E, W, b = params
    h = E[x].mean(axis=1)
    z = h @ W + b
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    return h, p


def _grads(params, x, target, loss="ce"):
    """Loss (mean over the batch) and its gradients w.r.t. E, W, b and the embedding
    output e [B, T, D]. ``ce``: -sum(t log p); ``kld``: sum(t log(t / p)); both have
    dL/dz = (p - t) / B for a distribution t."""
    E, W, b = params
    h, p = _forward(params, x)
    if loss == "ce":
        value = -(target * np.log(p)).sum(-1).mean()
    else:
        value = (target * np.log(target / p)).sum(-1).mean()
    dz = (p - target) / len(x)
    dh = dz @ W.T
    de = np.repeat(dh[:, None, :] / x.shape[1], x.shape[1], axis=1)
    dE = np.zeros_like(E)
    np.add.at(dE, x, de)
    return value, [dE, h.T @ dz, dz.sum(0)], de


def _unit(g):
    return g / (np.sqrt((g ** 2).sum()) + 1e-8)


def _step_of(model, before):
    after = _weights(model)
    return [(b - a) / LR for a, b in zip(after, before)]  # = the gradient SGD applied


def _fit_once(model, x, y):
    model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0)


def _assert_close(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=2e-5, rtol=1e-4)


# -- tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("epsilon", [0.5, 2.0])
def test_fgm_step_is_gradient_at_perturbed_embeddings(epsilon):
    model = _model()
    model.compile(keras.optimizers.SGD(LR), loss="categorical_crossentropy")
    training.adversarial_training(model, "Embedding-Token", epsilon=epsilon)
    x, y = _data()
    params = _weights(model)
    _, (dE, _, _), _ = _grads(params, x, y)
    perturbed = [params[0] + epsilon * _unit(dE)] + params[1:]
    _, expected, _ = _grads(perturbed, x, y)
    # The clean-point gradient is not the applied one (the test would be vacuous).
    assert np.abs(expected[1] - _grads(params, x, y)[1][1]).max() > 1e-4
    _fit_once(model, x, y)
    _assert_close(_step_of(model, params), expected)


def test_pgd_projects_and_steps():
    model = _model()
    model.compile(keras.optimizers.SGD(LR), loss="categorical_crossentropy")
    epsilon, alpha, steps = 1.0, 0.6, 3
    training.pgd_training(model, "Embedding-Token", epsilon=epsilon, alpha=alpha, steps=steps)
    x, y = _data()
    params = _weights(model)
    delta = np.zeros_like(params[0])
    for _ in range(steps):
        _, (dE, _, _), _ = _grads([params[0] + delta] + params[1:], x, y)
        delta = delta + alpha * _unit(dE)
        delta = delta * min(1.0, epsilon / (np.sqrt((delta ** 2).sum()) + 1e-8))
    assert np.isclose(np.sqrt((delta ** 2).sum()), epsilon)  # the projection was active
    _, expected, _ = _grads([params[0] + delta] + params[1:], x, y)
    _fit_once(model, x, y)
    _assert_close(_step_of(model, params), expected)


def _backend_noise(seed, shape):
    # The hook's documented noise: a standard normal drawn from (seed, update number).
    if keras.backend.backend() == "jax":
        import jax

        key = jax.random.fold_in(jax.random.PRNGKey(seed), 0)
        return np.asarray(jax.random.normal(key, shape, "float32"), "float64")
    import tensorflow as tf

    return tf.random.stateless_normal(shape, seed=[seed, 0], dtype="float32").numpy().astype(
        "float64")


def test_vat_trains_on_own_predictions_at_adversarial_point():
    model = _model()
    model.compile(keras.optimizers.SGD(LR), loss="kld")
    epsilon, xi, seed = 1.5, 10.0, 7
    training.virtual_adversarial_training(model, "Embedding-Token", epsilon=epsilon, xi=xi,
                                          iters=1, seed=seed)
    x, _ = _data()
    params = _weights(model)
    _, targets = _forward(params, x)
    d = xi * _unit(_backend_noise(seed, params[0].shape))
    _, (dE, _, _), _ = _grads([params[0] + d] + params[1:], x, targets, loss="kld")
    r = epsilon * _unit(dE)
    _, expected, _ = _grads([params[0] + r] + params[1:], x, targets, loss="kld")
    garbage_labels = np.zeros((B, C), "float32")  # VAT ignores y
    _fit_once(model, x, garbage_labels)
    _assert_close(_step_of(model, params), expected)


def _penalised(flat, shapes, x, y, epsilon):
    params, i = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        params.append(flat[i:i + n].reshape(shape))
        i += n
    loss, _, de = _grads(params, x, y)
    return loss + 0.5 * epsilon * (de ** 2).sum()


def test_gradient_penalty_matches_finite_differences():
    model = _model()
    model.compile(keras.optimizers.SGD(LR), loss="categorical_crossentropy")
    epsilon = 3.0
    training.gradient_penalty(model, "Embedding-Token", epsilon=epsilon)
    x, y = _data()
    params = _weights(model)
    shapes = [p.shape for p in params]
    flat = np.concatenate([p.ravel() for p in params])
    h = 1e-6
    numeric = np.array([
        (_penalised(flat + h * e, shapes, x, y, epsilon)
         - _penalised(flat - h * e, shapes, x, y, epsilon)) / (2 * h)
        for e in np.eye(len(flat))
    ])
    expected, i = [], 0
    for shape in shapes:
        n = int(np.prod(shape))
        expected.append(numeric[i:i + n].reshape(shape))
        i += n
    clean = _grads(params, x, y)[1]
    assert max(np.abs(a - b).max() for a, b in zip(expected, clean)) > 1e-3  # penalty acts
    logs = model.fit(x, y, batch_size=B, epochs=1, shuffle=False, verbose=0).history
    _assert_close(_step_of(model, params), expected)
    np.testing.assert_allclose(logs["loss"][0], _penalised(flat, shapes, x, y, epsilon),
                               rtol=1e-5)


def test_hooks_refuse_unknown_layer_and_double_install():
    model = _model()
    with pytest.raises(ValueError, match="No layer named"):
        training.adversarial_training(model, "Embedding-Nope")
    training.adversarial_training(model)
    with pytest.raises(ValueError, match="already has"):
        training.pgd_training(model)
    training.remove_training_hooks(model)
    training.pgd_training(model)
