"""The `keras.Model` subclass that `build_transformer_model` returns.

It is a plain functional Keras model (same layers, weights, ``fit``/``predict``, ``.keras``
saving) with a place for kerasformer's own behaviour around Keras's entry points: input
validation before Keras's loops, restoring state after a failed call, and bert4keras-style
file names. Behaviour is added here as small methods, each documented where it is defined.
"""
import keras


@keras.saving.register_keras_serializable(package="kerasformer")
class TransformerModel(keras.Model):
    """A functional `keras.Model` built by a kerasformer :class:`Transformer` builder.

    Construct it like ``keras.Model(inputs, outputs, name=...)``.
    """
