"""Adversarial training and gradient penalty as hooks on a Keras 3 model's train step.

bert4keras shipped these as example scripts that rebuilt Keras 2's ``train_function``
with ``K.gradients``/``K.function``; Keras 3 has neither. Here each is one call on a
compiled (or not yet compiled) ``keras.Model`` that replaces its ``train_step``, so that
``model.fit`` / ``train_on_batch`` run the method, on the JAX and TensorFlow backends
(jit/XLA included)::

    model.compile(loss="sparse_categorical_crossentropy", optimizer=Adam(2e-5))
    adversarial_training(model, "Embedding-Token", epsilon=1.0)     # FGM
    model.fit(train_generator.forfit(), steps_per_epoch=..., epochs=...)

- :func:`adversarial_training` (FGM; Miyato et al., arXiv:1605.07725; bert4keras
  ``task_iflytek_adversarial_training.py``): ``g`` = gradient of the loss w.r.t. the
  embedding matrix ``E``; the step's gradients are taken at ``E + epsilon * g /
  (||g|| + 1e-8)`` (Frobenius norm) and applied to the unperturbed weights.
- :func:`pgd_training` (PGD; Madry et al., arXiv:1706.06083): ``steps`` ascent steps
  ``r <- project_{||r|| <= epsilon}(r + alpha * g(E + r) / ||g(E + r)||)`` from ``r = 0``,
  then the step at ``E + r`` (``steps=1, alpha=epsilon`` is FGM).
- :func:`virtual_adversarial_training` (VAT; Miyato et al., arXiv:1704.03976; bert4keras
  ``task_sentiment_virtual_adversarial_training.py``, kexue.fm/archives/7466): the
  targets are the model's own predictions ``p = f(x)`` (inference mode, no gradient);
  ``d`` = Gaussian noise, ``iters`` times ``d <- gradient at E + xi * d / ||d||`` of
  ``loss(p, f(x))`` (inference mode); the step trains ``loss(p, f(x; E + epsilon * d /
  ||d||))``. ``y`` is ignored (unlabelled data); compile with a loss between two
  distributions, e.g. ``loss="kld"``.
- :func:`gradient_penalty` (kexue.fm/archives/7234; bert4keras
  ``task_iflytek_gradient_penalty.py``): trains ``loss + 0.5 * epsilon * ||dloss/de||^2``,
  ``e`` the *output* of the embedding layer (one gradient row per token position, as the
  ``IndexedSlices.values`` of bert4keras's script).

Only the trainable variables are perturbed-and-restored; the optimizer update is the
compiled optimizer's. Random layers (dropout) draw the same mask in the gradient pass and
the step on JAX (the seed state is advanced once per step) and fresh masks on TensorFlow.

Backends: JAX and TensorFlow (the only backend-specific code of kerasformer's training
path lives here, in ``_JaxStep``/``_TfStep``). Not supported: ``LossScaleOptimizer``
(``mixed_float16`` loss scaling; ``mixed_bfloat16`` needs none) and the torch backend.
"""
import contextlib

import keras
from keras import ops

from .backend import search_layer

__all__ = [
    "adversarial_training",
    "pgd_training",
    "virtual_adversarial_training",
    "gradient_penalty",
    "remove_training_hooks",
]

_NORM_EPSILON = 1e-8  # bert4keras's `grads / (sqrt(sum(grads**2)) + 1e-8)`


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------
def _unit(x):
    return x / (ops.sqrt(ops.sum(ops.square(x))) + _NORM_EPSILON)


def _find_embedding(model, embedding_name):
    layer = search_layer(model, embedding_name)
    if layer is None:
        for output in model.outputs:
            layer = search_layer(output, embedding_name)
            if layer is not None:
                break
    if layer is None:
        raise ValueError(
            f"No layer named {embedding_name!r} in model {model.name!r}; pass the name of "
            "its token Embedding layer (kerasformer/bert4keras: 'Embedding-Token')."
        )
    return layer


def _embedding_index(model, layer):
    weights = getattr(layer, "embeddings", None)
    if weights is None:
        raise ValueError(f"Layer {layer.name!r} has no `embeddings` matrix")
    for index, variable in enumerate(model.trainable_variables):
        if variable is weights:
            return index
    raise ValueError(f"The embedding matrix of {layer.name!r} is not trainable in the model")


