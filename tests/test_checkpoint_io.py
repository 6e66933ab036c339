"""Format layer of checkpoint I/O: readers, format detection and writers.

Oracles are the real libraries: a tiny ``transformers.BertModel`` saved by
``save_pretrained`` / ``torch.save`` (its ``state_dict`` is the truth), and
``tf.train.load_checkpoint`` for TF checkpoints. Backend-independent code:
passes under KERAS_BACKEND=jax and KERAS_BACKEND=tensorflow.
"""
import json
import os
import shutil

import numpy as np
import pytest

from kerasformer.checkpoints import (
    SafetensorsReader,
    ShardedReader,
    TFCheckpointReader,
    TorchBinReader,
    find_config,
    open_checkpoint,
    save_safetensors,
    save_tf_checkpoint,
)

# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def bert(torch):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
    )
    model = transformers.BertModel(config).eval()
    return model


@pytest.fixture(scope="module")
def state(bert):
    """The oracle: name -> float32 numpy array."""
    return {k: v.detach().numpy().copy() for k, v in bert.state_dict().items()}


@pytest.fixture(scope="module")
def hf_dirs(bert, torch, tmp_path_factory):
    """Directories of the same model saved in the supported HF layouts."""
    root = tmp_path_factory.mktemp("hf")
    dirs = {}
    dirs["safetensors"] = root / "safetensors"
    bert.save_pretrained(dirs["safetensors"])

    # transformers 5 ignores safe_serialization=False (always safetensors),
    # so the PyTorch .bin is written the way older transformers did.
    dirs["bin"] = root / "bin"
    dirs["bin"].mkdir()
    shutil.copy(dirs["safetensors"] / "config.json", dirs["bin"])
    torch.save(bert.state_dict(), dirs["bin"] / "pytorch_model.bin")

    dirs["sharded"] = root / "sharded"
    bert.save_pretrained(dirs["sharded"], max_shard_size="20KB")

    # Sharded .bin, in the layout of pytorch_model.bin.index.json.
    dirs["sharded_bin"] = root / "sharded_bin"
    dirs["sharded_bin"].mkdir()
    sd = bert.state_dict()
    names = list(sd)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        shard = f"pytorch_model-{i + 1:05d}-of-00002.bin"
        torch.save({k: sd[k] for k in part}, dirs["sharded_bin"] / shard)
        weight_map.update({k: shard for k in part})
    (dirs["sharded_bin"] / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    return dirs


def assert_reader_matches(reader, state):
    assert reader.names() == sorted(state)
    assert len(reader) == len(state)
    assert list(reader) == sorted(state)
    for name, expected in state.items():
        assert name in reader
        assert reader.shape(name) == expected.shape
        got = reader.get(name)
        assert isinstance(got, np.ndarray)
        assert got.dtype == expected.dtype, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


# --------------------------------------------------------------------------
# Hugging Face formats against the transformers oracle


def test_safetensors_dir_and_file(hf_dirs, state):
    d = hf_dirs["safetensors"]
    assert sorted(os.listdir(d)) == ["config.json", "model.safetensors"]
    for path in (d, str(d), d / "model.safetensors"):
        with open_checkpoint(path) as reader:
            assert isinstance(reader, SafetensorsReader)
            assert reader.format == "safetensors"
            assert reader.path.endswith("model.safetensors")
            assert reader.metadata.get("format") == "pt"
            assert reader.dtype("pooler.dense.weight") == "F32"
            assert_reader_matches(reader, state)


def test_torch_bin_dir_and_files(hf_dirs, state, tmp_path):
    d = hf_dirs["bin"]
    for path in (d, d / "pytorch_model.bin"):
        with open_checkpoint(path) as reader:
            assert isinstance(reader, TorchBinReader)
            assert reader.format == "torch"
            assert_reader_matches(reader, state)
    for ext in (".pt", ".pth"):
        other = tmp_path / f"weights{ext}"
        shutil.copy(d / "pytorch_model.bin", other)
        with open_checkpoint(other) as reader:
            assert isinstance(reader, TorchBinReader)
            assert_reader_matches(reader, state)


def test_sharded_safetensors(hf_dirs, state):
    d = hf_dirs["sharded"]
    shards = [f for f in os.listdir(d) if f.endswith(".safetensors")]
    assert len(shards) > 1, "max_shard_size did not force several shards"
    for path in (d, d / "model.safetensors.index.json"):
        with open_checkpoint(path) as reader:
            assert isinstance(reader, ShardedReader)
            assert reader.format == "safetensors"
            assert len(reader.shard_files()) == len(shards)
            assert_reader_matches(reader, state)


def test_sharded_torch_bin(hf_dirs, state):
    d = hf_dirs["sharded_bin"]
    for path in (d, d / "pytorch_model.bin.index.json"):
        with open_checkpoint(path) as reader:
            assert isinstance(reader, ShardedReader)
            assert reader.format == "torch"
            assert_reader_matches(reader, state)


def test_sharded_shards_open_lazily(hf_dirs):
    with open_checkpoint(hf_dirs["sharded"]) as reader:
        assert reader._shards == {}
        reader.names()
        assert reader._shards == {}
        reader.get("pooler.dense.bias")
        assert len(reader._shards) == 1
    assert reader._shards == {}


def test_bf16_safetensors(bert, torch, tmp_path):
    import copy

    model = copy.deepcopy(bert).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    expected = {
        k: v.to(torch.float32).numpy() for k, v in model.state_dict().items()
    }
    with open_checkpoint(tmp_path) as reader:
        assert reader.dtype("pooler.dense.weight") == "BF16"
        assert_reader_matches(reader, expected)
    # The values really are bf16-rounded, not the original float32 ones.
    w = expected["pooler.dense.weight"]
    assert not np.array_equal(w, bert.state_dict()["pooler.dense.weight"].numpy())


def test_half_precision_torch_bin(bert, torch, tmp_path):
    for dtype in (torch.bfloat16, torch.float16):
        sd = {k: v.to(dtype) for k, v in bert.state_dict().items()}
        path = tmp_path / f"{dtype}.bin".replace("torch.", "")
        torch.save(sd, path)
        expected = {k: v.to(torch.float32).numpy() for k, v in sd.items()}
        with open_checkpoint(path) as reader:
            assert_reader_matches(reader, expected)


def test_float16_safetensors_and_other_dtypes(tmp_path):
    tensors = {
        "h": np.arange(6, dtype=np.float16).reshape(2, 3) / 7,
        "i": np.arange(5, dtype=np.int64),
        "b": np.array([True, False]),
        "d": np.linspace(0, 1, 4),
        "s": np.array(2.5, dtype=np.float32),
    }
    save_safetensors(tensors, tmp_path / "x.safetensors")
    with open_checkpoint(tmp_path / "x.safetensors") as reader:
        got = reader.get("h")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, tensors["h"].astype(np.float32))
        for name in ("i", "b", "d", "s"):
            assert reader.get(name).dtype == tensors[name].dtype
            np.testing.assert_array_equal(reader.get(name), tensors[name])
        assert reader.shape("s") == ()


