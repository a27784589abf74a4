"""The ten-crop study's table (run.sh says what was planned): per arm, 1-crop and 10-crop top-1
error by seed and the paired difference 10-crop − 1-crop with its 95% t-interval.

    python experiments/ten-crop/analyze.py OUT    # writes OUT/summary.json and prints the table
    python experiments/ten-crop/analyze.py experiments/ten-crop/evals   # the committed evaluations
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from alexnet.stats import mean, paired_difference, verdict

NAME = re.compile(r"^(?P<arm>.+)-seed(?P<seed>\d+)-crops(?P<crops>\d+)\.json$")


def gather(out: Path) -> dict[str, dict[int, dict[int, dict]]]:
    """results[arm][seed][crops] = eval's JSON object."""
    results: dict = {}
    for path in sorted(out.glob("*.json")):
        m = NAME.match(path.name)
        if m:
            results.setdefault(m["arm"], {}).setdefault(int(m["seed"]), {})[int(m["crops"])] = \
                json.loads(path.read_text())
    return results


def arm_row(arm: str, seeds: dict[int, dict]) -> dict:
    pairs = sorted(s for s, r in seeds.items() if {1, 10} <= set(r))
    one = [seeds[s][1]["top1_error"] for s in pairs]
    ten = [seeds[s][10]["top1_error"] for s in pairs]
    diff = paired_difference(one, ten)
    return {"arm": arm, "seeds": pairs, "one_crop": one, "ten_crop": ten,
            "difference": diff.as_dict(), "verdict": verdict(diff, "less")}


def main(out: Path) -> None:
    results = gather(out)
    arms = ["baseline"] + sorted(a for a in results if a != "baseline")
    rows = [arm_row(arm, results[arm]) for arm in arms if arm in results]
    # All nets together, a description only: a seed's nets share their data order, so they are
    # not independent pairs, and a t-interval over them would claim more than they hold.
    everything = {"arm": "all nets",
                  "seeds": [[i, s] for i, row in enumerate(rows) for s in row["seeds"]],
                  "one_crop": [e for row in rows for e in row["one_crop"]],
                  "ten_crop": [e for row in rows for e in row["ten_crop"]]}
    ten_minus_one = mean(everything["ten_crop"]) - mean(everything["one_crop"])
    print("| arm | seeds | 1-crop top-1 err, mean | 10-crop | Δ 10 − 1, points [95%] | verdict |")
    print("|---|---|---:|---:|---:|---|")
    for row in rows:
        d = row["difference"]
        print(f"| {row['arm']} | {min(row['seeds'])}–{max(row['seeds'])} | "
              f"{100 * mean(row['one_crop']):.2f}% | {100 * mean(row['ten_crop']):.2f}% | "
              f"{100 * d['estimate']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] | "
              f"{row['verdict']} |")
    print(f"| all nets (not independent) | {len(everything['seeds'])} nets | "
          f"{100 * mean(everything['one_crop']):.2f}% | {100 * mean(everything['ten_crop']):.2f}% | "
          f"{100 * ten_minus_one:+.2f} | |")
    for row in rows:
        print(f"{row['arm']}: 1-crop " + ", ".join(f"{100 * e:.1f}" for e in row["one_crop"]) +
              "; 10-crop " + ", ".join(f"{100 * e:.1f}" for e in row["ten_crop"]) +
              f" (seeds {row['seeds']})")
    (out / "summary.json").write_text(json.dumps({"arms": rows, "all": everything}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
