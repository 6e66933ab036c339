"""Tests of examples/task_relation_extraction_gplinker.py: smoke runs of the script
(DuIE 2.0 with a small random BERT, WebNLG with the real MiniLM) and round trips of the
real gold triples through the example's own label encoder and decoder."""
import json
import os
import re

import keras
import numpy as np
import pytest

from examples_support import (CHINESE_VOCAB, SHARED, import_example, minilm_dir, need,
                              run_example_process)

WEBNLG = os.path.join(SHARED, "webnlg_casrel", "WebNLG")
DUIE = os.path.join(SHARED, "duie2_sample")
SCRIPT = "task_relation_extraction_gplinker.py"
METRIC = re.compile(r"triples: precision ([0-9.]+) recall ([0-9.]+) f1 ([0-9.]+)")

ex = import_example("task_relation_extraction_gplinker")


def minilm_vocab():
    return os.path.join(minilm_dir(), "vocab.txt")


def run_example(*args, timeout=300, check=True):
    proc = run_example_process(SCRIPT, *args, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:]
    return proc


def assert_metrics(out):
    match = METRIC.search(out)
    assert match, out[-2000:]
    assert all(0.0 <= float(v) <= 1.0 for v in match.groups())


SMOKE = ("--epochs", "1", "--limit", "16", "--dev-limit", "8", "--eval-limit", "8", "--maxlen", "32",
         "--batch-size", "8", "--eval-batch-size", "8", "--no-record")


def test_smoke_duie_random_bert():
    need(DUIE)
    need(CHINESE_VOCAB)
    out = run_example("--data", DUIE, "--random-init", "--vocab", CHINESE_VOCAB,
                      "--layers", "1", "--hidden", "64", *SMOKE).stdout
    assert "data: DuIE 2.0 dev: 16 training / 8 dev / 8 eval sentences, 55 predicates" in out
    assert "held out" in out  # DuIE has no dev split of its own
    assert "NOTE: --random-init" in out
    assert f"backend: {keras.backend.backend()}" in out
    assert_metrics(out)


def test_smoke_webnlg_minilm():
    need(WEBNLG)
    minilm_vocab()
    out = run_example(*SMOKE).stdout
    assert "data: WebNLG test: 16 training / 8 dev / 8 eval sentences, 216 predicates" in out
    assert "early stopping: best dev_triple_f1" in out
    assert_metrics(out)


def test_bad_data_path_exits_cleanly(tmp_path):
    proc = run_example("--data", str(tmp_path / "nowhere"), "--no-record", check=False)
    assert proc.returncode != 0 and "not found at" in proc.stdout
    assert "Traceback" not in proc.stdout
    (tmp_path / "other.json").write_text("[]")
    proc = run_example("--data", str(tmp_path), "--no-record", check=False)
    assert proc.returncode != 0 and "neither a WebNLG folder" in proc.stdout
    assert "Traceback" not in proc.stdout


# ------------------------------------------------------------------ gold round trips


def dense_logits(arrays, n):
    """+1 on the labelled cells of the sparse label arrays [heads, max_spans, 2], -1
    elsewhere: what a perfect model outputs."""
    dense = []
    for array in arrays:
        logits = -np.ones((array.shape[0], n, n), dtype="float32")
        for head, spans in enumerate(array):
            for i, j in spans:
                if (i, j) != (0, 0):  # padding
                    logits[head, i, j] = 1.0
        dense.append(logits)
    return dense


def gold_round_trip(examples, tokenizer, predicates, maxlen):
    """Decode the encoded gold labels of ``examples`` with the example's decoder and
    score them against the raw gold triples: ``(scores, lost, differs, n_gold)``."""
    predicate2id = {p: i for i, p in enumerate(predicates)}
    predicted, lost_total, differs_total = [], 0, 0
    for example in examples:
        token_ids, labels, lost, differs = ex.encode_example(tokenizer, example,
                                                             predicate2id, maxlen)
        lost_total += lost
        differs_total += differs
        arrays = ex.sparse_labels([labels], len(predicates), max(1, *map(len, labels)))
        tokens = tokenizer.tokenize(example["text"], maxlen=maxlen)
        assert tokenizer.tokens_to_ids(tokens) == token_ids
        mapping = tokenizer.rematch(example["text"], tokens)
        logits = dense_logits([a[0] for a in arrays], len(token_ids))
        predicted.append(ex.extract_triples(example["text"], mapping, *logits, predicates))
    gold = [set(e["triples"]) for e in examples]
    scores = ex.triple_scores(predicted, gold)
    return scores, lost_total, differs_total, sum(map(len, gold))


def webnlg_test_data():
    need(WEBNLG)
    vocab = minilm_vocab()
    _, _, _, test, predicates, _, _ = ex.load_dataset(WEBNLG, "test")
    return test, ex.Tokenizer(vocab, do_lower_case=True), predicates


