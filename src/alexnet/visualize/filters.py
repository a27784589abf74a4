"""`alexnet show filters CKPT`: the conv1 kernels as a grid, one panel per tower (paper Figure 3).

In the paper, the 48 kernels on GPU 1 came out largely colour-agnostic (edges, gratings) and the 48
on GPU 2 largely colour-specific (blobs), "independent of any particular random weight
initialization". With the towers as groups, tower 1 is conv1's kernels 0..47 (conv2's first group
reads exactly those maps) and tower 2 is 48..95. A one-tower net (towers=1, owt) is one grid.

What the eye judges in that figure is also measured (`structure`, printed per tower): how smooth
the kernels are, the share of their spatial energy at low frequencies, against the same share for
white noise (what N(0, σ²) initial kernels have); and how coloured, the share of their energy
that differs between the colour channels (0 for a grey kernel, 2/3 for white noise in RGB).
Edges, gratings and blobs are smooth; colour-agnostic ones (the paper's tower 1) are grey.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..predictor import Predictor
from .common import figure, save_figure

COLUMNS = 16            # kernels per row, as in the paper's figure
CELL_PX = 60            # pixels per kernel row of the figure
TITLE_PX = 40           # pixels for each panel's title
WIDTH_PX = COLUMNS * CELL_PX


def conv1_weight(model: torch.nn.Module) -> torch.Tensor:
    """The first convolution's weight (out, in, k, k), whatever the variant's module names."""
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    return conv.weight.detach().float().cpu()


def normalise(kernels: torch.Tensor) -> np.ndarray:
    """(N, C, k, k) -> (N, k, k, C) in [0, 1], each kernel stretched by its own min and max.

    Per kernel, so that a kernel with small weights is as visible as one with large weights (the
    paper's figure shows shapes and colours, not magnitudes). A constant kernel shows mid-grey."""
    k = kernels.permute(0, 2, 3, 1).numpy().astype(np.float64)
    lo = k.min(axis=(1, 2, 3), keepdims=True)
    span = k.max(axis=(1, 2, 3), keepdims=True) - lo
    return np.where(span > 0, (k - lo) / np.where(span > 0, span, 1), 0.5)


def mosaic(kernels: np.ndarray, columns: int = COLUMNS, gap: int = 1) -> np.ndarray:
    """(N, k, k, C) in [0, 1] -> one (H, W, C) image: rows of `columns` kernels, white gaps."""
    n, k, _, c = kernels.shape
    rows = math.ceil(n / columns)
    out = np.ones((rows * (k + gap) + gap, columns * (k + gap) + gap, c))
    for i, kernel in enumerate(kernels):
        r, q = divmod(i, columns)
        y, x = gap + r * (k + gap), gap + q * (k + gap)
        out[y:y + k, x:x + k] = kernel
    return out


def size_px(kernels: int, towers: int) -> tuple[int, int]:
    rows = math.ceil(kernels / towers / COLUMNS)
    return WIDTH_PX, towers * (rows * CELL_PX + TITLE_PX)


def draw_filters(weight: torch.Tensor, towers: int, path, title: str = ""):
    """Write the kernel grid of a conv1 weight (N, C, k, k) split into `towers` panels."""
    n = weight.shape[0]
    groups = torch.chunk(weight, towers) if towers > 1 else (weight,)
    width, height = size_px(n, towers)
    fig = figure(width, height)
    for t, group in enumerate(groups):
        margin = 4 / height  # a few pixels below each panel, so its frame shows
        ax = fig.add_axes((0.01, 1 - (t + 1) / towers + margin, 0.98,
                           1 / towers - TITLE_PX / height - margin))
        image = mosaic(normalise(group))
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray",
                  interpolation="nearest", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks([])
        ax.set_yticks([])
        first = t * len(group)
        label = f"tower {t + 1}: kernels {first}..{first + len(group) - 1}" if towers > 1 \
            else f"{n} kernels"
        ax.set_title(f"{title}conv1, {label} ({weight.shape[2]}×{weight.shape[3]}×"
                     f"{weight.shape[1]}), each normalised to its own range", fontsize=10)
    return save_figure(fig, path)


def structure(weight: torch.Tensor) -> dict[str, float]:
    """Smoothness and colour of kernels (N, C, k, k), averaged over the kernels:
    low_freq: the share of each kernel's spatial energy (its mean removed) at frequencies within
    a quarter of the band (|f| <= k/4 in DFT bins), with low_freq_noise, the same share for white
    noise (the fraction of non-DC bins in that disc); colour: the share of the energy (mean
    removed) that differs between channels, ||w - channel mean||² / ||w||² (0 for one channel)."""
    w = weight.double()
    w = w - w.mean(dim=(1, 2, 3), keepdim=True)
    k = w.shape[-1]
    power = torch.fft.fft2(w).abs().pow(2).sum(dim=1)  # (N, k, k), channels summed
    f = torch.fft.fftfreq(k, d=1.0 / k).double()
    radius = torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2)
    low = (radius <= k / 4) & (radius > 0)
    share = power[:, low].sum(1) / power[:, radius > 0].sum(1).clamp_min(1e-300)
    colour = (w - w.mean(dim=1, keepdim=True)).pow(2).sum((1, 2, 3)) / \
        w.pow(2).sum((1, 2, 3)).clamp_min(1e-300)
    return {"low_freq": share.mean().item(), "low_freq_noise": low.sum().item() / (k * k - 1),
            "colour": colour.mean().item()}


def describe_structure(weight: torch.Tensor, towers: int) -> list[str]:
    groups = torch.chunk(weight, towers) if towers > 1 else (weight,)
    lines = []
    for t, group in enumerate(groups):
        s = structure(group)
        name = f"tower {t + 1}" if towers > 1 else "conv1"
        lines.append(f"{name}: low-frequency share {s['low_freq']:.2f} (white noise "
                     f"{s['low_freq_noise']:.2f}), colour share {s['colour']:.2f} (white noise "
                     f"{2 / 3 if weight.shape[1] == 3 else 0:.2f}, grey 0)")
    return lines


def run(args) -> int:
    seen = Predictor.from_file(args.checkpoint, device="cpu", precision="fp32")
    towers = int(getattr(seen.model, "towers", 1))
    weight = conv1_weight(seen.model)
    path = draw_filters(weight, towers, args.out)
    print(path)
    print("\n".join(describe_structure(weight, towers)))
    return 0
