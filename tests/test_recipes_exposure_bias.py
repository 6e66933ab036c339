"""random_replace_tokens (exposure bias, kexue.fm/archives/7259): only the region changes,
at the requested rate, with allowed random tokens or with draws from the model's
prediction at the previous position (chi-square against the given distribution)."""
import numpy as np
import pytest

from kerasformer.snippets import random_replace_tokens

scipy_stats = pytest.importorskip("scipy.stats", reason="scipy runs the chi-square test")


def _unilm_batch(batch=200, length=30):
    rng = np.random.default_rng(0)
    token_ids = rng.integers(5, 50, size=(batch, length))
    segment_ids = np.zeros_like(token_ids)
    segment_ids[:, 12:] = 1
    return token_ids, segment_ids


def test_random_tokens_only_in_region_at_rate():
    token_ids, segment_ids = _unilm_batch()
    original = token_ids.copy()
    out = random_replace_tokens(token_ids, segment_ids == 1, 0.3, vocab_size=50,
                                exclude_ids=[0, 1, 2], rng=np.random.default_rng(1))
    np.testing.assert_array_equal(token_ids, original)  # input untouched
    np.testing.assert_array_equal(out[segment_ids == 0], original[segment_ids == 0])
    changed = (out != original)[segment_ids == 1]
    # A replacement equals the original with probability 1/47: the changed share is
    # 0.3 * 46/47 on average; 3600 positions give a standard error of ~0.008.
    assert abs(changed.mean() - 0.3 * 46 / 47) < 0.04
    assert not np.isin(out, [0, 1, 2]).any()
    np.testing.assert_array_equal(
        random_replace_tokens(token_ids, segment_ids == 1, 0.0, vocab_size=50), original)


def test_model_samples_follow_the_previous_prediction():
    batch, length, vocab = 3000, 4, 6
    token_ids = np.full((batch, length), 5)
    region = np.zeros((batch, length), bool)
    region[:, 2] = True
    p = np.array([0.1, 0.0, 0.2, 0.3, 0.4, 0.0])
    predictions = np.full((batch, length, vocab), 1.0 / vocab)
    predictions[:, 1] = p  # the prediction at position 1 is for the token at position 2
    out = random_replace_tokens(token_ids, region, 1.0, predictions=predictions,
                                exclude_ids=[0], rng=np.random.default_rng(2))
    np.testing.assert_array_equal(out[:, [0, 1, 3]], 5)
    counts = np.bincount(out[:, 2], minlength=vocab)
    expected = np.array([0, 0, 0.2, 0.3, 0.4, 0]) / 0.9  # id 0 excluded, renormalised
    assert counts[0] == counts[1] == counts[5] == 0
    _, p_value = scipy_stats.chisquare(counts[2:5], expected[2:5] * batch)
    assert p_value > 1e-3


def test_errors():
    ids = np.zeros((2, 3), int)
    with pytest.raises(ValueError, match="exactly one"):
        random_replace_tokens(ids, ids == 0, 0.5)
    with pytest.raises(ValueError, match="rate"):
        random_replace_tokens(ids, ids == 0, 1.5, vocab_size=4)
    with pytest.raises(ValueError, match="one \\[batch, seq_len\\] shape"):
        random_replace_tokens(ids, np.ones((2, 4), bool), 0.5, vocab_size=4)
    with pytest.raises(ValueError, match="do not match"):
        random_replace_tokens(ids, ids == 0, 0.5, predictions=np.ones((2, 4, 5)))
