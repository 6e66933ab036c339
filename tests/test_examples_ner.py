"""The NER examples: smoke runs of both scripts in a subprocess (the real MiniLM on CoNLL-2003,
a tiny random BERT on the Chinese formats), and their data / span logic checked against
independent truths: the published CoNLL-2003 entity counts, CLUENER's entity strings,
and gold entities that survive the trip labels -> the scripts' decoders -> character
spans (F1 = 1 up to a measured handful of word-piece boundary losses)."""
import collections
import json
import os
import re

import keras
import numpy as np
import pytest

from examples_support import (CHINESE_VOCAB, SHARED, import_example, minilm_dir, need,
                              run_example, run_example_process)

ner_data = import_example("ner_data")
task_ner_crf = import_example("task_ner_crf")
task_ner_globalpointer = import_example("task_ner_globalpointer")


F1_LINE = re.compile(r"entity-level micro F1: ([0-9.]+) \(precision ([0-9.]+), "
                     r"recall ([0-9.]+)\) on (\d+) ")
TINY = ("--epochs", "1", "--dev-limit", "16", "--batch-size", "16", "--maxlen", "64")


@pytest.mark.parametrize("script,data,extra", [
    ("task_ner_globalpointer.py", "conll2003", ()),
    ("task_ner_crf.py", "conll2003", ()),
    ("task_ner_globalpointer.py", "cluener2020", ("--random-init",)),
    ("task_ner_crf.py", "msra_ner/msra_bio.txt", ("--random-init", "--layers", "1")),
])
def test_smoke(script, data, extra):
    need(os.path.join(SHARED, data))
    if "--random-init" in extra:
        need(CHINESE_VOCAB)
    else:
        minilm_dir()
    out = run_example(script, "--data", os.path.join(SHARED, data), "--limit", "32",
                      "--eval-limit", "24", *TINY, *extra)
    assert f"backend: {keras.backend.backend()}" in out
    match = F1_LINE.search(out)
    assert match, out[-2000:]
    f1, precision, recall, n = match.groups()
    assert int(n) == 24
    assert all(0.0 <= float(v) <= 1.0 for v in (f1, precision, recall))


