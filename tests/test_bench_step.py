"""`alexnet bench step`: c's step by parts, the op timer's sorting, the budget's arithmetic."""
from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn.functional as F

from alexnet.benchmarks import step as bench_step
from alexnet.cli import main
from alexnet.lrn import load_kernel
from alexnet.model import alexnet

TINY = ["bench", "step", "--batch-size", "2", "--steps", "2", "--warmup", "1",
        "--num-classes", "10", "--gemm-size", "128", "--json"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_tiny_run_accounts_for_the_whole_timed_step(precision, capsys):
    assert main(TINY + ["--precision", precision]) == 0
    r = json.loads(capsys.readouterr().out)
    parts = r["parts_ms"]
    assert set(parts) == {*bench_step.PARTS, bench_step.OTHER, bench_step.TIMER,
                          bench_step.BETWEEN}
    ours = ("LRN (with the pooling after it)", "max pooling (apart from LRN)")  # C kernels
    for part in (*bench_step.GEMM_PARTS, bench_step.UPDATE,
                 *(ours if load_kernel() is not None else ())):
        assert parts[part] > 0, part  # every one of them runs in c's step
    # each round's ops and update lie inside its timed step (with 2 rounds a median is the mean,
    # so this holds for the medians too): nothing counted twice, nothing left from another step
    timed = sum(v for k, v in parts.items() if k not in (bench_step.TIMER, bench_step.BETWEEN))
    assert timed <= r["timed_step_ms"] * (1 + 1e-9)
    # 2 images, 6 x the forward MACs by hand (test_bench_model) less fc8's 990 missing classes
    assert r["gflop_per_step"] == pytest.approx(2 * 6 * (724_406_816 - 4096 * 990) / 1e9)
    assert parts[bench_step.UPDATE] < r["timed_step_ms"]
    # issue 12's budget, by hand: FLOPs over 65% of the GEMM rate
    assert r["budget_ms"] == pytest.approx(r["gflop_per_step"] / (0.65 * r["gemm_gflops"]) * 1000)
    assert r["roofline_share_at_most"] == pytest.approx(
        r["gflop_per_step"] / r["gemm_parts_and_update_ms"] / r["gemm_gflops"] * 1000)
    assert r["gemm_parts_and_update_ms"] < sum(parts.values())
    params = sum(p.numel() for p in alexnet("paper", num_classes=10).parameters())
    assert r["update_gb_per_s"] == pytest.approx(20 * params / parts[bench_step.UPDATE] / 1e6)
    assert r["stream_gb_per_s"] > 0


def test_the_timer_sorts_ops_into_parts_and_counts_each_once():
    timer = bench_step.OpTimer()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    start = time.perf_counter()
    with timer:
        F.conv2d(x, w).relu().sum().backward()
        a @ b  # noqa: B018
        torch.add(torch.zeros(3), 1, out=torch.empty(3))  # another overload than .Tensor
    wall = time.perf_counter() - start
    assert set(timer.seconds) == {bench_step.CONV_FORWARD, bench_step.CONV_BACKWARD,
                                  bench_step.FC, bench_step.OTHER}
    assert all(s > 0 for s in timer.seconds.values())
    # outermost calls only: a convolution's own inner ops are not timed a second time
    assert sum(timer.seconds.values()) <= wall
    assert 0 < timer.cost_per_op() < 1e-3


def test_the_update_is_timed_around_the_kernel_call():
    seconds = {}

    class Masters:
        def step(self):
            time.sleep(0.01)
    masters = Masters()
    bench_step._timed_update(masters, seconds)
    masters.step()
    assert seconds[bench_step.UPDATE] >= 0.01


def test_the_table_names_every_part_and_the_budget(capsys):
    assert main([a for a in TINY if a != "--json"]) == 0
    out = capsys.readouterr().out
    for part in (*bench_step.PARTS, bench_step.OTHER, bench_step.BETWEEN):
        assert f"| {part} |" in out
    assert "at 65% a step may take" in out


@pytest.mark.parametrize("bad", [["--device", "cuda"], ["--device", "cuda:0"], ["--device", "tpu"],
                                 ["--steps", "0"], ["--batch-size", "0"], ["--warmup", "-1"],
                                 ["--gemm-size", "0"], ["--num-classes", "0"],
                                 ["--precision", "fp64"]])
def test_bad_input_is_one_line_exit_2(bad, capsys):
    assert main(["bench", "step"] + bad) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(("alexnet: error:", "alexnet bench: error:")) and "\n" not in err


@pytest.mark.slow
def test_the_defaults_run(capsys):
    """`alexnet bench step` as a user runs it, with no options: batch 64, 1000 classes, a 4096^3
    GEMM, five rounds."""
    assert main(["bench", "step"]) == 0
    out = capsys.readouterr().out
    for part in (*bench_step.PARTS, bench_step.OTHER, bench_step.TIMER, bench_step.BETWEEN):
        assert f"| {part} |" in out
    assert "at batch 64," in out and "at 65% a step may take" in out
