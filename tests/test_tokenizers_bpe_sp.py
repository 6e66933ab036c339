"""Tests of GPT2Tokenizer (byte-level BPE) and SpTokenizer (SentencePiece).

Oracles: ``transformers.GPT2TokenizerFast`` loaded from the real GPT-2 files
(checked for sanity first: transformers 5 constructors can silently build an
empty vocabulary) and ``sentencepiece.SentencePieceProcessor`` itself, on
real English text (SST-2, CoNLL-2003, Botchan) plus hand-written hard cases;
bert4keras's documented truncation rule (pop from the longest sequence, the
first one on ties, just before its end token) for ``maxlen``.
No keras import: the tests behave the same under every KERAS_BACKEND.
"""
import os
import shutil

import pytest

from kerasformer.tokenizers import GPT2Tokenizer, SpTokenizer

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                    "shared", "data")
N_TEXTS = 150  # per corpus

EOS = "<|endoftext|>"

# What real corpora rarely contain: accents, combining marks, emoji (incl. a
# ZWJ sequence), CJK, odd and repeated whitespace, control characters, the
# special token written out, leading/trailing spaces, the empty string.
EXTRA_TEXTS = [
    "",
    " ",
    "Naïve café owners in Zürich don't like 1.5 km queues!",
    "e\u0301 vs \u00e9, \u212b and \ufb01 ligature",
    "Emoji 😀👍🏽 and a family 👨\u200d👩\u200d👧 in one line.",
    "混合 text：北京大学 Peking University，１２３ＡＢＣ。",
    "吾輩は猫である。名前はまだ無い。",
    "  leading and trailing spaces  ",
    "multiple    spaces\tand\ttabs\n\nand\r\nnewlines\n",
    "\n\n\n",
    "bell\x07, NUL\x00 and replacement \ufffd characters",
    "it's we'll I'd they've you're HE'S",
    "Hello" + EOS + "world " + EOS,
    "<|endoftext|",
    "x" * 300,
    "https://example.com/path?q=1&r=2#frag user@example.org",
    "Ünïcödé ∑∫√ ≠ ≤ ≥ → ← ★ ☃ \U0001F600\U0001F601",
]

JAPANESE_TEXTS = [  # written for this test
    "吾輩は猫である。名前はまだ無い。",
    "どこで生れたかとんと見当がつかぬ。",
    "京都は日本の古い都で、多くの寺や神社があります。",
    "清水寺は京都市東山区にある寺院です。",
    "金閣寺は室町時代に足利義満によって建てられた。",
    "今日はとても良い天気ですね。",
    "私は毎朝七時に起きて、コーヒーを飲みます。",
    "東京駅から新幹線に乗って京都へ行きました。",
    "この本はとても面白かったので、友達にも勧めたい。",
    "桜の花が咲く季節になりました。",
    "ＡＢＣ１２３と半角ABC123の混在テキスト。",
    "雨が降っても、試合は予定通り行われる。",
    "彼女は図書館で歴史の本を借りた。",
    "伏見稲荷大社の千本鳥居は有名です。",
    "平安京は794年に桓武天皇によって定められた。",
]


def _data(*parts):
    path = os.path.join(DATA, *parts)
    if not os.path.exists(path):
        pytest.skip("real data not available: %s (expected ../shared/data next "
                    "to the repository)" % os.path.normpath(path))
    return path


def _b4k_pair(a, b, maxlen, start=None, end=None, left=False):
    """bert4keras truncation of a pair, written out from its definition.

    Sequences are ``[start] a [end]`` and ``[start] b [end]`` (the second
    start is dropped, so the budget grows by one when there is a start
    token); one token at a time is removed from the longer sequence (the
    first on ties) next to its end token (from the left: next to its start).
    """
    extra = (start is not None) + (end is not None)
    budget = maxlen + (start is not None)
    ka, kb = len(a), len(b)
    while (ka + extra) + (kb + extra) > budget:
        if ka >= kb:
            ka -= 1
        else:
            kb -= 1
    a = a[len(a) - ka:] if left else a[:ka]
    b = b[len(b) - kb:] if left else b[:kb]
    s = [] if start is None else [start]
    e = [] if end is None else [end]
    ids = s + a + e + b + e
    return ids, [0] * (len(s) + ka + len(e)) + [1] * (kb + len(e))


