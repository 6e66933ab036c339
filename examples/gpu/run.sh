#!/usr/bin/env bash
# The four flagship examples on one GPU in one call (JAX backend; TensorFlow cannot be
# carried to the GPU machine): NER with GlobalPointer and with a CRF on CoNLL-2003,
# GPLinker on WebNLG, SimBERT on STS-B, all with all-MiniLM-L6-v2 (the bf16 copy in
# .carry/minilm-bf16), mixed_bfloat16, larger batches, early stopping on the dev split and
# a per-script time budget (--max-train-seconds inside, `timeout` outside).
#
#   bash examples/gpu/prepare_carry.sh     # here: fills .carry/ (git-ignored)
#   OUT=/tmp/out bash examples/gpu/run.sh  # the GPU machine ($OUT is given there)
#   SMALL=1 OUT=/tmp/out bash examples/gpu/run.sh   # CPU check of the flow, tiny limits
#
# Writes into $OUT: one log per script and examples.json (one JSON line per script); the
# summary table is printed last. Nothing is written into examples/README.md here: copy
# the numbers back with `python examples/gpu/summary.py OUT/examples.json --record`.
set -u
cd "$(dirname "$0")/../.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_PREALLOCATE=false
OUT=${OUT:-/tmp/examples-gpu-out}
mkdir -p "$OUT"
JSON="$OUT/examples.json"
: > "$JSON"
DATA=.carry/data
CKPT=.carry/minilm-bf16
START=$(date +%s)
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)" 2>&1 | tee "$OUT/env.log"

# Per-script: hard limit (s) for `timeout`, training budget (s) and options. Full run:
# about 5.5 min of the 6 min budget; SMALL=1: a few examples each, to test the flow.
if [ "${SMALL:-0}" = 1 ]; then
  LIMITS=(--limit 64 --dev-limit 32 --eval-limit 32)
  HARD=(400 400 400 400); TRAIN=(60 60 60 60); EPOCHS=2
else
  LIMITS=()
  # GPLinker gets the most: it needs the most updates (see its docstring).
  HARD=(75 75 125 65); TRAIN=(35 35 85 25); EPOCHS=30
  # QUICK=1: when the call shares its device time with the benchmark (4 min in all).
  if [ "${QUICK:-0}" = 1 ]; then HARD=(55 55 95 45); TRAIN=(25 25 65 18); fi
fi
COMMON=(--checkpoint "$CKPT" --mixed-precision --json "$JSON" --epochs "$EPOCHS"
        --patience 2 "${LIMITS[@]}")

run() {  # run INDEX NAME SCRIPT ARGS...
  local i=$1 name=$2 script=$3; shift 3
  echo "=== $name: $script $* (limit ${HARD[$i]}s)"
  timeout -k 5 "${HARD[$i]}" python3 "examples/$script" "${COMMON[@]}" \
    --max-train-seconds "${TRAIN[$i]}" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  grep -E "^(early stopping|result|time budget)" "$OUT/$name.log"
  [ $rc = 0 ] || { echo "$name: exit status $rc; last lines:"; tail -5 "$OUT/$name.log"; }
}

# One padded length and full batches everywhere: each XLA compile costs seconds on the
# GPU, more than an epoch of MiniLM.
NER=(--data "$DATA/conll2003" --batch-size 64 --pad-to-longest --length-multiple 64)
run 0 ner_globalpointer task_ner_globalpointer.py "${NER[@]}"
run 1 ner_crf task_ner_crf.py "${NER[@]}"
run 2 gplinker task_relation_extraction_gplinker.py --data "$DATA/webnlg_casrel/WebNLG" \
  --batch-size 32 --eval-batch-size 64 --length-multiple 128
run 3 simbert task_simbert.py --data "$DATA/stsbenchmark/sts-train.csv" --batch-size 64 \
  --length-multiple 64 --demo-sentences 1

echo "=== all done in $(( $(date +%s) - START ))s"
python3 examples/gpu/summary.py "$JSON"
