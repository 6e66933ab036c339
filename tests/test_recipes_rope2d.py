"""2-D RoPE (kexue.fm/archives/8397) against a numpy build of the article's rotation
matrix R_(x,y) = diag(R_x, R_y), and the property that makes it relative: q.k scores
depend only on the 2-D offset of the two positions."""
import keras
import numpy as np
import pytest
from keras import ops

from kerasformer.layers import MultiHeadAttention2DRoPE
from kerasformer.ops import apply_rotary_2d, grid_positions


def _rotation_1d(position, dim, base=10000.0):
    """The d x d block-diagonal RoPE matrix of one position (RoFormer, Eq. 15):
    2x2 blocks [[cos, -sin], [sin, cos]] with angle position * base**(-2i/d)."""
    m = np.zeros((dim, dim))
    for i in range(dim // 2):
        theta = position * base ** (-2.0 * i / dim)
        c, s = np.cos(theta), np.sin(theta)
        m[2 * i:2 * i + 2, 2 * i:2 * i + 2] = [[c, -s], [s, c]]
    return m


def _rotation_2d(row, col, dim):
    """The article's R_(x,y): R_x on the first half of the dims, R_y on the second."""
    m = np.zeros((dim, dim))
    half = dim // 2
    m[:half, :half] = _rotation_1d(row, half)
    m[half:, half:] = _rotation_1d(col, half)
    return m


def test_grid_positions():
    np.testing.assert_array_equal(
        ops.convert_to_numpy(grid_positions(2, 3))[0],
        [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])


def test_matches_numpy_rotation_matrix():
    rng = np.random.RandomState(0)
    dim, heads = 16, 2
    positions = np.array([[[0, 0], [3, 1], [7, 12], [2, 5]]], "int32")
    x = rng.randn(1, 4, heads, dim).astype("float32")
    out = ops.convert_to_numpy(apply_rotary_2d(ops.convert_to_tensor(x), positions))
    expected = np.einsum("tij,tnj->tni",
                         np.stack([_rotation_2d(r, c, dim) for r, c in positions[0]]), x[0])
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-5)


def test_scores_depend_only_on_the_2d_offset():
    rng = np.random.RandomState(1)
    dim = 8
    q = rng.randn(1, 1, 1, dim).astype("float32")
    k = rng.randn(1, 1, 1, dim).astype("float32")

    def score(query_position, key_position):
        rq = apply_rotary_2d(q, np.array([[query_position]], "int32"))
        rk = apply_rotary_2d(k, np.array([[key_position]], "int32"))
        return float(ops.convert_to_numpy(ops.sum(rq * rk)))

    for (qr, qc), (kr, kc) in [((0, 0), (2, 5)), ((4, 1), (1, 3)), ((6, 6), (6, 2))]:
        reference = score((qr, qc), (kr, kc))
        for shift in [(1, 0), (0, 3), (5, 7)]:
            shifted = score((qr + shift[0], qc + shift[1]), (kr + shift[0], kc + shift[1]))
            assert shifted == pytest.approx(reference, abs=1e-4)
    # ... and do depend on each coordinate of the offset (not e.g. on their sum only).
    assert abs(score((0, 0), (1, 2)) - score((0, 0), (2, 1))) > 1e-3


def test_attention_layer_is_translation_invariant_on_a_grid():
    keras.utils.set_random_seed(0)
    layer = MultiHeadAttention2DRoPE(heads=2, head_size=8)
    x = np.random.RandomState(2).randn(1, 6, 16).astype("float32")
    positions = grid_positions(2, 3)
    out = ops.convert_to_numpy(layer(x, positions))
    assert out.shape == (1, 6, 16)
    # Translating the whole grid leaves every output unchanged; transposing it does not.
    moved = ops.convert_to_numpy(layer(x, positions + np.array([4, 9], "int32")))
    np.testing.assert_allclose(moved, out, rtol=0, atol=1e-5)
    swapped = ops.convert_to_numpy(layer(x, positions[..., ::-1]))
    assert np.abs(swapped - out).max() > 1e-3
    # Rebuilt from its config, with the same weights, it gives the same output.
    clone = MultiHeadAttention2DRoPE.from_config(layer.get_config())
    clone(x, positions)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(clone(x, positions)), out, atol=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="multiple of 4"):
        apply_rotary_2d(np.zeros((1, 2, 1, 6), "float32"), np.zeros((1, 2, 2), "int32"))
    with pytest.raises(ValueError, match="row, column"):
        apply_rotary_2d(np.zeros((1, 2, 1, 8), "float32"), np.zeros((1, 2), "int32"))
