"""DGCNN (kexue.fm/archives/5409) against a numpy loop version of the article's block
y = x (1 - s) + conv1(x) s, s = sigmoid(conv2(x)), with dilated "same" convolutions and
padded positions zeroed; and padding invariance (real positions never see padding)."""
import os

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer.layers import DGCNN, DilatedGatedConv1D


def _dilated_conv_same(x, kernel, bias, rate):
    """Direct sum: y[t] = b + sum_j x[t + j * rate - pad] W[j], zeros outside [0, T)."""
    k = kernel.shape[0]
    pad = (rate * (k - 1)) // 2
    y = np.tile(bias, (x.shape[0], 1)).astype("float64")
    for t in range(x.shape[0]):
        for j in range(k):
            src = t + j * rate - pad
            if 0 <= src < x.shape[0]:
                y[t] += x[src] @ kernel[j]
    return y


def _reference(x, mask, blocks, rates):
    """x [T, d], mask [T]; blocks: [(kernel [k, d, 2d], bias [2d])] per dilation rate."""
    m = mask[:, None].astype("float64")
    x = x.astype("float64")
    for (kernel, bias), rate in zip(blocks, rates):
        x = x * m
        conv = _dilated_conv_same(x, kernel, bias, rate)
        d = x.shape[1]
        h, s = conv[:, :d], 1 / (1 + np.exp(-conv[:, d:]))
        x = (x * (1 - s) + h * s) * m
    return x


@pytest.mark.parametrize("kernel_size", [3, 2])
def test_matches_numpy_reference(kernel_size):
    keras.utils.set_random_seed(0)
    rates = [1, 2, 5]
    layer = DGCNN(rates, kernel_size=kernel_size)
    rng = np.random.RandomState(0)
    x = rng.randn(2, 11, 6).astype("float32")
    mask = np.array([[1] * 11, [1] * 7 + [0] * 4], "int32")
    out = ops.convert_to_numpy(layer(x, mask=mask))
    # Non-zero biases, so that a dropped bias would show.
    weights = [w + 0.1 * rng.randn(*w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    out = ops.convert_to_numpy(layer(x, mask=mask))
    blocks = list(zip(weights[0::2], weights[1::2]))
    for row in range(2):
        np.testing.assert_allclose(out[row], _reference(x[row], mask[row], blocks, rates),
                                   rtol=0, atol=1e-5)
    assert np.all(out[1, 7:] == 0)


def test_padding_invariance():
    keras.utils.set_random_seed(1)
    layer = DilatedGatedConv1D(dilation_rate=2)
    rng = np.random.RandomState(1)
    x = rng.randn(1, 5, 4).astype("float32")
    alone = ops.convert_to_numpy(layer(x, mask=np.ones((1, 5), "int32")))
    # The same 5 tokens followed by 6 positions of garbage, masked out.
    padded = np.concatenate([x, 100 * rng.randn(1, 6, 4).astype("float32")], axis=1)
    mask = np.array([[1] * 5 + [0] * 6], "int32")
    out = ops.convert_to_numpy(layer(padded, mask=mask))
    np.testing.assert_allclose(out[:, :5], alone, rtol=0, atol=1e-6)
    assert np.all(out[:, 5:] == 0)


def test_in_a_model_and_serialisation(tmp_path):
    keras.utils.set_random_seed(2)
    tokens = keras.Input((None,), dtype="int32")
    hidden = keras.layers.Embedding(20, 8)(tokens)
    mask = ops.not_equal(tokens, 0)
    out = DGCNN([1, 2], gate_dropout=0.1)(hidden, mask=mask)
    model = keras.Model(tokens, keras.layers.Dense(3)(out))
    ids = np.array([[3, 4, 5, 0], [7, 8, 0, 0]], "int32")
    expected = model.predict(ids, verbose=0)
    path = os.path.join(tmp_path, "dgcnn.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=False)
    np.testing.assert_allclose(loaded.predict(ids, verbose=0), expected, atol=1e-6)
    model.compile("adam", "mse")
    model.fit(ids, np.zeros((2, 4, 3)), epochs=1, verbose=0)  # trainable end to end


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        DGCNN([])
    with pytest.raises(ValueError, match=">= 1"):
        DilatedGatedConv1D(dilation_rate=0)