def _check(model):
    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise NotImplementedError(
            f"kerasformer.training supports JAX and TensorFlow, not {backend!r}"
        )
    if not isinstance(model, keras.Model):
        raise TypeError(f"Expected a keras.Model, got {type(model).__name__}")


def _check_optimizer(model):
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):
        raise NotImplementedError(
            "kerasformer.training hooks do not support LossScaleOptimizer "
            "(mixed_float16); use mixed_bfloat16 or float32"
        )


def _refuse_second_hook(model):
    if getattr(model, "_kf_training_hook", None):
        raise ValueError(
            f"Model {model.name!r} already has the {model._kf_training_hook} hook; call "
            "remove_training_hooks(model) first"
        )


def _install(model, train_step, name):
    """Replace ``model.train_step`` (an instance attribute) and drop compiled functions."""
    _refuse_second_hook(model)
    model.train_step = train_step
    model._kf_training_hook = name
    model.train_function = None  # Keras rebuilds it around the new train_step
    return model


def remove_training_hooks(model):
    """Undo :func:`adversarial_training` & co.: the model trains normally again."""
    for name in ("train_step", "compute_loss_and_updates"):
        model.__dict__.pop(name, None)
    model._kf_training_hook = None
    model.train_function = None
    return model


def _unpack(data):
    return keras.utils.unpack_x_y_sample_weight(data)


# ---------------------------------------------------------------------------------------
# Backend steps: the few primitives every method is written with
# ---------------------------------------------------------------------------------------
class _JaxStep:
    """Primitives on the JAX trainer's explicit state tuple."""

    def __init__(self, model, index, state):
        self.model, self.index = model, index
        self.trainable, self.non_trainable, self.optimizer_vars, self.metrics = state

    def embedding(self):
        return self.trainable[self.index]

    def _replace(self, value):
        trainable = list(self.trainable)
        trainable[self.index] = value
        return trainable

    def grad(self, delta, x, y, sample_weight, training):
        import jax

        def loss_at(embedding):
            loss, _ = self.model.compute_loss_and_updates(
                self._replace(embedding), self.non_trainable, self.metrics, x, y,
                sample_weight, training=training, optimizer_variables=self.optimizer_vars,
            )
            return loss

        return jax.grad(loss_at)(self.embedding() + delta)

    def predict(self, x):
        outputs, _ = self.model.stateless_call(self.trainable, self.non_trainable, x,
                                               training=False)
        import jax

        return jax.tree_util.tree_map(jax.lax.stop_gradient, outputs)

    def normal(self, seed):
        import jax

        step = self.optimizer_vars[_iterations_index(self.model)]
        key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
        embedding = self.embedding()
        return jax.random.normal(key, embedding.shape, embedding.dtype)

    def train(self, delta, data):
        state = (self._replace(self.embedding() + delta), self.non_trainable,
                 self.optimizer_vars, self.metrics)
        logs, state = type(self.model).train_step(self.model, state, data)
        trainable = list(state[0])
        trainable[self.index] = trainable[self.index] - delta
        return logs, (trainable,) + tuple(state[1:])


class _TfStep:
    """Primitives on TensorFlow variables (assign, then restore)."""

    def __init__(self, model, index):
        self.model = model
        self.variable = model.trainable_variables[index]

    def embedding(self):
        return ops.convert_to_tensor(self.variable)

    def grad(self, delta, x, y, sample_weight, training):
        import tensorflow as tf

        variable = self.variable
        original = tf.identity(variable.value)  # a snapshot, restored exactly below
        variable.assign(original + delta)
        with tf.GradientTape() as tape:
            y_pred = self.model(x, training=training)
            loss = self.model.compute_loss(x=x, y=y, y_pred=y_pred,
                                           sample_weight=sample_weight, training=training)
        gradient = tape.gradient(loss, variable)
        variable.assign(original)
        return tf.convert_to_tensor(gradient)  # IndexedSlices -> dense, duplicates summed

    def predict(self, x):
        import tensorflow as tf

        return tf.nest.map_structure(tf.stop_gradient, self.model(x, training=False))

    def normal(self, seed):
        import tensorflow as tf

        step = tf.cast(self.model.optimizer.iterations, "int32")
        return tf.random.stateless_normal(self.variable.shape, seed=tf.stack([seed, step]),
                                          dtype=self.variable.dtype)

    def train(self, delta, data):
        self.variable.assign_add(delta)
        logs = type(self.model).train_step(self.model, data)
        self.variable.assign_sub(delta)
        return logs


