"""Position-wise feed-forward block (plain or gated)."""
import keras

from ..ops import get_activation
from .masking import KeepsFirstInputMask


@keras.saving.register_keras_serializable(package="kerasformer")
class FeedForward(KeepsFirstInputMask, keras.layers.Layer):
    """``o_dense(act(i0_dense(x)))``, or with several activations the gated form
    ``o_dense(act0(i0_dense(x)) * act1(i1_dense(x)) * ...)`` (GLU variants, Shazeer 2020,
    arXiv:2002.05202; T5 v1.1 uses ``["gelu_new", "linear"]``).

    Args:
        units: inner size (``intermediate_size`` / ``d_ff``).
        activation: a name/callable, or a list of them for the gated form.
        use_bias: biases on the Dense layers (False for T5, RoFormer-V2).
        kernel_initializer: initializer of the Dense kernels.
    Input/output: [..., hidden] -> [..., hidden].
    """

    def __init__(self, units, activation="relu", use_bias=True,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation if isinstance(activation, (list, tuple)) else [activation]
        self.activation = list(self.activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        dim = input_shape[-1]
        self._acts = [get_activation(a) for a in self.activation]
        self.input_denses = []
        for i in range(len(self.activation)):
            dense = keras.layers.Dense(
                self.units, use_bias=self.use_bias, name=f"i{i}_dense",
                kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy,
            )
            dense.build(input_shape)
            self.input_denses.append(dense)
        self.o_dense = keras.layers.Dense(
            dim, use_bias=self.use_bias, name="o_dense",
            kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy,
        )
        self.o_dense.build(tuple(input_shape[:-1]) + (self.units,))

    def call(self, x):
        h = self._acts[0](self.input_denses[0](x))
        for act, dense in zip(self._acts[1:], self.input_denses[1:]):
            h = h * act(dense(x))
        return self.o_dense(h)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            activation=[a if isinstance(a, str) else keras.saving.serialize_keras_object(a)
                        for a in self.activation],
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
