"""Generation: the compiled KV-cache decoder (`kerasformer.generation.generate`) and the
bert4keras `AutoRegressiveDecoder` (`kerasformer.snippets`).

Oracles:

* ``transformers.generate`` (torch, float32) on the same weights: a tiny random
  ``GPT2LMHeadModel`` and ``T5ForConditionalGeneration`` saved with ``save_pretrained``,
  initialised at a large scale so logits have clear margins (asserted on the oracle's own
  scores for greedy decoding). Token ids must be IDENTICAL, for greedy (with repetition
  penalty and min_new_tokens) and beam search (num_beams, num_return_sequences,
  length_penalty, early_stopping False / True / "never"). The end token is picked from
  the oracle's own continuation so that sequences do stop early.
* the recompute-the-prefix path (`AutoRegressiveDecoder` + the full keras.Model) for a
  BERT built with ``application="lm"`` and ``"unilm"`` (cached == uncached), one prompt
  at a time against a padded batch of prompts of different lengths.

Also: sampling reproducible under a seed, ``top_k=1`` equal to greedy, a batch equal to
one-by-one calls, one compilation reused across calls, and errors. Runs under
``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``.
"""
import os
import time

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer.generation import generate, trace_count
from kerasformer.snippets import AutoRegressiveDecoder, sequence_padding

VOCAB = 96
N_NEW = 10
GPT2_PROMPTS = [[5, 17, 0, 44, 3, 61, 9], [12, 7, 30], [50, 2, 88, 41, 19]]


def upto_end(row, end_id):
    """A sequence as a list, cut after its first end token (the pad value follows it)."""
    out = []
    for token in np.asarray(row).tolist():
        out.append(int(token))
        if token == end_id:
            break
    return out


def timed(label, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    print(f"[{keras.backend.backend()}] {label}: {time.perf_counter() - start:.3f}s")
    return result


# ============================================================================ GPT-2


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, torch, transformers, randomize_parameters):
    """``(hf_model, kerasformer builder with logits)`` on one random tiny GPT-2."""
    path = str(tmp_path_factory.mktemp("gen_gpt2"))
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
        initializer_range=0.3, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1,
    )
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config)
    randomize_parameters(hf)
    hf.eval()
    hf.save_pretrained(path)
    ours = build_transformer_model(os.path.join(path, "config.json"), path, model="gpt2",
                                   final_activation="linear", return_keras_model=False)
    return hf, ours


def hf_generate(hf, torch, prompt, **kwargs):
    """transformers.generate on one prompt; returns (new token rows, processed scores)."""
    ids = torch.tensor([prompt], dtype=torch.long)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=N_NEW, return_dict_in_generate=True,
                          output_scores=True, **kwargs)
    return out.sequences[:, len(prompt):].numpy(), out.scores


def assert_margins(scores, rows_new, end_id, minimum=1e-3):
    """The oracle is decisive: at every greedy step before the end, the best processed
    score beats the runner-up by `minimum` (so float noise cannot flip a token)."""
    for step, s in enumerate(scores):
        if end_id is not None and end_id in rows_new[0][:step]:
            break
        top = np.sort(s.numpy()[0])[::-1]
        assert top[0] - top[1] > minimum, (step, top[:2])


@pytest.fixture(scope="module")
def gpt2_end_id(gpt2, torch):
    """An end id that the greedy continuation of prompt 1 reaches at step 4."""
    hf, _ = gpt2
    rows, _ = hf_generate(hf, torch, GPT2_PROMPTS[1])
    return int(rows[0][4])


GREEDY_OPTIONS = dict(repetition_penalty=1.3, min_new_tokens=2)


@pytest.fixture(scope="module")
def gpt2_greedy(gpt2, gpt2_end_id):
    """Our batched greedy result (repetition penalty and min_new_tokens on)."""
    _, ours = gpt2
    return timed("gpt2 greedy, first call (compiles)", generate, ours, GPT2_PROMPTS,
                 max_new_tokens=N_NEW, end_id=gpt2_end_id, **GREEDY_OPTIONS)


