"""UniLM seq2seq with BERT: paper abstract -> title on CSL, ROUGE / BLEU on a held-out part.

The UniLM recipe (Dong et al. 2019, arXiv:1905.03197; kexue.fm/archives/6933), as
bert4keras's ``task_seq2seq_autotitle_csl.py``: one BERT reads ``[CLS] abstract [SEP]
title [SEP]`` with segment ids 0 / 1; ``application="unilm"`` makes the abstract
(segment 0) attend bidirectionally and the title (segment 1) causally, and the MLM head
(tied to the token embedding) predicts each title token from the position before it.
The loss is the cross-entropy on the title tokens only (segment 1, shifted by one). The
vocabulary is simplified like bert4keras (``load_vocab(simplified=True)`` drops tokens
a Chinese model never produces from text; ``keep_tokens`` slices the checkpoint's
embedding rows to match), which shrinks the output layer by a third.

Titles of the held-out pairs are decoded by beam search with
`kerasformer.generation.generate` (one compiled program with a KV cache: the abstract
is encoded once, each new title token costs one token of compute) and scored with
character-level ROUGE-1/2/L F1 and sentence BLEU-4 (NLTK's method1 smoothing), as in
bert4keras's CSL example (which used the ``rouge`` package's scores; ROUGE here is the plain
F1 of Lin 2004). CSL's train.tsv is not in the data folder here; the 4,000
pairs used are the dev/test files of two releases of the same dataset (15 repeated titles
dropped), a held-out part of which is scored.

Data (Apache-2.0): ``/work/shared/data/csl_title`` (``to title<TAB>abstract<TAB>title``)
and ``/work/shared/data/clge_csl`` (``title<TAB>abstract``); ``--data`` takes other
TSV files or folders in either layout (with two columns, the shorter one is the title).

    # a real checkpoint (Google TF prefix + config, or a directory; it needs the MLM
    # head: Google's chinese_L-12_H-768_A-12, RoBERTa-wwm-ext, or HF BertForMaskedLM)
    KERAS_BACKEND=jax python examples/task_seq2seq_autotitle_unilm.py \\
        --checkpoint ~/chinese_L-12_H-768_A-12/bert_model.ckpt \\
        --config ~/chinese_L-12_H-768_A-12/bert_config.json --epochs 10

    # no checkpoint: a small random BERT (2 layers, hidden 128) trained from scratch for
    # 2 epochs (metrics are low: a model that has never read Chinese learns mostly
    # frequent title words). ~4-5 CPU-minutes: 3.5 min on JAX, 2.3 min on TensorFlow on
    # 2 cores (ROUGE-L ~0.09-0.10, BLEU ~0.013).
    KERAS_BACKEND=jax python examples/task_seq2seq_autotitle_unilm.py
"""
import argparse
import collections
import math
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.generation import generate
from kerasformer.snippets import DataGenerator, sequence_padding
from kerasformer.tokenizers import Tokenizer, load_vocab

HERE = os.path.dirname(os.path.abspath(__file__))


def shared_data(*parts):
    """A path under the shared data folder (``../shared/data`` from the project root)."""
    local = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", *parts))
    return local if os.path.exists(local) else os.path.join("/work/shared/data", *parts)


