"""BERT-whitening (arXiv:2103.15316): kerasformer.snippets.compute_kernel_bias and
transform_and_normalize against an independent numpy version of the paper's formula
(covariance by hand, eigendecomposition instead of SVD), plus its defining property."""
import os

import numpy as np
import pytest

from kerasformer.snippets import (compute_kernel_bias, load_whitening, save_whitening,
                                  transform_and_normalize)


def _vectors(n=200, d=8, seed=0):
    # Correlated vectors with well separated variances (so eigenvectors are unique up to sign).
    rng = np.random.RandomState(seed)
    mixing = rng.randn(d, d) * np.linspace(3.0, 0.3, d)[:, None]
    return rng.randn(n, d) @ mixing + rng.randn(d) * 5


def _reference_whitening(x, k):
    """The paper's Eq.: mu = mean, Sigma = U Lambda U^T, W = U Lambda^{-1/2}, first k."""
    mu = x.mean(axis=0)
    centred = x - mu
    sigma = centred.T @ centred / (len(x) - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(sigma)
    order = np.argsort(eigenvalues)[::-1][:k]
    return eigenvectors[:, order] / np.sqrt(eigenvalues[order]), mu


@pytest.mark.parametrize("k", [None, 5, 1])
def test_kernel_bias_match_reference(k):
    x = _vectors()
    kernel, bias = compute_kernel_bias(x, n_components=k)
    ref_kernel, mu = _reference_whitening(x, x.shape[1] if k is None else k)
    assert kernel.shape == ref_kernel.shape and bias.shape == (1, x.shape[1])
    np.testing.assert_allclose(bias, -mu[None], rtol=0, atol=1e-12)
    # Eigenvectors are defined up to sign: align each reference column with ours.
    signs = np.sign((kernel * ref_kernel).sum(axis=0))
    np.testing.assert_allclose(kernel, ref_kernel * signs, rtol=0, atol=1e-10)


def test_whitened_covariance_is_identity_and_transform_normalises():
    x = _vectors()
    kernel, bias = compute_kernel_bias(x)
    white = (x + bias) @ kernel
    np.testing.assert_allclose(np.cov(white.T), np.eye(x.shape[1]), atol=1e-10)
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-10)
    out = transform_and_normalize(x, kernel, bias)
    np.testing.assert_allclose(out, white / np.linalg.norm(white, axis=1, keepdims=True),
                               atol=1e-12)
    kernel4, bias4 = compute_kernel_bias(x, 4)
    out4 = transform_and_normalize(x, kernel4, bias4)
    assert out4.shape == (len(x), 4)
    np.testing.assert_allclose(np.linalg.norm(out4, axis=1), 1.0, atol=1e-12)
    # Without a whitening only the normalisation is applied.
    np.testing.assert_allclose(transform_and_normalize(x),
                               x / np.linalg.norm(x, axis=1, keepdims=True), atol=1e-12)


def test_errors():
    x = _vectors(n=4, d=8)
    with pytest.raises(ValueError, match="rank"):
        compute_kernel_bias(x)  # 4 vectors span at most 3 centred directions
    kernel, _ = compute_kernel_bias(x, n_components=3)
    assert kernel.shape == (8, 3)
    with pytest.raises(ValueError, match="n_components"):
        compute_kernel_bias(x, n_components=9)
    with pytest.raises(ValueError, match=r"\[n >= 2, d\]"):
        compute_kernel_bias(x[:1])
    with pytest.raises(ValueError, match="do not fit"):
        transform_and_normalize(x[:, :5], *compute_kernel_bias(_vectors(), 3))


def test_save_load_round_trip_and_atomic(tmp_path, monkeypatch):
    x = _vectors()
    kernel, bias = compute_kernel_bias(x, 3)
    path = str(tmp_path / "whitening.npz")
    save_whitening(path, kernel, bias)
    loaded_kernel, loaded_bias = load_whitening(path)
    np.testing.assert_array_equal(loaded_kernel, kernel)
    np.testing.assert_array_equal(loaded_bias, bias)
    before = open(path, "rb").read()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        save_whitening(path, kernel * 2, bias)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["whitening.npz"]  # no temporary file left behind
