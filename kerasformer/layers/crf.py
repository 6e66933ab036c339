"""Linear-chain conditional random field (Lafferty et al. 2001) as a Keras layer, with its
negative log-likelihood (forward algorithm) and batched Viterbi decoding, all in
`keras.ops` (bert4keras ``layers.ConditionalRandomField``; kexue.fm/archives/5542)."""
import keras
from keras import ops

from ..losses import MASK_THRESHOLD
from ..ops import large_negative


def emission_mask(y_pred):
    """Positions of [batch, seq_len, num_labels] emissions that are real tokens: False
    where a label score is at or below :data:`kerasformer.losses.MASK_THRESHOLD` (-1e4;
    :class:`ConditionalRandomField` writes ``large_negative`` at padding). Returns bool
    [batch, seq_len]."""
    return ops.all(ops.greater(y_pred, MASK_THRESHOLD), axis=-1)


def crf_log_likelihood_terms(y_true, y_pred, trans, mask=None):
    """Log-partition and gold-path score of a linear-chain CRF.

    The score of a label path ``y`` over the real positions ``t_1 < ... < t_L`` is
    ``sum_k y_pred[t_k, y_k] + sum_k trans[y_{k-1}, y_k]``; masked positions are removed
    from the chain (its neighbours are joined by one transition), so right padding, left
    padding and holes are all handled. ``log Z`` is the log-sum-exp of the scores of all
    ``num_labels ** L`` paths, computed by the forward algorithm in float32.

    Args:
        y_true: one-hot (or soft) labels, float [batch, seq_len, num_labels].
        y_pred: emission scores [batch, seq_len, num_labels].
        trans: transition scores [num_labels, num_labels], ``trans[i, j]`` for i -> j.
        mask: bool [batch, seq_len]; None derives it with :func:`emission_mask`.

    Returns:
        ``(log_z, gold_score)``, float32 [batch] each; both 0 for a row with no real
        position.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    mask = emission_mask(y_pred) if mask is None else ops.cast(mask, "bool")
    maskf = ops.cast(mask, "float32")
    y_pred = ops.where(mask[..., None], ops.cast(y_pred, "float32"), 0.0)
    y_true = ops.cast(y_true, "float32") * maskf[..., None]
    trans = ops.cast(trans, "float32")
    b, k = ops.shape(y_pred)[0], ops.shape(y_pred)[2]

    def step(carry, xs):
        alpha, started, prev, score = carry
        e, m, y = xs
        on = m[:, None] > 0
        began = started[:, None] > 0
        forward = ops.logsumexp(alpha[:, :, None] + trans[None], axis=1) + e
        alpha = ops.where(on, ops.where(began, forward, e), alpha)
        transition = ops.sum(ops.matmul(prev, trans) * y, axis=-1)
        gain = ops.sum(e * y, axis=-1) + ops.where(started > 0, transition, 0.0)
        score = score + m * gain
        prev = ops.where(on, y, prev)
        started = ops.maximum(started, m)
        carry = (alpha, started, prev, score)
        # The TensorFlow scan needs per-step outputs shaped like the carry.
        return carry, carry

    init = (
        ops.zeros((b, k), "float32"),
        ops.zeros((b,), "float32"),
        ops.zeros((b, k), "float32"),
        ops.zeros((b,), "float32"),
    )
    xs = (
        ops.transpose(y_pred, (1, 0, 2)),
        ops.transpose(maskf, (1, 0)),
        ops.transpose(y_true, (1, 0, 2)),
    )
    (alpha, started, _, score), _ = ops.scan(step, init, xs)
    log_z = ops.where(started > 0, ops.logsumexp(alpha, axis=-1), 0.0)
    return log_z, score


def viterbi_decode(y_pred, trans, mask=None):
    """Best label path of a linear-chain CRF for a batch (Viterbi, in `keras.ops`).

    Masked positions are skipped as in :func:`crf_log_likelihood_terms`. Ties are broken
    towards the smaller label index, as ``numpy.argmax`` does in
    :class:`kerasformer.snippets.ViterbiDecoder`.

    Args:
        y_pred: emission scores [batch, seq_len, num_labels].
        trans: transition scores [num_labels, num_labels].
        mask: bool [batch, seq_len]; None derives it with :func:`emission_mask`.

    Returns:
        int32 [batch, seq_len]: the label of each position, 0 at masked positions.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    mask = emission_mask(y_pred) if mask is None else ops.cast(mask, "bool")
    maskf = ops.cast(mask, "float32")
    y_pred = ops.where(mask[..., None], ops.cast(y_pred, "float32"), 0.0)
    trans = ops.cast(trans, "float32")
    b, k = ops.shape(y_pred)[0], ops.shape(y_pred)[2]
    identity = ops.broadcast_to(ops.arange(k, dtype="int32")[None], (b, k))

    def forward(carry, xs):
        score, started, _ = carry
        e, m = xs
        on = m[:, None] > 0
        began = started[:, None] > 0
        candidates = score[:, :, None] + trans[None]  # [b, previous label, label]
        best = ops.cast(ops.argmax(candidates, axis=1), "int32")
        new = ops.where(began, ops.max(candidates, axis=1) + e, e)
        pointer = ops.where(ops.logical_and(on, began), best, identity)
        score = ops.where(on, new, score)
        started = ops.maximum(started, m)
        carry = (score, started, pointer)
        return carry, carry

    init = (ops.zeros((b, k), "float32"), ops.zeros((b,), "float32"), identity)
    xs = (ops.transpose(y_pred, (1, 0, 2)), ops.transpose(maskf, (1, 0)))
    (score, _, _), (_, _, pointers) = ops.scan(forward, init, xs)

    def backward(label, pointer):
        previous = ops.take_along_axis(pointer, label[:, None], axis=1)[:, 0]
        return previous, label

    last = ops.cast(ops.argmax(score, axis=-1), "int32")
    _, path = ops.scan(backward, last, pointers, reverse=True)
    path = ops.transpose(path, (1, 0))
    return ops.where(mask, path, ops.zeros_like(path))


