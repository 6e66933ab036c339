"""T5 v1.0 / v1.1 / mT5 parity with Hugging Face transformers on the same weights.

The oracle is ``transformers`` (torch, float32, eval mode) on the checkpoint kerasformer
loads: tiny random ``T5ForConditionalGeneration`` (v1.0: ``feed_forward_proj="relu"``,
tied head; v1.1: ``"gated-gelu"``, untied ``lm_head``) and ``MT5ForConditionalGeneration``
(untied), d_model 32, 2 + 2 blocks, 4 heads, d_kv 8, vocabulary 100, saved with
``save_pretrained``. Every RMSNorm weight is perturbed and the relative bias tables are
drawn at a scale that makes positions matter; ``relative_attention_max_distance=20`` with
sequences of 22-24 tokens puts the relative distances in the exact, logarithmic and
clamped bucket ranges of both the encoder (bidirectional) and the decoder (causal).

Checked: logits and encoder states against transformers with a padded encoder batch; the
standalone ``_encoder`` / ``_decoder`` models; cached decoding (``init_caches`` /
``call_with_cache`` step by step, also compiled) against the full forward; saving back to
HF safetensors (transformers reloads it) and to a Google TF checkpoint; a Google-name
checkpoint written from the HF weights by an independent table in this file.

Tolerances are absolute max |Δ| in float32 and stated in each assert. Runs under
``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``.
"""
import os
import shutil

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model
from kerasformer.checkpoints import SafetensorsReader, TFCheckpointReader, save_tf_checkpoint
from kerasformer.ops import causal_mask

VOCAB = 100
HF_CONFIG = dict(
    vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
    num_heads=4, relative_attention_num_buckets=32, relative_attention_max_distance=20,
    dropout_rate=0.0,
)
# kind -> (kerasformer model name, transformers config/model class names, config extras)
KINDS = {
    "v1.0": ("t5", "T5Config", "T5ForConditionalGeneration", dict(feed_forward_proj="relu")),
    "v1.1": ("t5.1.1", "T5Config", "T5ForConditionalGeneration",
             dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
    "mt5": ("mt5.1.1", "MT5Config", "MT5ForConditionalGeneration",
            dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False)),
}


def report(what, value):
    """Print an observed max |Δ| (shown with ``pytest -rP``)."""
    print(f"max|Δ| [{keras.backend.backend()}] {what}: {value:.3g}")
    return value


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def max_abs(a, b, where=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = np.abs(a - b)
    return float((diff[where] if where is not None else diff).max())


def weights_by_path(model):
    return {w.path: np.asarray(w.numpy()) for w in model.weights}


# ============================================================================ oracle


@pytest.fixture(scope="module")
def inputs():
    """``(encoder_ids [3, 24], decoder_ids [3, 22])`` int32: the encoder batch is
    right-padded with 0 to lengths 24, 15, 6; decoder rows start with the start token 0."""
    rng = np.random.RandomState(0)
    enc = rng.randint(2, VOCAB, size=(3, 24)).astype("int32")
    enc[1, 15:] = 0
    enc[2, 6:] = 0
    dec = rng.randint(2, VOCAB, size=(3, 22)).astype("int32")
    dec[:, 0] = 0
    return enc, dec


class Reference:
    """One saved random HF model and its outputs on `inputs`."""

    def __init__(self, kind, path, torch, transformers, randomize_parameters, inputs):
        model_name, config_class, model_class, extra = KINDS[kind]
        self.kind, self.path, self.model_name = kind, path, model_name
        self.config_path = os.path.join(path, "config.json")
        config = getattr(transformers, config_class)(**HF_CONFIG, **extra)
        torch.manual_seed({"v1.0": 0, "v1.1": 1, "mt5": 2}[kind])
        hf = getattr(transformers, model_class)(config)
        randomize_parameters(hf, scale=0.3)
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if "relative_attention_bias" in name:  # N(0, d_model**-0.5) by default
                    p.copy_(torch.randn_like(p))
            if kind != "v1.0":
                # transformers >= 5 ties every T5/mT5 head at construction; a released
                # v1.1/mT5 checkpoint has its own lm_head, which transformers keeps.
                hf.lm_head.weight = torch.nn.Parameter(0.3 * torch.randn(VOCAB, 32))
        hf.eval()
        hf.save_pretrained(path)
        self.hf = hf
        self.tied = kind == "v1.0"
        self.logits, self.encoder_states = self.run(hf, torch, *inputs)

    @staticmethod
    def run(hf, torch, enc, dec):
        with torch.no_grad():
            out = hf(input_ids=torch.tensor(enc, dtype=torch.long),
                     attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                     decoder_input_ids=torch.tensor(dec, dtype=torch.long))
        return out.logits.numpy(), out.encoder_last_hidden_state.numpy()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, torch, transformers, randomize_parameters, inputs):
    """``reference(kind) -> Reference`` (built once per kind)."""
    made = {}

    def get(kind):
        if kind not in made:
            path = str(tmp_path_factory.mktemp(f"hf_{kind}"))
            made[kind] = Reference(kind, path, torch, transformers, randomize_parameters,
                                   inputs)
        return made[kind]

    return get


