"""Data-side helpers with bert4keras's names and behaviour.

Everything here is plain Python / NumPy (no Keras import), so it can be used in data
pipelines on any backend:

- :func:`sequence_padding` - pad (and truncate) a batch of sequences into one array.
- :func:`truncate_sequences` - shorten a group of token lists to a total budget.
- :func:`text_segmentate` - split long text into pieces at separators.
- :class:`DataGenerator` - base class for batch generators fed to ``model.fit``.
- :func:`is_string`, :func:`strQ2B`, :func:`string_matching` - small text helpers.
"""
import re

import numpy as np

__all__ = [
    "is_string",
    "strQ2B",
    "string_matching",
    "sequence_padding",
    "truncate_sequences",
    "text_segmentate",
    "DataGenerator",
]


def is_string(s):
    """Return ``True`` if ``s`` is a ``str`` (bytes are not strings here)."""
    return isinstance(s, str)


# Full-width ASCII variants U+FF01..U+FF5E map to U+0021..U+007E by this offset;
# the ideographic space U+3000 maps to the ordinary space.
_FULLWIDTH_OFFSET = 0xFEE0
_Q2B_TABLE = {code: code - _FULLWIDTH_OFFSET for code in range(0xFF01, 0xFF5F)}
_Q2B_TABLE[0x3000] = 0x20


def strQ2B(ustring):
    """Convert full-width ("quanjiao") characters to their half-width forms.

    Maps U+FF01..U+FF5E (full-width ``!`` .. ``~``: letters, digits, punctuation) to
    U+0021..U+007E and the ideographic space U+3000 to U+0020; every other character
    (CJK ideographs, CJK punctuation such as ``。`` or ``、``) is left unchanged.

    Args:
        ustring: ``str``.

    Returns:
        ``str`` of the same length.
    """
    return ustring.translate(_Q2B_TABLE)


def string_matching(s, keywords):
    """Return ``True`` if at least one of ``keywords`` occurs in ``s``.

    Each keyword is a regular expression tried with ``re.search`` (so plain words
    match as substrings; escape them with ``re.escape`` if they contain regex
    metacharacters).

    Args:
        s: ``str`` to search.
        keywords: iterable of ``str`` patterns.

    Returns:
        ``bool``.
    """
    return any(re.search(k, s) for k in keywords)


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode="post"):
    """Pad a batch of variable-length sequences into one NumPy array.

    Each element of ``inputs`` is a (possibly nested) list or array whose first
    ``seq_dims`` dimensions are sequence dimensions of varying size and whose
    remaining dimensions (if any) are the same for every element. For example token
    ids are 1-D (``seq_dims=1``); GlobalPointer label matrices ``[n, n]`` or
    ``[heads, n, n]`` transposed to ``[n, n, heads]`` use ``seq_dims=2``.

    Every sequence dimension is padded with ``value`` up to the target length; a
    sequence longer than the target is truncated, always keeping its *first*
    ``length`` entries (in both modes, as bert4keras does).

    Args:
        inputs: non-empty list of sequences. Element ``i`` has shape
            ``[l_i1, ..., l_i{seq_dims}, *feature_shape]``. An empty element
            (size 0, e.g. ``[]``) is allowed and becomes all padding.
        length: target length. ``None`` pads every sequence dim to the batch
            maximum; an ``int`` is used for every sequence dim; a list/tuple gives
            one entry per sequence dim (an entry may be ``None`` for "batch
            maximum").
        value: padding value (cast to the output dtype).
        seq_dims: number of leading sequence dimensions (>= 1).
        mode: ``"post"`` pads after the data, ``"pre"`` pads before it.

    Returns:
        ``np.ndarray`` of shape ``[len(inputs), L_1, ..., L_{seq_dims},
        *feature_shape]``. Its dtype is the common NumPy dtype of the non-empty
        inputs (Python ints give ``int64`` on 64-bit Linux, floats ``float64``,
        an ``int32`` array stays ``int32``); if every input is empty it is the
        dtype of ``value``.

    Raises:
        ValueError: ``mode`` is not ``"post"``/``"pre"``; ``inputs`` is empty;
            ``seq_dims < 1``; ``length`` has the wrong number of entries or a
            negative entry; an element has fewer than ``seq_dims`` dimensions or a
            feature shape different from the others (or is ragged).
    """
    if mode not in ("post", "pre"):
        raise ValueError(f'sequence_padding: mode must be "post" or "pre", got {mode!r}')
    if seq_dims < 1:
        raise ValueError(f"sequence_padding: seq_dims must be >= 1, got {seq_dims}")
    if len(inputs) == 0:
        raise ValueError("sequence_padding: inputs must contain at least one sequence")

    arrays = []
    for x in inputs:
        try:
            arrays.append(np.asarray(x))
        except ValueError as e:  # ragged nested lists
            raise ValueError(f"sequence_padding: element is not rectangular: {e}") from None
    non_empty = [a for a in arrays if a.size > 0]
    for a in non_empty:
        if a.ndim < seq_dims:
            raise ValueError(
                f"sequence_padding: element of shape {a.shape} has fewer than "
                f"seq_dims={seq_dims} dimensions"
            )

    if non_empty:
        dtype = np.result_type(*non_empty)
        feature_shape = non_empty[0].shape[seq_dims:]
    else:
        dtype = np.asarray(value).dtype
        feature_shape = arrays[0].shape[seq_dims:]
    for a in non_empty:
        if a.shape[seq_dims:] != feature_shape:
            raise ValueError(
                "sequence_padding: all elements must share the trailing (non-sequence) "
                f"shape; got {feature_shape} and {a.shape[seq_dims:]}"
            )

    if length is None or np.ndim(length) == 0:
        length = [length] * seq_dims
    else:
        length = list(length)
        if len(length) != seq_dims:
            raise ValueError(
                f"sequence_padding: length has {len(length)} entries, expected "
                f"seq_dims={seq_dims}"
            )
    target = []
    for d, n in enumerate(length):
        if n is None:
            n = max((a.shape[d] if a.ndim > d else 0) for a in arrays)
        n = int(n)
        if n < 0:
            raise ValueError(f"sequence_padding: length must be >= 0, got {n}")
        target.append(n)

    out = np.full((len(arrays), *target, *feature_shape), value, dtype=dtype)
    for i, a in enumerate(arrays):
        if a.size == 0:
            continue
        src = tuple(slice(0, min(a.shape[d], target[d])) for d in range(seq_dims))
        a = a[src]
        if mode == "post":
            dst = tuple(slice(0, a.shape[d]) for d in range(seq_dims))
        else:
            dst = tuple(slice(target[d] - a.shape[d], target[d]) for d in range(seq_dims))
        out[(i, *dst)] = a
    return out


