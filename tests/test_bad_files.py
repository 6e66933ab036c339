"""Catalogue of bad files and failed writes (issue 11, files half): one test per case.

* Interrupted writes: a writer runs in a subprocess under a real file-size limit
  (``resource.setrlimit(RLIMIT_FSIZE)``, SIGXFSZ ignored so the write raises EFBIG) or is
  SIGKILLed mid-write; the previous file must stay byte-identical and, on failure, no
  temporary file may remain. No mocks.
* Corrupt files: truncated / bad-offset safetensors, NaN bytes, truncated TF shard,
  garbage TF index, non-JSON sharded index, non-UTF-8 config, refused pickle, truncated
  torch file: an error that names the file (and the tensors).
* The ``kerasformer`` command: every failure is one ``error: ...`` message on stderr,
  exit code 1, no traceback.
* ``convert`` next to a different config; ``save_weights_as_checkpoint`` with LoRA.

The reference for LoRA is the formula of arXiv:2106.09685 computed in numpy
(``W + alpha / r * A @ B``); the reference checkpoint is conftest's ``tiny_bert`` saved by
``transformers``. Runs under ``KERAS_BACKEND=jax`` and ``KERAS_BACKEND=tensorflow``;
TF-checkpoint cases skip only when tensorflow is not installed.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kerasformer import build_transformer_model, cli
from kerasformer.checkpoints import (
    SafetensorsReader,
    ShardedReader,
    TFCheckpointReader,
    open_checkpoint,
    save_safetensors,
    save_tf_checkpoint,
)
from kerasformer.io_utils import TEMP_MARKER

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_tf = pytest.mark.skipif(
    __import__("importlib").util.find_spec("tensorflow") is None,
    reason="TF checkpoints need tensorflow",
)


# ----------------------------------------------------------------------------- helpers


def run_limited(code, limit_bytes=None, timeout=300):
    """Run `code` in a fresh Python; ``limit(n)`` inside it sets RLIMIT_FSIZE (with
    SIGXFSZ ignored, so an over-limit write raises instead of killing). Returns the
    CompletedProcess."""
    preamble = textwrap.dedent("""
        import os, resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        def limit(n):
            resource.setrlimit(resource.RLIMIT_FSIZE,
                               (n, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def snapshot(folder):
    """``{file name: bytes}`` of every file in `folder`."""
    return {name: open(os.path.join(folder, name), "rb").read()
            for name in sorted(os.listdir(folder))}


def assert_untouched(folder, before):
    after = snapshot(folder)
    stray = [name for name in after if TEMP_MARKER in name]
    assert not stray, f"temporary files left behind: {stray}"
    assert after.keys() == before.keys()
    for name in before:
        assert after[name] == before[name], f"{name} changed"


def tensors(n, seed=0):
    rng = np.random.default_rng(seed)
    return {f"layer_{i}.weight": rng.standard_normal((n, 16)).astype("float32")
            for i in range(4)}


def cli_run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_cli_error(code, err, *fragments):
    assert code == 1, err
    assert err.startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def rewrite_header(path, edit):
    """Apply `edit` to the JSON header of a safetensors file, keeping its data bytes."""
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header)
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data[8 + n:])


@pytest.fixture()
def small_safetensors(tmp_path):
    path = str(tmp_path / "model.safetensors")
    save_safetensors(tensors(4), path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tiny_bert, tmp_path_factory):
    """A copy of conftest's tiny HF BERT folder (config.json + model.safetensors)."""
    folder = str(tmp_path_factory.mktemp("bad_files_bert"))
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(tiny_bert[0], name), folder)
    return folder


# ------------------------------------------------------------ interrupted writes (unsafe #2)


def test_safetensors_write_over_the_limit_keeps_the_old_file(small_safetensors):
    folder = os.path.dirname(small_safetensors)
    before = snapshot(folder)
    proc = run_limited(f"""
        import numpy as np
        from kerasformer.checkpoints import save_safetensors
        big = {{"w": np.ones((256, 256), "float32")}}
        limit(16384)
        try:
            save_safetensors(big, {small_safetensors!r})
        except OSError as e:
            print("raised", e); sys.exit(3)
    """)
    assert proc.returncode == 3, proc.stderr + proc.stdout
    assert_untouched(folder, before)


@needs_tf
def test_tf_checkpoint_write_over_the_limit_keeps_the_old_files(tmp_path):
    prefix = str(tmp_path / "bert_model.ckpt")
    save_tf_checkpoint(tensors(4), prefix)
    before = snapshot(tmp_path)
    assert set(before) == {"bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001"}
    proc = run_limited(f"""
        import numpy as np
        from kerasformer.checkpoints import save_tf_checkpoint
        import tensorflow as tf
        big = {{"w": np.ones((256, 256), "float32")}}
        limit(16384)
        try:
            save_tf_checkpoint(big, {prefix!r})
        except Exception as e:
            print("raised", type(e).__name__, e); sys.exit(3)
    """)
    assert proc.returncode == 3, proc.stderr + proc.stdout
    assert_untouched(tmp_path, before)
    with TFCheckpointReader(prefix) as reader:
        np.testing.assert_array_equal(reader.get("layer_0.weight"), tensors(4)["layer_0.weight"])


