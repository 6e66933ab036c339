"""Tokenizers with bert4keras's API: WordPiece, SentencePiece, GPT-2 byte-level BPE.

This module keeps the user-facing contract of ``bert4keras.tokenizers``
(Su Jianlin, https://github.com/bojone/bert4keras): :func:`load_vocab`,
:func:`save_vocab`, :class:`Tokenizer` (BERT WordPiece) and
:class:`SpTokenizer` (SentencePiece), all with ``tokenize`` / ``encode`` /
``decode``, and adds :class:`GPT2Tokenizer` (byte-level BPE) behind the same
interface.  The shared part (start/end tokens, ``maxlen`` truncation, text
pairs) lives in :class:`TokenizerBase`.

The heavy lifting is done by established libraries, configured so that ids
equal the usual references on real text:

* WordPiece (Wu et al. 2016, arXiv:1609.08144; as used by BERT, Devlin et al.
  2019, arXiv:1810.04805): the Rust ``tokenizers`` library, configured like
  Hugging Face's ``BertTokenizerFast``.
* Byte-level BPE (Radford et al. 2019, "Language Models are Unsupervised
  Multitask Learners"; BPE: Sennrich et al. 2016, arXiv:1508.07909): the
  ``tokenizers`` library, configured like ``GPT2TokenizerFast``.
* SentencePiece (Kudo & Richardson 2018, arXiv:1808.06226): the
  ``sentencepiece`` library itself (imported only when an
  :class:`SpTokenizer` is built; it is an optional dependency).

Nothing here imports keras or a deep-learning backend.
"""
import os
import operator
import re
import unicodedata

from tokenizers import AddedToken as _AddedToken
from tokenizers import Tokenizer as _RustTokenizer
from tokenizers import decoders as _decoders
from tokenizers import models as _models
from tokenizers import normalizers as _normalizers
from tokenizers import pre_tokenizers as _pre_tokenizers

from kerasformer.snippets import truncate_sequences

__all__ = [
    "load_vocab", "save_vocab", "TokenizerBase", "Tokenizer", "SpTokenizer",
    "GPT2Tokenizer",
]

_PATTERNS = ("S*E*E", "S*ES*E")

# Full-width and CJK punctuation after which ``decode`` puts no space
# (inclusive code point ranges; the same set as bert4keras).
_CJK_PUNCTUATION = "".join(
    chr(c)
    for lo, hi in (
        (0xFF01, 0xFF0D), (0xFF0F, 0xFF0F), (0xFF1A, 0xFF1F), (0xFF20, 0xFF20),
        (0xFF3B, 0xFF40), (0xFF5B, 0xFF64), (0x3000, 0x3003), (0x3008, 0x3011),
        (0x3014, 0x301F), (0x3030, 0x3030), (0x303E, 0x303F), (0x2013, 0x2014),
        (0x2018, 0x2019), (0x201B, 0x201F), (0x2026, 0x2027), (0xFE4F, 0xFE4F),
        (0xFE51, 0xFE51), (0xFE54, 0xFE54), (0x00B7, 0x00B7),
    )
    for c in range(lo, hi + 1)
)
_NO_SPACE_AFTER = re.compile(
    "([%s]) " % re.escape(_CJK_PUNCTUATION + "+-/={(<[")
)
_CONTRACTION = re.compile(r"' (re|m|s|t|ve|d|ll) ")
_DECIMAL = re.compile(r"(\d\.) (\d)")
_SPACES = re.compile(" +")

# A vocabulary entry no normalised word can ever equal (NUL is removed by the
# normaliser); used as WordPiece's unknown token so that unknown words can be
# told apart and reported as the word itself, as bert4keras does.
_UNK_SENTINEL = "\x00<kerasformer-unknown-word>\x00"


def load_vocab(dict_path, encoding="utf-8", simplified=False, startswith=None):
    """Read a BERT ``vocab.txt`` (one token per line) into ``{token: id}``.

    The id of a token is its line number (0-based), as in Google's BERT and
    Hugging Face; when a line holds whitespace-separated fields only the
    first one is the token (bert4keras behaviour).

    Args:
        dict_path: str or os.PathLike, path of the vocabulary file.
        encoding: str, file encoding.
        simplified: bool.  If True, drop the tokens a Chinese/BERT model never
            produces from text, following bert4keras: every token longer than
            one character whose stem (token without a leading ``##``)
            contains a CJK character or a punctuation character.  This
            removes e.g. ``[unused1]``, ``##中`` and multi-character CJK
            words, and also ``[PAD]``/``[CLS]``/... unless they are listed in
            ``startswith``.
        startswith: list of str or None; tokens placed first (in this order)
            in the simplified vocabulary, typically
            ``["[PAD]", "[UNK]", "[CLS]", "[SEP]"]``.  Only used when
            ``simplified`` is True.

    Returns:
        ``token_dict`` (dict str -> int) if ``simplified`` is False, else
        ``(new_token_dict, keep_tokens)`` where ``new_token_dict`` maps the
        kept tokens to new contiguous ids ``0..n-1`` and ``keep_tokens[i]`` is
        the original id of the token whose new id is ``i`` (use it to slice
        the embedding matrix of a checkpoint).

    Raises:
        FileNotFoundError: ``dict_path`` does not exist.
        KeyError: a ``startswith`` token is not in the vocabulary.
    """
    path = os.fspath(dict_path)
    if not os.path.isfile(path):
        raise FileNotFoundError("vocabulary file not found: %r" % path)
    token_dict = {}
    with open(path, encoding=encoding, newline="") as reader:
        lines = reader.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # a final newline does not start another token
    for index, line in enumerate(lines):
        if line.endswith("\r"):
            line = line[:-1]
        fields = line.split()
        token_dict[fields[0] if fields else line] = index

    if not simplified:
        return token_dict

    new_token_dict, keep_tokens = {}, []
    for token in startswith or []:
        if token not in token_dict:
            raise KeyError(
                "startswith token %r is not in the vocabulary %r" % (token, path)
            )
        if token not in new_token_dict:
            new_token_dict[token] = len(new_token_dict)
            keep_tokens.append(token_dict[token])
    for token, token_id in sorted(token_dict.items(), key=lambda kv: kv[1]):
        if token in new_token_dict:
            continue
        if len(token) > 1 and any(
            Tokenizer._is_cjk_character(c) or Tokenizer._is_punctuation(c)
            for c in Tokenizer.stem(token)
        ):
            continue
        new_token_dict[token] = len(new_token_dict)
        keep_tokens.append(token_id)
    return new_token_dict, keep_tokens


