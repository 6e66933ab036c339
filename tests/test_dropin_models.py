"""What a bert4keras script does with the models it builds, on kerasformer (issue 15).

One section per item: the output contract (one output -> the tensor), Keras padding masks
on the sequence outputs (pooling, CRF, GlobalPointer and losses see the padding as in
bert4keras), ``save_weights("best_model.weights")`` and friends, the builder API (T5
``encoder``/``decoder`` models, one tensor as ``additional_input_layers``, the first N
blocks of a deeper checkpoint, ``apply_embeddings``/``apply_main_layers`` on other
inputs) and ``DataGenerator.forfit()`` idioms. References: the unpadded input (padding
must change nothing), NumPy formulas, Hugging Face ``transformers`` for the truncated
checkpoint. Tiny configs; runs under ``KERAS_BACKEND=jax`` and ``tensorflow``.
"""
import os
import warnings

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer.layers import ConditionalRandomField, GlobalPointer
from kerasformer.snippets import DataGenerator, sequence_padding

CONFIG = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=32, max_position_embeddings=32, initializer_range=0.5)
T5_CONFIG = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, attention_head_size=8, initializer_range=0.5)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def keras_mask(tensor):
    return getattr(tensor, "_keras_mask", None)


@pytest.fixture(scope="module")
def bert():
    keras.utils.set_random_seed(0)
    return build_transformer_model(None, None, return_keras_model=False, **CONFIG)


def sentences(pad_to=None):
    """Two sentences [2, n] (lengths 7 and 4), right-padded with 0 to `pad_to`."""
    rng = np.random.RandomState(1)
    rows = [rng.randint(1, CONFIG["vocab_size"], size=n).tolist() for n in (7, 4)]
    token_ids = sequence_padding(rows, length=pad_to)
    segment_ids = np.zeros_like(token_ids)
    return token_ids, segment_ids


# ----------------------------------------------------------------- 2. output contract


def test_one_output_is_the_tensor_several_a_list(bert):
    model = bert.model
    assert isinstance(model.output, keras.KerasTensor)  # not a one-element list
    assert bert.output is model.output
    # bert4keras idioms on the output tensor
    classifier = keras.Model(model.inputs, keras.layers.Dense(3)(
        keras.layers.Lambda(lambda x: x[:, 0])(model.output)))
    assert classifier.output_shape == (None, 3)
    assert keras.layers.Dense(5)(model.output).shape[-1] == 5
    heads = build_transformer_model(None, None, with_pool=True, with_mlm=True, **CONFIG)
    assert isinstance(heads.output, list) and len(heads.output) == 2
    t5 = build_transformer_model(None, None, model="t5.1.1", **T5_CONFIG)
    assert isinstance(t5.output, keras.KerasTensor)


# ----------------------------------------------------------------- 3. padding masks


def test_padding_changes_no_pooled_vector(bert):
    """GlobalAveragePooling1D on the sequence output averages the real tokens only; the
    reference is the NumPy mean of the unpadded sentence's states."""
    pooled = keras.Model(bert.model.inputs,
                         keras.layers.GlobalAveragePooling1D()(bert.model.output))
    for row, n in enumerate((7, 4)):
        token_ids, segment_ids = sentences()
        alone = [token_ids[row:row + 1, :n], segment_ids[row:row + 1, :n]]
        reference = to_numpy(bert.model(alone)).mean(axis=1)
        padded = to_numpy(pooled(list(sentences(pad_to=12))))[row:row + 1]
        assert np.abs(padded - reference).max() <= 1e-5


def test_heads_see_the_mask_of_the_sequence_output(bert):
    """The CRF and GlobalPointer take the Keras mask (no mask argument given): padding
    changes neither the CRF loss nor any GlobalPointer decision; padded cells are never
    predicted."""
    hidden = bert.model.output
    assert keras_mask(hidden) is not None
    keras.utils.set_random_seed(2)
    crf = ConditionalRandomField()
    emissions = crf(keras.layers.Dense(5)(hidden))
    spans = GlobalPointer(heads=2, head_size=8)(hidden)
    model = keras.Model(bert.model.inputs, [emissions, spans])
    labels = np.random.RandomState(3).randint(0, 5, size=(2, 12))
    short, padded = sentences(), sentences(pad_to=12)
    e_short, s_short = model(list(short))
    e_padded, s_padded = model(list(padded))
    loss_short = to_numpy(crf.sparse_loss(labels[:, :7], e_short))
    loss_padded = to_numpy(crf.sparse_loss(labels, e_padded))
    np.testing.assert_allclose(loss_padded, loss_short, rtol=1e-5, atol=1e-5)
    s_short, s_padded = to_numpy(s_short), to_numpy(s_padded)
    for row, n in enumerate((7, 4)):
        np.testing.assert_array_equal(s_padded[row, :, :n, :n] > 0,
                                      s_short[row, :, :n, :n] > 0)
        assert not (s_padded[row, :, n:, :] > 0).any()
        assert not (s_padded[row, :, :, n:] > 0).any()


