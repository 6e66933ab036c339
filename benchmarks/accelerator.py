#!/usr/bin/env python
"""kerasformer (JAX) against transformers + torch on the same accelerator, in one run.

Usage (from the repository root)::

    KERAS_BACKEND=jax python benchmarks/accelerator.py --json /tmp/accelerator.json
    KERAS_BACKEND=jax python benchmarks/accelerator.py --small   # tiny shapes, CPU, < 3 min

Work (random weights, dropout 0 everywhere, no padding):

- bert-base (vocab 21128, 12 layers, hidden 768) forward, B=32 T=512: kerasformer JAX
  ``jax.jit(model.stateless_call)`` in float32 at JAX's default matmul precision (TF32-class
  on GPUs), float32 at "highest" precision and ``mixed_bfloat16``; transformers ``BertModel``
  in float32 (TF32 off), bf16 weights + sdpa, and float32 weights under bf16 autocast.
- bert-base classification train step (CLS -> Dense(2), sparse CE, AdamW lr 2e-5 wd 0.01):
  kerasformer through Keras's own ``train_on_batch`` and ``fit`` (``jit_compile=True``: the
  user's path) in ``mixed_bfloat16``, plus, for diagnosis, a jitted stateless
  ``value_and_grad`` of the loss in bf16 and fp32; transformers
  ``BertForSequenceClassification`` with torch AdamW (fused on CUDA), fp32 and bf16 autocast.
- long-context forward: a RoFormer-shaped model (RoPE, 12 layers, hidden 768), B=1,
  T=8192, bf16, fused vs explicit attention (``attention_implementation``), each variant in
  its own subprocess so that the device's peak-memory counter starts at zero
  (``jax.devices()[0].memory_stats()['peak_bytes_in_use']``; XLA's compiled temp size too).
- GPT-2 124M greedy decoding, B=8, prompt 128, 128 new tokens, fp32 and bf16:
  ``kerasformer.generation.generate`` against ``transformers.generate`` (KV cache).
- a plain matmul (8192^3) in each framework and precision: the achievable rate here.

FLOPs are counted analytically: 2 * (matmul parameters) * tokens plus attention
4 * B * T^2 * hidden * layers for a forward; a train step = 3 x forward. Every time is the
median of several timed calls after a warm-up (the first call, compile included, is
reported separately), synchronised with ``block_until_ready`` / ``torch.cuda.synchronize``.
Each framework/variant group runs in its own subprocess (one Keras backend and one
allocator per process), each measurement is guarded: a failing one records its error and
the run continues. The parent prints a table, writes all numbers to ``--json`` and
replaces the "Accelerator" section of benchmarks/RESULTS.md (full runs; ``--small`` only
with ``--write``).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from results_md import replace_section  # noqa: E402

RESULTS_MD = os.path.join(HERE, "RESULTS.md")
BEGIN, END = "<!-- accelerator:begin -->", "<!-- accelerator:end -->"

# Dense datasheet rates (TFLOP/s) by device name fragment; measured matmuls are the
# practical ceilings and are reported beside them.
DATASHEET = {"H200": {"bf16": 989.0, "tf32": 494.7, "fp32": 66.9},
             "H100": {"bf16": 989.0, "tf32": 494.7, "fp32": 66.9},
             "A100": {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}}

FULL = dict(
    bert=dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
              intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2),
    batch=32, seq=512,
    long=dict(vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
              intermediate_size=3072, max_position_embeddings=8192, type_vocab_size=2),
    long_seq=8192,
    gpt2=dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12),
    gen_batch=8, prompt=128, new=128,
    matmul=8192, reps=5, fit_steps=16, budget=300,
    # seconds each worker may take at most (compile included), within the budget; a
    # worker skips its optional (diagnostic) parts when little of its time is left
    caps=dict(jax_fwd=80, torch_bert=60, jax_train=120, jax_long_fused=45,
              jax_long_explicit=45, torch_gen=40, jax_gen=70), optional_s=45,
)
SMALL = dict(
    bert=dict(vocab_size=21128, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=128, max_position_embeddings=128, type_vocab_size=2),
    batch=4, seq=64,
    long=dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=128, max_position_embeddings=512, type_vocab_size=2),
    long_seq=512,
    gpt2=dict(vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=2),
    gen_batch=2, prompt=16, new=16,
    matmul=256, reps=3, fit_steps=3, budget=600, caps={}, optional_s=0,
)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
EOS = 50256


def log(msg):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {msg}", flush=True)


# --------------------------------------------------------------------------- FLOPs


def encoder_matmul_params(c):
    """Parameters that take part in a matmul per token (no embedding gathers)."""
    h, f, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    return n * (4 * h * h + 2 * h * f)


def encoder_forward_flops(c, batch, seq):
    attention = 4 * batch * seq * seq * c["hidden_size"] * c["num_hidden_layers"]
    return 2 * encoder_matmul_params(c) * batch * seq + attention


def gpt2_generate_flops(c, batch, prompt, new):
    h, n, v = c["n_embd"], c["n_layer"], c["vocab_size"]
    per_token = 2 * (n * 12 * h * h + h * v)  # blocks + LM head
    tokens = batch * (prompt + new)
    # attention: prefill over the prompt, then each new token against its context
    ctx = prompt * prompt + sum(prompt + i for i in range(new))
    return per_token * tokens + 4 * batch * ctx * h * n


# ------------------------------------------------------------------------ measuring


def timed(fn, sync, reps, warmup=1):
    """(first call s incl. compile, median s of `reps` calls after `warmup` calls)."""
    t0 = time.perf_counter()
    sync(fn())
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        sync(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), times


class Recorder:
    """Collects rows and rewrites the worker's JSON file after each one, so a worker
    killed by its timeout still returns what it measured."""

    def __init__(self, path, worker):
        self.path, self.worker, self.rows, self.meta = path, worker, [], {}

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"rows": self.rows, "meta": self.meta}, f)
        os.replace(tmp, self.path)

    def guard(self, section, impl, variant, fn):
        """Run one measurement `fn() -> dict`; record its numbers or its error."""
        row = dict(section=section, impl=impl, variant=variant, worker=self.worker)
        log(f"{section} | {impl} | {variant} ...")
        try:
            row.update(fn() or {})
            log("   " + ", ".join(f"{k}={_fmt(v)}" for k, v in row.items()
                                  if k in ("ms", "tok_s", "tflops", "first_s", "peak_gib",
                                           "note")))
        except Exception as e:  # one failing variant must not stop the run
            row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
            log("   FAILED " + row["error"])
            traceback.print_exc(limit=3, file=sys.stdout)
        self.rows.append(row)
        self.save()
        return row


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def rate(seconds, tokens=None, flops=None):
    out = {"ms": seconds * 1e3}
    if tokens:
        out["tok_s"] = tokens / seconds
    if flops:
        out["tflops"] = flops / seconds / 1e12
        out["flops"] = flops
    return out


# ----------------------------------------------------------------------- JAX side


def jax_setup(rec):
    import jax
    import keras

    import kerasformer

    dev = jax.devices()[0]
    rec.meta.update(jax=jax.__version__, keras=keras.__version__,
                    kerasformer=getattr(kerasformer, "__version__", "?"),
                    jax_device=f"{dev.platform}: {getattr(dev, 'device_kind', '')}")
    rec.save()
    return jax, keras, kerasformer


def time_left():
    """Seconds before the parent's timeout kills this worker (KF_DEADLINE)."""
    return float(os.environ.get("KF_DEADLINE", "inf")) - time.time()


