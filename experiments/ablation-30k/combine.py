"""The five-seed ablation at 30,000 images, from two machines: seeds 0-2 ran in session 14 on an
Intel Xeon with AMX, seeds 3-4 in session 15 on an AMD EPYC (avx512_bf16, no AMX). Each pair (an
arm and the baseline with the same seed) ran on one machine, so each difference is paired as
`ablate` pairs them; only the seed-to-seed spread mixes the machines.

Session 14's run directories went with its machine; its per-seed errors (each a count out of 500
validation images, so exact to the 0.2 points shown) are kept here as that session recorded them.

    python experiments/ablation-30k/combine.py [OUT]   # OUT: session 15's ablate --out
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from alexnet.stats import paired_difference, verdict

SESSION_14 = {  # val top-1 error, 1-crop, seeds 0, 1, 2 (Intel Xeon with AMX, bf16)
    "baseline": [0.034, 0.040, 0.082],
    "no-lrn": [0.068, 0.050, 0.076],
    "one-tower-half": [0.082, 0.076, 0.078],
    "no-lighting": [0.054, 0.034, 0.050],
}


def main(out: Path) -> None:
    report = json.loads((out / "results.json").read_text())
    errors = {arm: list(values) for arm, values in SESSION_14.items()}
    for row in report["arms"]:
        errors[row["arm"]] += [row["val_top1_error"][str(s)] for s in row["seeds"]]
    seeds = len(errors["baseline"])
    print(f"| arm | {' | '.join(f'seed {s}' for s in range(seeds))} | Δ arm − baseline [95%] "
          "| verdict |\n|---|" + "---:|" * seeds + "---:|---|")
    summary = {"machine": {"seeds 0-2": "session 14, Intel Xeon, AMX",
                           "seeds 3-4": report["machine"]}, "arms": {}}
    for arm, values in errors.items():
        cells = " | ".join(f"{100 * v:.1f}" for v in values)
        if arm == "baseline":
            print(f"| {arm} | {cells} | | |")
            continue
        d = paired_difference(errors["baseline"], values)
        said = verdict(d, "greater")  # the paper: switching the idea off raises the error
        print(f"| {arm} | {cells} | {100 * d.estimate:+.1f} [{100 * d.low:+.1f}, "
              f"{100 * d.high:+.1f}] | {said} |")
        summary["arms"][arm] = {"val_top1_error": values, "difference": d.estimate,
                                "low": d.low, "high": d.high, "verdict": said}
    summary["arms"]["baseline"] = {"val_top1_error": errors["baseline"]}
    (out / "combined.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/work/exp/ablation-30k/out"))
