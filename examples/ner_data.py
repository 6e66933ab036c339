"""NER data shared by ``task_ner_globalpointer.py`` and ``task_ner_crf.py``: readers for
four real formats, span <-> token mapping through ``Tokenizer.rematch``, training labels
(GlobalPointer span matrices, BIO tags for a CRF) and the entity-level metric.

Every reader returns the same form: a list of ``(text, entities)`` where ``entities`` is a
list of ``(start, end, type)`` with ``start`` and ``end`` the character indices of the
first and the **last** character of the entity (``end`` inclusive, so ``text[start:end +
1]`` is the entity: CLUENER's own convention and the (start, end) cell of a GlobalPointer
matrix). Formats (``detect_format`` tells them apart by their content):

- ``conll``: CoNLL-2003, one ``word POS chunk NER`` line per word (any number of columns,
  the tag last), IOB2 or IOB1 tags, ``-DOCSTART-`` lines, blank lines between sentences.
  The text is the words joined by single spaces.
- ``cluener``: CLUENER2020 JSON lines ``{"text": ..., "label": {type: {entity: [[start,
  end_inclusive], ...]}}}``.
- ``char_bio``: one ``char tag`` (or ``char<TAB>tag``) line per character, blank lines
  between sentences: People's Daily (``example.dev`` / ``example.test``) and MSRA
  (``msra_bio.txt``). The text is the characters joined without spaces.

Tags are read with conlleval's chunk rules (an ``I-X`` that does not continue an ``X``
starts a new entity), and the same function turns a CRF's predicted tags back into spans,
so the metric is conlleval's entity-level micro F1 whatever the tokenization: it is
computed on character spans (exact type and boundaries), and a gold entity the model cannot
see (cut off by ``maxlen``, or with a boundary inside a word piece) counts as a miss.

The last part holds what the two scripts share besides the method: their options, data
and checkpoint loading, length-bucketed batches, prediction and the report (``run``).
"""
import collections
import json
import os
import re

import numpy as np

from common import carve_dev_split

#: The official MSRA test set (SIGHAN 2006) is the tail of msra_bio.txt from this chunk.
MSRA_TEST_START = 50658

_TAG = re.compile(r"^(O|[BIES]-\S+)$")


# ------------------------------------------------------------------------------ tags


def bio_spans(tags):
    """Entities of a tag sequence as ``(first, last, type)`` item indices (inclusive),
    with conlleval's chunk rules: ``B-X`` starts an entity, ``I-X`` continues an ``X``
    and otherwise starts one (IOB1 / a model's stray ``I``), ``O`` ends it. ``S-`` and
    ``E-`` (BIOES) are read as single / last items."""
    spans, current = [], None
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, _, kind = tag.partition("-")
        continues = current is not None and kind == current[2] and prefix in ("I", "E")
        if current is not None and not continues:
            spans.append(tuple(current))
            current = None
        if continues:
            current[1] = i
        elif prefix in ("B", "I", "S", "E"):
            current = [i, i, kind]
        if current is not None and prefix in ("S", "E"):
            spans.append(tuple(current))
            current = None
    return spans


def spans_to_tags(length, spans):
    """IOB2 tags of ``length`` items for ``(first, last, type)`` item spans (a later
    span overwrites an overlapping earlier one: BIO cannot nest)."""
    tags = ["O"] * length
    for first, last, kind in spans:
        tags[first] = f"B-{kind}"
        for i in range(first + 1, last + 1):
            tags[i] = f"I-{kind}"
    return tags


# --------------------------------------------------------------------------- readers


def _columns(path):
    """Blocks of whitespace-separated line columns, split at blank lines."""
    block = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n\r")
            if not line.strip():
                if block:
                    yield block
                block = []
            else:
                block.append(line)
    if block:
        yield block


