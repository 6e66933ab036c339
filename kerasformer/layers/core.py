"""Small weight-light layers the model graphs are made of (serialisable, unlike Lambda)."""
import keras
from keras import ops

from .. import ops as kf_ops
from .masking import DropsMask, KeepsFirstInputMask


@keras.saving.register_keras_serializable(package="kerasformer")
class AttentionMask(DropsMask, keras.layers.Layer):
    """Builds the boolean attention mask [batch, 1, q_len, k_len] (True = may attend).

    Args:
        mode: ``"padding"`` (keys equal to ``pad_id`` hidden; [batch, 1, 1, k_len]),
            ``"causal"`` (padding + lower-triangular; GPT-style LM) or ``"unilm"``
            (padding + the UniLM seq2seq mask from segment ids, arXiv:1905.03197).
        pad_id: the padding token id.
    Call: ``layer(token_ids)`` or, for ``"unilm"``, ``layer([token_ids, segment_ids])``;
    int tensors [batch, seq_len].
    """

    MODES = ("padding", "causal", "unilm")

    def __init__(self, mode="padding", pad_id=0, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"AttentionMask mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.pad_id = pad_id

    def call(self, inputs):
        if self.mode == "unilm":
            token_ids, segment_ids = inputs
        else:
            token_ids = inputs
        mask = kf_ops.padding_mask(token_ids, self.pad_id)
        if self.mode == "causal":
            t = ops.shape(token_ids)[1]
            mask = ops.logical_and(mask, kf_ops.causal_mask(t))
        elif self.mode == "unilm":
            mask = ops.logical_and(mask, kf_ops.unilm_mask(segment_ids))
        return mask

    def compute_output_spec(self, inputs):
        token_ids = inputs[0] if self.mode == "unilm" else inputs
        t = token_ids.shape[1]
        q = 1 if self.mode == "padding" else t
        return keras.KerasTensor((token_ids.shape[0], 1, q, t), dtype="bool")

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode, pad_id=self.pad_id)
        return config


@keras.saving.register_keras_serializable(package="kerasformer")
class TakeToken(DropsMask, keras.layers.Layer):
    """Selects one position of a sequence: [batch, seq_len, dim] -> [batch, dim]
    (BERT's pooler reads the [CLS] token at index 0)."""

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, x):
        return x[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@keras.saving.register_keras_serializable(package="kerasformer")
class BiasAdd(KeepsFirstInputMask, keras.layers.Layer):
    """Adds a learned bias over the last axis (the MLM output bias)."""

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + ops.cast(self.bias, x.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@keras.saving.register_keras_serializable(package="kerasformer")
class Activation(KeepsFirstInputMask, keras.layers.Layer):
    """Applies a named activation (kerasformer names: exact ``gelu``, ``gelu_new``...);
    ``softmax`` runs in float32 along the last axis."""

    def __init__(self, activation="linear", **kwargs):
        super().__init__(**kwargs)
        self.activation = activation

    def call(self, x):
        if self.activation == "softmax":
            return ops.cast(ops.softmax(ops.cast(x, "float32"), axis=-1), x.dtype)
        return kf_ops.get_activation(self.activation)(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}
