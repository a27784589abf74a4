"""The dataset interface every source implements, and the training-set statistics of the paper.

An `ImageSet` is one split of one dataset: `len(s)` images, `s.labels[i]` in
`range(len(s.classes))`, and `s.get_batch(indices)`, a uint8 (B, size, size, C) NHWC CPU tensor of the images already at the
paper's 256×256 (shorter side resized to 256, centre crop). Augmentation happens later, batched, on
the training device (`alexnet.data.augment`).

`stats()` are those of the dataset's TRAINING split, whatever split `s` is, because the paper
normalises val and test images with the training set's mean image. Pixel scale is 0..255.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..io import atomic_write
from ..machine import cache_dir
from ..progress import Progress

STAT_KEYS = ("mean_image", "mean", "std", "eigval", "eigvec")
# Statistics of a set that is not prepared (computed on the fly, cached) come from an evenly spaced
# sample of this many training images. Deviation: the paper uses the whole training set; `alexnet
# prepare` does too. The mean image of 4096 samples is within ~1 grey level of the full mean.
STATS_SAMPLE = 4096

_memory_cache: dict[str, dict] = {}


class ImageSet:
    """One split of a dataset. Subclasses set the attributes and implement `_load`."""

    classes: list[str]
    labels: np.ndarray  # int64 (N,)
    channels: int = 3
    image_size: int = 256
    split: str = "train"

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, n={len(self)}, "
                f"classes={len(self.classes)}, channels={self.channels})")

    def get_batch(self, indices) -> torch.Tensor:
        """uint8 (B, size, size, C) NHWC images for `indices` (a sequence or 1-D array of ints)."""
        images, _ = self.read(indices)
        return images

    def read(self, indices) -> tuple[torch.Tensor, list[tuple[int, str]]]:
        """Like get_batch, but also returns the images that could not be read, as (index, why);
        those come back black, for the caller to drop (`drop_failed`): the Loader, the
        statistics and `alexnet prepare` skip and list them. Only files on disk can fail (an
        ImageFolder); the other sets never return errors."""
        return self._load(np.asarray(indices, dtype=np.int64)), []

    def describe(self, index: int) -> str:
        """How to name image `index` in a report: its file where it has one."""
        return f"{self.split}[{index}]"

    def _load(self, indices: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    # ---- statistics of the training split -----------------------------------------------------

    def cache_key(self) -> str | None:
        """A string that identifies this dataset's training split, or None to not cache stats."""
        return None

    def train_split(self) -> "ImageSet":
        """The training split of this dataset (whose statistics `stats()` returns)."""
        raise NotImplementedError

    def stats(self) -> dict[str, torch.Tensor]:
        """Training-split statistics: mean_image (S,S,C), mean, std, eigval (C,), eigvec (C,C).

        Cached in memory and, when the set has a cache key, on disk under $ALEXNET_CACHE
        (default ~/.cache/alexnet), so that only the first run pays for them."""
        key = self.cache_key()
        if key is not None and key in _memory_cache:
            return _memory_cache[key]
        stats = _load_disk_cache(key, (self.image_size, self.image_size, self.channels))
        if stats is None:
            train = self.train_split()
            sample = stats_sample(len(train))
            acc = StatsAccumulator(train.image_size, train.channels)
            failed = []
            starts = range(0, len(sample), 128)
            # A first run on `shapes` renders its images here: about 100 s of silence without a
            # bar (shown on a terminal only: logs and tests stay as they were).
            with Progress(len(starts), f"statistics of {len(sample)} training images (once)",
                          enabled=sys.stderr.isatty()) as bar:
                for start in starts:
                    batch = sample[start:start + 128]
                    images, errors = train.read(batch)
                    acc.add(drop_failed(images, batch, errors)[0])  # a bad file: no black image
                    failed += errors
                    bar.update()
            if acc.count == 0:
                i, why = failed[0]
                raise DataError(f"none of the {len(sample)} training images sampled for the "
                                f"statistics could be read, e.g. {train.describe(i)}: {why}")
            stats = acc.result()
            _save_disk_cache(key, stats)
        if key is not None:
            _memory_cache[key] = stats
        return stats


def drop_failed(images, indices, errors) -> tuple[torch.Tensor, np.ndarray]:
    """The rows of a `read` batch that were read, and their indices: `errors` from `read` removed.
    Without errors, the batch itself (no copy)."""
    indices = np.asarray(indices, dtype=np.int64)
    if not errors:
        return images, indices
    bad = {i for i, _ in errors}
    keep = [r for r, i in enumerate(indices.tolist()) if i not in bad]
    return images[keep], indices[keep]