def test_losses_average_over_real_tokens_as_bert4keras():
    """The MLM output keeps the mask (bert4keras does), so Keras's token-level loss is the
    mean over non-padding positions; a pooled output has no mask."""
    keras.utils.set_random_seed(0)
    model = build_transformer_model(None, None, with_pool=True, with_mlm="linear",
                                    **CONFIG)
    pooled, logits = model.output
    assert keras_mask(pooled) is None and keras_mask(logits) is not None
    token_ids, segment_ids = sentences(pad_to=9)
    targets = np.random.RandomState(4).randint(0, CONFIG["vocab_size"], size=(2, 9))
    outputs = model([token_ids, segment_ids])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    got = to_numpy(loss(targets, outputs[1]))
    z = to_numpy(outputs[1]).astype(np.float64)
    log_probs = z - z.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    reference = nll[token_ids != 0].mean()
    assert abs(got - reference) <= 1e-5 * max(1.0, abs(reference))


def test_t5_decoder_mask_keeps_the_start_token():
    """T5's decoder starts from the pad id 0; bert4keras's rule keeps position 0 real."""
    t5 = build_transformer_model(None, None, model="t5.1.1", return_keras_model=False,
                                 **T5_CONFIG)
    out = t5.model([np.array([[5, 6, 7, 0]]), np.array([[0, 3, 4, 0]])])
    np.testing.assert_array_equal(to_numpy(keras_mask(out)), [[True, True, True, False]])


# ----------------------------------------------------------------- 4. weight files


