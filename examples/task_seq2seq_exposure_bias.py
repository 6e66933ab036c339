"""Exposure bias in seq2seq: UniLM abstract -> title on CSL, trained with and without
random replacement of teacher-forcing inputs, on the same budget.

Su, "Seq2Seq中Exposure Bias现象的浅析与对策" (kexue.fm/archives/7259): a decoder trained on
gold prefixes only never sees its own mistakes; replacing a fraction of the target-side
*input* tokens (labels unchanged) by random tokens or by the model's own samples
(:func:`kerasformer.snippets.random_replace_tokens`) trains it to continue from imperfect
prefixes. This script reuses ``task_seq2seq_autotitle_unilm.py`` (data, model, loss,
beam-search evaluation, character ROUGE/BLEU) and trains two models from the same seed:
``--rate 0`` and ``--rate R``.

Replacements here are random tokens. Model samples (``random_replace_tokens(...,
predictions=...)``) need the model's predictions on each batch *during* ``fit``, which a
Keras data generator cannot get on JAX (the trainer holds the weights); a custom training
loop can.

The default is a small random BERT on CPU (as in the UniLM example), so the numbers are
low and differences between the two runs are within one seed's noise; ``--checkpoint``,
more ``--epochs`` and several seeds are needed for a real comparison.

    KERAS_BACKEND=jax python examples/task_seq2seq_exposure_bias.py
"""
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from kerasformer.snippets import random_replace_tokens
from kerasformer.tokenizers import Tokenizer, load_vocab

import task_seq2seq_autotitle_unilm as unilm
from common import record_result


class ReplacingTitleGenerator(unilm.TitleGenerator):
    """UniLM batches whose title tokens (segment 1) are replaced at ``rate`` in the model
    input; the target (labels) keeps the original ids."""

    def __init__(self, *args, rate, vocab_size, special_ids, seed, **kwargs):
        super().__init__(*args, **kwargs)
        self.rate, self.vocab_size, self.special_ids = rate, vocab_size, special_ids
        self.rng = np.random.default_rng(seed)

    def __iter__(self, random=False):
        for (tokens, segments), target in super().__iter__(random):
            if self.rate > 0:
                tokens = random_replace_tokens(tokens, segments == 1, self.rate,
                                               vocab_size=self.vocab_size,
                                               exclude_ids=self.special_ids, rng=self.rng)
            yield [tokens, segments], target


def train_and_evaluate(args, rate, train, valid, tokenizer, keep_tokens, full_vocab_size):
    transformer = unilm.build_model(args, keep_tokens, full_vocab_size)
    model = transformer.model
    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=unilm.title_loss)
    special = [tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")]
    generator = ReplacingTitleGenerator(
        train, tokenizer, args.maxlen, args.batch_size, rate=rate,
        vocab_size=len(keep_tokens), special_ids=special, seed=args.seed)
    model.fit(generator.forfit(), steps_per_epoch=len(generator), epochs=args.epochs,
              shuffle=False, verbose=2)
    metrics, _, _ = unilm.evaluate(transformer, tokenizer, valid, args)
    return metrics


def main():
    argv = sys.argv[1:]
    rate, record = 0.25, True
    # Our own options, taken out before the UniLM example's parser sees the rest.
    if "--rate" in argv:
        i = argv.index("--rate")
        rate = float(argv[i + 1])
        del argv[i:i + 2]
    if "--no-record" in argv:
        argv.remove("--no-record")
        record = False
    args = unilm.parse_args(argv)
    started = time.perf_counter()
    pairs, files = unilm.load_data(args.data or unilm.DEFAULT_DATA)
    order = np.random.RandomState(args.seed).permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    valid, train = pairs[:args.eval_size], pairs[args.eval_size:]
    if args.limit:
        train = train[:args.limit]
    token_dict, keep_tokens = load_vocab(args.vocab, simplified=True,
                                         startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    with open(args.vocab, encoding="utf-8") as f:
        full_vocab_size = sum(1 for _ in f)
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    print(f"data: {len(train)} training / {len(valid)} held-out pairs from {', '.join(files)}")

    results = {}
    for r in (0.0, rate):
        metrics = train_and_evaluate(args, r, train, valid, tokenizer, keep_tokens,
                                     full_vocab_size)
        label = "without" if r == 0 else f"with (random tokens, rate {r})"
        print(f"{label}: " + "  ".join(f"{k}: {v:.4f}" for k, v in metrics.items()),
              flush=True)
        for k, v in metrics.items():
            results[f"{k} {label}"] = v
    wall = time.perf_counter() - started
    print(f"total {wall:.0f}s")
    if record:
        record_result("task_seq2seq_exposure_bias.py",
                      f"CSL {len(train)} train / {len(valid)} held-out",
                      args.checkpoint and os.path.basename(args.checkpoint)
                      or "random BERT (2x128)", args.epochs, results, wall)


if __name__ == "__main__":
    main()