def truncate_sequences(maxlen, indices, *sequences):
    """Shorten several lists in place until their total length is ``<= maxlen``.

    While the summed length exceeds ``maxlen``, one element is popped from the
    currently longest sequence (the first one on ties) at position
    ``indices[k]`` for that sequence ``k``. This is how BERT-style tokenizers cut
    ``[CLS] a [SEP] b [SEP]`` pairs: with ``indices=-2`` the final ``[SEP]`` of each
    segment is kept and tokens just before it are removed.

    Args:
        maxlen: ``int >= 0``, the total length budget.
        indices: ``int`` position passed to ``list.pop`` for every sequence, or a
            list/tuple with one position per entry of ``sequences`` (``None``
            entries included).
        *sequences: mutable lists (anything with ``len`` and ``pop``) or ``None``;
            ``None`` entries are ignored.

    Returns:
        ``list`` of the non-``None`` sequences, in order. They are the same
        objects as passed in, truncated in place. (bert4keras also drops empty
        sequences from the returned list; here they are kept so the result lines
        up with the non-``None`` arguments.)

    Raises:
        ValueError: ``maxlen < 0``, or ``indices`` is a list whose length differs
            from the number of ``sequences``.
    """
    if maxlen < 0:
        raise ValueError(f"truncate_sequences: maxlen must be >= 0, got {maxlen}")
    if isinstance(indices, (list, tuple)):
        if len(indices) != len(sequences):
            raise ValueError(
                f"truncate_sequences: got {len(indices)} indices for "
                f"{len(sequences)} sequences"
            )
        pairs = [(s, i) for s, i in zip(sequences, indices) if s is not None]
    else:
        pairs = [(s, indices) for s in sequences if s is not None]

    seqs = [s for s, _ in pairs]
    pops = [i for _, i in pairs]
    lengths = [len(s) for s in seqs]
    while sum(lengths) > maxlen:
        k = int(np.argmax(lengths))
        seqs[k].pop(pops[k])
        lengths[k] -= 1
    return seqs


def text_segmentate(text, maxlen, seps="\n", strips=None):
    """Split ``text`` into pieces of at most ``maxlen`` characters, at separators.

    The text is first stripped (``text.strip().strip(strips)``). If it is longer
    than ``maxlen`` it is split at ``seps[0]`` (each separator stays at the end of
    the piece before it) and consecutive pieces are greedily merged while the merged
    chunk plus the next piece and its separator stays within ``maxlen``. A chunk
    that is still too long is split recursively with ``seps[1:]``. When the
    separators run out a too-long chunk is returned as it is (no hard cut).

    With ``strips=None`` and text without leading/trailing whitespace around the
    pieces, ``"".join(result)`` equals the stripped text. Every piece is at most
    ``maxlen`` long unless it contains no separator other than trailing ones.

    Args:
        text: ``str``.
        maxlen: ``int``, maximum piece length in characters.
        seps: separators tried in order, coarse to fine: a ``str`` of single
            characters (e.g. ``"\\n。！？；，"``) or a sequence of strings.
        strips: characters stripped from both ends of every piece (after
            whitespace), e.g. ``"。，"``; ``None`` strips only whitespace.

    Returns:
        ``list`` of ``str`` (``[""]`` for empty/whitespace input).
    """
    text = text.strip().strip(strips)
    if not seps or len(text) <= maxlen:
        return [text]
    sep = seps[0]
    parts = text.split(sep)
    pieces, chunk = [], ""
    for i, part in enumerate(parts):
        # Flush the chunk when adding this part and a separator would exceed maxlen.
        if chunk and part and len(chunk) + len(part) + 1 > maxlen:
            pieces.extend(text_segmentate(chunk, maxlen, seps[1:], strips))
            chunk = ""
        chunk += part if i == len(parts) - 1 else part + sep
    if chunk:
        pieces.extend(text_segmentate(chunk, maxlen, seps[1:], strips))
    return pieces


def _lists_to_tuples(structure):
    """Recursively replace lists by tuples (dict values too); leave arrays alone."""
    if isinstance(structure, (list, tuple)):
        return tuple(_lists_to_tuples(x) for x in structure)
    if isinstance(structure, dict):
        return {k: _lists_to_tuples(v) for k, v in structure.items()}
    return structure