def set_precision(kerasformer, precision):
    """kerasformer's switch when it exists, else JAX's own config (same effect)."""
    switch = getattr(kerasformer, "set_float32_matmul_precision", None)
    if switch is not None:
        switch(precision)
        return "kerasformer.set_float32_matmul_precision"
    import jax

    jax.config.update("jax_default_matmul_precision",
                      None if precision == "default" else precision)
    return "jax_default_matmul_precision"


def set_policy(keras, policy):
    keras.mixed_precision.set_global_policy(policy)


def build(kerasformer, model, config, attention=None, **kw):
    """Random-weight model; `attention` -> attention_implementation when the builder has
    it. Returns (model, attention label)."""
    args = dict(config, hidden_act="gelu", **NO_DROPOUT, **kw)
    if attention:
        try:
            return (kerasformer.build_transformer_model(
                None, None, model=model, attention_implementation=attention, **args),
                attention)
        except TypeError as e:
            if "attention_implementation" not in str(e):
                raise
            if attention != "explicit":
                raise NotImplementedError(
                    "attention_implementation is not in this kerasformer (n/a)") from None
    # Without the option every attention is the explicit einsum path.
    return kerasformer.build_transformer_model(None, None, model=model, **args), (
        attention or "default")


def token_batch(np, vocab, batch, seq, seed=0):
    rng = np.random.default_rng(seed)
    tok = rng.integers(1000 if vocab > 2000 else 1, vocab, (batch, seq)).astype("int32")
    return tok, np.zeros_like(tok)