def _iterations_index(model):
    for index, variable in enumerate(model.optimizer.variables):
        if variable is model.optimizer.iterations:
            return index
    raise RuntimeError("optimizer.iterations is not among the optimizer's variables")


def _hook(model, method):
    """A ``train_step`` for the current backend running ``method(step, data)``."""
    index = _embedding_index(model, model._kf_embedding_layer)
    if keras.backend.backend() == "jax":

        def train_step(state, data):
            _check_optimizer(model)
            return method(_JaxStep(model, index, state), data)

    else:

        def train_step(data):
            _check_optimizer(model)
            return method(_TfStep(model, index), data)

    return train_step


def _prepare(model, embedding_name):
    _check(model)
    model._kf_embedding_layer = _find_embedding(model, embedding_name)


# ---------------------------------------------------------------------------------------
# The methods
# ---------------------------------------------------------------------------------------
def adversarial_training(model, embedding_name="Embedding-Token", epsilon=1.0):
    """Fast Gradient Method on the embedding matrix (arXiv:1605.07725; module docstring).

    Args:
        model: a ``keras.Model`` holding a layer ``embedding_name`` with an ``embeddings``
            matrix [vocab, dim]; compile it before or after this call.
        embedding_name: str, the embedding layer's name.
        epsilon: float, the Frobenius norm of the perturbation (bert4keras's example: 0.5
            in the script, 1 in the article).

    Returns:
        ``model`` (its ``train_step`` replaced; see :func:`remove_training_hooks`).

    Raises:
        ValueError: no such layer, or its matrix is not trainable, or a hook is already on.
        NotImplementedError: torch backend; ``LossScaleOptimizer`` (at fit time).
    """
    return pgd_training(model, embedding_name, epsilon=epsilon, alpha=epsilon, steps=1,
                        _name="adversarial_training")


def pgd_training(model, embedding_name="Embedding-Token", epsilon=1.0, alpha=0.3, steps=3,
                 _name="pgd_training"):
    """Projected Gradient Descent on the embedding matrix (arXiv:1706.06083).

    Args:
        model, embedding_name: as for :func:`adversarial_training`.
        epsilon: float, radius of the Frobenius ball the perturbation is projected onto.
        alpha: float, the norm of each ascent step.
        steps: int >= 1, the number of ascent steps (each costs a forward and a backward).

    Returns / Raises: as :func:`adversarial_training`; ValueError for ``steps < 1``.
    """
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _prepare(model, embedding_name)
    epsilon, alpha, steps = float(epsilon), float(alpha), int(steps)

    def method(step, data):
        x, y, sample_weight = _unpack(data)
        delta = ops.zeros_like(step.embedding())
        for _ in range(steps):
            gradient = step.grad(delta, x, y, sample_weight, training=True)
            delta = delta + alpha * _unit(gradient)
            norm = ops.sqrt(ops.sum(ops.square(delta)))
            delta = delta * ops.minimum(1.0, epsilon / (norm + _NORM_EPSILON))
        return step.train(delta, data)

    return _install(model, _hook(model, method), _name)


def virtual_adversarial_training(model, embedding_name="Embedding-Token", epsilon=1.0,
                                 xi=10.0, iters=1, seed=0):
    """Virtual adversarial training on the embedding matrix (arXiv:1704.03976).

    Args:
        model, embedding_name: as for :func:`adversarial_training`; compile ``model`` with
            a loss between two distributions (``"kld"``), as the targets are its own
            predictions. Its ``y`` is ignored.
        epsilon: float, the norm of the adversarial perturbation.
        xi: float, the norm of the probe perturbation (bert4keras: 10).
        iters: int >= 1, power iterations.
        seed: int; the noise of update ``t`` is drawn from ``(seed, t)`` (reproducible).

    Returns / Raises: as :func:`adversarial_training`.
    """
    if int(iters) < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    _prepare(model, embedding_name)
    epsilon, xi, iters, seed = float(epsilon), float(xi), int(iters), int(seed)

    def method(step, data):
        x, _, sample_weight = _unpack(data)
        targets = step.predict(x)
        direction = step.normal(seed)
        for _ in range(iters):
            direction = step.grad(xi * _unit(direction), x, targets, sample_weight,
                                  training=False)
        delta = epsilon * _unit(direction)
        return step.train(delta, (x, targets, sample_weight))

    return _install(model, _hook(model, method), "virtual_adversarial_training")