@pytest.fixture(scope="module")
def builder(reference):
    """``builder(kind) -> T5 builder`` with logits (``with_lm="linear"``) loaded from the
    HF directory (built once per kind)."""
    made = {}

    def get(kind):
        if kind not in made:
            ref = reference(kind)
            made[kind] = build_transformer_model(
                ref.config_path, ref.path, model=ref.model_name, with_lm="linear",
                return_keras_model=False,
            )
        return made[kind]

    return get


def test_relative_position_bucket_matches_transformers(torch, transformers):
    from transformers.models.t5.modeling_t5 import T5Attention

    from kerasformer.layers.relative_position import t5_relative_position_bucket

    relative = np.arange(-400, 401, dtype="int32")
    for num_buckets, max_distance in [(32, 128), (32, 20), (8, 5)]:
        for bidirectional in (True, False):
            expected = T5Attention._relative_position_bucket(
                torch.tensor(relative, dtype=torch.long), bidirectional=bidirectional,
                num_buckets=num_buckets, max_distance=max_distance).numpy()
            got = to_numpy(t5_relative_position_bucket(relative, bidirectional, num_buckets,
                                                       max_distance))
            np.testing.assert_array_equal(got, expected, err_msg=f"{num_buckets, max_distance}")


# ============================================================================ forward


@pytest.mark.parametrize("kind", list(KINDS))
def test_logits_match_transformers(kind, reference, builder, inputs):
    ref, t5 = reference(kind), builder(kind)
    # The oracle is sane: logits of a real spread that depend on the position.
    assert ref.logits.std() > 0.5
    assert np.abs(np.diff(ref.logits, axis=1)).mean() > 0.1
    if kind != "v1.0":
        assert not np.allclose(ref.hf.lm_head.weight.detach().numpy(),
                               ref.hf.shared.weight.detach().numpy())
    assert [i.name for i in t5.model.inputs] == ["Encoder-Input-Token", "Decoder-Input-Token"]
    got = to_numpy(t5.model(list(inputs)))
    assert got.shape == (3, 22, VOCAB)
    delta = report(f"T5 {kind} logits, padded encoder batch", max_abs(got, ref.logits))
    assert delta <= 1e-5


