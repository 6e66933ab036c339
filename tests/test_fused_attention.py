"""``attention_implementation``: the fused path (``keras.ops.dot_product_attention``) and
the explicit einsum path give the same outputs for every family and application, with
padding (a fully padded row included), T5's position bias, RoPE and KV caches; "auto"
takes the explicit path where the fused kernel is not exact (NEZHA's relative positions,
attention dropout while training) and gives identical results there.

Reference: the explicit einsum path, which the parity tests check against
``transformers``. Tolerance: float32, max |fused - explicit| <= 1e-5 (the two paths
round differently: scale before/after the logits, XLA's fused softmax).
"""
import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.layers import MultiHeadAttention
from kerasformer.ops import causal_mask

BACKEND = keras.backend.backend()
TOLERANCE = 1e-5
VOCAB = 50
COMMON = dict(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=24, initializer_range=0.3)
WITH_POSITIONS = dict(COMMON, max_position=32)
T5_CONFIG = dict(COMMON, attention_head_size=8, relative_attention_num_buckets=8,
                 relative_attention_max_distance=12)
ENCODER_FAMILIES = ["bert", "roberta", "albert", "albert_unshared", "electra", "roformer",
                    "roformer_v2"]
GPT_FAMILIES = ["gpt", "gpt2", "gpt2_ml"]


def report(what, value):
    print(f"[{BACKEND}] {what}: {value:.3g}")
    return value


def build(model, application="encoder", implementation="auto", weights=None, **extra):
    config = T5_CONFIG if model.startswith("t5") else WITH_POSITIONS
    if model in GPT_FAMILIES:
        extra.setdefault("pad_token_id", 0)  # GPT has none by default: exercise padding
    keras.utils.set_random_seed(0)
    transformer = build_transformer_model(
        model=model, application=application, attention_implementation=implementation,
        return_keras_model=False, **config, **extra)
    if weights is not None:
        transformer.model.set_weights(weights)
    return transformer


def make_inputs(transformer, batch=3, length=9, seed=0):
    """Token ids with padding (row 1 padded after 5 tokens, row 2 all padding: every key
    of its queries masked), segment ids 0 then 1 (the UniLM source/target split)."""
    rng = np.random.default_rng(seed)
    pad = transformer.pad_token_id or 0
    tokens = rng.integers(pad + 1, VOCAB, (batch, length)).astype("int32")
    tokens[1, 5:] = pad
    tokens[2, :] = pad
    inputs = []
    for tensor in transformer.model.inputs:
        if "Segment" in tensor.name:
            segments = np.zeros_like(tokens)
            segments[:, 4:] = 1
            inputs.append(segments)
        elif "Decoder" in tensor.name:
            inputs.append(rng.integers(1, VOCAB, (batch, length - 2)).astype("int32"))
        else:
            inputs.append(tokens)
    return inputs


def outputs(transformer, inputs, training=False):
    result = transformer.model(model_input(inputs), training=training)
    result = result if isinstance(result, (list, tuple)) else [result]
    return [ops.convert_to_numpy(ops.cast(r, "float32")) for r in result]


def model_input(inputs):
    return inputs[0] if len(inputs) == 1 else inputs


def attention_layers(transformer):
    return [layer for layer in transformer.model.layers
            if isinstance(layer, MultiHeadAttention)]


def compare(model, application, **extra):
    explicit = build(model, application, "explicit", **extra)
    fused = build(model, application, "fused", weights=explicit.model.get_weights(), **extra)
    assert all(layer.attention_implementation == "fused" for layer in attention_layers(fused))
    inputs = make_inputs(explicit)
    expected, got = outputs(explicit, inputs), outputs(fused, inputs)
    for e, g in zip(expected, got):
        assert np.all(np.isfinite(g)), "NaN/inf on the fused path"
        assert np.all(np.isfinite(e)), "NaN/inf on the explicit path"
    delta = max(float(np.max(np.abs(e - g))) for e, g in zip(expected, got))
    assert report(f"{model}/{application} fused vs explicit max|diff|", delta) <= TOLERANCE
    return explicit, fused


@pytest.mark.parametrize("application", ["encoder", "lm", "unilm"])
@pytest.mark.parametrize("model", ENCODER_FAMILIES)
def test_encoder_families_fused_equals_explicit(model, application):
    compare(model, application)


@pytest.mark.parametrize("application", ["lm", "unilm"])
@pytest.mark.parametrize("model", GPT_FAMILIES)
def test_gpt_families_fused_equals_explicit(model, application):
    extra = dict(segment_vocab_size=2) if application == "unilm" else {}
    compare(model, application, **extra)


@pytest.mark.parametrize("model", ["t5", "t5.1.1", "t5.1.1_encoder"])
def test_t5_position_bias_fused_equals_explicit(model):
    explicit, _ = compare(model, "encoder")
    # T5 logits are not scaled and carry the relative bias: both reach the fused op.
    layer = attention_layers(explicit)[0]
    assert layer.attention_scale is False


def test_cached_decoding_on_the_fused_path():
    """The KV cache (prefill, then one token at a time) on the fused path gives the full
    explicit forward."""
    explicit = build("bert", "lm", "explicit", with_mlm="linear")
    fused = build("bert", "lm", "fused", weights=explicit.model.get_weights(),
                  with_mlm="linear")
    tokens = np.random.default_rng(1).integers(1, VOCAB, (2, 7)).astype("int32")
    segments = np.zeros_like(tokens)
    full = outputs(explicit, [tokens, segments])[0]
    max_len, chunks = 12, []
    caches = fused.init_caches(2, max_len)
    for start, stop in [(0, 4), (4, 5), (5, 6), (6, 7)]:
        mask = causal_mask(stop - start, max_len, offset=start)
        logits, caches = fused.call_with_cache(
            [tokens[:, start:stop], segments[:, start:stop]], caches, start, mask)
        chunks.append(ops.convert_to_numpy(logits))
    delta = float(np.max(np.abs(np.concatenate(chunks, axis=1) - full)))
    assert report("bert lm cached fused vs full explicit max|diff|", delta) <= TOLERANCE


