#!/usr/bin/env python
"""Where does the mixed-precision backward lose its time? A GPU probe (JAX), ~2 minutes.

Usage (from the repository root)::

    KERAS_BACKEND=jax python benchmarks/train_step_probe.py --json /tmp/probe.json
    KERAS_BACKEND=jax python benchmarks/train_step_probe.py --small   # CPU check

Measured (2026-12-04, H200): bert-base ``jax.jit(jax.value_and_grad(loss))`` takes 20x its
forward under ``mixed_bfloat16`` (215 ms vs 10.7) but 3.5x in float32. This probe times the
forward and the ``value_and_grad`` (w.r.t. weights and input) of each component at bert-base
widths (hidden 768, 12 heads, FFN 3072, B=32, T=512), bf16 policy vs float32, so the ratio
of each part shows which one is pathological:

- the encoder (2 layers: quick to compile) with the default attention path, and with
  ``attention_implementation="fused"`` / ``"explicit"`` when the builder has the option;
- kerasformer's ``MultiHeadAttention`` alone (explicit einsum + float32 softmax);
- the feed-forward block (``FeedForward``, gelu), ``LayerNormalization``, the token
  ``Embedding`` (its gradient is a scatter-add);
- softmax over [B, heads, T, T] computed in float32 (cast in/out) vs in bfloat16;
- Keras's fit path on the 2-layer classifier: ``train_on_batch`` vs ``fit`` with
  ``steps_per_execution`` 1 and 16, dropout 0 vs 0.1 (the RNG cost).

Also the encoder with its embedding tables frozen (their gradients are scatter-adds).
Then the encoder's forward and value_and_grad again under other XLA_FLAGS, each in a
fresh subprocess (flags are read when the backend starts): Triton GEMM fusions off, no
autotuning. The default run also writes the compiled (optimised) HLO of the bf16
encoder's value_and_grad next to ``--json``
(``probe_hlo_bf16.txt``) and counts its GEMM custom calls, Triton fusions, transposes and
copies per dtype, bf16 vs float32.
"""
import argparse
import collections
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

FULL = dict(hidden=768, heads=12, ffn=3072, layers=2, vocab=21128, batch=32, seq=512,
            reps=5, fit_steps=16, budget=110, caps={"default": 80})
SMALL = dict(hidden=64, heads=4, ffn=128, layers=2, vocab=1000, batch=4, seq=64,
             reps=3, fit_steps=4, budget=400, caps={"default": 200, "triton_gemm_off": 80,
                                                               "autotune_0": 80})
FLAG_VARIANTS = [
    ("default", ""),
    ("triton_gemm_off", "--xla_gpu_enable_triton_gemm=false"),
    ("autotune_0", "--xla_gpu_autotune_level=0"),
]


def log(msg):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", flush=True)


def median_time(fn, reps):
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times)


