"""torch.load of one checkpoint through its path and through a file object, alternating in one
process (the order alternating too), 5 pairs after one warm-up pair; medians in seconds.

    .venv/bin/python experiments/cpu-speed/torch_load_path_or_file.py CHECKPOINT
"""
import statistics
import sys
import time

import torch

path = sys.argv[1]
times = {"path": [], "file": []}
for i in range(6):
    for how in ("path", "file") if i % 2 else ("file", "path"):
        start = time.perf_counter()
        if how == "path":
            obj = torch.load(path, weights_only=True)
        else:
            with open(path, "rb") as f:
                obj = torch.load(f, weights_only=True)
        if i:  # pair 0 warms the page cache
            times[how].append(time.perf_counter() - start)
        del obj
print({how: round(statistics.median(ts), 3) for how, ts in times.items()})