@pytest.fixture(scope="module")
def english_texts():
    texts = []
    with open(_data("sst2_alps", "dev.tsv"), encoding="utf-8") as f:
        next(f)  # header
        for line in f:
            texts.append(line.rstrip("\n").rsplit("\t", 1)[0])
            if len(texts) >= N_TEXTS:
                break
    sentences, words = [], []
    with open(_data("conll2003", "valid.txt"), encoding="utf-8") as f:
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
    texts += sentences
    assert len(texts) == 2 * N_TEXTS
    # multi-line documents with repeated spaces, as generation prompts are
    texts += ["\n\n".join(sentences[i:i + 3]) for i in range(0, 30, 3)]
    texts += ["  ".join(texts[i:i + 2]) + "\n" for i in range(0, 20, 2)]
    return texts + EXTRA_TEXTS


# ----------------------------------------------------------------------------
# GPT-2
@pytest.fixture(scope="module")
def gpt2_files():
    folder = _data("vocab", "gpt2_bpe")
    return (os.path.join(folder, "encoder.json"),
            os.path.join(folder, "vocab.bpe"))


@pytest.fixture(scope="module")
def gpt2(gpt2_files):
    return GPT2Tokenizer(*gpt2_files)


@pytest.fixture(scope="module")
def hf_gpt2_dir(gpt2_files, tmp_path_factory):
    # from_pretrained reads vocab.json/merges.txt itself; in transformers 5
    # GPT2TokenizerFast(vocab_file=..., merges_file=...) ignores the files
    folder = tmp_path_factory.mktemp("gpt2_tokenizer")
    shutil.copy(gpt2_files[0], folder / "vocab.json")
    shutil.copy(gpt2_files[1], folder / "merges.txt")
    return str(folder)


@pytest.fixture(scope="module")
def hf_gpt2(hf_gpt2_dir, english_texts):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2TokenizerFast.from_pretrained(hf_gpt2_dir)
    # the oracle must be the real GPT-2 tokenizer, not an empty one
    assert len(hf) == 50257
    assert hf("Hello")["input_ids"] == [15496]
    assert hf(" world")["input_ids"] == [995]
    assert hf.eos_token_id == 50256
    ids = [i for t in english_texts if EOS not in t for i in hf(t)["input_ids"]]
    assert len(ids) > 5000
    assert 50256 not in ids  # unk_token is <|endoftext|>: no unknowns
    return hf


def test_gpt2_oracle_and_known_ids(gpt2):
    assert gpt2.vocab_size == 50257
    assert gpt2.encode("Hello") == ([15496], [0])
    assert gpt2.encode(" world")[0] == [995]
    assert gpt2.encode("Hello world")[0] == [15496, 995]
    assert gpt2.tokenize("Hello world") == ["Hello", "Ġworld"]
    assert gpt2.token_to_id("Ġworld") == 995 and gpt2.id_to_token(995) == "Ġworld"
    assert gpt2.eos_token_id == gpt2.token_end_id == gpt2._token_end_id == 50256
    assert gpt2.token_start_id is None
    assert gpt2.token_pad_id is None and gpt2._token_unk_id is None


def test_gpt2_ids_equal_hf(gpt2, hf_gpt2, english_texts):
    refs = hf_gpt2(english_texts)["input_ids"]
    for text, ref in zip(english_texts, refs):
        ids, segs = gpt2.encode(text)
        assert ids == ref, text
        assert segs == [0] * len(ids)
        assert gpt2.tokenize(text) == hf_gpt2.convert_ids_to_tokens(ref)


def test_gpt2_add_prefix_space_equals_hf(gpt2_files, hf_gpt2_dir, english_texts):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2TokenizerFast.from_pretrained(
        hf_gpt2_dir, add_prefix_space=True)
    assert hf("Hello")["input_ids"] == [18435]  # " Hello"
    tok = GPT2Tokenizer(*gpt2_files, add_prefix_space=True)
    for text in english_texts[::10]:
        assert tok.encode(text)[0] == hf(text)["input_ids"], text