def jax_matmul(rec, jax, kerasformer, n, reps):
    import jax.numpy as jnp

    key = jax.random.PRNGKey(0)
    a32 = jax.random.normal(key, (n, n), jnp.float32)
    b32 = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    for variant, dtype, precision in (("bf16", jnp.bfloat16, "default"),
                                      ("fp32 default", jnp.float32, "default"),
                                      ("fp32 highest", jnp.float32, "highest")):
        def run(dtype=dtype, precision=precision):
            set_precision(kerasformer, precision)
            a, b = a32.astype(dtype), b32.astype(dtype)
            f = jax.jit(lambda x, y: x @ y)
            _, med, _ = timed(lambda: f(a, b), jax.block_until_ready, reps)
            return rate(med, flops=2 * n ** 3)
        try:
            rec.guard("matmul", "jax", variant, run)
        finally:
            set_precision(kerasformer, "default")


def worker_jax_fwd(rec, cfg):
    jax, keras, kerasformer = jax_setup(rec)
    import numpy as np

    jax_matmul(rec, jax, kerasformer, cfg["matmul"], cfg["reps"])
    c, b, t = cfg["bert"], cfg["batch"], cfg["seq"]
    tok, seg = token_batch(np, c["vocab_size"], b, t)
    flops = encoder_forward_flops(c, b, t)

    def forward(policy, precision, attention=None):
        def run():
            set_policy(keras, policy)
            set_precision(kerasformer, precision)
            try:
                model, label = build(kerasformer, "bert", c, attention)
                tv = [v.value for v in model.trainable_variables]
                ntv = [v.value for v in model.non_trainable_variables]
                f = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x)[0])
                x = [jax.numpy.asarray(tok), jax.numpy.asarray(seg)]
                first, med, _ = timed(lambda: f(tv, ntv, x), jax.block_until_ready,
                                      cfg["reps"])
                return dict(rate(med, b * t, flops), first_s=first, attention=label)
            finally:
                set_precision(kerasformer, "default")
                set_policy(keras, "float32")
        return run

    rec.guard("bert forward", "kerasformer jax", "fp32 default precision",
              forward("float32", "default"))
    rec.guard("bert forward", "kerasformer jax", "fp32 highest",
              forward("float32", "highest"))
    rec.guard("bert forward", "kerasformer jax", "bf16 (mixed_bfloat16)",
              forward("mixed_bfloat16", "default"))
    rec.guard("bert forward", "kerasformer jax", "bf16, attention fused",
              forward("mixed_bfloat16", "default", "fused"))
    if rec.rows[-1].get("error", "").startswith("NotImplementedError"):
        log("no attention_implementation option: the default path is the explicit one")
    else:
        rec.guard("bert forward", "kerasformer jax", "bf16, attention explicit",
                  forward("mixed_bfloat16", "default", "explicit"))


def classifier(keras, kerasformer, c, attention=None):
    encoder, label = build(kerasformer, "bert", c, attention)
    cls = keras.layers.Lambda(lambda h: h[:, 0], name="CLS")(encoder.outputs[0])
    # float32 logits under mixed precision, as transformers' autocast loss.
    logits = keras.layers.Dense(2, dtype="float32", name="Classifier")(cls)
    return keras.Model(encoder.inputs, logits), label