# -- gradient penalty: needs the gradient w.r.t. the embedding layer's *output* ----------
class _OutputHook:
    """Wraps a layer's ``call`` (instance attribute) so that, while :meth:`active`, its
    output goes through a function (add an offset, or record the tensor)."""

    def __init__(self, layer):
        self.function = None
        original = layer.call

        def call(*args, **kwargs):
            outputs = original(*args, **kwargs)
            return outputs if self.function is None else self.function(outputs)

        layer.call = call

    @contextlib.contextmanager
    def active(self, function):
        self.function = function
        try:
            yield
        finally:
            self.function = None


def gradient_penalty(model, embedding_name="Embedding-Token", epsilon=1.0):
    """Train on ``loss + 0.5 * epsilon * ||d loss / d e||^2`` (kexue.fm/archives/7234).

    ``e`` is the output of the embedding layer [batch, seq, dim] (each token position its
    own row), so the penalty is the squared gradient norm w.r.t. the input embeddings.
    The logged ``loss`` includes the penalty (as in bert4keras's script).

    Args:
        model, embedding_name: as for :func:`adversarial_training` (any layer whose output
            the penalty should see; its ``call`` is wrapped).
        epsilon: float, the penalty weight (bert4keras's example: 1).

    Returns / Raises: as :func:`adversarial_training`.
    """
    _prepare(model, embedding_name)
    layer = model._kf_embedding_layer
    hook = getattr(layer, "_kf_output_hook", None) or _OutputHook(layer)
    layer._kf_output_hook = hook
    weight = 0.5 * float(epsilon)
    if keras.backend.backend() == "jax":
        _gradient_penalty_jax(model, hook, weight)
        model._kf_training_hook = "gradient_penalty"
        model.train_function = None
        return model
    return _install(model, _gradient_penalty_tf_step(model, hook, weight), "gradient_penalty")


def _gradient_penalty_jax(model, hook, weight):
    # The JAX trainer differentiates `compute_loss_and_updates`; replacing it (instance
    # attribute) keeps Keras's own train_step, metrics and optimizer bookkeeping.
    import jax

    _refuse_second_hook(model)
    original = type(model).compute_loss_and_updates

    def compute_loss_and_updates(trainable, non_trainable, metrics, x, y, sample_weight,
                                 training=False, optimizer_variables=None):
        def run(offset_function):
            with hook.active(offset_function):
                return original(model, trainable, non_trainable, metrics, x, y,
                                sample_weight, training=training,
                                optimizer_variables=optimizer_variables)

        if not training:
            return original(model, trainable, non_trainable, metrics, x, y, sample_weight,
                            training=training, optimizer_variables=optimizer_variables)
        shapes = []
        jax.eval_shape(lambda: run(lambda out: shapes.append(out) or out)[0])
        spec = shapes[0]

        def loss_at(offset):
            return run(lambda out: out + offset)

        (loss, aux), gradient = jax.value_and_grad(loss_at, has_aux=True)(
            jax.numpy.zeros(spec.shape, spec.dtype)
        )
        penalty = weight * jax.numpy.sum(jax.numpy.square(gradient))
        return loss + penalty, (aux[0] + penalty,) + tuple(aux[1:])

    model.compute_loss_and_updates = compute_loss_and_updates


def _gradient_penalty_tf_step(model, hook, weight):
    import tensorflow as tf

    def train_step(data):
        _check_optimizer(model)
        x, y, sample_weight = _unpack(data)
        recorded = []
        variables = model.trainable_variables
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                with hook.active(lambda out: recorded.append(out) or out):
                    y_pred = model(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred,
                                          sample_weight=sample_weight, training=True)
            gradient = inner.gradient(loss, recorded[0])
            penalty = weight * tf.reduce_sum(tf.square(gradient))
            total = loss + penalty
        grads = outer.gradient(total, variables)
        model.optimizer.apply_gradients(zip(grads, variables))
        batch = tf.shape(tf.nest.flatten(x)[0])[0]
        model._loss_tracker.update_state(total, sample_weight=batch)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step