def test_gpt2_decode_round_trip(gpt2, hf_gpt2, english_texts):
    for text in english_texts:
        ids = gpt2.encode(text)[0]
        assert gpt2.decode(ids, skip_special_tokens=False) == text
        assert gpt2.decode(ids, skip_special_tokens=False) == hf_gpt2.decode(ids)
        assert gpt2.decode(ids) == text.replace(EOS, "")
    # numpy ids, ids of a padded model vocabulary, a cut multi-byte character
    np = pytest.importorskip("numpy")
    ids = gpt2.encode("café 😀")[0]
    assert gpt2.decode(np.array(ids + [50300], dtype="int32")) == "café 😀"
    assert gpt2.decode(ids[:-1]) == hf_gpt2.decode(ids[:-1])
    assert gpt2.decode(ids[:-1]).endswith("\ufffd")


def test_gpt2_rematch_equals_hf_offsets(gpt2, hf_gpt2, english_texts):
    n_checked = 0
    for text in english_texts:
        ref = hf_gpt2(text, return_offsets_mapping=True)
        tokens = gpt2.tokenize(text)
        mapping = gpt2.rematch(text, tokens)
        assert len(mapping) == len(tokens)
        for token, chars, (s, e) in zip(tokens, mapping, ref["offset_mapping"]):
            if token == EOS:
                assert chars == []
                continue
            assert chars == list(range(s, e)), (text, token)
            n_checked += 1
    assert n_checked > 5000
    # a truncated token list and foreign tokens
    text = "Hello world, hello again"
    tokens = gpt2.tokenize(text)
    assert gpt2.rematch(text, tokens[2:]) == [[11], [12, 13, 14, 15, 16, 17],
                                              [18, 19, 20, 21, 22, 23]]
    assert gpt2.rematch(text, ["Ġnowhere", "Ġhello"]) == [[], [12, 13, 14, 15, 16, 17]]


def test_gpt2_truncation(gpt2, hf_gpt2, english_texts):
    texts = english_texts[:120]
    refs = hf_gpt2(texts)["input_ids"]
    n_truncated = 0
    for maxlen in (5, 12):
        for text, ref in zip(texts, refs):
            assert gpt2.encode(text, maxlen=maxlen)[0] == ref[:maxlen]
            left = gpt2.encode(text, maxlen=maxlen, truncate_from="left")[0]
            assert left == ref[max(len(ref) - maxlen, 0):]
            assert gpt2.tokenize(text, maxlen=maxlen) == \
                hf_gpt2.convert_ids_to_tokens(ref[:maxlen])
        for a, b, first, second in zip(refs[::2], refs[1::2], texts[::2],
                                       texts[1::2]):
            for left in (False, True):
                got = gpt2.encode(first, second, maxlen=maxlen,
                                  truncate_from="left" if left else "right")
                assert got == _b4k_pair(a, b, maxlen, left=left)
                assert len(got[0]) <= maxlen
            n_truncated += len(a) + len(b) > maxlen
    assert n_truncated > 50


def test_gpt2_end_token_appended(gpt2_files, hf_gpt2, english_texts):
    tok = GPT2Tokenizer(*gpt2_files, token_end=EOS)
    assert tok.token_end_id == tok.eos_token_id == 50256
    for text in english_texts[:50]:
        ref = hf_gpt2(text)["input_ids"]
        assert tok.encode(text)[0] == ref + [50256]
        ids = tok.encode(text, maxlen=6)[0]
        assert ids == ref[:5] + [50256]
        assert tok.decode(ids) == hf_gpt2.decode(ref[:5])
    a, b = english_texts[0], english_texts[1]
    ra, rb = hf_gpt2(a)["input_ids"], hf_gpt2(b)["input_ids"]
    assert tok.encode(a, b) == (ra + [50256] + rb + [50256],
                                [0] * (len(ra) + 1) + [1] * (len(rb) + 1))
    assert tok.encode(a, b, maxlen=9) == _b4k_pair(ra, rb, 9, end=50256)