class Probe:
    def __init__(self, cfg, out):
        self.cfg, self.out, self.rows = cfg, out, []

    def save(self):
        with open(self.out + ".tmp", "w") as f:
            json.dump(self.rows, f)
        os.replace(self.out + ".tmp", self.out)

    def record(self, name, policy, fn):
        row = dict(component=name, policy=policy)
        try:
            row.update(fn())
            log(f"{name:<40} {policy:<15} " + "  ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in row.items() if k not in ("component", "policy")))
        except Exception as e:  # a failing component must not stop the probe
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            log(f"{name:<40} {policy:<15} FAILED {row['error']}")
            traceback.print_exc(limit=2, file=sys.stdout)
        self.rows.append(row)
        self.save()
        return row


def fwd_and_grad(layer_fn, params, inputs, reps):
    """Time jit(forward) and jit(value_and_grad) w.r.t. (params, inputs)."""
    import jax
    import jax.numpy as jnp

    def loss(params, inputs):
        y = layer_fn(params, inputs)
        return jnp.mean(jnp.square(y.astype(jnp.float32)))

    fwd = jax.jit(lambda p, x: layer_fn(p, x))
    vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    f_first, f = median_time(lambda: fwd(params, inputs), reps)
    g_first, g = median_time(lambda: vg(params, inputs), reps)
    return dict(fwd_ms=f * 1e3, grad_ms=g * 1e3, grad_over_fwd=g / f,
                compile_s=f_first + g_first)


def keras_layer_fn(layer, **call_kwargs):
    tv = [v.value for v in layer.trainable_variables]
    ntv = [v.value for v in layer.non_trainable_variables]

    def fn(params, inputs):
        out = layer.stateless_call(params, ntv, *inputs, **call_kwargs)[0]
        return out[0] if isinstance(out, (list, tuple)) else out
    return fn, tv


def encoder(cfg, attention=None, dropout=0.0):
    from kerasformer import build_transformer_model

    kwargs = {} if attention is None else dict(attention_implementation=attention)
    return build_transformer_model(
        None, None, model="bert", vocab_size=cfg["vocab"], hidden_size=cfg["hidden"],
        num_hidden_layers=cfg["layers"], num_attention_heads=cfg["heads"],
        intermediate_size=cfg["ffn"], max_position_embeddings=max(512, cfg["seq"]),
        type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, **kwargs)


def tokens(cfg):
    import numpy as np

    rng = np.random.default_rng(0)
    tok = rng.integers(1, cfg["vocab"], (cfg["batch"], cfg["seq"])).astype("int32")
    return tok, np.zeros_like(tok)


def hlo_counts(text):
    c = collections.Counter()
    for line in text.splitlines():
        line = line.strip()
        m = re.match(r"(?:ROOT )?%\S+ = (\w+)\[[^\]]*\]\S* (\w[\w-]*)\(", line)
        if not m:
            continue
        dtype, op = m.groups()
        if op == "custom-call":
            target = re.search(r'custom_call_target="([^"]+)"', line)
            op = "custom-call " + (target.group(1) if target else "?")
        elif op == "fusion":
            kind = re.search(r"kind=(\w+)", line)
            triton = "__triton" in line or "triton_gemm" in line
            op = "fusion " + (kind.group(1) if kind else "?") + (" triton" if triton else "")
        if op.startswith(("custom-call", "fusion", "transpose", "copy", "convert",
                          "dot", "scatter", "rng", "reduce")):
            c[f"{op} -> {dtype}"] += 1
    return dict(sorted(c.items()))


def run_components(cfg, probe, outdir, flags_name):
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    from kerasformer import layers as kl

    reps = cfg["reps"]
    b, t, h, n = cfg["batch"], cfg["seq"], cfg["hidden"], cfg["heads"]
    tok, seg = tokens(cfg)
    rng = np.random.default_rng(1)
    full = flags_name == "default"

    for policy in ("mixed_bfloat16", "float32"):
        keras.mixed_precision.set_global_policy(policy)
        act = jnp.bfloat16 if policy == "mixed_bfloat16" else jnp.float32
        x = jnp.asarray(rng.normal(size=(b, t, h)), act)

        def enc_weights_only(attention=None, dump=False, frozen_embeddings=False):
            def run():
                model = encoder(cfg, attention)
                fn, tv = keras_layer_fn(model)
                xs = [jnp.asarray(tok), jnp.asarray(seg)]
                # Frozen: no gradient for the token, segment and position tables (their
                # gradients are scatter-adds; the segment table's 2 rows take all B*T
                # updates of row 0: a worst case for atomics).
                train = [i for i, v in enumerate(model.trainable_variables)
                         if not (frozen_embeddings and "embedding" in v.path.lower()
                                 and "norm" not in v.path.lower())]

                tv_all = tv

                def merge(p):
                    full = list(tv_all)
                    for j, i in enumerate(train):
                        full[i] = p[j]
                    return full

                # a Model takes its inputs as one list argument
                def loss(p):
                    return jnp.mean(jnp.square(fn(merge(p), [xs]).astype(jnp.float32)))
                fwd = jax.jit(lambda p: fn(merge(p), [xs]))
                tv = [tv_all[i] for i in train]
                t0 = time.perf_counter()
                # compiled once, timed and (for the dump) printed from the same executable
                vg = jax.jit(jax.value_and_grad(loss)).lower(tv).compile()
                g_compile = time.perf_counter() - t0
                f_first, f = median_time(lambda: fwd(tv), reps)
                g_first, g = median_time(lambda: vg(tv), reps)
                g_first += g_compile
                out = dict(fwd_ms=f * 1e3, grad_ms=g * 1e3, grad_over_fwd=g / f,
                           compile_s=f_first + g_first)
                if dump:
                    text = vg.as_text()
                    out["hlo_counts"] = hlo_counts(text)
                    tag = "bf16" if policy == "mixed_bfloat16" else "fp32"
                    if tag == "bf16" and outdir:
                        with open(os.path.join(outdir, "probe_hlo_bf16.txt"), "w") as f:
                            f.write(text)
                return out
            return run

        tag = "bf16" if policy == "mixed_bfloat16" else "fp32"
        probe.record(f"encoder {cfg['layers']}L default attention", tag,
                     enc_weights_only(dump=full))
        probe.record(f"encoder {cfg['layers']}L, embedding tables frozen", tag,
                     enc_weights_only(frozen_embeddings=True))
        if not full:
            continue
        for attention in ("fused", "explicit"):
            probe.record(f"encoder {cfg['layers']}L attention {attention}", tag,
                         enc_weights_only(attention))

        def layer(make, call_inputs, **kw):
            def run():
                lay = make()
                lay.build(*[i.shape for i in call_inputs])
                fn, tv = keras_layer_fn(lay, **kw)
                return fwd_and_grad(fn, tv, call_inputs, reps)
            return run

        probe.record("MultiHeadAttention (explicit, no mask)", tag, layer(
            lambda: kl.MultiHeadAttention(n, h // n), [x]))
        probe.record("FeedForward gelu", tag, layer(
            lambda: kl.FeedForward(cfg["ffn"], activation="gelu"), [x]))
        probe.record("LayerNormalization", tag, layer(
            lambda: kl.LayerNormalization(epsilon=1e-12), [x]))

        def embedding():
            emb = keras.layers.Embedding(cfg["vocab"], h)
            emb.build((b, t))
            fn, tv = keras_layer_fn(emb)

            def loss(p):
                return jnp.mean(jnp.square(fn(p, [jnp.asarray(tok)]).astype(jnp.float32)))
            fwd = jax.jit(lambda p: fn(p, [jnp.asarray(tok)]))
            vg = jax.jit(jax.value_and_grad(loss))
            _, f = median_time(lambda: fwd(tv), reps)
            _, g = median_time(lambda: vg(tv), reps)
            return dict(fwd_ms=f * 1e3, grad_ms=g * 1e3, grad_over_fwd=g / f)
        probe.record("Embedding (gather; grad = scatter-add)", tag, embedding)

        def segment_embedding():  # 2 rows, every id 0: the contended scatter-add
            emb = keras.layers.Embedding(2, h)
            emb.build((b, t))
            fn, tv = keras_layer_fn(emb)
            ids = jnp.asarray(seg)
            return fwd_and_grad(lambda p, xs: fn(p, [ids]) + xs[0], tv, [x], reps)
        probe.record("segment Embedding (2 rows, ids all 0)", tag, segment_embedding)
        probe.record("PositionEmbedding (kerasformer, add)", tag, layer(
            lambda: kl.PositionEmbedding(max(512, t), h, merge_mode="add"), [x]))

    keras.mixed_precision.set_global_policy("float32")
    if not full:
        return
    scores = jnp.asarray(rng.normal(size=(b, n, t, t)), jnp.bfloat16)
    v = jnp.asarray(rng.normal(size=(b, t, n, h // n)), jnp.bfloat16)

    def softmax_in(dtype):
        def fn(_, xs):
            s, vv = xs
            p = jax.nn.softmax(s.astype(dtype), axis=-1).astype(jnp.bfloat16)
            return jnp.einsum("bnqk,bknd->bqnd", p, vv)
        return lambda: fwd_and_grad(fn, (), [scores, v], reps)
    probe.record("softmax in float32 + PV einsum", "bf16 in/out", softmax_in(jnp.float32))
    probe.record("softmax in bfloat16 + PV einsum", "bf16 in/out", softmax_in(jnp.bfloat16))
    fit_path(cfg, probe)


def fit_path(cfg, probe):
    """Keras's own loop on the small classifier (bf16): per-step costs of its paths."""
    import keras
    import numpy as np

    tok, seg = tokens(cfg)
    labels = np.random.default_rng(2).integers(0, 2, (cfg["batch"],)).astype("int32")
    n = cfg["fit_steps"]
    xs = [np.concatenate([tok] * n), np.concatenate([seg] * n)]
    ys = np.concatenate([labels] * n)

    def classifier(dropout, spe):
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            enc = encoder(cfg, dropout=dropout)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        cls = keras.layers.Lambda(lambda hdn: hdn[:, 0])(enc.outputs[0])
        out = keras.layers.Dense(2, dtype="float32")(cls)
        model = keras.Model(enc.inputs, out)
        model.compile(optimizer=keras.optimizers.AdamW(2e-5, weight_decay=0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True, steps_per_execution=spe)
        return model

    def train_on_batch(dropout):
        def run():
            model = classifier(dropout, 1)
            model.train_on_batch([tok, seg], labels)
            times = []
            for _ in range(cfg["reps"]):
                t0 = time.perf_counter()
                model.train_on_batch([tok, seg], labels)
                times.append(time.perf_counter() - t0)
            return dict(step_ms=statistics.median(times) * 1e3)
        return run

    def fit(spe, dropout=0.0):
        def run():
            model = classifier(dropout, spe)
            model.fit(xs, ys, batch_size=cfg["batch"], epochs=1, verbose=0, shuffle=False)
            t0 = time.perf_counter()
            model.fit(xs, ys, batch_size=cfg["batch"], epochs=1, verbose=0, shuffle=False)
            return dict(step_ms=(time.perf_counter() - t0) / n * 1e3)
        return run

    probe.record("fit path: train_on_batch, dropout 0", "bf16", train_on_batch(0.0))
    probe.record("fit path: train_on_batch, dropout 0.1", "bf16", train_on_batch(0.1))
    probe.record(f"fit path: fit steps_per_execution=1 ({n} steps)", "bf16", fit(1))
    probe.record(f"fit path: fit steps_per_execution={n} ({n} steps)", "bf16", fit(n))


def worker(args):
    cfg = SMALL if args.small else FULL
    import jax

    probe = Probe(cfg, args.out)
    probe.rows.append(dict(component="device", policy=str(jax.devices()[0]),
                           xla_flags=os.environ.get("XLA_FLAGS", "")))
    probe.save()
    run_components(cfg, probe, os.path.dirname(args.json) if args.json else None,
                   args.worker)


def summary(results):
    lines = ["| flags | component | policy | fwd ms | grad ms | grad/fwd | notes |",
             "|---|---|---|---:|---:|---:|---|"]
    for name, rows in results.items():
        for r in rows:
            if r["component"] == "device":
                continue
            if "step_ms" in r:
                lines.append(f"| {name} | {r['component']} | {r['policy']} | | | | "
                             f"{r['step_ms']:.2f} ms/step |")
                continue
            cells = [f"{r[k]:.2f}" if isinstance(r.get(k), float) else ""
                     for k in ("fwd_ms", "grad_ms", "grad_over_fwd")]
            lines.append(f"| {name} | {r['component']} | {r['policy']} | " + " | ".join(cells)
                         + f" | {r.get('error', '')[:120]} |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true")
    p.add_argument("--json", help="all numbers (and probe_hlo_bf16.txt beside it)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    cfg = SMALL if args.small else FULL
    t_start = time.time()
    results, status = {}, {}
    # worker files outside $OUT (only 8 files come back from the device machine)
    tmp = os.path.join(tempfile.gettempdir(), f"probe-worker-{os.getpid()}")
    for name, flags in FLAG_VARIANTS:
        left = cfg["budget"] - (time.time() - t_start)
        timeout = int(min(cfg["caps"].get(name, 25), left - 3))
        if timeout < 10:
            status[name] = "skipped (time budget)"
            continue
        out = f"{tmp}-{name}.json"
        env = dict(os.environ, KERAS_BACKEND="jax", PYTHONUNBUFFERED="1",
                   XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + flags).strip())
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--out", out] + (
            ["--small"] if args.small else []) + (["--json", args.json] if args.json else [])
        log(f"== {name}: XLA_FLAGS={env['XLA_FLAGS']!r} (timeout {timeout} s)")
        try:
            rc = subprocess.run(cmd, env=env, cwd=ROOT, timeout=timeout).returncode
            status[name] = "ok" if rc == 0 else f"exit {rc}"
        except subprocess.TimeoutExpired:
            status[name] = f"timeout after {timeout} s"
        if os.path.exists(out):
            with open(out) as f:
                results[name] = json.load(f)
            os.remove(out)
        write_json(args.json, cfg, status, results)  # after each variant: a kill keeps it
    print(summary(results))
    print("status: " + ", ".join(f"{k} {v}" for k, v in status.items()) +
          f"; {time.time() - t_start:.0f} s")


def write_json(path, cfg, status, results):
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump({"config": cfg, "status": status, "results": results,
                       "table": summary(results)}, f, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
