"""A loader worker's JPEG decode, Pillow against torchvision (both libjpeg-turbo), side by side in
one run: N photo-sized JPEGs (as `alexnet bench data` makes them) are prepared as JPEG shards, then
batches are read from them with each decoder in turn, rounds alternating, in this one process
(one core: what one worker has). Prints the images a second of each, their ratio, and how far
apart their pixels are.

    python scripts/jpeg_decoders.py [--images 512] [--batch-size 128] [--rounds 5]
"""
import argparse
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from alexnet.benchmarks.data import make_photos
from alexnet.data import open_dataset
from alexnet.data import prepare as prep
from alexnet.data import prepared


def pillow(buf: np.ndarray, channels: int) -> torch.Tensor:
    """The decode the loader ran before session 30."""
    with Image.open(io.BytesIO(buf.tobytes())) as img:
        a = np.asarray(img.convert("RGB" if channels == 3 else "L"))
    return torch.from_numpy(a if channels == 3 else a[:, :, None])


def read(data, idx, decoder) -> torch.Tensor:
    """Batch `idx` of `data`, decoded by `decoder` in place of prepared.decode_jpeg."""
    keep, prepared.decode_jpeg = prepared.decode_jpeg, decoder
    try:
        return data.get_batch(idx)
    finally:
        prepared.decode_jpeg = keep


def rate(data, batches, decoder) -> float:
    start = time.perf_counter()
    for idx in batches:
        read(data, idx, decoder)
    return sum(map(len, batches)) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # Pillow's
    torchvision = prepared.decode_jpeg
    with tempfile.TemporaryDirectory() as tmp:
        make_photos(Path(tmp, "photos"), args.images, 10, 0, 0, "train")
        make_photos(Path(tmp, "photos"), 10, 10, 1, 0, "val")
        prep.prepare(str(Path(tmp, "photos")), Path(tmp, "jpeg"), encoding="jpeg", workers=1,
                     progress=False)
        data = open_dataset(Path(tmp, "jpeg"), "train")
        order = np.random.default_rng(0).permutation(len(data))
        batches = [order[i:i + args.batch_size] for i in range(0, len(data), args.batch_size)]
        apart = (read(data, batches[0], torchvision).int()  # (and a warm-up of both)
                 - read(data, batches[0], pillow).int()).abs()
        rates = {"pillow": [], "torchvision": []}
        for _ in range(args.rounds):
            rates["pillow"].append(rate(data, batches, pillow))
            rates["torchvision"].append(rate(data, batches, torchvision))
    print(f"{len(data)} images of {data.image_size}², batch {args.batch_size}, "
          f"{args.rounds} rounds alternating, one thread")
    print("| decoder | img/s (median) | rounds |\n|---|---|---|")
    for name, r in rates.items():
        print(f"| {name} | {statistics.median(r):.0f} | {', '.join(f'{x:.0f}' for x in r)} |")
    ratios = [t / p for p, t in zip(rates["pillow"], rates["torchvision"])]
    print(f"torchvision / pillow, per round: {', '.join(f'{x:.2f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.2f})")
    print(f"pixels apart: max {apart.max().item()}, mean {apart.float().mean().item():.4f}")


if __name__ == "__main__":
    main()
