"""Image files in the ImageFolder layout (ILSVRC-2012 as usually unpacked), decoded with Pillow.

    ROOT/train/<class>/*.JPEG      ROOT/val/<class>/*.JPEG
or, for ILSVRC-2012's validation set as shipped, a flat ROOT/val/ plus its label file
(`val_labels=`), in either of two formats:
- two columns, `<file name> <label>`, the label a class name (wnid) or an index into the sorted
  class names (Caffe's val.txt);
- the devkit's ILSVRC2012_validation_ground_truth.txt: one ILSVRC2012_ID per line, for the files
  in sorted order. Those IDs are NOT the sorted-wnid order, so the devkit's data/meta.mat must sit
  next to the file (it maps ID -> wnid; reading it needs scipy).

Every image becomes RGB (grey, CMYK, palette, 16-bit and alpha images included), its shorter side
resized to 256 (Pillow's antialiased bilinear, as torchvision's Resize), then centre-cropped to
256×256: the paper's preprocessing. JPEGs are decoded at a reduced DCT scale when they are at least
twice as large as needed (Pillow's draft mode; the scaled DCT is itself an area average). Measured
on 1600×1068 photos: 3-4× faster than a full decode, and the 256×256 result differs from the full
decode's by 0.3-0.5 grey levels on average (7 at most).

This reads originals on every access, which is slow; `alexnet prepare` does it once.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import UserError
from .imageset import ImageSet, key_of, new_batch

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageFolder(ImageSet):
    def __init__(self, root, split: str = "train", *, val_labels=None, image_size: int = 256):
        self.root, self.split, self.image_size = Path(root), split, image_size
        self.channels = 3
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise UserError(f"{split_dir} not found (expected {self.root}/train/<class>/* and "
                            f"{self.root}/val/<class>/*)")
        known = _class_dirs(self.root / "train") if (self.root / "train").is_dir() else None
        subdirs = _class_dirs(split_dir)
        if subdirs:
            self.classes = known or subdirs
            self.files, self.labels = _list_classes(split_dir, subdirs, self.classes)
        else:
            files = _list_images(split_dir)
            if not files:
                raise UserError(f"{split_dir} has no images and no class folders")
            if val_labels is None:
                raise UserError(f"{split_dir} is a flat folder of images: give its ground-truth "
                                "label file (val_labels=FILE / --val-labels FILE)")
            self.classes, self.files, self.labels = _flat_with_labels(files, Path(val_labels),
                                                                      known)
        self._warned = False

    def train_split(self) -> "ImageFolder":
        return self if self.split == "train" else ImageFolder(self.root, "train",
                                                              image_size=self.image_size)

    def cache_key(self) -> str:
        train = self.train_split()
        return key_of(kind="folder", root=str(self.root.resolve()), size=self.image_size,
                      n=len(train), first=str(train.files[0]), last=str(train.files[-1]))

    def read(self, indices) -> tuple[torch.Tensor, list[tuple[int, str]]]:
        indices = np.asarray(indices, dtype=np.int64)
        out = new_batch((len(indices), self.image_size, self.image_size, 3))
        errors = []
        for k, i in enumerate(indices.tolist()):
            try:
                out[k] = torch.from_numpy(load_image(self.files[i], self.image_size))
            except Exception as e:  # any decoder failure: the caller skips or substitutes
                out[k] = 0
                errors.append((i, f"{type(e).__name__}: {e}"))
        return out, errors

    def get_batch(self, indices) -> torch.Tensor:
        images, errors = self.read(indices)
        if errors and not self._warned:
            self._warned = True  # once: a training run should not drown in warnings
            warnings.warn(f"unreadable image(s) replaced by black ones, e.g. "
                          f"{self.files[errors[0][0]]} ({errors[0][1]}); "
                          "`alexnet prepare` skips and lists them", stacklevel=2)
        return images


def load_image(path, size: int = 256) -> np.ndarray:
    """One file -> uint8 (size, size, 3): RGB, shorter side resized to `size`, centre crop."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size * 2, size * 2))  # only shrinks when ≥ 2× the needed size
        img.load()
        img = to_rgb(img)
    w, h = img.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new != (w, h):
        img = img.resize(new, Image.Resampling.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    img = img.crop((left, top, left + size, top + size))
    return np.array(img, dtype=np.uint8)  # a writable copy (torch warns about read-only arrays)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: keep the top 8 bits
        a = np.asarray(img, dtype=np.float64) / 257.0 if img.mode != "I" else np.asarray(img)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow asks for this route for palettes with transparency
    return img.convert("RGB")


def _class_dirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _list_images(path: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if f.lower().endswith(EXTENSIONS) and not f.startswith(".")]
    return found


def _list_classes(split_dir: Path, subdirs: list[str], classes: list[str]):
    index = {c: k for k, c in enumerate(classes)}
    unknown = [d for d in subdirs if d not in index]
    if unknown:
        raise UserError(f"{split_dir} has class folders not in train/: {', '.join(unknown[:5])}")
    files, labels = [], []
    for name in subdirs:
        found = _list_images(split_dir / name)
        if not found:
            raise UserError(f"class folder {split_dir / name} has no images "
                            f"({', '.join(EXTENSIONS)})")
        files += found
        labels += [index[name]] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _flat_with_labels(files: list[Path], label_file: Path, known: list[str] | None):
    if not label_file.is_file():
        raise UserError(f"label file not found: {label_file}")
    rows = [line.split() for line in label_file.read_text().splitlines() if line.strip()]
    if rows and all(len(r) == 1 for r in rows):  # devkit ground truth: IDs in file order
        if len(rows) != len(files):
            raise UserError(f"{label_file} has {len(rows)} labels for {len(files)} images")
        wnids = _devkit_wnids(label_file)
        names = [(f.name, wnids[int(r[0])]) for f, r in zip(files, rows)]
    elif rows and all(len(r) == 2 for r in rows):
        names = [(r[0], r[1]) for r in rows]
    else:
        raise UserError(f"{label_file}: expected lines '<file> <label>' or one ID per line")
    classes = known or sorted({label for _, label in names if not label.isdigit()})
    index = {c: k for k, c in enumerate(classes)}
    by_name = {f.name: f for f in files}
    out_files, labels = [], []
    for name, label in names:
        if name not in by_name:
            raise UserError(f"{label_file} names {name}, which is not in {files[0].parent}")
        if label.isdigit() and label not in index:
            if not classes or int(label) >= len(classes):
                raise UserError(f"{label_file}: label {label} is out of range for "
                                f"{len(classes)} classes (numeric labels need train/ folders)")
            k = int(label)
        elif label in index:
            k = index[label]
        else:
            raise UserError(f"{label_file}: unknown class {label!r}")
        out_files.append(by_name[name])
        labels.append(k)
    return classes, out_files, np.asarray(labels, dtype=np.int64)


def _devkit_wnids(label_file: Path) -> dict[int, str]:
    meta = label_file.parent / "meta.mat"
    if not meta.is_file():
        raise UserError(f"{label_file} holds ILSVRC2012_IDs, which need the devkit's meta.mat "
                        f"next to it ({meta} not found); or give a '<file> <wnid>' list")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise UserError("reading the devkit's meta.mat needs scipy (pip install scipy); or give "
                        "a '<file> <wnid>' label list") from None
    # IDs 1..1000 are the leaf synsets (the classes); the rest are never labels.
    synsets = np.atleast_1d(loadmat(meta, squeeze_me=True)["synsets"])
    return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