def _tagged_examples(path, parse_line, separator):
    """``(text, entities)`` of a one-item-per-line tagged file; ``parse_line`` gives
    ``(item, tag)``; items are joined by ``separator``."""
    examples = []
    for block in _columns(path):
        items, tags = zip(*map(parse_line, block))
        if items[0] == "-DOCSTART-":
            continue
        starts, offset = [], 0
        for item in items:
            starts.append(offset)
            offset += len(item) + len(separator)
        text = separator.join(items)
        entities = [(starts[a], starts[b] + len(items[b]) - 1, kind)
                    for a, b, kind in bio_spans(tags)]
        examples.append((text, entities))
    return examples


def _word_and_tag(line):
    cols = line.split()
    return cols[0], cols[-1]


def _char_and_tag(line):
    # The character may itself be a space-like character: it is everything before the
    # last separator.
    item, _, tag = line.rstrip().rpartition("\t" if "\t" in line else " ")
    return item, tag.strip()


def read_conll(path):
    """CoNLL-2003 sentences (words joined by single spaces)."""
    return _tagged_examples(path, _word_and_tag, " ")


def read_char_bio(path):
    """``char tag`` sentences (People's Daily, MSRA), characters joined without spaces."""
    return _tagged_examples(path, _char_and_tag, "")


def read_cluener(path):
    """CLUENER JSON lines; rows without ``label`` (the unlabelled test set) have no
    entities. Spans whose text disagrees with the named entity are kept as given."""
    examples = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            entities = [(start, end, kind)
                        for kind, found in (row.get("label") or {}).items()
                        for spans in found.values() for start, end in spans]
            examples.append((row["text"], sorted(entities)))
    return examples


READERS = {"conll": read_conll, "char_bio": read_char_bio, "cluener": read_cluener}


def detect_format(path, sample_lines=200):
    """``"cluener"``, ``"conll"`` or ``"char_bio"`` from the first lines of a file, or
    None when it is none of them."""
    lines = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                lines.append(line.rstrip("\n\r"))
            if len(lines) >= sample_lines:
                break
    if not lines:
        return None
    if lines[0].lstrip().startswith("{"):
        try:
            row = json.loads(lines[0])
        except ValueError:
            return None
        return "cluener" if isinstance(row, dict) and "text" in row else None
    rows = [_char_and_tag(line) for line in lines]
    if not all(_TAG.match(tag) for _, tag in rows if _ != "-DOCSTART-"):
        return None
    if all(len(item) == 1 for item, _ in rows):
        return "char_bio"
    return "conll" if all(len(line.split()) >= 2 for line in lines) else None


