#!/usr/bin/env bash
# The CUDA checks and benchmarks in one go, for a lent GPU (BENCHMARKS.md, "On a GPU"; issue 14):
# the CUDA tests, `alexnet bench model` at batch 128 and over a batch sweep (eager and compiled),
# `alexnet bench data --device cuda` (raw, Pillow JPEG and nvJPEG batches delivered augmented on
# the GPU), and short end-to-end training runs on photo-sized data made and prepared on the
# machine, from raw shards and from JPEG shards decoded on the GPU. Each step has its own time
# limit (together 8 minutes), so one that hangs leaves the others their time; everything lands in
# $OUT (default /tmp/cuda-check), the runs' metrics.jsonl included.
#
#   bash scripts/cuda_check.sh                       # every step but the recipe search
#   STEPS="tests train-raw" bash scripts/cuda_check.sh   # some of them
#   STEPS=recipe SWEEP="--arms round2 --images 36000" ... # the demo-recipe search (issue 5)
set -u
OUT=${OUT:-/tmp/cuda-check}
STEPS=${STEPS:-tests bench sweep sweep-compile data photos train-raw train-jpeg}
SWEEP=${SWEEP:---images 28000 --seeds 0,1}
PHOTOS=${PHOTOS:-4096}
W=${W:-$(( $(nproc) - 2 ))}  # loader workers: the CPU only feeds the GPU
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD/tests" PYTHONUNBUFFERED=1 ALEXNET_CACHE=/tmp/alexnet-cache
A="python3 -m alexnet.cli"
step() {
  local limit=$1 name=$2; shift 2
  case " $STEPS " in *" $name "*) ;; *) return ;; esac
  echo "== $name ($(date +%T), limit ${limit}s)"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; echo "== $name: exit $?"
  tail -n 6 "$OUT/$name.txt"
}
{ nvidia-smi -L; python3 -c "import torch, torchvision; print(torch.__version__,
  torchvision.__version__, torch.cuda.get_device_name())"; nproc; } 2>&1 | tee "$OUT/env.txt"
# The LRN Triton kernels compile on first use per dtype/layout/tile (about 30 variants, ~1 s each):
# hence the longer limit. test_lrn_triton.py checks them in Triton's interpreter and for sm_90.
step 140 tests python3 -m pytest -q -p no:cacheprovider --durations=10 tests/test_cuda.py \
  tests/test_lrn.py tests/test_lrn_triton.py tests/test_accel.py tests/test_decode_device.py
step 50 bench $A bench model --device cuda --batch-size 128 --steps 30 --warmup 5
step 60 sweep $A bench model --device cuda --configs cd --steps 15 --warmup 3 \
  --batch-sweep 128,256,512,1024
step 75 sweep-compile $A bench model --device cuda --configs cd --steps 15 --warmup 3 --compile \
  --batch-sweep 128,512
step 45 data $A bench data --device cuda --images 2048 --batch-size 128 --workers "$W" \
  --rounds 2 --model-steps 10
# 4,096 photo-sized JPEGs (500×375, as bench data makes them) and 256 for val, prepared as raw and as JPEG shards.
step 30 photos bash -c "python3 -c 'from pathlib import Path; from alexnet.benchmarks.data \
  import make_photos; make_photos(Path(\"/tmp/photos\"), $PHOTOS); \
  make_photos(Path(\"/tmp/photos-val\"), 256, seed=1)' && mv /tmp/photos-val/train /tmp/photos/val \
  && $A prepare /tmp/photos \
  /tmp/p-raw --workers $W && $A prepare /tmp/photos /tmp/p-jpeg --format jpeg --workers $W"
step 40 train-raw $A train --data /tmp/p-raw --epochs 2 --batch-size 128 --device cuda \
  --workers "$W" --no-progress --eval-crops 1 --out "$OUT/run-raw"
step 40 train-jpeg $A train --data /tmp/p-jpeg --decode device --epochs 2 --batch-size 128 \
  --device cuda --workers "$W" --no-progress --eval-crops 1 --out "$OUT/run-jpeg"
# shellcheck disable=SC2086
step 300 recipe python3 experiments/recipe_probe.py --device cuda --workers 14 --deadline 220 \
  $SWEEP --json "$OUT/sweep.json"