class DataGenerator:
    """Base class for batch generators, bert4keras style.

    Subclasses implement ``__iter__(self, random=False)``, which walks
    ``self.sample(random)`` and yields ready batches, typically
    ``([token_ids, segment_ids], labels)`` built with :func:`sequence_padding`
    (a tuple of ``(inputs, targets)``, as Keras expects)::

        class Gen(DataGenerator):
            def __iter__(self, random=False):
                ids, labels = [], []
                for is_end, (text, label) in self.sample(random):
                    ids.append(tokenize(text))
                    labels.append([label])
                    if len(ids) == self.batch_size or is_end:
                        yield sequence_padding(ids), sequence_padding(labels)
                        ids, labels = [], []

        gen = Gen(train_data, batch_size=32)
        model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=10)
        model.predict(gen.fortest(), steps=len(gen))

    Args:
        data: a sized, indexable sequence of examples (e.g. a list), or any
            iterable (then ``len(gen)`` is unavailable and random sampling uses a
            shuffle buffer).
        batch_size: ``int >= 1``.
        buffer_size: shuffle-buffer size for unsized ``data``; default
            ``batch_size * 1000``.

    Attributes:
        steps: number of batches per pass, ``ceil(len(data) / batch_size)``, or
            ``None`` for unsized data.

    Raises:
        ValueError: ``batch_size`` or ``buffer_size`` is not a positive integer.
    """

    def __init__(self, data, batch_size=32, buffer_size=None):
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"DataGenerator: batch_size must be a positive int, got {batch_size!r}")
        self.data = data
        self.batch_size = int(batch_size)
        if hasattr(data, "__len__"):
            self.steps = -(-len(data) // self.batch_size)
        else:
            self.steps = None
        self.buffer_size = self.batch_size * 1000 if buffer_size is None else buffer_size
        if int(self.buffer_size) != self.buffer_size or self.buffer_size < 1:
            raise ValueError(
                f"DataGenerator: buffer_size must be a positive int, got {buffer_size!r}"
            )

    def __len__(self):
        """Number of batches per pass; ``TypeError`` if ``data`` has no length."""
        if self.steps is None:
            raise TypeError("DataGenerator: len() is undefined because data has no __len__")
        return self.steps

    def _shuffled(self):
        if self.steps is not None and hasattr(self.data, "__getitem__"):
            # Sized, indexable data: a full random permutation.
            for i in np.random.permutation(len(self.data)):
                yield self.data[i]
            return
        # Streaming data: fill a buffer, then emit a random buffered item per new item.
        buffer = []
        for d in self.data:
            buffer.append(d)
            if len(buffer) > self.buffer_size:
                yield buffer.pop(np.random.randint(len(buffer)))
        while buffer:
            yield buffer.pop(np.random.randint(len(buffer)))

    def sample(self, random=False):
        """Yield ``(is_end, example)`` for one pass over ``data``.

        ``is_end`` is ``True`` only for the last example, so ``__iter__`` knows when
        to emit the final (possibly short) batch. With ``random=True`` the order is
        shuffled with ``np.random`` (seed it with ``np.random.seed`` for
        reproducibility). Empty data yields nothing.
        """
        it = self._shuffled() if random else iter(self.data)
        sentinel = object()
        current = next(it, sentinel)
        if current is sentinel:
            return
        for nxt in it:
            yield False, current
            current = nxt
        yield True, current

    def __iter__(self, random=False):
        """Yield batches for one pass; subclasses must override this."""
        raise NotImplementedError("DataGenerator subclasses must implement __iter__(random)")

    def _forever(self, random, transform):
        """Repeat passes of ``__iter__(random)``, mapping each batch with ``transform``."""
        while True:
            produced = False
            for batch in self.__iter__(random):
                produced = True
                yield transform(batch)
            if not produced:
                raise ValueError("DataGenerator: a pass over the data produced no batch")

    def forfit(self, random=True):
        """Endless batches for ``model.fit(gen.forfit(), steps_per_epoch=len(gen))``.

        Passes over the data repeatedly, reshuffling each pass when ``random`` is
        true. Lists inside a batch are turned into tuples, recursively: Keras 3
        needs the batch itself to be a tuple ``(inputs, targets[, sample_weight])``,
        and ``tf.data`` rejects the bert4keras idiom ``[token_ids, segment_ids]`` for
        multiple inputs, while a tuple of arrays feeds a multi-input model the same
        way on every backend.

        Returns:
            On the TensorFlow Keras backend a ``tf.data.Dataset`` of these batches
            whose every dimension (batch and sequence dims included) is declared
            unknown, except a last axis of size 1 (sparse labels ``[batch, 1]``);
            otherwise a Python generator of NumPy batches. (Given a plain
            generator, Keras on TensorFlow fixes every dimension on which its first
            two batches agree, so per-batch padding to varying lengths fails later in
            the epoch.) The first batch is produced when the dataset is built. The
            dataset accepts what works on JAX: ``yield x, None`` (no labels; the loss
            comes from ``add_loss``, e.g. a ``Loss`` layer), float64 labels (cast to
            ``floatx``), and ``next(gen.forfit())`` peeks a batch as with a generator.

        Raises:
            ValueError: (when iterated / built) a pass over the data yields no batch,
                rather than looping forever.
        """
        return _for_keras(self._forever(random, _lists_to_tuples))

    def fortest(self, random=False):
        """Endless ``(inputs,)`` 1-tuples (``batch[0]`` only) for prediction.

        Like :meth:`forfit` (same return types per backend) but drops the targets.
        Each item is the 1-tuple ``(batch[0],)``, the form Keras 3 ``predict``
        requires from generators (a bare list of input arrays would be rejected or
        read as ``(x, y)``); lists inside ``batch[0]`` become tuples. Being endless,
        it needs an explicit step count:
        ``model.predict(gen.fortest(), steps=len(gen))``.
        """
        return _for_keras(self._forever(random, lambda b: (_lists_to_tuples(b[0]),)))


def _for_keras(stream):
    """Return ``stream`` as-is, or as a shape-relaxed ``tf.data.Dataset`` on TF that also
    accepts the batches that work on JAX (see :func:`_tf_batch`) and ``next()``."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return stream
    import tensorflow as tf

    stream = (_tf_batch(batch) for batch in stream)
    first = next(stream)

    def spec(x):
        x = np.asarray(x)
        shape = [None] * x.ndim
        if x.ndim >= 2 and x.shape[-1] == 1:
            # Sparse labels [batch, 1]: Keras's sparse losses squeeze a *known* size-1 axis.
            shape[-1] = 1
        return tf.TensorSpec(shape=shape, dtype=tf.as_dtype(x.dtype))

    signature = tf.nest.map_structure(spec, first)
    pending = [first]

    def replay():
        # Each new tf.data iterator resumes the shared endless stream; the peeked
        # first batch is emitted once.
        while pending:
            yield pending.pop()
        yield from stream

    dataset = tf.data.Dataset.from_generator(replay, output_signature=signature)
    # bert4keras scripts peek with `next(gen.forfit())`: give this dataset object a
    # `__next__` (over one iterator of it) while it stays a tf.data.Dataset for Keras.
    dataset.__class__ = _iterable_dataset_class(type(dataset))
    return dataset


def _tf_batch(batch):
    """One batch as ``tf.data`` can hold it, meaning what it means on JAX: trailing
    ``None`` targets dropped (``yield x, None`` -> ``(x,)``, no labels; losses come
    from ``add_loss``), float64 arrays (NumPy's default for float labels) in
    ``keras.config.floatx()``, as JAX would convert them."""
    import keras

    if isinstance(batch, tuple):
        while len(batch) > 1 and batch[-1] is None:
            batch = batch[:-1]

    def convert(x):
        if x is None:
            return x
        x = np.asarray(x)
        if x.dtype == np.float64:
            x = x.astype(keras.config.floatx())
        return x

    return _map_arrays(convert, batch)


def _map_arrays(fn, structure):
    if isinstance(structure, tuple):
        return tuple(_map_arrays(fn, x) for x in structure)
    if isinstance(structure, dict):
        return {k: _map_arrays(fn, v) for k, v in structure.items()}
    return fn(structure)


_ITERABLE_DATASET_CLASSES = {}


def _iterable_dataset_class(base):
    """A subclass of the dataset class `base` whose instances are also iterators."""
    if base not in _ITERABLE_DATASET_CLASSES:

        def __next__(self):
            if getattr(self, "_kerasformer_iterator", None) is None:
                self._kerasformer_iterator = iter(self)
            return next(self._kerasformer_iterator)

        _ITERABLE_DATASET_CLASSES[base] = type(base.__name__, (base,), {"__next__": __next__})
    return _ITERABLE_DATASET_CLASSES[base]


# ----------------------------------------------------------------------------- decoding

__all__.append("AutoRegressiveDecoder")


def _softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    x = np.exp(x)
    return x / x.sum(axis=axis, keepdims=True)


class AutoRegressiveDecoder:
    """Base class of autoregressive decoders with bert4keras's API (beam search and
    random sampling in NumPy, re-running the model on the whole prefix every step).

    Subclass it and define ``predict``, decorated with :meth:`wraps`::

        class Titler(AutoRegressiveDecoder):
            @AutoRegressiveDecoder.wraps(default_rtype="probas")
            def predict(self, inputs, output_ids, states):
                token_ids, segment_ids = inputs
                token_ids = np.concatenate([token_ids, output_ids], 1)
                segment_ids = np.concatenate([segment_ids, np.ones_like(output_ids)], 1)
                return self.last_token(model)([token_ids, segment_ids])

        titler = Titler(start_id=None, end_id=tokenizer._token_end_id, maxlen=32)
        ids = titler.beam_search([token_ids, segment_ids], topk=3)

    ``inputs`` are the model inputs of ONE example (each a 1-D list/array); ``predict``
    receives them batched ``[rows, ...]`` together with ``output_ids`` ``[rows, t]``
    (the tokens decoded so far, starting with ``start_id`` unless it is None) and
    returns scores ``[rows, vocab]`` (NumPy or backend tensors): probabilities for
    ``default_rtype="probas"``, logits for ``"logits"``; with ``use_states=True`` it
    returns ``(scores, states)`` and gets the previous ``states`` back (they are passed
    through, not reordered or filtered with the beams, as in bert4keras).

    For speed use :func:`kerasformer.generation.generate` (compiled, KV cache). Calling
    ``self.last_token(model)(inputs)`` directly is faster than ``.predict(inputs)``,
    which on JAX compiles anew for every new prefix length.

    Args:
        start_id: first token of every output (e.g. a decoder start id), or None.
        end_id: the token that ends a sequence.
        maxlen: maximum number of decoding steps.
        minlen: sequences shorter than this (in output tokens, ``start_id`` included)
            are not considered finished.
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1):
        self.start_id = start_id
        self.end_id = end_id
        self.maxlen = maxlen
        self.minlen = minlen
        self.models = {}
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype=int)
        else:
            self.first_output_ids = np.array([[start_id]])

    @staticmethod
    def wraps(default_rtype="probas", use_states=False):
        """Decorator for ``predict(self, inputs, output_ids, states)``.

        The decorated method is called as ``predict(inputs, output_ids, states,
        temperature=1, rtype=default_rtype)`` and returns ``(scores, states)``:
        probabilities (``rtype="probas"``) or ``log(probas + 1e-12)``
        (``rtype="logits"``), tempered: ``softmax(logits / temperature)`` when the
        model gives logits, ``p ** (1 / temperature)`` renormalised when it gives
        probabilities.

        Args:
            default_rtype: what the user's predict returns, ``"probas"`` or ``"logits"``.
            use_states: whether the user's predict takes and returns ``states``.

        Raises:
            ValueError: for an unknown ``default_rtype`` / ``rtype``.
        """
        if default_rtype not in ("probas", "logits"):
            raise ValueError(f"default_rtype must be 'probas' or 'logits', got {default_rtype!r}")

        def decorator(predict):
            def new_predict(self, inputs, output_ids, states, temperature=1,
                            rtype=default_rtype):
                if rtype not in ("probas", "logits"):
                    raise ValueError(f"rtype must be 'probas' or 'logits', got {rtype!r}")
                prediction = predict(self, inputs, output_ids, states)
                if use_states:
                    scores, states = prediction
                else:
                    scores, states = prediction, None
                scores = np.asarray(scores)
                if default_rtype == "logits":
                    probas = _softmax(scores / temperature)
                elif temperature != 1:
                    probas = np.power(scores, 1.0 / temperature)
                    probas = probas / probas.sum(axis=-1, keepdims=True)
                else:
                    probas = scores
                if rtype == "probas":
                    return probas, states
                return np.log(probas + 1e-12), states

            new_predict.__name__ = getattr(predict, "__name__", "predict")
            new_predict.__doc__ = getattr(predict, "__doc__", None)
            return new_predict

        return decorator

    def last_token(self, model):
        """A keras.Model with `model`'s inputs whose outputs are `model`'s outputs at the
        last position (``[batch, seq_len, ...] -> [batch, ...]``); built once per model."""
        key = id(model)
        if key not in self.models:
            import keras

            from .layers import TakeToken

            outputs = [TakeToken(index=-1)(output) for output in model.outputs]
            outputs = outputs[0] if len(outputs) == 1 else outputs
            # `model.input` keeps the original structure (one tensor or a list).
            self.models[key] = (model, keras.Model(model.input, outputs))
        return self.models[key][1]

    def predict(self, inputs, output_ids, states=None):
        """Score the next token; subclasses define it (decorated with :meth:`wraps`)."""
        raise NotImplementedError("define predict(self, inputs, output_ids, states)")

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1):
        """Beam search with beam size `topk` (bert4keras semantics).

        Scores are summed log-probabilities (no length penalty). Decoding stops as soon as
        the best-scoring beam holds `min_ends` end tokens (once at least `minlen` tokens
        are out); finished beams leave the beam, which then shrinks.

        Returns:
            1-D int array: the best sequence (``start_id`` and the end token included).
        """
        inputs = [np.array([i]) for i in inputs]
        output_ids, output_scores = self.first_output_ids, np.zeros(1)
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, "logits")
            if step == 0:  # one row was scored; from now on there are topk rows
                inputs = [np.repeat(i, topk, axis=0) for i in inputs]
            scores = output_scores.reshape((-1, 1)) + scores
            indices = np.argsort(-scores, axis=None, kind="stable")[:topk]
            rows, tokens = np.divmod(indices, scores.shape[1])
            output_ids = np.concatenate([output_ids[rows], tokens[:, None]], 1)
            output_scores = scores.reshape(-1)[indices]
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                best = output_scores.argmax()
                if end_counts[best] == min_ends:
                    return output_ids[best]
                unfinished = end_counts < min_ends
                if not unfinished.all():
                    inputs = [i[unfinished] for i in inputs]
                    output_ids = output_ids[unfinished]
                    output_scores = output_scores[unfinished]
                    topk = int(unfinished.sum())
        return output_ids[output_scores.argmax()]

    def random_sample(self, inputs, n, topk=None, topp=None, states=None, temperature=1,
                      min_ends=1):
        """Draw `n` sequences by sampling (bert4keras semantics, ``np.random``).

        Args:
            topk: sample among the `topk` most likely tokens only.
            topp: then among the most likely tokens whose cumulative probability first
                reaches `topp` (the token crossing it included).

        Returns:
            list of `n` 1-D int arrays (finished ones first, in finishing order).
        """
        inputs = [np.array([i]) for i in inputs]
        output_ids = self.first_output_ids
        results = []
        for step in range(self.maxlen):
            probas, states = self.predict(inputs, output_ids, states, temperature, "probas")
            probas = probas / probas.sum(axis=1, keepdims=True)
            if step == 0:  # one row was scored; from now on there are n rows
                probas = np.repeat(probas, n, axis=0)
                inputs = [np.repeat(i, n, axis=0) for i in inputs]
                output_ids = np.repeat(output_ids, n, axis=0)
            if topk is not None:
                k_indices = np.argpartition(probas, -topk, axis=1)[:, -topk:]
                probas = np.take_along_axis(probas, k_indices, axis=1)
                probas /= probas.sum(axis=1, keepdims=True)
            if topp is not None:
                p_indices = probas.argsort(axis=1)[:, ::-1]
                probas = np.take_along_axis(probas, p_indices, axis=1)
                cumulative = np.cumsum(probas, axis=1)
                # Drop what comes after the token at which the mass reaches topp.
                drop = np.roll(cumulative >= topp, 1, axis=1)
                drop[:, 0] = False
                probas[drop] = 0
                probas /= probas.sum(axis=1, keepdims=True)
            sample_ids = np.array([np.random.choice(len(p), p=p) for p in probas])[:, None]
            if topp is not None:
                sample_ids = np.take_along_axis(p_indices, sample_ids, axis=1)
            if topk is not None:
                sample_ids = np.take_along_axis(k_indices, sample_ids, axis=1)
            output_ids = np.concatenate([output_ids, sample_ids], 1)
            end_counts = (output_ids == self.end_id).sum(1)
            if output_ids.shape[1] >= self.minlen:
                finished = end_counts == min_ends
                if finished.any():
                    results.extend(output_ids[finished])
                    unfinished = ~finished
                    inputs = [i[unfinished] for i in inputs]
                    output_ids = output_ids[unfinished]
                    if len(output_ids) == 0:
                        break
        results.extend(output_ids)
        return results


