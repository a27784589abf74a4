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

from ..errors import UserError
from .imageset import ImageSet, StatsAccumulator

SPLITS = ("train", "val")

__all__ = ["open_dataset", "ImageSet", "Loader", "StatsAccumulator", "SPLITS"]


def open_dataset(spec: str, split: str = "train", *, seed: int = 0, val_labels=None,
                 image_size: int = 256) -> ImageSet:
    """Open one split ("train" or "val") of the dataset named by `spec` (see the module doc).

    `seed` only matters for the procedural `shapes`; `val_labels` is the ground-truth file of a
    flat ILSVRC-2012 validation folder. Bad input raises UserError with a one-line message."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: expected one of {', '.join(SPLITS)}")
    spec = str(spec)
    name = spec.split(":", 1)[0]
    if name == "shapes" and not Path(spec).exists():
        from .shapes import Shapes, parse_spec

        train_n, val_n = parse_spec(spec)
        sizes = {k: v for k, v in (("train", train_n), ("val", val_n)) if v is not None}
        return Shapes(split, seed=seed, image_size=image_size, sizes=sizes)
    if name == "fashion-mnist" and not Path(spec).exists():
        from .fashion import FashionMNIST

        root = spec.split(":", 1)[1] if ":" in spec else None
        return FashionMNIST(split, root=root, image_size=image_size)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"dataset not found: {spec} (expected shapes, fashion-mnist[:DIR], "
                        "a prepared directory or an ImageFolder tree)")
    if not path.is_dir():
        raise UserError(f"dataset {spec} is not a directory")
    if (path / "manifest.json").exists():
        from .prepared import Prepared

        return Prepared(path, split)
    from .prepared import looks_half_prepared

    if looks_half_prepared(path):
        raise UserError(f"{spec} is an unfinished `alexnet prepare` output (no manifest.json): "
                        "rerun the same prepare command to finish it")
    from .folder import ImageFolder

    return ImageFolder(path, split, val_labels=val_labels, image_size=image_size)


def __getattr__(name):
    # Loader pulls in threading machinery; import it only when asked for.
    if name == "Loader":
        from .loader import Loader

        return Loader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
