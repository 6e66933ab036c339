"""Gibbs sampling from an MLM (arXiv:1902.04094): each step draws from the MLM softmax at
the resampled position (chi-square test against the model's own output on a tiny random
BERT), seeded runs reproduce, fixed tokens never change."""
import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer.sampling import gibbs_sample

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy runs the chi-square test")

VOCAB, MASK = 12, 3
TINY = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=24, max_position_embeddings=16, type_vocab_size=2,
            hidden_act="gelu", initializer_range=0.5)


@pytest.fixture(scope="module")
def mlm():
    keras.utils.set_random_seed(3)
    return build_transformer_model(**TINY, with_mlm=True)  # softmax output


def test_samples_follow_the_mlm_softmax(mlm):
    # One free position: every sample is one draw from p(x_2 | x_0, x_1, x_3, x_4).
    start = np.array([[1, 5, MASK, 7, 2]], "int32")
    expected = keras.ops.convert_to_numpy(
        mlm([start, np.zeros_like(start)], training=False))[0, 2].astype("float64")
    rows = 4000
    out = gibbs_sample(mlm, np.repeat(start, rows, axis=0), mask_id=MASK, steps=1, seed=0)
    counts = np.bincount(out[:, 2], minlength=VOCAB)
    # Pool the rare tokens so that every expected count is >= 5 (chi-square validity).
    common = expected * rows >= 5
    observed = np.append(counts[common], counts[~common].sum())
    wanted = np.append(expected[common], expected[~common].sum()) * rows
    keep = wanted > 0
    _, p_value = scipy_stats.chisquare(observed[keep], wanted[keep] * observed.sum()
                                       / wanted[keep].sum())
    assert p_value > 1e-3, (counts, expected)
    assert expected.max() < 0.9  # not a near-deterministic model: the test has power


@pytest.mark.parametrize("order", ["random", "sequential"])
def test_fixed_tokens_never_change_and_seeds_reproduce(mlm, order):
    start = np.array([[1, MASK, MASK, 6, MASK, MASK, 2],
                      [1, 8, MASK, MASK, MASK, 9, 2]], "int32")
    run = lambda seed: gibbs_sample(mlm, start, mask_id=MASK, steps=12, seed=seed,
                                    order=order, banned_ids=[0, MASK])
    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    fixed = start != MASK
    np.testing.assert_array_equal(a[fixed], start[fixed])
    assert not np.isin(a, [0, MASK]).any()  # banned ids are never drawn


def test_sequential_sweep_visits_every_free_position(mlm):
    start = np.array([[1, MASK, MASK, MASK, 2]], "int32")
    out = gibbs_sample(mlm, start, mask_id=MASK, steps=3, order="sequential",
                       banned_ids=[MASK])
    assert (out[0, 1:4] != MASK).all()


def test_errors(mlm):
    ids = np.array([[1, MASK, 2]], "int32")
    with pytest.raises(ValueError, match="order"):
        gibbs_sample(mlm, ids, mask_id=MASK, steps=1, order="gibbs")
    with pytest.raises(ValueError, match="temperature"):
        gibbs_sample(mlm, ids, mask_id=MASK, steps=1, temperature=0)
    with pytest.raises(ValueError, match="one shape"):
        gibbs_sample(mlm, ids, np.zeros((1, 4), "int32"), mask_id=MASK, steps=1)