# ------------------------------------------------------------------------- CRF decoding

__all__.append("ViterbiDecoder")


class ViterbiDecoder:
    """Viterbi decoding of a linear-chain CRF in NumPy, with bert4keras's API.

    The in-graph, batched equivalent is ``ConditionalRandomField(...)(x, decode=True)``
    (:mod:`kerasformer.layers.crf`); this one decodes one unpadded sequence at a time and
    can forbid start and end labels (e.g. no sequence may start with an ``I-`` tag)::

        decoder = ViterbiDecoder(crf.trans.numpy(), starts=[0, 1, 3], ends=[0, 2, 4])
        labels = decoder.decode(emissions[1:-1])  # drop [CLS] and [SEP]

    Args:
        trans: transition scores ``[num_labels, num_labels]`` (``trans[i, j]`` for label
            ``i`` followed by ``j``), array-like.
        starts: labels allowed at the first position (None: all).
        ends: labels allowed at the last position (None: all).

    Attributes:
        trans: ``float64`` copy of ``trans``; ``num_labels``; ``non_starts`` and
            ``non_ends``: the sorted lists of forbidden labels.

    Raises:
        ValueError: ``trans`` is not square.
    """

    def __init__(self, trans, starts=None, ends=None):
        self.trans = np.array(trans, dtype="float64")
        if self.trans.ndim != 2 or self.trans.shape[0] != self.trans.shape[1]:
            raise ValueError(
                f"ViterbiDecoder: trans must be [num_labels, num_labels], got {self.trans.shape}"
            )
        self.num_labels = self.trans.shape[0]
        labels = range(self.num_labels)
        self.non_starts = [] if starts is None else [i for i in labels if i not in set(starts)]
        self.non_ends = [] if ends is None else [i for i in labels if i not in set(ends)]

    def decode(self, nodes):
        """Best label path for emission scores ``nodes`` ``[seq_len, num_labels]``.

        Maximises ``sum_t nodes[t, y_t] + sum_t trans[y_{t-1}, y_t]`` over paths whose
        first label is in ``starts`` and last label in ``ends``; ties go to the smaller
        label index. ``nodes`` is not modified (bert4keras's version wrote ``-inf`` into
        it).

        Returns:
            ``np.ndarray`` of ``int64`` labels, shape ``[seq_len]`` (empty for an empty
            input).

        Raises:
            ValueError: ``nodes`` is not ``[seq_len, num_labels]``.
        """
        nodes = np.array(nodes, dtype="float64")  # a copy: the input stays untouched
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError(
                f"ViterbiDecoder.decode: nodes must be [seq_len, {self.num_labels}], "
                f"got {nodes.shape}"
            )
        if len(nodes) == 0:
            return np.zeros((0,), "int64")
        nodes[0, self.non_starts] = -np.inf
        nodes[-1, self.non_ends] = -np.inf
        scores = nodes[0]
        pointers = []
        for t in range(1, len(nodes)):
            candidates = scores[:, None] + self.trans  # [previous label, label]
            best = candidates.argmax(axis=0)
            pointers.append(best)
            scores = candidates[best, np.arange(self.num_labels)] + nodes[t]
        path = [int(scores.argmax())]
        for best in reversed(pointers):
            path.append(int(best[path[-1]]))
        return np.array(path[::-1], dtype="int64")


