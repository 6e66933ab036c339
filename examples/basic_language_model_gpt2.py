"""Text continuation with GPT-2: greedy, beam search and nucleus (top-p) sampling.

Loads a Hugging Face GPT-2 checkpoint directory (``config.json`` + ``model.safetensors``,
as ``GPT2LMHeadModel.save_pretrained`` writes it, e.g. a download of ``gpt2``) with
`build_transformer_model(..., model="gpt2")`, tokenizes the prompts with the original
GPT-2 byte-level BPE (``encoder.json`` + ``vocab.bpe``) and continues them with
`kerasformer.generation.generate`: one compiled XLA program per input shape, a
preallocated KV cache and the decoding loop inside ``keras.ops.while_loop``.

Without ``--checkpoint`` it builds a small GPT-2 with random weights (fixed seed) so the
script runs anywhere in seconds; the continuations are then gibberish (the script says
so) but the pipeline, the shapes and the speed are the real ones.

    KERAS_BACKEND=jax python examples/basic_language_model_gpt2.py
    KERAS_BACKEND=tensorflow python examples/basic_language_model_gpt2.py \\
        --checkpoint ~/models/gpt2 --max-new-tokens 40

The first call of each strategy traces and compiles (reported separately); a second call
with the same shapes reuses the compiled program, and its time gives new tokens/s (the
loop runs until every row has produced its end token or max_new_tokens). Top-p sampling
sorts the 50257 logits of every row at every step, which makes it several times slower
than greedy decoding on CPU.
"""
import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from kerasformer import build_transformer_model
from kerasformer.generation import generate
from kerasformer.tokenizers import GPT2Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_VOCAB_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "vocab",
                                                  "gpt2_bpe"))
if not os.path.isdir(DEFAULT_VOCAB_DIR):
    DEFAULT_VOCAB_DIR = "/work/shared/data/vocab/gpt2_bpe"

DEFAULT_PROMPTS = [
    "The meaning of life is",
    "In a shocking finding, scientists discovered a herd of unicorns living in",
    "Keras is a deep learning library that",
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="Hugging Face GPT-2 directory (config.json + "
                   "model.safetensors / pytorch_model.bin); default: a small random GPT-2")
    p.add_argument("--vocab-dir", default=DEFAULT_VOCAB_DIR,
                   help="directory with encoder.json + vocab.bpe (or HF vocab.json + "
                   "merges.txt); if --checkpoint holds vocab.json + merges.txt those are used")
    p.add_argument("--prompt", action="append", help="a prompt (repeatable); default: 3 "
                   "English prompts of different lengths, decoded as one batch")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--num-beams", type=int, default=4)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="CTRL penalty for greedy / beam / sampling (1.0: off)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (and random model seed)")
    p.add_argument("--no-timing", action="store_true",
                   help="skip the second (timed, already compiled) call of each strategy")
    # Shape of the random model (ignored with --checkpoint).
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--positions", type=int, default=256)
    return p.parse_args(argv)


def vocab_files(args):
    """(encoder.json, vocab.bpe) paths: the checkpoint's own HF files first."""
    candidates = []
    if args.checkpoint and os.path.isdir(args.checkpoint):
        candidates.append((args.checkpoint, "vocab.json", "merges.txt"))
    candidates += [(args.vocab_dir, "encoder.json", "vocab.bpe"),
                   (args.vocab_dir, "vocab.json", "merges.txt")]
    for folder, encoder, merges in candidates:
        a, b = os.path.join(folder, encoder), os.path.join(folder, merges)
        if os.path.isfile(a) and os.path.isfile(b):
            return a, b
    raise SystemExit(f"No GPT-2 vocabulary (encoder.json + vocab.bpe) in {args.vocab_dir!r}; "
                     "pass --vocab-dir")