def test_gpt2_greedy_matches_transformers(gpt2, gpt2_greedy, gpt2_end_id, torch):
    hf, _ = gpt2
    end = gpt2_end_id
    assert gpt2_greedy.shape == (3, N_NEW) and gpt2_greedy.dtype == np.int32
    stopped = 0
    for row, prompt in zip(gpt2_greedy, GPT2_PROMPTS):
        expected, scores = hf_generate(hf, torch, prompt, eos_token_id=end, pad_token_id=end,
                                       **GREEDY_OPTIONS)
        assert_margins(scores, expected, end)
        assert upto_end(row, end) == upto_end(expected[0], end)
        if end in row:  # padded with end_id after the end token
            stopped += 1
            first = list(row).index(end)
            assert first >= GREEDY_OPTIONS["min_new_tokens"]
            assert (row[first:] == end).all()
    assert stopped >= 1, "the oracle check should cover a sequence that ends early"


@pytest.mark.parametrize("length_penalty, early_stopping, processors", [
    (1.0, False, {}),
    (2.0, False, {}),  # same compiled program: the length penalty is a runtime input
    (-0.5, "never", dict(repetition_penalty=1.2, min_new_tokens=3)),
])
def test_gpt2_beam_search_matches_transformers(gpt2, gpt2_end_id, torch, length_penalty,
                                               early_stopping, processors):
    hf, ours = gpt2
    end = gpt2_end_id
    got = generate(ours, GPT2_PROMPTS, max_new_tokens=N_NEW, strategy="beam", num_beams=3,
                   num_return_sequences=2, length_penalty=length_penalty,
                   early_stopping=early_stopping, end_id=end, **processors)
    assert got.shape == (3 * 2, N_NEW)
    for i, prompt in enumerate(GPT2_PROMPTS):
        expected, _ = hf_generate(hf, torch, prompt, num_beams=3, num_return_sequences=2,
                                  length_penalty=length_penalty,
                                  early_stopping=early_stopping, eos_token_id=end,
                                  pad_token_id=end, **processors)
        for j in range(2):
            assert upto_end(got[2 * i + j], end) == upto_end(expected[j], end), (i, j)
    assert any(end in r for r in got)


def test_batch_equals_one_by_one_and_compiles_once(gpt2, gpt2_greedy, gpt2_end_id):
    _, ours = gpt2
    options = dict(max_new_tokens=N_NEW, end_id=gpt2_end_id, **GREEDY_OPTIONS)
    before = trace_count(ours)
    again = timed("gpt2 greedy, later call", generate, ours, GPT2_PROMPTS, **options)
    np.testing.assert_array_equal(again, gpt2_greedy)
    # Other runtime values (end id, penalty, lengths within one padding bucket) reuse it.
    generate(ours, GPT2_PROMPTS[::-1], max_new_tokens=N_NEW, end_id=7, min_new_tokens=5,
             repetition_penalty=1.1)
    assert trace_count(ours) == before
    # Prompts of lengths 7, 3, 5 one at a time: one new compilation for all three.
    for prompt, expected in zip(GPT2_PROMPTS, gpt2_greedy):
        single = timed(f"gpt2 greedy, batch 1, length {len(prompt)}", generate, ours,
                       [prompt], **options)
        np.testing.assert_array_equal(single[0], expected)
    assert trace_count(ours) == before + 1
    # The weights are inputs of the compiled program, not constants baked into it.
    embeddings = ours.layers["Embedding-Token"].embeddings
    saved = keras.ops.convert_to_numpy(embeddings)
    try:
        embeddings.assign(saved[::-1])
        changed = generate(ours, GPT2_PROMPTS, **options)
    finally:
        embeddings.assign(saved)
    assert (changed != gpt2_greedy).any()
    np.testing.assert_array_equal(generate(ours, GPT2_PROMPTS, **options), gpt2_greedy)
    assert trace_count(ours) == before + 1


