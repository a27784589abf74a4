"""Rendered images kept on disk, so that a procedural set (`shapes`) is rendered once, not once
per epoch and per run.

Why: rendering a 256×256 `shapes` image costs about 4 ms of one core on an AVX2 CPU, 6% of a
training step's work per image on 2 cores, and on a GPU machine the render, not the GPU, would
set the pace. The images are a pure function of (seed, split, index, size), so they can be kept.

The file, one per set (cache_dir()/images/<hash of the set's key>.u8): N flag bytes, then N
images of S×S×C uint8. Every process that reads the set maps it (the loader's workers included:
the page cache is their shared memory). An image is written before its flag, so a run killed
between the two leaves an unflagged image, rendered again next time. The file's whole size is
reserved when it is made (posix_fallocate): a full disk then means no cache, rather than a SIGBUS
in the middle of an epoch. Sets larger than LIMIT bytes are not cached, nor anything when
ALEXNET_IMAGE_CACHE=0. The file may be deleted at any time between runs.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from ..machine import cache_dir, env_flag

LIMIT = 4 << 30  # bytes; the demo's 10,000 shapes take 1.97 GB


class ImageCache:
    def __init__(self, key: str, n: int, shape: tuple[int, int, int]):
        self.n, self.shape = n, tuple(shape)
        self.size = n * (1 + int(np.prod(shape)))
        digest = hashlib.sha256(key.encode()).hexdigest()[:24]
        self.path = cache_dir() / "images" / f"{digest}.u8"
        self._map = None  # (flags, images), opened per process on first use

    @classmethod
    def create(cls, key: str, n: int, shape) -> "ImageCache | None":
        """The cache of this set, or None when it is off or too large."""
        cache = cls(key, n, shape)
        if not env_flag("ALEXNET_IMAGE_CACHE") or cache.size > LIMIT:
            return None
        return cache

    def __getstate__(self):  # a memmap would pickle as a copy: each process maps the file itself
        return {**self.__dict__, "_map": None}

    def _open(self):
        if self._map is None:
            try:
                if not (self.path.is_file() and self.path.stat().st_size == self.size):
                    self._make()
                m = np.memmap(self.path, np.uint8, "r+", shape=(self.size,))
            except OSError:  # no space, a read-only cache directory: render every time
                self._map = False
                return None
            self._map = (m[:self.n], m[self.n:].reshape(self.n, *self.shape))
        return self._map or None

    def _make(self) -> None:
        """Make the file, unless another process (a loader worker, another run) has meanwhile:
        it is published with link(), which, unlike io.atomic_path's rename, never replaces a file
        that another process has mapped and is filling. A stale file of another size is."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=".tmp")
        try:
            os.posix_fallocate(fd, 0, self.size)  # all zeros: no image flagged yet
            try:
                os.link(tmp, self.path)
            except FileExistsError:  # made by another process first (use it), or stale
                if self.path.stat().st_size != self.size:
                    os.replace(tmp, self.path)
        finally:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
        # Silent: commands promise one JSON object on stdout (--json) and one line on stderr for
        # an error; README.md says where the cache is and how large it gets.

    def load(self, indices: np.ndarray, out: np.ndarray, render) -> bool:
        """Fill `out` (B, *shape) with the images of `indices`: those kept read back, the others
        rendered by `render(indices)` (uint8 (b, *shape)) and kept. False without a cache."""
        mapped = self._open()
        if mapped is None:
            return False
        flags, images = mapped
        kept = flags[indices] == 1
        out[kept] = images[indices[kept]]
        missing = np.flatnonzero(~kept)
        if len(missing):
            fresh = np.asarray(render(indices[missing]))
            out[missing] = fresh
            images[indices[missing]] = fresh
            flags[indices[missing]] = 1  # after the images: a kill in between leaves them unflagged
        return True
