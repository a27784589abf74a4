"""Image files in the ImageFolder layout (ILSVRC-2012 as usually unpacked), decoded with Pillow.

    ROOT/train/<class>/*.JPEG      ROOT/val/<class>/*.JPEG
or, for ILSVRC-2012's validation set as shipped, a flat ROOT/val/ plus its label file
(`val_labels=`), in either of two formats:
- two columns, `<file name> <label>`, the label a class name (wnid) or an index into the sorted
  class names (Caffe's val.txt); separated by a tab, a column may hold spaces;
- the devkit's ILSVRC2012_validation_ground_truth.txt: one ILSVRC2012_ID per line, for the files
  in sorted order. Those IDs are NOT the sorted-wnid order, so the devkit's data/meta.mat must sit
  next to the file (it maps ID -> wnid; reading it needs scipy).

Every image is turned upright (its EXIF orientation), becomes RGB (grey, CMYK, palette, 16-bit and
alpha images included; float images, which have no fixed range, are refused), its shorter side
resized to 256 (Pillow's antialiased bilinear, as torchvision's Resize), then centre-cropped to
256×256: the paper's preprocessing. Only the part of the source that the crop keeps is resized, so
memory does not grow with the aspect ratio. JPEGs are decoded at a reduced DCT scale when they are
at least twice as large as needed (Pillow's draft mode; the scaled DCT is itself an area average).
Measured on 1600×1068 photos: 3-4× faster than a full decode, and the 256×256 result differs from
the full decode's by 0.3-0.5 grey levels on average (7 at most). Other formats much larger than
needed are first shrunk by an integer factor (Image.reduce). A file that cannot be decoded (corrupt,
truncated, a decompression bomb by Pillow's pixel limit) is reported, never replaced silently:
`load_image` raises DataError, and `ImageFolder.read` returns it among the errors, which the Loader,
the statistics and `alexnet prepare` skip and list.

Listing follows symbolic links but lists each directory once (a link back to a directory already
walked, or to one above it, is a loop) and only regular files (a FIFO named x.jpg would block).

This reads originals on every access, which is slow; `alexnet prepare` does it once.
"""
from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import AlexNetError, DataError
from ..io import read_text, text_fields
from .imageset import ImageSet, file_stamps, key_of, new_batch, stats_sample

# Resize in two steps (Image.reduce by an integer factor, then the filter) once the source box is
# at least this many times the target: see _resize_crop.
REDUCING_GAP = 3.0
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class ImageFolder(ImageSet):
    def __init__(self, root, split: str = "train", *, val_labels=None, image_size: int = 256):
        self.root, self.split, self.image_size = Path(root), split, image_size
        self.channels = 3
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise AlexNetError(f"{split_dir} not found (expected {self.root}/train/<class>/* and "
                               f"{self.root}/val/<class>/*)")
        known = class_dirs(self.root / "train") if (self.root / "train").is_dir() else None
        subdirs = class_dirs(split_dir)
        if subdirs:
            self.classes = known or subdirs
            self.files, self.labels = _list_classes(split_dir, subdirs, self.classes)
        else:
            files = _list_images(split_dir)
            if not files:
                raise AlexNetError(f"{split_dir} has no images and no class folders")
            if val_labels is None:
                raise AlexNetError(f"{split_dir} is a flat folder of images: it needs its "
                                   "ground-truth label file", option="val_labels")
            self.classes, self.files, self.labels = _flat_with_labels(files, Path(val_labels),
                                                                      known)
        self._warned = False

    def train_split(self) -> "ImageFolder":
        return self if self.split == "train" else ImageFolder(self.root, "train",
                                                              image_size=self.image_size)

    def cache_key(self) -> str:
        train = self.train_split()
        files = [train.files[i] for i in stats_sample(len(train))]  # what the statistics read
        return key_of(kind="folder", root=str(self.root.resolve()), size=self.image_size,
                      n=len(train), first=str(train.files[0]), last=str(train.files[-1]),
                      stamps=file_stamps(files))

    def describe(self, index: int) -> str:
        return str(self.files[index])

    def read(self, indices) -> tuple[torch.Tensor, list[tuple[int, str]]]:
        indices = np.asarray(indices, dtype=np.int64)
        out = new_batch((len(indices), self.image_size, self.image_size, 3))
        errors = []
        for k, i in enumerate(indices.tolist()):
            try:
                out[k] = torch.from_numpy(_decode(self.files[i], self.image_size))
            except Exception as e:  # any decoder failure (see load_image): the caller skips it
                out[k] = 0
                errors.append((i, _reason(e)))
        return out, errors

    def get_batch(self, indices) -> torch.Tensor:
        images, errors = self.read(indices)
        if errors and not self._warned:
            self._warned = True  # once: a run should not drown in warnings
            warnings.warn(f"unreadable image(s) replaced by black ones, e.g. "
                          f"{self.files[errors[0][0]]} ({errors[0][1]}); the Loader and "
                          "`alexnet prepare` skip and list them", stacklevel=2)
        return images


