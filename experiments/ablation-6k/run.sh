#!/bin/bash
# Issue 15: the paired-seed ablation at a budget where the baseline learns (demo recipe, no
# dropout in the baseline; dropout's own claim is the dropout study's).
cd "$(dirname "$0")/../.."
.venv/bin/alexnet ablate --recipe demo --data shapes:6000:500 --dropout 0 --budget 6000 --epochs 1 \
  --seeds 3 --arms no-lrn,non-overlapping,no-lighting,one-tower-half --study none \
  --progress off --out /work/exp/ablation-6k/out
