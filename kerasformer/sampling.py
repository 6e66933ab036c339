"""Gibbs sampling of text from a masked language model (Wang & Cho 2019, "BERT has a
Mouth, and It Must Speak", arXiv:1902.04094; Su, kexue.fm "【搜出来的文本】⋅（三）基于BERT
的文本采样").

Each step picks one free position ``i``, replaces it by ``[MASK]``, runs the MLM and
draws the new token from ``p(x_i | x_{-i})``, the MLM's softmax at ``i``. The whole chain
is one compiled program (``keras.ops.fori_loop`` inside ``jax.jit`` /
``tf.function(jit_compile=True)``, via the compiler of :mod:`kerasformer.generation`).
"""
import keras
import numpy as np
from keras import ops

from .generation import _MIN_PROBA, _compile, _is_probas

__all__ = ["gibbs_sample"]

_CACHE_ATTRIBUTE = "_kerasformer_gibbs_cache"


def _draw(logits, seed_generator, state):
    """One categorical draw per row with the stateless seed ``state`` (results depend on
    the seed and the step, not on what ran before)."""
    with keras.StatelessScope(state_mapping=[(seed_generator.state, state)]):
        return ops.cast(keras.random.categorical(logits, 1, seed=seed_generator)[:, 0],
                        "int32")


def _chain(model, options, seed_generator, arrays, dyn):
    token_ids, segment_ids, free = arrays["token_ids"], arrays["segment_ids"], arrays["free"]
    steps, order, mask_id, probas, banned = options
    length = ops.shape(token_ids)[1]
    free_count = ops.sum(ops.cast(free, "int32"), axis=1)
    any_free = free_count > 0
    # Rank of each free position in its row (0, 1, ...), for the sequential sweep.
    rank = ops.cumsum(ops.cast(free, "int32"), axis=1) - 1
    seed_dtype = dyn["seed"].dtype
    columns = ops.arange(length, dtype="int32")[None]

    def body(t, ids):
        step_seed = dyn["seed"] + ops.cast(ops.stack([0, 2 * t]), seed_dtype)
        if order == "random":
            position_logits = ops.where(free, 0.0, float("-inf"))
            position_logits = ops.where(any_free[:, None], position_logits, 0.0)
            position = _draw(position_logits, seed_generator, step_seed)
        else:
            target = t % ops.maximum(free_count, 1)
            position = ops.cast(ops.argmax(
                ops.cast(ops.logical_and(free, ops.equal(rank, target[:, None])), "int32"),
                axis=1), "int32")
        at = ops.equal(columns, position[:, None])  # [batch, length]
        masked = ops.where(at, mask_id, ids)
        outputs = model([masked, segment_ids], training=False)
        if isinstance(outputs, (list, tuple)):
            outputs = outputs[-1]
        row = ops.sum(ops.where(at[:, :, None], ops.cast(outputs, "float32"), 0.0), axis=1)
        logits = ops.log(ops.maximum(row, _MIN_PROBA)) if probas else row
        logits = logits / dyn["temperature"]
        if banned:
            vocab = ops.shape(logits)[-1]
            ban = ops.any(ops.equal(ops.arange(vocab, dtype="int32")[:, None],
                                    ops.convert_to_tensor(list(banned), "int32")[None]), axis=1)
            logits = ops.where(ban[None], float("-inf"), logits)
        token = _draw(logits, seed_generator, step_seed + ops.cast(ops.stack([0, 1]),
                                                                   seed_dtype))
        changed = ops.logical_and(at, any_free[:, None])
        return ops.where(changed, token[:, None], ids)

    return ops.fori_loop(0, steps, body, token_ids)


def gibbs_sample(model, token_ids, segment_ids=None, *, mask_id, steps, free=None,
                 order="random", temperature=1.0, banned_ids=None, seed=0):
    """Sample from a masked LM by Gibbs sampling (arXiv:1902.04094).

    Fixed length: pass ``[CLS] [MASK] ... [MASK] [SEP]``. Constrained: put the given
    tokens in place and ``[MASK]`` elsewhere; only free positions ever change.

    Args:
        model: ``keras.Model`` taking ``[token_ids, segment_ids]`` and returning the MLM
            output [batch, seq_len, vocab] (a softmax, as ``with_mlm=True`` builds, or
            logits; judged from the output layer's activation); with several outputs the
            last one.
        token_ids: int array [batch, seq_len], the initial state (free positions are
            usually ``mask_id``, Wang & Cho's all-mask start).
        segment_ids: int array [batch, seq_len] (default zeros).
        mask_id: the ``[MASK]`` id.
        steps: number of Gibbs steps (one position resampled per row and step).
        free: bool array [batch, seq_len] of positions that may change; default
            ``token_ids == mask_id``. A row without free positions is returned unchanged.
        order: ``"random"`` (a uniformly random free position each step, the paper's
            choice) or ``"sequential"`` (left-to-right sweeps over the free positions).
        temperature: float > 0 dividing the logits.
        banned_ids: ids never sampled (e.g. ``[CLS]``, ``[SEP]``, ``[PAD]``, ``[MASK]``).
        seed: int; the same seed and inputs give the same samples on a backend.

    Returns:
        int32 numpy array [batch, seq_len].

    Raises:
        ValueError: bad ``order``, ``steps < 0``, ``temperature <= 0`` or shapes that do
            not match.
    """
    if order not in ("random", "sequential"):
        raise ValueError(f"gibbs_sample: order must be 'random' or 'sequential', got {order!r}")
    if int(steps) < 0 or not float(temperature) > 0:
        raise ValueError(f"gibbs_sample: need steps >= 0 and temperature > 0, got {steps}, "
                         f"{temperature}")
    token_ids = np.asarray(token_ids, "int32")
    if token_ids.ndim != 2:
        raise ValueError(f"gibbs_sample: token_ids must be [batch, seq_len], got {token_ids.shape}")
    segment_ids = (np.zeros_like(token_ids) if segment_ids is None
                   else np.asarray(segment_ids, "int32"))
    free = token_ids == mask_id if free is None else np.asarray(free, bool)
    if segment_ids.shape != token_ids.shape or free.shape != token_ids.shape:
        raise ValueError("gibbs_sample: token_ids, segment_ids and free must have one shape")
    options = (int(steps), order, int(mask_id), _is_probas(model),
               tuple(sorted(int(i) for i in banned_ids or ())))
    store = model.__dict__.setdefault(_CACHE_ATTRIBUTE, {})
    if "seed_generator" not in store:
        store["seed_generator"] = keras.random.SeedGenerator(0)
    seed_generator = store["seed_generator"]
    if options not in store:
        store[options] = _compile(
            lambda arrays, dyn: _chain(model, options, seed_generator, arrays, dyn),
            model.variables)
    seed_dtype = keras.backend.standardize_dtype(seed_generator.state.dtype)
    dyn = {"seed": np.array([int(seed) % 2 ** 31, 0], seed_dtype),
           "temperature": np.float32(temperature)}
    arrays = {"token_ids": token_ids, "segment_ids": segment_ids, "free": free}
    return ops.convert_to_numpy(store[options](arrays, dyn)).astype("int32")