# ---------------------------------------------------------------------------------------
# bert4keras script helpers: open, to_array, uniout, WebServing
# ---------------------------------------------------------------------------------------
import builtins as _builtins  # noqa: E402  (`open` below shadows the builtin here)
import json as _json  # noqa: E402
import os as _os  # noqa: E402
import types as _types  # noqa: E402


def to_array(*args):
    """``np.array`` of each argument; one argument gives one array, several a list
    (bert4keras ``to_array``)."""
    arrays = [np.array(a) for a in args]
    return arrays[0] if len(arrays) == 1 else arrays


# bert4keras's `from bert4keras.snippets import uniout` printed lists of Chinese strings
# readably on Python 2; Python 3 already does, so the name only has to exist.
uniout = _types.ModuleType("uniout", "No-op on Python 3 (bert4keras compatibility).")


class open:  # noqa: A001  (bert4keras's name; shadows the builtin on purpose)
    """bert4keras's ``open``: the builtin ``open`` plus optional line indexing.

    Args:
        name: file path.
        mode: as for the builtin (``"r"``, ``"w"``...).
        encoding, errors: as for the builtin (text modes).
        indexable: False; True to index the start of every line so that ``f[i]`` and
            ``len(f)`` work on large files without reading them into memory; or a path
            (str) of a JSON file caching the offsets (read if it exists, else written).

    Iteration yields lines (through the index when there is one). ``read``, ``readline``,
    ``readlines``, ``write``, ``flush``, ``close``, ``tell``, ``seek`` and the context
    manager behave like the builtin file object's.

    Raises:
        OSError: as the builtin ``open`` does.
    """

    def __init__(self, name, mode="r", encoding=None, errors=None, indexable=False):
        self.name = name
        if "b" in mode:
            self.file = _builtins.open(name, mode)
        else:
            self.file = _builtins.open(name, mode, encoding=encoding, errors=errors)
        self.encoding = encoding
        self.errors = errors
        self.iterator = None
        if indexable:
            if is_string(indexable) and _os.path.exists(indexable):
                with _builtins.open(indexable) as f:
                    self.offsets = _json.load(f)
            else:
                self.create_indexes()
                if is_string(indexable):
                    with _builtins.open(indexable, "w") as f:
                        _json.dump(self.offsets, f)

    def create_indexes(self):
        """Record the offset of every line (text-mode ``tell`` values are opaque cookies
        that ``seek`` accepts)."""
        self.offsets, offset = [], self.file.tell()
        while self.file.readline():
            self.offsets.append(offset)
            offset = self.file.tell()
        self.file.seek(0)

    def __getitem__(self, key):
        self.file.seek(self.offsets[key])
        return self.file.readline()

    def __len__(self):
        if not hasattr(self, "offsets"):
            # TypeError (not AttributeError) lets list(f) fall back to plain iteration.
            raise TypeError("len() of an open file needs indexable=True")
        return len(self.offsets)

    def __iter__(self):
        if hasattr(self, "offsets"):
            for i in range(len(self)):
                yield self[i]
        else:
            yield from self.file

    def __next__(self):
        if self.iterator is None:
            self.iterator = self.__iter__()
        return next(self.iterator)

    next = __next__

    def read(self, *args):
        return self.file.read(*args)

    def readline(self, *args):
        return self.file.readline(*args)

    def readlines(self, *args):
        return self.file.readlines(*args)

    def write(self, text):
        return self.file.write(text)

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()

    def tell(self):
        return self.file.tell()

    def seek(self, offset=0, whence=0):
        return self.file.seek(offset, whence)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()


