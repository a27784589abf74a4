"""What every picture needs: matplotlib without a display, atomic PNG writing, a checkpoint loaded
for inspection, and images turned back into something a person can look at."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
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


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` as a PNG atomically (no bbox_inches="tight": that would change its size)."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    pyplot().close(fig)
    return path


class Inspected:
    """A checkpoint ready to be looked at: the model in eval mode, where it runs, its input
    preparation (the training set's mean image, the centre crop) and its class names."""

    def __init__(self, path: str, device: str = "auto", precision: str = "auto"):
        from ..checkpoint import model_from_checkpoint
        from ..data.augment import Augment
        from ..hub import load_any
        from ..predict import class_names
        from ..runtime import Runtime

        self.ckpt = load_any(path)
        self.classes = class_names(self.ckpt)
        self.channels = self.ckpt["arch"]["in_channels"]
        self.rt = Runtime.create(device, precision)
        self.model = self.rt.place(model_from_checkpoint(self.ckpt)).eval()
        self.augment = Augment(self.ckpt["stats"], crop_size=self.ckpt["crop_size"],
                               device=self.rt.device)

    @torch.no_grad()
    def extract(self, images: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """Named activations (float32, CPU) of uint8 (B, 256, 256, C) images' centre crops."""
        x = self.rt.to_input(self.augment.center(images.to(self.rt.device)))
        with self.rt.autocast():
            out = self.rt.unwrap(self.model).extract(x, layers)
        return {name: t.float().cpu() for name, t in out.items()}

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        from ..evaluate import predict_probs
        return predict_probs(self.model, images, self.augment, self.rt, crops=1).cpu()

    def check_data(self, data) -> None:
        from ..checkpoint import check_compatible
        check_compatible(self.ckpt, len(data.classes))
        if data.channels != self.channels:
            raise UserError(f"the data has {data.channels} channel(s), the checkpoint's network "
                            f"takes {self.channels}")


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
        ax.set_title(title, **title_kw)


def short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[:n - 1] + "…"
