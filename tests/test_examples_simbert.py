"""Tests of examples/task_simbert.py: subprocess smoke runs under the current KERAS_BACKEND
(the real MiniLM checkpoint on STS-B; a small random BERT on LCQMC) and checks of the
example's own logic against independent truths: the untrained model reproduces
sentence-transformers' STS-B Spearman, the training rows and in-batch targets are laid out
as SimBERT's, the segment-0 vector of ``[CLS] a [SEP] b [SEP]`` equals the vector of ``a``
alone, and generated candidates come back ranked by decreasing cosine."""
import os
import re
import types

import keras
import numpy as np
import pytest

from examples_support import (CHINESE_VOCAB, EXAMPLES, SHARED, import_example, minilm_dir,
                              need, run_example as _run_example,
                              run_example_process)

STS_TRAIN = os.path.join(SHARED, "stsbenchmark", "sts-train.csv")
STS_TEST = os.path.join(EXAMPLES, "datasets", "sts-test.csv")
LCQMC = os.path.join(SHARED, "lcqmc")
METRIC = re.compile(r"Spearman(?: \(cosine vs label\))? before: ([-0-9.]+)  after: ([-0-9.]+)")


def need_minilm():
    minilm_dir()


def run_example(*args, timeout=300):
    return _run_example("task_simbert.py", *args, timeout=timeout)


def metrics(out):
    match = METRIC.search(out)
    assert match, out[-2000:]
    before, after = (float(v) for v in match.groups())
    return before, after


@pytest.fixture(scope="module")
def ex():
    return import_example("task_simbert")


# -------------------------------------------------------------------- smoke runs


def test_smoke_minilm_stsb():
    need(STS_TRAIN)
    need_minilm()
    out = run_example("--limit", "16", "--eval-limit", "40", "--dev-limit", "16", "--epochs", "1",
                      "--batch-size", "8", "--maxlen", "32", "--num-candidates", "3",
                      "--gen-maxlen", "6", "--no-record")
    assert "data: 16 paraphrase pairs (32 rows)" in out
    assert "checkpoint has no MLM head: initialised 5 tensors" in out
    assert f"backend: {keras.backend.backend()}" in out
    assert out.count("  source: ") == 3
    before, after = metrics(out)
    assert 0.0 <= before <= 1.0 and 0.0 <= after <= 1.0


def test_smoke_random_bert_lcqmc():
    need(LCQMC)
    need(CHINESE_VOCAB)
    out = run_example("--data", LCQMC, "--random-init", "--vocab", CHINESE_VOCAB,
                      "--layers", "1", "--hidden", "64", "--limit", "16", "--eval-limit", "40", "--dev-limit", "16",
                      "--epochs", "1", "--batch-size", "8", "--maxlen", "32",
                      "--num-candidates", "3", "--gen-maxlen", "6", "--no-record")
    assert "has no train split: the positive pairs of dev.txt are the training pairs" in out
    assert "checkpoint has no MLM head" not in out  # random init: nothing loaded
    before, after = metrics(out)
    # Spearman against a 0/1 label can be negative for a random model: only its range.
    assert -1.0 <= before <= 1.0 and -1.0 <= after <= 1.0


def test_bad_data_path_is_a_message(tmp_path):
    bad = tmp_path / "pairs.txt"
    bad.write_text("only one column\n", encoding="utf-8")
    for data, message in ((str(tmp_path / "nope.csv"), "training data not found"),
                          (str(bad), "unknown format")):
        proc = run_example_process("task_simbert.py", "--data", data, "--no-record",
                                   timeout=120)
        assert proc.returncode != 0
        assert message in proc.stdout and "Traceback" not in proc.stdout, proc.stdout


# ------------------------------------------------------- the example's own logic


@pytest.fixture(scope="module")
def minilm(ex):
    """The example's untrained model, encoder and tokenizer on the real checkpoint."""
    need_minilm()
    args = ex.parse_args(["--no-record"])
    config, weights, vocab, name = ex.checkpoint_setup(args)
    tokenizer = ex.Tokenizer(vocab, do_lower_case=True)
    transformer = ex.build_unilm(args, config, weights, None)
    vector = ex.sentence_vector(transformer, args)
    encode = ex.make_encoder(transformer, vector, tokenizer, args)
    return types.SimpleNamespace(args=args, transformer=transformer, vector=vector,
                                 encode=encode, tokenizer=tokenizer, name=name)


def test_untrained_model_reproduces_sentence_transformers(ex, minilm):
    """The UniLM build (MLM head added, then initialised) encodes plain inputs exactly as
    the sentence-transformers model: Spearman 0.82032 on the 1379 STS-B test pairs."""
    s1, s2, gold = ex.load_sts(STS_TEST)
    rho = ex.evaluate(minilm.encode, s1, s2, gold)
    assert abs(rho - 0.82032) < 5e-5, rho
    ex.check_reference(rho, minilm.args, STS_TEST, minilm.name)  # raises if not


def test_loading_reports_exactly_the_mlm_head(ex, minilm):
    """The only tensors all-MiniLM-L6-v2 lacks are the MLM head's, set to BERT's init."""
    transformer = minilm.transformer
    _, weights, _, _ = ex.checkpoint_setup(minilm.args)
    missing = ex.load_encoder_weights(transformer, weights, seed=0)
    assert missing == sorted(ex.MLM_HEAD)
    values = {v.path: keras.ops.convert_to_numpy(v) for v in transformer.model.weights}
    assert np.all(values["MLM-Norm/gamma"] == 1) and np.all(values["MLM-Bias/bias"] == 0)
    kernel = values["MLM-Dense/kernel"]
    assert np.abs(kernel).max() <= 0.04 + 1e-6 and 0.015 < kernel.std() < 0.02


