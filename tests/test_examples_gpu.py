"""examples/gpu: the bf16 checkpoint carried to the GPU machine loads into float32
variables as the bf16-rounded fp32 weights, and summary.py tabulates the JSON lines."""
import json
import os

import ml_dtypes
import numpy as np

from examples_support import import_example, minilm_dir



def test_bf16_checkpoint_loads_as_rounded_fp32(tmp_path):
    from kerasformer import build_transformer_model

    source = minilm_dir()
    import_example("make_bf16_checkpoint", "gpu").main(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors",
                                            "tokenizer_config.json", "vocab.txt"]
    bf16 = build_transformer_model(str(tmp_path / "config.json"),
                                   str(tmp_path / "model.safetensors"))
    fp32 = build_transformer_model(os.path.join(source, "config.json"),
                                   os.path.join(source, "model.safetensors"))
    # Reference: the fp32 weights rounded to bf16 by ml_dtypes, back in float32.
    for loaded, original in zip(bf16.weights, fp32.weights):
        assert loaded.dtype == "float32"
        rounded = np.asarray(original).astype(ml_dtypes.bfloat16).astype("float32")
        np.testing.assert_array_equal(np.asarray(loaded), rounded)


def test_summary_table_from_json_lines(tmp_path, capsys):
    summary = import_example("summary", "gpu")
    row = dict(example="task_x.py", data="D test", checkpoint="c", backend="jax",
               device="NVIDIA H200 (jax gpu)", mixed_precision=True, batch_size=64,
               max_epochs=30, patience=2, best_epoch=3, epochs_run=5,
               metrics={"F1": 0.5}, train_seconds=40.0, wall_seconds=70.0)
    path = tmp_path / "examples.json"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    assert summary.main([str(path)]) == [row]
    out = capsys.readouterr().out
    assert "| task_x.py | D test | NVIDIA H200 (jax gpu) | bf16 | 64 | 3 / 5 (30) | F1 0.5000 |" in out
