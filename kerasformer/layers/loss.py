"""bert4keras's ``Loss`` layer: a loss written as a layer of the model."""
import keras


@keras.saving.register_keras_serializable(package="kerasformer")
class Loss(keras.layers.Layer):
    """A layer that adds ``compute_loss(inputs, mask)`` to the model's loss (bert4keras).

    Subclass it and define ``compute_loss``; put it on the graph's outputs, then
    ``model.compile(optimizer)`` (no ``loss``) and ``model.fit(x, None)`` train on it::

        class CrossEntropy(Loss):
            def compute_loss(self, inputs, mask=None):
                y_true, y_pred = inputs
                return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(
                    y_true, y_pred))

        output = CrossEntropy(output_axis=1)([y_in, probs])

    The loss goes through ``self.add_loss`` during the forward pass, which Keras 3 adds to
    the compiled loss on JAX and TensorFlow. ``mask`` is the Keras mask of the inputs
    (a list when ``inputs`` is a list), or None.

    Args:
        output_axis: None to return ``inputs`` unchanged; an int to return
            ``inputs[output_axis]``; a list of ints for a list of them. The mask follows
            the same selection.

    ``compute_loss`` returns a scalar float tensor; the base class raises
    ``NotImplementedError``.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis
        self.supports_masking = True

    def call(self, inputs, mask=None):
        self.add_loss(self.compute_loss(inputs, mask))
        return self._select(inputs)

    def compute_loss(self, inputs, mask=None):
        raise NotImplementedError(f"{type(self).__name__} must define compute_loss")

    def _select(self, values):
        if self.output_axis is None:
            return values
        if isinstance(self.output_axis, (list, tuple)):
            return [values[i] for i in self.output_axis]
        return values[self.output_axis]

    def compute_output_shape(self, input_shape):
        return self._select(input_shape)

    def compute_output_spec(self, inputs, mask=None):
        return self._select(
            keras.tree.map_structure(
                lambda x: keras.KerasTensor(x.shape, dtype=x.dtype), inputs
            )
        )

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return self._select(mask)

    def get_config(self):
        config = super().get_config()
        config["output_axis"] = self.output_axis
        return config