class WebServing:
    """A tiny HTTP interface to a Python function (bert4keras ``WebServing``), on
    ``bottle`` (``pip install kerasformer[web]``); for demos, not production::

        web = WebServing(port=8864)
        web.route("/gen_synonyms", gen_synonyms, {"text": (None, True), "n": (int, False)})
        web.start()      # GET http://127.0.0.1:8864/gen_synonyms?text=...

    Each response is JSON ``{"code": 0, "desc": "succeeded", "data": func(**kwargs)}``;
    ``code`` 1 when a required argument is missing, 2 when ``func`` raised (``desc`` holds
    the message).

    Args:
        host: interface to listen on (``"0.0.0.0"``: all).
        port: int; 0 picks a free port (read ``self.port`` once started).
        server: a bottle server name: ``"paste"`` (bert4keras's default; needs the
            ``paste`` package), ``"wsgiref"`` (standard library; :meth:`stop` works for
            it), ``"waitress"``...

    Raises:
        ImportError: when ``bottle`` is not installed.
    """

    def __init__(self, host="0.0.0.0", port=8000, server="paste"):
        import bottle

        self.host = host
        self.port = port
        self.server = server
        self.bottle = bottle
        # An app of our own, so that routes of two servers do not mix in bottle's default.
        self.app = bottle.Bottle()
        self._adapter = None

    def wraps(self, func, arguments, method="GET"):
        """The bottle handler calling ``func`` with the request's arguments.

        Args:
            func: function returning something ``json.dumps`` accepts.
            arguments: ``{name: (converter or None, required)}``; request values are
                strings, ``converter`` (e.g. ``int``) turns them into the argument.
            method: ``"GET"`` (query string) or ``"POST"`` (form fields).
        """

        def handler():
            outputs = {"code": 0, "desc": "succeeded", "data": {}}
            source = self.bottle.request.GET if method == "GET" else self.bottle.request.POST
            kwargs = {}
            for key, (convert, required) in arguments.items():
                value = source.getunicode(key)
                if value is None:
                    if required:
                        outputs.update(code=1, desc=f'lack of "{key}" argument')
                        return _json.dumps(outputs, ensure_ascii=False)
                    continue
                kwargs[key] = convert(value) if convert is not None else value
            try:
                outputs["data"] = func(**kwargs)
            except Exception as error:  # reported to the client, as bert4keras does
                outputs.update(code=2, desc=str(error))
            self.bottle.response.content_type = "application/json; charset=utf-8"
            return _json.dumps(outputs, ensure_ascii=False)

        return handler

    def route(self, path, func, arguments, method="GET"):
        """Serve ``func`` at ``path`` (see :meth:`wraps` for the arguments)."""
        self.app.route(path, method=method)(self.wraps(func, arguments, method))

    def start(self):
        """Serve until :meth:`stop` (or Ctrl-C); blocks the calling thread."""
        server = self.server
        if server == "wsgiref":
            # Keep the adapter: it holds the server object that stop() shuts down.
            server = self._adapter = self.bottle.WSGIRefServer(
                host=self.host, port=self.port, quiet=True
            )
        self.bottle.run(app=self.app, host=self.host, port=self.port, server=server,
                        quiet=True)

    @property
    def bound_port(self):
        """The port actually listened on (``wsgiref`` server, once started), else None."""
        srv = getattr(self._adapter, "srv", None)
        return None if srv is None else srv.server_port

    def stop(self):
        """Stop a ``wsgiref`` server started by :meth:`start` (from another thread).

        Raises:
            RuntimeError: for another server, or before it started.
        """
        srv = getattr(self._adapter, "srv", None)
        if srv is None:
            raise RuntimeError("stop() works for server='wsgiref' after start()")
        srv.shutdown()
        srv.server_close()


__all__ += ["open", "to_array", "uniout", "WebServing"]


# ---------------------------------------------------------------------------------------
# bert4keras's remaining small snippets (pure Python / NumPy)
# ---------------------------------------------------------------------------------------
def convert_to_unicode(text, encoding="utf-8", errors="ignore"):
    """``bytes`` decoded with ``encoding``; a ``str`` is returned unchanged."""
    return text.decode(encoding, errors=errors) if isinstance(text, bytes) else text


convert_to_str = convert_to_unicode  # the same thing on Python 3


def is_one_of(x, ys):
    """``True`` if ``x`` *is* (identity, not ``==``) one of ``ys``."""
    return any(x is y for y in ys)