def test_keras_weights_convert_over_the_limit_keeps_the_old_file(bert_dir, tmp_path, capsys):
    dst = tmp_path / "keras" / "model.weights.h5"
    assert cli.main(["convert", os.path.join(bert_dir, "model.safetensors"), str(dst)]) == 0
    capsys.readouterr()
    before = snapshot(dst.parent)
    proc = run_limited(f"""
        from kerasformer import cli
        limit(8192)
        sys.exit(cli.main(["convert", {os.path.join(bert_dir, "model.safetensors")!r},
                           {str(dst)!r}]))
    """)
    assert proc.returncode == 1, proc.stderr
    assert "error: Cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert_untouched(dst.parent, before)
    code, out, _ = cli_run(capsys, "info", dst)
    assert code == 0 and "tensors:     0" not in out


def _lora_save_code(path):
    return f"""
        import keras
        from kerasformer.lora import enable_lora, save_lora_weights
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, name="q_dense")])
        enable_lora(model, rank=32, target="q_dense")
        limit(8192)
        try:
            save_lora_weights(model, {path!r})
        except OSError as e:
            print("raised", e); sys.exit(3)
    """


@pytest.mark.parametrize("name", ["adapter.npz", "adapter.safetensors"])
def test_lora_adapter_write_over_the_limit_keeps_the_old_file(tmp_path, name):
    path = str(tmp_path / name)
    with open(path, "wb") as f:
        f.write(b"previous adapter")
    before = snapshot(tmp_path)
    proc = run_limited(_lora_save_code(path))
    assert proc.returncode == 3, proc.stderr + proc.stdout
    assert_untouched(tmp_path, before)


def test_config_copy_over_the_limit_leaves_no_partial_config(tmp_path):
    target = str(tmp_path / "config.json")
    with open(target, "w") as f:
        f.write('{"old": true}')
    before = snapshot(tmp_path)
    proc = run_limited(f"""
        from kerasformer.io_utils import atomic_write_bytes
        limit(4096)
        try:
            atomic_write_bytes({target!r}, b"x" * 100000)
        except OSError as e:
            sys.exit(3)
    """)
    assert proc.returncode == 3, proc.stderr
    assert_untouched(tmp_path, before)


def test_killed_write_keeps_the_old_file(tmp_path):
    """SIGKILL after part of the new file is on disk: the old file is byte-identical
    (the partial temporary file is all that is left; nothing can run after SIGKILL)."""
    target = str(tmp_path / "model.safetensors")
    with open(target, "wb") as f:
        f.write(b"old weights" * 100)
    before = open(target, "rb").read()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from kerasformer.io_utils import atomic_write
        with atomic_write({target!r}) as temp:
            with open(temp, "wb") as f:
                f.write(b"new" * 100000); f.flush()
                print("half written", flush=True)
                time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "half written"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert open(target, "rb").read() == before
    temps = [n for n in os.listdir(tmp_path) if TEMP_MARKER in n]
    assert len(temps) == 1 and os.path.getsize(tmp_path / temps[0]) == 300000


def test_atomic_write_cleans_up_after_an_exception(tmp_path):
    from kerasformer.io_utils import atomic_write

    target = tmp_path / "config.json"
    target.write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as temp:
            with open(temp, "w") as f:
                f.write("partial")
            raise RuntimeError("writer failed")
    assert target.read_text() == "{}" and os.listdir(tmp_path) == ["config.json"]


# ---------------------------------------------------------------- corrupt files: readers


def test_safetensors_cut_after_header(small_safetensors):
    data = open(small_safetensors, "rb").read()
    n = int.from_bytes(data[:8], "little")
    with open(small_safetensors, "wb") as f:
        f.write(data[:8 + n])
    with pytest.raises(ValueError, match="truncated") as e:
        SafetensorsReader(small_safetensors)
    assert small_safetensors in str(e.value)


def test_safetensors_truncated_mid_tensor(small_safetensors):
    data = open(small_safetensors, "rb").read()
    with open(small_safetensors, "wb") as f:
        f.write(data[:-10])
    with pytest.raises(ValueError, match="truncated") as e:
        SafetensorsReader(small_safetensors)
    assert small_safetensors in str(e.value)


