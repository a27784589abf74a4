"""The planned reading "dropout roughly doubles the iterations needed to converge" (paper §4.2),
reported, not tested: the val error of each seed's dropout net after 60 passes (this study)
against the same seed's net without dropout after 30 passes (experiments/dropout-1000), each at
the end of its own cosine schedule, and the 30-pass pair as the baseline it is read against.

    .venv/bin/python experiments/dropout-1000-60/doubling.py [THIS_STUDY_DIR]

THIS_STUDY_DIR holds the per-seed files p<dropout>-seed<k>.json (default: this folder's copy);
the seeds read are those it holds for both nets (0-2 in session 21, 0-4 from session 22).
"""
import json
import sys
from pathlib import Path

from alexnet.stats import paired_difference

HERE = Path(__file__).parent


def seeds_in(folder: Path) -> list[int]:
    """The seeds with a finished run of both nets in folder."""
    def seeds(dropout):
        return {int(p.stem.rsplit("seed", 1)[1]) for p in folder.glob(f"p{dropout}-seed*.json")}
    return sorted(seeds("0.5") & seeds("0"))


def last(folder: Path, dropout: str, seed: int) -> dict:
    run = json.loads((folder / f"p{dropout}-seed{seed}.json").read_text())
    assert not run["diverged"], (folder, dropout, seed)
    return run["curve"][-1]


def main() -> None:
    long = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "dropout"
    short = HERE.parent / "dropout-1000" / "dropout"
    seeds = seeds_in(long)
    rows = {"dropout, 60 passes": [last(long, "0.5", s) for s in seeds],
            "no dropout, 60 passes": [last(long, "0", s) for s in seeds],
            "dropout, 30 passes": [last(short, "0.5", s) for s in seeds],
            "no dropout, 30 passes": [last(short, "0", s) for s in seeds]}
    print(f"| net | epoch | val error, seeds {', '.join(map(str, seeds))} | mean | "
          "train error (mean) |")
    print("|---|---:|---|---:|---:|")
    for name, runs in rows.items():
        errors = [r["val_error"] for r in runs]
        print(f"| {name} | {runs[0]['epoch']} | {', '.join(f'{e:.1%}' for e in errors)} | "
              f"{sum(errors) / len(errors):.1%} | "
              f"{sum(r['train_error'] for r in runs) / len(runs):.1%} |")
    for a, b in (("no dropout, 30 passes", "dropout, 60 passes"),
                 ("no dropout, 30 passes", "dropout, 30 passes")):
        d = paired_difference([r["val_error"] * 100 for r in rows[a]],
                              [r["val_error"] * 100 for r in rows[b]])
        print(f"\nval error, {b} - {a}, in points: {d.estimate:+.1f} "
              f"[{d.low:+.1f}, {d.high:+.1f}] (paired t, df = {d.n - 1})")


if __name__ == "__main__":
    main()