def is_labelled(path):
    """False for a CLUENER-style JSON file whose first row has no ``label``."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    return not first.lstrip().startswith("{") or "label" in json.loads(first)


# ---------------------------------------------------------------------------- splits

# File names of each split, in order of preference.
_SPLIT_NAMES = {
    "train": ("train.txt", "train.json", "example.train", "train"),
    "dev": ("valid.txt", "dev.txt", "dev.json", "example.dev", "valid.json", "dev"),
    "test": ("test.txt", "test.json", "example.test", "test"),
}

NERData = collections.namedtuple("NERData", "train dev test types format name notes")

# Display names of the known data sets (by folder / file name), for the results table.
_NAMES = {"conll2003": "CoNLL-2003", "cluener2020": "CLUENER2020",
          "people_daily_ner": "People's Daily", "msra_bio.txt": "MSRA", "msra_ner": "MSRA"}


def _read(path):
    kind = detect_format(path)
    if kind is None:
        raise SystemExit(
            f"{path}: unknown NER format. Expected CoNLL columns (`word ... TAG` per line, "
            "IOB tags), `char TAG` per line (People's Daily / MSRA BIO), or CLUENER JSON "
            'lines {"text": ..., "label": {type: {entity: [[start, end], ...]}}}')
    return kind, READERS[kind](path)


def _folder_splits(folder):
    """``{split: path}`` of the known file names present in ``folder``."""
    present = set(os.listdir(folder))
    found = {}
    for split, names in _SPLIT_NAMES.items():
        for name in names:
            if name in present and os.path.isfile(os.path.join(folder, name)):
                found[split] = os.path.join(folder, name)
                break
    if "test" in found and not is_labelled(found["test"]):
        found.pop("test")
    return found


def load_ner_data(path):
    """Train and test sets of ``path`` (a folder or one file) with notes on the choice.

    - A folder: ``train`` and ``test`` files (CoNLL ``train.txt`` / ``test.txt``, People's
      Daily ``example.*``, CLUENER ``*.json``...). An unlabelled test set (CLUENER) is
      replaced by the dev set; with no train file (People's Daily here) the model trains
      on the dev set. A dev set left over (CoNLL ``valid.txt``) chooses the epoch (early
      stopping); otherwise 10% of the training examples (at most 1,000, fixed seed) are
      held out as the dev split, and a note says so.
    - One file (or a folder holding just one): ``msra_bio.txt`` (or any file with exactly MSRA's chunk count) is split
      at the official test start; any other file keeps its last 10% for testing.

    Returns:
        ``NERData(train, dev, test, types, format, name, notes)``; ``types`` sorted,
        from all splits.

    Raises:
        SystemExit: missing path, unknown format, or no usable split (with the reason).
    """
    if not os.path.exists(path):
        raise SystemExit(f"NER data not found at {path}; pass --data FOLDER_OR_FILE")
    notes = []
    name = os.path.basename(os.path.normpath(path))
    name = _NAMES.get(name, name)
    if os.path.isdir(path):
        files = _folder_splits(path)
        data_files = [f for f in os.listdir(path) if not f.endswith((".md", ".txt.gz"))
                      and f.upper() not in ("README.TXT", "LICENSE", "LICENSE.TXT")]
        if not files and len(data_files) == 1:  # e.g. msra_ner/msra_bio.txt
            return load_ner_data(os.path.join(path, data_files[0]))
        if "test" not in files and "dev" in files:
            files["test"] = files.pop("dev")
            notes.append(f"no labelled test set: evaluating on {os.path.basename(files['test'])}")
        if "train" not in files and "dev" in files:
            files["train"] = files.pop("dev")
            notes.append(f"no training set: training on {os.path.basename(files['train'])}")
        if "train" not in files or "test" not in files:
            raise SystemExit(
                f"{path}: need a training and a test (or dev) file; found "
                f"{sorted(os.path.basename(p) for p in files.values()) or 'none'} "
                f"(known names: {', '.join(sorted({n for v in _SPLIT_NAMES.values() for n in v}))})")
        kind, train = _read(files["train"])
        dev = None
        for split in ("test", "dev"):
            if split not in files:
                continue
            split_kind, examples = _read(files[split])
            if split_kind != kind:
                raise SystemExit(f"{files['train']} is {kind} but {files[split]} is "
                                 f"{split_kind}")
            test, dev = (examples, dev) if split == "test" else (test, examples)
        notes.insert(0, f"train: {files['train']}, test: {files['test']}"
                     + (f", dev: {files['dev']}" if dev is not None else ""))
    else:
        kind, examples = _read(path)
        if os.path.basename(path) == "msra_bio.txt" or len(examples) == 55289:
            cut = MSRA_TEST_START
            notes.append(f"MSRA: official test set = chunks {cut}.. of {len(examples)}")
        else:
            cut = len(examples) - max(1, len(examples) // 10)
            notes.append(f"one file: testing on its last {len(examples) - cut} examples")
        if not 0 < cut < len(examples):
            raise SystemExit(f"{path}: too few examples ({len(examples)}) to split")
        train, test, dev = examples[:cut], examples[cut:], None
    if dev is None:
        train, dev = carve_dev_split(train)
        notes.append(f"no dev split: {len(dev)} random training examples (seed 0) held "
                     "out as the dev split that chooses the epoch")
    types = sorted({t for _, ents in train + dev + test for _, _, t in ents})
    if not types:
        raise SystemExit(f"{path}: no entities found")
    return NERData(train, dev, test, types, kind, name, notes)


# ------------------------------------------------------------- span <-> token mapping

Encoded = collections.namedtuple("Encoded", "token_ids mapping starts ends")


def encode(tokenizer, text, maxlen):
    """Token ids of ``[CLS] text [SEP]`` (at most ``maxlen``) with the character
    indices of each token (``Tokenizer.rematch``; [] for [CLS] and [SEP]; a character
    missing from the vocabulary stays a token of its own, mapped to itself) and the
    inverse maps ``starts`` / ``ends``: first / last character index -> token index."""
    tokens = tokenizer.tokenize(text, maxlen=maxlen)
    mapping = tokenizer.rematch(text, tokens)
    starts = {chars[0]: i for i, chars in enumerate(mapping) if chars}
    ends = {chars[-1]: i for i, chars in enumerate(mapping) if chars}
    return Encoded(tokenizer.tokens_to_ids(tokens), mapping, starts, ends)


def token_spans(encoded, entities, types):
    """``(first_token, last_token, type_index)`` of the entities the tokens can express:
    both boundaries on token boundaries and inside the kept tokens. The others (cut by
    ``maxlen``, or a boundary inside a word piece) are dropped: the model never sees them
    and the metric counts them as misses."""
    index = {kind: k for k, kind in enumerate(types)}
    return [(encoded.starts[s], encoded.ends[e], index[kind])
            for s, e, kind in entities
            if s in encoded.starts and e in encoded.ends and encoded.starts[s] <= encoded.ends[e]]


def char_spans(encoded, spans, types):
    """Token spans ``(first, last, type_index)`` back to character entities ``(start,
    end_inclusive, type)``; spans touching a token with no characters ([CLS], [SEP])
    are dropped."""
    entities = set()
    for first, last, k in spans:
        if encoded.mapping[first] and encoded.mapping[last]:
            entities.add((encoded.mapping[first][0], encoded.mapping[last][-1], types[k]))
    return sorted(entities)


def gp_labels(length, spans, num_types):
    """Dense GlobalPointer targets [num_types, length, length]: 1 at (type, first, last)."""
    labels = np.zeros((num_types, length, length), dtype="float32")
    for first, last, k in spans:
        labels[k, first, last] = 1.0
    return labels


def tag_names(types):
    """CRF label names: ``O``, then ``B-t``, ``I-t`` for each type (B = 1 + 2k)."""
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def bio_label_ids(length, spans, types):
    """CRF targets: int32 [length], the IOB2 tag index of each token (``tag_names``)."""
    names = {name: i for i, name in enumerate(tag_names(types))}
    tags = spans_to_tags(length, [(a, b, types[k]) for a, b, k in spans])
    return np.array([names[t] for t in tags], dtype="int32")


def bio_ids_to_spans(tag_ids, types):
    """Token spans ``(first, last, type_index)`` of a predicted tag-id path."""
    names = tag_names(types)
    index = {kind: k for k, kind in enumerate(types)}
    return [(a, b, index[kind]) for a, b, kind in bio_spans([names[i] for i in tag_ids])]


# ---------------------------------------------------------------------------- metric


def entity_prf(gold, predicted):
    """Micro precision, recall and F1 of exact (start, end, type) matches.

    Args:
        gold, predicted: one iterable of entity tuples per example, aligned.

    Returns:
        dict ``precision``, ``recall``, ``f1`` (0 when undefined) and the counts
        ``gold``, ``predicted``, ``correct``.
    """
    n_gold = n_pred = n_correct = 0
    for g, p in zip(gold, predicted):
        g, p = set(g), set(p)
        n_gold += len(g)
        n_pred += len(p)
        n_correct += len(g & p)
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return dict(precision=precision, recall=recall, f1=f1,
                gold=n_gold, predicted=n_pred, correct=n_correct)


# ------------------------------------------------- plumbing shared by the two scripts


def add_arguments(parser, lr, epochs, batch_size, maxlen):
    """The command-line options common to both NER scripts, with their defaults."""
    parser.add_argument("--data", help="folder or file in one of the formats above "
                        "(default: ../shared/data/conll2003)")
    parser.add_argument("--checkpoint", help="BERT checkpoint: a directory (HF config.json "
                        "+ model.safetensors / pytorch_model.bin, or Google's bert_config.json "
                        "+ bert_model.ckpt) or a Google TF prefix, vocab.txt next to it "
                        "(default: all-MiniLM-L6-v2)")
    parser.add_argument("--model", default="bert", help="kerasformer model name of the "
                        "checkpoint (bert, roberta, nezha...)")
    parser.add_argument("--vocab", help="vocab.txt (default: the checkpoint's; with "
                        "--random-init the Chinese BERT vocab for Chinese data, MiniLM's for "
                        "CoNLL)")
    parser.add_argument("--random-init", action="store_true", help="a small randomly "
                        "initialised BERT instead of a checkpoint (tests of the data paths)")
    parser.add_argument("--layers", type=int, default=1, help="random BERT: layers")
    parser.add_argument("--hidden", type=int, default=64, help="random BERT: hidden size")
    parser.add_argument("--heads", type=int, default=2, help="random BERT: attention heads")
    from common import add_run_arguments
    add_run_arguments(parser, epochs)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--pad-to-longest", action="store_true",
                        help="pad every batch to the longest sentence: one sequence "
                        "length to compile (fastest on a GPU)")
    parser.add_argument("--length-multiple", type=int, default=16,
                        help="batches are padded to a multiple of this many tokens (fewer "
                        "compiled shapes with a larger one: 64 on a GPU)")
    parser.add_argument("--lr", type=float, default=lr, help="Adam learning rate (linear "
                        "decay to 0 over the run)")
    parser.add_argument("--maxlen", type=int, default=maxlen, help="max tokens per sentence "
                        "with [CLS] and [SEP]; entities cut off count as misses")
    parser.add_argument("--limit", type=int, help="use only the first N training examples")
    parser.add_argument("--eval-limit", type=int, help="score only the first N test examples")
    parser.add_argument("--seed", type=int, default=0)


def load_for_args(args):
    """``(data, tokenizer, config_path, weights_path, checkpoint_name)`` for the parsed
    options (``--limit`` / ``--eval-limit`` applied); exits with a message on bad input."""
    from common import (checkpoint_files, default_minilm_checkpoint, is_uncased,
                        shared_data)
    from kerasformer.tokenizers import Tokenizer

    data = load_ner_data(args.data or shared_data("conll2003"))
    data = data._replace(train=data.train[:args.limit] if args.limit else data.train,
                         dev=data.dev[:args.dev_limit] if args.dev_limit else data.dev,
                         test=data.test[:args.eval_limit] if args.eval_limit else data.test)
    if args.random_init:
        config = weights = None
        vocab = args.vocab or (
            os.path.join(default_minilm_checkpoint(), "vocab.txt") if data.format == "conll"
            else shared_data("vocab", "chinese_bert", "vocab.txt"))
        name = f"random BERT ({args.layers} layers, hidden {args.hidden})"
    else:
        config, weights, vocab = checkpoint_files(args.checkpoint or default_minilm_checkpoint())
        vocab = args.vocab or vocab
        name = ("all-MiniLM-L6-v2" if not args.checkpoint
                else os.path.basename(os.path.normpath(args.checkpoint)))
    if not os.path.exists(vocab):
        raise SystemExit(f"vocab not found at {vocab}; pass --vocab")
    uncased = is_uncased(config or vocab, vocab)
    tokenizer = Tokenizer(vocab, do_lower_case=uncased)
    if uncased and data.format == "conll":
        print("note: the checkpoint is uncased, so the capitalisation cue of English NER is "
              "lost (published CoNLL numbers use cased models)")
    return data, tokenizer, config, weights, name


def build_encoder(args, config, weights, vocab_size):
    """The BERT encoder as a `keras.Model` ``[token_ids, segment_ids] -> [b, n, hidden]``:
    the checkpoint's, or a small random one with ``--random-init``."""
    import keras

    from kerasformer import build_transformer_model

    keras.utils.set_random_seed(args.seed)
    try:
        if args.random_init:
            return build_transformer_model(
                model=args.model, vocab_size=vocab_size, hidden_size=args.hidden,
                num_hidden_layers=args.layers, num_attention_heads=args.heads,
                intermediate_size=4 * args.hidden, max_position_embeddings=512,
                type_vocab_size=2, hidden_act="gelu", dropout_rate=0.1)
        return build_transformer_model(config, weights, model=args.model)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"cannot load the checkpoint: {e}") from None


def token_mask(token_ids):
    """True at real tokens ([PAD] is id 0 in BERT vocabularies)."""
    from keras import ops
    return ops.not_equal(token_ids, 0)


def _inputs(rows, length, batch_rows=None):
    """Padded inputs of ``rows``; with ``batch_rows``, topped up with copies of the
    first row to that many rows (one compiled batch shape)."""
    from kerasformer.snippets import sequence_padding
    if batch_rows:
        rows = list(rows) + [rows[0]] * (batch_rows - len(rows))
    token_ids = sequence_padding([e.token_ids for e, _ in rows], length=length)
    # A tuple, not a list: TensorFlow's generator datasets take nested tuples only.
    return token_ids, np.zeros_like(token_ids)


def _padded_length(rows, maxlen, multiple=16):
    from common import bucket_length
    return bucket_length([len(e.token_ids) for e, _ in rows], multiple, maxlen)


def training_batches(encoded, batch_size, maxlen, make_target, seed, length=None,
                     multiple=16):
    """Endless ``((token_ids, segment_ids), targets)`` batches of similar lengths, padded
    to a multiple of ``multiple`` tokens (few compiled shapes) or to ``length`` when given,
    reshuffled every epoch; ``make_target(length, token_spans)`` gives one example's
    targets."""
    import keras

    from common import length_sorted_batches

    rng = np.random.RandomState(seed)
    lengths = [len(e.token_ids) for e, _ in encoded]
    while True:
        batches = [[encoded[i] for i in idx]
                   for idx in length_sorted_batches(lengths, batch_size, rng)]
        if keras.backend.backend() == "tensorflow":
            batches = _vary_first_two(
                batches, lambda rows: _padded_length(rows, maxlen, multiple))
        for rows in batches:
            if len(rows) < batch_size:  # top up: one batch shape to compile
                rows = rows + [encoded[i] for i in rng.randint(len(encoded),
                                                               size=batch_size - len(rows))]
            n = length or _padded_length(rows, maxlen, multiple)
            yield _inputs(rows, n), np.stack([make_target(n, s) for _, s in rows])


def _vary_first_two(batches, key):
    """``batches`` with a batch of another ``key`` (padded length) moved to second place
    when the first two share it: Keras's TensorFlow trainer fixes the shape of the data
    from the first two batches, and a dimension that differs between them becomes
    variable (else a later, longer batch fails with "Generator yielded an element of
    shape ... where an element of shape ... was expected"). Only done on TensorFlow, so
    the JAX batch order (and the measured results) stay as they were."""
    if len(batches) > 2 and key(batches[0]) == key(batches[1]):
        other = next((i for i in range(2, len(batches))
                      if key(batches[i]) != key(batches[0])), None)
        if other is not None:
            batches.insert(1, batches.pop(other))
    return batches


def predict_entities(predict, encoded, types, batch_size, maxlen, decode, length=None,
                     multiple=16):
    """Character entities of every encoded example: ``predict`` maps a batch of inputs
    (padded as in ``training_batches``) to outputs, ``decode(output_row, num_tokens)``
    one row to token spans."""
    from common import length_sorted_batches

    found = [None] * len(encoded)
    for idx in length_sorted_batches([len(e.token_ids) for e, _ in encoded], batch_size):
        rows = [encoded[i] for i in idx]
        padded = length or _padded_length(rows, maxlen, multiple)
        outputs = np.asarray(predict(_inputs(rows, padded, batch_size)))
        for i, output in zip(idx, outputs):
            spans = decode(output, len(encoded[i][0].token_ids))
            found[i] = char_spans(encoded[i][0], spans, types)
    return found


def run(script, description, args, build, make_target, decode, static_length=False):
    """Load, train with early stopping on the dev entity F1, evaluate, print and report
    one NER run.

    Args:
        script: file name of the calling example (for the results table).
        description: one line printed with the model summary.
        args: parsed ``add_arguments`` options.
        build: ``build(encoder, types, args, total_steps) -> (train_model,
            predict_fn)``; ``train_model`` compiled, ``predict_fn(inputs) -> outputs``.
        make_target: ``make_target(length, token_spans, types)`` -> one example's targets.
        decode: ``decode(output_row, num_tokens, types)`` -> token spans.
        static_length: pad every batch to the longest example (one sequence length
            for the whole run) instead of bucketing.

    Returns:
        the ``entity_prf`` dict of the test set.
    """
    import time

    import keras

    from common import fit_with_early_stopping, report_run, setup_precision

    started = time.perf_counter()
    setup_precision(args)
    data, tokenizer, config, weights, ckpt_name = load_for_args(args)
    types = data.types
    for note in data.notes:
        print("data:", note)
    encode_all = lambda examples: [  # noqa: E731
        (e, token_spans(e, ents, types))
        for e, ents in ((encode(tokenizer, text, args.maxlen), ents) for text, ents in examples)]
    train, dev, test = encode_all(data.train), encode_all(data.dev), encode_all(data.test)
    kept = sum(len(s) for _, s in train)
    total = sum(len(ents) for _, ents in data.train)
    print(f"data: {data.format}, {len(train)} training / {len(dev)} dev / {len(test)} test "
          f"examples, types {types}; {kept}/{total} training entities expressible in "
          f"tokens at maxlen {args.maxlen}")

    encoder = build_encoder(args, config, weights, tokenizer.vocab_size)
    steps = -(-len(train) // args.batch_size)
    model, predict = build(encoder, types, args, steps * args.epochs)
    print(f"backend: {keras.backend.backend()}; model: {ckpt_name}, {description}, "
          f"{model.count_params() / 1e6:.1f}M parameters; dtype policy "
          f"{keras.config.dtype_policy().name}")

    length = None
    if static_length or args.pad_to_longest:
        length = _padded_length(train + dev + test, args.maxlen, args.length_multiple)
        print(f"every batch is padded to {length} tokens")
    multiple = args.length_multiple

    def score(encoded, gold):
        found = predict_entities(predict, encoded, types, 64, args.maxlen,
                                 lambda out, n: decode(out, n, types), length, multiple)
        return entity_prf([ents for _, ents in gold], found)

    batches = training_batches(train, args.batch_size, args.maxlen,
                               lambda n, spans: make_target(n, spans, types), args.seed,
                               length, multiple)
    run_info = fit_with_early_stopping(model, batches, steps, args,
                                       lambda: score(dev, data.dev)["f1"], "dev_f1")

    eval_start = time.perf_counter()
    scores = score(test, data.test)
    wall = time.perf_counter() - started
    print(f"time: training {run_info['train_seconds']:.0f}s ({run_info['epochs_run']} epochs "
          f"x {steps} steps, dev scoring included), test evaluation "
          f"{time.perf_counter() - eval_start:.0f}s, total {wall:.0f}s")
    print(f"test: {scores['gold']} gold / {scores['predicted']} predicted / "
          f"{scores['correct']} correct entities")
    print(f"entity-level micro F1: {scores['f1']:.4f} (precision {scores['precision']:.4f}, "
          f"recall {scores['recall']:.4f}) on {len(test)} {data.name} test examples")
    split = "dev" if any("evaluating on" in n for n in data.notes) else "test"
    report_run(args, script, f"{data.name} {split}", ckpt_name,
               {"entity F1": scores["f1"]}, wall, run_info)
    return scores


def linear_decay_adam(lr, total_steps):
    """Adam whose learning rate falls linearly from ``lr`` to 0 over the run."""
    import keras
    schedule = keras.optimizers.schedules.PolynomialDecay(lr, max(1, total_steps), 0.0)
    return keras.optimizers.Adam(schedule)