def new_batch(shape, dtype=torch.uint8) -> torch.Tensor:
    """An uninitialised tensor for a batch. Inside a DataLoader worker it is allocated in shared
    memory, as default_collate does: handing it to the main process then copies nothing, where a
    private tensor would be copied into shared memory first (measured: 0.5 ms per 224² float
    image on this machine, more than the whole augmentation)."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


class StatsAccumulator:
    """Streaming sums for the paper's statistics; partial sums from several workers can be merged.

    Sums are float64: 10^6 images × 65536 pixels of values up to 255² would lose digits in float32.
    """

    def __init__(self, size: int, channels: int):
        self.count = 0
        self.sum_image = np.zeros((size, size, channels), np.float64)
        self.sum_pixel = np.zeros(channels, np.float64)
        self.sum_outer = np.zeros((channels, channels), np.float64)

    def add(self, images) -> None:
        x = torch.as_tensor(images)
        if len(x) == 0:
            return
        self.count += len(x)
        xf = x.to(torch.float64)
        self.sum_image += xf.sum(0).numpy()
        pixels = xf.reshape(-1, x.shape[-1])
        self.sum_pixel += pixels.sum(0).numpy()
        self.sum_outer += (pixels.T @ pixels).numpy()

    def merge(self, other: "StatsAccumulator") -> None:
        self.count += other.count
        self.sum_image += other.sum_image
        self.sum_pixel += other.sum_pixel
        self.sum_outer += other.sum_outer

    def state(self) -> dict[str, np.ndarray]:
        return {"count": np.array(self.count), "sum_image": self.sum_image,
                "sum_pixel": self.sum_pixel, "sum_outer": self.sum_outer}

    @classmethod
    def from_state(cls, state) -> "StatsAccumulator":
        acc = cls(state["sum_image"].shape[0], state["sum_image"].shape[2])
        acc.count = int(state["count"])
        acc.sum_image[...] = state["sum_image"]
        acc.sum_pixel[...] = state["sum_pixel"]
        acc.sum_outer[...] = state["sum_outer"]
        return acc

    def result(self) -> dict[str, torch.Tensor]:
        if self.count == 0:
            raise ValueError("no images to compute statistics from")
        n_pixels = self.count * self.sum_image.shape[0] * self.sum_image.shape[1]
        mean = self.sum_pixel / n_pixels
        cov = self.sum_outer / n_pixels - np.outer(mean, mean)
        # eigh returns ascending eigenvalues; the paper's λ1 is the largest, so sort descending.
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        eigval = np.clip(eigval[order], 0.0, None)  # tiny negative round-off of a flat channel
        eigvec = eigvec[:, order]
        out = {"mean_image": self.sum_image / self.count, "mean": mean,
               "std": np.sqrt(np.clip(np.diag(cov), 0.0, None)), "eigval": eigval, "eigvec": eigvec}
        return {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.float32)
                for k, v in out.items()}


def load_numpy(path):
    """np.load without pickles: an .npy array or an .npz archive (use it in a `with`). For any
    other file numpy says it "contains pickled (object) data" and suggests loading it unsafely,
    the wrong cause and advice not to follow: here it is a ValueError saying what it is not."""
    with open(path, "rb") as f:
        head = f.read(6)
    if not head.startswith((b"\x93NUMPY", b"PK\x03\x04")):  # .npy's magic; .npz is a zip
        raise ValueError("not a NumPy .npy or .npz file")
    return np.load(path, allow_pickle=False)


def save_stats(path, stats: dict[str, torch.Tensor]) -> None:
    """Write stats as an .npz (plain arrays, no pickle), atomically."""
    def write(tmp: Path):
        with open(tmp, "wb") as f:
            np.savez(f, **{k: stats[k].numpy() for k in STAT_KEYS})
    atomic_write(path, write)


def load_stats(path, shape: tuple[int, int, int] | None = None) -> dict[str, torch.Tensor]:
    """Statistics written by save_stats; DataError if the file is missing, damaged or not of the
    expected mean-image `shape` (S, S, C) (when given)."""
    try:
        with load_numpy(path) as z:
            stats = {k: torch.from_numpy(z[k].astype(np.float32)) for k in STAT_KEYS}
    # np.load and its zip reader raise all of these for a truncated or foreign file
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read statistics {path}: {type(e).__name__}: {e}") from None
    m = stats["mean_image"]
    c = m.shape[-1] if m.ndim == 3 else 0
    ok = (m.ndim == 3 and m.shape[0] == m.shape[1] and c in (1, 3)
          and all(stats[k].shape == (c,) for k in ("mean", "std", "eigval"))
          and stats["eigvec"].shape == (c, c)
          and all(bool(torch.isfinite(v).all()) for v in stats.values()))
    if not ok or (shape is not None and tuple(m.shape) != tuple(shape)):
        want = f" for {shape[0]}×{shape[1]}×{shape[2]} images" if shape else ""
        raise DataError(f"statistics {path} are damaged or do not fit{want} (mean image "
                        f"{tuple(m.shape)})")
    return stats


def _cache_file(key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir() / "stats" / f"{digest}.npz"


def _load_disk_cache(key: str | None, shape):
    if key is None:
        return None
    path = _cache_file(key)
    if not path.is_file():
        return None
    try:
        return load_stats(path, shape)
    except DataError:
        return None  # damaged (a full disk, a foreign file): recomputed and written over


def _save_disk_cache(key: str | None, stats) -> None:
    if key is None:
        return
    try:
        save_stats(_cache_file(key), stats)
    except OSError:
        pass  # a read-only home only costs the recomputation next time


def key_of(**fields) -> str:
    return json.dumps(fields, sort_keys=True)


def stats_sample(n: int) -> np.ndarray:
    """The indices of the training images the statistics are computed from: STATS_SAMPLE of them
    spread evenly (all of a smaller set)."""
    return np.unique(np.linspace(0, n - 1, min(n, STATS_SAMPLE)).round().astype(np.int64))


def file_stamps(paths) -> str:
    """A digest of the files' sizes and modification times, for a cache key: images written again
    under the same names (a dataset made anew) then get new statistics, not the old ones."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            st = os.stat(path)
            digest.update(f"{st.st_size} {st.st_mtime_ns}\n".encode())
        except OSError:  # unreadable: the statistics skip it, and the key says so
            digest.update(b"-\n")
    return digest.hexdigest()[:32]