def load_image(path, size: int = 256) -> np.ndarray:
    """One file -> uint8 (size, size, 3): RGB, upright (EXIF orientation applied), shorter side
    resized to `size`, centre crop. Anything that is not a readable image raises DataError."""
    try:
        return _decode(path, size)
    except Exception as e:  # Pillow's decoders raise a zoo of types on malformed input
        raise DataError(f"cannot read image {path}: {_reason(e)}") from None


def probe_image(path) -> None:
    """Fail early, before slow work such as loading a model: `path` must be a regular file whose
    header Pillow recognises as an image (DataError, as from load_image). Only the header is
    read, so a file damaged further in is still found by load_image."""
    try:
        with _open(path):
            pass
    except Exception as e:
        raise DataError(f"cannot read image {path}: {_reason(e)}") from None


def _open(path) -> Image.Image:
    # stat first: opening a FIFO or a device named x.jpg would block or have side effects.
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError("not a regular file")
    return Image.open(path)


def _decode(path, size: int) -> np.ndarray:
    with _open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size * 2, size * 2))  # only shrinks when ≥ 2× the needed size
        img.load()
        _upright(img)
        img = to_rgb(img)
    return np.array(_resize_crop(img, size), dtype=np.uint8)  # writable (torch warns otherwise)


def _reason(e: BaseException) -> str:
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too many pixels to decode safely ({e})"
    return f"{type(e).__name__}: {e}"


def _upright(img: Image.Image) -> None:
    """Apply the EXIF orientation in place: phones store portraits as rotated landscapes."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a malformed EXIF block: the pixels themselves are still good
        pass


def _resize_crop(img: Image.Image, size: int) -> Image.Image:
    """The shorter side resized to `size`, then the centre size × size, computed as a resize of
    only the source box that the crop keeps: the same pixels as resizing the whole image first
    (Pillow's filter still reads the pixels around the box), but the memory no longer grows with
    the aspect ratio (a 20000×4 image resized whole would be 1.28 M × 256 pixels). Images much
    larger than needed are first shrunk by an integer factor over the box (Image.reduce, via
    reducing_gap): 3× or more above the target, the fair resampling differs by a fraction of a
    grey level, and it costs a fraction of the time."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if (new_w, new_h) == (w, h):
        return img.crop((left, top, left + size, top + size))
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box, reducing_gap=REDUCING_GAP)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I"):  # 16-bit grey ("I;16*", or "I" as 16-bit PGMs open)
        a = np.asarray(img)
        # 16-bit files fill 0..65535; only a true 32-bit image can exceed it (scaled by its max).
        top = max(65535, int(a.max(initial=0)))
        a = np.clip(np.rint(a.astype(np.float64) * (255.0 / top)), 0, 255)
        return Image.fromarray(a.astype(np.uint8)).convert("RGB")
    if img.mode == "F":  # convert("RGB") would clip to 0..255: a [0, 1] image comes out black
        raise ValueError("32-bit float pixels (mode F) have no fixed range; convert the image to "
                         "8 or 16 bits")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow asks for this route for palettes with transparency
    return img.convert("RGB")


def class_dirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _list_images(path: Path) -> list[Path]:
    """Image files under `path`, depth first in sorted order (as os.walk), symlinks followed.

    A directory is identified by (st_dev, st_ino): one seen before, or one above `path`, is a
    loop (or a second link to the same files) and is not entered again. Only regular files are
    listed (DirEntry.is_file() reads that from the directory entry, without a stat per file), and
    links named like images that lead nowhere: reading them fails, so they are reported."""
    found, seen = [], _ancestors(path)
    stack = [path]
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            continue  # vanished since it was listed: as os.walk, skip it
        except OSError as e:  # os.walk skips it too, but its images would drop out unsaid
            raise DataError(f"cannot read folder {directory}: {e.strerror or e}") from None
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            if e.name.lower().endswith(EXTENSIONS) and (
                    _is(e.is_file) or (_is(e.is_symlink) and not _is(e.is_dir))):
                found.append(Path(e.path))  # a dangling link too: then reported as unreadable
            elif _is(e.is_dir):
                subdirs.append(Path(e.path))
        stack += reversed(subdirs)  # popped in sorted order
    return found


def _is(test) -> bool:
    try:
        return test()
    except OSError:  # a dangling link or a permission problem: neither file nor directory
        return False


def _ancestors(path: Path) -> set[tuple[int, int]]:
    out = set()
    for p in Path(path).resolve().parents:
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return out


def _list_classes(split_dir: Path, subdirs: list[str], classes: list[str]):
    index = {c: k for k, c in enumerate(classes)}
    unknown = [d for d in subdirs if d not in index]
    if unknown:
        raise AlexNetError(f"{split_dir} has class folders not in train/: {', '.join(unknown[:5])}")
    files, labels = [], []
    for name in subdirs:
        found = _list_images(split_dir / name)
        if not found:
            raise AlexNetError(f"class folder {split_dir / name} has no images "
                               f"({', '.join(EXTENSIONS)})")
        files += found
        labels += [index[name]] * len(found)
    return files, np.asarray(labels, dtype=np.int64)


