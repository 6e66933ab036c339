"""Tests for kerasformer.snippets (expected values worked out by hand from the definitions)."""
import itertools
import os

import numpy as np
import pytest

from kerasformer.snippets import (
    DataGenerator,
    is_string,
    sequence_padding,
    strQ2B,
    string_matching,
    text_segmentate,
    truncate_sequences,
)

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
SENTIMENT_VALID = os.path.join(DATA_DIR, "bert4keras_sentiment", "sentiment.valid.data")


# ----------------------------------------------------------------------------- small helpers


def test_is_string():
    assert is_string("abc") and is_string("")
    assert not is_string(b"abc")
    assert not is_string(1)
    assert not is_string(["a"])


def test_strQ2B():
    # Full-width letters/digits/punctuation and the ideographic space become ASCII.
    assert strQ2B("ＡＢＣ１２３！　ｘ～") == "ABC123! x~"
    # CJK text and CJK punctuation (not in U+FF01..U+FF5E) are untouched.
    assert strQ2B("中文。、《》") == "中文。、《》"
    assert strQ2B("abc 1") == "abc 1"


def test_string_matching():
    assert string_matching("我爱北京天安门", ["上海", "北京"])
    assert not string_matching("我爱北京天安门", ["上海", "广州"])
    assert string_matching("价格: 120元", [r"\d+元"])  # keywords are regexes
    assert not string_matching("anything", [])


# ----------------------------------------------------------------------------- sequence_padding


def test_padding_1d_post_and_dtype():
    out = sequence_padding([[1, 2, 3], [4, 5]])
    np.testing.assert_array_equal(out, [[1, 2, 3], [4, 5, 0]])
    assert out.dtype == np.int64  # Python ints -> int64 token ids


def test_padding_1d_pre_and_value():
    out = sequence_padding([[1, 2, 3], [4, 5]], length=4, mode="pre")
    np.testing.assert_array_equal(out, [[0, 1, 2, 3], [0, 0, 4, 5]])
    out = sequence_padding([[1], [2, 3]], value=-1)
    np.testing.assert_array_equal(out, [[1, -1], [2, 3]])


def test_padding_truncates_keeping_the_head():
    seqs = [[1, 2, 3], [4]]
    np.testing.assert_array_equal(sequence_padding(seqs, length=2), [[1, 2], [4, 0]])
    # "pre" pads in front; truncation still keeps the first `length` items.
    np.testing.assert_array_equal(sequence_padding(seqs, length=2, mode="pre"), [[1, 2], [0, 4]])


def test_padding_dtypes_are_kept():
    f = sequence_padding([[0.5], [1.5, 2.5]])
    assert f.dtype == np.float64
    np.testing.assert_array_equal(f, [[0.5, 0.0], [1.5, 2.5]])
    i32 = sequence_padding([np.array([1, 2], np.int32), np.array([3], np.int32)])
    assert i32.dtype == np.int32
    f32 = sequence_padding([np.ones(2, np.float32), np.ones(1, np.float32)], value=-1)
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(f32, [[1, 1], [1, -1]])


def test_padding_empty_sequence_does_not_change_dtype():
    out = sequence_padding([[], [7, 8]])
    np.testing.assert_array_equal(out, [[0, 0], [7, 8]])
    assert out.dtype == np.int64


def test_padding_feature_dims():
    # Per-token feature vectors: only the first dim is a sequence dim.
    out = sequence_padding([np.ones((2, 3)), 2 * np.ones((1, 3))])
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[1], [[2, 2, 2], [0, 0, 0]])
    np.testing.assert_array_equal(out[0], np.ones((2, 3)))


