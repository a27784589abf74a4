"""The pictures of `alexnet ablate`: ablation.png (one bar per arm) and activation.png (the paper's
Figure 1 on our data: training error against steps for ReLU, tanh and sigmoid, with the gradient
norms at initialisation and the sparsity per layer beside it)."""
from __future__ import annotations

import numpy as np

from .common import pyplot, save_figure

ABLATION_PX = (1300, 500)
STUDY_PX = (1500, 450)
COLOURS = {"relu": "#1f77b4", "tanh": "#ff7f0e", "sigmoid": "#2ca02c"}


def plot_ablation(rows: list[dict], path):
    """Left: validation top-1 error per arm, the baseline as a line and the reseed arm's distance
    from it as a shaded band (differences inside it are chance). Right: train and val loss."""
    plt = pyplot()
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(ABLATION_PX[0] / 100,
                                                         ABLATION_PX[1] / 100), dpi=100)
    names = [r["arm"] for r in rows]
    y = np.arange(len(rows))[::-1]  # the first arm (baseline) at the top
    errors = [100 * r["val_top1_error"] for r in rows]
    ax_err.barh(y, errors, color=["#d62728" if n == "baseline" else "#7f7f7f" for n in names])
    base = next((r for r in rows if r["arm"] == "baseline"), None)
    seed = next((r for r in rows if r["arm"] == "reseed"), None)
    if base is not None:
        b = 100 * base["val_top1_error"]
        ax_err.axvline(b, color="#d62728", ls="--", lw=1)
        if seed is not None:
            spread = abs(100 * seed["val_top1_error"] - b)
            ax_err.axvspan(b - spread, b + spread, color="#d62728", alpha=0.12,
                           label="± |reseed − baseline| (chance)")
            ax_err.legend(fontsize=8, loc="lower right")
    for yi, e in zip(y, errors):
        ax_err.text(e + 0.3, yi, f"{e:.1f}%", va="center", fontsize=8)
    ax_err.set_yticks(y, names, fontsize=9)
    ax_err.set(xlabel="validation top-1 error (%)", xlim=(0, max(errors + [1]) * 1.15 + 1),
               title="one idea changed at a time")
    h = 0.38
    ax_loss.barh(y + h / 2, [r["train_loss"] for r in rows], h, label="train loss (last epoch)")
    ax_loss.barh(y - h / 2, [r["val_loss"] for r in rows], h, label="val loss")
    ax_loss.set_yticks(y, names, fontsize=9)
    ax_loss.set(xlabel="cross-entropy loss", title="train vs validation loss (overfitting gap)")
    ax_loss.legend(fontsize=8, loc="lower right")
    for ax in (ax_err, ax_loss):
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_activation_study(study: dict[str, dict], path):
    """Running training error per step (threshold dashed), gradient norms at initialisation per
    layer (log scale) and exact zeros per layer after training (at initialisation hatched)."""
    plt = pyplot()
    fig, (ax_err, ax_grad, ax_zero) = plt.subplots(1, 3, figsize=(STUDY_PX[0] / 100,
                                                                   STUDY_PX[1] / 100), dpi=100)
    threshold = next(iter(study.values()))["threshold"]
    for act, r in study.items():
        c = COLOURS.get(act)
        curve = np.array(r["curve"]) if r["curve"] else np.zeros((0, 4))
        ax_err.plot(curve[:, 0], 100 * curve[:, 2], color=c, label=act)
        if r["reached"]:
            ax_err.plot(r["reached"]["steps"], 100 * threshold, "o", color=c)
    ax_err.axhline(100 * threshold, color="k", ls="--", lw=1, label=f"{100 * threshold:.0f}%")
    ax_err.set(xlabel="training step", ylabel="running training error (%)", ylim=(0, 100),
               title="training error (paper Figure 1)")
    layers = list(next(iter(study.values()))["grad_norms"])
    x, w = np.arange(len(layers)), 0.8 / len(study)
    for i, (act, r) in enumerate(study.items()):
        norms = [max(r["grad_norms"][layer], 1e-30) for layer in layers]
        ax_grad.bar(x + (i - (len(study) - 1) / 2) * w, norms, w, color=COLOURS.get(act),
                    label=act)
    ax_grad.set_yscale("log")
    ax_grad.set_xticks(x, layers, fontsize=8)
    ax_grad.set(ylabel="‖∂loss/∂W‖", title="gradient norms at initialisation")
    zl = list(next(iter(study.values()))["sparsity_trained"])
    xz = np.arange(len(zl))
    for i, (act, r) in enumerate(study.items()):
        off = (i - (len(study) - 1) / 2) * w
        ax_zero.bar(xz + off, [100 * r["sparsity_trained"][k] for k in zl], w,
                    color=COLOURS.get(act), label=f"{act}")
        ax_zero.bar(xz + off, [100 * r["sparsity_init"][k] for k in zl], w, fill=False,
                    hatch="//", edgecolor="k", lw=0.5)
    ax_zero.set_xticks(xz, zl, fontsize=8)
    ax_zero.set(ylabel="exact zeros (%)", ylim=(0, 100),
                title="sparsity after training (hatched: at init)")
    for ax in (ax_err, ax_grad, ax_zero):
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