def save_vocab(dict_path, token_dict, encoding="utf-8"):
    """Write ``token_dict`` (e.g. a simplified one) as a ``vocab.txt``.

    Tokens are written one per line in increasing id order.

    Args:
        dict_path: str or os.PathLike, output file.
        token_dict: dict str -> int.
        encoding: str, file encoding.
    """
    with open(os.fspath(dict_path), "w", encoding=encoding, newline="\n") as f:
        for token, _ in sorted(token_dict.items(), key=lambda kv: kv[1]):
            f.write(token + "\n")


def _lowercase_and_strip_accents(text):
    """Lower-case, NFD-decompose and drop non-spacing marks (category Mn)."""
    text = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in text if unicodedata.category(c) != "Mn")


class TokenizerBase(object):
    """What every tokenizer here shares (bert4keras's ``TokenizerBase``).

    A subclass provides ``_tokenize(text) -> list of str`` (no start/end
    tokens), ``token_to_id``, ``id_to_token``, ``decode`` and
    ``self._vocab_size``, sets ``self._token_pad/_token_unk/_token_mask`` and
    calls :meth:`_set_special_ids`.  This class adds the start/end tokens,
    ``maxlen`` truncation (bert4keras's rule) and text pairs.

    Args:
        token_start: str or None, token put first by :meth:`tokenize`.
        token_end: str or None, token put last by :meth:`tokenize`.
        pre_tokenize: callable str -> iterable of str, or None (its use is
            up to the subclass).
        token_translate: dict str -> str or None; tokens replaced after
            tokenization (and replaced back by ``decode``).

    Raises:
        TypeError: ``pre_tokenize`` is not callable, ``token_translate`` is
            not a dict, or a start/end token is not a str.
    """

    def __init__(self, token_start=None, token_end=None, pre_tokenize=None,
                 token_translate=None):
        if pre_tokenize is not None and not callable(pre_tokenize):
            raise TypeError("pre_tokenize must be callable or None")
        if token_translate is not None and not isinstance(token_translate, dict):
            raise TypeError("token_translate must be a dict or None, got %s"
                            % type(token_translate).__name__)
        for name, token in (("token_start", token_start),
                            ("token_end", token_end)):
            if token is not None and not isinstance(token, str):
                raise TypeError("%s must be a str or None, got %r"
                                % (name, token))
        self._token_pad = None
        self._token_unk = None
        self._token_mask = None
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize
        self._token_translate = dict(token_translate or {})
        self._token_translate_inv = {
            v: k for k, v in self._token_translate.items()
        }

    def _set_special_ids(self, lookup):
        """Set ``token_{pad,unk,mask,start,end}_id`` (None when absent).

        ``lookup(token)`` returns the id of a token or None.  The bert4keras
        names ``_token_start_id`` etc. are set as aliases.
        """
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            token_id = lookup(token) if token is not None else None
            setattr(self, "token_%s_id" % name, token_id)
            setattr(self, "_token_%s_id" % name, token_id)  # bert4keras name

    # ------------------------------------------------------------------
    # vocabulary
    @property
    def vocab_size(self):
        """int, number of ids of the vocabulary (tokens / pieces)."""
        return self._vocab_size

    def tokens_to_ids(self, tokens):
        """list of str -> list of int (see :meth:`token_to_id`)."""
        return [self.token_to_id(token) for token in tokens]

    def ids_to_tokens(self, ids):
        """Iterable of ints -> list of str (see :meth:`id_to_token`)."""
        return [self.id_to_token(i) for i in ids]

    # ------------------------------------------------------------------
    # tokenization
    def tokenize(self, text, maxlen=None):
        """Split ``text`` into tokens, with ``token_start``/``token_end`` added.

        Args:
            text: str.
            maxlen: int or None, the most tokens returned (counting the start
                and end tokens); extra tokens are cut before the end token.

        Returns:
            list of str.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: ``maxlen`` too small to keep the start/end tokens.
        """
        if not isinstance(text, str):
            raise TypeError("text must be a str, got %s" % type(text).__name__)
        tokens = [
            self._token_translate.get(token) or token
            for token in self._tokenize(text)
        ]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        if maxlen is not None:
            self._truncate(maxlen, -(int(self._token_end is not None) + 1), tokens)
        return tokens

    @staticmethod
    def _check_maxlen(maxlen):
        """``maxlen`` as a Python int (TypeError for non-integers)."""
        if not isinstance(maxlen, bool):
            try:
                return operator.index(maxlen)
            except TypeError:
                pass
        raise TypeError("maxlen must be an int or None, got %r" % (maxlen,))

    def _truncate(self, maxlen, index, *sequences):
        """bert4keras truncation with argument checks and a clear error."""
        maxlen = self._check_maxlen(maxlen)
        required = sum(self._special_ends(s) for s in sequences if s is not None)
        if maxlen < required:
            # Truncation would pop a start/end token (bert4keras silently dropped [CLS]).
            raise ValueError(
                "maxlen=%d is too small: the start/end tokens alone need %d"
                % (maxlen, required)
            )
        try:
            truncate_sequences(maxlen, index, *sequences)
        except IndexError:
            raise ValueError(
                "maxlen=%d is too small: cannot remove more tokens at index %d "
                "(the start/end tokens must stay)" % (maxlen, index)
            ) from None

    def _special_ends(self, tokens):
        """How many of ``tokens``' ends are this tokenizer's start/end tokens."""
        start = int(self._token_start is not None and tokens[:1] == [self._token_start])
        end = int(self._token_end is not None and len(tokens) > start
                  and tokens[-1] == self._token_end)
        return start + end

    def _as_tokens(self, text, name):
        if isinstance(text, str):
            return self.tokenize(text)
        if isinstance(text, (list, tuple)):
            return list(text)
        raise TypeError("%s must be a str or a list of tokens, got %s"
                        % (name, type(text).__name__))

    def encode(
        self,
        first_text,
        second_text=None,
        maxlen=None,
        pattern="S*E*E",
        truncate_from="right",
    ):
        """Token ids and segment ids of a text or a text pair (bert4keras).

        Args:
            first_text: str, or list of str tokens (already including start
                and end tokens, as :meth:`tokenize` returns them).
            second_text: str, list of str tokens, or None.
            maxlen: int or None, the most ids returned.  Tokens are removed
                one at a time from the currently longest sequence (the first
                one on ties) until the total fits.
            pattern: with S the start and E the end token,
                ``"S*E*E"`` -> ``S a E b E`` (BERT's ``[CLS] a [SEP] b [SEP]``);
                ``"S*ES*E"`` -> ``S a E S b E``.  Absent start/end tokens
                (None) are simply left out, e.g. ``a b`` for GPT-2 or
                ``a </s> b </s>`` for T5.
            truncate_from: ``"right"`` removes tokens just before the end
                token, ``"left"`` just after the start token, an int is the
                ``list.pop`` index used in each sequence.

        Returns:
            ``(token_ids, segment_ids)``: two lists of ints of equal length;
            segment 0 for the first text, 1 for the second.

        Raises:
            ValueError: unknown ``pattern`` / ``truncate_from`` or too small
                ``maxlen``.
            TypeError: texts of another type.
        """
        if pattern not in _PATTERNS:
            raise ValueError("pattern must be one of %s, got %r"
                             % (_PATTERNS, pattern))
        if truncate_from == "right":
            index = -int(self._token_end is not None) - 1
        elif truncate_from == "left":
            index = int(self._token_start is not None)
        elif isinstance(truncate_from, int) and not isinstance(truncate_from, bool):
            index = truncate_from
        else:
            raise ValueError("truncate_from must be 'right', 'left' or an int, "
                             "got %r" % (truncate_from,))

        first_tokens = self._as_tokens(first_text, "first_text")
        second_tokens = None
        if second_text is not None:
            second_tokens = self._as_tokens(second_text, "second_text")

        if maxlen is not None:
            maxlen = self._check_maxlen(maxlen)
            if (second_tokens is not None and pattern == "S*E*E"
                    and self._token_start):
                # the second start token is dropped below; bert4keras adds 1
                # even without a start token, returning maxlen + 1 ids
                maxlen += 1
            self._truncate(maxlen, index, first_tokens, second_tokens)

        token_ids = self.tokens_to_ids(first_tokens)
        segment_ids = [0] * len(token_ids)
        if second_tokens is not None:
            if pattern == "S*E*E" and self._token_start:
                second_tokens = second_tokens[1:]
            second_ids = self.tokens_to_ids(second_tokens)
            token_ids.extend(second_ids)
            segment_ids.extend([1] * len(second_ids))
        return token_ids, segment_ids

    def _tokenize(self, text):
        """Tokens of ``text`` without start/end tokens (subclass hook)."""
        raise NotImplementedError

    def token_to_id(self, token):
        """Id of ``token`` (subclass hook)."""
        raise NotImplementedError

    def id_to_token(self, i):
        """Token (str) of id ``i`` (int or numpy integer), from ``_token_dict_inv``
        (subclasses without that table override this).

        Raises:
            KeyError: ``i`` is not an id of the vocabulary.
        """
        i = operator.index(i)
        try:
            return self._token_dict_inv[i]
        except KeyError:
            raise KeyError("id %d is not in the vocabulary (size %d)"
                           % (i, self._vocab_size)) from None

    def decode(self, ids):
        """Text of a list of ids (subclass hook)."""
        raise NotImplementedError