def test_gpt2_bad_input(gpt2, gpt2_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        GPT2Tokenizer(str(tmp_path / "nope.json"), gpt2_files[1])
    with pytest.raises(FileNotFoundError, match="nope"):
        GPT2Tokenizer(gpt2_files[0], str(tmp_path / "nope.bpe"))
    with pytest.raises(ValueError, match="token_end"):
        GPT2Tokenizer(*gpt2_files, token_end="</s>")
    with pytest.raises(TypeError):
        gpt2.tokenize(b"bytes")
    with pytest.raises(TypeError):
        gpt2.encode(123)
    with pytest.raises(KeyError, match="no unknown"):
        gpt2.token_to_id("not a token")
    with pytest.raises(KeyError, match="50257"):
        gpt2.id_to_token(50257)
    with pytest.raises(ValueError, match="maxlen"):
        GPT2Tokenizer(*gpt2_files, token_end=EOS).encode("Hello world", maxlen=0)


# ----------------------------------------------------------------------------
# SentencePiece
SP_MODELS = ["botchan_en_unigram_1000", "botchan_en_bpe_1000",
             "kyoto_ja_unigram_8000"]


@pytest.fixture(scope="module")
def botchan_texts():
    texts = []
    with open(_data("vocab", "sentencepiece_test", "botchan.txt"),
              encoding="utf-8-sig") as f:
        for line in f:
            line = line.rstrip("\r\n")
            if line.strip():
                texts.append(line)
    # skip the Project Gutenberg header; take the novel's text
    return texts[20:20 + 2 * N_TEXTS]


@pytest.fixture(scope="module", params=SP_MODELS)
def sp_setup(request, botchan_texts):
    spm = pytest.importorskip("sentencepiece")
    path = _data("vocab", "sentencepiece_test", request.param + ".model")
    sp = spm.SentencePieceProcessor(model_file=path)
    assert sp.piece_to_id("</s>") == sp.eos_id() == 2 and sp.unk_id() == 0
    if request.param.startswith("kyoto_ja"):
        texts = JAPANESE_TEXTS + botchan_texts[:40] + EXTRA_TEXTS
        pieces = [p for t in JAPANESE_TEXTS for p in sp.encode(t)]
    else:
        texts = botchan_texts + EXTRA_TEXTS
        pieces = [p for t in botchan_texts for p in sp.encode(t)]
    # a sane model: known text has almost no unknown pieces
    assert len(pieces) > 100 and pieces.count(sp.unk_id()) / len(pieces) < 0.01
    return SpTokenizer(path), sp, texts, path


def test_sp_ids_equal_sentencepiece(sp_setup):
    tok, sp, texts, _ = sp_setup
    assert tok.vocab_size == sp.get_piece_size()
    assert tok.token_end_id == tok._token_end_id == 2
    assert tok.token_start_id is None
    n_unknown = 0
    for text in texts:
        ref = sp.encode(text)
        ids, segs = tok.encode(text)
        assert ids == ref + [2], text
        assert segs == [0] * len(ids)
        assert tok.tokenize(text) == sp.encode(text, out_type=str) + ["</s>"]
        n_unknown += ref.count(sp.unk_id())
    assert n_unknown > 0  # the extra texts hold characters the models lack


def test_sp_decode_round_trip(sp_setup):
    tok, sp, texts, _ = sp_setup
    n_exact = 0
    for text in texts:
        ids = tok.encode(text)[0]
        assert tok.decode(ids) == sp.decode(ids), text
        n_exact += tok.decode(ids) == text
    # sentencepiece normalises (NFKC, whitespace) and renders unknowns as
    # " ⁇ ", so only most texts come back unchanged
    assert n_exact > 0.7 * len(texts)
    # ids past the model (T5's 32128-row vocab for 32000 pieces) give no text
    assert tok.id_to_token(tok.vocab_size + 5) == ""
    ids = tok.encode(texts[0])[0]
    assert tok.decode(ids + [tok.vocab_size + 5]) == sp.decode(ids)
    np = pytest.importorskip("numpy")
    assert tok.decode(np.array(ids, dtype="int64")) == sp.decode(ids)


def test_sp_truncation(sp_setup):
    tok, sp, texts, _ = sp_setup
    n_truncated = 0
    for maxlen in (4, 16):
        for text in texts[:100]:
            ref = sp.encode(text)
            assert tok.encode(text, maxlen=maxlen)[0] == ref[:maxlen - 1] + [2]
            left = tok.encode(text, maxlen=maxlen, truncate_from="left")[0]
            assert left == ref[max(len(ref) - maxlen + 1, 0):] + [2]
            assert tok.tokenize(text, maxlen=maxlen)[-1] == "</s>"
        for first, second in zip(texts[:100:2], texts[1:100:2]):
            a, b = sp.encode(first), sp.encode(second)
            for left in (False, True):
                got = tok.encode(first, second, maxlen=maxlen,
                                 truncate_from="left" if left else "right")
                assert got == _b4k_pair(a, b, maxlen, end=2, left=left)
                # bert4keras returned maxlen + 1 ids here (no start token)
                assert len(got[0]) <= maxlen
            n_truncated += len(a) + len(b) + 2 > maxlen
    assert n_truncated > 20


def test_sp_start_token_and_patterns(sp_setup):
    tok0, sp, texts, path = sp_setup
    tok = SpTokenizer(path, token_start="<s>", token_end="</s>")
    assert tok.token_start_id == 1 and tok.token_end_id == 2
    a, b = sp.encode(texts[0]), sp.encode(texts[1])
    assert tok.encode(texts[0])[0] == [1] + a + [2]
    assert tok.encode(texts[0], texts[1]) == (
        [1] + a + [2] + b + [2], [0] * (len(a) + 2) + [1] * (len(b) + 1))
    ids, segs = tok.encode(texts[0], texts[1], pattern="S*ES*E")
    assert ids == [1] + a + [2, 1] + b + [2]
    for maxlen in (5, 9):
        assert tok.encode(texts[0], texts[1], maxlen=maxlen) == \
            _b4k_pair(a, b, maxlen, start=1, end=2)
    assert tok.decode(tok.encode(texts[0])[0]) == sp.decode(a)
    # no start/end tokens at all: plain sentencepiece ids
    plain = SpTokenizer(path, token_end=None)
    assert plain.encode(texts[0])[0] == a and plain.token_end_id is None
    # token lists are accepted and not changed in place
    tokens = tok0.tokenize(texts[2])
    saved = list(tokens)
    assert tok0.encode(tokens, maxlen=3) == tok0.encode(texts[2], maxlen=3)
    assert tokens == saved


def test_sp_special_ids(sp_setup):
    tok, sp, _, _ = sp_setup
    assert sp.pad_id() == -1  # these models have no pad piece
    assert tok.token_pad_id is None and tok._token_pad_id is None
    assert tok.token_unk_id == tok._token_unk_id == 0
    assert tok.token_mask_id is None  # "[MASK]" is not a piece
    assert [tok._is_special(i) for i in (0, 1, 2, 3, 10)] == \
        [True, True, True, False, False]
    assert tok._is_special(tok.vocab_size) and not tok._is_decodable(10 ** 6)
    assert tok._is_decodable(5) and not tok._is_decodable(2)
    assert tok.token_to_id("</s>") == 2
    assert tok.token_to_id("no such piece") == 0  # unknown, like sentencepiece
    assert tok.id_to_token(2) == "</s>"
    for i in range(tok.vocab_size):
        assert tok.token_to_id(tok.id_to_token(i)) == i


def test_sp_pre_tokenize_and_translate(sp_setup):
    _, sp, texts, path = sp_setup
    tok = SpTokenizer(path, pre_tokenize=lambda t: t.split("-"))
    text = "well-known half-baked idea"
    assert tok.encode(text)[0] == sp.encode(text.replace("-", " ")) + [2]
    pieces = sp.encode(texts[0], out_type=str)
    other = next(sp.id_to_piece(i) for i in range(3, 100)
                 if sp.id_to_piece(i) not in pieces)
    tok = SpTokenizer(path, token_translate={pieces[0]: other})
    tokens = tok.tokenize(texts[0])
    assert tokens[0] == other and tokens[1:] == pieces[1:] + ["</s>"]
    assert tok.decode(tok.tokens_to_ids(tokens)) == sp.decode(sp.encode(texts[0]))


def test_sp_bad_input(sp_setup, tmp_path):
    tok, _, _, path = sp_setup
    with pytest.raises(FileNotFoundError, match="nope"):
        SpTokenizer(str(tmp_path / "nope.model"))
    with pytest.raises(ValueError, match="token_end"):
        SpTokenizer(path, token_end="[SEP]")
    with pytest.raises(ValueError, match="token_start"):
        SpTokenizer(path, token_start="[CLS]")
    with pytest.raises(TypeError):
        tok.tokenize(None)
    with pytest.raises(TypeError):
        tok.token_to_id(3)
    with pytest.raises(KeyError):
        tok.id_to_token(-1)
    with pytest.raises(ValueError, match="maxlen"):
        tok.encode("some text", maxlen=0)
    with pytest.raises(TypeError, match="maxlen"):
        tok.encode("some text", maxlen=2.5)