def test_nested_torch_state_dict(bert, torch, state, tmp_path):
    path = tmp_path / "train.pt"
    torch.save({"state_dict": bert.state_dict(), "epoch": 3}, path)
    with open_checkpoint(path) as reader:
        assert_reader_matches(reader, state)
    ambiguous = tmp_path / "two.pt"
    torch.save({"model": bert.state_dict(), "state_dict": bert.state_dict(),
                "epoch": 3}, ambiguous)
    with pytest.raises(ValueError, match="not a flat PyTorch state dict"):
        open_checkpoint(ambiguous)


def test_directory_priority(hf_dirs, tmp_path):
    d = tmp_path / "both"
    shutil.copytree(hf_dirs["bin"], d)
    shutil.copy(hf_dirs["safetensors"] / "model.safetensors", d)
    with open_checkpoint(d) as reader:
        assert isinstance(reader, SafetensorsReader)


# --------------------------------------------------------------------------
# Writers


def test_save_safetensors_round_trip(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((4, 6)).astype(np.float32)
    tensors = {
        "a.weight": kernel.T,  # non-contiguous view
        "a.bias": rng.standard_normal(6).astype(np.float32),
        "ids": np.arange(3, dtype=np.int32),
        "bf": rng.standard_normal((2, 2)).astype(ml_dtypes.bfloat16),
    }
    path = tmp_path / "sub" / "dir" / "w.safetensors"
    assert save_safetensors(tensors, path) == str(path)
    with open_checkpoint(path) as reader:
        assert reader.metadata == {"format": "pt"}
        assert reader.dtype("bf") == "BF16"
        np.testing.assert_array_equal(reader.get("a.weight"), kernel.T)
        np.testing.assert_array_equal(reader.get("a.bias"), tensors["a.bias"])
        np.testing.assert_array_equal(reader.get("ids"), tensors["ids"])
        np.testing.assert_array_equal(
            reader.get("bf"), tensors["bf"].astype(np.float32)
        )
    save_safetensors(tensors, path, metadata={"format": "np", "k": "v"})
    assert SafetensorsReader(path).metadata == {"format": "np", "k": "v"}
    with pytest.raises(TypeError, match="metadata"):
        save_safetensors(tensors, path, metadata={"n": 1})
    with pytest.raises(ValueError, match="no tensors"):
        save_safetensors({}, path)


def test_save_safetensors_loads_in_transformers(
    bert, state, hf_dirs, torch, tmp_path
):
    transformers = pytest.importorskip("transformers")
    bert.config.save_pretrained(tmp_path)
    save_safetensors(state, tmp_path / "model.safetensors")
    loaded = transformers.BertModel.from_pretrained(tmp_path).eval()
    for k, v in loaded.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k], err_msg=k)
    # The weights above are exact; forward passes are compared to float
    # rounding only, because CPU kernels may split reductions differently
    # between runs (seen once: 2e-8 differences between two identical
    # models under machine load). Also check against transformers' own
    # save/reload of the same model.
    reference = transformers.BertModel.from_pretrained(
        hf_dirs["safetensors"]
    ).eval()
    ids = torch.tensor([[2, 7, 30, 98, 1, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    with torch.no_grad():
        got = loaded(input_ids=ids, attention_mask=mask)
        for oracle in (reference, bert):
            want = oracle(input_ids=ids, attention_mask=mask)
            for key in ("last_hidden_state", "pooler_output"):
                np.testing.assert_allclose(
                    got[key].numpy(), want[key].numpy(), rtol=1e-5, atol=1e-6
                )


def _random_tf_tensors(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "bert/embeddings/word_embeddings": rng.standard_normal((11, 8)).astype(
            np.float32
        ),
        "bert/encoder/layer_0/attention/self/query/kernel": rng.standard_normal(
            (8, 8)
        ).astype(np.float32),
        "bert/encoder/layer_0/attention/self/query/bias": rng.standard_normal(
            8
        ).astype(np.float32),
        "bert/pooler/dense/kernel": rng.standard_normal((8, 8)).T,  # f64 view
        "global_step": np.array(1000, dtype=np.int64),
        "half": rng.standard_normal((3,)).astype(np.float16),
    }


def test_save_tf_checkpoint_round_trip(tf, tmp_path):
    tensors = _random_tf_tensors()
    prefix = str(tmp_path / "new" / "bert_model.ckpt")
    assert save_tf_checkpoint(tensors, prefix) == prefix
    assert sorted(os.listdir(tmp_path / "new")) == [
        "bert_model.ckpt.data-00000-of-00001",
        "bert_model.ckpt.index",
    ]
    # Oracle: TensorFlow itself, with the plain Google-style names.
    tf_reader = tf.train.load_checkpoint(prefix)
    assert sorted(tf_reader.get_variable_to_shape_map()) == sorted(tensors)
    for name, value in tensors.items():
        got = tf_reader.get_tensor(name)
        assert got.dtype == value.dtype, name
        np.testing.assert_array_equal(got, value)
    # Our reader, from the prefix and from either of its files.
    for path in (prefix, prefix + ".index",
                 prefix + ".data-00000-of-00001"):
        with open_checkpoint(path) as reader:
            assert isinstance(reader, TFCheckpointReader)
            assert reader.format == "tf"
            assert reader.path == prefix
            assert reader.names() == sorted(tensors)
            for name, value in tensors.items():
                assert reader.shape(name) == value.shape
                got = reader.get(name)
                if value.dtype == np.float16:
                    assert got.dtype == np.float32
                    value = value.astype(np.float32)
                assert got.dtype == value.dtype
                np.testing.assert_array_equal(got, value)


def test_tf_bfloat16(tf, tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    value = np.random.default_rng(1).standard_normal((4, 3)).astype(
        ml_dtypes.bfloat16
    )
    prefix = str(tmp_path / "m.ckpt")
    save_tf_checkpoint({"w": value}, prefix)
    assert tf.train.load_checkpoint(prefix).get_variable_to_dtype_map() == {
        "w": tf.bfloat16
    }
    with TFCheckpointReader(prefix) as reader:
        got = reader.get("w")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, value.astype(np.float32))


def test_tf_directory_detection(tf, tmp_path):
    # Single prefix, no 'checkpoint' state file (Google's BERT release).
    single = tmp_path / "google"
    save_tf_checkpoint(_random_tf_tensors(), str(single / "bert_model.ckpt"))
    (single / "bert_config.json").write_text("{}")
    (single / "vocab.txt").write_text("[PAD]\n")
    with open_checkpoint(single) as reader:
        assert reader.path == str(single / "bert_model.ckpt")
    assert find_config(single) == str(single / "bert_config.json")
    assert find_config(single / "bert_model.ckpt") == str(
        single / "bert_config.json"
    )

    # Several prefixes: the state file picks one.
    multi = tmp_path / "train"
    save_tf_checkpoint({"x": np.zeros(1, np.float32)}, str(multi / "model.ckpt-1"))
    save_tf_checkpoint({"x": np.ones(1, np.float32)}, str(multi / "model.ckpt-2"))
    state_file = multi / "checkpoint"
    state_file.write_text(
        'model_checkpoint_path: "model.ckpt-1"\n'
        'all_model_checkpoint_paths: "model.ckpt-1"\n'
        'all_model_checkpoint_paths: "model.ckpt-2"\n'
    )
    with open_checkpoint(multi) as reader:
        assert reader.path == str(multi / "model.ckpt-1")
        assert reader.get("x")[0] == 0
    # An absolute path recorded on another machine: fall back to its basename.
    state_file.write_text(
        'model_checkpoint_path: "/elsewhere/run/model.ckpt-2"\n'
    )
    with open_checkpoint(multi) as reader:
        assert reader.path == str(multi / "model.ckpt-2")
        assert reader.get("x")[0] == 1
    # No usable state file: ambiguous.
    state_file.unlink()
    with pytest.raises(ValueError) as err:
        open_checkpoint(multi)
    assert "model.ckpt-1" in str(err.value) and "model.ckpt-2" in str(err.value)


# --------------------------------------------------------------------------
# Errors and small API


def test_missing_path(tmp_path):
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match="nope"):
        open_checkpoint(missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        open_checkpoint(tmp_path / "nope")


def test_empty_directory(tmp_path):
    (tmp_path / "tf_model.h5").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as err:
        open_checkpoint(tmp_path)
    msg = str(err.value)
    for looked_for in ("model.safetensors", "pytorch_model.bin",
                       "model.safetensors.index.json", "checkpoint", "index"):
        assert looked_for in msg
    assert str(tmp_path) in msg and "tf_model.h5" in msg


def test_unknown_extension(tmp_path):
    path = tmp_path / "weights.h5"
    path.write_bytes(b"\x89HDF")
    with pytest.raises(ValueError) as err:
        open_checkpoint(path)
    assert ".h5" in str(err.value) and "safetensors" in str(err.value)


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ValueError, match="not a safetensors file"):
        open_checkpoint(path)


def test_missing_tensor_key_error(hf_dirs, tf, tmp_path):
    prefix = str(tmp_path / "m.ckpt")
    save_tf_checkpoint({"x": np.zeros(2, np.float32)}, prefix)
    for path in (hf_dirs["safetensors"], hf_dirs["bin"], hf_dirs["sharded"],
                 prefix):
        with open_checkpoint(path) as reader:
            assert "no/such/tensor" not in reader
            for method in (reader.get, reader.shape):
                with pytest.raises(KeyError) as err:
                    method("no/such/tensor")
                assert "no/such/tensor" in str(err.value)
                assert reader.path in str(err.value)


def test_sharded_missing_shard(hf_dirs, tmp_path):
    d = tmp_path / "partial"
    shutil.copytree(hf_dirs["sharded"], d)
    victim = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))[0]
    os.remove(d / victim)
    with pytest.raises(FileNotFoundError, match=victim):
        open_checkpoint(d)