def compile_classifier(keras, model, **kw):
    model.compile(optimizer=keras.optimizers.AdamW(2e-5, weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True, **kw)


def worker_jax_train(rec, cfg):
    jax, keras, kerasformer = jax_setup(rec)
    import numpy as np

    c, b, t = cfg["bert"], cfg["batch"], cfg["seq"]
    tok, seg = token_batch(np, c["vocab_size"], b, t)
    labels = np.random.default_rng(1).integers(0, 2, (b,)).astype("int32")
    flops = 3 * encoder_forward_flops(c, b, t)

    def keras_path(policy):
        def run():
            set_policy(keras, policy)
            try:
                model, label = classifier(keras, kerasformer, c)
                compile_classifier(keras, model)
                first, med, _ = timed(lambda: model.train_on_batch([tok, seg], labels),
                                      lambda loss: float(np.asarray(loss).ravel()[0]),
                                      cfg["reps"])
                out = dict(rate(med, b * t, flops), first_s=first, attention=label)
                # fit over n batches: the user's loop (no per-step host sync).
                n = cfg["fit_steps"]
                xs = [np.concatenate([tok] * n), np.concatenate([seg] * n)]
                ys = np.concatenate([labels] * n)
                if time_left() < cfg["optional_s"]:
                    out["note"] = "fit skipped: worker time nearly spent"
                    return out
                t0 = time.perf_counter()  # a recompile here would show as a long first fit
                model.fit(xs, ys, batch_size=b, epochs=1, verbose=0, shuffle=False)
                fit_first = time.perf_counter() - t0
                t0 = time.perf_counter()
                model.fit(xs, ys, batch_size=b, epochs=1, verbose=0, shuffle=False)
                fit_s = (time.perf_counter() - t0) / n
                out.update(fit_ms=fit_s * 1e3, fit_tok_s=b * t / fit_s, fit_first_s=fit_first,
                           fit_tflops=flops / fit_s / 1e12,
                           note=f"fit: {fit_s * 1e3:.1f} ms/step over {n} steps, "
                            f"first fit {fit_first:.1f} s")
                return out
            finally:
                set_policy(keras, "float32")
        return run

    def value_and_grad(policy):
        def run():
            set_policy(keras, policy)
            try:
                model, label = classifier(keras, kerasformer, c)
                tv = [v.value for v in model.trainable_variables]
                ntv = [v.value for v in model.non_trainable_variables]
                x = [jax.numpy.asarray(tok), jax.numpy.asarray(seg)]
                y = jax.numpy.asarray(labels)

                def loss(tv, ntv, x, y):
                    logits = model.stateless_call(tv, ntv, x)[0]
                    return keras.ops.mean(keras.ops.sparse_categorical_crossentropy(
                        y, logits, from_logits=True))

                fwd = jax.jit(loss)
                _, fwd_med, _ = timed(lambda: fwd(tv, ntv, x, y), jax.block_until_ready,
                                      cfg["reps"])
                vg = jax.jit(jax.value_and_grad(loss))
                first, med, _ = timed(lambda: vg(tv, ntv, x, y), jax.block_until_ready,
                                      cfg["reps"])
                return dict(rate(med, b * t, flops), first_s=first, forward_ms=fwd_med * 1e3,
                            note=f"value_and_grad / forward = {med / fwd_med:.1f}x",
                            attention=label)
            finally:
                set_policy(keras, "float32")
        return run

    rec.guard("bert train step", "kerasformer jax", "bf16 train_on_batch + fit",
              keras_path("mixed_bfloat16"))
    for policy, label, need in (("mixed_bfloat16", "bf16", 1), ("float32", "fp32", 1.5)):
        if time_left() < need * cfg["optional_s"]:
            log(f"{label} value_and_grad skipped: {time_left():.0f} s left in this worker")
            continue
        rec.guard("bert train step", "kerasformer jax",
                  f"{label} value_and_grad (no optimizer)", value_and_grad(policy))


def worker_jax_long(rec, cfg, attention):
    jax, keras, kerasformer = jax_setup(rec)
    import numpy as np

    c, t = cfg["long"], cfg["long_seq"]
    tok, seg = token_batch(np, c["vocab_size"], 1, t)

    def run():
        set_policy(keras, "mixed_bfloat16")
        model, label = build(kerasformer, "roformer", c, attention)
        tv = [v.value for v in model.trainable_variables]
        ntv = [v.value for v in model.non_trainable_variables]
        f = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x)[0])
        x = [jax.numpy.asarray(tok), jax.numpy.asarray(seg)]
        out = {"attention": label}
        try:
            mem = f.lower(tv, ntv, x).compile().memory_analysis()
            out["xla_temp_gib"] = mem.temp_size_in_bytes / 2 ** 30
            out["xla_argument_gib"] = mem.argument_size_in_bytes / 2 ** 30
        except Exception as e:
            out["xla_temp_gib_error"] = str(e)[:200]
        first, med, _ = timed(lambda: f(tv, ntv, x), jax.block_until_ready, cfg["reps"])
        out.update(rate(med, t, encoder_forward_flops(c, 1, t)), first_s=first)
        stats = jax.devices()[0].memory_stats() or {}
        if "peak_bytes_in_use" in stats:
            out["peak_gib"] = stats["peak_bytes_in_use"] / 2 ** 30
        else:
            out["note"] = "no device memory_stats here (CPU): see xla_temp_gib"
        return out

    rec.guard("long-context forward", "kerasformer jax", f"bf16, attention {attention}", run)


