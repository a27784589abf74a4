#!/bin/bash
# `alexnet predict` start-up, two source trees side by side (alternating, 5 pairs), one image:
# the time from the command to its answer, most of it importing torch and loading the checkpoint.
#   bash experiments/cpu-speed/predict_startup.sh OLD_SRC NEW_SRC CHECKPOINT
# e.g. OLD_SRC from `git worktree add /tmp/old <commit>` (then /tmp/old/src). Run nothing else.
set -e
OLD=$1 NEW=$2 CKPT=$3
cd "$(dirname "$0")/../.."
PY=$PWD/.venv/bin/python
IMG=$(mktemp --suffix .png)
$PY -c "from PIL import Image; import numpy as np, sys; Image.fromarray((np.random.default_rng(0)
.random((300, 300, 3)) * 255).astype('uint8')).save(sys.argv[1])" "$IMG"
for i in 1 2 3 4 5; do
  for v in old new; do
    if [ $v = old ]; then P=$OLD; else P=$NEW; fi
    s=$(date +%s.%N)
    PYTHONPATH=$P $PY -m alexnet predict "$CKPT" "$IMG" --json > "$IMG.$v.json"
    e=$(date +%s.%N)
    echo "pair $i $v $(echo "$e - $s" | bc) s"
  done
done
cmp -s "$IMG.old.json" "$IMG.new.json" && echo "the same predictions" || echo "predictions DIFFER"
rm -f "$IMG" "$IMG".*.json