def softmax(x, axis=-1):
    """NumPy softmax along ``axis`` (max-subtracted)."""
    x = np.asarray(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def insert_arguments(**arguments):
    """Decorator for ``__init__``: pop each keyword (default as given) and set it as an
    attribute before calling the method (bert4keras)."""

    def decorator(func):
        def new_func(self, *args, **kwargs):
            for key, default in arguments.items():
                setattr(self, key, kwargs.pop(key, default))
            return func(self, *args, **kwargs)

        return new_func

    return decorator


def delete_arguments(*arguments):
    """Decorator for ``__init__``: raise ``TypeError`` if any of these keywords is given."""

    def decorator(func):
        def new_func(self, *args, **kwargs):
            for key in arguments:
                if key in kwargs:
                    raise TypeError(
                        f"{type(self).__name__} got an unexpected keyword argument {key!r}"
                    )
            return func(self, *args, **kwargs)

        return new_func

    return decorator


def longest_common_substring(source, target):
    """Longest common contiguous slice of two sequences.

    Returns:
        ``(length, (i0, i1, j0, j1))`` with ``source[i0:i1] == target[j0:j1]``; the first
        such slice found scanning ``source`` then ``target``.
    """
    best, span = 0, (0, 0, 0, 0)
    previous = [0] * (len(target) + 1)
    for i, si in enumerate(source, 1):
        current = [0] * (len(target) + 1)
        for j, tj in enumerate(target, 1):
            if si == tj:
                current[j] = previous[j - 1] + 1
                if current[j] > best:
                    best = current[j]
                    span = (i - best, i, j - best, j)
        previous = current
    return best, span


def longest_common_subsequence(source, target):
    """Longest common (not necessarily contiguous) subsequence.

    Returns:
        ``(length, mapping)``, ``mapping`` the list of index pairs ``(i, j)`` with
        ``source[i] == target[j]`` (one optimal alignment).
    """
    n, m = len(source), len(target)
    table = np.zeros((n + 1, m + 1), dtype="int64")
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if source[i - 1] == target[j - 1]:
                table[i, j] = table[i - 1, j - 1] + 1
            else:
                table[i, j] = max(table[i - 1, j], table[i, j - 1])
    mapping, i, j = [], n, m
    while i > 0 and j > 0:
        if source[i - 1] == target[j - 1]:
            mapping.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif table[i - 1, j] >= table[i, j - 1]:
            i -= 1
        else:
            j -= 1
    return int(table[n, m]), mapping[::-1]


def parallel_apply_generator(func, iterable, workers, max_queue_size, dummy=False,
                             random_seeds=True):
    """Apply ``func`` to each item in ``workers`` processes (threads if ``dummy``) and
    yield ``(index, result)`` in input order (bert4keras's version yields them unordered;
    ordered is a valid order of that contract).

    Args:
        func: picklable function of one item (unless ``dummy``).
        iterable: the items; consumed lazily, ``max_queue_size`` items ahead at most.
        workers: int, pool size.
        max_queue_size: int, how many items may be in flight.
        dummy: bool, threads instead of processes.
        random_seeds: True (each worker reseeds NumPy from the OS), a list of seeds (one
            per worker), or False/None (workers inherit the parent's state).
    """
    if dummy:
        from multiprocessing.dummy import Pool, Queue
    else:
        from multiprocessing import Pool, Queue
    import itertools

    if random_seeds is True:
        random_seeds = [None] * workers  # None: reseed from the OS (forked copies differ)
    seeds = Queue()
    for seed in random_seeds or []:
        seeds.put(seed)

    with Pool(workers, _seed_worker, (seeds, bool(random_seeds))) as pool:
        items = enumerate(iterable)
        while True:
            chunk = list(itertools.islice(items, max_queue_size))
            if not chunk:
                return
            results = pool.map(func, [item for _, item in chunk])
            yield from zip((i for i, _ in chunk), results)


def _seed_worker(seeds, reseed):
    if reseed and not seeds.empty():
        np.random.seed(seeds.get())


def parallel_apply(func, iterable, workers, max_queue_size, callback=None, dummy=False,
                   random_seeds=True):
    """:func:`parallel_apply_generator` collected: the list of results in input order, or
    ``callback(result)`` called on each (then None)."""
    results = []
    for _, result in parallel_apply_generator(func, iterable, workers, max_queue_size,
                                              dummy, random_seeds):
        if callback is None:
            results.append(result)
        else:
            callback(result)
    return results if callback is None else None


__all__ += [
    "convert_to_unicode", "convert_to_str", "is_one_of", "softmax", "insert_arguments",
    "delete_arguments", "longest_common_substring", "longest_common_subsequence",
    "parallel_apply_generator", "parallel_apply",
]


def get_all_attributes(something):
    """``{name: attribute}`` of a module or object, dunder names excluded (bert4keras; its
    examples do ``locals().update(get_all_attributes(keras.layers))``)."""
    return {
        name: getattr(something, name)
        for name in dir(something)
        if not (name.startswith("__") and name.endswith("__"))
    }


__all__ += ["get_all_attributes"]


# ---------------------------------------------------------------- BERT-whitening (recipes)

__all__ += ["compute_kernel_bias", "transform_and_normalize", "save_whitening",
            "load_whitening"]


def compute_kernel_bias(vecs, n_components=None):
    """Fit BERT-whitening on sentence vectors (Su et al. 2021, "Whitening Sentence
    Representations for Better Semantics and Faster Retrieval", arXiv:2103.15316;
    kexue.fm/archives/8069). Names and conventions are those of the paper's code
    (github.com/bojone/BERT-whitening).

    With ``mu`` the mean of the rows and ``U diag(s) U^T`` the SVD of their covariance
    (``np.cov``, unbiased), the whitening map is ``x -> (x - mu) W`` with
    ``W = U diag(1 / sqrt(s))``; keeping the first ``k`` columns of ``W`` (largest ``s``)
    reduces the dimension. The transformed training vectors have covariance ``I_k``.

    Args:
        vecs: array-like ``[n, d]`` (any float dtype; computed in float64), ``n >= 2``.
        n_components: ``k``, the number of dimensions kept, ``1 <= k <= d``; None keeps
            all ``d``.

    Returns:
        ``(kernel, bias)``: float64 ``kernel [d, k]`` (``W[:, :k]``) and ``bias [1, d]``,
        which is ``-mu`` as in the paper's code, so the transform is
        ``(vecs + bias) @ kernel`` (see :func:`transform_and_normalize`).

    Raises:
        ValueError: ``vecs`` is not 2-D or has fewer than 2 rows, ``n_components`` is out
            of range, or the covariance is singular in the kept directions (fewer than
            ``k + 1`` independent rows: whitening would divide by ~0).
    """
    vecs = np.asarray(vecs, dtype="float64")
    if vecs.ndim != 2 or len(vecs) < 2:
        raise ValueError(f"compute_kernel_bias: vecs must be [n >= 2, d], got {vecs.shape}")
    d = vecs.shape[1]
    k = d if n_components is None else int(n_components)
    if not 1 <= k <= d:
        raise ValueError(f"compute_kernel_bias: n_components must be in [1, {d}], got "
                         f"{n_components!r}")
    mu = vecs.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(np.cov(vecs.T))
    # Directions with (numerically) zero variance cannot be scaled to unit variance.
    tiny = s[0] * max(vecs.shape) * np.finfo("float64").eps
    if s[k - 1] <= tiny:
        rank = int((s > tiny).sum())
        raise ValueError(f"compute_kernel_bias: the covariance has rank {rank} < "
                         f"n_components={k} (need more, independent vectors)")
    kernel = u[:, :k] / np.sqrt(s[:k])
    return kernel, -mu


def transform_and_normalize(vecs, kernel=None, bias=None):
    """Apply a whitening fitted by :func:`compute_kernel_bias`, then L2-normalise rows
    (the paper's ``transform_and_normalize``; arXiv:2103.15316).

    Args:
        vecs: array-like ``[n, d]``.
        kernel: ``[d, k]`` or None; bias: ``[1, d]`` (or ``[d]``) or None. When either is
            None the vectors are only normalised.

    Returns:
        float64 ``[n, k]`` (``[n, d]`` without a whitening), rows of unit L2 norm (a zero
        row stays zero).

    Raises:
        ValueError: shapes that do not fit together.
    """
    vecs = np.asarray(vecs, dtype="float64")
    if vecs.ndim != 2:
        raise ValueError(f"transform_and_normalize: vecs must be [n, d], got {vecs.shape}")
    if kernel is not None and bias is not None:
        kernel = np.asarray(kernel, dtype="float64")
        bias = np.asarray(bias, dtype="float64").reshape(1, -1)
        if kernel.ndim != 2 or kernel.shape[0] != vecs.shape[1] or bias.shape[1] != vecs.shape[1]:
            raise ValueError(f"transform_and_normalize: vecs {vecs.shape}, kernel "
                             f"{kernel.shape} and bias {bias.shape} do not fit")
        vecs = (vecs + bias) @ kernel
    norms = np.sqrt((vecs ** 2).sum(axis=1, keepdims=True))
    return vecs / np.where(norms > 0, norms, 1.0)


def save_whitening(path, kernel, bias):
    """Write ``kernel`` and ``bias`` to the ``.npz`` file ``path`` atomically: a temporary
    file in the same folder, renamed into place, so a failed or killed write leaves an
    existing file untouched. ``path`` is used as given (no ``.npz`` is appended)."""
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".whitening-", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, kernel=np.asarray(kernel, "float64"), bias=np.asarray(bias, "float64"))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_whitening(path):
    """``(kernel, bias)`` written by :func:`save_whitening`.

    Raises:
        OSError: missing file; KeyError / ValueError: not a whitening file.
    """
    with np.load(path, allow_pickle=False) as data:
        return data["kernel"], data["bias"]