def worker_jax_gen(rec, cfg, workdir):
    jax, keras, kerasformer = jax_setup(rec)
    import numpy as np
    from kerasformer.generation import generate

    c = cfg["gpt2"]
    b, p, n = cfg["gen_batch"], cfg["prompt"], cfg["new"]
    prompts = gpt2_prompts(np, c, b, p)
    flops = gpt2_generate_flops(c, b, p, n)
    path = os.path.join(workdir, "gpt2")

    def run(policy):
        def inner():
            set_policy(keras, policy)
            try:
                gpt2 = kerasformer.build_transformer_model(
                    os.path.join(path, "config.json"), path, model="gpt2",
                    final_activation="linear", return_keras_model=False)
                out = {}
                ids = None

                def call():
                    nonlocal ids
                    ids = generate(gpt2, prompts, max_new_tokens=n)
                    return ids
                first, med, _ = timed(call, lambda x: x, max(2, cfg["reps"] - 2))
                out.update(rate(med, b * n, flops), first_s=first, ids=np.asarray(ids).tolist())
                return out
            finally:
                set_policy(keras, "float32")
        return inner

    rec.guard("gpt2 greedy", "kerasformer jax", "fp32 default precision", run("float32"))
    rec.guard("gpt2 greedy", "kerasformer jax", "bf16 (mixed_bfloat16)", run("mixed_bfloat16"))


def gpt2_prompts(np, c, batch, prompt):
    top = min(EOS, c["vocab_size"] - 1)
    return np.random.RandomState(0).randint(0, top, size=(batch, prompt)).astype("int32")


# ---------------------------------------------------------------------- torch side


def torch_setup(rec):
    import torch
    import transformers

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # float32 means float32: no TF32 in matmuls or convolutions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else platform.processor()
    rec.meta.update(torch=torch.__version__, transformers=transformers.__version__,
                    torch_device=f"{dev.type}: {name}",
                    torch_threads=torch.get_num_threads())
    rec.save()
    return torch, transformers, dev


def torch_sync(torch, dev):
    if dev.type == "cuda":
        return lambda _: torch.cuda.synchronize()
    return lambda _: None


def worker_torch_bert(rec, cfg):
    torch, transformers, dev = torch_setup(rec)
    import numpy as np

    sync = torch_sync(torch, dev)
    n, reps = cfg["matmul"], cfg["reps"]
    for variant, dtype in (("bf16", torch.bfloat16), ("fp32 (TF32 off)", torch.float32)):
        def mm(dtype=dtype):
            g = torch.Generator(device=dev).manual_seed(0)
            a = torch.randn(n, n, device=dev, generator=g).to(dtype)
            b = torch.randn(n, n, device=dev, generator=g).to(dtype)
            _, med, _ = timed(lambda: a @ b, sync, reps)
            return rate(med, flops=2 * n ** 3)
        rec.guard("matmul", "torch", variant, mm)

    c, b, t = cfg["bert"], cfg["batch"], cfg["seq"]
    tok, seg = (torch.from_numpy(a).long().to(dev)
                for a in token_batch(np, c["vocab_size"], b, t))
    mask = torch.ones_like(tok)
    config = transformers.BertConfig(**c, hidden_act="gelu", **NO_DROPOUT, num_labels=2)
    flops = encoder_forward_flops(c, b, t)
    torch.manual_seed(0)
    base = transformers.BertModel(config, add_pooling_layer=False).to(dev).eval()
    rec.meta["torch_attn_implementation"] = getattr(config, "_attn_implementation", None)

    def forward(dtype=None, autocast=False):
        def run():
            model = base if dtype is None else transformers.BertModel(
                config, add_pooling_layer=False).to(dev, dtype).eval()

            def call():
                with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16,
                                                            enabled=autocast):
                    return model(input_ids=tok, token_type_ids=seg,
                                 attention_mask=mask).last_hidden_state
            first, med, _ = timed(call, sync, reps)
            return dict(rate(med, b * t, flops), first_s=first,
                        attention=getattr(model.config, "_attn_implementation", None))
        return run

    rec.guard("bert forward", "transformers torch", "fp32 (TF32 off)", forward())
    rec.guard("bert forward", "transformers torch", "bf16 weights + sdpa",
              forward(torch.bfloat16))
    rec.guard("bert forward", "transformers torch", "AMP bf16 autocast",
              forward(autocast=True))
    del base

    labels = torch.from_numpy(
        np.random.default_rng(1).integers(0, 2, (b,))).long().to(dev)

    def train(autocast):
        def run():
            torch.manual_seed(0)
            model = transformers.BertForSequenceClassification(config).to(dev).train()
            opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01,
                                    fused=dev.type == "cuda")

            def step():
                with torch.autocast(dev.type, torch.bfloat16, enabled=autocast):
                    loss = model(input_ids=tok, token_type_ids=seg, attention_mask=mask,
                                 labels=labels).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return loss
            first, med, _ = timed(step, sync, reps, warmup=2)
            return dict(rate(med, b * t, 3 * flops), first_s=first)
        return run

    rec.guard("bert train step", "transformers torch", "fp32 (TF32 off), AdamW",
              train(False))
    rec.guard("bert train step", "transformers torch", "AMP bf16 autocast, AdamW",
              train(True))


