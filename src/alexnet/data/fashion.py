"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) from its four IDX .gz files: real, offline data.

Debian's package dataset-fashion-mnist installs them at /usr/share/datasets/fashion-mnist. The
images are 28×28 grey, so `channels` is 1 and the model takes in_channels=1. They are resized to
256×256 (bilinear: the paper's "shorter side to 256"; they are square, so no crop) batch by batch
when read, which keeps the 60,000 training images at 47 MB in memory instead of 3.9 GB.

Fashion-MNIST has a training set (60,000) and a test set (10,000) and no validation set: our "val"
split is its test set, the usual practice for it.
"""
from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .imageset import ImageSet, file_stamps, key_of, new_batch

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


class FashionMNIST(ImageSet):
    def __init__(self, split: str = "train", root: str | None = None, image_size: int = 256):
        self.root = Path(root or DEFAULT_ROOT).expanduser()
        self.split, self.image_size, self.channels = split, image_size, 1
        self.classes = list(CLASSES)
        images_file, labels_file = (self.root / f for f in FILES[split])
        missing = [p.name for p in (images_file, labels_file) if not p.is_file()]
        if missing:
            raise DataError(f"Fashion-MNIST files missing in {self.root}: {', '.join(missing)} "
                            "(install Debian's package dataset-fashion-mnist, or give "
                            "fashion-mnist:DIR with the four IDX .gz files)")
        self.images, labels = read_idx(images_file), read_idx(labels_file)
        check_idx([images_file, labels_file], self.images, labels)
        self.labels = labels.astype(np.int64)

    def train_split(self) -> "FashionMNIST":
        return self if self.split == "train" else FashionMNIST("train", str(self.root),
                                                               self.image_size)

    def cache_key(self) -> str:
        return key_of(kind="fashion-mnist", root=str(self.root.resolve()), size=self.image_size,
                      n=len(self.train_split()),
                      stamps=file_stamps(self.root / f for f in FILES["train"]))

    def _load(self, indices: np.ndarray) -> torch.Tensor:
        small = torch.from_numpy(self.images[indices]).unsqueeze(1).float()  # (B, 1, 28, 28)
        big = F.interpolate(small, size=(self.image_size, self.image_size), mode="bilinear",
                            align_corners=False)
        out = new_batch((len(indices), self.image_size, self.image_size, 1))
        return out.copy_(big.round_().clamp_(0, 255).permute(0, 2, 3, 1))


def check_idx(paths: list[Path], images: np.ndarray, labels: np.ndarray) -> None:
    """Images and labels that fit each other and Fashion-MNIST's 10 classes (else a one-line error
    naming the files, not an IndexError deep in training)."""
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{paths[0]} and {paths[1]} must hold images (N, H, W) and labels (N,), "
                        f"not {images.shape} and {labels.shape}", option="data")
    if len(images) != len(labels):
        raise DataError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds "
                        f"{len(labels)} labels: the counts must be equal", option="data")
    if labels.size and labels.max() >= len(CLASSES):
        raise DataError(f"{paths[1]} holds label {labels.max()}: Fashion-MNIST's are 0–9",
                        option="data")


@functools.lru_cache(maxsize=8)
def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzip'd or not, as a read-only uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # zlib.error: a damaged .gz stream
        raise DataError(f"cannot read {path}: {e}") from None
    # Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then
    # one big-endian int32 per dimension.
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header names {ndim} dimensions")
    dims = np.frombuffer(data, ">i4", count=ndim, offset=4).tolist()
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if min(dims, default=0) < 0 or body.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: {body.size} bytes for shape {tuple(dims)}")
    return body.reshape(dims)
