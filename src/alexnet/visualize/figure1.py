"""The report of `alexnet figure1`: results.md and results.json (the tables), and figure1.png,
drawn like the paper's Figure 1 (Krizhevsky et al., 2012): training error rate against epochs,
ReLU solid and tanh dashed, with the 25% target line.

Where the paper shows one run per activation, we show the mean over the measured seeds and a
band from the lowest to the highest seed at each step (with 5 seeds a ± sd band would rest on
too few values to mean more than the range). A second panel shows the learning-rate sweep that
chose each activation's rate: steps to the target on the pilot seed, an open marker where the
pilot stopped without reaching it (a lower bound).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_write_json, atomic_write_text, strict_json
from .common import figure, save_figure

MAGNITUDE = {"above": "a speed-up as large as the paper's is **not held** here",
             "inside": "consistent with the paper's factor",
             "below": "a larger speed-up than the paper's"}
# With tanh censored at the budget the interval is a lower bound: the true ratio may lie above it,
# so only "below" (the paper's factor under even the lower bound) still reads the same.
CENSORED = "cannot tell, as the interval is only a lower bound"
STYLE = {"relu": dict(color="tab:blue", linestyle="-"),     # the paper: solid
         "tanh": dict(color="tab:red", linestyle="--")}     # and dashed


def _curve_panel(ax, result: dict, log_epochs: bool) -> None:
    cfg = result["config"]
    per_epoch, batch = result["images_per_epoch"], cfg["batch_size"]
    for act, curves in result["curves"].items():
        full = [c for c in curves if c and len(c) == max(len(k) for k in curves)]
        if not full:
            continue
        arr = np.array([[np.nan if e is None else e for e in c] for c in full], dtype=float)
        epochs = np.arange(1, arr.shape[1] + 1) * batch / per_epoch
        ok = ~np.isnan(arr).any(axis=0)                  # steps once the window is full
        lr = result["sweeps"][act]["lr"]
        ax.plot(epochs[ok], arr[:, ok].mean(axis=0), label=f"{act} (lr {lr:g}), mean of "
                f"{len(full)} seeds", **STYLE[act])
        ax.fill_between(epochs[ok], arr[:, ok].min(axis=0), arr[:, ok].max(axis=0),
                        color=STYLE[act]["color"], alpha=0.2, linewidth=0)
        mean_images = result["summary"][act]["mean_images"]
        if mean_images:
            ax.axvline(mean_images / per_epoch, color=STYLE[act]["color"], linewidth=0.8,
                       linestyle=":")
    ax.axhline(cfg["target"], color="black", linewidth=0.8, linestyle=":")
    ax.text(0.99, cfg["target"], f" target {cfg['target']:.0%}", transform=ax.get_yaxis_transform(),
            ha="right", va="bottom", fontsize=8)
    if log_epochs:
        ax.set_xscale("log")
    ax.set_xlabel("epochs")
    ax.set_ylabel(f"training error (last {cfg['window']} images)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", fontsize=8)
    ratio = result["summary"].get("ratio")
    title = "Figure 1 on Fashion-MNIST"
    if ratio:
        title += (f": tanh ÷ relu = {ratio['estimate']:.2f} "
                  f"[{ratio['low']:.2f}, {ratio['high']:.2f}] (95%)")
    ax.set_title(title, fontsize=9)


def _sweep_panel(ax, result: dict) -> None:
    for act, sw in result["sweeps"].items():
        rows = [r for r in sw["rows"] if not r["diverged"]]
        hit = [r for r in rows if r["steps"] is not None]
        miss = [r for r in rows if r["steps"] is None]
        ax.plot([r["lr"] for r in hit], [r["steps"] for r in hit], marker="o",
                label=act, **STYLE[act])
        ax.scatter([r["lr"] for r in miss], [r["ran_steps"] for r in miss], marker="o",
                   facecolors="none", edgecolors=STYLE[act]["color"])
        for r in sw["rows"]:
            if r["diverged"]:
                ax.annotate("diverged", (r["lr"], 0), fontsize=7, color=STYLE[act]["color"],
                            rotation=90, va="bottom", xycoords=("data", "axes fraction"))
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("pilot steps to the target")
    ax.set_title(f"the sweep (seed {result['config']['pilot_seed']}; open: not reached)",
                 fontsize=9)
    ax.legend(fontsize=8)


def plot_figure1(result: dict, path: str | Path, log_epochs: bool = False) -> Path:
    """results.json's content -> a 1100×450 PNG at `path`, written atomically."""
    fig = figure(1100, 450)
    curve_ax = fig.add_axes((0.06, 0.12, 0.56, 0.8))
    sweep_ax = fig.add_axes((0.70, 0.12, 0.28, 0.8))
    _curve_panel(curve_ax, result, log_epochs)
    _sweep_panel(sweep_ax, result)
    return save_figure(fig, path)


# --- the tables: results.md -----------------------------------------------------------------------------------

def _cell(side: dict, per_epoch: int) -> str:
    if side["images"] is None:
        return "diverged" if side["diverged"] else "not reached"
    return f"{side['images']:,} ({side['images'] / per_epoch:.2f})"