def test_bad_data_path_is_a_message(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("just some text\nwithout tags\n", encoding="utf-8")
    for path, message in ((tmp_path / "missing", "NER data not found"),
                          (bad, "unknown NER format")):
        proc = run_example_process("task_ner_crf.py", "--data", str(path), "--no-record",
                                   timeout=120)
        assert proc.returncode != 0 and message in proc.stdout
        assert "Traceback" not in proc.stdout


# --------------------------------------------------------------- the data and spans


def test_tag_chunks_follow_conlleval():
    spans = ner_data.bio_spans
    assert spans("B-PER I-PER O B-LOC".split()) == [(0, 1, "PER"), (3, 3, "LOC")]
    # IOB1 / stray I: an I that does not continue its type starts an entity.
    assert spans("I-PER I-PER I-LOC O I-ORG".split()) == [
        (0, 1, "PER"), (2, 2, "LOC"), (4, 4, "ORG")]
    assert spans("B-PER B-PER I-LOC".split()) == [(0, 0, "PER"), (1, 1, "PER"), (2, 2, "LOC")]
    assert spans("S-PER B-LOC E-LOC O".split()) == [(0, 0, "PER"), (1, 2, "LOC")]
    tags = "O B-MISC I-MISC B-PER O".split()
    assert ner_data.spans_to_tags(5, spans(tags)) == tags


def test_entity_prf():
    gold = [[(0, 1, "PER"), (3, 3, "LOC")], [(2, 4, "ORG")]]
    pred = [[(0, 1, "PER"), (3, 3, "ORG")], [(2, 4, "ORG"), (5, 6, "PER")]]
    s = ner_data.entity_prf(gold, pred)
    assert (s["gold"], s["predicted"], s["correct"]) == (3, 4, 2)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_conll2003_reader_matches_published_counts():
    """Tjong Kim Sang & De Meulder (2003), table 2: entities per type and split."""
    folder = os.path.join(SHARED, "conll2003")
    need(folder)
    published = {"train.txt": (14041, {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}),
                 "valid.txt": (3250, {"LOC": 1837, "MISC": 922, "ORG": 1341, "PER": 1842}),
                 "test.txt": (3453, {"LOC": 1668, "MISC": 702, "ORG": 1661, "PER": 1617})}
    for name, (sentences, counts) in published.items():
        path = os.path.join(folder, name)
        assert ner_data.detect_format(path) == "conll"
        examples = ner_data.read_conll(path)
        assert len(examples) == sentences
        assert collections.Counter(t for _, ents in examples for *_, t in ents) == counts
    # The character spans hold the words: "EU rejects German call ..."
    text, ents = ner_data.read_conll(os.path.join(folder, "train.txt"))[0]
    assert [(text[s:e + 1], t) for s, e, t in ents] == [("EU", "ORG"), ("German", "MISC"),
                                                         ("British", "MISC")]
    data = ner_data.load_ner_data(folder)
    assert (len(data.train), len(data.dev), len(data.test), data.types) == (
        14041, 3250, 3453, ["LOC", "MISC", "ORG", "PER"])  # valid.txt chooses the epoch


def test_chinese_readers_and_splits():
    cluener = os.path.join(SHARED, "cluener2020")
    need(cluener)
    data = ner_data.load_ner_data(cluener)
    assert data.format == "cluener" and len(data.test) == 1343
    assert any("evaluating on dev.json" in n for n in data.notes)  # test.json is unlabelled
    # No dev split left: 10% of train, at most 1,000, held out (seed 0), disjoint.
    assert (len(data.train), len(data.dev)) == (10748 - 1000, 1000)
    assert any("held out" in n for n in data.notes)
    assert not {t for t, _ in data.dev} & {t for t, _ in data.train[:2000]}
    # The inclusive end: every span's text is the entity string named in the JSON.
    with open(os.path.join(cluener, "dev.json"), encoding="utf-8") as f:
        for line, (text, ents) in zip(f, data.test):
            row = json.loads(line)
            named = sorted((s, e, t) for t, found in row["label"].items()
                           for entity, spans in found.items() for s, e in spans
                           if text[s:e + 1] == entity)
            assert named == ents
    people = os.path.join(SHARED, "people_daily_ner")
    need(people)
    data = ner_data.load_ner_data(people)
    assert data.format == "char_bio" and len(data.test) == 4636
    assert (len(data.train), len(data.dev)) == (2318 - 231, 231)
    assert any("training on example.dev" in n for n in data.notes)
    msra = os.path.join(SHARED, "msra_ner", "msra_bio.txt")
    need(msra)
    data = ner_data.load_ner_data(os.path.dirname(msra))
    assert (len(data.train) + len(data.dev), len(data.test)) == (50658, 4631)
    # SIGHAN 2006 MSRA test: 2,877 LOC and 1,331 ORG (PER: 1,984 here vs 1,973 published).
    counts = collections.Counter(t for _, ents in data.test for *_, t in ents)
    assert (counts["LOC"], counts["ORG"]) == (2877, 1331)


def round_trip(tokenizer, examples, types, maxlen):
    """Gold entities -> the training targets of both scripts -> their decoders -> char
    spans: the entity_prf of each script against the gold entities, and the number of
    gold entities that end after the last character the kept tokens cover (cut off by
    ``maxlen``)."""
    gold, via_gp, via_crf, cut = [], [], [], 0
    for text, ents in examples:
        encoded = ner_data.encode(tokenizer, text, maxlen)
        last_char = max(c for chars in encoded.mapping for c in chars)
        cut += sum(e > last_char for _, e, _ in ents)
        spans = ner_data.token_spans(encoded, ents, types)
        n = len(encoded.token_ids)
        length = n + 3  # padded, as in a batch
        logits = 2 * task_ner_globalpointer.make_target(length, spans, types) - 1
        found = task_ner_globalpointer.decode(logits, n, types)
        via_gp.append(ner_data.char_spans(encoded, found, types))
        path = task_ner_crf.make_target(length, spans, types)
        found = task_ner_crf.decode(path, n, types)
        via_crf.append(ner_data.char_spans(encoded, found, types))
        gold.append(ents)
    return ner_data.entity_prf(gold, via_gp), ner_data.entity_prf(gold, via_crf), cut


@pytest.mark.parametrize("data,maxlen,inside_pieces", [
    ("conll2003", 256, 0),
    # 4 of 3,072 dev entities begin or end inside a word piece ("vsac米兰" -> "vs", "##ac":
    # the entity is "ac米兰"; "魔兽争霸31.25" -> "31" ends after "魔兽争霸3").
    ("cluener2020", 256, 4),
    ("people_daily_ner", 256, 0),
])
def test_gold_entities_survive_labels_and_decoding(data, maxlen, inside_pieces):
    """Every gold entity comes back from both scripts' targets through their decoders,
    except those cut off by ``maxlen`` (counted independently from the characters the
    kept tokens cover: 0 for CoNLL and CLUENER, 105 of 7,707 for People's Daily, whose
    longest sentences have ~480 characters) and a few with a boundary inside a word
    piece."""
    folder = os.path.join(SHARED, data)
    need(folder)
    from kerasformer.tokenizers import Tokenizer
    if data == "conll2003":
        tokenizer = Tokenizer(os.path.join(minilm_dir(), "vocab.txt"), do_lower_case=True)
    else:
        need(CHINESE_VOCAB)
        tokenizer = Tokenizer(CHINESE_VOCAB, do_lower_case=True)
    data = ner_data.load_ner_data(folder)
    gp, crf, cut = round_trip(tokenizer, data.test, data.types, maxlen)
    for scores in (gp, crf):
        assert scores["precision"] == 1.0  # nothing invented
        assert scores["gold"] - scores["correct"] == cut + inside_pieces
    assert cut == {"people_daily_ner": 105}.get(os.path.basename(folder), 0)


def test_crf_targets_are_iob2_over_word_pieces():
    need(CHINESE_VOCAB)
    from kerasformer.tokenizers import Tokenizer
    tokenizer = Tokenizer(CHINESE_VOCAB, do_lower_case=True)
    text = "CSOL生化狂潮在浙商银行"
    types = ["company", "game"]
    encoded = ner_data.encode(tokenizer, text, 64)
    spans = ner_data.token_spans(encoded, [(0, 3, "game"), (9, 12, "company")], types)
    assert spans == [(1, 2, 1), (8, 11, 0)]  # "cs ##ol" is two tokens
    ids = task_ner_crf.make_target(14, spans, types)
    names = ner_data.tag_names(types)
    assert [names[i] for i in ids] == ["O", "B-game", "I-game"] + ["O"] * 5 + [
        "B-company"] + ["I-company"] * 3 + ["O", "O"]
    assert np.array_equal(np.argwhere(task_ner_globalpointer.make_target(14, spans, types)),
                          [[0, 8, 11], [1, 1, 2]])


def test_first_two_batches_differ_in_length_for_tensorflow():
    """Keras's TensorFlow trainer takes the data's shape from the first two batches."""
    batches = [[16], [16], [16], [48], [32]]
    assert ner_data._vary_first_two(list(batches), lambda b: b[0]) == [
        [16], [48], [16], [16], [32]]
    same = [[16], [16], [16]]
    assert ner_data._vary_first_two(list(same), lambda b: b[0]) == same
