"""kerasformer.lora: LoRA on Keras core layers (arXiv:2106.09685) and LoRA+ learning rates
(arXiv:2402.12354), on a tiny BERT built by ``build_transformer_model``.

Runs under ``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``; float32; tolerances
are absolute max |Δ| unless stated.
"""
import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer.lora import (
    enable_lora,
    extend_with_lora_plus,
    load_lora_weights,
    lora_layers,
    lora_plus_lr_multipliers,
    lora_weights,
    merge_lora,
    save_lora_weights,
)
from kerasformer.optimizers import extend_with_parameter_wise_lr

CONFIG = dict(
    vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=37, max_position=16, initializer_range=0.2,
)
TARGET = r"(q|v)_dense$|^Embedding-Token$"


def report(what, value):
    print(f"max|Δ| [{keras.backend.backend()}] {what}: {value:.3g}")
    return value


def _model(**kwargs):
    keras.utils.set_random_seed(0)
    model = build_transformer_model(model="bert", **CONFIG, **kwargs)
    rng = np.random.default_rng(0)
    # Non-trivial biases and LayerNorm parameters (a wrongly frozen or merged one shows).
    model.set_weights([
        w + 0.1 * rng.standard_normal(w.shape).astype("float32") if w.ndim == 1 else w
        for w in model.get_weights()
    ])
    return model


def _inputs():
    rng = np.random.RandomState(0)
    tokens = rng.randint(1, CONFIG["vocab_size"], (3, 10)).astype("int32")
    tokens[1, 7:] = 0
    segments = np.zeros_like(tokens)
    segments[:, 5:] = 1
    return [tokens, segments]


def _randomize_lora(model, seed=1, scale=0.3):
    rng = np.random.default_rng(seed)
    for layer in lora_layers(model).values():
        for name in ("lora_kernel_b", "lora_embeddings_b"):
            if hasattr(layer, name):
                variable = getattr(layer, name)
                variable.assign(scale * rng.standard_normal(variable.shape).astype("float32"))


def _run(model, inputs):
    """Eager forward pass (no compiled predict function: cheaper for a tiny model)."""
    out = model(inputs, training=False)
    return [keras.ops.convert_to_numpy(o) for o in out] if isinstance(out, (list, tuple)) \
        else keras.ops.convert_to_numpy(out)


def _max_diff(a, b):
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def inputs():
    return _inputs()


def test_enable_lora_freezes_all_but_adapters_and_keeps_outputs(inputs):
    model = _model(with_mlm=True)  # tied MLM head: Embedding-Token in "dense" mode too
    before = _run(model, inputs)
    paths = enable_lora(model, rank=4, alpha=8, target=TARGET)
    assert sorted(paths) == [
        "Embedding-Token",
        "Transformer-0-MultiHeadSelfAttention/q_dense",
        "Transformer-0-MultiHeadSelfAttention/v_dense",
        "Transformer-1-MultiHeadSelfAttention/q_dense",
        "Transformer-1-MultiHeadSelfAttention/v_dense",
    ]
    trainable = sorted(v.path for v in model.trainable_variables)
    assert trainable == sorted(
        [f"{p}/lora_kernel_{m}" for p in paths if p != "Embedding-Token" for m in "ab"]
        + ["Embedding-Token/lora_embeddings_a", "Embedding-Token/lora_embeddings_b"]
    )
    layer = lora_layers(model)["Transformer-0-MultiHeadSelfAttention/q_dense"]
    assert layer.lora_rank == 4 and layer.lora_alpha == 8
    # B starts at zero: the LoRA model is the base model (exactly).
    after = _run(model, inputs)
    assert report("LoRA at init vs base", _max_diff(before, after)) == 0.0

    # `trainable` keeps matching weights trainable (LayerNorms here).
    model2 = _model()
    enable_lora(model2, rank=2, trainable=r"Norm/(gamma|beta)$")
    names = {v.path for v in model2.trainable_variables}
    assert "Embedding-Norm/gamma" in names and "Transformer-1-FeedForward-Norm/beta" in names
    assert not any(n.endswith("/kernel") or n.endswith("/bias") for n in names)


def test_enable_lora_errors():
    model = _model()
    with pytest.raises(ValueError, match="No Dense/EinsumDense/Embedding layer path"):
        enable_lora(model, rank=2, target="no_such_layer")
    with pytest.raises(ValueError, match="positive int"):
        enable_lora(model, rank=0)
    enable_lora(model, rank=2)
    with pytest.raises(ValueError, match="already enabled"):
        enable_lora(model, rank=2)