def test_sampling_is_reproducible_and_top_k_1_is_greedy(gpt2, gpt2_greedy, gpt2_end_id):
    _, ours = gpt2
    options = dict(max_new_tokens=N_NEW, strategy="sample", num_return_sequences=3,
                   top_p=0.9, temperature=1.5)
    first = generate(ours, GPT2_PROMPTS, seed=3, **options)
    assert first.shape == (9, N_NEW)
    np.testing.assert_array_equal(generate(ours, GPT2_PROMPTS, seed=3, **options), first)
    other = generate(ours, GPT2_PROMPTS, seed=4, **options)
    assert (other != first).any()
    # The samples of one prompt differ from each other.
    assert len({tuple(r) for r in first[:3]}) > 1
    keras.utils.set_random_seed(11)
    unseeded = generate(ours, GPT2_PROMPTS, **options)
    keras.utils.set_random_seed(11)
    np.testing.assert_array_equal(generate(ours, GPT2_PROMPTS, **options), unseeded)

    top1 = generate(ours, GPT2_PROMPTS, max_new_tokens=N_NEW, strategy="sample", top_k=1,
                    seed=5, end_id=gpt2_end_id, **GREEDY_OPTIONS)
    np.testing.assert_array_equal(top1, gpt2_greedy)


# ============================================================================ T5


@pytest.fixture(scope="module")
def t5(tmp_path_factory, torch, transformers, randomize_parameters):
    """``(hf_model, kerasformer builder with logits, encoder batch)`` for a random T5 v1.0."""
    path = str(tmp_path_factory.mktemp("gen_t5"))
    config = transformers.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
        num_heads=4, feed_forward_proj="relu", dropout_rate=0.0, initializer_factor=4.0,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    torch.manual_seed(0)
    hf = transformers.T5ForConditionalGeneration(config)
    randomize_parameters(hf, scale=0.3)
    hf.eval()
    hf.save_pretrained(path)
    ours = build_transformer_model(os.path.join(path, "config.json"), path, model="t5",
                                   with_lm="linear", return_keras_model=False)
    rng = np.random.RandomState(1)
    enc = rng.randint(2, VOCAB, size=(3, 9)).astype("int32")
    enc[1, 6:] = 0
    enc[2, 3:] = 0
    return hf, ours, enc


def hf_t5_generate(hf, torch, enc, **kwargs):
    ids = torch.tensor(enc, dtype=torch.long)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=(ids != 0).long(), do_sample=False,
                          max_new_tokens=N_NEW, decoder_start_token_id=0,
                          return_dict_in_generate=True, output_scores=True, **kwargs)
    return out.sequences[:, 1:].numpy(), out.scores  # drop the decoder start token


def test_t5_greedy_and_beam_match_transformers(t5, torch):
    hf, ours, enc = t5
    plain, scores = hf_t5_generate(hf, torch, enc, eos_token_id=None, pad_token_id=0)
    end = int(plain[0][3])
    expected, scores = hf_t5_generate(hf, torch, enc, eos_token_id=end, pad_token_id=0)
    for step, s in enumerate(scores[:3]):
        top = np.sort(s.numpy(), axis=-1)[:, ::-1]
        assert (top[:, 0] - top[:, 1] > 1e-3).all(), step
    got = timed("t5 greedy, first call (compiles)", generate, ours, enc,
                max_new_tokens=N_NEW, end_id=end)
    timed("t5 greedy, later call", generate, ours, enc, max_new_tokens=N_NEW, end_id=end)
    for row, exp in zip(got, expected):
        assert upto_end(row, end) == upto_end(exp, end)
    assert end in got[0]

    beam = dict(num_beams=3, num_return_sequences=2)
    plain, _ = hf_t5_generate(hf, torch, enc, eos_token_id=None, pad_token_id=0, **beam)
    end = int(plain[1][3])  # the second beam of the first source stops at step 3
    expected, _ = hf_t5_generate(hf, torch, enc, early_stopping=True, length_penalty=1.5,
                                 eos_token_id=end, pad_token_id=0, **beam)
    got = generate(ours, enc, max_new_tokens=N_NEW, strategy="beam", num_beams=3,
                   num_return_sequences=2, early_stopping=True, length_penalty=1.5,
                   end_id=end)
    assert got.shape == (6, N_NEW)
    for i, (row, exp) in enumerate(zip(got, expected)):
        assert upto_end(row, end) == upto_end(exp, end), i
    assert 0 < sum(end in r for r in got) < 6  # finished and length-capped hypotheses


