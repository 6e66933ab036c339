"""Smoke tests of the generation examples: each script runs end to end with tiny settings
in a subprocess under the current KERAS_BACKEND (random weights; real GPT-2 BPE vocab and
real CSL data from ../shared/data, skipped with a reason where absent)."""
import os
import re

import keras
import pytest

from examples_support import SHARED, import_example, need, run_example


def test_basic_language_model_gpt2():
    vocab = os.path.join(SHARED, "vocab", "gpt2_bpe")
    need(vocab)
    out = run_example("basic_language_model_gpt2.py", "--vocab-dir", vocab,
                      "--layers", "1", "--hidden", "32", "--heads", "2", "--positions", "64",
                      "--max-new-tokens", "4", "--num-beams", "2", "--no-timing")
    assert f"backend: {keras.backend.backend()}" in out
    assert "random weights" in out  # the gibberish note
    for label in ("--- greedy:", "--- beam search (num_beams=2):", "--- top-p sampling"):
        assert out.count(label) == 3, label  # one per default prompt
    assert "first call" in out


def test_task_seq2seq_autotitle_unilm():
    need(os.path.join(SHARED, "csl_title"))
    need(os.path.join(SHARED, "clge_csl"))
    need(os.path.join(SHARED, "vocab", "chinese_bert", "vocab.txt"))
    out = run_example("task_seq2seq_autotitle_unilm.py", "--epochs", "1", "--limit", "20",
                      "--eval-size", "4", "--batch-size", "10", "--maxlen", "64",
                      "--title-maxlen", "6", "--num-beams", "2", "--layers", "1",
                      "--hidden", "32", "--heads", "2")
    assert "data: 20 training / 4 held-out pairs" in out
    assert "NOTE: no --checkpoint" in out
    metrics = dict(re.findall(r"(rouge-1|rouge-2|rouge-l|bleu): ([0-9.]+)", out))
    assert set(metrics) == {"rouge-1", "rouge-2", "rouge-l", "bleu"}, out[-2000:]
    assert all(0.0 <= float(v) <= 1.0 for v in metrics.values())


def test_autotitle_metrics():
    """The example's small ROUGE / BLEU implementations on hand-computed cases."""
    ex = import_example("task_seq2seq_autotitle_unilm")
    assert ex.lcs_length(list("abcde"), list("ace")) == 3
    assert ex.rouge_l(list("abcde"), list("ace")) == pytest.approx(2 * 0.6 * 1.0 / 1.6)
    assert ex.rouge_n(list("abcd"), list("abce"), 1) == pytest.approx(0.75)
    assert ex.rouge_n(list("abcd"), list("abce"), 2) == pytest.approx(2 / 3)
    assert ex.rouge_n(list("ab"), list("cd"), 1) == 0.0
    assert ex.sentence_bleu(list("abcdef"), list("abcdef")) == pytest.approx(1.0)
    # p1..p4 = 3/4, 2/3, 1/2, 0 -> NLTK method1 smoothing 0.1/1; equal lengths: BP = 1.
    assert ex.sentence_bleu(list("abcd"), list("abce")) == pytest.approx(
        (0.75 * (2 / 3) * 0.5 * 0.1) ** 0.25)
    # Brevity penalty exp(1 - r/c) for a short hypothesis; no unigram match -> 0.
    assert ex.sentence_bleu(list("ab"), list("abcd")) == pytest.approx(
        2.718281828459045 ** (1 - 2) * (1.0 * 1.0 * 0.1 * 0.1) ** 0.25)
    assert ex.sentence_bleu(list("xy"), list("abcd")) == 0.0
    assert ex.read_pairs.__doc__