def worker_torch_gen(rec, cfg, workdir):
    torch, transformers, dev = torch_setup(rec)
    import numpy as np

    c = cfg["gpt2"]
    b, p, n = cfg["gen_batch"], cfg["prompt"], cfg["new"]
    path = os.path.join(workdir, "gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(**c, bos_token_id=EOS, eos_token_id=EOS)
    transformers.GPT2LMHeadModel(config).eval().save_pretrained(path)
    prompts = torch.from_numpy(gpt2_prompts(np, c, b, p)).long().to(dev)
    flops = gpt2_generate_flops(c, b, p, n)
    sync = torch_sync(torch, dev)

    def run(dtype):
        def inner():
            model = transformers.GPT2LMHeadModel.from_pretrained(path).to(dev, dtype).eval()
            # Always n new tokens: no end token (as kerasformer without end_id).
            model.generation_config.eos_token_id = None
            model.generation_config.pad_token_id = EOS
            ids = None

            def call():
                nonlocal ids
                with torch.inference_mode():
                    ids = model.generate(prompts, attention_mask=torch.ones_like(prompts),
                                         do_sample=False, max_new_tokens=n,
                                         min_new_tokens=n)
                return ids
            first, med, _ = timed(call, sync, max(2, cfg["reps"] - 2))
            return dict(rate(med, b * n, flops), first_s=first,
                        ids=ids[:, p:].cpu().numpy().tolist())
        return inner

    rec.guard("gpt2 greedy", "transformers torch", "fp32 (TF32 off)", run(torch.float32))
    rec.guard("gpt2 greedy", "transformers torch", "bf16 weights", run(torch.bfloat16))


# ------------------------------------------------------------------------- parent

WORKERS = ["jax_fwd", "torch_bert", "jax_train", "jax_long_fused", "jax_long_explicit",
           "torch_gen", "jax_gen"]


def run_worker(args):
    cfg = SMALL if args.small else FULL
    rec = Recorder(args.out, args.worker)
    name = args.worker
    if name == "jax_fwd":
        worker_jax_fwd(rec, cfg)
    elif name == "jax_train":
        worker_jax_train(rec, cfg)
    elif name.startswith("jax_long_"):
        worker_jax_long(rec, cfg, name[len("jax_long_"):])
    elif name == "jax_gen":
        worker_jax_gen(rec, cfg, args.workdir)
    elif name == "torch_bert":
        worker_torch_bert(rec, cfg)
    elif name == "torch_gen":
        worker_torch_gen(rec, cfg, args.workdir)
    rec.save()


def spawn(name, args, workdir, timeout):
    out = os.path.join(workdir, name + ".json")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--out", out,
           "--workdir", workdir] + (["--small"] if args.small else [])
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONUNBUFFERED="1",
               KF_DEADLINE=str(time.time() + timeout))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch runs after it
    log(f"== worker {name} (timeout {timeout} s)")
    t0 = time.time()
    status = "ok"
    try:
        rc = subprocess.run(cmd, env=env, cwd=ROOT, timeout=timeout).returncode
        if rc:
            status = f"exit {rc}"
    except subprocess.TimeoutExpired:
        status = f"timeout after {timeout} s"
    data = {"rows": [], "meta": {}}
    if os.path.exists(out):
        with open(out) as f:
            data = json.load(f)
    data["meta"].update(status=status, wall_s=time.time() - t0)
    log(f"== worker {name}: {status}, {time.time() - t0:.0f} s")
    return data


def device_rates(name):
    for key, rates in DATASHEET.items():
        if key in (name or ""):
            return key, rates
    return None, {}


def precision_class(row):
    v = row["variant"].lower()
    if "bf16" in v or "amp" in v:
        return "bf16"
    if row["impl"].startswith("transformers") or row["impl"] == "torch" or "highest" in v:
        return "fp32"
    return "tf32"  # JAX's default float32 matmul precision on GPUs