# ============================================================================ BERT LM / UniLM


class GreedyLM(AutoRegressiveDecoder):
    """The bert4keras recipe: re-run the whole model on prompt + output every step.

    The recomputed sequence is right-padded to a fixed width (exact: padding keys are
    masked and no real token attends to a later one) so that eager JAX does not compile
    every op anew for each new length."""

    WIDTH = 32

    def __init__(self, model, unilm, **kwargs):
        super().__init__(**kwargs)
        self.model, self.unilm = model, unilm

    @AutoRegressiveDecoder.wraps(default_rtype="probas")
    def predict(self, inputs, output_ids, states):
        token_ids, segment_ids = inputs
        token_ids = np.concatenate([token_ids, output_ids], 1)
        # UniLM targets are segment 1; an LM continues the prompt's last segment.
        new_segments = np.ones_like(output_ids) if self.unilm else np.broadcast_to(
            segment_ids[:, -1:], output_ids.shape)
        segment_ids = np.concatenate([segment_ids, new_segments], 1)
        length = token_ids.shape[1]
        probas = keras.ops.convert_to_numpy(self.model([
            sequence_padding(token_ids, self.WIDTH), sequence_padding(segment_ids, self.WIDTH),
        ]))[:, length - 1]
        top = np.sort(probas, axis=-1)[:, ::-1]
        assert (top[:, 0] - top[:, 1] > 1e-4).all()  # decisive: cached may not differ
        return probas


@pytest.mark.parametrize("application", ["lm", "unilm"])
def test_cached_equals_uncached_bert(tiny_bert, application):
    """BERT as a causal LM and as a UniLM (MLM probabilities head, bert4keras default):
    a padded batch of sources of different lengths decoded with the cache equals the
    recompute-the-prefix decoder run one source at a time."""
    path, _ = tiny_bert
    transformer = build_transformer_model(checkpoint_path=path, application=application,
                                          return_keras_model=False)
    rng = np.random.RandomState(2)
    sources = [[101] + list(rng.randint(5, 120, size=n)) + [102] for n in (6, 2, 9)]
    segments = [[0] * len(s) for s in sources]
    if application == "lm":
        segments[0][-3:] = [1, 1, 1]  # an LM continues the last prompt segment
    end = 7
    decoder = GreedyLM(transformer.model, application == "unilm", start_id=None,
                       end_id=end, maxlen=8)
    expected = [list(decoder.beam_search([s, g], topk=1)) for s, g in zip(sources, segments)]
    got = generate(transformer, sequence_padding(sources), sequence_padding(segments),
                   max_new_tokens=8, end_id=end)
    assert [upto_end(r, end) for r in got] == expected


# ============================================================================ API


