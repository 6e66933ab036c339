#!/usr/bin/env bash
# One device call, from the repository root:   bash benchmarks/gpu/run.sh
# (carry [".whl", ".carry"], prepared here by benchmarks/gpu/prepare_carry.sh).
# Steps, each under `timeout`, logs teed to $OUT (at most 8 files come back):
#   nvidia-smi.log   the card as found
#   pytest.log       tests/test_gpu.py (MiniLM from .carry/minilm-bf16)
#   accelerator.log  benchmarks/accelerator.py --json $OUT/accelerator.json
#   probe.log        benchmarks/train_step_probe.py --json $OUT/probe.json
#   RESULTS.md       benchmarks/RESULTS.md with the new accelerator section
# Expected wall time on one H200: ~6-7 min (hard limits below sum to 525 s + install).
# SMALL=1: the same steps with tiny shapes and no wheel install (CPU check of this script);
# STEPS="tests bench probe" picks steps.
set -uo pipefail
cd "$(dirname "$0")/../.."
export OUT=${OUT:-/tmp/kf-gpu-out}
mkdir -p "$OUT"
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX and torch share the GPU in the tests: no 75% up-front grab by JAX.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
STEPS=${STEPS:-tests bench probe}
SMALL=${SMALL:-}
if [ -z "$SMALL" ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -d .carry/minilm-bf16 ]; then
  export KERASFORMER_MINILM_DIR=$PWD/.carry/minilm-bf16
fi
PY=${PYTHON:-python3}
SMALLFLAG=${SMALL:+--small}

{ date -u; nvidia-smi 2>&1 || echo "no nvidia-smi"; uname -a
  $PY -c "import sys, jax, keras; print(sys.version); print('jax', jax.__version__, jax.devices()); print('keras', keras.__version__, keras.__file__)"
  $PY -c "import torch, transformers; print('torch', torch.__version__, torch.cuda.is_available(), 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/nvidia-smi.log"

status=0
step() {  # step NAME SECONDS LOG command...
  local name=$1 limit=$2 logf=$3; shift 3
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  echo "=== $name (limit ${limit}s): $*" | tee -a "$OUT/$logf"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$OUT/$logf"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$logf"
  [ "$rc" = 0 ] || status=1
}

# On a shared CPU (SMALL=1) everything is slower: 3x the limits.
X=1; [ -n "$SMALL" ] && X=3
step tests $((90 * X)) pytest.log $PY -m pytest -q -rs -s -p no:cacheprovider tests/test_gpu.py
BENCH_BUDGET=${BENCH_BUDGET:-300}  # seconds for all benchmark workers
if [ -n "$SMALL" ]; then BENCHFLAGS="--small --no-write"; else BENCHFLAGS="--budget $BENCH_BUDGET"; fi
step bench $(((BENCH_BUDGET + 15) * X)) accelerator.log $PY benchmarks/accelerator.py $BENCHFLAGS \
  --json "$OUT/accelerator.json"
step probe $((120 * X)) probe.log $PY benchmarks/train_step_probe.py $SMALLFLAG --json "$OUT/probe.json"
cp benchmarks/RESULTS.md "$OUT/RESULTS.md" 2>/dev/null
grep -h "passed\|failed\|skipped" "$OUT/pytest.log" 2>/dev/null | tail -1
ls -la "$OUT"
exit $status
