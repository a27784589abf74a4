#!/bin/bash
# Session 18, planned and committed before its first result: does the paper's test-time
# averaging over ten patches (§4.1: the four corner and the centre 224×224 crops and their
# mirror images, softmax outputs averaged) lower the error against the centre crop alone?
#
# The nets: every run of the 30,000-image ablation still on this machine (experiments/
# ablation-30k: seeds 3-9 of the baseline, no-lrn, one-tower-half and no-lighting; seeds 5-9 of
# non-overlapping), 33 in all; hard-linked baselines are evaluated once. Each net is evaluated
# twice on its own 500 validation images (`shapes:10000:500`'s), with `alexnet eval --crops 1` and
# `--crops 10`, on the same weights (best.pt; with the cosine schedule the last epoch's).
#
# The claim tested: 10-crop top-1 error minus 1-crop top-1 error is below 0 for the paper's net
# (the baseline), paired by seed over seeds 3-9 (7 nets, a 95% t-interval; the verdict as the
# ablation's: "held" if the interval lies below 0). The other arms are reported beside it, each
# with its own interval, and all 33 nets together as a description (not independent: a seed's
# nets share their data order). Nothing is added after the first result is read.
#
#   bash experiments/ten-crop/run.sh [RUNS_ROOT] [OUT]     # then: python analyze.py OUT
cd "$(dirname "$0")/../.."
ROOT=${1:-/work/exp/ablation-30k} OUT=${2:-/work/exp/ten-crop}
mkdir -p "$OUT"
for dir in "$ROOT"/out "$ROOT"/out-5-9 "$ROOT"/out-5-9-lighting "$ROOT"/out-5-9-pooling; do
  for run in "$dir"/*/seed*; do
    [ -f "$run/best.pt" ] || continue
    arm=$(basename "$(dirname "$run")") seed=${run##*seed}
    for crops in 1 10; do
      out="$OUT/$arm-seed$seed-crops$crops.json"
      [ -s "$out" ] && continue  # done (a hard-linked baseline, or a rerun)
      .venv/bin/alexnet eval "$run" --crops "$crops" --json > "$out.tmp" && mv "$out.tmp" "$out"
      echo "$(date -u +%H:%M:%S) $arm seed $seed, $crops crop(s): $(cat "$out")"
    done
  done
done