def test_safetensors_offsets_past_the_end(small_safetensors):
    rewrite_header(small_safetensors,
                   lambda h: h["layer_3.weight"].update(data_offsets=[10**6, 10**6 + 256]))
    with pytest.raises(ValueError, match="layer_3.weight") as e:
        SafetensorsReader(small_safetensors)
    assert small_safetensors in str(e.value)


def test_safetensors_offsets_not_matching_the_shape(small_safetensors):
    def edit(header):
        header["layer_0.weight"]["shape"] = [4, 8]  # 128 bytes, offsets still span 256
    rewrite_header(small_safetensors, edit)
    with pytest.raises(ValueError, match="layer_0.weight.*256 bytes"):
        SafetensorsReader(small_safetensors)


def test_safetensors_nan_bytes_are_refused_at_load(bert_dir, tmp_path):
    path = str(tmp_path / "model.safetensors")
    shutil.copy(os.path.join(bert_dir, "model.safetensors"), path)
    name = "bert.encoder.layer.1.output.dense.weight"
    header, start = SafetensorsReader(path)._header, SafetensorsReader(path)._data_start
    begin = start + header[name]["data_offsets"][0]
    with open(path, "r+b") as f:  # corrupt 3 floats to NaN / Inf / NaN
        f.seek(begin + 40)
        f.write(np.array([np.nan, np.inf, np.nan], "<f4").tobytes())
    with pytest.raises(ValueError, match="NaN or Inf") as e:
        build_transformer_model(os.path.join(bert_dir, "config.json"), path, model="bert")
    assert name in str(e.value) and path in str(e.value)


@needs_tf
def test_truncated_tf_data_shard(tmp_path):
    prefix = str(tmp_path / "bert_model.ckpt")
    save_tf_checkpoint(tensors(4), prefix)
    shard = prefix + ".data-00000-of-00001"
    data = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ValueError, match="Truncated or corrupt TensorFlow checkpoint") as e:
        TFCheckpointReader(prefix)
    assert prefix in str(e.value)


@needs_tf
def test_missing_tf_data_shard(tmp_path):
    prefix = str(tmp_path / "bert_model.ckpt")
    save_tf_checkpoint(tensors(4), prefix)
    os.remove(prefix + ".data-00000-of-00001")
    with pytest.raises(ValueError, match="no data shard") as e:
        TFCheckpointReader(prefix)
    assert prefix in str(e.value)


@needs_tf
def test_garbage_tf_index(tmp_path):
    prefix = str(tmp_path / "bert_model.ckpt")
    save_tf_checkpoint(tensors(4), prefix)
    with open(prefix + ".index", "wb") as f:
        f.write(os.urandom(300))
    with pytest.raises(ValueError, match="Corrupt TensorFlow checkpoint index") as e:
        TFCheckpointReader(prefix)
    assert prefix + ".index" in str(e.value)


def test_non_json_sharded_index(tmp_path):
    path = tmp_path / "model.safetensors.index.json"
    path.write_text("{'weight_map': not json")
    with pytest.raises(ValueError, match="not valid JSON") as e:
        ShardedReader(path)
    assert str(path) in str(e.value)


def test_non_utf8_config(bert_dir, tmp_path):
    config = tmp_path / "config.json"
    config.write_bytes(b'{"hidden_size": 32, "name": "\xff\xfe"}')
    with pytest.raises(ValueError, match="not UTF-8") as e:
        build_transformer_model(str(config), model="bert")
    assert str(config) in str(e.value)


def test_refused_pickle(tmp_path, torch):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"weight": torch.ones(2), "extra": tmp_path}, path)  # a PosixPath object
    with pytest.raises(ValueError, match="Refused to load") as e:
        open_checkpoint(path)
    assert str(path) in str(e.value)


def test_truncated_torch_file(tmp_path, torch):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"weight": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="Cannot read the PyTorch checkpoint") as e:
        open_checkpoint(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("name", ["adapter.npz", "adapter.safetensors"])
def test_truncated_lora_adapter(tmp_path, name):
    import keras

    from kerasformer.lora import enable_lora, load_lora_weights, save_lora_weights

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, name="q_dense")])
    enable_lora(model, rank=2, target="q_dense")
    path = save_lora_weights(model, tmp_path / name)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) - 40])
    with pytest.raises(ValueError, match="Cannot read the LoRA file") as e:
        load_lora_weights(model, path)
    assert str(path) in str(e.value)


# -------------------------------------------------------------------- the command line


def test_cli_info_on_a_safetensors_cut_after_its_header(small_safetensors, capsys):
    data = open(small_safetensors, "rb").read()
    n = int.from_bytes(data[:8], "little")
    with open(small_safetensors, "wb") as f:
        f.write(data[:8 + n])
    code, _, err = cli_run(capsys, "info", small_safetensors)
    assert_cli_error(code, err, small_safetensors, "truncated")


