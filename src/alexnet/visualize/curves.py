"""Loss and error per epoch (`plot_curves`, also used by `alexnet train` for curves.png), and
`alexnet show curves RUN [RUN…]`, which puts several runs on one plot from their metrics.jsonl."""
from __future__ import annotations

from pathlib import Path

from ..errors import AlexNetError
from ..io import read_json
from .common import drawable, pyplot, save_figure

WIDTH_PX, HEIGHT_PX = 1100, 400


def plot_curves(histories: dict[str, list[dict]], path: str | Path) -> Path:
    """histories: {run label: [metrics per epoch]} -> PNG with loss (left) and error (right)."""
    plt = pyplot()
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(WIDTH_PX / 100, HEIGHT_PX / 100), dpi=100)
    for label, history in histories.items():
        label = drawable(label)  # a run directory's name need not be UTF-8
        epochs = [h["epoch"] for h in history]
        line, = ax_loss.plot(epochs, [h["train_loss"] for h in history], marker=".",
                             label=f"{label} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "--", marker=".",
                     color=line.get_color(), label=f"{label} val")
        ax_err.plot(epochs, [100 * h["val_top1_error"] for h in history], marker=".",
                    color=line.get_color(), label=f"{label} top-1")
        ax_err.plot(epochs, [100 * h["val_top5_error"] for h in history], ":", marker=".",
                    color=line.get_color(), label=f"{label} top-5")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_err.set(xlabel="epoch", ylabel="validation error (%)", title="error (centre crop)")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7 if len(histories) > 3 else 8)
    fig.tight_layout()
    return save_figure(fig, path)


def read_history(run: str | Path) -> list[dict]:
    """The per-epoch metrics of a run directory (or of a metrics.jsonl file given directly)."""
    path = Path(run)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise AlexNetError(f"{run}: no metrics.jsonl (not a training run directory?)")
    rows, why = read_json(path, lines=True)
    if why is not None:
        raise AlexNetError(f"{path}: not JSON lines ({why})")
    need = {"epoch", "train_loss", "val_loss", "val_top1_error", "val_top5_error"}
    if not rows or not all(isinstance(r, dict) and need <= set(r) for r in rows):
        raise AlexNetError(f"{path}: no epochs with {', '.join(sorted(need))}")
    for number, row in enumerate(rows, 1):
        bad = sorted(k for k in need if isinstance(row[k], bool)
                     or not isinstance(row[k], (int, float)))
        if bad:
            raise AlexNetError(f"{path}, line {number}: {', '.join(bad)} must be numbers")
    return rows


def labels_for(runs: list[str]) -> list[str]:
    """The runs' directory names, or their whole paths where two names are the same."""
    names = [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in runs]
    return [n if names.count(n) == 1 else str(r) for n, r in zip(names, runs)]


def run(args) -> int:
    if len(set(args.runs)) != len(args.runs):
        raise AlexNetError("the same run is given twice")
    histories = {label: read_history(r) for label, r in zip(labels_for(args.runs), args.runs)}
    print(plot_curves(histories, args.out))
    return 0