def _flat_with_labels(files: list[Path], label_file: Path, known: list[str] | None):
    """Classes, files and labels of a flat folder from its label file (module doc). The file must
    list every image exactly once: an image left out or listed twice would silently change what
    is measured."""
    rows = _label_rows(label_file)
    if _check_columns(rows, label_file) == 1:  # devkit ground truth: IDs in file order
        if len(rows) != len(files):
            raise DataError(f"{label_file} has {len(rows)} labels for {len(files)} images")
        wnids = _devkit_wnids(label_file)
        names = []
        for (n, (field,)), f in zip(rows, files):
            if int(field) not in wnids:
                raise DataError(f"{label_file}, line {n}: {field!r} is not an ILSVRC2012_ID of "
                                "the devkit's meta.mat")
            names.append((n, f.name, wnids[int(field)]))
    else:
        names = [(n, r[0], r[1]) for n, r in rows]
    _check_listed_once(names, files, label_file)
    classes = known or sorted({label for _, _, label in names if not label.isdecimal()})
    index = {c: k for k, c in enumerate(classes)}
    by_name = {f.name: f for f in files}
    labels = []
    for n, name, label in names:
        if label in index:
            labels.append(index[label])
        elif label.isdecimal() and int(label) < len(classes):
            labels.append(int(label))
        elif label.isdecimal():
            raise DataError(f"{label_file}, line {n}: label {label} is out of range for "
                            f"{len(classes)} classes (numeric labels need train/ folders)")
        else:
            raise DataError(f"{label_file}, line {n}: unknown class {label!r}")
    out_files = [by_name[name] for _, name, _ in names]
    return classes, out_files, np.asarray(labels, dtype=np.int64)


def _label_rows(label_file: Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-blank lines."""
    if not label_file.is_file():
        raise DataError(f"label file not found: {label_file}")
    try:
        text = read_text(label_file)
    except UnicodeDecodeError:
        raise DataError(f"{label_file} is not a text file") from None
    return [(n, text_fields(line)) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


LABEL_FORMATS = "expected '<file> <label>' (2 columns) or an ILSVRC2012_ID (1) on every line"


def _check_columns(rows, label_file: Path) -> int:
    """The label file's column count, 1 or 2 (module doc); anything else is refused here, naming
    the first line at fault, before a 1-column file is taken for devkit IDs (which would ask for
    the devkit's meta.mat even when the file is, say, comma-separated). Short: the CLI cuts a
    message at 300 characters."""
    if not rows:
        raise DataError(f"{label_file} has no labels: {LABEL_FORMATS}")
    width = len(rows[0][1])
    bad = next(((n, r) for n, r in rows if len(r) != width or len(r) not in (1, 2)
                or width == 1 and not r[0].isdecimal()), None)
    if bad is None:
        return width
    n, fields = bad
    quoted = repr(fields[0] if len(fields[0]) <= 40 else fields[0][:37] + "...")
    if len(fields) == 1 and "," in fields[0]:
        what = f"1 column, {quoted} (columns are separated by whitespace, not commas)"
    elif len(fields) == 1 and width == 1:
        what = f"{quoted} is not an ILSVRC2012_ID (a number)"
    else:
        what = f"{len(fields)} column{'s' * (len(fields) != 1)}" + (
            f" where line {rows[0][0]} has {width}" if width in (1, 2) and width != len(fields)
            else "")
    raise DataError(f"{label_file}, line {n}: {what}; {LABEL_FORMATS}")


def _check_listed_once(names, files: list[Path], label_file: Path) -> None:
    folder = files[0].parent
    present = {f.name for f in files}
    first: dict[str, int] = {}
    repeated = []
    for n, name, _ in names:
        if name not in present:
            raise DataError(f"{label_file}, line {n}: {name} is not in {folder}")
        if name in first:
            repeated.append((name, first[name], n))
        first.setdefault(name, n)
    if repeated:
        name, a, b = repeated[0]
        raise DataError(f"{label_file} lists {len(repeated)} image(s) more than once, e.g. {name} "
                        f"(lines {a} and {b})")
    missing = sorted(present - first.keys())
    if missing:
        raise DataError(f"{len(missing)} image(s) in {folder} are not in {label_file}, e.g. "
                        f"{missing[0]}")


def _devkit_wnids(label_file: Path) -> dict[int, str]:
    meta = label_file.parent / "meta.mat"
    if not meta.is_file():
        raise AlexNetError(f"{label_file} holds ILSVRC2012_IDs, which need the devkit's meta.mat "
                           f"next to it ({meta} not found); or give a '<file> <wnid>' list")
    try:
        from scipy.io import loadmat
    except ImportError:
        raise AlexNetError("reading the devkit's meta.mat needs scipy (pip install scipy); or give "
                           "a '<file> <wnid>' label list") from None
    # IDs 1..1000 are the leaf synsets (the classes); the rest are never labels.
    try:
        synsets = np.atleast_1d(loadmat(meta, squeeze_me=True)["synsets"])
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except Exception as e:  # scipy's reader raises many types on a file that is not a .mat
        raise DataError(f"cannot read {meta}: {type(e).__name__}: {e}") from None