def annotate(rows, device_name):
    """Adds % of datasheet and of the measured matmul of the same precision class."""
    _, sheet = device_rates(device_name)
    mm = {}
    for r in rows:
        if r["section"] == "matmul" and "tflops" in r:
            cls = precision_class(r)
            mm[cls] = max(mm.get(cls, 0), r["tflops"])
    for r in rows:
        if "tflops" not in r:
            continue
        cls = precision_class(r)
        r["precision_class"] = cls
        if cls in sheet:
            r["pct_datasheet"] = 100 * r["tflops"] / sheet[cls]
        if mm.get(cls) and r["section"] != "matmul":
            r["pct_matmul"] = 100 * r["tflops"] / mm[cls]
    return mm


RATIOS = [  # (label, section, kerasformer variant, transformers variant)
    ("forward bf16 vs torch bf16 sdpa", "bert forward", "bf16 (mixed_bfloat16)",
     "bf16 weights + sdpa"),
    ("forward bf16 fused vs torch bf16 sdpa", "bert forward", "bf16, attention fused",
     "bf16 weights + sdpa"),
    ("forward bf16 vs torch AMP", "bert forward", "bf16 (mixed_bfloat16)",
     "AMP bf16 autocast"),
    ("forward fp32 highest vs torch fp32", "bert forward", "fp32 highest", "fp32 (TF32 off)"),
    ("forward fp32 default (TF32-class) vs torch fp32", "bert forward",
     "fp32 default precision", "fp32 (TF32 off)"),
    ("train bf16 train_on_batch vs torch AMP", "bert train step",
     "bf16 train_on_batch + fit", "AMP bf16 autocast, AdamW"),
    ("gpt2 greedy fp32", "gpt2 greedy", "fp32 default precision", "fp32 (TF32 off)"),
    ("gpt2 greedy bf16", "gpt2 greedy", "bf16 (mixed_bfloat16)", "bf16 weights"),
]


def ratios(rows):
    find = {(r["section"], r["variant"]): r for r in rows if "ms" in r}
    out = []
    for label, section, kf, ref in RATIOS:
        a, b = find.get((section, kf)), find.get((section, ref))
        if a and b and a["impl"].startswith("kerasformer") and b["impl"].startswith("trans"):
            out.append(dict(label=label, ratio=b["ms"] / a["ms"]))
        else:
            out.append(dict(label=label, ratio=None))
    fit = find.get(("bert train step", "bf16 train_on_batch + fit"))
    ref = find.get(("bert train step", "AMP bf16 autocast, AdamW"))
    if fit and ref and fit.get("fit_ms"):
        out.append(dict(label="train bf16 model.fit vs torch AMP",
                        ratio=ref["ms"] / fit["fit_ms"]))
    long = {r["variant"]: r for r in rows if r["section"] == "long-context forward"}
    f, e = long.get("bf16, attention fused"), long.get("bf16, attention explicit")
    for key in ("peak_gib", "xla_temp_gib"):
        if f and e and f.get(key) and e.get(key):
            out.append(dict(label=f"long-context {key}: fused / explicit",
                            ratio=f[key] / e[key]))
    # greedy ids agreement (fp32), the decoders' sanity check
    a = find.get(("gpt2 greedy", "fp32 default precision"))
    b = find.get(("gpt2 greedy", "fp32 (TF32 off)"))
    if a and b and a.get("ids") and b.get("ids"):
        import numpy as np

        x, y = np.asarray(a["ids"]), np.asarray(b["ids"])
        if x.shape == y.shape:
            out.append(dict(label="gpt2 fp32 greedy ids equal to transformers (fraction)",
                            ratio=float((x == y).mean())))
    return out


