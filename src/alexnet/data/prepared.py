"""Reading a dataset made by `alexnet prepare` (the format is described in alexnet.data.prepare).

Raw shards are memory-mapped: reading a batch is one copy per image out of the page cache, no
decoding. JPEG shards are decoded with Pillow (libjpeg-turbo) batch by batch.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .imageset import ImageSet, load_stats, new_batch

FORMAT, VERSION = "alexnet-prepared", 1
MANIFEST, CONFIG, STATS, REPORT = "manifest.json", "prepare.json", "stats.npz", "report.txt"


def shard_name(split: str, k: int, encoding: str) -> str:
    return f"{split}-{k:05d}.{'u8' if encoding == 'raw' else 'jpg'}"


def looks_half_prepared(path: Path) -> bool:
    """An output directory of `alexnet prepare` that has no manifest yet (interrupted)."""
    return (path / CONFIG).exists() and not (path / MANIFEST).exists()


class Prepared(ImageSet):
    def __init__(self, root, split: str = "train"):
        self.root, self.split = Path(root), split
        try:
            manifest = json.loads((self.root / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read {self.root / MANIFEST}: {e}") from None
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise UserError(f"{self.root} is not an {FORMAT} v{VERSION} directory")
        if split not in manifest["splits"]:
            raise UserError(f"{self.root} has no {split!r} split "
                            f"(it has: {', '.join(manifest['splits'])})")
        self.manifest = manifest
        self.classes = list(manifest["classes"])
        self.channels, self.image_size = manifest["channels"], manifest["image_size"]
        self.encoding = manifest["encoding"]
        info = manifest["splits"][split]
        self.labels = np.load(self.root / info["labels"]).astype(np.int64)
        self.shard_files = [s["file"] for s in info["shards"]]
        counts = np.array([s["count"] for s in info["shards"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])  # shard k holds starts[k]..[k+1]
        if self.starts[-1] != len(self.labels):
            raise UserError(f"{self.root}: {split} shards hold {self.starts[-1]} images but "
                            f"there are {len(self.labels)} labels")
        self._open = {}  # shard -> memmap (raw) or (memmap of bytes, offsets) (jpeg); per process

    def __getstate__(self):
        # Memmaps would pickle as copies of the data: reopen them in the other process instead.
        return {**self.__dict__, "_open": {}}

    def train_split(self) -> "Prepared":
        return self if self.split == "train" else Prepared(self.root, "train")

    def stats(self) -> dict[str, torch.Tensor]:
        # Computed over the whole training split by `prepare`, stored with the data.
        if not hasattr(self, "_stats"):
            self._stats = load_stats(self.root / self.manifest["stats"])
        return self._stats

    def _shard(self, k: int):
        if k not in self._open:
            path = self.root / self.shard_files[k]
            count = int(self.starts[k + 1] - self.starts[k])
            if self.encoding == "raw":
                shape = (count, self.image_size, self.image_size, self.channels)
                # mode "c" (copy-on-write) maps the file read-only on disk but gives writable
                # arrays, which torch.from_numpy takes without a warning; nothing writes to them.
                self._open[k] = np.memmap(path, np.uint8, "c", shape=shape) if count else \
                    np.zeros(shape, np.uint8)
            else:
                offsets = np.load(path.with_suffix(".idx.npy"))
                data = np.memmap(path, np.uint8, "r") if offsets[-1] else np.zeros(0, np.uint8)
                self._open[k] = (data, offsets)
        return self._open[k]

    def _load(self, indices: np.ndarray) -> torch.Tensor:
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        s = self.image_size
        batch = new_batch((len(indices), s, s, self.channels))
        out = batch.numpy()  # the same memory, for NumPy's gathers
        shards = np.searchsorted(self.starts, indices, side="right") - 1
        for k in np.unique(shards):
            rows = np.flatnonzero(shards == k)
            local = indices[rows] - self.starts[k]
            if self.encoding == "raw":
                out[rows] = self._shard(k)[local]  # one gather per shard out of the page cache
            else:
                data, offsets = self._shard(k)
                for row, j in zip(rows.tolist(), local.tolist()):
                    out[row] = decode_jpeg(data[offsets[j]:offsets[j + 1]], self.channels)
        return batch


    def views(self, indices) -> list[torch.Tensor] | None:
        """Raw shards: the images as (S, S, C) tensors that are views of the mapped files, no
        copy. Augment crops straight out of them, so a batch of 256×256 images is never
        materialised (the Loader uses this when it runs the augmentation). JPEG: None."""
        if self.encoding != "raw":
            return None
        indices = np.asarray(indices, dtype=np.int64)
        shards = np.searchsorted(self.starts, indices, side="right") - 1
        return [torch.from_numpy(self._shard(k)[i - self.starts[k]])
                for k, i in zip(shards.tolist(), indices.tolist())]


def decode_jpeg(buf: np.ndarray, channels: int) -> np.ndarray:
    with Image.open(io.BytesIO(buf.tobytes())) as img:
        a = np.asarray(img.convert("RGB" if channels == 3 else "L"))
    return a if channels == 3 else a[:, :, None]