class Tokenizer(TokenizerBase):
    """BERT WordPiece tokenizer with bert4keras's interface.

    Text is cleaned (control characters removed, whitespace unified), CJK
    characters are split off, optionally lower-cased with accents stripped,
    split on whitespace and punctuation, and each word is cut into the
    longest vocabulary pieces from the left (``##`` marks a continuation),
    i.e. WordPiece (Wu et al. 2016, arXiv:1609.08144) as in BERT.  A word
    that cannot be cut (or is longer than ``word_maxlen``) stays whole in the
    token list, like bert4keras, and maps to the ``[UNK]`` id.

    Args:
        token_dict: dict str -> int, or str / os.PathLike path of a
            ``vocab.txt`` (read with :func:`load_vocab`).
        do_lower_case: bool, lower-case and strip accents (uncased models,
            bert-base-chinese).
        word_maxlen: int > 0, words longer than this are not split.
        token_start: str or None, token put first (``[CLS]``); None: none.
        token_end: str or None, token put last (``[SEP]``); None: none.
        pre_tokenize: callable str -> iterable of str, or None.  If given,
            the (lower-cased) text is first split by it; pieces found in the
            vocabulary are kept as tokens, the others are tokenized normally
            (e.g. a word segmenter for word-level Chinese vocabularies).
        token_translate: dict str -> str or None; tokens replaced after
            tokenization (and replaced back by ``decode``).

    Attributes:
        token_start_id, token_end_id, token_pad_id, token_unk_id,
        token_mask_id: int or None, ids of ``token_start``, ``token_end``,
        ``[PAD]``, ``[UNK]``, ``[MASK]`` (None when absent).  The bert4keras
        names ``_token_start_id`` etc. are kept as aliases.

    Raises:
        FileNotFoundError: the vocabulary path does not exist.
        TypeError / ValueError: bad ``token_dict`` or ``word_maxlen``.
    """

    def __init__(
        self,
        token_dict,
        do_lower_case=False,
        word_maxlen=200,
        token_start="[CLS]",
        token_end="[SEP]",
        pre_tokenize=None,
        token_translate=None,
    ):
        if isinstance(token_dict, (str, bytes, os.PathLike)):
            token_dict = load_vocab(token_dict)
        if not isinstance(token_dict, dict):
            raise TypeError(
                "token_dict must be a dict {token: id} or a vocab.txt path, "
                "got %s" % type(token_dict).__name__
            )
        if not token_dict:
            raise ValueError("token_dict is empty")
        if isinstance(word_maxlen, bool) or not isinstance(word_maxlen, int) \
                or word_maxlen < 1:
            raise ValueError("word_maxlen must be a positive int, got %r"
                             % (word_maxlen,))
        super().__init__(token_start, token_end, pre_tokenize, token_translate)

        self._token_dict = dict(token_dict)
        self._token_dict_inv = {v: k for k, v in self._token_dict.items()}
        self._vocab_size = len(self._token_dict)
        self._do_lower_case = bool(do_lower_case)
        self._word_maxlen = word_maxlen
        self._token_pad = "[PAD]"
        self._token_unk = "[UNK]"
        self._token_mask = "[MASK]"
        self._set_special_ids(self._token_dict.get)

        wordpiece_vocab = dict(self._token_dict)
        wordpiece_vocab[_UNK_SENTINEL] = max(self._token_dict.values()) + 1
        self._tokenizer = _RustTokenizer(
            _models.WordPiece(
                vocab=wordpiece_vocab,
                unk_token=_UNK_SENTINEL,
                max_input_chars_per_word=word_maxlen,
                continuing_subword_prefix="##",
            )
        )
        self._tokenizer.normalizer = _normalizers.BertNormalizer(
            clean_text=True,
            handle_chinese_chars=True,
            strip_accents=self._do_lower_case,
            lowercase=self._do_lower_case,
        )
        self._tokenizer.pre_tokenizer = _pre_tokenizers.BertPreTokenizer()
        self._char_cache = {}

    # ------------------------------------------------------------------
    # vocabulary
    def token_to_id(self, token):
        """Id of ``token`` (str); the ``[UNK]`` id for unknown tokens.

        Raises:
            KeyError: ``token`` is unknown and the vocabulary has no [UNK].
        """
        token_id = self._token_dict.get(token, self.token_unk_id)
        if token_id is None:
            raise KeyError(
                "token %r is not in the vocabulary, which has no %r token"
                % (token, self._token_unk)
            )
        return token_id

    # ------------------------------------------------------------------
    # tokenization
    def _encode_words(self, texts):
        """WordPiece tokens of each text (no start/end tokens)."""
        if len(texts) == 1:  # encode_batch has a thread-pool overhead
            encodings = [self._tokenizer.encode(texts[0], add_special_tokens=False)]
        else:
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        results = []
        for text, encoding in zip(texts, encodings):
            tokens = encoding.tokens
            if _UNK_SENTINEL in tokens:
                normalized = self._tokenizer.normalizer.normalize_str(text)
                words = self._tokenizer.pre_tokenizer.pre_tokenize_str(normalized)
                word_ids = encoding.word_ids
                tokens = [
                    words[w][0] if t == _UNK_SENTINEL else t
                    for t, w in zip(tokens, word_ids)
                ]
            results.append(tokens)
        return results

    def _tokenize(self, text):
        """Basic tokenization of ``text`` into WordPiece tokens (no [CLS]/[SEP])."""
        if self._pre_tokenize is None:
            return self._encode_words([text])[0]
        if self._do_lower_case:
            text = _lowercase_and_strip_accents(text)
        pieces = list(self._pre_tokenize(text))
        todo = [p for p in pieces if p not in self._token_dict]
        encoded = iter(self._encode_words(todo)) if todo else iter(())
        tokens = []
        for piece in pieces:
            if piece in self._token_dict:
                tokens.append(piece)
            else:
                tokens.extend(next(encoded))
        return tokens

    # ------------------------------------------------------------------
    # detokenization
    def decode(self, ids, tokens=None):
        """Readable text from ids (bert4keras's detokenization rules).

        Special ``[...]`` tokens are dropped, ``##`` pieces are glued to the
        previous piece, CJK characters are not separated by spaces, and no
        space is left after CJK punctuation or ``+-/={(<[``, inside English
        contractions (``' s`` -> ``'s``) or decimals (``1. 5`` -> ``1.5``).
        Lower-casing and stripped accents are not undone.

        Args:
            ids: iterable of ints (ignored when ``tokens`` is given).
            tokens: list of str or None.

        Returns:
            str.
        """
        if tokens is None:
            tokens = self.ids_to_tokens(ids)
        tokens = [self._token_translate_inv.get(t) or t for t in tokens]
        tokens = [t for t in tokens if not self._is_special(t)]

        text = ""
        for i, token in enumerate(tokens):
            if token[:2] == "##":
                text += token[2:]
            elif len(token) == 1 and self._is_cjk_character(token):
                text += token
            elif len(token) == 1 and self._is_punctuation(token):
                text += token + " "
            elif i > 0 and text and self._is_cjk_character(text[-1]):
                text += token
            else:
                text += " " + token

        text = _SPACES.sub(" ", text)
        text = _CONTRACTION.sub(r"'\1 ", text)
        text = _NO_SPACE_AFTER.sub(r"\1", text)
        text = _DECIMAL.sub(r"\1\2", text)
        return text.strip()

    # ------------------------------------------------------------------
    # alignment
    def _normalize_char(self, ch):
        """What the normaliser turns one original character into."""
        piece = self._char_cache.get(ch)
        if piece is None:
            piece = self._tokenizer.normalizer.normalize_str(ch)
            if piece and not piece.strip(" "):
                piece = " "  # whitespace stays a (single) separator
            else:
                piece = piece.replace(" ", "")  # padding around CJK chars
            self._char_cache[ch] = piece
        return piece

    def rematch(self, text, tokens):
        """Map each token back to character positions of the original text.

        The text is normalised character by character exactly as for
        tokenization (control characters removed, lower-casing and accent
        stripping when ``do_lower_case``), and each token's stem is searched
        left to right in the normalised text (the bert4keras algorithm), so
        any token list works, e.g. a truncated :meth:`tokenize` result.

        Args:
            text: str, the original text.
            tokens: list of str.

        Returns:
            list (one per token) of lists of int: the indices in ``text`` of
            the characters that make up the token.  Special tokens
            (``[CLS]``, ``[SEP]``, ``[UNK]``, ...) and tokens that cannot be
            found after the previous token get ``[]``.

        Raises:
            TypeError: ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError("text must be a str, got %s" % type(text).__name__)
        pieces, char_mapping = [], []
        for i, ch in enumerate(text):
            piece = self._normalize_char(ch)
            pieces.append(piece)
            char_mapping.extend([i] * len(piece))
        normalized = "".join(pieces)

        token_mapping, offset = [], 0
        for token in tokens:
            if self._is_special(token):
                token_mapping.append([])
                continue
            stem = self.stem(token)
            start = normalized.find(stem, offset) if stem else -1
            if start < 0:
                token_mapping.append([])
                continue
            end = start + len(stem)
            token_mapping.append(char_mapping[start:end])
            offset = end
        return token_mapping

    # ------------------------------------------------------------------
    # character classes (bert4keras helpers)
    @staticmethod
    def stem(token):
        """``token`` without a leading ``##``."""
        return token[2:] if token[:2] == "##" else token

    @staticmethod
    def _is_space(ch):
        """Space, tab, newline, carriage return or a Zs character."""
        return ch in " \n\r\t" or unicodedata.category(ch) == "Zs"

    @staticmethod
    def _is_punctuation(ch):
        """ASCII punctuation or a Unicode P* character (half/full width)."""
        code = ord(ch)
        return (
            33 <= code <= 47
            or 58 <= code <= 64
            or 91 <= code <= 96
            or 123 <= code <= 126
            or unicodedata.category(ch).startswith("P")
        )

    @staticmethod
    def _cjk_punctuation():
        """str of the full-width / CJK punctuation used by ``decode``."""
        return _CJK_PUNCTUATION

    @staticmethod
    def _is_cjk_character(ch):
        """Character of a CJK Unified Ideographs block (incl. extensions)."""
        code = ord(ch)
        return (
            0x4E00 <= code <= 0x9FFF
            or 0x3400 <= code <= 0x4DBF
            or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2B73F
            or 0x2B740 <= code <= 0x2B81F
            or 0x2B820 <= code <= 0x2CEAF
            or 0xF900 <= code <= 0xFAFF
            or 0x2F800 <= code <= 0x2FA1F
        )

    @staticmethod
    def _is_control(ch):
        """Unicode control (Cc) or format (Cf) character."""
        return unicodedata.category(ch) in ("Cc", "Cf")

    @staticmethod
    def _is_special(token):
        """True for bracketed tokens such as ``[CLS]`` or ``[unused1]``."""
        return bool(token) and token[0] == "[" and token[-1] == "]"


