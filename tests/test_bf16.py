"""``mixed_bfloat16`` end to end for every family: the same weights under the float32
policy and under ``mixed_bfloat16`` give the same head outputs within bf16's precision,
heads return float32, nothing is NaN (padding and a fully padded row included), norms
compute in float32 with float32 gamma/beta.

Bound: bfloat16 keeps 8 significant bits, a relative rounding of u = 2**-9 ~ 2e-3 per
operation. A tiny model applies a few dozen roundings in sequence (embeddings, q/k/v,
logits, FFN, residuals, the vocabulary projection), so errors of ~10 u are expected:
we allow max |p_bf16 - p_fp32| <= 2e-2 on probabilities (in [0, 1]) and
max |Δ| <= 2e-2 * max |y_fp32| on logits and hidden states. The float32 reference is
the float32 policy on the same weights (itself checked against ``transformers`` by the
parity tests).
"""

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.layers import LayerNormalization

BACKEND = keras.backend.backend()
BOUND = 2e-2
VOCAB = 60
COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=48, initializer_range=0.1)
# family -> builder kwargs: every head the family has, so each is checked for float32.
FAMILIES = {
    "bert": dict(with_pool=True, with_nsp=True, with_mlm=True),
    "roberta": dict(with_mlm="linear"),
    "albert": dict(with_pool=True, with_mlm=True),
    "albert_unshared": dict(with_mlm=True),
    "electra": dict(with_discriminator=True),
    "nezha": dict(with_mlm=True),
    "roformer": dict(with_pool=True, with_mlm=True),
    "roformer_v2": dict(with_mlm=True),
    "gau_alpha": dict(with_mlm=True),
    "gpt": dict(pad_token_id=0),
    "gpt2": dict(pad_token_id=0, final_activation="linear"),
    "gpt2_ml": dict(),
    "t5": dict(attention_head_size=8, relative_attention_num_buckets=8,
               relative_attention_max_distance=12),
    "t5.1.1": dict(attention_head_size=8, relative_attention_num_buckets=8,
                   relative_attention_max_distance=12, with_lm="linear"),
}


# Shared with the existing mixed-precision tests (the tests folder is on sys.path).
from test_mixed_precision_remat import dtype_policy, report  # noqa: E402


def build(model, **extra):
    config = {**COMMON, **FAMILIES.get(model, {}), **extra}
    if not model.startswith("t5"):
        config["max_position"] = 32
    keras.utils.set_random_seed(0)
    return build_transformer_model(model=model, return_keras_model=False, **config)


def perturb(model):
    """Norm gains/biases away from 1/0 so a dropped or bf16-rounded one shows."""
    rng = np.random.default_rng(1)
    for w in model.weights:
        if len(w.shape) == 1:
            w.assign(w.numpy() + rng.normal(0, 0.1, w.shape).astype("float32"))


def make_inputs(model):
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, VOCAB, (3, 10)).astype("int32")
    tokens[1, 6:] = 0
    tokens[2, :] = 0  # every key masked: uniform attention, never NaN
    inputs = []
    for tensor in model.inputs:
        if "Segment" in tensor.name:
            inputs.append((np.arange(10)[None] >= 5).astype("int32").repeat(3, 0))
        elif "Decoder" in tensor.name:
            inputs.append(rng.integers(1, VOCAB, (3, 7)).astype("int32"))
        else:
            inputs.append(tokens)
    return inputs[0] if len(inputs) == 1 else inputs


def as_list(y):
    return list(y) if isinstance(y, (list, tuple)) else [y]


def is_probability(layer_name, fp32):
    return ("Activation" in layer_name or "NSP" in layer_name
            or "Discriminator" in layer_name) and fp32.min() >= 0 and fp32.max() <= 1


def run_pair(model, training=False, **extra):
    reference = build(model, **extra)
    perturb(reference.model)
    with dtype_policy("mixed_bfloat16"):
        mixed = build(model, **extra)
    assert all(v.dtype == "float32" for v in mixed.model.weights)  # float32 master weights
    mixed.model.set_weights(reference.model.get_weights())
    inputs = make_inputs(reference.model)
    expected = [ops.convert_to_numpy(y) for y in as_list(reference.model(inputs))]
    got = as_list(mixed.model(inputs, training=training))
    return mixed, expected, got


