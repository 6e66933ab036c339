"""Mixed precision (``mixed_bfloat16``) and gradient checkpointing (kerasformer.remat) on
tiny BERT and GPT-2 models, under ``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``.

* bf16: the loss of a model built under ``mixed_bfloat16`` (float32 weights, bfloat16
  compute; softmax, LayerNorm and the attention mask in float32) is finite and within a
  stated relative tolerance of the float32 model's on the same weights, padding
  included; one training step keeps every weight finite.
* remat: gradients of a checkpointed model equal those of the plain model (dropout on,
  so the replayed dropout masks are checked too), and the checkpoint is really there
  (``remat``/``checkpoint`` in the JAX program; the layers run twice under
  ``tf.GradientTape`` in ``tf.function`` on TensorFlow).
"""
import contextlib

import keras
import numpy as np
import pytest
from keras import ops

from kerasformer import build_transformer_model
from kerasformer.models.bert import BERT
from kerasformer.models.gpt import GPT2

BACKEND = keras.backend.backend()
# initializer_range 0.2: logits far from uniform, so the loss is sensitive to precision.
COMMON = dict(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=37, max_position=16, initializer_range=0.2)
BERT_CONFIG = dict(model="bert", with_mlm="linear", **COMMON)
GPT2_CONFIG = dict(model="gpt2", final_activation="linear", **COMMON)


def report(what, value):
    print(f"[{BACKEND}] {what}: {value:.3g}")
    return value


@contextlib.contextmanager
def dtype_policy(name):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _tokens(seed=0, batch=4, length=12):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, COMMON["vocab_size"], (batch, length)).astype("int32")
    tokens[1, 8:] = 0  # padding: masked keys must stay finite in bfloat16
    tokens[2, 4:] = 0
    tokens[3, :] = 0  # every key masked (BERT): a uniform softmax, not NaN
    return tokens


def _model_inputs(model, tokens):
    return [tokens, np.zeros_like(tokens)] if len(model.inputs) == 2 else tokens


def _lm_loss(logits, tokens):
    """Next-token cross-entropy over real tokens, in float32: [B, T, V] -> scalar."""
    logits = ops.cast(logits[:, :-1], "float32")
    labels = tokens[:, 1:]
    mask = ops.cast(ops.not_equal(labels, 0), "float32")
    losses = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return ops.sum(losses * mask) / ops.sum(mask)


def _perturb(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype("float32")
                       if w.ndim == 1 else w for w in model.get_weights()])


# --------------------------------------------------------------------------- bfloat16


@pytest.mark.parametrize("config", [BERT_CONFIG, GPT2_CONFIG], ids=["bert", "gpt2"])
def test_mixed_bfloat16_loss_close_to_float32(config):
    keras.utils.set_random_seed(0)
    reference = build_transformer_model(**config)
    _perturb(reference)
    with dtype_policy("mixed_bfloat16"):
        model = build_transformer_model(**config)
    assert all(v.dtype == "float32" for v in model.weights)  # float32 master weights
    model.set_weights(reference.get_weights())
    norms = [layer for layer in model.layers if layer.name.endswith("Norm")]
    assert norms and all(layer.compute_dtype == "bfloat16" for layer in norms)

    tokens = _tokens()
    inputs = _model_inputs(model, tokens)
    logits = model(inputs)
    expected_logits = reference(inputs)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"  # heads: float32
    logits32 = ops.convert_to_numpy(ops.cast(logits, "float32"))
    assert np.all(np.isfinite(logits32))
    report(f"{config['model']} bf16 vs fp32 logits max|Δ| (max|logit| "
           f"{float(np.max(np.abs(expected_logits))):.3g})",
           float(np.max(np.abs(logits32 - ops.convert_to_numpy(expected_logits)))))
    loss = float(_lm_loss(logits, tokens))
    expected = float(_lm_loss(expected_logits, tokens))
    assert np.isfinite(loss)
    # bfloat16 keeps 8 significant bits (relative rounding 2**-9 ~ 0.2% per op); the
    # logits are off by ~1.5% of their range, the mean loss by ~3e-4 relative.
    assert report(f"{config['model']} bf16 vs fp32 loss, relative",
                  abs(loss - expected) / abs(expected)) <= 5e-3