# ----------------------------------------------------------------------------
# GPT-2 byte-level BPE
def _byte_to_unicode():
    """GPT-2's byte -> character table of byte-level BPE (Radford et al. 2019).

    Bytes that are printable Latin-1 characters map to themselves, the other
    68 bytes (controls, space, soft hyphen...) to ``chr(256 + k)`` in byte
    order, so every token of the vocabulary is a printable string; e.g. the
    space byte is ``"Ġ"`` and the newline ``"Ċ"``.
    """
    printable = (
        set(range(ord("!"), ord("~") + 1))
        | set(range(ord("\u00a1"), ord("\u00ac") + 1))
        | set(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


_UNICODE_TO_BYTE = {ch: byte for byte, ch in _byte_to_unicode().items()}


def _check_file(path, what):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError("%s not found: %r" % (what, path))
    return path


class GPT2Tokenizer(TokenizerBase):
    """GPT-2 byte-level BPE tokenizer with bert4keras's interface.

    Byte-level BPE (Radford et al. 2019, "Language Models are Unsupervised
    Multitask Learners"; BPE: Sennrich et al. 2016, arXiv:1508.07909): the
    text is split by GPT-2's regular expression (a leading space stays with
    the word that follows it), each piece's UTF-8 bytes are written as
    printable characters (space -> ``Ġ``) and merged by the ranked merges of
    ``vocab.bpe``.  Every string is representable, so there is no unknown
    token and ``decode(encode(text)) == text``.  Built on the Rust
    ``tokenizers`` library exactly like ``transformers.GPT2TokenizerFast``
    (ids are equal, including ``<|endoftext|>`` written in the text, which
    becomes the single special token, as there).

    Args:
        encoder_json_path: str or os.PathLike, OpenAI's ``encoder.json``
            (= Hugging Face ``vocab.json``): ``{token: id}``.
        vocab_bpe_path: str or os.PathLike, OpenAI's ``vocab.bpe`` (= HF
            ``merges.txt``): one merge ``"a b"`` per line, by rank.
        token_start: str or None, token put first by ``tokenize``/``encode``
            (GPT-2 uses none).
        token_end: str or None, token put last (e.g. ``"<|endoftext|>"`` to
            mark document ends for training; None, the default, for prompts
            and for ids equal to ``GPT2TokenizerFast``).
        eos_token: str or None, GPT-2's end-of-text token.
        add_prefix_space: bool, treat the text as if it began with a space
            (GPT-2 does not; ``GPT2TokenizerFast(add_prefix_space=True)``).
        token_translate: dict str -> str or None, see :class:`TokenizerBase`.

    Attributes:
        eos_token_id: int or None, id of ``eos_token`` (50256 for GPT-2).
        token_end_id: int or None, id of ``token_end`` if given, else
            ``eos_token_id``: the id a generated text ends with (bert4keras's
            ``end_id``), whether or not ``encode`` appends it.
        token_start_id: int or None, id of ``token_start``.
        token_pad_id, token_unk_id, token_mask_id: None (GPT-2 has no such
            tokens).  The bert4keras names ``_token_end_id`` etc. are aliases.

    Raises:
        FileNotFoundError: a vocabulary file does not exist.
        ValueError: ``token_start``/``token_end``/``eos_token`` is not in the
            vocabulary.
        Exception: the files cannot be parsed (raised by ``tokenizers``).
    """

    def __init__(
        self,
        encoder_json_path,
        vocab_bpe_path,
        token_start=None,
        token_end=None,
        eos_token="<|endoftext|>",
        add_prefix_space=False,
        token_translate=None,
    ):
        super().__init__(token_start, token_end, None, token_translate)
        vocab, merges = _models.BPE.read_file(
            _check_file(encoder_json_path, "GPT-2 encoder.json"),
            _check_file(vocab_bpe_path, "GPT-2 vocab.bpe"),
        )
        for name, token in (("token_start", token_start),
                            ("token_end", token_end),
                            ("eos_token", eos_token)):
            if token is not None and token not in vocab:
                raise ValueError("%s %r is not in the vocabulary %r"
                                 % (name, token, os.fspath(encoder_json_path)))
        self._token_dict = dict(vocab)
        self._token_dict_inv = {v: k for k, v in self._token_dict.items()}
        self._vocab_size = len(self._token_dict)

        self._tokenizer = _RustTokenizer(
            _models.BPE(
                vocab=vocab,
                merges=merges,
                continuing_subword_prefix="",
                end_of_word_suffix="",
                fuse_unk=False,
            )
        )
        self._tokenizer.pre_tokenizer = _pre_tokenizers.ByteLevel(
            add_prefix_space=bool(add_prefix_space))
        self._tokenizer.decoder = _decoders.ByteLevel()
        self._special_tokens = set()
        if eos_token is not None:
            # matched in the input text, as in GPT2TokenizerFast; also what
            # decode(skip_special_tokens=True) drops
            self._tokenizer.add_special_tokens([_AddedToken(eos_token, special=True)])
            self._special_tokens.add(eos_token)

        self._set_special_ids(self._token_dict.get)
        self.eos_token_id = vocab[eos_token] if eos_token is not None else None
        if token_end is None:
            self.token_end_id = self._token_end_id = self.eos_token_id

    # ------------------------------------------------------------------
    # vocabulary
    def token_to_id(self, token):
        """Id of ``token`` (str, a byte-level token such as ``"Ġworld"``).

        Raises:
            KeyError: ``token`` is not in the vocabulary (there is no unknown
                token to fall back to).
        """
        try:
            return self._token_dict[token]
        except KeyError:
            raise KeyError("token %r is not in the GPT-2 vocabulary (byte-level "
                           "BPE has no unknown token)" % (token,)) from None

    def _is_special(self, token):
        """True for the special token (``<|endoftext|>``)."""
        return token in self._special_tokens

    # ------------------------------------------------------------------
    # tokenization
    def _tokenize(self, text):
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    # ``tokenize`` and ``encode`` are TokenizerBase's: with the defaults
    # ``encode(text)`` returns ``(token_ids, segment_ids)`` where
    # ``token_ids`` equals ``GPT2TokenizerFast(text)["input_ids"]``.

    def decode(self, ids, skip_special_tokens=True):
        """Text of a sequence of ids (inverse of ``encode`` on any text).

        Bytes are joined and decoded as UTF-8; a sequence cut inside a
        multi-byte character decodes to U+FFFD there (``errors="replace"``,
        as in GPT-2 and ``GPT2TokenizerFast``).

        Args:
            ids: iterable of ints (e.g. a list or a 1-D numpy array).  Ids
                outside ``[0, vocab_size)`` are dropped: model vocabularies
                are often padded beyond the tokenizer's (e.g. 50304 rows), and
                those rows have no text.
            skip_special_tokens: bool, drop ``<|endoftext|>`` (like the other
                tokenizers here drop their start/end tokens); False keeps it
                in the text, like ``GPT2TokenizerFast.decode``'s default.

        Returns:
            str.
        """
        ids = [operator.index(i) for i in ids]
        ids = [i for i in ids if 0 <= i < self._vocab_size]
        if self._token_translate_inv:
            ids = [
                self.token_to_id(self._token_translate_inv.get(t) or t)
                for t in self.ids_to_tokens(ids)
            ]
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------
    # alignment
    def rematch(self, text, tokens):
        """Map each token back to character positions of the original text.

        Each token's bytes are searched left to right in the UTF-8 bytes of
        ``text`` (the bert4keras algorithm on bytes), so any token list works,
        e.g. a truncated :meth:`tokenize` result.  A token's leading ``Ġ`` is
        the space before the word and maps to it; a token holding only part
        of a multi-byte character maps to that whole character, so
        neighbouring tokens may share a position.  This equals the
        ``offset_mapping`` of ``GPT2TokenizerFast`` as character lists.

        Args:
            text: str, the original text.
            tokens: list of str.

        Returns:
            list (one per token) of lists of int: the indices in ``text`` of
            the characters the token's bytes belong to.  Special tokens and
            tokens that cannot be found after the previous token get ``[]``.

        Raises:
            TypeError: ``text`` is not a str.
        """
        if not isinstance(text, str):
            raise TypeError("text must be a str, got %s" % type(text).__name__)
        data, byte_to_char = bytearray(), []
        for i, ch in enumerate(text):
            encoded = ch.encode("utf-8", errors="surrogatepass")
            data.extend(encoded)
            byte_to_char.extend([i] * len(encoded))
        data = bytes(data)

        token_mapping, offset = [], 0
        for token in tokens:
            token = self._token_translate_inv.get(token) or token
            if self._is_special(token) or not token or any(
                    c not in _UNICODE_TO_BYTE for c in token):
                token_mapping.append([])
                continue
            piece = bytes(_UNICODE_TO_BYTE[c] for c in token)
            start = data.find(piece, offset)
            if start < 0:
                token_mapping.append([])
                continue
            end = start + len(piece)
            chars = []
            for i in byte_to_char[start:end]:
                if not chars or chars[-1] != i:
                    chars.append(i)
            token_mapping.append(chars)
            offset = end
        return token_mapping


# ----------------------------------------------------------------------------
# SentencePiece
class SpTokenizer(TokenizerBase):
    """SentencePiece tokenizer with bert4keras's interface (``SpTokenizer``).

    SentencePiece (Kudo & Richardson 2018, arXiv:1808.06226) models (unigram
    or BPE, as used by T5, mT5, ALBERT, XLNet...) are run by the
    ``sentencepiece`` library itself, so the ids of :meth:`tokenize` /
    :meth:`encode` are ``SentencePieceProcessor.encode(text)`` followed by
    the end token.  Pieces not in the model (characters the model never saw)
    come out as the raw text piece in :meth:`tokenize` and as the unknown id
    in :meth:`encode`, as in sentencepiece.

    Args:
        sp_model_path: str or os.PathLike, a sentencepiece ``*.model`` file.
        token_start: str or None, piece put first (T5: none).
        token_end: str or None, piece put last (T5: ``"</s>"``).
        pre_tokenize: callable str -> iterable of str, or None; if given, the
            text is replaced by its pieces joined with spaces before
            sentencepiece (e.g. a word segmenter), as in bert4keras.
        token_translate: dict str -> str or None, see :class:`TokenizerBase`.

    Attributes:
        sp_model: the ``sentencepiece.SentencePieceProcessor``.
        token_pad_id: int or None, the model's pad id (None when the model
            has none, sentencepiece's default ``pad_id=-1``; T5's is 0).
        token_unk_id: int, the unknown id.
        token_mask_id: int or None, id of ``[MASK]`` if it is a piece.
        token_start_id, token_end_id: int or None, ids of ``token_start`` /
            ``token_end``.  The bert4keras names ``_token_pad_id`` etc. are
            aliases.

    Raises:
        ImportError: ``sentencepiece`` is not installed.
        FileNotFoundError: ``sp_model_path`` does not exist.
        ValueError: ``token_start``/``token_end`` is not a piece of the model
            (bert4keras silently used the unknown id instead).
    """

    def __init__(
        self,
        sp_model_path,
        token_start=None,
        token_end="</s>",
        pre_tokenize=None,
        token_translate=None,
    ):
        super().__init__(token_start, token_end, pre_tokenize, token_translate)
        try:
            import sentencepiece
        except ImportError as error:
            raise ImportError(
                "SpTokenizer needs the sentencepiece package "
                "(pip install sentencepiece)") from error
        path = _check_file(sp_model_path, "sentencepiece model")
        self.sp_model = sentencepiece.SentencePieceProcessor(model_file=path)
        self._vocab_size = self.sp_model.get_piece_size()

        pad_id = self.sp_model.pad_id()
        self._token_pad = self.sp_model.id_to_piece(pad_id) if pad_id >= 0 else None
        self._token_unk = self.sp_model.id_to_piece(self.sp_model.unk_id())
        self._token_mask = "[MASK]"
        for name, token in (("token_start", token_start),
                            ("token_end", token_end)):
            if token is not None and self._piece_id(token) is None:
                raise ValueError("%s %r is not a piece of the sentencepiece "
                                 "model %r" % (name, token, path))
        self._set_special_ids(self._piece_id)

    def _piece_id(self, piece):
        """Id of ``piece``, or None if it is not a piece of the model."""
        i = self.sp_model.piece_to_id(piece)
        if i == self.sp_model.unk_id() and piece != self._token_unk:
            return None
        return i

    # ------------------------------------------------------------------
    # vocabulary
    def token_to_id(self, token):
        """Id of the piece ``token`` (str); the unknown id for other strings."""
        if not isinstance(token, str):
            raise TypeError("token must be a str, got %s" % type(token).__name__)
        return self.sp_model.piece_to_id(token)

    def id_to_token(self, i):
        """Piece (str) of id ``i``; ``""`` for ids ``>= vocab_size``.

        Model vocabularies may be larger than the sentencepiece model (T5:
        32128 rows for 32000 pieces); such ids have no text (bert4keras).

        Raises:
            KeyError: ``i`` is negative.
        """
        i = operator.index(i)
        if i < 0:
            raise KeyError("id %d is not in the vocabulary (size %d)"
                           % (i, self._vocab_size))
        if i < self._vocab_size:
            return self.sp_model.id_to_piece(i)
        return ""

    def _is_special(self, i):
        """True for control (``<s>``, ``</s>``, pad), unknown and unused ids,
        and for ids outside the model (bert4keras's ``_is_special``)."""
        i = operator.index(i)
        if not 0 <= i < self._vocab_size:
            return True
        return bool(
            self.sp_model.is_control(i)
            or self.sp_model.is_unknown(i)
            or self.sp_model.is_unused(i)
        )

    def _is_decodable(self, i):
        """True for ids that are ordinary text pieces (not special)."""
        return not self._is_special(i)

    # ------------------------------------------------------------------
    # tokenization
    def _tokenize(self, text):
        if self._pre_tokenize is not None:
            text = " ".join(self._pre_tokenize(text))
        return self.sp_model.encode(text, out_type=str)

    def decode(self, ids):
        """Text of a sequence of ids (sentencepiece's detokenization).

        Control pieces (``</s>``...) and ids ``>= vocab_size`` give no text;
        the unknown id gives `` ⁇ `` (sentencepiece's rendering); the text
        is what sentencepiece's own ``decode`` returns.

        Args:
            ids: iterable of ints (e.g. a list or a 1-D numpy array).

        Returns:
            str.

        Raises:
            KeyError: an id is negative.
        """
        tokens = [
            self._token_translate_inv.get(token) or token
            for token in self.ids_to_tokens(ids)
        ]
        return self.sp_model.decode_pieces([t for t in tokens if t])