def test_padding_seq_dims_2():
    a = np.arange(4).reshape(2, 2)  # [[0, 1], [2, 3]]
    b = np.arange(9).reshape(3, 3)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    out = sequence_padding([a, b], seq_dims=2)
    assert out.shape == (2, 3, 3) and out.dtype == a.dtype
    np.testing.assert_array_equal(out[0], [[0, 1, 0], [2, 3, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out[1], b)

    pre = sequence_padding([a, b], seq_dims=2, mode="pre")
    np.testing.assert_array_equal(pre[0], [[0, 0, 0], [0, 0, 1], [0, 2, 3]])

    # An int length applies to both sequence dims and truncates the 3x3 matrix.
    cut = sequence_padding([a, b], length=2, seq_dims=2)
    np.testing.assert_array_equal(cut, [[[0, 1], [2, 3]], [[0, 1], [3, 4]]])

    # Per-dim lengths.
    mixed = sequence_padding([a, b], length=[2, 3], seq_dims=2)
    assert mixed.shape == (2, 2, 3)
    np.testing.assert_array_equal(mixed[0], [[0, 1, 0], [2, 3, 0]])
    np.testing.assert_array_equal(mixed[1], [[0, 1, 2], [3, 4, 5]])


def test_padding_seq_dims_2_nested_lists_with_heads():
    # GlobalPointer-style labels [n, n, heads] given as nested Python lists.
    x = [[[1, 0], [0, 1]], [[0, 0], [1, 1]]]  # n=2, heads=2
    y = [[[1, 1]]]  # n=1, heads=2
    out = sequence_padding([x, y], seq_dims=2)
    assert out.shape == (2, 2, 2, 2)
    np.testing.assert_array_equal(out[0], x)
    np.testing.assert_array_equal(out[1], [[[1, 1], [0, 0]], [[0, 0], [0, 0]]])


def test_padding_errors():
    with pytest.raises(ValueError, match="mode"):
        sequence_padding([[1]], mode="middle")
    with pytest.raises(ValueError):
        sequence_padding([])
    with pytest.raises(ValueError):
        sequence_padding([[1]], length=[1, 2])  # 2 entries for seq_dims=1
    with pytest.raises(ValueError):
        sequence_padding([np.ones((1, 2)), np.ones((1, 3))])  # feature dims differ
    with pytest.raises(ValueError):
        sequence_padding([[1, 2]], seq_dims=2)  # 1-D element, 2 sequence dims


# ----------------------------------------------------------------------------- truncate_sequences


def test_truncate_pair_pops_from_longest_before_sep():
    first = ["[CLS]", "a", "b", "c", "d", "[SEP]"]
    second = ["e", "f", "[SEP]"]
    out = truncate_sequences(7, -2, first, second)
    # 9 > 7: pop "d" from first (6 long); 8 > 7: first (5) is still longest, pop "c".
    assert first == ["[CLS]", "a", "b", "[SEP]"]
    assert second == ["e", "f", "[SEP]"]
    assert out[0] is first and out[1] is second


def test_truncate_ties_go_to_the_first_sequence():
    a, b = [1, 2, 3], [4, 5, 6]
    truncate_sequences(4, -1, a, b)
    # 6 > 4: tie -> pop from a; 5 > 4: b is longest -> pop from b.
    assert a == [1, 2] and b == [4, 5]


def test_truncate_ignores_none():
    a = [1, 2, 3, 4, 5]
    out = truncate_sequences(3, -1, a, None)
    assert out == [[1, 2, 3]] and out[0] is a
    # Per-sequence indices stay aligned with their sequences around a None.
    a, b = [1, 2, 3], [4, 5, 6]
    out = truncate_sequences(4, [0, None, -1], a, None, b)
    assert a == [2, 3] and b == [4, 5]
    assert out == [a, b]


def test_truncate_short_input_unchanged_and_errors():
    a, b = [1, 2], [3]
    assert truncate_sequences(10, -1, a, b) == [[1, 2], [3]]
    truncate_sequences(0, 0, a, b)
    assert a == [] and b == []
    with pytest.raises(ValueError):
        truncate_sequences(-1, -1, [1])
    with pytest.raises(ValueError):
        truncate_sequences(3, [0], [1], [2])


# ----------------------------------------------------------------------------- text_segmentate


def test_segmentate_hand_cases():
    # Merging needs len(chunk) + len(piece) + 1 <= maxlen (room for a separator).
    assert text_segmentate("ab。cd。ef", 5, "。") == ["ab。", "cd。", "ef"]
    assert text_segmentate("ab。cd。ef", 6, "。") == ["ab。cd。", "ef"]
    assert text_segmentate("ab。cd。ef", 8, "。") == ["ab。cd。ef"]  # short enough: whole
    # A chunk still too long after "。" is split again at "，".
    assert text_segmentate("aaaa，bb。cc", 5, "。，") == ["aaaa，", "bb。", "cc"]
    # strips removes the given characters from both ends of each piece.
    assert text_segmentate("ab。cd。ef", 5, "。", strips="。") == ["ab", "cd", "ef"]
    # No separator left: a long piece is returned unchanged.
    assert text_segmentate("abcdefgh", 3, "。") == ["abcdefgh"]
    assert text_segmentate("  xy \n", 5) == ["xy"]
    assert text_segmentate("line1\nline2", 6) == ["line1", "line2"]  # "\n" is stripped


def _load_sentiment_texts():
    if not os.path.exists(SENTIMENT_VALID):
        pytest.skip(f"real Chinese text not available: {os.path.abspath(SENTIMENT_VALID)} is missing")
    with open(SENTIMENT_VALID, encoding="utf-8") as f:
        texts = [line.rsplit("\t", 1)[0] for line in f if "\t" in line]
    return texts


def test_segmentate_real_chinese_text():
    texts = _load_sentiment_texts()
    seps, maxlen = "\n。！？!?；;，,", 48
    # Whitespace is removed first because every piece is stripped of it.
    long_texts = ["".join(t.split()) for t in texts]
    long_texts = sorted((t for t in long_texts if len(t) > 3 * maxlen), key=len)[-200:]
    assert len(long_texts) >= 50
    split_count = 0
    for text in long_texts:
        pieces = text_segmentate(text, maxlen, seps)
        assert "".join(pieces) == text
        assert all(pieces)
        for p in pieces:
            if len(p) > maxlen:
                # Only possible when no separator is left to cut at.
                assert not any(s in p.rstrip(seps) for s in seps), p
        split_count += len(pieces) > 1
    assert split_count == len(long_texts)
    lengths = [len(p) for t in long_texts for p in text_segmentate(t, maxlen, seps)]
    assert np.mean(np.array(lengths) <= maxlen) > 0.95


# ----------------------------------------------------------------------------- DataGenerator


class _ListBatches(DataGenerator):
    """Yields lists of raw items, batch_size at a time."""

    def __iter__(self, random=False):
        batch = []
        for is_end, d in self.sample(random):
            batch.append(d)
            if len(batch) == self.batch_size or is_end:
                yield batch
                batch = []


class _Reiterable:
    """Re-iterable data without __len__ (like a file-backed stream)."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))


def test_generator_len_and_validation():
    assert len(_ListBatches(list(range(10)), batch_size=3)) == 4
    assert len(_ListBatches(list(range(10)), batch_size=5)) == 2
    assert len(_ListBatches(list(range(1)), batch_size=32)) == 1
    gen = _ListBatches(_Reiterable(10), batch_size=3)
    assert gen.steps is None
    with pytest.raises(TypeError):
        len(gen)
    with pytest.raises(ValueError):
        _ListBatches([1], batch_size=0)
    with pytest.raises(NotImplementedError):
        next(iter(DataGenerator([1, 2])))


def test_generator_sample_in_order():
    gen = _ListBatches(["a", "b", "c"], batch_size=2)
    assert list(gen.sample()) == [(False, "a"), (False, "b"), (True, "c")]
    assert list(gen) == [["a", "b"], ["c"]]
    assert list(_ListBatches([], batch_size=2).sample()) == []


def test_generator_random_sample_is_a_permutation():
    np.random.seed(0)
    data = list(range(50))
    gen = _ListBatches(data, batch_size=8)
    out = list(gen.sample(random=True))
    items = [d for _, d in out]
    assert sorted(items) == data and items != data
    assert [e for e, _ in out] == [False] * 49 + [True]
    batches = list(gen.__iter__(random=True))
    assert [len(b) for b in batches] == [8] * 6 + [2]
    assert sorted(itertools.chain(*batches)) == data


def test_generator_buffer_shuffle_for_unsized_data():
    np.random.seed(1)
    gen = _ListBatches(_Reiterable(40), batch_size=4, buffer_size=5)
    items = [d for _, d in gen.sample(random=True)]
    assert sorted(items) == list(range(40)) and items != list(range(40))
    # With a 5-item buffer the k-th output (0-based) is drawn from the first k + 6 items.
    for k, d in enumerate(items):
        assert d < k + 6


class _ArrayBatches(DataGenerator):
    """Yields ([x, x + 100], y) with x the item ids of the batch as an int array."""

    def __iter__(self, random=False):
        batch = []
        for is_end, d in self.sample(random):
            batch.append(d)
            if len(batch) == self.batch_size or is_end:
                x = np.array(batch)
                yield [x, x + 100], -x
                batch = []


def _to_numpy(structure):
    """Batches from forfit/fortest as nested tuples of NumPy arrays (tf tensors on TF)."""
    if isinstance(structure, tuple):
        return tuple(_to_numpy(x) for x in structure)
    return np.asarray(structure)


def test_forfit_and_fortest_streams():
    gen = _ArrayBatches(list(range(5)), batch_size=2)
    np.random.seed(2)
    batches = [_to_numpy(b) for b in itertools.islice(iter(gen.forfit()), 2 * len(gen))]
    assert [len(b[1]) for b in batches] == [2, 2, 1, 2, 2, 1]
    for epoch in (batches[:3], batches[3:]):  # each pass covers the data once
        assert sorted((-np.concatenate([b[1] for b in epoch])).tolist()) == list(range(5))
    for (x, x100), y in batches:  # [x, x + 100] became a tuple, items stay aligned
        np.testing.assert_array_equal(x100, x + 100)
        np.testing.assert_array_equal(y, -x)

    tests = [_to_numpy(b) for b in itertools.islice(iter(gen.fortest()), 4)]
    assert all(len(t) == 1 and len(t[0]) == 2 for t in tests)  # (inputs,) only
    assert [t[0][0].tolist() for t in tests] == [[0, 1], [2, 3], [4], [0, 1]]
    assert [t[0][1].tolist() for t in tests] == [[100, 101], [102, 103], [104], [100, 101]]


def test_forfit_raises_on_empty_data():
    with pytest.raises(ValueError):
        next(iter(_ListBatches([], batch_size=2).forfit()))


class _TokenGenerator(DataGenerator):
    """bert4keras-style: ([token_ids, segment_ids], labels) with per-batch padding."""

    def __iter__(self, random=False):
        ids, segs, labels = [], [], []
        for is_end, (token_ids, label) in self.sample(random):
            ids.append(token_ids)
            segs.append([0] * len(token_ids))
            labels.append([label])
            if len(ids) == self.batch_size or is_end:
                yield [sequence_padding(ids), sequence_padding(segs)], sequence_padding(labels)
                ids, segs, labels = [], [], []


def test_forfit_trains_a_keras_model():
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    data = []
    for _ in range(96):
        # Few distinct lengths keep JAX recompilation (one per batch shape) cheap.
        tokens = rng.randint(1, 10, size=rng.choice([5, 9])).tolist()
        data.append((tokens, float(np.mean(tokens) > 5)))
    gen = _TokenGenerator(data, batch_size=16)
    assert len(gen) == 6

    token_in = keras.Input((None,), dtype="int32")
    segment_in = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(10, 8)(token_in) + keras.layers.Embedding(2, 8)(segment_in)
    h = keras.layers.GlobalAveragePooling1D()(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model([token_in, segment_in], out)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")

    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=2, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 2 and losses[1] < losses[0]

    preds = model.predict(gen.fortest(), steps=len(gen), verbose=0)
    assert preds.shape == (len(data), 1)
    assert np.all((preds >= 0) & (preds <= 1))


def test_forfit_handles_shorter_later_batches():
    # Keras on TensorFlow fixes any dim on which a plain generator's first two batches
    # agree; here both have length 11 and later batches are shorter.
    import keras

    keras.utils.set_random_seed(0)
    lengths = [11] * 8 + [4] * 8
    data = [([1] * n, float(n > 5)) for n in lengths]
    gen = _TokenGenerator(data, batch_size=4)
    token_in = keras.Input((None,), dtype="int32")
    segment_in = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(10, 4)(token_in) + keras.layers.Embedding(2, 4)(segment_in)
    out = keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model([token_in, segment_in], out)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(gen.forfit(random=False), steps_per_epoch=len(gen), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    preds = model.predict(gen.fortest(), steps=len(gen), verbose=0)
    assert preds.shape == (len(data), 1)