def build_model(args, vocab_size):
    """The builder object (generation needs it) with a logits head."""
    if args.checkpoint:
        path = os.path.expanduser(args.checkpoint)
        config = os.path.join(path, "config.json") if os.path.isdir(path) else None
        transformer = build_transformer_model(config, path, model="gpt2",
                                              final_activation="linear",
                                              return_keras_model=False)
        return transformer, True
    keras.utils.set_random_seed(args.seed)
    transformer = build_transformer_model(
        model="gpt2", vocab_size=vocab_size, hidden_size=args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        max_position_embeddings=args.positions, final_activation="linear",
        return_keras_model=False,
    )
    return transformer, False


def end_token_id(args, tokenizer):
    """GPT-2's <|endoftext|>, or the checkpoint config's eos_token_id."""
    if args.checkpoint and os.path.isdir(args.checkpoint):
        config = os.path.join(args.checkpoint, "config.json")
        if os.path.isfile(config):
            with open(config) as f:
                eos = json.load(f).get("eos_token_id")
            if isinstance(eos, int):
                return eos
    return tokenizer.eos_token_id


def run(transformer, prompts, timing, **options):
    """Generate twice (compile + steady state); returns (ids, first s, second s)."""
    start = time.perf_counter()
    ids = generate(transformer, prompts, **options)
    first = time.perf_counter() - start
    second = None
    if timing:
        start = time.perf_counter()
        again = generate(transformer, prompts, **options)
        second = time.perf_counter() - start
        # Same inputs, same seed: the compiled program is deterministic.
        assert np.array_equal(ids, again)
    return ids, first, second


def main(argv=None):
    args = parse_args(argv)
    encoder_json, vocab_bpe = vocab_files(args)
    tokenizer = GPT2Tokenizer(encoder_json, vocab_bpe)
    start = time.perf_counter()
    transformer, pretrained = build_model(args, tokenizer.vocab_size)
    source = f"checkpoint {args.checkpoint}" if pretrained else f"random GPT-2 (seed {args.seed})"
    print(f"backend: {keras.backend.backend()}; model: {source}"
          f"; {transformer.num_hidden_layers} layers, hidden {transformer.hidden_size}, "
          f"{transformer.model.count_params() / 1e6:.1f}M parameters; built in "
          f"{time.perf_counter() - start:.1f}s")
    if not pretrained:
        print("NOTE: random weights - the continuations below are gibberish. Pass "
              "--checkpoint DIR (a Hugging Face GPT-2 directory) for real text.")

    texts = args.prompt or DEFAULT_PROMPTS
    prompts = [tokenizer.encode(t)[0] for t in texts]  # lists of different lengths
    end_id = end_token_id(args, tokenizer)
    n = args.max_new_tokens
    common = dict(max_new_tokens=n, end_id=end_id,
                  repetition_penalty=args.repetition_penalty)
    strategies = [
        ("greedy", dict(strategy="greedy")),
        (f"beam search (num_beams={args.num_beams})",
         dict(strategy="beam", num_beams=args.num_beams)),
        (f"top-p sampling (top_p={args.top_p}, temperature={args.temperature}, "
         f"seed={args.seed})",
         dict(strategy="sample", top_p=args.top_p, temperature=args.temperature,
              seed=args.seed)),
    ]
    results = []
    for label, options in strategies:
        ids, first, second = run(transformer, prompts, not args.no_timing, **common, **options)
        results.append((label, ids, first, second))

    for i, text in enumerate(texts):
        print(f"\n=== prompt {i}: {text!r} ({len(prompts[i])} tokens)")
        for label, ids, _, _ in results:
            print(f"--- {label}:")
            print(repr(tokenizer.decode(ids[i])))

    print(f"\nspeed ({len(prompts)} prompts x {n} new tokens, {keras.backend.backend()}):")
    for label, ids, first, second in results:
        ended = sum(end_id in row for row in ids.tolist())
        line = f"  {label}: first call (traces + compiles) {first:.2f}s"
        if second is not None:
            line += (f"; compiled call {second:.3f}s = {len(prompts) * n / second:,.0f} "
                     f"new tokens/s ({ended} of {len(ids)} rows reached the end token)")
        print(line)


if __name__ == "__main__":
    main()