def test_save_weights_under_bert4keras_names(bert, tmp_path):
    path = str(tmp_path / "best_model.weights")
    with pytest.warns(UserWarning, match="Keras 3 weights format"):
        bert.model.save_weights(path)
    assert os.listdir(tmp_path) == ["best_model.weights"]  # no temporary left behind
    keras.utils.set_random_seed(5)
    other = build_transformer_model(None, None, **CONFIG)
    other.load_weights(path)
    for a, b in zip(bert.model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    # a failed write leaves the old file as it was
    before = open(path, "rb").read()
    with pytest.raises(FileExistsError):
        bert.model.save_weights(path, overwrite=False)
    assert open(path, "rb").read() == before


def test_save_model_under_a_legacy_name(bert, tmp_path):
    path = str(tmp_path / "best_model.model")
    with pytest.warns(UserWarning, match="Keras 3 model format"):
        bert.model.save(path)
    keras_path = str(tmp_path / "copy.keras")
    os.rename(path, keras_path)
    loaded = keras.models.load_model(keras_path)
    token_ids, segment_ids = sentences()
    np.testing.assert_allclose(to_numpy(loaded([token_ids, segment_ids])),
                               to_numpy(bert.model([token_ids, segment_ids])), atol=1e-6)


# ----------------------------------------------------------------- 5. builder API


def test_t5_encoder_and_decoder_are_models():
    t5 = build_transformer_model(None, None, model="t5.1.1", return_keras_model=False,
                                 **T5_CONFIG)
    encoder, decoder = t5.encoder, t5.decoder
    assert isinstance(encoder, keras.Model) and isinstance(decoder, keras.Model)
    source, target = np.array([[5, 6, 7, 0]]), np.array([[0, 3, 4]])
    composed = to_numpy(decoder([to_numpy(encoder(source)), target]))
    joint = to_numpy(t5.model([source, target]))
    assert np.abs(composed - joint).max() <= 1e-6


def test_one_tensor_as_additional_input_layers():
    extra = keras.Input((3,), name="Extra")
    model = build_transformer_model(None, None, additional_input_layers=extra, **CONFIG)
    assert [t.name for t in model.inputs][-1] == "Extra"
    assert len(model.inputs) == 3


def test_first_blocks_of_a_deeper_checkpoint(tiny_bert, tiny_bert_inputs, torch,
                                              transformers, tmp_path):
    """``num_hidden_layers=1`` on a 2-block checkpoint (Hugging Face or Google names)
    loads block 0 and says what was skipped; the reference is transformers' BertModel
    truncated the same way."""
    path, _ = tiny_bert
    config_path = os.path.join(path, "config.json")
    with pytest.warns(UserWarning, match=r"skipping the 16 tensors of blocks 1-1"):
        model = build_transformer_model(config_path, path, num_hidden_layers=1)
    google = str(tmp_path / "bert_model.ckpt")
    build_transformer_model(config_path, path, return_keras_model=False
                            ).save_weights_as_checkpoint(google, format="tf")
    with pytest.warns(UserWarning, match=r"bert/encoder/layer_1/"):
        from_google = build_transformer_model(config_path, google, num_hidden_layers=1)
    reference = transformers.BertModel.from_pretrained(path, num_hidden_layers=1).eval()
    token_ids, segment_ids = tiny_bert_inputs
    with torch.no_grad():
        expected = reference(
            input_ids=torch.tensor(token_ids, dtype=torch.long),
            token_type_ids=torch.tensor(segment_ids, dtype=torch.long),
            attention_mask=torch.tensor(token_ids != 0, dtype=torch.long),
        ).last_hidden_state.numpy()
    real = token_ids != 0
    for loaded in (model, from_google):
        got = to_numpy(loaded([token_ids, segment_ids]))
        assert np.abs(got[real] - expected[real]).max() <= 1e-4


def test_apply_on_other_inputs_is_the_same_computation(bert):
    """A second tower through the same layers (bert4keras siamese scripts) computes
    what the built model computes, padding included."""
    token_in = keras.Input((None,), dtype="int32")
    segment_in = keras.Input((None,), dtype="int32")
    x = bert.apply_embeddings([token_in, segment_in])
    for index in range(bert.num_hidden_layers):
        x = bert.apply_main_layers(x, index)
    x = bert.apply_final_layers(x)
    tower = keras.Model([token_in, segment_in], x)
    inputs = list(sentences(pad_to=10))
    np.testing.assert_allclose(to_numpy(tower(inputs)), to_numpy(bert.model(inputs)),
                               atol=1e-6)
    assert keras_mask(x) is not None


# ----------------------------------------------------------------- 6. forfit idioms


class Batches(DataGenerator):
    """bert4keras-style generator: ``[token_ids, mask]`` and labels in a chosen form."""

    labels = "sparse"

    def __iter__(self, random=False):
        ids, labels = [], []
        for is_end, (tokens, label) in self.sample(random):
            ids.append(tokens)
            labels.append([label])
            if len(ids) == self.batch_size or is_end:
                token_ids = sequence_padding(ids)
                mask = (token_ids > 0).astype("int32")  # int ids fed to a float input
                if self.labels == "none":
                    yield [token_ids, mask], None
                elif self.labels == "float64":
                    yield [token_ids, mask], np.asarray(labels, dtype="float64")
                else:
                    yield [token_ids, mask], sequence_padding(labels)  # [batch, 1]
                ids, labels = [], []


class AddedLoss(keras.layers.Layer):
    """The "loss as a layer" pattern: ``fit(x, None)`` trains on ``add_loss``."""

    def call(self, probs):
        self.add_loss(-keras.ops.mean(keras.ops.log(probs[:, 0] + 1e-6)))
        return probs


@pytest.mark.parametrize("labels", ["sparse", "float64", "none"])
def test_forfit_accepts_the_bert4keras_idioms(labels):
    data = [(list(range(1, 2 + i % 5)), i % 2) for i in range(12)]
    gen = Batches(data, batch_size=4)
    gen.labels = labels
    inputs = next(gen.forfit())[0]  # peeking works on every backend
    assert len(inputs) == 2 and np.asarray(inputs[0]).shape[0] == 4
    token_ids = keras.Input((None,), dtype="int32")
    mask = keras.Input((None,))  # float, fed int arrays
    h = keras.layers.Embedding(10, 4)(token_ids) * mask[..., None]
    probs = keras.layers.Dense(2, activation="softmax")(keras.ops.sum(h, axis=1))
    if labels == "none":
        model = keras.Model([token_ids, mask], AddedLoss()(probs))
        model.compile(optimizer="adam")
    else:
        model = keras.Model([token_ids, mask], probs)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