def test_webnlg_gold_round_trip():
    """The 1,607 gold triples of the 703 real WebNLG test sentences, MiniLM (uncased)
    tokens, maxlen 128: all are located (the longest sentence has 100 tokens) and decode
    back through ``rematch`` to the original strings, except 10 whose gold string has
    another case than the sentence ("Tennis" for "... offers tennis ..."; measured):
    those come back as written in the text, so P = R = F1 = 1 - 10 / 1607 exactly."""
    test, tokenizer, predicates = webnlg_test_data()
    assert len(test) == 703
    scores, lost, differs, n_gold = gold_round_trip(test, tokenizer, predicates, 128)
    assert (lost, differs, n_gold) == (0, 10, 1607)
    expected = 1 - differs / n_gold
    assert scores == pytest.approx({"precision": expected, "recall": expected,
                                    "f1": expected}, abs=1e-12)


def test_webnlg_truncation_loss_bounds_recall():
    """At maxlen 24 a third of the triples are cut off: exactly those the encoder
    reports as lost (plus the differently written ones) are missing, and nothing
    spurious is decoded."""
    test, tokenizer, predicates = webnlg_test_data()
    scores, lost, differs, n_gold = gold_round_trip(test, tokenizer, predicates, 24)
    assert 300 < lost < n_gold
    assert scores["recall"] == pytest.approx(1 - (lost + differs) / n_gold)
    assert scores["precision"] == pytest.approx(1 - differs / (n_gold - lost))


def test_duie_gold_round_trip():
    """DuIE dev (2,000 sentences, 3,764 distinct triples) with the Chinese BERT vocab:
    at maxlen 128, 51 triples are cut off (texts reach 298 characters) and 4 gold
    strings are spaced otherwise than the text (measured); recall is exactly what is
    left. A few spurious triples come from GPLinker's crossed pairs of nested
    entities (precision 0.998)."""
    need(DUIE)
    need(CHINESE_VOCAB)
    _, _, _, dev, predicates, is_chinese, _ = ex.load_dataset(DUIE)
    assert is_chinese and len(predicates) == 55 and len(dev) == 2000
    tokenizer = ex.Tokenizer(CHINESE_VOCAB, do_lower_case=True)
    scores, lost, differs, n_gold = gold_round_trip(dev, tokenizer, predicates, 128)
    assert (lost, differs, n_gold) == (51, 4, 3764)
    assert scores["recall"] == pytest.approx(1 - (lost + differs) / n_gold)
    assert scores["precision"] > 0.997


# ----------------------------------------------------------------- small pure pieces


def test_duie_objects_and_casrel_rel2id(tmp_path):
    assert ex.flatten_duie_object("饰演", {"@value": "甲", "inWork": "乙"}) == [
        ("饰演", "甲"), ("饰演_inWork", "乙")]
    assert ex.flatten_duie_object("作者", "丙") == [("作者", "丙")]
    for value in ({"b": 1, "a": 0}, [{"b": 1, "a": 0}], [{"0": "a", "1": "b"},
                                                        {"b": 1, "a": 0}]):
        path = tmp_path / "rel2id.json"
        path.write_text(json.dumps(value))
        assert ex.webnlg_predicates(str(path)) == ["a", "b"]


def test_triple_scores_and_decoder():
    gold = [{("A", "p", "B"), ("A", "q", "C")}, {("D", "p", "E")}]
    pred = [{("A", "p", "B"), ("A", "p", "C")}, set()]
    assert ex.triple_scores(pred, gold) == pytest.approx(
        {"precision": 0.5, "recall": 1 / 3, "f1": 0.4})
    # A subject/object pair needs both its head-pair and its tail-pair score > 0.
    text, n = "ab cd ef", 5  # [CLS] ab cd ef [SEP]
    mapping = [[], [0, 1], [3, 4], [6, 7], []]
    entity = -np.ones((2, n, n))
    entity[0, 1, 2] = entity[1, 3, 3] = 1  # subject "ab cd", object "ef"
    head, tail = -np.ones((2, n, n)), -np.ones((2, n, n))
    head[:, 1, 3] = 1
    tail[1, 2, 3] = 1
    assert ex.extract_triples(text, mapping, entity, head, tail, ["p", "q"]) == {
        ("ab cd", "q", "ef")}


def test_pair_bias_init_offsets_every_pair_score():
    """--pair-bias-init b: the head / tail pointer logits of the untrained model are
    those of the zero-bias model (same seed) plus b at every unmasked cell; the entity
    pointer is untouched."""
    token_ids = np.array([[101, 7, 8, 9, 102, 0]], "int32")
    inputs = [token_ids, np.zeros_like(token_ids)]
    outputs = {}
    for b in (0.0, -8.0):
        args = ex.parse_args(["--random-init", "--layers", "1", "--hidden", "32",
                              "--head-size", "8", "--pair-bias-init", str(b)])
        model, _ = ex.build_model(args, 3, 200)
        outputs[b] = [np.asarray(o) for o in model.predict_on_batch(inputs)]
    real = np.ones((6, 6), bool)
    real[5, :] = real[:, 5] = False  # the padding token's row and column are masked
    np.testing.assert_allclose(outputs[-8.0][0], outputs[0.0][0], atol=1e-6)
    for pointer in (1, 2):
        diff = outputs[-8.0][pointer] - outputs[0.0][pointer]
        np.testing.assert_allclose(diff[..., real], -8.0, atol=1e-4)
