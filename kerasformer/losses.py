"""Task losses of the bert4keras family, in `keras.ops` (JAX and TensorFlow backends).

Every function takes ``(y_true, y_pred)`` first, so it can be passed to
``model.compile(loss=...)`` as is (or through ``functools.partial`` for its options), and
computes in float32 whatever the input dtype. Losses return one value per sample unless
said otherwise; Keras then averages over the batch.

- :func:`multilabel_categorical_crossentropy` (soft labels) and
  :func:`sparse_multilabel_categorical_crossentropy` — "softmax + cross-entropy" for
  multi-label classification with threshold 0 (kexue.fm/archives/7359, /9064).
- :func:`global_pointer_crossentropy` / :func:`sparse_global_pointer_crossentropy` — the
  above on GlobalPointer logits [batch, heads, n, n] (kexue.fm/archives/8373, /8888).
- :func:`global_pointer_kl_divergence` — the symmetric "KL" between two GlobalPointer
  outputs, for R-Drop (kexue.fm/archives/9039).
- :func:`rdrop_kl_divergence` and :func:`rdrop_loss` — R-Drop for softmax classifiers
  (Liang et al. 2021, arXiv:2106.14448).
- :func:`simcse_loss` — unsupervised SimCSE in-batch contrastive loss (Gao et al. 2021,
  arXiv:2104.08821), also SimBERT's retrieval loss (kexue.fm/archives/7427).
- :func:`am_softmax_loss` / :func:`sparse_am_softmax_loss` — additive margin softmax
  (Wang et al. 2018, arXiv:1801.05599).
"""
import keras
from keras import ops

from .ops import large_negative

__all__ = [
    "MASK_THRESHOLD",
    "multilabel_categorical_crossentropy",
    "sparse_multilabel_categorical_crossentropy",
    "global_pointer_crossentropy",
    "sparse_global_pointer_crossentropy",
    "global_pointer_kl_divergence",
    "rdrop_kl_divergence",
    "rdrop_loss",
    "simcse_loss",
    "am_softmax_loss",
    "sparse_am_softmax_loss",
]

#: A logit or emission at or below this value marks a masked cell (padding, GlobalPointer's
#: lower triangle). kerasformer layers write ``kerasformer.ops.large_negative(dtype)``
#: there: -1e9 in float32, -3e4 in float16, -1e30 in bfloat16. One dtype-free threshold
#: is needed because Keras casts ``y_pred`` to float32 before a loss sees it, so the
#: dtype a masked value was written in is lost; no real score comes near -1e4.
MASK_THRESHOLD = -1e4

_NEG = large_negative("float32")


def _valid_logits(y_pred):
    """True where a logit is a real score rather than a masked cell."""
    return ops.greater(y_pred, MASK_THRESHOLD)


def _pair_indices(batch):
    """For a batch laid out as pairs (rows 2i and 2i+1 are two views of sample i),
    the row index of each row's partner: [1, 0, 3, 2, ...]."""
    idx = ops.arange(batch, dtype="int32")
    return idx + 1 - 2 * (idx % 2)


