"""Exact gradient accumulation for in-batch contrastive losses (GradCache).

An in-batch contrastive loss (SimCSE, SimBERT, DPR, CLIP...) compares every example with
every other example of the batch, so the loss of a large batch is *not* a sum of
micro-batch losses and ordinary gradient accumulation changes the objective (fewer
negatives). kexue.fm "对比学习可以使用梯度累积吗？" (kexue.fm/archives/8471) and GradCache
(Gao, Zhang, Han & Callan 2021, arXiv:2101.06983) split the computation at the
embeddings instead. With ``e = f(x; θ)`` the [N, d] embeddings of the whole batch and
``L(e)`` the loss,

    ∂L/∂θ = Σ_i (∂L/∂e_i)ᵀ ∂e_i/∂θ = Σ_chunks vjp(f(x_chunk; ·), ∂L/∂e_chunk)

so three passes give the full-batch gradient with the memory of one micro-batch:

1. embed every micro-batch without gradients and concatenate: ``e`` [N, d];
2. compute ``L(e)`` and ``G = ∂L/∂e`` on the full batch (cheap: d-dimensional);
3. for each micro-batch, recompute its embeddings *with* gradients and back-propagate
   ``G_chunk`` (a vector-Jacobian product), summing the parameter gradients.

Dropout (SimCSE's augmentation) draws the same masks in passes 1 and 3: every
micro-batch is recomputed from the random-seed state it was first computed with, and
after the step the model's seed state is where one forward pass per micro-batch leaves
it (non-trainable variables likewise).

The gradient step is the only backend-specific part (``jax.vjp`` vs
``tf.GradientTape``); it lives in :class:`_JaxBackend` / :class:`_TensorFlowBackend`,
everything else is ``keras.ops``. JAX and TensorFlow backends only.
"""
import weakref

import keras
from keras import ops

__all__ = ["GradientCache", "contrastive_gradients", "contrastive_train_step"]


def _slice(structure, start, stop):
    return keras.tree.map_structure(lambda a: a[start:stop], structure)


def _batch_size(inputs):
    return int(keras.tree.flatten(inputs)[0].shape[0])


class GradientCache:
    """Full-batch gradients of an in-batch loss, computed micro-batch by micro-batch.

    Args:
        model: a ``keras.Model`` mapping a (nested) batch of inputs to embeddings: one
            tensor [batch, ...] or a nested structure of them (each with the batch axis
            first), e.g. a kerasformer BERT followed by mean pooling.
        loss_fn: ``loss_fn(embeddings)`` or, when targets are given,
            ``loss_fn(embeddings, targets)`` -> a scalar or per-example losses (their
            mean is used), written in ``keras.ops``; it sees the embeddings of the
            *whole* batch, e.g. ``lambda e: ops.mean(losses.simcse_loss(None, e))``.
        micro_batch_size: rows per forward/backward pass (the last chunk may be
            smaller); memory grows with it, the result does not depend on it.
        training: passed to the model (True: dropout on, as SimCSE needs).
        jit_compile: compile the per-chunk steps (``jax.jit`` / ``tf.function``).

    Raises:
        NotImplementedError: for a backend other than JAX or TensorFlow.
        ValueError: for a non-positive micro_batch_size.
    """

    def __init__(self, model, loss_fn, micro_batch_size, training=True, jit_compile=True):
        if int(micro_batch_size) <= 0:
            raise ValueError(f"micro_batch_size must be positive, got {micro_batch_size}")
        backend = keras.backend.backend()
        if backend == "jax":
            self._backend = _JaxBackend(model, training, jit_compile)
        elif backend == "tensorflow":
            self._backend = _TensorFlowBackend(model, training, jit_compile)
        else:
            raise NotImplementedError(
                f"GradientCache supports the JAX and TensorFlow backends, not {backend!r}"
            )
        self.model = model
        self.loss_fn = loss_fn
        self.micro_batch_size = int(micro_batch_size)
        self.training = training

    def _loss(self, embeddings, targets):
        loss = self.loss_fn(embeddings) if targets is None else self.loss_fn(embeddings, targets)
        return ops.mean(ops.cast(loss, "float32"))

    def gradients(self, inputs, targets=None):
        """``(loss, gradients)`` of ``loss_fn(model(inputs))`` over the whole batch.

        Args:
            inputs: the model's inputs for the full batch (arrays or a list/dict of
                them, batch axis first).
            targets: optional, passed whole to ``loss_fn``.
        Returns:
            loss: float32 scalar tensor; gradients: a list aligned with
            ``model.trainable_variables`` (dense tensors; None-free).
        """
        n = _batch_size(inputs)
        step = self.micro_batch_size
        chunks = [(start, min(start + step, n)) for start in range(0, n, step)]
        backend = self._backend
        backend.begin()
        # Pass 1: embeddings without gradients, remembering each chunk's random state.
        states, outputs = [], []
        for start, stop in chunks:
            states.append(backend.state())
            outputs.append(backend.embed(_slice(inputs, start, stop)))
        final_state = backend.state()
        structure = outputs[0]
        leaves = [keras.tree.flatten(o) for o in outputs]
        embeddings = keras.tree.pack_sequence_as(
            structure, [ops.concatenate(parts, axis=0) for parts in zip(*leaves)]
        )
        # Pass 2: the full-batch loss and its gradient w.r.t. the embeddings.
        loss, embedding_grads = backend.value_and_grad(
            lambda e: self._loss(e, targets), embeddings
        )
        # Pass 3: per-chunk vector-Jacobian products with the cached embedding gradients.
        total = None
        for (start, stop), state in zip(chunks, states):
            backend.set_state(state)
            grads = backend.vjp(_slice(inputs, start, stop),
                                _slice(embedding_grads, start, stop))
            total = grads if total is None else [ops.add(a, b) for a, b in zip(total, grads)]
        backend.set_state(final_state)
        return loss, total

    def train_step(self, optimizer, inputs, targets=None):
        """One optimizer step on the full-batch gradient; returns the loss."""
        loss, grads = self.gradients(inputs, targets)
        optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        return loss