def test_merge_equals_unmerged_and_removes_adapters(inputs):
    model = _model(with_mlm="linear")
    enable_lora(model, rank=4, alpha=16, target=TARGET + r"|FeedForward/(i0|o)_dense$")
    _randomize_lora(model)
    # predict() here on purpose: its compiled function must be re-traced after merging
    # (a stale tf.function would still add A@B to the merged kernel).
    unmerged = model.predict(inputs, verbose=0)
    n_weights = len(model.weights)
    merged_paths = merge_lora(model)
    assert len(merged_paths) == 9
    assert not lora_layers(model)
    assert len(model.weights) == n_weights - 2 * len(merged_paths)
    assert not any("lora" in v.path for v in model.weights)
    merged = model.predict(inputs, verbose=0)
    # The same kernel value either way; only the float32 sum W + s*A@B is rounded.
    assert report("merged vs unmerged LoRA", _max_diff(unmerged, merged)) <= 1e-5
    # A merged model is a plain model: its kernels hold W + (alpha/rank) A@B.
    fresh = _model(with_mlm="linear")
    fresh.set_weights(model.get_weights())
    assert _max_diff(_run(fresh, inputs), _run(model, inputs)) == 0.0


@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_save_load_lora_weights_round_trip(tmp_path, inputs, suffix):
    model = _model()
    enable_lora(model, rank=3, alpha=6, target=TARGET)
    _randomize_lora(model, seed=2)
    for layer in lora_layers(model).values():  # A too, so a missed A would show
        a = getattr(layer, "lora_kernel_a", None)
        a = layer.lora_embeddings_a if a is None else a
        a.assign(a + 0.05)
    expected = _run(model, inputs)
    path = str(tmp_path / f"adapter{suffix}")
    save_lora_weights(model, path)

    base = _model()  # same base weights, no LoRA yet: load enables it with rank/alpha
    load_lora_weights(base, path)
    assert sorted(lora_layers(base)) == sorted(lora_layers(model))
    layer = lora_layers(base)["Embedding-Token"]
    assert (layer.lora_rank, layer.lora_alpha) == (3, 6)
    assert sorted(v.path for v in base.trainable_variables) == sorted(lora_weights(model))
    got = _run(base, inputs)
    assert report(f"LoRA save/load {suffix}", _max_diff(expected, got)) == 0.0

    wrong = _model()
    enable_lora(wrong, rank=2, target=TARGET)
    with pytest.raises(ValueError, match="rank 2"):
        load_lora_weights(wrong, path)


def _one_adam_step(model, initial, inputs, target, optimizer):
    model.set_weights(initial)
    model.compile(optimizer=optimizer, loss="mse")
    model.train_on_batch(inputs, target)
    return {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}


def test_lora_plus_first_step_update_of_b_is_ratio_times(inputs):
    model = _model()
    enable_lora(model, rank=4, target=TARGET)
    _randomize_lora(model)  # B != 0, so A has a gradient as well
    initial = model.get_weights()
    start = {v.path: w for v, w in zip(model.weights, initial)}
    target = np.random.default_rng(3).standard_normal((3, 10, 32)).astype("float32")
    ratio = 16.0
    lr = 1e-3

    ParamWiseAdam = extend_with_parameter_wise_lr(keras.optimizers.Adam)
    one = _one_adam_step(model, initial, inputs, target, ParamWiseAdam(
        learning_rate=lr, paramwise_lr_schedule=lora_plus_lr_multipliers(1.0)))
    plus = _one_adam_step(model, initial, inputs, target, ParamWiseAdam(
        learning_rate=lr, paramwise_lr_schedule=lora_plus_lr_multipliers(ratio)))
    AdamLoRAPlus = extend_with_lora_plus(keras.optimizers.Adam)
    optimizer = AdamLoRAPlus(learning_rate=lr, lora_plus_ratio=ratio)
    assert optimizer.paramwise_lr_schedule == lora_plus_lr_multipliers(ratio)
    restored = AdamLoRAPlus.from_config(optimizer.get_config())
    assert restored.lora_plus_ratio == ratio
    assert restored.paramwise_lr_schedule == optimizer.paramwise_lr_schedule
    helper = _one_adam_step(model, initial, inputs, target, optimizer)

    worst_b = worst_a = 0.0
    moved_b = 0
    for path, w0 in start.items():
        d1, dr, dh = one[path] - w0, plus[path] - w0, helper[path] - w0
        if "lora_" not in path:
            assert np.array_equal(d1, 0 * d1) and np.array_equal(dr, 0 * dr), path  # frozen
        elif path.endswith("_b"):
            moved_b += int(np.max(np.abs(d1)) > 0.5 * lr)
            worst_b = max(worst_b, float(np.max(np.abs(dr - ratio * d1))),
                          float(np.max(np.abs(dh - ratio * d1))))
        else:
            assert np.max(np.abs(d1)) > 0.5 * lr, path  # A is updated, at the base rate
            worst_a = max(worst_a, float(np.max(np.abs(dr - d1))), float(np.max(np.abs(dh - d1))))
    assert moved_b == 5
    # Adam's first step is ~lr * sign(g) = 1e-3 per element; the tolerance is float32
    # rounding of w + Δ around |w| ~ 1 (6e-8 per ulp, times 16).
    assert report("LoRA+ ΔB(16) - 16 ΔB(1)", worst_b) <= 2e-6
    assert report("LoRA+ ΔA(16) - ΔA(1)", worst_a) <= 2e-7
