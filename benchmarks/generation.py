"""Generation benchmark: compiled KV-cache decoding against transformers and keras-hub.

GPT-2 with 6 layers, hidden 512, 8 heads, vocabulary 50257 and random weights (built once
by ``transformers`` with a fixed seed and ``save_pretrained``; every implementation loads
those same weights), batch 4, prompts of 32 tokens, 64 new tokens, greedy decoding:

- kerasformer ``generate`` on JAX and on TensorFlow (one backend per subprocess);
- transformers ``GPT2LMHeadModel.generate`` on torch CPU, with the KV cache and without
  (``use_cache=False``: the whole prefix is recomputed every step);
- keras-hub ``GPT2CausalLM`` (if installed) on the same backend as kerasformer, its
  ``GPT2Backbone`` loaded from the same Hugging Face directory, compiled with
  ``sampler="greedy"``.

UniLM (Dong et al. 2019, arXiv:1905.03197): a BERT of the same size (vocabulary 21128,
``BertForMaskedLM`` weights from transformers) built with ``application="unilm"``,
sources of 32 tokens, 64 new tokens, greedy: ``generate`` (cached) against the recompute
path of bert4keras's ``AutoRegressiveDecoder`` (the keras.Model run on the whole prefix
every step with ``predict_on_batch``, the prefix right-padded to a multiple of 16 tokens so
that 5 shapes compile, the last real position taken, argmax in NumPy; batched over the 4
rows).

Every implementation is timed on its first call (tracing + XLA compilation for the
compiled ones) separately from steady-state calls (median of the repetitions after a
warm-up). Metric: new tokens/s = batch * 64 / seconds per call. The token ids of every
implementation are compared with transformers' greedy ids (same weights), and UniLM's
cached ids with the recompute path's.

    python benchmarks/generation.py            # full run, refreshes benchmarks/RESULTS.md
    python benchmarks/generation.py --quick    # fewer repetitions, no RESULTS.md update

Targets: kerasformer >= 2.5x transformers with cache, >= keras-hub on the same backend,
UniLM cached >= 10x the recompute path.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from results_md import replace_section

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
BEGIN, END = "<!-- generation:begin -->", "<!-- generation:end -->"
NOTES_BEGIN, NOTES_END = "<!-- generation-notes:begin -->", "<!-- generation-notes:end -->"
DEFAULT_NOTES = "(no hand-written notes yet)"

BATCH, PROMPT, NEW = 4, 32, 64
GPT2_SHAPE = dict(vocab_size=50257, n_positions=1024, n_embd=512, n_layer=6, n_head=8)
BERT_SHAPE = dict(vocab_size=21128, hidden_size=512, num_hidden_layers=6,
                  num_attention_heads=8, intermediate_size=2048,
                  max_position_embeddings=512, type_vocab_size=2)
EOS = 50256


def log(*args):
    print(f"[{time.strftime('%H:%M:%S')}]", *args, file=sys.stderr, flush=True)


def gpt2_prompts():
    import numpy as np

    # Any ids but <|endoftext|>.
    return np.random.RandomState(0).randint(0, EOS, size=(BATCH, PROMPT)).astype("int32")


def unilm_sources():
    import numpy as np

    body = np.random.RandomState(1).randint(104, BERT_SHAPE["vocab_size"],
                                            size=(BATCH, PROMPT - 2))
    cls = np.full((BATCH, 1), 101)
    sep = np.full((BATCH, 1), 102)
    return np.concatenate([cls, body, sep], axis=1).astype("int32")


def timed(fn, reps):
    """(first-call seconds, [steady-state seconds], first result)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, times, result


def record(label, first, times, ids, **extra):
    import numpy as np

    ids = np.asarray(ids)
    assert ids.shape == (BATCH, NEW), (label, ids.shape)
    return dict(label=label, first_s=first, times=times, ids=ids.tolist(), **extra)


# ------------------------------------------------------------------------- setup


