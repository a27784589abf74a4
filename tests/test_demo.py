"""The README's first command (`alexnet train` with no options) must train the paper's network to >=
90% validation top-1 accuracy on `shapes`, within ten minutes on a 2-core CPU with native bf16
(AVX512-BF16 or AMX; 8.5 minutes measured on an Intel, 8.3 on an AMD EPYC in session 15). Without
it (an AVX2-only CPU, where `auto` trains in fp32) the demo takes 20 to 30 minutes (28 measured in
session 7), so there only the accuracy is checked. Nor is the time judged when other processes took
a share of the cores while it ran: beside an ablation run on the same 2 cores the demo took 1,703 s
(session 14), which says nothing about the demo. Slow: `pytest -m slow tests/test_demo.py`."""
from __future__ import annotations

import json
import os
import resource
import time

import pytest

from alexnet import accel
from alexnet.cli import main as cli_main


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (steal included: a neighbour VM's share)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU seconds of this process and its reaped children (the demo's loader workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


@pytest.mark.slow
def test_the_demo_reaches_90_percent_in_its_time(tmp_path):
    start, busy, own = time.perf_counter(), _busy_seconds(), _own_seconds()
    assert cli_main(["train", "--out", str(tmp_path / "demo"), "--no-progress"]) == 0
    seconds = time.perf_counter() - start
    others = (_busy_seconds() - busy) - (_own_seconds() - own)  # cores taken by other work
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert results["1-crop"]["top1_error"] <= 0.10, results
    print(f"the demo took {seconds:.0f} s; val top-1 error {results['1-crop']['top1_error']:.2%}; "
          f"other work used {others / seconds:.2f} cores meanwhile")
    if not accel.native_bf16("cpu"):
        return
    if others / seconds > 0.25:  # a quarter of a core on average: the machine was shared
        pytest.skip(f"accuracy held; the time ({seconds:.0f} s) not judged: other work used "
                    f"{others / seconds:.2f} cores meanwhile")
    assert seconds <= 600, f"took {seconds:.0f} s"
