"""`alexnet train --decode device` on the CPU, side by side: batches decoded and augmented one
ahead on a thread (data/ahead.py, ahead=1: the default) against each batch prepared when the
step asks for it (ahead=0). Rounds alternate the two; the figure is metrics.jsonl's
img_per_s_after_first_step of one epoch of `shapes:768:64` prepared as JPEG shards, batch 64.

    python3 experiments/cpu-speed/ahead_decode_device.py [ROUNDS] [WORKDIR]
"""
import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import alexnet.train as train
from alexnet.data import ahead as ahead_module
from alexnet.cli import main as cli
from alexnet.data import prepare as prep
from alexnet.data.ahead import augmented


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    root = Path(sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="ahead-"))
    if not (root / "jpeg").exists():
        prep.prepare("shapes:768:64", root / "jpeg", encoding="jpeg", workers=2, progress=False)
    # The thread runs for CUDA only (decided by this measurement): here on the CPU too.
    ahead_module.THREADED = ("cuda", "cpu")
    rates = {1: [], 0: []}
    for r in range(rounds):
        for ahead in rates:
            train.augmented = functools.partial(augmented, ahead=ahead)
            out = root / f"run-{r}-{ahead}"
            shutil.rmtree(out, ignore_errors=True)  # (a rerun in the same WORKDIR)
            assert cli(["train", "--data", str(root / "jpeg"), "--decode", "device", "--epochs",
                        "1", "--batch-size", "64", "--no-progress", "--eval-crops", "1",
                        "--out", str(out)]) == 0
            last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
            rates[ahead].append(last["img_per_s_after_first_step"])
    print("\n| round | ahead=1 img/s | ahead=0 img/s | ratio |\n|---:|---:|---:|---:|")
    for r, (a, b) in enumerate(zip(rates[1], rates[0])):
        print(f"| {r + 1} | {a:.1f} | {b:.1f} | {a / b:.3f} |")


if __name__ == "__main__":
    main()
