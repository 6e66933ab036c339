"""ChildTuning (arXiv:2109.05687): ChildTuning-F's update equals -lr * g * mask / p with a
fresh Bernoulli(p) mask per step (compiled fit, analytic gradients of a linear model),
ChildTuning-D's masked entries never move under Adam and its update is Adam's formula on
g * mask (numpy), the Fisher estimate equals the analytic squared gradients, and the
top-p mask keeps the largest values."""
import keras
import numpy as np
import pytest
from keras import ops

from kerasformer.child_tuning import child_tuning_masks, fisher_information
from kerasformer.optimizers import extend_with_child_tuning

RNG = np.random.RandomState(0)
X = RNG.randn(8, 20).astype("float32")
Y = RNG.randn(8, 30).astype("float32")


def _linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(30, use_bias=False)])
    return model


def _mse_gradient(w, x, y):
    """d/dW mean((x W - y)^2) over all entries."""
    return 2.0 / y.size * x.T @ (x @ w - y)


def test_child_tuning_f_update_is_masked_and_rescaled_in_compiled_fit():
    model = _linear_model()
    p, lr = 0.3, 0.1
    optimizer = extend_with_child_tuning(keras.optimizers.SGD)(
        learning_rate=lr, child_tuning_mode="F", reserve_p=p, child_tuning_seed=1)
    model.compile(optimizer, "mse", jit_compile=True)
    masks = []
    for _ in range(2):
        w = model.get_weights()[0].astype("float64")
        model.fit(X, Y, batch_size=8, epochs=1, shuffle=False, verbose=0)
        delta = model.get_weights()[0] - w
        expected = -lr * _mse_gradient(w, X, Y) / p
        moved = delta != 0
        np.testing.assert_allclose(delta[moved], expected[moved], rtol=1e-4, atol=1e-7)
        assert 0.2 < moved.mean() < 0.4  # 600 Bernoulli(0.3) draws
        masks.append(moved)
    assert (masks[0] != masks[1]).any()  # a fresh mask each step


def test_child_tuning_f_seeded_runs_reproduce():
    deltas = []
    for _ in range(2):
        model = _linear_model()
        w = model.get_weights()[0]
        optimizer = extend_with_child_tuning(keras.optimizers.SGD)(
            learning_rate=0.1, child_tuning_mode="F", reserve_p=0.5, child_tuning_seed=7)
        model.compile(optimizer, "mse")
        model.fit(X, Y, batch_size=8, epochs=1, verbose=0)
        deltas.append(model.get_weights()[0] - w)
    np.testing.assert_array_equal(deltas[0], deltas[1])


def test_child_tuning_d_masked_entries_never_move_and_update_is_adam_formula():
    model = _linear_model()
    variable = model.trainable_variables[0]
    mask = (RNG.rand(20, 30) < 0.4).astype("float32")
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    optimizer = extend_with_child_tuning(keras.optimizers.Adam)(
        learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps, child_tuning_mode="D",
        gradient_masks={variable.path: mask})
    w = model.get_weights()[0].astype("float64")
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    w0 = w.copy()
    for t in range(1, 4):
        g = RNG.randn(20, 30).astype("float32")
        optimizer.apply([ops.convert_to_tensor(g)], [variable])
        # Keras's Adam on the masked gradient (keras.optimizers.Adam docs / Kingma & Ba).
        g = g.astype("float64") * mask
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - lr_t * m / (np.sqrt(v) + eps)
        # float32 Adam vs a float64 reference; the updates themselves are ~lr = 1e-2.
        np.testing.assert_allclose(ops.convert_to_numpy(variable), w, rtol=0, atol=1e-6)
    final = ops.convert_to_numpy(variable)
    np.testing.assert_array_equal(final[mask == 0], w0[mask == 0].astype("float32"))
    assert (final[mask == 1] != w0[mask == 1]).all()


def test_child_tuning_d_config_and_errors():
    model = _linear_model()
    variable = model.trainable_variables[0]
    Optimizer = extend_with_child_tuning(keras.optimizers.SGD)
    optimizer = Optimizer(child_tuning_mode="D",
                          gradient_masks={variable.path: np.ones((20, 30))})
    config = optimizer.get_config()
    assert config["child_tuning_masked_paths"] == [variable.path]
    assert Optimizer.from_config(config).child_tuning_mode == "D"
    with pytest.raises(ValueError, match="needs gradient_masks"):
        Optimizer(child_tuning_mode="D")
    with pytest.raises(ValueError, match="'F' or 'D'"):
        Optimizer(child_tuning_mode="X")
    with pytest.raises(ValueError, match="reserve_p"):
        Optimizer(reserve_p=0)
    with pytest.raises(ValueError, match="unknown variables"):
        Optimizer(child_tuning_mode="D", gradient_masks={"nope": np.ones(3)}).build(
            model.trainable_variables)
    with pytest.raises(ValueError, match="shape"):
        Optimizer(child_tuning_mode="D", gradient_masks={variable.path: np.ones(3)}).build(
            model.trainable_variables)


def test_fisher_information_and_masks():
    model = _linear_model()
    batches = [(X[:4], Y[:4]), (X[4:], Y[4:])]
    fisher = fisher_information(model, keras.losses.MeanSquaredError(), batches)
    w = model.get_weights()[0].astype("float64")
    expected = np.mean([_mse_gradient(w, x, y) ** 2 for x, y in batches], axis=0)
    path = model.trainable_variables[0].path
    np.testing.assert_allclose(fisher[path], expected, rtol=1e-4, atol=1e-12)
    assert set(fisher) == {path}
    with pytest.raises(ValueError, match="no batches"):
        fisher_information(model, keras.losses.MeanSquaredError(), [])
    with pytest.raises(ValueError, match="reserve_p"):
        child_tuning_masks(fisher, 1.5)


def test_child_tuning_masks_keep_the_top_fraction():
    values = {"a": RNG.rand(30, 10), "b": RNG.rand(700)}
    masks = child_tuning_masks(values, 0.25)
    flat_values = np.concatenate([values["a"].ravel(), values["b"]])
    flat_masks = np.concatenate([masks["a"].ravel(), masks["b"]])
    assert set(np.unique(flat_masks)) == {0.0, 1.0}
    assert abs(flat_masks.mean() - 0.25) <= 1.0 / len(flat_values)
    assert flat_values[flat_masks == 1].min() > flat_values[flat_masks == 0].max()