@keras.saving.register_keras_serializable(package="kerasformer")
class ConditionalRandomField(keras.layers.Layer):
    """Linear-chain CRF head (bert4keras ``ConditionalRandomField``; kexue.fm/archives/5542).

    Holds the transition matrix ``trans`` [num_labels, num_labels] (``trans[i, j]``
    scores label i followed by label j). Used like bert4keras::

        crf = ConditionalRandomField(lr_multiplier=100)
        emissions = crf(keras.layers.Dense(num_labels)(hidden), mask=token_mask)
        model = keras.Model(inputs, emissions)
        model.compile(optimizer, loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])
        paths = crf(dense_output, mask=token_mask, decode=True)  # int32 [b, n], in-graph
        decoder = keras.Model(inputs, paths)  # shares ``trans`` with ``model``

    Args:
        lr_multiplier: the stored variable is ``trans / lr_multiplier`` and ``trans`` reads
            it multiplied back, so the transitions learn ``lr_multiplier`` times faster
            under SGD-like optimizers (and ``lr_multiplier**2`` under SGD proper).

    Call:
        ``layer(emissions, mask=None, decode=False)``: emissions float [batch, seq_len,
        num_labels]; mask bool/int [batch, seq_len] (True/1 = real token; the Keras mask
        of ``emissions`` when not given).

    Returns:
        ``decode=False``: the emissions (float32, also under mixed precision) with every score of a masked position set to
        ``large_negative`` (-1e9 in float32, -3e4 in float16), which is how :meth:`sparse_loss`,
        :meth:`dense_loss` and the accuracies find the padding. ``decode=True``: the
        Viterbi path, int32 [batch, seq_len] (0 at masked positions); without a mask the
        padding is recognised from already-masked emissions (the output of a
        ``decode=False`` call). The layer produces no Keras mask.
    """

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        self.lr_multiplier = lr_multiplier
        self.supports_masking = True

    def build(self, input_shape):
        num_labels = input_shape[-1]
        self._trans = self.add_weight(
            name="trans", shape=(num_labels, num_labels), initializer="glorot_uniform",
            autocast=False,  # float32 transitions under mixed precision
        )
        if self.lr_multiplier != 1:
            self._trans.assign(self._trans / self.lr_multiplier)

    @property
    def trans(self):
        """The transition matrix [num_labels, num_labels] (variable * lr_multiplier)."""
        if self.lr_multiplier != 1:
            return self.lr_multiplier * self._trans
        return self._trans

    def call(self, inputs, mask=None, decode=False):
        # Emissions leave the head in float32 (mixed precision computes them in bf16).
        inputs = ops.cast(inputs, "float32")
        if decode:
            return viterbi_decode(inputs, self.trans, mask)
        if mask is None:
            return inputs
        mask = ops.cast(mask, "bool")[..., None]
        return ops.where(mask, inputs, ops.full((), large_negative(inputs.dtype), inputs.dtype))

    def decode(self, emissions, mask=None):
        """Viterbi paths int32 [batch, seq_len]; same as ``self(emissions, mask=mask,
        decode=True)`` (works on arrays and on symbolic Keras tensors)."""
        return self(emissions, mask=mask, decode=True)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs, mask=None, decode=False):
        if decode:
            return keras.KerasTensor(tuple(inputs.shape[:2]), dtype="int32")
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def _labels(self, y_true, y_pred):
        y_true = ops.reshape(y_true, ops.shape(y_pred)[:-1])
        return ops.cast(y_true, "int32")

    def dense_loss(self, y_true, y_pred):
        """Negative log-likelihood ``log Z - score(y_true)`` per sequence, float32
        [batch], for one-hot ``y_true`` [batch, seq_len, num_labels] and the layer's
        output ``y_pred`` (padding recognised from its masked scores)."""
        log_z, score = crf_log_likelihood_terms(y_true, y_pred, self.trans)
        return log_z - score

    def sparse_loss(self, y_true, y_pred):
        """:meth:`dense_loss` for integer labels ``y_true`` [batch, seq_len] (any dtype,
        trailing 1-axis allowed; values at padded positions are ignored)."""
        num_labels = ops.shape(y_pred)[-1]
        y_true = ops.one_hot(self._labels(y_true, y_pred), num_labels, dtype="float32")
        return self.dense_loss(y_true, y_pred)

    def sparse_accuracy(self, y_true, y_pred):
        """Token accuracy of the per-token argmax of the emissions (not the Viterbi
        path, as bert4keras) over real positions; a float32 scalar."""
        mask = ops.cast(emission_mask(y_pred), "float32")
        y_true = self._labels(y_true, y_pred)
        y_hat = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
        correct = ops.cast(ops.equal(y_true, y_hat), "float32")
        return ops.sum(correct * mask) / ops.maximum(ops.sum(mask), 1.0)

    def dense_accuracy(self, y_true, y_pred):
        """:meth:`sparse_accuracy` for one-hot ``y_true``."""
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred)

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier}