def table(rows, mm):
    lines = ["| work | implementation | variant | ms | tok/s | TFLOP/s | % datasheet | "
             "% matmul | first call s | notes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        def g(k, f="{:.3g}"):
            return f.format(r[k]) if isinstance(r.get(k), (int, float)) else ""
        notes = r.get("error") or "; ".join(
            x for x in (r.get("note"), f"attention {r['attention']}" if r.get("attention")
                        else None,
                        f"peak {r['peak_gib']:.3g} GiB" if r.get("peak_gib") else None,
                        f"XLA temp {r['xla_temp_gib'] * 1024:.4g} MiB" if r.get("xla_temp_gib")
                        else None) if x)
        tok = f"{r['tok_s']:,.0f}" if r.get("tok_s") else ""
        lines.append(f"| {r['section']} | {r['impl']} | {r['variant']} | {g('ms', '{:.2f}')} | "
                     f"{tok} | {g('tflops', '{:.3g}')} | {g('pct_datasheet', '{:.0f}%')} | "
                     f"{g('pct_matmul', '{:.0f}%')} | {g('first_s', '{:.1f}')} | "
                     f"{notes.replace('|', '/')[:160]} |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="tiny shapes (CPU check, < 3 min)")
    p.add_argument("--json", help="write every number here")
    p.add_argument("--budget", type=float, help="seconds for all workers")
    p.add_argument("--only", help="comma-separated workers: " + ",".join(WORKERS))
    p.add_argument("--write", action="store_true", help="update RESULTS.md also with --small")
    p.add_argument("--no-write", action="store_true", help="never update RESULTS.md")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return run_worker(args)

    cfg = dict(SMALL if args.small else FULL)
    if args.budget:
        cfg["budget"] = args.budget
    t_start = time.time()
    names = args.only.split(",") if args.only else WORKERS
    rows, metas = [], {}
    with tempfile.TemporaryDirectory(prefix="kf-accel-") as workdir:
        for name in names:
            left = cfg["budget"] - (time.time() - t_start)
            timeout = int(min(cfg["caps"].get(name, 150), left - 5))
            if timeout < 20:
                log(f"== worker {name}: skipped, {left:.0f} s left of the budget")
                metas[name] = {"status": "skipped (time budget)", "wall_s": 0}
                continue
            data = spawn(name, args, workdir, timeout)
            rows += data["rows"]
            metas[name] = data["meta"]
    meta = {}
    for m in metas.values():
        meta.update({k: v for k, v in m.items() if k not in ("status", "wall_s")})
    device = meta.get("torch_device") or meta.get("jax_device") or "?"
    mm = annotate(rows, device)
    rat = ratios(rows)
    wall = time.time() - t_start
    cmd = "KERAS_BACKEND=jax python benchmarks/accelerator.py" + (
        " --small" if args.small else "")
    date = f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC"
    versions = ", ".join(f"{k} {meta[k]}" for k in ("jax", "keras", "torch", "transformers")
                         if k in meta)
    sheet_name, sheet = device_rates(device)
    out = [BEGIN, "## Accelerator: kerasformer (JAX) vs transformers + torch, same device",
           "", "Generated by `benchmarks/accelerator.py` (this section only).", "",
           f"- Date: {date}; command: `{cmd}`; whole run {wall:.0f} s",
           f"- Device: {device} (JAX: {meta.get('jax_device', '?')})",
           f"- Versions: python {platform.python_version()}, {versions}",
           f"- Shapes: bert {cfg['bert']['num_hidden_layers']}L/{cfg['bert']['hidden_size']}H "
           f"B={cfg['batch']} T={cfg['seq']}; long-context RoFormer-shaped B=1 "
           f"T={cfg['long_seq']}; GPT-2 {cfg['gpt2']['n_layer']}L/{cfg['gpt2']['n_embd']}H "
           f"B={cfg['gen_batch']} prompt {cfg['prompt']} + {cfg['new']} new (greedy)",
           "- FLOPs analytic (2·matmul params·tokens + 4·B·T²·H·L; train = 3× forward). "
           + (f"Datasheet dense TFLOP/s ({sheet_name}): " + ", ".join(
               f"{k} {v:g}" for k, v in sheet.items()) if sheet else
               "No datasheet rate for this device.")
           + " Measured matmul (same run): " + (", ".join(
               f"{k} {v:.3g}" for k, v in mm.items()) or "n/a") + " TFLOP/s.",
           "- Workers: " + ", ".join(f"{n} {m.get('status')} ({m.get('wall_s', 0):.0f} s)"
                                     for n, m in metas.items()),
           ""] + table(rows, mm) + ["", "| ratio (transformers time / kerasformer time; "
                                      "long-context: fused / explicit) | value |", "|---|---:|"]
    out += [f"| {r['label']} | " + ("n/a" if r["ratio"] is None else f"{r['ratio']:.2f}") + " |"
            for r in rat]
    out.append(END)
    section = "\n".join(out) + "\n"
    print(section)
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"date": date, "command": cmd, "device": device, "meta": meta,
                       "workers": metas, "matmul_tflops": mm, "rows": rows, "ratios": rat,
                       "wall_s": wall, "config": cfg}, f, indent=1)
        os.replace(tmp, args.json)
        log(f"wrote {args.json}")
    if not args.no_write and (args.write or not args.small):
        replace_section(RESULTS_MD, BEGIN, END, section)
        log(f"wrote {os.path.relpath(RESULTS_MD, ROOT)}")


if __name__ == "__main__":
    main()