def setup(workdir):
    """Random GPT-2 and BERT (MLM head) weights saved by transformers."""
    import torch
    import transformers

    gpt2_dir, bert_dir = os.path.join(workdir, "gpt2"), os.path.join(workdir, "bert")
    torch.manual_seed(0)
    config = transformers.GPT2Config(**GPT2_SHAPE, bos_token_id=EOS, eos_token_id=EOS)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(gpt2_dir)
    torch.manual_seed(1)
    config = transformers.BertConfig(**BERT_SHAPE, hidden_act="gelu")
    transformers.BertForMaskedLM(config).eval().save_pretrained(bert_dir)
    return {"torch": torch.__version__, "transformers": transformers.__version__}


# ----------------------------------------------------------------------- workers


def transformers_runner(workdir):
    """(run(use_cache) -> new ids [batch, 64], model) for transformers' GPT-2."""
    import torch
    import transformers

    model = transformers.GPT2LMHeadModel.from_pretrained(os.path.join(workdir, "gpt2")).eval()
    # Always 64 new tokens: no end token (as kerasformer's end_id=None).
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = EOS
    ids = torch.tensor(gpt2_prompts(), dtype=torch.long)

    def run(use_cache=True):
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=NEW, min_new_tokens=NEW, use_cache=use_cache)
        return out[:, PROMPT:].numpy()

    return run, model


def worker_transformers(workdir, reps, args):
    import torch

    run, model = transformers_runner(workdir)
    results = []
    first, times, out = timed(run, reps)
    results.append(record("transformers (torch): GPT2LMHeadModel.generate, KV cache "
                          "(own process)", first, times, out, key="hf_cache"))
    # One call (nothing to compile; the cached runs warmed torch up).
    start = time.perf_counter()
    out = run(False)
    seconds = time.perf_counter() - start
    results.append(record("transformers (torch): generate(use_cache=False), recompute",
                          seconds, [seconds], out, key="hf_nocache"))
    meta = {"torch_threads": torch.get_num_threads(),
            "attn_implementation": getattr(model.config, "_attn_implementation", None)}
    return results, meta


