"""Keras padding-mask propagation through kerasformer's layers.

The token embedding (:class:`~kerasformer.layers.Embedding` with ``pad_token_id``) attaches
the padding mask bool [batch, seq_len] to its output, as bert4keras's ``Embedding-Token``
did; Keras 3 then carries it through every layer that *supports masking* and hands it to
layers whose ``call`` takes ``mask`` (``GlobalAveragePooling1D``, CRF, GlobalPointer, a
``Loss`` layer...) and, on a model output, to ``fit``'s losses and metrics as weights.

A Keras 3 layer supports masking when it defines ``compute_mask``; the two mixins below are
the two cases of kerasformer's layers. Attention layers read padding from their explicit
``attention_mask`` argument, never from this Keras mask, so it is not applied twice.
"""
import keras
from keras import ops


class KeepsFirstInputMask:
    """Mixin for position-wise layers ([batch, seq_len, ...] in and out): the output
    keeps the Keras mask of the first input (of ``x`` when called on ``[x, cond]`` or
    ``[x, position_ids]``)."""

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            return mask[0] if mask else None
        return mask


class DropsMask:
    """Mixin for layers whose output has no sequence axis to mask (biases, pooled
    vectors, attention masks): a masked input is accepted and the output has no mask."""

    def compute_mask(self, inputs, mask=None):
        return None


@keras.saving.register_keras_serializable(package="kerasformer")
class Add(keras.layers.Add):
    """`keras.layers.Add` whose output mask is the AND of the inputs' masks that exist
    (Keras 2 / bert4keras semantics). Keras 3's Add drops the mask as soon as one input
    has none, which would lose the padding mask at ``token + segment`` embeddings."""

    def compute_mask(self, inputs, mask=None):
        masks = [m for m in (mask or []) if m is not None]
        if not masks:
            return None
        output = masks[0]
        for m in masks[1:]:
            output = ops.logical_and(output, m)
        return output
