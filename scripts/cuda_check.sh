#!/usr/bin/env bash
# The CUDA checks and benchmarks in one go, for a lent GPU (BENCHMARKS.md, "On a GPU"): the CUDA
# tests, the demo-recipe search (experiments/recipe_probe.py), `alexnet bench model` eager and
# compiled, and a short compiled training run. Each step has its own time limit, so one that hangs
# leaves the others their time; everything lands in $OUT (default /tmp/cuda-check).
#
#   bash scripts/cuda_check.sh                       # every step: about 7 minutes on one H100
#   STEPS="tests train" bash scripts/cuda_check.sh   # some of them
#   SWEEP="--arms round2 --images 36000" ...          # another recipe search
set -u
OUT=${OUT:-/tmp/cuda-check}
STEPS=${STEPS:-tests sweep bench train bench-compile}
SWEEP=${SWEEP:---images 28000 --seeds 0,1}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/tests" PYTHONUNBUFFERED=1 ALEXNET_CACHE=/tmp/alexnet-cache
A="python3 -m alexnet.cli"
step() {
  local limit=$1 name=$2; shift 2
  case " $STEPS " in *" $name "*) ;; *) return ;; esac
  echo "== $name ($(date +%T), limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; echo "== $name: exit $?"
  tail -n 4 "$OUT/$name.txt"
}
{ nvidia-smi -L; python3 -c "import torch, torchvision; print(torch.__version__,
  torchvision.__version__, torch.cuda.get_device_name())"; nproc; } 2>&1 | tee "$OUT/env.txt"
# The LRN Triton kernels compile on first use per dtype/layout/tile (about 30 variants, ~1 s each):
# hence the longer limit. test_lrn_triton.py checks them in Triton's interpreter and for sm_90.
step 200 tests python3 -m pytest -q -p no:cacheprovider --durations=10 tests/test_cuda.py \
  tests/test_lrn.py tests/test_lrn_triton.py tests/test_accel.py tests/test_cli.py
# shellcheck disable=SC2086
step 300 sweep python3 experiments/recipe_probe.py --device cuda --workers 14 --deadline 220 \
  $SWEEP --json "$OUT/sweep.json"
step 70 bench $A bench model --device cuda --batch-size 128 --steps 30 --warmup 5
step 90 train $A train --data shapes:4000:500 --epochs 2 --batch-size 128 --device cuda \
  --workers 12 --compile --no-progress --out /tmp/run-cuda
step 90 bench-compile $A bench model --device cuda --batch-size 128 --steps 30 --warmup 5 \
  --compile --configs cd --inference-batch-sizes '' --lrn-batch-size 0