def worker_keras(workdir, reps, args):
    import keras
    import numpy as np

    from kerasformer import build_transformer_model
    from kerasformer.generation import generate
    from kerasformer.snippets import AutoRegressiveDecoder

    class TakeAt(keras.layers.Layer):
        """x[b, index[b]] for x [batch, seq_len, vocab] and index [batch]."""

        def call(self, x, index):
            index = keras.ops.broadcast_to(
                keras.ops.reshape(keras.ops.cast(index, "int32"), (-1, 1, 1)),
                (keras.ops.shape(x)[0], 1, keras.ops.shape(x)[2]))
            return keras.ops.take_along_axis(x, index, axis=1)[:, 0]

    class GreedyDecoder(AutoRegressiveDecoder):
        """bert4keras's seq2seq decoder as users write it: the whole prefix through the
        model every step, generated tokens in segment 1."""

        def __init__(self, model, **kwargs):
            super().__init__(**kwargs)
            self.model = model

        @AutoRegressiveDecoder.wraps(default_rtype="probas")
        def predict(self, inputs, output_ids, states):
            token_ids, segment_ids = inputs
            token_ids = np.concatenate([token_ids, output_ids], 1)
            segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
            return keras.ops.convert_to_numpy(
                self.last_token(self.model)([token_ids, segment_ids]))

    backend = keras.backend.backend()
    results, meta = [], {"keras": keras.__version__}
    prompts = gpt2_prompts()
    gpt2_dir = os.path.join(workdir, "gpt2")

    # kerasformer GPT-2, keras-hub GPT2CausalLM and transformers, timed in interleaved
    # rounds so that a load change on the (shared) machine hits all alike.
    gpt2 = build_transformer_model(os.path.join(gpt2_dir, "config.json"), gpt2_dir,
                                   model="gpt2", final_activation="linear",
                                   return_keras_model=False)
    runs = {"kf": lambda: generate(gpt2, prompts, max_new_tokens=NEW)}
    labels = {"kf": f"kerasformer {backend}: generate (compiled, KV cache)"}
    try:
        import keras_hub

        meta["keras_hub"] = keras_hub.__version__
        backbone = keras_hub.models.GPT2Backbone.from_preset(gpt2_dir)
        lm = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        lm.compile(sampler="greedy")
        hub_inputs = {
            "token_ids": np.concatenate([prompts, np.zeros((BATCH, NEW), "int32")], axis=1),
            "padding_mask": np.concatenate([np.ones((BATCH, PROMPT), bool),
                                            np.zeros((BATCH, NEW), bool)], axis=1),
        }

        def hub():
            out = lm.generate(hub_inputs, stop_token_ids=None)
            return np.asarray(out["token_ids"])[:, PROMPT:]

        runs["hub"] = hub
        labels["hub"] = f"keras-hub {backend}: GPT2CausalLM.generate (sampler='greedy')"
    except ImportError:
        meta["keras_hub"] = None
    try:
        # transformers in the same rounds: its ratio is measured under the same load.
        runs["hfr"], _ = transformers_runner(workdir)
        labels["hfr"] = f"transformers (torch): generate, KV cache (rounds of the {backend} run)"
    except ImportError:
        pass
    first, times, ids = {}, {k: [] for k in runs}, {}
    for key, fn in runs.items():
        start = time.perf_counter()
        ids[key] = fn()
        first[key] = time.perf_counter() - start
        log(f"{labels[key]}: first call {first[key]:.2f}s")
    for _ in range(reps):
        for key, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    for key in runs:
        results.append(record(labels[key], first[key], times[key], ids[key],
                              key=f"{key}_{backend}"))

    # UniLM: cached generate against the recompute-the-prefix path.
    bert_dir = os.path.join(workdir, "bert")
    unilm = build_transformer_model(os.path.join(bert_dir, "config.json"), bert_dir,
                                    model="bert", application="unilm",
                                    return_keras_model=False)
    sources = unilm_sources()
    segments = np.zeros_like(sources)
    first_c, times_c, cached = timed(
        lambda: generate(unilm, sources, segments, max_new_tokens=NEW), reps)
    results.append(record(f"kerasformer {backend}: UniLM generate (compiled, KV cache)",
                          first_c, times_c, cached, key=f"unilm_cached_{backend}"))

    # bert4keras's AutoRegressiveDecoder recipe, batched over the 4 rows: every step runs
    # the whole model (MLM head on every position) on source + tokens so far (segment 1
    # for generated tokens) and takes the argmax at the last real position. The prefix
    # is right-padded to a multiple of 16 tokens (segment 1 padding: later causal
    # positions, invisible to the real ones) so `predict_on_batch` compiles 5 shapes
    # instead of 64 (op-by-op eager execution on JAX compiles every op for every new
    # length: ~500 s for the first call here).
    index = keras.Input(shape=(), dtype="int32", name="Input-Index")
    picked = TakeAt()(unilm.model.outputs[0], index)
    recompute_model = keras.Model(unilm.model.inputs + [index], picked)

    def recompute():
        tokens, out = sources, []
        for _ in range(NEW):
            length = tokens.shape[1]
            width = -(-length // 16) * 16
            padded = np.zeros((BATCH, width), "int32")
            padded[:, :length] = tokens
            segs = np.ones((BATCH, width), "int32")
            segs[:, :PROMPT] = 0
            probas = np.asarray(recompute_model.predict_on_batch(
                [padded, segs, np.full((BATCH,), length - 1, "int32")]))
            token = probas.argmax(axis=-1).astype("int32")[:, None]
            out.append(token)
            tokens = np.concatenate([tokens, token], axis=1)
        return np.concatenate(out, axis=1)

    first_r, times_r, recomputed = timed(recompute, 1)
    results.append(record(f"kerasformer {backend}: UniLM recompute, compiled batched (full "
                          "forward per step, predict_on_batch, prefix padded to x16)", first_r,
                          times_r, recomputed, key=f"unilm_recompute_{backend}"))
    if backend != "jax" or args.eager_recompute_jax:
        decoder = GreedyDecoder(unilm.model, start_id=None, end_id=-1, maxlen=NEW)

        def literal():
            return np.stack([decoder.beam_search([s, g], topk=1) for s, g in
                             zip(sources, segments)])

        first_l, times_l, literal_ids = timed(literal, 1)
        results.append(record(f"kerasformer {backend}: UniLM recompute, bert4keras API "
                              "(AutoRegressiveDecoder.beam_search(topk=1) per source, eager "
                              "model call)", first_l, times_l, literal_ids,
                              key=f"unilm_literal_{backend}"))

    if backend == "jax":
        import jax

        meta["jax"] = jax.__version__
        meta["jax_devices"] = str(jax.devices())
    else:
        import tensorflow as tf

        meta["tensorflow"] = tf.__version__
    import kerasformer

    meta["kerasformer"] = getattr(kerasformer, "__version__", "?")
    return results, meta


def worker_main(args):
    if args.worker == "transformers":
        results, meta = worker_transformers(args.workdir, args.reps, args)
    else:
        results, meta = worker_keras(args.workdir, args.reps, args)
    with open(args.out, "w") as f:
        json.dump({"results": results, "meta": meta}, f)


# ------------------------------------------------------------------------ driver


def run_worker(name, args, workdir):
    out = os.path.join(workdir, f"{name}.json")
    env = dict(os.environ)
    if name in ("jax", "tensorflow"):
        env["KERAS_BACKEND"] = name
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--workdir", workdir,
           "--out", out, "--reps", str(args.reps)] + (["--quick"] if args.quick else []) + (
               ["--eager-recompute-jax"] if args.eager_recompute_jax else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        log(f"worker {name} FAILED (rc {proc.returncode}):\n{proc.stdout[-4000:]}")
        return None
    for line in proc.stdout.splitlines():
        if line.startswith("[") and "first call" in line:
            log(f"  {name}: {line}")
    log(f"worker {name} done in {wall:.0f}s")
    with open(out) as f:
        data = json.load(f)
    data["wall_s"] = wall
    return data


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return (xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])) if n else float("nan")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def agreement(ids, reference):
    """'identical' or the count of equal positions and the first differing step."""
    import numpy as np

    a, b = np.asarray(ids), np.asarray(reference)
    if np.array_equal(a, b):
        return "identical"
    same = int((a == b).sum())
    first = [int(np.argmax(ra != rb)) for ra, rb in zip(a, b) if (ra != rb).any()]
    return f"{same}/{a.size} equal; rows differ from step {min(first)}"


