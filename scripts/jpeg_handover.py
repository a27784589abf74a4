"""How a loader worker hands a batch of JPEG bytes to the training process (--decode device):
one buffer (prepared.JpegBatch) against one tensor per image (before session 17), side by side in
one run. Reports the training process's own CPU time per batch (what it spends receiving, not the
workers' reading) and the open file descriptors it holds at the end of an epoch.

    python scripts/jpeg_handover.py DIR [--workers 2] [--batch-size 128] [--rounds 3]

DIR: prepared JPEG shards (alexnet prepare SRC DIR --format jpeg)."""
import argparse
import os
import time

import torch

from alexnet.data import Loader, open_dataset


class PerImage:
    """The old hand-over: the same bytes as one tensor per image, each with its own storage."""

    def __init__(self, data):
        self.data = data

    def __getattr__(self, name):
        return getattr(self.data, name)

    def __len__(self):
        return len(self.data)

    def encoded(self, indices):
        return [f.clone() for f in self.data.encoded(indices).files()]


def epoch(loader) -> tuple[float, int, int]:
    """(training process CPU ms per batch, batches, most fds open while batches were held)."""
    held, most, n = [], 0, 0
    start = time.process_time()
    for images, _ in loader:
        held = (held + [images])[-6:]  # a few batches in flight, as a prefetching trainer holds
        most = max(most, len(os.listdir("/proc/self/fd")))
        n += 1
    return 1000 * (time.process_time() - start) / n, n, most


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    data = open_dataset(args.data, "train")
    loaders = {name: Loader(d, args.batch_size, shuffle=True, workers=args.workers, encoded=True)
               for name, d in (("one buffer", data), ("per image", PerImage(data)))}
    for loader in loaders.values():
        epoch(loader)  # start the workers, warm the page cache
    rows = {name: [] for name in loaders}
    for _ in range(args.rounds):  # interleaved: the machine's load hits both alike
        for name, loader in loaders.items():
            rows[name].append(epoch(loader))
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {args.workers} workers, "
          f"batch {args.batch_size}, {len(data)} images")
    print("| hand-over | CPU ms per batch (median of rounds) | fds open (max) |")
    print("|---|---:|---:|")
    for name, r in rows.items():
        ms = sorted(x[0] for x in r)[len(r) // 2]
        print(f"| {name} | {ms:.2f} | {max(x[2] for x in r)} |")


if __name__ == "__main__":
    main()