def format_table(result: dict) -> str:
    """Per seed: images (epochs) to the target per activation and their ratio; then the means,
    the paired ratio with its interval and the verdict. Markdown, readable as plain text too."""
    per_epoch, summ = result["images_per_epoch"], result["summary"]
    target = result["config"]["target"]
    lines = [f"| seed | relu: images (epochs) to ≤ {target:.0%} | tanh: images (epochs) | "
             f"tanh ÷ relu |", "|---:|---:|---:|---:|"]
    for row in result["seeds"]:
        r, t = row["relu"]["images"], row["tanh"]["images"]
        ratio = f"{t / r:.2f}" if r and t else (f"> {result['budget_images'] / r:.2f}"
                                                if r else "—")
        lines.append(f"| {row['seed']} | {_cell(row['relu'], per_epoch)} | "
                     f"{_cell(row['tanh'], per_epoch)} | {ratio} |")
    acts = list(result["sweeps"])
    means = [summ[a]["mean_images"] for a in acts]
    cells = ["—" if m is None else f"{m:,.0f} ({m / per_epoch:.2f})" for m in means]
    n = len(result["seeds"])
    cells = [c + ("" if summ[a]["reached"] == n else f", {summ[a]['reached']} of {n} seeds")
             for a, c in zip(acts, cells)]
    lines.append(f"| mean | {cells[0]} | {cells[1]} | |")
    if summ["ratio"] is not None:
        ci = summ["ratio"]
        lines.append(f"| **paired** | | | **{ci['estimate']:.2f} [{ci['low']:.2f}, "
                     f"{ci['high']:.2f}]** |")
    return "\n".join(lines)


def format_ladder(result: dict) -> str:
    """The paired ratio at each level of the ladder (the first row is the main target)."""
    per_epoch, n = result["images_per_epoch"], len(result["seeds"])
    lines = ["| training error ≤ | relu: mean images (epochs) | tanh: mean images (epochs) | "
             "tanh ÷ relu [95%] | verdict |", "|---:|---:|---:|---:|---|"]
    for level in result["ladder"]:
        cells = []
        for act in result["sweeps"]:
            side = level[act]
            m = side["mean_images"]
            cells.append("—" if m is None else f"{m:,.0f} ({m / per_epoch:.2f})"
                         + ("" if side["reached"] == n else f", {side['reached']} of {n}"))
        r = level["ratio"]
        ratio = "—" if r is None else (f"{r['estimate']:.2f} [{r['low']:.2f}, {r['high']:.2f}]"
                                       + (" (lower bound)" if level["note"] else ""))
        lines.append(f"| {level['target']:.0%} | {cells[0]} | {cells[1]} | {ratio} | "
                     f"{level['verdict']} |")
    return "\n".join(lines)


def verdict_line(result: dict) -> str:
    """The ratio, its interval, where the paper's 6× falls, and the verdict, in one paragraph."""
    cfg, summ = result["config"], result["summary"]
    ratio = summ["ratio"]
    if ratio is None:
        return f"No ratio: {summ['note']}."
    magnitude = (CENSORED if summ.get("tanh_censored") and summ["paper"] != "below"
                 else MAGNITUDE[summ["paper"]])
    return (f"Ratio tanh ÷ relu of images to {cfg['target']:.0%} training error: geometric mean "
            f"**{ratio['estimate']:.2f}**, 95% interval [{ratio['low']:.2f}, {ratio['high']:.2f}]"
            f" ({ratio['method']}, {ratio['n']} seeds). ReLU faster at all: "
            f"**{summ['verdict']}**. The paper's {summ['paper_ratio']:g}× is {summ['paper']} the "
            f"interval: {magnitude}. {summ['note']}").strip()


def results_markdown(result: dict, command: str) -> str:
    cfg = result["config"]
    sweep_lines = ["| activation | lr | pilot steps to target (seed "
                   f"{cfg['pilot_seed']}) |", "|---|---:|---:|"]
    for act, sw in result["sweeps"].items():
        for row in sw["rows"]:
            got = ("diverged" if row["diverged"] else row["steps"] if row["steps"] is not None
                   else f"> {row['ran_steps']}")
            mark = " ← chosen" if row["lr"] == sw["lr"] else ""
            sweep_lines.append(f"| {act} | {row['lr']:g} | {got}{mark} |")
    edges = [a for a, sw in result["sweeps"].items() if sw["at_edge"]]
    return "\n".join([
        "# Figure 1: ReLU against tanh (four-layer CNN, Fashion-MNIST)", "",
        f"`{command}`", "",
        f"Budget per run: {result['budget_images']:,} images = {cfg['epochs']} epochs of "
        f"{cfg['train_images']:,} images, batch {cfg['batch_size']}, SGD momentum "
        f"{cfg['momentum']}, no weight decay. Training error: running error over the last "
        f"{cfg['window']} images. Training took {result['train_minutes']} min in all, on "
        f"{result['threads']} thread(s).", "",
        "## Learning-rate sweep", "", *sweep_lines, "",
        *([f"The chosen lr is at the edge of the grid for {', '.join(edges)}: a wider grid "
           f"might find a faster one.", ""] if edges else []),
        "## Seeds (paired: same initial weights and data order)", "", format_table(result), "",
        verdict_line(result), "",
        "## Lower training errors, from the same runs", "",
        "Each net keeps the lr chosen for the main target; a net that did not get there within "
        "the budget counts at the budget, which makes the ratio a lower bound.", "",
        format_ladder(result), "", "![Figure 1](figure1.png)", ""])


def write_report(result: dict, out: Path, command: str) -> None:
    atomic_write_json(out / "results.json", strict_json(result))  # one seed: high = inf
    atomic_write_text(out / "results.md", results_markdown(result, command))
    plot_figure1(result, out / "figure1.png")