def test_autoregressive_decoder_semantics():
    """bert4keras's beam_search / random_sample rules on a fixed toy distribution."""
    # Next-token log-probabilities depend on the last token only (0 = start).
    table = np.log(np.array([
        [0.0, 0.5, 0.4, 0.1],  # after start: 1 (0.5) then 2 (0.4)
        [0.0, 0.1, 0.1, 0.8],  # after 1: [1, 3] scores 0.5 * 0.8 = 0.4
        [0.0, 0.05, 0.05, 0.9],  # after 2: [2, 3] scores 0.4 * 0.9 = 0.36
        [0.0, 0.5, 0.4, 0.1],  # after the end token
    ]) + 1e-30)

    class Toy(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype="logits", use_states=True)
        def predict(self, inputs, output_ids, states):
            last = output_ids[:, -1] if output_ids.shape[1] else np.zeros(len(output_ids), int)
            return table[last], (states or 0) + 1

    toy = Toy(start_id=None, end_id=3, maxlen=5)
    assert list(toy.beam_search([[1]], topk=2)) == [1, 3]
    assert list(Toy(start_id=0, end_id=3, maxlen=5).beam_search([[1]], topk=2)) == [0, 1, 3]
    # min_ends=2: keep decoding until the best sequence holds two end tokens.
    assert list(toy.beam_search([[1]], topk=2, min_ends=2)).count(3) == 2
    # minlen: too-short finished sequences do not stop the search.
    assert len(Toy(start_id=None, end_id=3, maxlen=5, minlen=3).beam_search([[1]], 2)) >= 3
    np.random.seed(0)
    first = toy.random_sample([[1]], n=4, topk=2)
    np.random.seed(0)
    assert [list(x) for x in toy.random_sample([[1]], n=4, topk=2)] == [list(x) for x in first]
    assert len(first) == 4 and all(x[-1] == 3 or len(x) == 5 for x in first)
    # topp=0.5 after start keeps only token 1 (0.5 reaches it).
    assert all(x[0] == 1 for x in toy.random_sample([[1]], n=5, topp=0.5))
    # rtype conversions and temperature, as bert4keras.
    probas, states = toy.predict([[1]], np.zeros((1, 0), int), None, 1, "probas")
    np.testing.assert_allclose(probas[0], [0.0, 0.5, 0.4, 0.1], atol=1e-6)
    assert states == 1
    logits, _ = toy.predict([[1]], np.zeros((1, 0), int), None, 2.0, "logits")
    warm = np.sqrt([1e-30, 0.5, 0.4, 0.1])
    np.testing.assert_allclose(np.exp(logits[0]), warm / warm.sum(), atol=1e-6)


def test_last_token_model():
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 4)(inputs)
    model = keras.Model(inputs, [x, keras.layers.Dense(3)(x)])
    decoder = AutoRegressiveDecoder(start_id=None, end_id=1, maxlen=4)
    last = decoder.last_token(model)
    assert decoder.last_token(model) is last  # built once per model
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    full, out = model(ids)
    got_full, got_out = last(ids)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got_full),
                               keras.ops.convert_to_numpy(full)[:, -1], atol=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(got_out),
                               keras.ops.convert_to_numpy(out)[:, -1], atol=0)


def test_errors(tiny_bert, gpt2):
    _, gpt = gpt2
    path, _ = tiny_bert
    encoder = build_transformer_model(checkpoint_path=path, return_keras_model=False)
    with pytest.raises(ValueError, match="not a generative model"):
        generate(encoder, [[1, 2]], max_new_tokens=2)
    with pytest.raises(ValueError, match="return_keras_model=False"):
        generate(gpt.model, [[1, 2]], max_new_tokens=2)
    bad = [
        dict(strategy="nucleus"),
        dict(max_new_tokens=0),
        dict(strategy="beam", num_beams=2, num_return_sequences=3),
        dict(top_k=3),
        dict(num_return_sequences=2),
        dict(strategy="sample", top_p=1.5),
        dict(temperature=0.0),
        dict(strategy="beam", early_stopping="sometimes"),
    ]
    for options in bad:
        options = {"max_new_tokens": 2, **options}
        with pytest.raises(ValueError):
            generate(gpt, [[1, 2]], **options)
    with pytest.raises(ValueError, match="empty"):
        generate(gpt, [[1, 2], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="positions"):
        generate(gpt, [[1] * 60], max_new_tokens=10)