@pytest.mark.parametrize("model", sorted(FAMILIES))
def test_bf16_heads_float32_and_within_bound(model):
    mixed, expected, got = run_pair(model)
    output_layers = [t._keras_history[0] for t in as_list(mixed.model.output)]
    for layer, e, g in zip(output_layers, expected, got):
        assert keras.backend.standardize_dtype(g.dtype) == "float32", (
            f"{layer.name} returns {g.dtype} under mixed_bfloat16")
        g = ops.convert_to_numpy(g)
        assert np.all(np.isfinite(g)), f"{layer.name}: NaN/inf under mixed_bfloat16"
        delta = float(np.max(np.abs(g - e)))
        if is_probability(layer.name, e):
            assert report(f"{model} {layer.name} bf16 vs fp32 max|Δp|", delta) <= BOUND
        else:
            scale = float(np.max(np.abs(e)))
            assert report(f"{model} {layer.name} bf16 vs fp32 max|Δ|/max|y|",
                          delta / scale) <= BOUND


@pytest.mark.parametrize("model", ["bert", "t5.1.1_encoder", "gau_alpha"])
def test_bf16_sequence_output(model):
    """No head: the hidden states stay in the compute dtype (bfloat16), within bound."""
    extra = {k: False for k in ("with_pool", "with_nsp", "with_mlm") if k in FAMILIES.get(
        model, {})}
    mixed, expected, got = run_pair(model, **extra)
    (e,), (g,) = expected, got
    assert keras.backend.standardize_dtype(g.dtype) == "bfloat16"
    g = ops.convert_to_numpy(ops.cast(g, "float32"))
    assert np.all(np.isfinite(g))
    relative = float(np.max(np.abs(g - e))) / float(np.max(np.abs(e)))
    assert report(f"{model} sequence output bf16 vs fp32 max|Δ|/max|y|", relative) <= BOUND


def test_bf16_explicit_attention_with_dropout_in_training_is_finite():
    """The explicit path (taken for attention dropout while training) under bf16."""
    _, _, got = run_pair("bert", training=True, attention_dropout_rate=0.2)
    assert all(np.all(np.isfinite(ops.convert_to_numpy(g))) for g in got)


def test_norms_compute_in_float32_with_float32_gains():
    """gamma/beta are read as float32 (not rounded to bfloat16 by Keras's autocast):
    a gain of 1 + 2**-8 (rounds to 1.0 in bfloat16, whose spacing at 1 is 2**-7) still
    changes the bfloat16 output."""
    x = np.random.default_rng(0).normal(size=(2, 3, 16)).astype("float32")
    with dtype_policy("mixed_bfloat16"):
        norm = LayerNormalization(epsilon=1e-6, center=False)
        norm.build(x.shape)
    assert norm.gamma.dtype == "float32"
    outputs = {}
    for gain in (1.0, 1.0 + 2**-8):
        norm.gamma.assign(np.full(16, gain, "float32"))
        y = norm(ops.cast(x, "bfloat16"))  # a bfloat16 input, as inside a mixed model
        assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"
        outputs[gain] = ops.convert_to_numpy(ops.cast(y, "float32"))
    # With a bf16-rounded gain both outputs would be identical.
    assert not np.array_equal(outputs[1.0], outputs[1.0 + 2**-8])


def test_span_and_crf_heads_return_float32_under_mixed_bfloat16():
    from kerasformer.layers import ConditionalRandomField, GlobalPointer

    x = np.random.default_rng(0).normal(size=(2, 5, 16)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "int32")
    with dtype_policy("mixed_bfloat16"):
        pointer, crf = GlobalPointer(heads=2, head_size=4), ConditionalRandomField()
        emissions = crf(keras.layers.Dense(3)(x), mask=mask)
        logits = pointer(x, mask=mask)
    for y in (emissions, logits):
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
        assert np.all(np.isfinite(ops.convert_to_numpy(y)))
    assert crf._trans.dtype == "float32"
