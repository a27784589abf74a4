"""Datasets, one-time preparation, augmentation and the fast loader (the paper, §4.1).

    from alexnet.data import open_dataset, Loader
    from alexnet.data.augment import Augment

    train = open_dataset("shapes", "train")   # or "fashion-mnist", a prepared dir, an ImageFolder
    aug = Augment(train.stats(), crop_size=227)
    for images, labels in Loader(train, 128, shuffle=True):
        x = aug.train(images.to(device))          # float32 (B, C, 227, 227), mean image subtracted

Dataset specs (`--data` everywhere):
- "shapes[:TRAIN_N[:VAL_N]]": the built-in procedural dataset (alexnet.data.shapes).
- "fashion-mnist[:DIR]": the four IDX .gz files (default /usr/share/datasets/fashion-mnist).
- a directory made by `alexnet prepare` (has manifest.json): the fast path.
- an ImageFolder tree DIR/train/<class>/*, DIR/val/<class>/*; DIR/val may also be ILSVRC-2012's
  flat validation folder, with its label file given as `val_labels=`.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import AlexNetError
from .fashion import FashionMNIST
from .folder import ImageFolder, class_dirs
from .imageset import ImageSet, StatsAccumulator
from .loader import Loader
from .prepared import Prepared, looks_half_prepared
from .shapes import Shapes, parse_spec

SPLITS = ("train", "val")

__all__ = ["open_dataset", "ImageSet", "Loader", "StatsAccumulator", "SPLITS"]


def open_dataset(spec: str, split: str = "train", *, seed: int = 0, val_labels=None,
                 image_size: int = 256) -> ImageSet:
    """Open one split ("train" or "val") of the dataset named by `spec` (see the module doc).

    `seed` only matters for the procedural `shapes`; `val_labels` is the ground-truth file of a
    flat ILSVRC-2012 validation folder. Bad input raises AlexNetError with a one-line message."""
    if split not in SPLITS:
        raise AlexNetError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    spec = str(spec)
    if not spec.strip():  # Path("") would be the current directory
        raise AlexNetError("the dataset is an empty string; give shapes, fashion-mnist or a path",
                           option="data")
    if val_labels is not None:
        _check_val_labels(spec, val_labels)
    name = builtin(spec)
    if name == "shapes":
        train_n, val_n = parse_spec(spec)
        sizes = {k: v for k, v in (("train", train_n), ("val", val_n)) if v is not None}
        return Shapes(split, seed=seed, image_size=image_size, sizes=sizes)
    if name == "fashion-mnist":
        root = spec.split(":", 1)[1] if ":" in spec else None
        return FashionMNIST(split, root=root, image_size=image_size)
    path = Path(spec).expanduser()
    if not path.exists():
        raise AlexNetError(f"dataset not found: {spec} (expected shapes, fashion-mnist[:DIR], "
                           "a prepared directory or an ImageFolder tree)")
    if not path.is_dir():
        raise AlexNetError(f"dataset {spec} is not a directory")
    if (path / "manifest.json").exists():
        return Prepared(path, split)
    if looks_half_prepared(path):
        raise AlexNetError(f"{spec} is an unfinished `alexnet prepare` output (no manifest.json): "
                           "rerun the same prepare command to finish it")
    return ImageFolder(path, split, val_labels=val_labels, image_size=image_size)


def builtin(spec: str) -> str | None:
    """"shapes" or "fashion-mnist" when `spec` names that built-in set, else None: a path that
    exists (a folder called shapes) is the user's data, not ours."""
    name = spec.split(":", 1)[0]
    return name if name in ("shapes", "fashion-mnist") and not Path(spec).exists() else None


def _check_val_labels(spec: str, val_labels) -> None:
    """A --val-labels file that is missing, or given with a dataset that has its labels, was
    ignored in silence: a misspelt path went unnoticed."""
    if Path(val_labels).is_dir():
        raise AlexNetError(f"{val_labels} is a directory, not a val labels file",
                           option="val_labels")
    if not Path(val_labels).is_file():
        raise AlexNetError(f"val labels file not found: {val_labels}", option="val_labels")
    path = Path(spec).expanduser()
    builtin = not path.exists() and spec.split(":", 1)[0] in ("shapes", "fashion-mnist")
    has_labels = builtin or (path / "manifest.json").exists() or (
        (path / "val").is_dir() and bool(class_dirs(path / "val")))
    if has_labels:
        raise AlexNetError(f"{spec} has its own validation labels; --val-labels is for a flat "
                           f"folder of ImageNet validation images", option="val_labels")
