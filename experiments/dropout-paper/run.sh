#!/bin/bash
# The dropout study (paper §4.2) rerun with the paper's form of dropout (session 9, 2026-12-02):
# 30 passes over 128 shapes images, with and without dropout 0.5, seeds 0-2; the same settings as
# experiments/ablation-seeds (whose dropout arm used torch's inverted form). --arms none: only the
# study. As run, on the AVX2 CPU, beside other jobs.
nice -n 10 alexnet ablate --recipe demo --budget 3000 --epochs 1 --seeds 3 --arms none \
  --study dropout --progress off --out /work/exp/dropstudy-paper/out