def multilabel_categorical_crossentropy(y_true, y_pred):
    """Multi-label "softmax + cross-entropy" with threshold 0 (kexue.fm/archives/7359),
    in the soft-label form of kexue.fm/archives/9064:

    ``loss = log(1 + sum_i (1 - t_i) e^{s_i}) + log(1 + sum_i t_i e^{-s_i})``

    which for 0/1 labels is ``log(1 + sum_neg e^{s}) + log(1 + sum_pos e^{-s})``: every
    target scores above 0 and every non-target below 0, so predict ``s_i > 0``.

    Args:
        y_true: targets in [0, 1] (0/1 for hard labels), shape of ``y_pred``.
        y_pred: logits [..., num_classes], no activation. A logit at or below
            :data:`MASK_THRESHOLD` (-1e4; the masked cells of
            :class:`~kerasformer.layers.GlobalPointer` are -1e9) is treated as a masked
            class: it contributes to neither sum, whatever its label.

    Returns:
        float32 [...] (the class axis reduced).
    """
    y_pred = ops.convert_to_tensor(y_pred)
    valid = _valid_logits(y_pred)
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "float32")
    eps = keras.config.epsilon()
    neg_mask = ops.logical_and(valid, ops.less(y_true, 1.0 - eps))
    pos_mask = ops.logical_and(valid, ops.greater(y_true, eps))
    # log(t) and log(1 - t) only where they are finite; the other cells are dropped.
    y_neg = ops.where(neg_mask, y_pred + ops.log(ops.maximum(1.0 - y_true, eps)), _NEG)
    y_pos = ops.where(pos_mask, -y_pred + ops.log(ops.maximum(y_true, eps)), _NEG)
    zeros = ops.zeros_like(y_pred[..., :1])
    neg_loss = ops.logsumexp(ops.concatenate([y_neg, zeros], axis=-1), axis=-1)
    pos_loss = ops.logsumexp(ops.concatenate([y_pos, zeros], axis=-1), axis=-1)
    return neg_loss + pos_loss


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False,
                                                epsilon=1e-7):
    """:func:`multilabel_categorical_crossentropy` with targets given as class indices
    (bert4keras ``sparse_multilabel_categorical_crossentropy``; kexue.fm/archives/8888):
    cheap when there are many classes and few targets (GlobalPointer spans).

    ``log(1 + sum_neg e^s)`` is computed as
    ``log(1 + sum_all e^s) + log(1 - sum_pos e^s / (1 + sum_all e^s))``, the second factor
    clipped to ``[epsilon, 1]``; so it is exact unless the targets hold almost all of the
    mass ``1 + sum_all e^s`` (then the loss is under-estimated, never NaN).

    Args:
        y_true: int (or integer-valued float) [..., num_targets] class indices; each
            real target once.
        y_pred: logits [..., num_classes]; masked logits (far below
            :data:`MASK_THRESHOLD`, e.g. -1e9) vanish from the sums; a target on a
            masked class makes the loss huge (use the dense form to ignore those).
        mask_zero: index 0 is padding of ``y_true``: class 0 is then dropped entirely
            (from targets and non-targets), so real classes must start at 1 — for
            GlobalPointer, cell (0, 0) is the [CLS] token and never a span.
        epsilon: lower clip of the ``1 - p_pos`` factor.

    Returns:
        float32 [...].
    """
    y_pred = ops.cast(y_pred, "float32")
    y_true = ops.cast(y_true, "int32")
    zeros = ops.zeros_like(y_pred[..., :1])
    if mask_zero:
        # Class 0 as +inf for the positive term (e^{-inf} = 0) and -inf elsewhere.
        y_pred = y_pred[..., 1:]
        pos_pred = ops.concatenate([zeros - _NEG, y_pred], axis=-1)
        all_pred = ops.concatenate([zeros + _NEG, y_pred], axis=-1)
    else:
        pos_pred = all_pred = y_pred
    pos_1 = ops.take_along_axis(pos_pred, y_true, axis=-1)
    pos_2 = ops.take_along_axis(all_pred, y_true, axis=-1)
    pos_loss = ops.logsumexp(ops.concatenate([-pos_1, zeros], axis=-1), axis=-1)
    all_loss = ops.logsumexp(ops.concatenate([all_pred, zeros], axis=-1), axis=-1)
    aux = ops.logsumexp(pos_2, axis=-1) - all_loss
    aux = ops.clip(1.0 - ops.exp(aux), epsilon, 1.0)
    return pos_loss + all_loss + ops.log(aux)


def global_pointer_crossentropy(y_true, y_pred):
    """Multi-label cross-entropy over all spans of each entity type (kexue.fm/archives/8373;
    the loss of bert4keras's GlobalPointer NER example).

    Args:
        y_true: 0/1 (or soft) float [batch, heads, n, n]; ``y_true[b, h, i, j] = 1`` for
            a span of type h from token i to token j (inclusive).
        y_pred: :class:`~kerasformer.layers.GlobalPointer` logits [batch, heads, n, n];
            its masked cells (padding, lower triangle) are ignored.

    Returns:
        float32 [batch]: per sample, the mean over heads of
        :func:`multilabel_categorical_crossentropy` over the ``n * n`` cells (so Keras's
        batch mean equals bert4keras's mean over batch * heads).
    """
    shape = ops.shape(y_pred)
    y_true = ops.reshape(y_true, (shape[0], shape[1], -1))
    y_pred = ops.reshape(y_pred, (shape[0], shape[1], -1))
    return ops.mean(multilabel_categorical_crossentropy(y_true, y_pred), axis=1)


