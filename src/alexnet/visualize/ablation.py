"""The report of `alexnet ablate`: the numbers of each run, read from its directory, and over seeds
(per arm, the validation error's mean and sd, and the paired difference from the baseline with
its 95% interval and the verdict on the paper's claim, all from alexnet.stats), results.md and
results.json (the tables), ablation.png (error per arm with its spread; the differences with
their intervals), activation.png (the paper's Figure 1 on our data: training error against steps
for ReLU, tanh and sigmoid, with the gradient norms at initialisation and the sparsity per layer)
and dropout.png (overfitting with and without dropout)."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from .. import stats
from ..accel import resolve_precision
from ..config import TrainConfig
from ..io import atomic_write_json, atomic_write_text, strict_json
from ..machine import describe
from ..model import RELU_LAYERS
from ..parallel import resolve_device
from .common import pyplot, save_figure

# --- the numbers over seeds -----------------------------------------------------------------------

RUN_NUMBERS = ("val_top5_error", "train_loss", "val_loss", "images_trained", "seconds")
CHANCE_MARGIN = 0.03  # a baseline within 3 points of chance error has not started to learn


def read_run(run: Path) -> dict:
    """The numbers of one finished run directory ({"diverged": message} for a diverged one)."""
    if (run / "diverged.json").is_file():
        return {"diverged": json.loads((run / "diverged.json").read_text())["message"]}
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    last = history[-1]
    batches = config["train_images"] // config["batch_size"]
    row = {"val_top1_error": results["1-crop"]["top1_error"],
           "val_top5_error": results["1-crop"]["top5_error"],
           "train_loss": last["train_loss"], "val_loss": last["val_loss"],
           "images_trained": len(history) * batches * config["batch_size"],
           "val_images": results["1-crop"]["images"], "epochs": len(history),
           "seconds": sum(h["seconds"] for h in history)}
    if "10-crop" in results:
        row["val_top1_error_10crop"] = results["10-crop"]["top1_error"]
    return row


def summarise(arm: str, runs: dict[int, dict], base: dict[int, dict] | None,
              about: dict) -> dict:
    """One arm over its seeds: the mean and sd of its val top-1 error (and the mean of the other
    numbers); beside the baseline, the paired difference arm − baseline over the seeds both
    finished, its 95% interval, and the verdict on the claimed sign (about["direction"]: "greater",
    or None for no claim). `runs`, `base`: {seed: one run's numbers, or {"diverged": message}};
    `about`: change, paper, direction, tests (the words of the arm and of its claim)."""
    ok = {s: r for s, r in runs.items() if "diverged" not in r}
    errors = [r["val_top1_error"] for r in ok.values()]
    row = {"arm": arm, **about, "seeds": list(runs),
           "diverged": {s: r["diverged"] for s, r in runs.items() if s not in ok},
           "val_top1_error": {s: r["val_top1_error"] for s, r in ok.items()},
           "val_top1_mean": stats.mean(errors) if errors else None,
           "val_top1_sd": stats.sample_sd(errors) if errors else math.nan,
           **{k: stats.mean([r[k] for r in ok.values()]) if ok else None for k in RUN_NUMBERS}}
    if base is None or arm == "baseline":
        return row
    pairs = [s for s in ok if "diverged" not in base.get(s, {"diverged": "not run"})]
    diff = stats.paired_difference([base[s]["val_top1_error"] for s in pairs],
                                   [ok[s]["val_top1_error"] for s in pairs]) if pairs else None
    verdict = ("—" if about.get("direction") is None else
               stats.verdict(diff, about["direction"]) if diff else "cannot tell")
    return {**row, "difference": diff.as_dict() if diff else None, "verdict": verdict}


def pilot(base: dict | None, classes: int, level: float = 0.95) -> dict | None:
    """The baseline's spread over its seeds and the smallest paired effect that many seeds can
    detect, d = t·sd_diff/√n with the pilot rule sd_diff = √2·sd (see alexnet.ablate's doc), and
    the error of chance (1 − 1/classes); None with fewer than two finished seeds."""
    if not base or len(base["val_top1_error"]) < 2:
        return None
    n, sd = len(base["val_top1_error"]), base["val_top1_sd"]
    return {"seeds": n, "mean": base["val_top1_mean"], "sd": sd, "sd_diff": math.sqrt(2) * sd,
            "t": stats.t_quantile(1 - (1 - level) / 2, n - 1), "level": level,
            "detectable": stats.detectable_difference(math.sqrt(2) * sd, n, level),
            "chance": 1 - 1 / classes}


def summarise_dropout(runs: dict[str, dict[int, dict]], dropouts: tuple[float, float]) -> dict:
    """At the last epoch, per dropout (with, without): the mean train and val error and loss and
    the gap val − train error; then, over the seeds both finished, the paired differences
    without − with of that gap and of the val error, with verdicts on the paper's claim (without
    dropout, more overfitting, and so a higher val error)."""
    last = {p: {s: r["curve"][-1] for s, r in runs.get(f"{p:g}", {}).items()
                if r["curve"] and not r["diverged"]} for p in dropouts}
    out: dict = {"last": {}}
    for p, ends in last.items():
        if ends:
            means = {k: stats.mean([c[k] for c in ends.values()])
                     for k in ("train_error", "val_error", "train_loss", "val_loss")}
            out["last"][f"{p:g}"] = {**means, "gap": means["val_error"] - means["train_error"]}
    with_p, without = (last[p] for p in dropouts)
    out["seeds"] = [s for s in with_p if s in without]
    for name, value in (("gap", lambda c: c["val_error"] - c["train_error"]),
                        ("val_error", lambda c: c["val_error"])):
        if out["seeds"]:
            diff = stats.paired_difference([value(with_p[s]) for s in out["seeds"]],
                                           [value(without[s]) for s in out["seeds"]])
            out[name] = {"difference": diff.as_dict(), "verdict": stats.verdict(diff, "greater")}
    return out


# --- the tables -----------------------------------------------------------------------------------

def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def _pp(interval: dict | None) -> str:
    """A difference in percentage points with its interval: "+3.2 [−1.0, +7.4]"."""
    if interval is None:
        return "no pairs"
    est = f"{100 * interval['estimate']:+.1f}"
    if not math.isfinite(interval["low"]):
        return f"{est} (one seed: no interval)"
    return f"{est} [{100 * interval['low']:+.1f}, {100 * interval['high']:+.1f}]"


def _spread(r: dict) -> str:
    if r["val_top1_mean"] is None:
        return "diverged"
    sd = r["val_top1_sd"]
    return _pct(r["val_top1_mean"]) + ("" if math.isnan(sd) else f" ± {100 * sd:.1f}")


def format_arms_table(rows: list[dict]) -> str:
    lines = ["| arm | change | val top-1 err, mean ± sd | seeds | Δ arm − baseline, pp [95%] "
             "| verdict | the paper | val − train loss | min per run |",
             "|---|---|---:|---:|---:|---|---|---:|---:|"]
    for r in rows:
        seeds = f"{len(r['val_top1_error'])}" + (f" (+{len(r['diverged'])} diverged)"
                                                 if r["diverged"] else "")
        delta = _pp(r["difference"]) if "difference" in r else ""
        gap = "" if r["val_loss"] is None else f"{r['val_loss'] - r['train_loss']:+.3f}"
        minutes = "" if r["seconds"] is None else f"{r['seconds'] / 60:.1f}"
        lines.append(f"| {r['arm']} | {r['change']} | {_spread(r)} | {seeds} | {delta} | "
                     f"{r.get('verdict', '')} | {r['paper']} | {gap} | {minutes} |")
    return "\n".join(lines)


def format_seeds_table(rows: list[dict]) -> str:
    seeds = rows[0]["seeds"]
    lines = ["| arm | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---|" + "---:|" * len(seeds)]
    for r in rows:
        cells = ["diverged" if s in r["diverged"] else _pct(r["val_top1_error"].get(s))
                 for s in seeds]
        lines.append(f"| {r['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_pilot(p: dict | None, seeds: int) -> str:
    if p is None:
        return (f"Seed spread: fewer than two finished baseline seeds ({seeds} asked), so no "
                f"spread and no interval: every verdict is \"cannot tell\".")
    return (f"Seed spread (pilot): the baseline's val top-1 error is {_pct(p['mean'])} with an sd "
            f"of {100 * p['sd']:.1f} points over {p['seeds']} seeds. Smallest paired effect "
            f"{p['seeds']} seeds can detect at this budget: t({1 - (1 - p['level']) / 2:g}, "
            f"{p['seeds'] - 1})·sd_diff/√{p['seeds']} = {p['t']:.2f} × {100 * p['sd_diff']:.1f}"
            f" / {math.sqrt(p['seeds']):.2f} = {100 * p['detectable']:.1f} points, with sd_diff "
            f"estimated as √2·sd (pilot rule: two independent runs; pairing usually does better)."
            + (f" But the baseline is at chance ({_pct(p['chance'])} error): a small spread there "
               f"means the net has not started to learn, not that effects can be seen; raise the "
               f"budget until it has left chance." if p["mean"] > p["chance"] - CHANCE_MARGIN
               else ""))


def format_dropout(drop: dict) -> str:
    s, p_with, p_without = drop["summary"], *drop["dropouts"]
    lines = [f"{drop['epochs']} epochs over {drop['images']} training images per run; at up to "
             f"ten epochs, error and loss in eval mode (no dropout, centre crop) on those images "
             f"and on {drop['val_images']} val images. Last epoch, mean over seeds:", "",
             "| dropout | train err | val err | gap val − train err | train loss | val loss |",
             "|---:|---:|---:|---:|---:|---:|"]
    for p in (p_with, p_without):
        m = s["last"].get(f"{p:g}")
        if m:
            lines.append(f"| {p:g} | {_pct(m['train_error'])} | {_pct(m['val_error'])} | "
                         f"{100 * m['gap']:+.1f} pp | {m['train_loss']:.3f} | "
                         f"{m['val_loss']:.3f} |")
    lines += ["", f"Paired over seeds {', '.join(map(str, s['seeds']))} (without − with "
              "dropout; the paper claims both positive):", ""]
    for name, words in (("gap", "overfitting gap (val − train error)"),
                        ("val_error", "val error")):
        if name in s:
            lines.append(f"- {words}, in points: {_pp(s[name]['difference'])}: "
                         f"**{s[name]['verdict']}**")
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
                 study: dict, drop: dict, spread: dict | None) -> None:
    """results.md, results.json and the pictures; cfg is the baseline's resolved config."""
    recipe = ", ".join(f"{k}={v}" for k, v in recipe_shown(cfg).items())
    parts = [f"# Ablation: {cfg.data}", "", plan, "", f"Machine: {machine()}.", "",
             f"Recipe shared by every arm (the baseline's; each arm changes one thing): {recipe}.",
             ""]
    if rows:
        tests = [f"- {r['arm']}: {r['tests']}" for r in rows if r.get("direction")]
        parts += ["## One idea changed at a time", "", format_arms_table(rows), "",
                  "Errors are of the final weights on the validation split, centre crop; ± is the "
                  "sd over seeds."]
        if len(rows) > 1:
            parts[-1] += (" Δ is the mean over seeds of arm − baseline, seed by seed, in "
                          "percentage points, with its 95% t-interval. The verdict is read off "
                          "that interval: held (all of it above 0, the paper's sign), not held "
                          "(all below), cannot tell (it holds 0, or one seed); — where the paper "
                          "claims nothing. What each verdict tests:")
            parts += ["", *tests]
        parts += ["", format_pilot(spread, len(rows[0]["seeds"])),
                  "", "Validation top-1 error per seed:", "", format_seeds_table(rows), "",
                  "The train loss (in val − train loss) is the mean over the last epoch with "
                  "dropout and augmentation on, so it is not a clean measure of fit; the dropout "
                  "study measures fit in eval mode.", "", "![ablation](ablation.png)", ""]
        plot_ablation(rows, out / "ablation.png")
    if drop:
        parts += ["## Dropout and overfitting (paper §4.2)", "", format_dropout(drop), "",
                  "![dropout study](dropout.png)", ""]
        plot_dropout(drop, out / "dropout.png")
    if study:
        parts += ["## Activation study (paper Figure 1)", "", format_study(study), "",
                  "![activation study](activation.png)", ""]
        plot_activation_study(study, out / "activation.png")
    atomic_write_text(out / "results.md", "\n".join(parts))
    atomic_write_json(out / "results.json", strict_json({
        "settings": settings, "machine": machine(), "arms": rows, "pilot": spread,
        "dropout_study": drop, "activation_study": study}))


# --- the pictures -------------------------------------------------------------------------------

ABLATION_PX = (1300, 500)
STUDY_PX = (1500, 450)
DROPOUT_PX = (1200, 450)
COLOURS = {"relu": "#1f77b4", "tanh": "#ff7f0e", "sigmoid": "#2ca02c"}
VERDICT_COLOURS = {"held": "#2ca02c", "not held": "#d62728", "cannot tell": "#7f7f7f",
                   "—": "#000000"}


def plot_ablation(rows: list[dict], path):
    """Left: validation top-1 error per arm, mean with ± sd error bars and each seed as a dot, the
    baseline's mean dashed. Right: the paired difference arm − baseline with its 95% interval,
    coloured by verdict (an arm with one seed has a point and no bar)."""
    plt = pyplot()
    fig, (ax_err, ax_diff) = plt.subplots(1, 2, figsize=(ABLATION_PX[0] / 100,
                                                          ABLATION_PX[1] / 100), dpi=100)
    rows = [r for r in rows if r["val_top1_mean"] is not None]  # all seeds diverged: nothing
    names = [r["arm"] for r in rows]
    y = np.arange(len(rows))[::-1]  # the first arm (baseline) at the top
    means = [100 * r["val_top1_mean"] for r in rows]
    sds = [0.0 if math.isnan(r["val_top1_sd"]) else 100 * r["val_top1_sd"] for r in rows]
    ax_err.barh(y, means, xerr=sds, capsize=4, alpha=0.6,
                color=["#d62728" if n == "baseline" else "#7f7f7f" for n in names])
    dots = [[100 * e for e in r["val_top1_error"].values()] for r in rows]
    for yi, d in zip(y, dots):  # just below the bar's error bar, so that the two stay apart
        ax_err.plot(d, [yi - 0.25] * len(d), "k.", ms=5)
    if names and names[0] == "baseline":
        ax_err.axvline(means[0], color="#d62728", ls="--", lw=1)
    ax_err.set_yticks(y, names, fontsize=9)
    ax_err.set(xlabel="validation top-1 error (%): mean ± sd, dots = seeds",
               xlim=(0, max(sum(dots, means + [1])) * 1.1 + 1),
               title="one idea changed at a time")
    for yi, r in zip(y, rows):
        d = r.get("difference")
        if not d:
            continue
        c = VERDICT_COLOURS.get(r["verdict"], "#000000")
        if math.isfinite(d["low"]):
            ax_diff.plot([100 * d["low"], 100 * d["high"]], [yi, yi], color=c, lw=2)
        ax_diff.plot(100 * d["estimate"], yi, "o", color=c)
        ax_diff.text(1.01, yi, r["verdict"], color=c, va="center", fontsize=8,
                     transform=ax_diff.get_yaxis_transform())
    ax_diff.axvline(0, color="k", lw=1)
    ax_diff.set_yticks(y, names, fontsize=9)
    ax_diff.set(xlabel="arm − baseline, val top-1 error (points), 95% interval",
                title="paired difference (the paper claims > 0)")
    for ax in (ax_err, ax_diff):
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_dropout(drop: dict, path):
    """Left: train (dashed) and val (solid) error in eval mode per epoch, with and without
    dropout, mean over seeds and a min–max band. Right: the gap val − train error."""
    plt = pyplot()
    fig, (ax_err, ax_gap) = plt.subplots(1, 2, figsize=(DROPOUT_PX[0] / 100,
                                                         DROPOUT_PX[1] / 100), dpi=100)
    for p, colour in zip(drop["dropouts"], ("#1f77b4", "#ff7f0e")):
        runs = [r["curve"] for r in drop["runs"].get(f"{p:g}", {}).values() if r["curve"]]
        if not runs:
            continue
        n = min(len(c) for c in runs)  # the points every run has (a diverged one stops early)
        epochs = np.array([e["epoch"] for e in runs[0][:n]])  # the measured epochs
        curves = {k: 100 * np.array([[e[k] for e in c[:n]] for c in runs])
                  for k in ("train_error", "val_error")}
        curves["gap"] = curves["val_error"] - curves["train_error"]
        for ax, key, ls in ((ax_err, "train_error", "--"), (ax_err, "val_error", "-"),
                            (ax_gap, "gap", "-")):
            label = f"dropout {p:g}" + ("" if ax is ax_gap else f", {key.split('_')[0]}")
            ax.plot(epochs, curves[key].mean(0), ls, color=colour, marker="o", ms=3,
                    label=f"{label} (mean of {len(runs)})")  # markers: the measured epochs
            ax.fill_between(epochs, curves[key].min(0), curves[key].max(0), color=colour,
                            alpha=0.15, lw=0)
    ax_err.set(xlabel="epoch", ylabel="top-1 error (%), eval mode", ylim=(0, 100),
               title=f"train ({drop['images']} images) vs val error")
    ax_gap.axhline(0, color="k", lw=1)
    ax_gap.set(xlabel="epoch", ylabel="val − train error (points)",
               title="overfitting gap (band: lowest to highest seed)")
    for ax in (ax_err, ax_gap):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
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