def build_report(all_results, metas, args, loads, wall_s):
    rows = {r["key"]: r for r in all_results}
    # Token ids are compared with transformers' greedy ids (any of its runs).
    ref_ids = next((rows[k]["ids"] for k in ("hf_cache", "hfr_jax", "hfr_tensorflow")
                    if k in rows), None)
    summary = {}

    def tps(row):
        return BATCH * NEW / median(row["times"])

    def line(r, ratio):
        agree = agreement(r["ids"], ref_ids) if ref_ids is not None else "n/a"
        return (f"| {r['label']} | {r['first_s']:.2f} | {median(r['times']):.3f} | "
                f"{min(r['times']):.3f} | {len(r['times'])} | {tps(r):,.0f} | {ratio} | {agree} |")

    lines = ["| implementation | first call s | steady s/call (median) | min s | n | new tokens/s "
             "| × transformers (same rounds) | greedy ids vs transformers |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for backend in ("jax", "tensorflow"):
        hf = rows.get(f"hfr_{backend}")
        for key in (f"kf_{backend}", f"hub_{backend}", f"hfr_{backend}"):
            if key not in rows:
                continue
            summary[key] = tps(rows[key])
            ratio = f"{tps(rows[key]) / tps(hf):.2f}×" if hf else "n/a"
            lines.append(line(rows[key], ratio))
    own = rows.get("hf_cache")
    for key in ("hf_cache", "hf_nocache"):
        if key in rows:
            summary[key] = tps(rows[key])
            ratio = f"{tps(rows[key]) / tps(own):.2f}× (own process)" if own else "n/a"
            lines.append(line(rows[key], ratio))
    gpt2_table = "\n".join(lines)

    lines = ["| implementation | first call s | steady s/call (median) | n | new tokens/s "
             "| cached ÷ this | greedy ids vs cached |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for backend in ("jax", "tensorflow"):
        c = rows.get(f"unilm_cached_{backend}")
        if not c:
            continue
        tc = median(c["times"])
        lines.append(f"| {c['label']} | {c['first_s']:.2f} | {tc:.3f} | {len(c['times'])} | "
                     f"{tps(c):,.0f} | 1.0× | |")
        for kind in ("literal", "recompute"):
            r = rows.get(f"unilm_{kind}_{backend}")
            if not r:
                continue
            tr = median(r["times"])
            summary[f"unilm_{kind}_{backend}"] = tr / tc
            lines.append(f"| {r['label']} | {r['first_s']:.2f} | {tr:.3f} | {len(r['times'])} | "
                         f"{tps(r):,.0f} | {tr / tc:.1f}× | {agreement(r['ids'], c['ids'])} |")
    unilm_table = "\n".join(lines)

    def verdict(value, target):
        return "met" if value >= target else "NOT met"

    targets = []
    for backend in ("jax", "tensorflow"):
        kf = summary.get(f"kf_{backend}")
        if kf is None:
            continue
        parts = [f"kerasformer {backend}: {kf:,.0f} new tokens/s"]
        hf = summary.get(f"hfr_{backend}")
        if hf:
            parts.append(f"{kf / hf:.2f}× transformers with cache, same rounds (target ≥ 2.5×: "
                         f"{verdict(kf / hf, 2.5)})")
        hub = summary.get(f"hub_{backend}")
        if hub:
            parts.append(f"{kf / hub:.2f}× keras-hub {backend} (target ≥ 1×: "
                         f"{verdict(kf / hub, 1.0)})")
        for kind, what in (("literal", "the bert4keras-API recompute decoder"),
                           ("recompute", "the compiled batched recompute")):
            speedup = summary.get(f"unilm_{kind}_{backend}")
            if speedup:
                parts.append(f"UniLM cached {speedup:.1f}× {what} (target ≥ 10×: "
                             f"{verdict(speedup, 10.0)})")
        targets.append("- " + "; ".join(parts))
    if "hf_nocache" in summary and "hf_cache" in summary:
        targets.append(f"- transformers in its own process: cache {summary['hf_cache']:,.0f} vs "
                       f"no cache {summary['hf_nocache']:,.0f} new tokens/s")

    versions = {"python": platform.python_version()}
    for meta in metas.values():
        for k in ("keras", "jax", "tensorflow", "keras_hub", "torch", "transformers",
                  "kerasformer"):
            if meta.get(k):
                versions[k] = meta[k]
    threads = metas.get("transformers", {}).get("torch_threads")
    attn = metas.get("transformers", {}).get("attn_implementation")
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    command = " ".join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)]
                       + sys.argv[1:])
    return f"""{BEGIN}
## Generation (`benchmarks/generation.py`)

Each full run rewrites this section except the hand-written notes at its end; the other
sections of this file belong to other benchmarks and are left alone.

- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}
- Machine: {os.cpu_count()} logical CPUs, {cpu_model()}, {mem:.0f} GiB RAM, {platform.platform()}
- Load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f} (a load above the core
  count means a shared machine and noisy numbers)
- Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}
- torch threads: {threads}; transformers attention: {attn}
- Command: `{command}` ({args.reps} steady-state repetitions after the first call, in
  interleaved rounds for kerasformer / keras-hub / transformers within each backend's
  process; transformers without cache: 1 call (also its "first call"); UniLM recompute
  paths: 1 call after the first; whole run {wall_s:.0f} s)

Workload: greedy decoding, batch {BATCH}, prompts of {PROMPT} tokens, {NEW} new tokens (no end
token). GPT-2: 6 layers, hidden 512, 8 heads, vocab 50257, random weights saved once by
transformers (seed 0) and loaded by every implementation. UniLM: BERT of the same size
(vocab 21128, `BertForMaskedLM` weights, softmax MLM head as bert4keras) with
`application="unilm"`, sources `[CLS] 30 ids [SEP]`. "first call" includes tracing and XLA
compilation for the compiled implementations; "steady" is the median of the later calls
with the same shapes. new tokens/s = {BATCH} × {NEW} / steady seconds per call.
transformers is also timed inside each Keras backend's process, in the same rounds as
kerasformer and keras-hub, and the "× transformers" ratios use that row: on a shared
machine a separate process sees a different load.

UniLM recompute paths: "bert4keras API" is `AutoRegressiveDecoder.beam_search(topk=1)`
called per source as bert4keras scripts do, `predict` calling `last_token(model)` on the
growing prefix eagerly (on JAX only with `--eager-recompute-jax`: eager JAX compiles every
op for every new length, ~500 s for the first call); "compiled batched" runs the 4 rows
together through `predict_on_batch` with the prefix right-padded to a multiple of 16
(5 compiled shapes) - a stronger baseline than bert4keras offers.

### GPT-2 greedy, batch {BATCH}, prompt {PROMPT}, {NEW} new tokens

{gpt2_table}

### UniLM greedy, batch {BATCH}, source {PROMPT}, {NEW} new tokens

{unilm_table}

### Targets

{chr(10).join(targets)}

### Notes (generation)

{NOTES_BEGIN}
{{notes}}
{NOTES_END}
{END}
"""