def contrastive_gradients(model, loss_fn, inputs, micro_batch_size, targets=None,
                          training=True, jit_compile=True):
    """``GradientCache(model, loss_fn, micro_batch_size, training, jit_compile)
    .gradients(inputs, targets)``: see :class:`GradientCache` (in a training loop, build
    one GradientCache and reuse it, so the compiled steps are reused)."""
    cache = GradientCache(model, loss_fn, micro_batch_size, training, jit_compile)
    return cache.gradients(inputs, targets)


def contrastive_train_step(model, optimizer, loss_fn, inputs, micro_batch_size,
                           targets=None, training=True, jit_compile=True):
    """One ``optimizer`` step of `model` on the exact full-batch gradient of
    ``loss_fn`` computed in micro-batches (:class:`GradientCache`); returns the loss."""
    cache = GradientCache(model, loss_fn, micro_batch_size, training, jit_compile)
    return cache.train_step(optimizer, inputs, targets)


# --------------------------------------------------------------------------- backends
# The only place that touches jax / tensorflow: evaluation without gradients, the
# gradient of the loss w.r.t. the embeddings, and the parameter VJP of one chunk.

# Compiled steps per model, reused by every GradientCache of that model. The key holds
# the identities of the variables: compiled steps read the model's variable lists when
# traced, so a model whose variables changed (LoRA enabled, layers frozen) gets new ones.
_COMPILED = weakref.WeakKeyDictionary()


def _compiled(model, training, jit_compile, make):
    key = (
        training, jit_compile,
        tuple(id(v) for v in model.trainable_variables),
        tuple(id(v) for v in model.non_trainable_variables),
    )
    try:
        per_model = _COMPILED.setdefault(model, {})
    except TypeError:  # not weak-referenceable: no reuse
        return make()
    if key not in per_model:
        per_model.clear()
        per_model[key] = make()
    return per_model[key]


class _JaxBackend:
    def __init__(self, model, training, jit_compile):
        import jax

        self.model = model
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        def embed(trainable, non_trainable, x):
            return model_ref().stateless_call(trainable, non_trainable, x, training=training)

        def vjp(trainable, non_trainable, x, cotangent):
            def forward(params):
                return model_ref().stateless_call(params, non_trainable, x,
                                                  training=training)[0]

            _, pullback = jax.vjp(forward, trainable)
            return pullback(cotangent)[0]

        self._embed, self._vjp = _compiled(
            model, training, jit_compile,
            lambda: (jax.jit(embed), jax.jit(vjp)) if jit_compile else (embed, vjp),
        )
        self._value_and_grad = jax.value_and_grad
        self._non_trainable = None

    def begin(self):
        self._non_trainable = [v.value for v in self.model.non_trainable_variables]

    def state(self):
        return self._non_trainable

    def set_state(self, state):
        self._non_trainable = state
        for variable, value in zip(self.model.non_trainable_variables, state):
            variable.assign(value)

    def _trainable(self):
        return [v.value for v in self.model.trainable_variables]

    def embed(self, x):
        outputs, self._non_trainable = self._embed(self._trainable(), self.state(), x)
        return outputs

    def value_and_grad(self, fn, x):
        return self._value_and_grad(fn)(x)

    def vjp(self, x, cotangent):
        return list(self._vjp(self._trainable(), self.state(), x, cotangent))


class _TensorFlowBackend:
    def __init__(self, model, training, jit_compile):
        import tensorflow as tf

        self.model = model
        self.tf = tf
        model_ref = weakref.ref(model)  # the cache must not keep the model alive

        def embed(x):
            return model_ref()(x, training=training)

        def vjp(x, cotangent):
            model = model_ref()
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                outputs = model(x, training=training)
            grads = tape.gradient(outputs, variables, output_gradients=cotangent)
            # Embedding gradients arrive as IndexedSlices; dense ones add up exactly.
            return [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                    for g, v in zip(grads, variables)]

        self._embed, self._vjp = _compiled(
            model, training, jit_compile,
            lambda: (tf.function(embed, reduce_retracing=True),
                     tf.function(vjp, reduce_retracing=True)) if jit_compile else (embed, vjp),
        )

    def _tensors(self, x):
        return keras.tree.map_structure(ops.convert_to_tensor, x)

    def begin(self):
        pass

    def state(self):
        return [self.tf.identity(ops.convert_to_tensor(v))
                for v in self.model.non_trainable_variables]

    def set_state(self, state):
        for variable, value in zip(self.model.non_trainable_variables, state):
            variable.assign(value)

    def embed(self, x):
        return self._embed(self._tensors(x))

    def value_and_grad(self, fn, x):
        tf = self.tf
        x = keras.tree.map_structure(tf.convert_to_tensor, x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
        return value, tape.gradient(value, x)

    def vjp(self, x, cotangent):
        return list(self._vjp(self._tensors(x), cotangent))