def test_find_config(hf_dirs, tmp_path):
    d = hf_dirs["safetensors"]
    assert find_config(d) == str(d / "config.json")
    assert find_config(d / "model.safetensors") == str(d / "config.json")
    both = tmp_path / "both"
    both.mkdir()
    (both / "bert_config.json").write_text("{}")
    assert find_config(both) == str(both / "bert_config.json")
    (both / "config.json").write_text("{}")
    assert find_config(both) == str(both / "config.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_config(empty) is None


def test_tf_checkpoint_readable_by_tf1_init_from_checkpoint(tf, tmp_path):
    """Google's BERT code restores with init_from_checkpoint by plain name."""
    tensors = _random_tf_tensors()
    prefix = str(tmp_path / "bert_model.ckpt")
    save_tf_checkpoint(tensors, prefix)
    name = "bert/encoder/layer_0/attention/self/query/kernel"
    graph = tf.Graph()
    with graph.as_default():
        var = tf.compat.v1.get_variable(
            name, shape=tensors[name].shape, dtype=tf.float32
        )
        tf.compat.v1.train.init_from_checkpoint(prefix, {"bert/": "bert/"})
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            np.testing.assert_array_equal(sess.run(var), tensors[name])


def test_missing_framework_import_errors(monkeypatch, hf_dirs, tmp_path):
    import sys

    prefix = tmp_path / "m.ckpt"
    (tmp_path / "m.ckpt.index").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    with pytest.raises(ImportError, match="needs tensorflow: pip install"):
        open_checkpoint(prefix)
    with pytest.raises(ImportError, match="needs tensorflow"):
        save_tf_checkpoint({"x": np.zeros(1)}, str(prefix))
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs torch: pip install"):
        open_checkpoint(hf_dirs["bin"])
