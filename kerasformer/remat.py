"""Gradient checkpointing (rematerialization) of the Transformer blocks, on JAX and TF.

Training memory of a Transformer is dominated by the activations kept for the backward
pass inside each block: queries/keys/values, the float32 attention logits and
probabilities ([batch, heads, T, T]), the dropout masks, the FFN's inner activation
([batch, T, intermediate]). Rematerialization (Chen et al. 2016, arXiv:1604.06174)
keeps only the *inputs* of a checkpointed function and recomputes its inside during
the backward pass: about one extra forward pass of compute for that memory.

Here every attention, feed-forward and normalization layer of a model built by a
:class:`~kerasformer.models.base.Transformer` is checkpointed (:data:`REMAT_LAYERS`),
through ``keras.remat`` (``jax.checkpoint`` on JAX, ``tf.recompute_grad`` on TensorFlow).
What stays in memory per block is the few [batch, T, hidden] tensors passed between
those layers (the residual stream); gradients are unchanged (to float rounding).

Why not ``keras.RematScope``: in Keras 3.15 a layer created under
``RematScope(mode="full")`` is rematerialized with its keyword arguments passed through
``keras.remat``, which fails for our layers on both backends: on JAX
``jax.checkpoint`` traces ``training=False`` into a tracer (``if training:`` raises);
on TensorFlow ``tf.recompute_grad`` refuses keyword arguments inside ``tf.function``
("The custom_gradient decorator currently supports keywords arguments only when eager
execution is enabled"), and boolean masks passed positionally break its gradient.
Dropout also breaks it: the seed state advanced inside the checkpoint leaks a JAX
tracer, and on TensorFlow the recomputation would draw a *different* mask. The wrapper
below passes only floating-point tensors through ``keras.remat`` (masks, ids and Python
flags are closed over; they carry no gradient) and draws each dropout seed once,
outside the checkpoint, so the forward pass and its recomputation use the same mask as
an un-checkpointed model would.

Usage: ``build_transformer_model(..., gradient_checkpointing=True)``; the builder
passes each new layer through :func:`maybe_rematerialize`.

Limitations: a model saved and re-loaded (``.keras``) is not checkpointed (the wrapper
is not part of the config); call :func:`rematerialize` on its layers again.
"""
import functools

import keras
from keras import ops

from .layers import FeedForward, GatedAttentionUnit, LayerNormalization, MultiHeadAttention

__all__ = [
    "REMAT_LAYERS",
    "rematerialize",
    "maybe_rematerialize",
]

# The layers whose insides are worth recomputing (their internal activations are the
# large ones); Add/Dropout/Embedding layers keep no more than their outputs.
REMAT_LAYERS = (MultiHeadAttention, GatedAttentionUnit, FeedForward, LayerNormalization)


def _is_float_tensor(value):
    if not ops.is_tensor(value) and not isinstance(value, keras.Variable):
        return False
    return "float" in keras.backend.standardize_dtype(value.dtype)


def _seed_generators(layer):
    """The SeedGenerators of the random sublayers of `layer` that will draw when
    training (a Dropout of rate 0 draws nothing)."""
    generators = []
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sublayer, keras.layers.Dropout) and not sublayer.rate:
            continue
        for value in vars(sublayer).values():
            if isinstance(value, keras.random.SeedGenerator) and value not in generators:
                generators.append(value)
    return generators


def _rematerialized_call(layer, call):
    @functools.wraps(call)
    def wrapped(*args, **kwargs):
        structure = (args, kwargs)
        flat = keras.tree.flatten(structure)
        positions = [i for i, value in enumerate(flat) if _is_float_tensor(value)]
        # Seeds are drawn here, once per forward pass as without remat, and replayed
        # inside the checkpoint (forward and recomputation alike).
        seeds = []
        training = kwargs.get("training")
        if training is not None and not ops.is_tensor(training) and training:
            seeds = [(g, g.next()) for g in _seed_generators(layer)]

        def forward(*tensors):
            values = list(flat)
            for i, tensor in zip(positions, tensors):
                values[i] = tensor
            call_args, call_kwargs = keras.tree.pack_sequence_as(structure, values)
            for generator, seed in seeds:
                generator.next = functools.partial(_replay, seed)
            try:
                return call(*call_args, **call_kwargs)
            finally:
                for generator, _ in seeds:
                    del generator.next

        if not positions:  # nothing to differentiate (e.g. inference on int inputs)
            return forward()
        return keras.remat(forward)(*[flat[i] for i in positions])

    wrapped._kerasformer_remat = True
    return wrapped


def _replay(seed, ordered=True):
    return seed


def rematerialize(layer):
    """Checkpoint `layer`: its call keeps only its inputs for the backward pass and is
    recomputed there (``keras.remat``; arXiv:1604.06174). Idempotent.

    Works for any layer whose call takes floating-point tensors (differentiated),
    other tensors (masks, ids: closed over) and Python values as arguments, on the JAX
    and TensorFlow backends; random sublayers (Dropout) draw the same mask in the
    forward pass and its recomputation, and the same masks as without checkpointing.

    Args:
        layer: a ``keras.layers.Layer`` (built or not).
    Returns:
        the same layer, whose ``call`` is wrapped (an instance attribute; the class and
        the config are unchanged).
    """
    if getattr(layer.call, "_kerasformer_remat", False):
        return layer
    layer.call = _rematerialized_call(layer, layer.call)
    return layer


def maybe_rematerialize(layer, classes=REMAT_LAYERS):
    """:func:`rematerialize` `layer` if it is an instance of `classes`; return it."""
    return rematerialize(layer) if isinstance(layer, classes) else layer
