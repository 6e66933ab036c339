"""DGCNN: dilated gated convolutions (Su, kexue.fm/archives/5409)."""
import keras
from keras import ops


def _as_mask(mask, x):
    """``mask`` [batch, seq_len] as float [batch, seq_len, 1] in ``x``'s dtype (or None)."""
    if mask is None:
        return None
    return ops.cast(mask, x.dtype)[:, :, None]


@keras.saving.register_keras_serializable(package="kerasformer")
class DilatedGatedConv1D(keras.layers.Layer):
    """One DGCNN block (Su, "基于CNN的阅读理解式问答模型：DGCNN", kexue.fm/archives/5409):

        ``h, g = split(Conv1D_{2d, kernel_size, dilation_rate}(x))``
        ``s = sigmoid(g)``;  ``y = x * (1 - s) + h * s``

    a gated residual: the gate ``s`` chooses per position and channel between passing
    ``x`` through and the convolution ``h``. Padded positions are zeroed before the
    convolution (so they act like the zero padding at the sequence ends and real
    positions never see them) and in the output.

    Args:
        dilation_rate: int >= 1, spacing of the kernel taps.
        kernel_size: int, taps of the convolution (default 3).
        gate_dropout: dropout rate on the gate logits ``g`` in training (Su's code uses
            0.1); 0 by default.
        kernel_initializer: of the convolution.

    Call:
        ``layer(x, mask=None)``: ``x`` float [batch, seq_len, dim]; ``mask`` bool/int
        [batch, seq_len], True/1 for real tokens.

    Returns:
        float [batch, seq_len, dim] (the input's size: the gate is a residual).
    """

    def __init__(self, dilation_rate=1, kernel_size=3, gate_dropout=0.0,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if int(dilation_rate) < 1 or int(kernel_size) < 1:
            raise ValueError("DilatedGatedConv1D: dilation_rate and kernel_size must be >= 1, "
                             f"got {dilation_rate} and {kernel_size}")
        self.dilation_rate = int(dilation_rate)
        self.kernel_size = int(kernel_size)
        self.gate_dropout = float(gate_dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # The mask is an explicit argument; accepting it stops Keras from warning that it
        # is dropped, and compute_mask returns None (no implicit propagation).
        self.supports_masking = True

    def build(self, input_shape):
        dim = input_shape[-1]
        self.conv = keras.layers.Conv1D(
            2 * dim, self.kernel_size, padding="same", dilation_rate=self.dilation_rate,
            kernel_initializer=self.kernel_initializer, name="conv", dtype=self.dtype_policy)
        self.conv.build(input_shape)
        self.dropout = keras.layers.Dropout(self.gate_dropout)

    def call(self, x, mask=None, training=None):
        mask = _as_mask(mask, x)
        if mask is not None:
            x = x * mask
        h, g = ops.split(self.conv(x), 2, axis=-1)
        s = ops.sigmoid(self.dropout(g, training=training))
        y = x * (1 - s) + h * s
        return y if mask is None else y * mask

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, x, mask=None, training=None):
        return keras.KerasTensor(x.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(dilation_rate=self.dilation_rate, kernel_size=self.kernel_size,
                      gate_dropout=self.gate_dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config


@keras.saving.register_keras_serializable(package="kerasformer")
class DGCNN(keras.layers.Layer):
    """A stack of :class:`DilatedGatedConv1D` blocks, one per dilation rate (Su,
    kexue.fm/archives/5409, whose reader uses rates ``1, 2, 5, 1, 2, 5, 1, 1, 1``, the
    default here), e.g. on top of an encoder's sequence output.

    Args:
        dilation_rates: sequence of ints >= 1.
        kernel_size, gate_dropout, kernel_initializer: as :class:`DilatedGatedConv1D`.

    Call / returns: as :class:`DilatedGatedConv1D` (``layer(x, mask=None)`` ->
    [batch, seq_len, dim]).

    Raises:
        ValueError: an empty ``dilation_rates`` or a rate < 1.
    """

    def __init__(self, dilation_rates=(1, 2, 5, 1, 2, 5, 1, 1, 1), kernel_size=3,
                 gate_dropout=0.0, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.dilation_rates = [int(r) for r in dilation_rates]
        if not self.dilation_rates:
            raise ValueError("DGCNN: dilation_rates is empty")
        self.kernel_size = int(kernel_size)
        self.gate_dropout = float(gate_dropout)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        # The mask is an explicit argument; accepting it stops Keras from warning that it
        # is dropped, and compute_mask returns None (no implicit propagation).
        self.supports_masking = True
        self.blocks = [
            DilatedGatedConv1D(rate, self.kernel_size, self.gate_dropout,
                               kernel_initializer=self.kernel_initializer,
                               name=f"block_{i}", dtype=self.dtype_policy)
            for i, rate in enumerate(self.dilation_rates)
        ]

    def build(self, input_shape):
        for block in self.blocks:
            block.build(input_shape)

    def call(self, x, mask=None, training=None):
        for block in self.blocks:
            x = block(x, mask=mask, training=training)
        return x

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, x, mask=None, training=None):
        return keras.KerasTensor(x.shape, dtype=self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(dilation_rates=self.dilation_rates, kernel_size=self.kernel_size,
                      gate_dropout=self.gate_dropout,
                      kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
        return config
