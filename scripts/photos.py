"""Photo-sized JPEGs for scripts/cuda_check.sh: N training and V validation images (500×375, as
`alexnet bench data` makes them) in ROOT/train and ROOT/val, made by one process per core.

    python3 scripts/photos.py ROOT N V
"""
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from alexnet.benchmarks.data import make_photos


def main(root: str, n: int, val: int) -> None:
    procs = os.cpu_count() or 1
    jobs = []
    for split, total, seed in (("train", n, 0), ("val", val, 1000)):
        if total == 0:
            continue
        share = -(-total // procs)
        for k, first in enumerate(range(0, total, share)):
            jobs.append((Path(root), min(share, total - first), 10, seed + k, first, split))
    with ProcessPoolExecutor(procs) as pool:
        for job in [pool.submit(make_photos, *args) for args in jobs]:
            job.result()
    print(f"{n} train and {val} val photos in {root}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