def test_mixed_bfloat16_train_step_with_gradient_checkpointing():
    """bf16 compute, remat and dropout together, through Keras's own train step."""
    config = dict(COMMON, dropout_rate=0.1, attention_dropout_rate=0.1, with_mlm="linear")
    with dtype_policy("mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        model = BERT(**config, gradient_checkpointing=True).build()
    tokens = _tokens(2)
    inputs = _model_inputs(model, tokens)
    labels = np.concatenate([tokens[:, 1:], np.zeros_like(tokens[:, :1])], axis=1)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = model.get_weights()
    losses = [float(np.asarray(model.train_on_batch(inputs, labels)).reshape(-1)[0])
              for _ in range(2)]
    assert all(np.isfinite(losses))
    after = model.get_weights()
    assert all(bool(np.all(np.isfinite(w))) for w in after)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(after, before)) > 1e-4


# --------------------------------------------------------------------------- remat


def _gradients(model, tokens, training):
    inputs = _model_inputs(model, tokens)
    if BACKEND == "jax":
        import jax

        def loss(trainable, non_trainable):
            y, _ = model.stateless_call(trainable, non_trainable, inputs, training=training)
            return _lm_loss(y, tokens)

        args = ([v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables])
        program = str(jax.make_jaxpr(jax.grad(loss))(*args))
        checkpoints = program.count("remat") + program.count("checkpoint")
        return [np.asarray(g) for g in jax.jit(jax.grad(loss))(*args)], checkpoints
    import tensorflow as tf

    calls = []
    original = keras.layers.Dense.call

    def counting_call(self, *args, **kwargs):
        calls.append(self.path)
        return original(self, *args, **kwargs)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            value = _lm_loss(model(inputs, training=training), tokens)
        return tape.gradient(value, model.trainable_variables)

    keras.layers.Dense.call = counting_call
    try:
        result = [tf.convert_to_tensor(g).numpy() for g in grads()]
    finally:
        keras.layers.Dense.call = original
    # Traced once; a checkpointed layer's Dense sublayers run once more when recomputed.
    dense_layers = [layer for layer in model._flatten_layers()
                    if isinstance(layer, keras.layers.Dense)]
    return result, len(calls) - len(dense_layers)


@pytest.mark.parametrize("family", [BERT, GPT2], ids=["bert", "gpt2"])
def test_gradient_checkpointing_keeps_gradients(family):
    # Dropout on and training=True: the checkpointed layers must replay the same masks.
    config = dict(COMMON, dropout_rate=0.1, attention_dropout_rate=0.1)
    if family is GPT2:
        config["final_activation"] = "linear"
    else:
        config["with_mlm"] = "linear"
    keras.utils.set_random_seed(0)
    plain = family(**config).build()
    _perturb(plain)
    keras.utils.set_random_seed(0)  # same dropout seeds
    builder = family(**config, gradient_checkpointing=True)
    assert builder.gradient_checkpointing
    checkpointed = builder.build()
    assert [v.path for v in checkpointed.weights] == [v.path for v in plain.weights]
    checkpointed.set_weights(plain.get_weights())

    tokens = _tokens(1)
    expected, none = _gradients(plain, tokens, training=True)
    got, recomputed = _gradients(checkpointed, tokens, training=True)
    assert none == 0
    blocks = COMMON["num_hidden_layers"]
    if BACKEND == "jax":
        # Per block: attention, FFN and 2 norms (+ embedding/MLM/output norms).
        assert recomputed >= 4 * blocks
    else:
        # Per block: q/k/v/o of the attention and i0/o of the FFN run again.
        assert recomputed == 6 * blocks
    scale = max(float(np.max(np.abs(g))) for g in expected)
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(got, expected))
    report(f"{family.__name__} max|g|", scale)
    assert report(f"{family.__name__} remat vs plain gradients max|Δ|", worst) <= 1e-6

