#!/usr/bin/env bash
# Fill .carry/ (repo root, git-ignored) with exactly what examples/gpu/run.sh reads on the
# GPU machine, which has no ../shared/data and no checkpoint package:
#   .carry/minilm-bf16/   all-MiniLM-L6-v2 as bf16 safetensors (the fp32 file is over the
#                         64 MiB transfer limit) + config.json, vocab.txt, tokenizer_config.json
#   .carry/data/...       the data files the four examples read, same layout as ../shared/data
# The data have research-use licences: .carry/ is added to git's info/exclude so it can
# never be committed. Usage (repo root): bash examples/gpu/prepare_carry.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
SRC=${SHARED_DATA:-../shared/data}
[ -d "$SRC" ] || SRC=/work/shared/data

EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '.carry/' "$EXCLUDE" 2>/dev/null || echo '.carry/' >> "$EXCLUDE"

rm -rf .carry/data
copy() {  # copy DATASET FILE...: $SRC/DATASET/FILE -> .carry/data/DATASET/FILE
  local dataset=$1; shift
  mkdir -p ".carry/data/$dataset"
  for f in "$@"; do cp "$SRC/$dataset/$f" ".carry/data/$dataset/$f"; done
}
copy conll2003 train.txt valid.txt test.txt
copy webnlg_casrel/WebNLG rel2id.json train_triples.json val_triples.json test_triples.json
copy stsbenchmark sts-train.csv sts-dev.csv   # the test split is examples/datasets/sts-test.csv

if [ ! -f .carry/minilm-bf16/model.safetensors ]; then
  python examples/gpu/make_bf16_checkpoint.py .carry/minilm-bf16
fi
git check-ignore -q .carry/data/conll2003/train.txt || { echo ".carry/ is not ignored" >&2; exit 1; }
du -sh .carry .carry/*