def test_segment0_vector_is_the_first_sentence_alone(ex, minilm):
    """Under the UniLM mask the training vector of ``[CLS] a [SEP] b [SEP]`` (mean over
    segment 0) equals the evaluation vector of ``[CLS] a [SEP]``, whatever b is."""
    tok = minilm.tokenizer
    a = "A man is playing a flute."
    model = keras.Model(minilm.transformer.model.inputs, minilm.vector)
    rows = [tok.encode(a, b) for b in ("A man plays the flute.", "Stocks fell sharply today "
                                       "after the report.")]
    rows.append(tok.encode(a))
    length = max(len(t) for t, _ in rows)
    tokens = ex.sequence_padding([t for t, _ in rows], length=length)
    segments = ex.sequence_padding([s for _, s in rows], length=length)
    vectors = np.asarray(model.predict_on_batch([tokens, segments]))
    np.testing.assert_allclose(vectors[0], vectors[2], atol=2e-5)
    np.testing.assert_allclose(vectors[1], vectors[2], atol=2e-5)
    plain = minilm.encode([a])[0]
    np.testing.assert_allclose(vectors[2] / np.linalg.norm(vectors[2]), plain, atol=2e-5)


def test_training_rows_and_in_batch_targets(ex, minilm):
    """Rows 2i / 2i+1 are ``a|b`` and ``b|a``; the seq2seq target covers exactly the
    second sentence and its [SEP]; the retrieval loss is small when partners coincide
    and ln(2B - 1) when all vectors are equal."""
    need(STS_TRAIN)
    pairs = ex.paraphrase_pairs(STS_TRAIN, 4.0)
    s1, s2, gold = ex.load_sts(STS_TRAIN)
    assert len(pairs) == sum(1 for a, b, g in zip(s1, s2, gold) if g >= 4 and a != b)
    tok = minilm.tokenizer
    rows = ex.encode_pair_rows(tok, pairs[:8], 64)
    (x, y) = next(ex.training_batches(rows, 4, seed=0, maxlen=64))
    tokens, segments = x
    assert tokens.shape[0] == 8 and tokens.shape[1] % 16 == 0
    packed = y[1]
    for r in range(0, 8, 2):
        first, second = tokens[r], tokens[r + 1]
        a_len = int(np.sum((segments[r] == 0) & (first != 0)))
        b_len = int(np.sum((segments[r + 1] == 0) & (second != 0)))
        # the second row is the first with its two sentences swapped
        assert list(second[1:b_len - 1]) == list(first[a_len:a_len + b_len - 2])
        assert list(first[1:a_len - 1]) == list(second[b_len:b_len + a_len - 2])
        assert np.array_equal(packed[r, :, 1], segments[r])
    # Retrieval loss on [2B, d] vectors: partners identical and orthogonal to the rest.
    eye = np.repeat(np.eye(4, dtype="float32"), 2, axis=0)
    loss = keras.ops.convert_to_numpy(ex.retrieval_loss(None, eye))
    np.testing.assert_allclose(loss, np.log1p(6 * np.exp(-30.0)), atol=1e-6)  # ~5.6e-13
    same = keras.ops.convert_to_numpy(ex.retrieval_loss(None, np.ones((8, 3), "float32")))
    np.testing.assert_allclose(same, np.log(7.0), rtol=1e-5)


def test_seq2seq_loss_counts_only_segment_1(ex):
    """Logits that put all mass on the right next token in segment 1 give loss 0 there,
    whatever they say in segment 0 or padding."""
    tokens = np.array([[1, 5, 2, 6, 7, 2, 0]])
    segments = np.array([[0, 0, 0, 1, 1, 1, 0]])
    logits = np.full((1, 7, 10), -50.0, "float32")
    for i in range(6):
        logits[0, i, tokens[0, i + 1] if segments[0, i + 1] else 9] = 50.0
    y_true = np.stack([tokens, segments], -1)
    assert float(ex.seq2seq_loss(y_true, logits)) < 1e-6
    logits[0, 2, :] = 0.0  # the prediction of the first segment-1 token: uniform
    np.testing.assert_allclose(float(ex.seq2seq_loss(y_true, logits)), np.log(10) / 3,
                               rtol=1e-5)


def test_generated_candidates_ranked_by_decreasing_cosine(ex, minilm):
    """The generation path returns distinct candidates, never the source, and the
    ranking is by decreasing cosine, each cosine matching an independent computation."""
    args = ex.parse_args(["--num-candidates", "6", "--gen-maxlen", "8", "--no-record"])
    source = "A girl is styling her hair."
    [candidates] = ex.generate_candidates(minilm.transformer, minilm.tokenizer, [source], args)
    assert candidates and len(set(candidates)) == len(candidates)
    assert ex.normalise(minilm.tokenizer, source) not in candidates
    texts = candidates + ["a girl is brushing her hair.", "the stock market fell today."]
    ranked = ex.rank_by_cosine(minilm.encode, source, texts)
    cosines = [c for _, c in ranked]
    assert sorted(t for t, _ in ranked) == sorted(texts)
    assert cosines == sorted(cosines, reverse=True)
    vectors = minilm.encode([source] + texts)
    expected = {t: float(vectors[0] @ v) for t, v in zip(texts, vectors[1:])}
    for text, cosine in ranked:
        assert cosine == pytest.approx(expected[text], abs=1e-5)
    # The paraphrase outranks the unrelated sentence (untrained MiniLM already knows).
    order = [t for t, _ in ranked]
    assert order.index("a girl is brushing her hair.") < order.index(
        "the stock market fell today.")
