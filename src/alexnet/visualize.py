"""Pictures. `plot_curves` draws loss and error per epoch for one or several runs."""
from __future__ import annotations

from pathlib import Path

from .io import atomic_write


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    return plt


def plot_curves(histories: dict[str, list[dict]], path: str | Path) -> Path:
    """histories: {run label: [metrics per epoch]} -> PNG with loss (left) and error (right)."""
    plt = _pyplot()
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(11, 4))
    for label, history in histories.items():
        epochs = [h["epoch"] for h in history]
        line, = ax_loss.plot(epochs, [h["train_loss"] for h in history], label=f"{label} train")
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "--", color=line.get_color(),
                     label=f"{label} val")
        ax_err.plot(epochs, [100 * h["val_top1_error"] for h in history], color=line.get_color(),
                    label=f"{label} top-1")
        ax_err.plot(epochs, [100 * h["val_top5_error"] for h in history], ":",
                    color=line.get_color(), label=f"{label} top-5")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_err.set(xlabel="epoch", ylabel="validation error (%)", title="error (centre crop)")
    for ax in (ax_loss, ax_err):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    return path
