"""The report of `alexnet ablate`: results.md and results.json (the tables), ablation.png (one bar
per arm) and activation.png (the paper's Figure 1 on our data: training error against steps for
ReLU, tanh and sigmoid, with the gradient norms at initialisation and the sparsity per layer)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from ..machine import describe
from ..model import RELU_LAYERS
from ..parallel import resolve_device
from ..accel import resolve_precision
from ..config import TrainConfig
from ..io import atomic_write_json, atomic_write_text
from .common import pyplot, save_figure

# --- the tables -----------------------------------------------------------------------------------

def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def format_arms_table(rows: list[dict]) -> str:
    base = next((r for r in rows if r["arm"] == "baseline"), None)
    lines = ["| arm | change | val top-1 err | Δ top-1 vs baseline | val top-5 err | train loss | "
             "val loss | val − train loss | images trained | minutes | the paper |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("diverged"):
            blanks = " |" * 7  # no numbers for Δ, top-5, losses, gap, images, minutes
            lines.append(f"| {r['arm']} | {r['change']} | diverged |{blanks} {r['paper']} |")
            continue
        delta = "" if base is None or r is base or base.get("diverged") else \
            f"{100 * (r['val_top1_error'] - base['val_top1_error']):+.1f}"
        lines.append(f"| {r['arm']} | {r['change']} | {_pct(r['val_top1_error'])} | {delta} | "
                     f"{_pct(r['val_top5_error'])} | {r['train_loss']:.3f} | {r['val_loss']:.3f} | "
                     f"{r['val_loss'] - r['train_loss']:+.3f} | {r['images_trained']} | "
                     f"{r['seconds'] / 60:.1f} | {r['paper']} |")
    return "\n".join(lines)


def crossing(result: dict, threshold: float) -> dict | None:
    """The first step at which the running training error (over a full window) was at most
    `threshold`: {"steps", "images", "seconds"}, or None if it never was."""
    b = result["batch_size"]
    for step, seconds, error, _ in result["curve"]:
        if step * b >= result["window"] and error <= threshold:
            return {"steps": step, "images": step * b, "seconds": seconds}
    return None


LADDER = (0.8, 0.6, 0.4)  # further thresholds reported beside --threshold


def _speed(study: dict[str, dict], act: str, threshold: float) -> str:
    """Steps to the threshold, and how many times ReLU's: exact when both got there, a lower
    bound when only ReLU did."""
    hit, relu = crossing(study[act], threshold), crossing(study.get("relu", study[act]), threshold)
    if hit is None:
        if relu is None or act == "relu":
            return "—"
        bound = math.floor(10 * study[act]["steps"] / relu["steps"]) / 10  # never round a bound up
        return f"> {study[act]['steps']} (> {bound:.1f}×)"
    if act == "relu" or relu is None:
        return f"{hit['steps']}"
    return f"{hit['steps']} ({hit['steps'] / relu['steps']:.1f}×)"


def format_study(study: dict[str, dict]) -> str:
    first = next(iter(study.values()))
    t, acts = first["threshold"], list(study)
    levels = sorted({t, *LADDER}, reverse=True)
    out = [f"Training steps (batch {first['batch_size']}) until the running training error, over "
           f"the last {first['window']} training images, is at most each level; in brackets, how "
           f"many times ReLU's steps:", "",
           "| activation | " + " | ".join(f"≤ {100 * x:.0f}%" for x in levels)
           + f" | seconds to ≤ {100 * t:.0f}% | train error at the end | steps run |",
           "|---|" + "---:|" * (len(levels) + 3)]
    for act, r in study.items():
        hit = crossing(r, t)
        diverged = f" (diverged at step {r['diverged']})" if r["diverged"] else ""
        seconds = f"{hit['seconds']:.0f}" if hit else "—"
        out.append(f"| {act} | " + " | ".join(_speed(study, act, x) for x in levels)
                   + f" | {seconds} | {_pct(r['final_error'])} | {r['steps']}{diverged} |")
    layers = list(first["grad_norms"])
    out += ["", "Gradient norm ‖∂loss/∂W‖ per layer at initialisation (one batch):", "",
            "| layer | " + " | ".join(acts) + " |", "|---|" + "---:|" * len(acts)]
    out += [f"| {layer} | " + " | ".join(f"{study[a]['grad_norms'][layer]:.2e}" for a in acts)
            + " |" for layer in layers]
    out += ["", f"Exact zeros after each layer's non-linearity ({first['probe_images']} val "
            "images), at "
            "initialisation → after the study's training:", "",
            "| layer | " + " | ".join(acts) + " |", "|---|" + "---:|" * len(acts)]
    out += [f"| {layer} | " + " | ".join(
        f"{_pct(study[a]['sparsity_init'][layer])} → {_pct(study[a]['sparsity_trained'][layer])}"
        for a in acts) + " |" for layer in RELU_LAYERS]
    return "\n".join(out)


def machine() -> str:
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{describe()}{gpu}, torch {torch.__version__}"


def recipe_shown(cfg: TrainConfig) -> dict:
    """What the arms share, for the report: every set option but those the arms vary and those
    that cannot change results (declared resumable), with the precision resolved."""
    shown = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
             if not f.metadata["arms"] and not f.metadata["resumable"]
             and getattr(cfg, f.name) is not None and f.name != "out"}
    shown["precision"] = resolve_precision(resolve_device(cfg.device), cfg.precision)  # not auto
    return shown


def write_report(out: Path, cfg: TrainConfig, settings: dict, plan: str, rows: list[dict],
                 study: dict) -> None:
    """results.md, results.json and the two pictures; cfg is the baseline's resolved config."""
    recipe = ", ".join(f"{k}={v}" for k, v in recipe_shown(cfg).items())
    parts = [f"# Ablation: {cfg.data}", "", plan, "", f"Machine: {machine()}.", "",
             f"Recipe shared by every arm (the baseline's; each arm changes one thing): {recipe}.",
             ""]
    if rows:
        parts += ["## One idea changed at a time", "", format_arms_table(rows), "",
                  "Errors are of the final weights on the validation split, centre crop. Δ is in "
                  "percentage points; compare it with the reseed arm's Δ, which is chance alone. "
                  "The train loss is the mean over the last epoch, with dropout and augmentation "
                  "on, so it is not a clean measure of fit.", "", "![ablation](ablation.png)", ""]
        plot_ablation(rows, out / "ablation.png")
    if study:
        parts += ["## Activation study (paper Figure 1)", "", format_study(study), "",
                  "![activation study](activation.png)", ""]
        plot_activation_study(study, out / "activation.png")
    atomic_write_text(out / "results.md", "\n".join(parts))
    atomic_write_json(out / "results.json", {
        "settings": settings, "machine": machine(),
        "arms": [{k: v for k, v in r.items() if k != "history"} for r in rows],
        "activation_study": study})


# --- the pictures -------------------------------------------------------------------------------

ABLATION_PX = (1300, 500)
STUDY_PX = (1500, 450)
COLOURS = {"relu": "#1f77b4", "tanh": "#ff7f0e", "sigmoid": "#2ca02c"}


def plot_ablation(rows: list[dict], path):
    """Left: validation top-1 error per arm, the baseline as a line and the reseed arm's distance
    from it as a shaded band (differences inside it are chance). Right: train and val loss."""
    plt = pyplot()
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(ABLATION_PX[0] / 100,
                                                         ABLATION_PX[1] / 100), dpi=100)
    diverged = [r["arm"] for r in rows if r.get("diverged")]
    rows = [r for r in rows if not r.get("diverged")]  # no numbers to draw
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
               title="one idea changed at a time" + (f" (diverged: {', '.join(diverged)})"
                                                     if diverged else ""))
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