def write_results(section):
    """Replace this benchmark's section of RESULTS.md (or append it), keeping the rest of
    the file and the hand-written notes of the section."""
    old = ""
    if os.path.exists(RESULTS_MD):
        with open(RESULTS_MD, encoding="utf-8") as f:
            old = f.read()
    notes = DEFAULT_NOTES
    if NOTES_BEGIN in old and NOTES_END in old:
        notes = old[old.index(NOTES_BEGIN) + len(NOTES_BEGIN):old.index(NOTES_END)].strip("\n")
    replace_section(RESULTS_MD, BEGIN, END, section.replace("{notes}", notes))
    log(f"wrote {os.path.relpath(RESULTS_MD, ROOT)}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 repetitions, one no-cache call; does not update RESULTS.md")
    p.add_argument("--reps", type=int, default=None, help="steady-state repetitions "
                   "(default 5, --quick 2)")
    p.add_argument("--backends", default="jax,tensorflow")
    p.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    p.add_argument("--eager-recompute-jax", action="store_true",
                   help="also time the bert4keras-API recompute decoder on JAX (eager JAX "
                   "compiles every op for every new prefix length: ~500 s first call)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    if args.worker:
        return worker_main(args)

    start = time.perf_counter()
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="kf_gen_bench_") as workdir:
        log("saving random GPT-2 and BERT weights with transformers")
        metas = {"transformers": setup(workdir)}
        all_results = []
        for name in ["transformers"] + [b for b in args.backends.split(",") if b]:
            log(f"running worker {name}")
            data = run_worker(name, args, workdir)
            if data is None:
                continue
            all_results += data["results"]
            metas[name] = dict(metas.get(name, {}), **data["meta"])
    loads.append(os.getloadavg()[0])
    wall = time.perf_counter() - start
    section = build_report(all_results, metas, args, loads, wall)
    print(section.replace("{notes}", "(notes: kept from RESULTS.md)"))
    if not (args.quick or args.no_write):
        write_results(section)


if __name__ == "__main__":
    main()
