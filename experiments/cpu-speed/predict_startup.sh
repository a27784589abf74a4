#!/bin/bash
# `alexnet predict` start-up, two source trees side by side, one image: the time from the command
# to its answer. One warm-up pair (page cache, shared libraries) is discarded; then 6 pairs, the
# order alternating (old first, then new first).
#   bash experiments/cpu-speed/predict_startup.sh OLD_SRC NEW_SRC CHECKPOINT
# e.g. OLD_SRC from `git worktree add /tmp/old <commit>` (then /tmp/old/src). Run nothing else.
set -e
OLD=$1 NEW=$2 CKPT=$3
cd "$(dirname "$0")/../.."
PY=$PWD/.venv/bin/python
IMG=$(mktemp --suffix .png)
$PY -c "from PIL import Image; import numpy as np, sys; Image.fromarray((np.random.default_rng(0)
.random((300, 300, 3)) * 255).astype('uint8')).save(sys.argv[1])" "$IMG"
for i in 0 1 2 3 4 5 6; do
  if [ $((i % 2)) = 1 ]; then order="old new"; else order="new old"; fi
  for v in $order; do
    if [ $v = old ]; then P=$OLD; else P=$NEW; fi
    s=$(date +%s.%N)
    PYTHONPATH=$P $PY -m alexnet predict "$CKPT" "$IMG" --json > "$IMG.$v.json"
    e=$(date +%s.%N)
    if [ $i = 0 ]; then echo "warm-up $v"; else echo "pair $i $v $(echo "$e - $s" | bc)" | tee -a "$IMG.log"; fi
  done
done
$PY - "$IMG.log" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    _, i, v, sec = line.split()
    t.setdefault(v, {})[i] = float(sec)
r = [t["new"][i] / t["old"][i] for i in t["old"]]
print(f"old median {statistics.median(t['old'].values()):.2f} s, new median "
      f"{statistics.median(t['new'].values()):.2f} s; new/old per pair: median "
      f"{statistics.median(r):.2f} (range {min(r):.2f}-{max(r):.2f}), {len(r)} pairs")
PY
cmp -s "$IMG.old.json" "$IMG.new.json" && echo "the same predictions" || echo "predictions DIFFER"
rm -f "$IMG" "$IMG".*.json "$IMG.log"
