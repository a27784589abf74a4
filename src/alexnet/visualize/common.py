"""What every picture needs: matplotlib without a display, atomic writing (PNG by default), a
checkpoint loaded for inspection, and images turned back into something a person can look at."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import AlexNetError
from ..io import atomic_write

# Every figure is sized in pixels (figsize = pixels / DPI), so its PNG has a known size.
DPI = 100


def pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def figure(width_px: int, height_px: int):
    return pyplot().figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)


# What a picture's file name may end in; the bytes follow the name (a .jpg is a JPEG).
FORMATS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg", ".pdf": "pdf", ".svg": "svg"}


def image_format(path: str | Path) -> str:
    """The format for an output file's name; an unknown ending is a one-line error (--out)."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise AlexNetError(f"cannot tell a picture format from {path}: end it in "
                           f"{', '.join(FORMATS)}", option="out")
    return fmt


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` atomically in the format its name says (no bbox_inches="tight": that would
    change its size)."""
    path = Path(path)
    fmt = image_format(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=DPI))
    pyplot().close(fig)
    return path


def centre(images: torch.Tensor, crop: int) -> np.ndarray:
    """uint8 (B, S, S, C) -> the centre crops the network sees: uint8 numpy (B, crop, crop, C)."""
    o = (images.shape[1] - crop) // 2
    return images[:, o:o + crop, o:o + crop].numpy()


def show_image(ax, image: np.ndarray, title: str | None = None, **title_kw) -> None:
    """imshow an (H, W, C) uint8 or [0, 1] float image, grey when it has one channel."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(drawable(title), **title_kw)


def drawable(text: str) -> str:
    """`text` with the bytes of a name that is not UTF-8 (which Python holds as surrogates, and
    matplotlib refuses to draw) shown as U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def short(name: str, n: int = 18) -> str:
    name = drawable(name)
    return name if len(name) <= n else name[:n - 1] + "…"
