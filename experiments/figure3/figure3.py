"""Figure 3 in numbers and pictures: conv1's kernels (W) and what training added to them
(ΔW = W − W0, against the weights the run started from), per tower.

    python experiments/figure3/figure3.py OUT CKPT [CKPT ...]

CKPT: a checkpoint in a run directory (its config.json rebuilds the run's initial weights with
its seed: train.setup draws the same ones, tests/test_ablate.py::test_one_seed_gives_every_arm_
the_same_start). Prints a markdown table (alexnet.visualize.filters.structure: the low-frequency
share of the spatial energy, against white noise's, and the colour share, 2/3 for RGB noise, 0 for
grey) and writes OUT/<name>-weights.png and OUT/<name>-learned.png (alexnet show filters' grid).
"""
import json
import sys
from pathlib import Path

import torch

from alexnet import train
from alexnet.checkpoint import load_checkpoint
from alexnet.config import TrainConfig
from alexnet.predictor import Predictor
from alexnet.visualize.filters import conv1_weight, draw_filters, structure


def initial_conv1(run_dir: Path) -> tuple[torch.Tensor, int]:
    """conv1 as the run started, and the training images per epoch."""
    saved = json.loads((run_dir / "config.json").read_text())
    cfg = TrainConfig(**{**saved, "out": "/tmp/figure3-never", "resume": None, "workers": 0})
    t = train.setup(cfg)
    return conv1_weight(t.model), len(t.train_loader) * cfg.batch_size


def cells(w: torch.Tensor) -> str:
    out = []
    for group in torch.chunk(w, 2):
        s = structure(group)
        out.append(f"{s['low_freq']:.2f} / {s['colour']:.2f}")
    return " | ".join(out)


def main(out: Path, checkpoints: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    print("| checkpoint | images seen | ‖ΔW‖/‖W0‖ | W: tower 1 | W: tower 2 | ΔW: tower 1 | "
          "ΔW: tower 2 |")
    print("|---|---:|---:|---|---|---|---|")
    for path in map(Path, checkpoints):
        run = path.parent
        w0, per_epoch = initial_conv1(run)
        seen = f"{per_epoch * load_checkpoint(path)['epoch']:,}"
        w = conv1_weight(Predictor.from_file(path, device="cpu", precision="fp32").model)
        name = f"{run.name}-{path.stem}"
        draw_filters(w, 2, out / f"{name}-weights.png", title=f"{name}: ")
        draw_filters(w - w0, 2, out / f"{name}-learned.png", title=f"{name}, W − W0: ")
        print(f"| {run.name}/{path.name} | {seen} | {((w - w0).norm() / w0.norm()).item():.3f} | "
              f"{cells(w)} | {cells(w - w0)} |", flush=True)
    s = structure(torch.randn(96, 3, 11, 11))
    print(f"\n(cells: low-frequency share / colour share; white noise {s['low_freq_noise']:.2f} / "
          f"0.67)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