def sparse_global_pointer_crossentropy(y_true, y_pred):
    """:func:`global_pointer_crossentropy` with spans given as index pairs (GPLinker,
    kexue.fm/archives/8888).

    Args:
        y_true: int (or integer-valued float) [batch, heads, max_spans, 2]: the
            ``(start, end)`` token indices of each span of type ``h``, padded with
            ``(0, 0)`` (so cell (0, 0) — the [CLS] token — can never be a span).
        y_pred: GlobalPointer logits [batch, heads, n, n].

    Returns:
        float32 [batch]: the per-head losses summed over heads (GPLinker's reduction;
        for the same labels it is ``heads`` times :func:`global_pointer_crossentropy`,
        up to the ``epsilon`` clip of the sparse form).
    """
    shape = ops.shape(y_pred)
    y_true = ops.cast(y_true, "int32")
    index = y_true[..., 0] * shape[2] + y_true[..., 1]
    y_pred = ops.reshape(y_pred, (shape[0], shape[1], -1))
    loss = sparse_multilabel_categorical_crossentropy(index, y_pred, mask_zero=True)
    return ops.sum(loss, axis=1)


def global_pointer_kl_divergence(s, t):
    """Symmetric divergence between two GlobalPointer outputs for R-Drop
    (kexue.fm/archives/9039).

    At the logit level the symmetric KL of two softmax distributions is
    ``sum_i (softmax(s)_i - softmax(t)_i)(s_i - t_i)``; GlobalPointer decides each cell
    by ``s_i > 0``, whose smooth form is the sigmoid, giving
    ``D(s, t) = sum_i (sigmoid(s_i) - sigmoid(t_i)) (s_i - t_i)`` (>= 0, 0 iff s = t).

    Args:
        s, t: logits of the same shape [batch, ...] (e.g. two dropout passes,
            [batch, heads, n, n]); cells masked in either are skipped.

    Returns:
        float32 [batch]: the sum over all other axes.
    """
    s, t = ops.convert_to_tensor(s), ops.convert_to_tensor(t)
    valid = ops.logical_and(_valid_logits(s), _valid_logits(t))
    s = ops.cast(s, "float32")
    t = ops.cast(t, "float32")
    d = (ops.sigmoid(s) - ops.sigmoid(t)) * (s - t)
    d = ops.where(valid, d, 0.0)
    return ops.sum(ops.reshape(d, (ops.shape(d)[0], -1)), axis=1)


def _log_probs(y_pred, from_logits):
    y_pred = ops.cast(y_pred, "float32")
    if from_logits:
        return ops.log_softmax(y_pred, axis=-1)
    return ops.log(ops.clip(y_pred, keras.config.epsilon(), 1.0))


def rdrop_kl_divergence(y_pred1, y_pred2, from_logits=False):
    """Symmetric KL ``(KL(p1 || p2) + KL(p2 || p1)) / 2`` of two categorical predictions,
    R-Drop's consistency term (Liang et al. 2021, arXiv:2106.14448, eq. 2).

    Args:
        y_pred1, y_pred2: probabilities (or logits with ``from_logits``) [..., classes].

    Returns:
        float32 [...].
    """
    lp1 = _log_probs(y_pred1, from_logits)
    lp2 = _log_probs(y_pred2, from_logits)
    return 0.5 * ops.sum((ops.exp(lp1) - ops.exp(lp2)) * (lp1 - lp2), axis=-1)


