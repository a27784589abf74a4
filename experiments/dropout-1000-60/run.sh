#!/bin/bash
# Session 21, planned and committed before it ran anything: the dropout study of
# experiments/dropout-1000 (30 passes over 1,000 shapes images: lower val error WITHOUT dropout in
# every seed, -3.6 [-5.8, -1.4]; both nets overfit by ~16 points) with twice the passes. There the
# dropout nets were still improving at the end (22.1% -> 20.4% val error from epoch 24 to 30), and
# the paper (§4.2) says dropout roughly doubles the iterations needed to converge. The only change
# is --overfit-epochs 60 (the demo recipe's cosine schedule stretches over the 60 epochs), and
# three seeds (0-2) instead of five, to fit the session: about 15 minutes a run, 6 runs, on the AMD
# EPYC (avx512_bf16, no AMX), bf16, 2 cores. Measured at epochs 6, 12, ..., 60 in eval mode (no
# dropout, centre crop) on the 1,000 training images and the 500 val images.
#
# The claims tested, each read off the paired 95% t-interval of without - with at the last epoch
# (3 seeds: t has 2 degrees of freedom, so only a large, consistent difference can be called):
#   1. (primary) val top-1 error: the net with dropout has the lower val error, > 0 ("held" if the
#      interval lies above 0, "not held" if below, else "cannot tell");
#   2. the overfitting gap (val - train error, in eval mode): larger without dropout, > 0.
# Reported, not tested:
#   - the curves (dropout.png) and the per-seed numbers;
#   - "doubles the iterations": the val error of the dropout net after 60 passes here against the
#     net without dropout after 30 passes in experiments/dropout-1000 (same seeds 0-2, each at the
#     end of its own schedule), paired by seed.
#
#   bash experiments/dropout-1000-60/run.sh [OUT]
cd "$(dirname "$0")/../.."
OUT=${1:-/work/exp/dropout-1000-60/out}
.venv/bin/alexnet ablate --recipe demo --data shapes:10000:500 --budget 3000 --epochs 1 \
  --seed 0 --seeds 3 --arms none --study dropout --overfit-images 1000 --overfit-epochs 60 \
  --progress off --out "$OUT"