def test_t5_cached_decoding_on_the_fused_path():
    explicit = build("t5.1.1", implementation="explicit")
    fused = build("t5.1.1", implementation="fused", weights=explicit.model.get_weights())
    enc = np.random.default_rng(2).integers(1, VOCAB, (2, 8)).astype("int32")
    enc[1, 5:] = 0
    dec = np.random.default_rng(3).integers(1, VOCAB, (2, 6)).astype("int32")
    full = outputs(explicit, [enc, dec])[0]
    context = fused.encoder(enc)
    context_mask = (enc != 0)[:, None, None, :]
    max_len, chunks = 8, []
    caches = fused.decoder_builder.init_caches(2, max_len, context)
    for start, stop in [(0, 3)] + [(i, i + 1) for i in range(3, 6)]:
        mask = causal_mask(stop - start, max_len, offset=start)
        logits, caches = fused.decoder_builder.call_with_cache(
            [dec[:, start:stop]], caches, start, mask, context_mask=context_mask)
        chunks.append(ops.convert_to_numpy(logits))
    delta = float(np.max(np.abs(np.concatenate(chunks, axis=1) - full)))
    assert report("t5.1.1 cached fused vs full explicit max|diff|", delta) <= TOLERANCE


@pytest.mark.parametrize("rotary", ["half", None])
def test_layer_fused_equals_explicit(rotary):
    """Layer level: RoPE with per-row position ids (self-attention) or cross-attention
    over a longer context (no RoPE), a random mask with a fully masked query row, an
    additive bias."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    context = None if rotary else rng.normal(size=(2, 7, 8)).astype("float32")
    k_len = 5 if rotary else 7
    mask = rng.random((2, 1, 5, k_len)) > 0.3
    mask[0, 0, 2] = False  # a query row that sees nothing
    bias = rng.normal(size=(1, 2, 5, k_len)).astype("float32")
    positions = np.array([[3, 4, 5, 6, 7], [0, 1, 2, 3, 4]], "int32") if rotary else None
    results = {}
    for implementation in ("explicit", "fused"):
        keras.utils.set_random_seed(0)
        layer = MultiHeadAttention(heads=2, head_size=4, rotary=rotary,
                                   attention_implementation=implementation)
        results[implementation] = ops.convert_to_numpy(layer(
            x, key_value=context, attention_mask=mask, attention_bias=bias,
            position_ids=positions))
    assert np.all(np.isfinite(results["fused"]))
    delta = float(np.max(np.abs(results["fused"] - results["explicit"])))
    assert report(f"layer rotary={rotary} fused vs explicit max|diff|", delta) <= TOLERANCE


@pytest.mark.parametrize("model", ["nezha", "gau_alpha"])
def test_auto_takes_the_explicit_path_without_a_fused_kernel(model):
    explicit = build(model, implementation="explicit")
    auto = build(model, implementation="auto", weights=explicit.model.get_weights())
    inputs = make_inputs(explicit)
    for e, a in zip(outputs(explicit, inputs), outputs(auto, inputs)):
        assert np.all(np.isfinite(a))
        np.testing.assert_array_equal(a, e)  # the same computation, bit for bit
    for layer in attention_layers(auto):  # NEZHA: relative positions force explicit
        assert layer.uses_fused(relative_positions=np.zeros((1, 1, 8), "float32")) is False
    with pytest.raises(ValueError, match="attention_implementation='fused' is not available"):
        build(model, implementation="fused")


def test_auto_takes_the_explicit_path_for_attention_dropout_while_training():
    extra = dict(attention_dropout_rate=0.3)
    explicit = build("bert", "encoder", "explicit", **extra)
    auto = build("bert", "encoder", "auto", weights=explicit.model.get_weights(), **extra)
    layer = attention_layers(auto)[0]
    assert layer.uses_fused(training=True) is False and layer.uses_fused(training=False)
    inputs = make_inputs(explicit)
    # Training: the explicit path with the same dropout masks (same seeds), bit for bit.
    np.testing.assert_array_equal(outputs(auto, inputs, training=True)[0],
                                  outputs(explicit, inputs, training=True)[0])
    # Inference: no dropout, so auto is fused and equal within the tolerance.
    delta = float(np.max(np.abs(outputs(auto, inputs)[0] - outputs(explicit, inputs)[0])))
    assert delta <= TOLERANCE
    fused = build("bert", "encoder", "fused", weights=explicit.model.get_weights(), **extra)
    with pytest.raises(ValueError, match="attention dropout"):
        fused.model(model_input(inputs), training=True)


def test_invalid_value_raises_a_clear_error():
    with pytest.raises(ValueError, match=r"attention_implementation must be one of "
                                         r"\('auto', 'fused', 'explicit'\), got 'flash'"):
        build("bert", implementation="flash")
    with pytest.raises(ValueError, match="attention_implementation must be one of"):
        MultiHeadAttention(heads=2, head_size=4, attention_implementation="sdpa")
    with pytest.raises(ValueError, match="key_size == head_size"):
        MultiHeadAttention(heads=2, head_size=4, key_size=8, attention_implementation="fused")


def test_config_round_trip_keeps_the_choice():
    layer = MultiHeadAttention(heads=2, head_size=4, attention_implementation="explicit")
    clone = MultiHeadAttention.from_config(layer.get_config())
    assert clone.attention_implementation == "explicit"
