"""Layer normalization, RMS normalization and conditional layer normalization."""
import keras
from keras import ops

from .masking import KeepsFirstInputMask


@keras.saving.register_keras_serializable(package="kerasformer")
class LayerNormalization(KeepsFirstInputMask, keras.layers.Layer):
    """Layer normalization over the last axis, computed in float32.

    Covers the variants of the model zoo with flags rather than classes:
    standard LayerNorm (Ba et al. 2016, arXiv:1607.06450: ``zero_mean=True``), T5's
    RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467: ``zero_mean=False, center=False``),
    parameter-free norms (``center=False, scale=False``) and conditional LayerNorm
    (kexue.fm/archives/7124): call with ``[x, cond]`` and gamma/beta become
    ``gamma + Dense(cond)``, ``beta + Dense(cond)`` (zero-initialized, so an untrained
    condition leaves the pretrained norm unchanged).

    Args:
        epsilon: added to the variance (BERT 1e-12, GPT-2 1e-5, T5 1e-6).
        center: learn a bias ``beta``.
        scale: learn a gain ``gamma``.
        zero_mean: subtract the mean (False gives RMS normalization).
        unit_variance: divide by the (root mean square) deviation.
        conditional: expect ``[x, cond]`` inputs, cond [batch, cond_dim] or
            [batch, seq_len, cond_dim].
        cond_hidden_units / cond_hidden_activation: an optional Dense projection of the
            condition before the gamma/beta Dense layers.
    Input/output: [..., hidden]; the output has the input's dtype (bfloat16 under
    ``mixed_bfloat16``); statistics, gamma and beta are float32.
    """

    def __init__(self, epsilon=1e-12, center=True, scale=True, zero_mean=True,
                 unit_variance=True, conditional=False, cond_hidden_units=None,
                 cond_hidden_activation="linear", cond_hidden_initializer="glorot_uniform",
                 **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon
        self.center = center
        self.scale = scale
        self.zero_mean = zero_mean
        self.unit_variance = unit_variance
        self.conditional = conditional
        self.cond_hidden_units = cond_hidden_units
        self.cond_hidden_activation = cond_hidden_activation
        self.cond_hidden_initializer = keras.initializers.get(cond_hidden_initializer)
        # Read gamma/beta as float32 under mixed precision (Keras's autocast would round
        # them to bfloat16 first; the weights are also created with autocast=False); the
        # input keeps its dtype and is cast in `call`.
        self.autocast = False

    def build(self, input_shape):
        shape = input_shape[0] if self.conditional else input_shape
        dim = shape[-1]
        if self.center:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros",
                                       autocast=False)
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones",
                                       autocast=False)
        if self.conditional:
            cond_shape = tuple(input_shape[1])
            if self.cond_hidden_units:
                self.cond_hidden_dense = keras.layers.Dense(
                    self.cond_hidden_units, activation=self.cond_hidden_activation,
                    use_bias=False, kernel_initializer=self.cond_hidden_initializer,
                    name="cond_hidden_dense", dtype=self.dtype_policy,
                )
                self.cond_hidden_dense.build(cond_shape)
                cond_shape = cond_shape[:-1] + (self.cond_hidden_units,)
            if self.center:
                self.beta_dense = keras.layers.Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="beta_dense",
                    dtype=self.dtype_policy,
                )
                self.beta_dense.build(cond_shape)
            if self.scale:
                self.gamma_dense = keras.layers.Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="gamma_dense",
                    dtype=self.dtype_policy,
                )
                self.gamma_dense.build(cond_shape)

    def call(self, inputs):
        if self.conditional:
            x, cond = inputs
            if self.cond_hidden_units:
                cond = self.cond_hidden_dense(cond)
            # A per-example condition [batch, dim] broadcasts over the sequence axis.
            while len(cond.shape) < len(x.shape):
                cond = ops.expand_dims(cond, 1)
        else:
            x = inputs
        dtype = x.dtype
        x = ops.cast(x, "float32")
        if self.zero_mean:
            x = x - ops.mean(x, axis=-1, keepdims=True)
        if self.unit_variance:
            variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
            x = x * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            gamma = ops.cast(self.gamma, "float32")
            if self.conditional:
                gamma = gamma + ops.cast(self.gamma_dense(cond), "float32")
            x = x * gamma
        if self.center:
            beta = ops.cast(self.beta, "float32")
            if self.conditional:
                beta = beta + ops.cast(self.beta_dense(cond), "float32")
            x = x + beta
        return ops.cast(x, dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if self.conditional else input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon, center=self.center, scale=self.scale,
            zero_mean=self.zero_mean, unit_variance=self.unit_variance,
            conditional=self.conditional, cond_hidden_units=self.cond_hidden_units,
            cond_hidden_activation=self.cond_hidden_activation,
            cond_hidden_initializer=keras.initializers.serialize(self.cond_hidden_initializer),
        )
        return config