def rdrop_loss(y_true, y_pred, alpha=4.0, from_logits=False):
    """R-Drop loss (arXiv:2106.14448) for a batch where every sample appears twice in a
    row (rows 2i and 2i+1, e.g. the generator yields each sample twice and dropout is
    active): sparse categorical cross-entropy on every row plus ``alpha`` times the
    symmetric KL between each row and its partner.

    Args:
        y_true: int labels [2B] (or [2B, 1]).
        y_pred: probabilities (or logits with ``from_logits``) [2B, classes].
        alpha: weight of the KL term (the paper's alpha; bert4keras's examples use 4).

    Returns:
        float32 [2B]: ``ce_k + alpha * KL_sym(k, partner(k))`` (each pair's KL is
        counted once per row, so the batch mean is ``mean CE + alpha * mean KL``).

    Raises:
        ValueError: an odd static batch size.
    """
    y_pred = ops.convert_to_tensor(y_pred)
    batch = y_pred.shape[0]
    if batch is not None and batch % 2:
        raise ValueError(f"rdrop_loss needs pairs of rows, got a batch of {batch}")
    y_true = ops.reshape(ops.cast(y_true, "int32"), (-1,))
    log_p = _log_probs(y_pred, from_logits)
    ce = -ops.take_along_axis(log_p, y_true[:, None], axis=-1)[:, 0]
    partner = ops.take(log_p, _pair_indices(ops.shape(log_p)[0]), axis=0)
    kl = rdrop_kl_divergence(log_p, partner, from_logits=True)
    return ce + alpha * kl


def simcse_loss(y_true, y_pred, scale=20.0):
    """Unsupervised SimCSE loss (Gao et al. 2021, arXiv:2104.08821; bert4keras /
    bojone/SimCSE): rows 2i and 2i+1 of ``y_pred`` are two encodings of the same sentence
    (two dropout masks, or a paraphrase pair as in SimBERT, kexue.fm/archives/7427). Each
    row must pick its partner among all other rows of the batch by cosine similarity:
    cross-entropy of ``scale * cos(row, others)`` (self excluded) against the partner.

    Args:
        y_true: ignored (pass anything of batch size; Keras needs a target).
        y_pred: sentence vectors [2B, dim].
        scale: inverse temperature (20 = temperature 0.05, the paper's default; SimBERT
            uses 30).

    Returns:
        float32 [2B].
    """
    del y_true
    y_pred = ops.cast(y_pred, "float32")
    y_pred = y_pred / ops.sqrt(ops.maximum(ops.sum(ops.square(y_pred), -1, keepdims=True),
                                           1e-12))
    batch = ops.shape(y_pred)[0]
    sims = scale * ops.matmul(y_pred, ops.transpose(y_pred))
    idx = ops.arange(batch, dtype="int32")
    sims = ops.where(ops.equal(idx[:, None], idx[None, :]), _NEG, sims)
    log_p = ops.log_softmax(sims, axis=-1)
    return -ops.take_along_axis(log_p, _pair_indices(batch)[:, None], axis=-1)[:, 0]


def am_softmax_loss(y_true, y_pred, scale=30.0, margin=0.35):
    """Additive margin softmax (Wang et al. 2018, arXiv:1801.05599): cross-entropy of
    ``scale * (cos - margin * y_true)``, so the target's cosine must beat the others by
    ``margin``.

    Args:
        y_true: one-hot float [..., classes].
        y_pred: cosine similarities in [-1, 1] [..., classes] (l2-normalised features
            times l2-normalised class weights), no activation.
        scale, margin: the paper's s = 30 and m = 0.35.

    Returns:
        float32 [...].
    """
    y_true = ops.cast(y_true, "float32")
    logits = scale * (ops.cast(y_pred, "float32") - margin * y_true)
    return -ops.sum(y_true * ops.log_softmax(logits, axis=-1), axis=-1)


def sparse_am_softmax_loss(y_true, y_pred, scale=30.0, margin=0.35):
    """:func:`am_softmax_loss` with int labels ``y_true`` [...] (or [..., 1])."""
    classes = ops.shape(y_pred)[-1]
    y_true = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
    return am_softmax_loss(ops.one_hot(y_true, classes), y_pred, scale, margin)
