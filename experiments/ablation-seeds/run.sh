#!/bin/bash
# The paired-seed ablation on shapes, arm by arm (most informative first), in the pilot's
# directory (renamed from pilot-3000 after the pilot finished). As run on 2026-12-01.
set -u
cd "$(dirname "$0")/../.."
D=/work/exp/ablation-seeds/shapes-3000

date +%s > /work/exp/ablation-seeds/start
for arm in no-dropout one-tower-half no-lrn non-overlapping no-lighting; do
  echo "=== $arm $(date)"
  /usr/bin/time -v nice -n 10 .venv/bin/alexnet ablate --recipe demo --budget 3000 --epochs 1 --seeds 3 \
    --arms "$arm" --study none --no-progress --out "$D"
  echo "=== $arm exit $? $(date)"
done
date +%s > /work/exp/ablation-seeds/end
echo ALLDONE