# ------------------------------------------------------------- exposure bias (recipes)

__all__ += ["random_replace_tokens"]


def random_replace_tokens(token_ids, region, rate, *, vocab_size=None, predictions=None,
                          exclude_ids=(), rng=None):
    """Teacher-forcing inputs with a fraction of tokens replaced, against exposure bias
    in seq2seq training (Su, kexue.fm/archives/7259): the decoder learns to continue
    from imperfect prefixes, as it must at generation time. Feed the result as the
    model's *input* and keep the original ids as the *labels*.

    Replacements are random tokens (``vocab_size``: uniform over ``[0, vocab_size)``
    minus ``exclude_ids``) or model samples (``predictions``: the model's next-token
    probabilities on the clean input; position ``t`` is replaced by a draw from
    ``predictions[:, t - 1]``, the token the model would have produced there).

    Regions: UniLM (``[CLS] source [SEP] target [SEP]``) ``region = segment_ids == 1``;
    T5 decoder input (``[start] target[:-1]``) ``region = decoder_ids != pad`` with
    column 0 False. Position 0 is never replaced in the model-sample mode (it has no
    previous prediction).

    Args:
        token_ids: int array [batch, seq_len] (not modified).
        region: bool array [batch, seq_len], the positions that may be replaced.
        rate: float in [0, 1], the probability that a position of ``region`` is replaced.
        vocab_size: int, for random tokens; predictions: float array
            [batch, seq_len, vocab] (probabilities, rows summing to 1) for model samples.
            Exactly one of the two.
        exclude_ids: ids never used as replacements (``[PAD]``, ``[CLS]``, ``[SEP]``...);
            in the model-sample mode their probability is set to 0 and the rest
            renormalised.
        rng: ``np.random.Generator`` / ``RandomState`` (default: a new ``default_rng()``).

    Returns:
        int array like ``token_ids``.

    Raises:
        ValueError: not exactly one of ``vocab_size`` / ``predictions``, ``rate`` out of
            [0, 1], or shapes that do not match.
    """
    token_ids = np.asarray(token_ids)
    region = np.asarray(region, bool)
    if (vocab_size is None) == (predictions is None):
        raise ValueError("random_replace_tokens: pass exactly one of vocab_size "
                         "(random tokens) and predictions (model samples)")
    if not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"random_replace_tokens: rate must be in [0, 1], got {rate!r}")
    if token_ids.ndim != 2 or region.shape != token_ids.shape:
        raise ValueError(f"random_replace_tokens: token_ids {token_ids.shape} and region "
                         f"{region.shape} must be one [batch, seq_len] shape")
    rng = np.random.default_rng() if rng is None else rng
    exclude = np.asarray(sorted(set(int(i) for i in exclude_ids)), "int64")
    replace = region & (rng.random(token_ids.shape) < float(rate))
    out = token_ids.copy()
    if vocab_size is not None:
        allowed = np.setdiff1d(np.arange(int(vocab_size)), exclude)
        out[replace] = allowed[rng.integers(0, len(allowed), size=int(replace.sum()))]
        return out
    predictions = np.asarray(predictions, "float64")
    if predictions.shape[:2] != token_ids.shape:
        raise ValueError(f"random_replace_tokens: predictions {predictions.shape} do not "
                         f"match token_ids {token_ids.shape}")
    replace[:, 0] = False
    rows, cols = np.nonzero(replace)
    probs = predictions[rows, cols - 1]
    if len(exclude):
        probs[:, exclude] = 0.0
    probs = probs / probs.sum(axis=1, keepdims=True)
    # Inverse-CDF draw, one uniform per replaced position.
    draws = (probs.cumsum(axis=1) < rng.random((len(rows), 1))).sum(axis=1)
    out[rows, cols] = np.minimum(draws, probs.shape[1] - 1)
    return out
