"""`alexnet show activations CKPT IMAGE`: what each layer makes of one image, and how sparse it is.

Top row: the input (the centre crop the network sees) and the fraction of exact zeros per layer.
Then one row per layer (conv1..conv5, fc6, fc7, after the non-linearity): the most active feature
maps of a conv layer, or the whole fc vector folded into a square. The source's claim under test:
ReLU makes activations sparse, many of them exactly 0 (a tanh or sigmoid net has none).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import AlexNetError
from ..model import RELU_LAYERS
from ..predictor import Predictor
from .common import centre, figure, save_figure, show_image

CELL_PX = 120


def sparsity(activations: dict[str, torch.Tensor]) -> dict[str, float]:
    """Fraction of exact zeros per layer (exact: a ReLU outputs a true 0, not a small number)."""
    return {name: (a == 0).double().mean().item() for name, a in activations.items()}


def format_sparsity(activations: dict[str, torch.Tensor], zeros: dict[str, float]) -> str:
    """A table: layer, activation shape (of one image), fraction of exact zeros."""
    lines = [f"{'layer':<8}{'shape':>16}{'exact zeros':>14}"]
    for name, a in activations.items():
        shape = "×".join(str(s) for s in a.shape)
        lines.append(f"{name:<8}{shape:>16}{zeros[name]:>14.1%}")
    return "\n".join(lines)


def strongest(a: torch.Tensor, n: int) -> list[int]:
    """The n channels of a (C, H, W) activation with the largest mean, in channel order."""
    top = a.mean(dim=(1, 2)).topk(min(n, a.shape[0])).indices
    return sorted(top.tolist())


def as_square(v: torch.Tensor) -> np.ndarray:
    """A vector folded into the smallest square that holds it (the padding is NaN: blank)."""
    side = math.ceil(math.sqrt(v.numel()))
    out = np.full(side * side, np.nan)
    out[:v.numel()] = v.numpy()
    return out.reshape(side, side)


def size_px(channels: int, layers: int = len(RELU_LAYERS)) -> tuple[int, int]:
    return CELL_PX * (channels + 1), CELL_PX * (layers + 1)


def draw_activations(image: np.ndarray, acts: dict[str, torch.Tensor], zeros: dict[str, float],
                     channels: int, path):
    """image: uint8 (s, s, C); acts: {layer: (C, H, W) or (D,)} of one image."""
    plt_cols, rows = channels + 1, len(acts) + 1
    fig = figure(*size_px(channels, len(acts)))

    def cell(r, c, span=1):
        return fig.add_axes((c / plt_cols + 0.1 / plt_cols, 1 - (r + 1) / rows + 0.12 / rows,
                             (span - 0.2) / plt_cols, 0.7 / rows))

    show_image(cell(0, 0), image, "input", fontsize=8)
    ax = fig.add_axes((1.6 / plt_cols, 1 - 1 / rows + 0.2 / rows, (plt_cols - 2) / plt_cols,
                       0.65 / rows))
    ax.bar(range(len(zeros)), [100 * z for z in zeros.values()], color="#1f77b4")
    ax.set_xticks(range(len(zeros)), list(zeros), fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("exact zeros (%)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    for x, z in enumerate(zeros.values()):
        ax.text(x, min(100 * z + 3, 90), f"{z:.0%}", ha="center", fontsize=7)
    for r, (name, a) in enumerate(acts.items(), start=1):
        # One colour scale per layer, so that the maps of a layer compare with each other.
        lo, hi = a.min().item(), a.max().item()
        if a.ndim == 1:
            ax = cell(r, 1, span=1)
            ax.imshow(as_square(a), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            _label(ax, f"{name}: all {a.numel()} units")
            _row_label(cell(r, 0), name, zeros[name])
            continue
        _row_label(cell(r, 0), name, zeros[name])
        for c, ch in enumerate(strongest(a, channels), start=1):
            ax = cell(r, c)
            ax.imshow(a[ch].numpy(), cmap="viridis", vmin=lo, vmax=hi, interpolation="nearest")
            _label(ax, f"channel {ch}")
    return save_figure(fig, path)


def _label(ax, text):
    ax.set_title(text, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _row_label(ax, name, zeros):
    ax.axis("off")
    ax.text(0.5, 0.5, f"{name}\n{zeros:.0%} zeros", ha="center", va="center", fontsize=10)


def run(args) -> int:
    if args.channels < 1 or args.channels > 32:
        raise AlexNetError("channels must be in 1..32", option="channels")
    seen = Predictor.from_file(args.checkpoint, args.device, args.precision)
    images = seen.load_images([args.image])
    acts = seen.extract(images, RELU_LAYERS)
    acts = {name: a[0] for name, a in acts.items()}
    zeros = sparsity(acts)
    print(format_sparsity(acts, zeros))
    path = draw_activations(centre(images, seen.augment.crop_size)[0], acts, zeros,
                            args.channels, args.out)
    print(path)
    return 0