DEFAULT_DATA = [shared_data("csl_title"), shared_data("clge_csl")]
DEFAULT_VOCAB = shared_data("vocab", "chinese_bert", "vocab.txt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="BERT checkpoint: Google TF prefix (bert_model.ckpt), "
                   "safetensors / pytorch_model.bin file or a directory; default: a small "
                   "random BERT")
    p.add_argument("--config", help="config JSON (bert_config.json or HF config.json); "
                   "default: the one next to --checkpoint")
    p.add_argument("--model", default="bert", help="kerasformer model name (bert, roberta, "
                   "nezha, roformer...)")
    p.add_argument("--vocab", default=DEFAULT_VOCAB, help="WordPiece vocab.txt")
    p.add_argument("--data", action="append", help="TSV file or folder (repeatable); "
                   "default: csl_title + clge_csl")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: 10 with a checkpoint, 2 for the random model")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None,
                   help="Adam learning rate; default 2e-5 with a checkpoint, 1e-3 without")
    p.add_argument("--maxlen", type=int, default=None,
                   help="max tokens of [CLS] abstract [SEP] title [SEP]; default 256 with a "
                   "checkpoint, 128 for the random model (abstracts are truncated)")
    p.add_argument("--title-maxlen", type=int, default=32, help="max new tokens decoded")
    p.add_argument("--limit", type=int, default=None, help="use at most this many training "
                   "pairs (smoke tests)")
    p.add_argument("--eval-size", type=int, default=200, help="held-out pairs")
    p.add_argument("--num-beams", type=int, default=3)
    p.add_argument("--eval-batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="save the fine-tuned weights here (.weights.h5)")
    # Shape of the random model (ignored with --checkpoint).
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    args = p.parse_args(argv)
    pretrained = args.checkpoint is not None
    if args.epochs is None:
        args.epochs = 10 if pretrained else 2
    if args.lr is None:
        args.lr = 2e-5 if pretrained else 1e-3
    if args.maxlen is None:
        args.maxlen = 256 if pretrained else 128
    if args.maxlen <= args.title_maxlen + 3:
        p.error("--maxlen must leave room for the abstract after --title-maxlen")
    return args


# ------------------------------------------------------------------------------ data


def read_pairs(path):
    """(abstract, title) pairs of one TSV: ``to title<TAB>abstract<TAB>title`` (CSL) or
    two columns in either order (CLGE: ``title<TAB>abstract``; the shorter is the title)."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = [c.strip() for c in line.rstrip("\n").split("\t")]
            if len(cols) >= 3:
                cols = cols[-2:]
            if len(cols) != 2 or not all(cols):
                continue
            a, b = cols
            pairs.append((a, b) if len(a) >= len(b) else (b, a))
    return pairs


def load_data(paths):
    """All pairs of the given files / folders, without repeated titles."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.endswith((".tsv", ".txt")))
        else:
            files.append(path)
    if not files:
        raise SystemExit(f"no .tsv files in {paths}")
    seen, pairs = set(), []
    for path in files:
        for abstract, title in read_pairs(path):
            if title not in seen:
                seen.add(title)
                pairs.append((abstract, title))
    return pairs, files


class TitleGenerator(DataGenerator):
    """Batches of ``[CLS] abstract [SEP] title [SEP]`` ids and segment ids. The target
    packs token ids and segment ids ([batch, seq_len, 2]) for the loss. Batches are
    padded to a multiple of 32 tokens so that few shapes are compiled."""

    def __init__(self, data, tokenizer, maxlen, batch_size):
        super().__init__(data, batch_size)
        self.tokenizer, self.maxlen = tokenizer, maxlen

    def __iter__(self, random=False):
        tokens, segments = [], []
        for is_end, (abstract, title) in self.sample(random):
            t, s = self.tokenizer.encode(abstract, title, maxlen=self.maxlen)
            tokens.append(t)
            segments.append(s)
            if len(tokens) == self.batch_size or is_end:
                length = -(-max(len(t) for t in tokens) // 32) * 32
                tokens = sequence_padding(tokens, length=length)
                segments = sequence_padding(segments, length=length)
                yield [tokens, segments], np.stack([tokens, segments], axis=-1)
                tokens, segments = [], []


def title_loss(y_true, y_pred):
    """Cross-entropy of the title tokens only: the output at position i predicts token
    i + 1, counted where token i + 1 is in segment 1 (the title and its [SEP]; padding
    has segment 0). Averaged over those tokens of the batch."""
    y_true = ops.cast(y_true, "int32")  # Keras casts targets to the loss dtype
    targets, mask = y_true[:, 1:, 0], ops.cast(y_true[:, 1:, 1], "float32")
    logits = ops.cast(y_pred[:, :-1], "float32")
    loss = ops.sparse_categorical_crossentropy(targets, logits, from_logits=True)
    return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)


# --------------------------------------------------------------------------- metrics


def ngram_counts(chars, n):
    return collections.Counter(tuple(chars[i:i + n]) for i in range(len(chars) - n + 1))


def rouge_n(hyp, ref, n):
    """ROUGE-N F1 of two character lists (clipped n-gram overlap)."""
    h, r = ngram_counts(hyp, n), ngram_counts(ref, n)
    overlap = sum((h & r).values())
    if not overlap:
        return 0.0
    p, rec = overlap / sum(h.values()), overlap / sum(r.values())
    return 2 * p * rec / (p + rec)


def lcs_length(a, b):
    """Length of the longest common subsequence (dynamic programming, O(len a * len b))."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hyp, ref):
    """ROUGE-L F1 (Lin 2004): LCS-based precision and recall."""
    lcs = lcs_length(hyp, ref)
    if not lcs:
        return 0.0
    p, rec = lcs / len(hyp), lcs / len(ref)
    return 2 * p * rec / (p + rec)


def sentence_bleu(hyp, ref, max_n=4, epsilon=0.1):
    """BLEU-4 of one hypothesis against one reference (Papineni et al. 2002) with
    NLTK's ``SmoothingFunction().method1``: an n-gram precision with no match counts
    ``epsilon / total``; 0 when no unigram matches."""
    if not hyp:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        h, r = ngram_counts(hyp, n), ngram_counts(ref, n)
        matches, total = sum((h & r).values()), max(1, sum(h.values()))
        if n == 1 and matches == 0:
            return 0.0
        log_precision += math.log((matches or epsilon) / total) / max_n
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * math.exp(log_precision)


def chars(text):
    """Characters of a title, whitespace dropped (the tokenizer's decode may add
    spaces between Latin words and CJK characters)."""
    return [c for c in text if not c.isspace()]


# ----------------------------------------------------------------------------- model


def build_model(args, keep_tokens, vocab_size):
    common = dict(model=args.model, application="unilm", keep_tokens=keep_tokens,
                  with_mlm="linear", return_keras_model=False)
    if args.checkpoint:
        return build_transformer_model(args.config, args.checkpoint, **common)
    keras.utils.set_random_seed(args.seed)
    return build_transformer_model(
        vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
        max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu", **common,
    )


def decode_titles(transformer, tokenizer, abstracts, args):
    """Beam-search titles of a list of abstracts, `eval_batch_size` at a time."""
    end_id = tokenizer._token_end_id
    titles = []
    source_maxlen = args.maxlen - args.title_maxlen
    for start in range(0, len(abstracts), args.eval_batch_size):
        batch = abstracts[start:start + args.eval_batch_size]
        encoded = [tokenizer.encode(a, maxlen=source_maxlen) for a in batch]
        ids = generate(transformer, [t for t, _ in encoded], [s for _, s in encoded],
                       max_new_tokens=args.title_maxlen, strategy="beam",
                       num_beams=args.num_beams, end_id=end_id, min_new_tokens=1)
        for row in ids.tolist():
            if end_id in row:
                row = row[:row.index(end_id)]
            titles.append(tokenizer.decode(row))
    return titles


def evaluate(transformer, tokenizer, data, args):
    start = time.perf_counter()
    predictions = decode_titles(transformer, tokenizer, [a for a, _ in data], args)
    seconds = time.perf_counter() - start
    totals = collections.Counter()
    for prediction, (_, title) in zip(predictions, data):
        hyp, ref = chars(prediction), chars(title)
        totals["rouge-1"] += rouge_n(hyp, ref, 1)
        totals["rouge-2"] += rouge_n(hyp, ref, 2)
        totals["rouge-l"] += rouge_l(hyp, ref)
        totals["bleu"] += sentence_bleu(hyp, ref)
    metrics = {k: totals[k] / len(data) for k in ("rouge-1", "rouge-2", "rouge-l", "bleu")}
    return metrics, predictions, seconds


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    np.random.seed(args.seed)
    pairs, files = load_data(args.data or DEFAULT_DATA)
    order = np.random.RandomState(args.seed).permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    if len(pairs) <= args.eval_size:
        raise SystemExit(f"only {len(pairs)} pairs: fewer than --eval-size + 1")
    valid, train = pairs[:args.eval_size], pairs[args.eval_size:]
    if args.limit:
        train = train[:args.limit]
    print(f"data: {len(train)} training / {len(valid)} held-out pairs from {', '.join(files)}")

    token_dict, keep_tokens = load_vocab(args.vocab, simplified=True,
                                         startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    with open(args.vocab, encoding="utf-8") as f:
        full_vocab_size = sum(1 for _ in f)
    tokenizer = Tokenizer(token_dict, do_lower_case=True)

    transformer = build_model(args, keep_tokens, full_vocab_size)
    model = transformer.model
    print(f"backend: {keras.backend.backend()}; model: "
          f"{args.checkpoint or 'random BERT (seed %d)' % args.seed}, "
          f"{transformer.num_hidden_layers} layers, hidden {transformer.hidden_size}, "
          f"vocab {len(keep_tokens)} (simplified from {full_vocab_size}), "
          f"{model.count_params() / 1e6:.1f}M parameters")
    if not args.checkpoint:
        print("NOTE: no --checkpoint: a small random BERT trained from scratch for a few "
              "minutes; expect low ROUGE/BLEU and repetitive titles (fine-tune a pretrained "
              "Chinese BERT with --checkpoint for real titles).")

    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=title_loss)
    train_gen = TitleGenerator(train, tokenizer, args.maxlen, args.batch_size)
    train_start = time.perf_counter()
    model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), epochs=args.epochs,
              shuffle=False, verbose=2)  # the generator shuffles
    train_seconds = time.perf_counter() - train_start
    if args.save:
        model.save_weights(args.save)

    metrics, predictions, eval_seconds = evaluate(transformer, tokenizer, valid, args)
    print("\nexamples (held-out):")
    for prediction, (abstract, title) in list(zip(predictions, valid))[:5]:
        print(f"  abstract : {abstract[:60]}...")
        print(f"  title    : {title}")
        print(f"  generated: {prediction}")
    print(f"\nheld-out {len(valid)} pairs, beam search (num_beams={args.num_beams}), "
          "character level:")
    print("  " + "  ".join(f"{k}: {v:.4f}" for k, v in metrics.items()))
    print(f"time: training {train_seconds:.0f}s ({args.epochs} epochs x {len(train_gen)} "
          f"steps), decoding {eval_seconds:.1f}s ({len(valid)} titles, compile included), "
          f"total {time.perf_counter() - started:.0f}s")
    return metrics


if __name__ == "__main__":
    main()