def test_v10_probabilities_and_layer_names(reference, inputs):
    ref = reference("v1.0")
    model = build_transformer_model(ref.config_path, ref.path, model="t5")  # softmax
    probs = to_numpy(model(list(inputs)))
    expected = np.exp(ref.logits - ref.logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    delta = report("T5 v1.0 softmax probabilities", max_abs(probs, expected))
    assert delta <= 1e-6
    names = {layer.name for layer in model.layers}
    for name in ["Embedding-Token", "Encoder-Embedding-Relative-Position",
                 "Encoder-Transformer-1-MultiHeadSelfAttention-Norm",
                 "Encoder-Transformer-0-FeedForward", "Encoder-Output-Norm",
                 "Decoder-Embedding-Relative-Position",
                 "Decoder-Transformer-1-MultiHeadCrossAttention",
                 "Decoder-Output-Norm", "Decoder-Output-Scale"]:
        assert name in names, name
    assert "Decoder-Output-LM" not in names  # tied to Embedding-Token


@pytest.mark.parametrize("kind", list(KINDS))
def test_encoder_model_matches_transformers(kind, reference, builder, inputs):
    """``<model>_encoder`` loads the encoder half of the full checkpoint (the decoder
    tensors are skipped) and equals transformers' encoder on the non-padding tokens."""
    ref = reference(kind)
    enc, _ = inputs
    nonpad = enc != 0
    encoder = build_transformer_model(ref.config_path, ref.path,
                                      model=f"{ref.model_name}_encoder")
    states = to_numpy(encoder(enc))
    assert states.shape == (3, 24, 32)
    delta = report(f"T5 {kind} encoder states (non-pad)",
                   max_abs(states, ref.encoder_states, nonpad))
    assert delta <= 1e-5
    assert np.all(states[~nonpad] == 0)  # Encoder-Output-Masked
    # the joint model's encoder is the same computation on the same weights
    joint = to_numpy(builder(kind).encoder(enc))
    assert max_abs(joint, states) == 0.0


def test_decoder_model_on_encoder_output(reference, builder, inputs):
    """``t5.1.1_decoder``: inputs [encoder output, decoder ids]; the padding of the
    context is read off its all-zero rows."""
    ref, t5 = reference("v1.1"), builder("v1.1")
    enc, dec = inputs
    context = to_numpy(t5.encoder(enc))
    decoder = build_transformer_model(ref.config_path, ref.path, model="t5.1.1_decoder",
                                      with_lm="linear")
    assert [i.name for i in decoder.inputs] == ["Input-Context", "Decoder-Input-Token"]
    logits = to_numpy(decoder([context, dec]))
    delta = report("T5 v1.1 standalone decoder logits", max_abs(logits, ref.logits))
    assert delta <= 1e-5


# ============================================================================ caches


def cached_logits(t5, enc, dec, max_length, steps, step_fn=None):
    """Decode `dec` through ``init_caches`` / ``call_with_cache`` in the (start, stop)
    chunks of `steps`; returns the concatenated logits."""
    context = t5.encoder(enc)
    context_mask = (enc != 0)[:, None, None, :]
    caches = t5.init_caches(enc.shape[0], max_length, context)
    outputs = []
    for start, stop in steps:
        mask = causal_mask(stop - start, max_length, offset=start)
        call = step_fn or t5.call_with_cache
        logits, caches = call([dec[:, start:stop]], caches, start, mask,
                              context_mask=context_mask)
        outputs.append(to_numpy(logits))
    return np.concatenate(outputs, axis=1), caches


@pytest.mark.parametrize("kind", ["v1.0", "v1.1"])
def test_cached_decoding_equals_full_forward(kind, reference, builder, inputs):
    ref, t5 = reference(kind), builder(kind)
    enc, dec = inputs
    full = to_numpy(t5.model([enc, dec]))
    steps = [(0, 5)] + [(i, i + 1) for i in range(5, 22)]
    max_length = 24
    got, caches = cached_logits(t5, enc, dec, max_length, steps)
    assert sorted(caches) == ["cross-0", "cross-1", "self-0", "self-1"]
    assert tuple(caches["self-0"][0].shape) == (3, max_length, 4, 8)
    assert tuple(caches["cross-1"][1].shape) == (3, 24, 4, 8)
    delta = report(f"T5 {kind} cached decoding vs full decoder forward", max_abs(got, full))
    assert delta <= 1e-5
    assert max_abs(got, ref.logits) <= 1e-5


def test_cached_step_compiles(builder, inputs):
    """Single-token ``call_with_cache`` steps under ``jax.jit`` / ``tf.function`` (one
    trace, cache_index traced) give the eager result."""
    t5 = builder("v1.1")
    enc, dec = inputs
    max_length = 24  # the shapes of test_cached_decoding_equals_full_forward

    def step(tokens, caches, index, mask, context_mask):
        return t5.call_with_cache([tokens], caches, index, mask, context_mask=context_mask)

    if keras.backend.backend() == "jax":
        import jax

        compiled = jax.jit(step)
    else:
        import tensorflow as tf

        compiled = tf.function(step, jit_compile=True)

    steps = [(0, 5)] + [(i, i + 1) for i in range(5, 9)]
    eager, _ = cached_logits(t5, enc, dec, max_length, steps)
    context_mask = (enc != 0)[:, None, None, :]
    caches = t5.init_caches(3, max_length, t5.encoder(enc))
    logits, caches = step(dec[:, :5], caches, 0, causal_mask(5, max_length), context_mask)
    outputs = [to_numpy(logits)]
    for i in range(5, 9):
        mask = to_numpy(causal_mask(1, max_length, offset=i))
        logits, caches = compiled(dec[:, i:i + 1], caches, np.int32(i), mask, context_mask)
        outputs.append(to_numpy(logits))
    delta = report("T5 v1.1 compiled cached steps vs eager",
                   max_abs(np.concatenate(outputs, axis=1), eager))
    assert delta <= 1e-5


# ============================================================================ checkpoints


@pytest.mark.parametrize("kind", ["v1.0", "v1.1"])
def test_save_hf_safetensors_reloads_in_transformers(kind, reference, builder, inputs,
                                                     tmp_path, transformers, torch):
    ref, t5 = reference(kind), builder(kind)
    folder = tmp_path / "hf_saved"
    folder.mkdir()
    target = str(folder / "model.safetensors")
    t5.save_weights_as_checkpoint(target, format="hf")
    shutil.copy(ref.config_path, folder / "config.json")
    with SafetensorsReader(target) as reader:
        names = set(reader.names())
    assert "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight" in names
    assert "decoder.block.1.layer.2.DenseReluDense.wo.weight" in names
    assert ("lm_head.weight" in names) == (kind != "v1.0")
    hf_class = type(ref.hf)
    hf, info = hf_class.from_pretrained(str(folder), output_loading_info=True)
    hf.eval()
    assert not info["unexpected_keys"] and not info["mismatched_keys"], info
    # a tied model has no lm_head.weight to load: transformers ties it to shared
    assert set(info["missing_keys"]) <= ({"lm_head.weight"} if kind == "v1.0" else set()), info
    logits, _ = Reference.run(hf, torch, *inputs)
    delta = report(f"transformers on kerasformer's T5 {kind} safetensors",
                   max_abs(logits, ref.logits))
    assert delta <= 1e-6


def google_tensors_from_hf(state_dict, v11):
    """Hand-written HF T5 -> Mesh TensorFlow name table (bert4keras ``T5_Base``
    mapping), independent of kerasformer's: Linear weights are [out, in] in torch and
    [in, out] in TF; the relative bias is stored [heads, buckets]; v1.1 names its norms
    ``rms_norm`` and stores an untied head ``decoder/logits/kernel`` [d_model, vocab]."""
    sd = {k: np.asarray(v) for k, v in state_dict.items()}
    used, out = set(), {}

    def take(name):
        used.add(name)
        return sd[name]

    norm = "rms_norm" if v11 else "layer_norm"
    out["shared/embedding"] = take("shared.weight")
    for stack, layers in (("encoder", 2), ("decoder", 2)):
        out[f"{stack}/block_000/layer_000/SelfAttention/relative_attention_bias"] = \
            take(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight").T
        final = f"{stack}/rms_norm/scale" if v11 else f"{stack}/final_layer_norm/scale"
        out[final] = take(f"{stack}.final_layer_norm.weight")
        for i in range(layers):
            g, h = f"{stack}/block_{i:03d}", f"{stack}.block.{i}"
            modules = ["SelfAttention"] + (["EncDecAttention"] if stack == "decoder" else [])
            for j, module in enumerate(modules):
                for w in "qkvo":
                    out[f"{g}/layer_{j:03d}/{module}/{w}"] = \
                        take(f"{h}.layer.{j}.{module}.{w}.weight").T
                out[f"{g}/layer_{j:03d}/{norm}/scale"] = take(f"{h}.layer.{j}.layer_norm.weight")
            j = len(modules)
            for w in (["wi_0", "wi_1", "wo"] if v11 else ["wi", "wo"]):
                out[f"{g}/layer_{j:03d}/DenseReluDense/{w}/kernel"] = \
                    take(f"{h}.layer.{j}.DenseReluDense.{w}.weight").T
            out[f"{g}/layer_{j:03d}/{norm}/scale"] = take(f"{h}.layer.{j}.layer_norm.weight")
    if v11:
        out["decoder/logits/kernel"] = take("lm_head.weight").T
    copies = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
    assert set(sd) - used <= copies, sorted(set(sd) - used)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


@pytest.mark.parametrize("kind", ["v1.0", "v1.1"])
def test_google_checkpoint_same_outputs(kind, reference, builder, inputs, tmp_path):
    ref, t5 = reference(kind), builder(kind)
    tensors = google_tensors_from_hf(ref.hf.state_dict(), v11=kind != "v1.0")
    prefix = str(tmp_path / "google" / "model.ckpt")
    # Mesh TF checkpoints carry bookkeeping and Adafactor slots: skipped by the loader.
    extras = {"global_step": np.array(1000, np.int64),
              "encoder/block_000/layer_000/SelfAttention/q_slot_vc": np.zeros(32, "float32")}
    save_tf_checkpoint({**tensors, **extras}, prefix)
    loaded = build_transformer_model(ref.config_path, prefix, model=ref.model_name,
                                     with_lm="linear", return_keras_model=False)
    mine, theirs = weights_by_path(loaded.model), weights_by_path(t5.model)
    assert mine.keys() == theirs.keys()
    for path in mine:
        np.testing.assert_array_equal(mine[path], theirs[path], err_msg=path)
    got = to_numpy(loaded.model(list(inputs)))
    delta = report(f"T5 {kind} Google TF checkpoint vs HF-loaded logits",
                   max_abs(got, to_numpy(t5.model(list(inputs)))))
    assert delta == 0.0
    # and saving back writes exactly the hand-made table
    saved = str(tmp_path / "saved" / "model.ckpt")
    t5.save_weights_as_checkpoint(saved, format="tf")
    with TFCheckpointReader(saved) as reader:
        assert set(reader.names()) == set(tensors)
        for name, array in tensors.items():
            np.testing.assert_array_equal(reader.get(name), array, err_msg=name)


def test_keep_tokens_untied_head(reference, builder, inputs):
    ref, t5 = reference("v1.1"), builder("v1.1")
    keep = [0, 1, 7, 50, 3, 99, 12, 64, 20, 5]
    small = build_transformer_model(ref.config_path, ref.path, model="t5.1.1",
                                    with_lm="linear", keep_tokens=keep)
    # the same text in new ids (indices into keep; 0 stays padding / start token), in
    # the shapes of `inputs` so the eager ops are reused
    rng = np.random.RandomState(3)
    enc_new = rng.randint(2, len(keep), size=inputs[0].shape).astype("int32")
    enc_new[inputs[0] == 0] = 0
    dec_new = rng.randint(2, len(keep), size=inputs[1].shape).astype("int32")
    dec_new[:, 0] = 0
    table = np.asarray(keep, "int32")
    got = to_numpy(small([enc_new, dec_new]))
    expected = to_numpy(t5.model([table[enc_new], table[dec_new]]))[..., keep]
    delta = report("T5 v1.1 keep_tokens logits vs full model's kept columns",
                   max_abs(got, expected))
    assert got.shape == (3, 22, len(keep))
    assert delta <= 1e-5


def test_tied_head_refuses_a_distinct_lm_head(reference):
    """Loading a v1.1 checkpoint (own lm_head) as v1.0 (head tied to the embedding)
    would drop the head silently; it is an error naming the fix."""
    ref = reference("v1.1")
    with pytest.raises(ValueError, match="t5.1.1"):
        build_transformer_model(ref.config_path, ref.path, model="t5")


def test_lm_application_is_rejected():
    with pytest.raises(ValueError, match="application"):
        build_transformer_model(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                num_attention_heads=4, intermediate_size=48, model="t5",
                                application="lm")
