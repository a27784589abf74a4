#!/bin/bash
# Session 20, planned and committed before it ran anything: dropout (§4.2) where a net can
# overfit and still learn. The two dropout rows of EXPERIMENTS' claims table sit at the ends:
# 30 passes over 128 images (experiments/dropout-paper: the gap held, the val error near chance
# either way, "cannot tell") and 3 passes over 10,000 (ablation-30k: each image seen three times,
# nothing overfits, dropout costs 10 points). The paper trained ~90 passes over its set. Here: the
# same study as dropout-paper, 30 passes, over 1,000 images, the only change --overfit-images.
#
# Per seed, the demo recipe's net with the paper's dropout (0.5, the paper's form) and without,
# trained 30 epochs over the first 1,000 training images of shapes:10000:500 (30,000 images, as
# ablation-30k), measured at epochs 3, 6, ..., 30 in eval mode (no dropout, centre crop) on those
# 1,000 images and on the 500 val images. Seeds 0-4, five, no more. --budget/--epochs are
# unused with --arms none (the study sets its own). On the AMD EPYC (avx512_bf16, no AMX), bf16
# (dropout-paper ran fp32 on an AVX2 CPU); about 8 minutes a run, 10 runs.
#
# The claims tested, each read off the paired 95% t-interval of without − with at the last epoch:
#   1. (primary) val top-1 error: the net with dropout has the lower val error, > 0 ("held" if the
#      interval lies above 0, "not held" if below, else "cannot tell");
#   2. the overfitting gap (val − train error, in eval mode): larger without dropout, > 0.
# Reported, not tested: the curves (dropout.png) and the per-seed numbers.
#
#   bash experiments/dropout-1000/run.sh [OUT]
cd "$(dirname "$0")/../.."
OUT=${1:-/work/exp/dropout-1000/out}
.venv/bin/alexnet ablate --recipe demo --data shapes:10000:500 --budget 3000 --epochs 1 \
  --seed 0 --seeds 5 --arms none --study dropout --overfit-images 1000 --overfit-epochs 30 \
  --progress off --out "$OUT"
