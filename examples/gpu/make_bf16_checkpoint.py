"""Write a bfloat16 copy of all-MiniLM-L6-v2 (model.safetensors + config.json, vocab.txt,
tokenizer_config.json) into a folder: the checkpoint examples/gpu/run.sh carries to the
GPU machine (43 MiB; the float32 file is over the 64 MiB transfer limit). kerasformer's
loader casts the bf16 tensors to the variables' dtype.

    python examples/gpu/make_bf16_checkpoint.py .carry/minilm-bf16
"""
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ml_dtypes  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

from common import default_minilm_checkpoint  # noqa: E402


def main(target):
    source = default_minilm_checkpoint()
    os.makedirs(target, exist_ok=True)
    tensors = load_file(os.path.join(source, "model.safetensors"))
    temp = os.path.join(target, "model.safetensors.tmp")
    save_file({k: v.astype(ml_dtypes.bfloat16) for k, v in tensors.items()}, temp)
    os.replace(temp, os.path.join(target, "model.safetensors"))
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(source, name), os.path.join(target, name))
    print(f"{target}: {len(tensors)} bf16 tensors from {source}")


if __name__ == "__main__":
    main(sys.argv[1])