@needs_tf
def test_cli_info_on_a_truncated_tf_shard(tmp_path, capsys):
    prefix = str(tmp_path / "bert_model.ckpt")
    save_tf_checkpoint(tensors(4), prefix)
    shard = prefix + ".data-00000-of-00001"
    with open(shard, "r+b") as f:
        f.truncate(100)
    code, _, err = cli_run(capsys, "info", prefix)
    assert_cli_error(code, err, prefix)


def test_cli_refused_pickle(tmp_path, torch, capsys):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"weight": torch.ones(2), "extra": tmp_path}, path)
    code, _, err = cli_run(capsys, "info", path)
    assert_cli_error(code, err, "Refused to load", str(path))


def test_cli_missing_file(tmp_path, capsys):
    code, _, err = cli_run(capsys, "info", tmp_path / "nothing.safetensors")
    assert_cli_error(code, err, "nothing.safetensors")


def test_cli_unknown_format(tmp_path, capsys):
    path = tmp_path / "weights.xyz"
    path.write_bytes(b"\0" * 10)
    code, _, err = cli_run(capsys, "info", path)
    assert_cli_error(code, err, "Unknown checkpoint format", str(path))


def test_cli_keras_weights_stub(tmp_path, capsys):
    path = tmp_path / "model.weights.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)
    code, _, err = cli_run(capsys, "info", path)
    assert_cli_error(code, err, str(path))


def test_cli_destination_under_a_file(bert_dir, tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    code, _, err = cli_run(capsys, "convert", os.path.join(bert_dir, "model.safetensors"),
                           blocker / "model.safetensors")
    assert_cli_error(code, err, "not_a_folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root ignores file permissions")
def test_cli_read_only_destination(bert_dir, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, err = cli_run(capsys, "convert", os.path.join(bert_dir, "model.safetensors"),
                               folder / "model.safetensors")
    finally:
        folder.chmod(0o755)
    assert_cli_error(code, err, "Permission denied")


def test_cli_debug_reraises(tmp_path):
    with pytest.raises(cli.CLIError, match="nothing.safetensors"):
        cli.main(["--debug", "info", str(tmp_path / "nothing.safetensors")])


def test_convert_refuses_a_different_config_next_to_the_output(bert_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stale = dict(json.load(open(os.path.join(bert_dir, "config.json"))), hidden_size=64,
                 intermediate_size=64)
    (out / "config.json").write_text(json.dumps(stale))
    before = snapshot(out)
    src = os.path.join(bert_dir, "model.safetensors")
    code, _, err = cli_run(capsys, "convert", src, out / "model.safetensors")
    assert_cli_error(code, err, str(out / "config.json"), "--overwrite-config")
    assert snapshot(out) == before  # nothing written
    code, out_text, _ = cli_run(capsys, "convert", src, out / "model.safetensors",
                                "--overwrite-config")
    assert code == 0
    assert json.load(open(out / "config.json")) == json.load(
        open(os.path.join(bert_dir, "config.json")))
    # The same config already there is fine (and not rewritten).
    code, out_text, _ = cli_run(capsys, "convert", src, out / "model2.safetensors")
    assert code == 0 and "wrote" not in out_text


# ------------------------------------------------------------- LoRA and exported checkpoints


def test_save_weights_as_checkpoint_with_lora_writes_merged_kernels(bert_dir, tmp_path):
    import keras

    from kerasformer.lora import enable_lora, lora_layers

    transformer = build_transformer_model(os.path.join(bert_dir, "config.json"),
                                          os.path.join(bert_dir, "model.safetensors"),
                                          model="bert", return_keras_model=False)
    enable_lora(transformer.model, rank=2, alpha=4.0, b_initializer="random_normal")
    layer = lora_layers(transformer.model)["Transformer-0-MultiHeadSelfAttention/q_dense"]
    base = keras.ops.convert_to_numpy(layer._kernel)
    a = keras.ops.convert_to_numpy(layer.lora_kernel_a)
    b = keras.ops.convert_to_numpy(layer.lora_kernel_b)
    expected = base + (4.0 / 2) * a @ b  # arXiv:2106.09685, eq. (3)
    assert np.abs(expected - base).max() > 1e-3  # the adapter changes the kernel
    path = str(tmp_path / "model.safetensors")
    transformer.save_weights_as_checkpoint(path, format="hf")
    with SafetensorsReader(path) as reader:
        names = reader.names()
        written = reader.get(next(n for n in names if n.endswith(
            "encoder.layer.0.attention.self.query.weight")))
    np.testing.assert_allclose(written.T, expected, rtol=1e-6, atol=1e-6)
    assert not any("lora" in n for n in names)
    assert len(lora_layers(transformer.model)) > 0  # the model keeps its adapters
