"""The attention layer's KV cache and the builder's cached forward give the uncached
results: the design generation (a later issue) stands on."""
import numpy as np

import keras
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.layers import MultiHeadAttention
from kerasformer.ops import causal_mask


def test_attention_cache_equals_full_causal_attention():
    keras.utils.set_random_seed(0)
    layer = MultiHeadAttention(heads=2, head_size=4, rotary="interleaved")
    x = np.random.default_rng(0).normal(size=(2, 6, 8)).astype("float32")
    full = ops.convert_to_numpy(layer(x, attention_mask=causal_mask(6)))
    cache = (ops.zeros((2, 10, 2, 4)), ops.zeros((2, 10, 2, 4)))
    steps = []
    # Prefill 3 tokens, then one token at a time.
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, 6)]:
        mask = causal_mask(stop - start, 10, offset=start)
        out, cache = layer(x[:, start:stop], attention_mask=mask, cache=cache, cache_index=start)
        steps.append(ops.convert_to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_builder_cached_forward_equals_full_lm_forward():
    keras.utils.set_random_seed(0)
    transformer = build_transformer_model(
        vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=24, max_position=32, application="lm", with_mlm="linear",
        initializer_range=0.3, return_keras_model=False,
    )
    ids = np.random.default_rng(1).integers(1, 40, size=(2, 7)).astype("int32")
    seg = np.zeros_like(ids)
    full = ops.convert_to_numpy(transformer.model([ids, seg]))
    max_len = 12
    caches = transformer.init_caches(2, max_len)
    assert sorted(caches) == ["self-0", "self-1"]
    outputs = []
    for start, stop in [(0, 4), (4, 5), (5, 6), (6, 7)]:
        mask = causal_mask(stop - start, max_len, offset=start)
        logits, caches = transformer.call_with_cache(
            [ids[:, start:stop], seg[:, start:stop]], caches, start, mask)
        outputs.append(ops.convert_to_numpy(logits))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), full, atol=1e-4)
