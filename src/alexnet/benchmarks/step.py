"""`alexnet bench step`: where c's training step goes, part by part, against the roofline's budget.

`bench model` reports c's share of the roofline: the step's FLOPs over its time and the rate of a
large GEMM in its precision. Issue 12 asks for 65%, so a step may take at most
FLOPs / (0.65 x GEMM rate). This splits c's step into parts (the convolutions and matrix products,
the LRN, the pooling, copies, the weights' update, ...) and sets them against that budget.

Why not torch.profiler (`bench model --profile`)? Its bookkeeping costs time of its own, unevenly:
on a 2-core CPU its top 15 ops summed to 315 ms for a step that took 258 ms without it, the fc
layers' matrix products to 54 ms that took 36 (BENCHMARKS.md, session 12). Here each op is timed
by the wall clock as it runs (a TorchDispatchMode; only the outermost call, so an op's inner calls
count in it), the weights' update (a kernel call, not a torch op, with the bf16 copies) around
that call, and the mode's own cost per op on a trivial op; what is left of the timed step is
Python and autograd between the ops. Each round also runs one step with no timer at all, one
large GEMM and a memory-streaming op, so the budget is measured in the same rounds as the parts.
CPU only: on a GPU the ops run asynchronously and a wall clock per op would time their launches.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .. import accel
from ..errors import AlexNetError, at_least
from .common import add_step_arguments, gemm_probe, machine, step_header
from .model import ROOFLINE_TARGET, build

CONV_FORWARD, CONV_BACKWARD, FC = ("convolutions, forward", "convolutions, backward",
                                   "fc layers (matrix products)")
GEMM_PARTS = (CONV_FORWARD, CONV_BACKWARD, FC)  # the work the roofline counts
UPDATE = "the weights' update (optimizer)"
# The parts, by the names the dispatcher gives the ops under a dispatch mode: what is left after
# autograd, and composite ops (linear, matmul) already taken apart. Some occur only off c's path:
# torch's pooling (NCHW), torch's fused SGD/AdamW (no bf16 copies: fp32, or no C compiler).
PARTS = {
    CONV_FORWARD: ("aten::convolution",),
    CONV_BACKWARD: ("aten::convolution_backward",),
    FC: ("aten::mm", "aten::addmm"),
    "LRN (with the pooling after it)": ("alexnet::lrn", "alexnet::lrn_backward",
                                        "alexnet::lrn_pool", "alexnet::lrn_pool_backward"),
    "max pooling (apart from LRN)": ("alexnet::max_pool", "alexnet::max_pool_backward",
                                     "aten::max_pool2d_with_indices",
                                     "aten::max_pool2d_with_indices_backward"),
    "copies (casts, layouts, space-to-depth)": ("aten::copy_", "aten::_to_copy", "aten::clone",
                                                "aten::constant_pad_nd", "alexnet::space_to_depth"),
    UPDATE: ("aten::_fused_sgd_", "aten::_fused_adamw_"),
}
OTHER = "other ops (ReLU, dropout, loss, fills, bias gradients)"
TIMER = "the timer's own cost (ops x its cost per op)"
BETWEEN = "between ops (Python, autograd)"
# What SGD with momentum must move per parameter, the floor of its time: with the bf16 copies
# it reads the bf16 gradient, the fp32 weight and momentum and writes those and the copy; with
# torch's fused SGD (no copies) it reads an fp32 gradient instead and writes no copy. 20 both ways.
UPDATE_BYTES = 20
_PART_OF = {op: part for part, ops in PARTS.items() for op in ops}


class OpTimer(TorchDispatchMode):
    """Wall-clock seconds per part of every op run under it (outermost calls only: inside
    __torch_dispatch__ the mode is off, so an op's own inner calls are not seen again)."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        name = func._schema.name  # without the overload: aten::_fused_sgd_, not .tensor_lr
        if not name.startswith("profiler::"):  # record_function's marks (inside the update)
            self.seconds[_PART_OF.get(name, OTHER)] += time.perf_counter() - start
            self.calls += 1
        return out

    def cost_per_op(self, reps: int = 500, rounds: int = 5) -> float:
        """Seconds the mode adds to each op, measured on a trivial one (with it against without):
        Python's work for each call, most of it outside the op's own window. The best of a few
        interleaved rounds each, so that a neighbour taking the core in one round does not
        decide the figure (a single pair once gave "without" the slower time)."""
        t = torch.zeros(4)

        def loop() -> float:
            start = time.perf_counter()
            for _ in range(reps):
                t.add_(1)
            return time.perf_counter() - start
        seconds, calls = self.seconds.copy(), self.calls
        plain, timed = [], []
        for _ in range(rounds):
            plain.append(loop())
            with self:
                timed.append(loop())
        self.seconds.clear()  # in place: the update's timer holds this dict
        self.seconds.update(seconds)
        self.calls = calls  # the loop is not part of any step
        return max(0.0, min(timed) - min(plain)) / reps


def _timed_update(masters, seconds: dict[str, float]) -> None:
    """Time the bf16 copies' update (a kernel call no dispatch mode sees) into `seconds`."""
    step = masters.step

    def timed() -> None:
        start = time.perf_counter()
        step()
        seconds[UPDATE] = seconds.get(UPDATE, 0.0) + time.perf_counter() - start
    masters.step = timed  # train_step calls it as the optimizer's step


def measure(args) -> dict:
    """c's step, plain and timed by parts, and the GEMM rate, in interleaved rounds; medians."""
    _check(args)
    device = torch.device("cpu")
    accel.tune_allocator()  # as training does
    trainee = build("c", device, _build_args(args))
    rate = gemm_probe(device, accel.DTYPES[trainee.precision], args.gemm_size)
    stream = stream_probe()
    timer = OpTimer()
    if trainee.masters is not None:
        _timed_update(trainee.masters, timer.seconds)
    for _ in range(args.warmup):
        trainee.step()
    with timer:  # the mode's first use costs far more per op than the next ones: not measured
        trainee.step()
    plain, timed, gemm, streams, parts = [], [], [], [], defaultdict(list)
    for _ in range(args.steps):
        start = time.perf_counter()
        trainee.step()
        plain.append(time.perf_counter() - start)
        gemm.append(rate())
        streams.append(stream())
        cost = timer.cost_per_op()
        timer.seconds.clear()
        timer.calls = 0
        start = time.perf_counter()
        with timer:
            trainee.step()
        timed.append(time.perf_counter() - start)
        for part in (*PARTS, OTHER):
            parts[part].append(timer.seconds.get(part, 0.0))
        parts[TIMER].append(timer.calls * cost)
        parts[BETWEEN].append(timed[-1] - sum(timer.seconds.values()) - parts[TIMER][-1])
    return _result(args, trainee, plain, timed, gemm, streams, parts)


def _check(args) -> None:
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise AlexNetError(f"--device: not a device: {args.device!r}") from None
        # a GPU runs ops asynchronously: a wall clock around each would time its launch
        if device.type != "cpu":
            raise AlexNetError("bench step times ops on the CPU only; on a GPU use bench model "
                               "--profile")
    at_least(args, 1, "batch_size", "steps", "num_classes", "gemm_size")
    at_least(args, 0, "warmup")


def _build_args(args) -> argparse.Namespace:
    """The options build() reads, from ours (c runs as `bench model` runs it, without compile)."""
    return argparse.Namespace(batch_size=args.batch_size, num_classes=args.num_classes,
                              precision=args.precision, compile=False)


def stream_probe(mib: int = 256):
    """A callable that times torch's b.add_(a, alpha=0.5) over two fp32 tensors of `mib` MiB
    (two reads and one write per value) and returns the bytes per second it moved: how fast this
    machine streams memory, for the weights' update to be set against."""
    a, b = torch.rand(mib << 18), torch.zeros(mib << 18)
    b.add_(a, alpha=0.5)  # pages touched

    def probe() -> float:
        start = time.perf_counter()
        b.add_(a, alpha=0.5)
        return 3 * 4 * a.numel() / (time.perf_counter() - start)
    return probe


def _result(args, trainee, plain, timed, gemm, streams, parts) -> dict:
    ms = {part: 1000 * statistics.median(v) for part, v in parts.items()}
    step_ms, timed_ms = 1000 * statistics.median(plain), 1000 * statistics.median(timed)
    rate = statistics.median(gemm)  # FLOP/s
    flops = trainee.flops_per_image * args.batch_size
    gemm_ms = sum(ms[p] for p in GEMM_PARTS)
    floor_ms = gemm_ms + ms[UPDATE]
    return {
        "machine": machine(torch.device("cpu")),
        "fast_path": accel.fast_path(torch.device("cpu")).describe(),
        "precision": trainee.label, "batch_size": args.batch_size, "steps": args.steps,
        "step_ms": step_ms, "timed_step_ms": timed_ms, "parts_ms": ms,
        "gflop_per_step": flops / 1e9, "gemm_gflops": rate / 1e9, "gemm_size": args.gemm_size,
        "roofline_share": flops / (step_ms / 1000) / rate,
        "budget_ms": 1000 * flops / (ROOFLINE_TARGET * rate),
        "gemm_parts_ms": gemm_ms, "gemm_parts_share_of_rate": flops / (gemm_ms / 1000) / rate,
        "gemm_parts_and_update_ms": floor_ms,
        "update_gb_per_s": (UPDATE_BYTES * trainee.parameters / ms[UPDATE] / 1e6
                            if ms[UPDATE] > 0 else None),  # 0: an optimizer no part names
        "stream_gb_per_s": statistics.median(streams) / 1e9,
        # the bound on c's share that the GEMM parts and the update set: every other part at 0
        "roofline_share_at_most": flops / (floor_ms / 1000) / rate,
    }


def format_report(r: dict) -> str:
    lines = step_header(r, f"median of {r['steps']} rounds, each one step with no timer, one "
                           f"timed by parts, one {r['gemm_size']}^3 GEMM and one memory stream")
    lines += ["| part | ms/step | share of the timed step |", "|---|---:|---:|"]
    lines += [f"| {part} | {ms:.1f} | {100 * ms / r['timed_step_ms']:.1f}% |"
              for part, ms in r["parts_ms"].items()]
    lines += [f"| the timed step | {r['timed_step_ms']:.1f} | |",
              f"| the step with no timer | {r['step_ms']:.1f} | |", "",
              f"{r['gflop_per_step']:.0f} GFLOP a step; GEMM {r['gemm_size']}^3: "
              f"{r['gemm_gflops']:.0f} GFLOP/s; c's share of the roofline: "
              f"{100 * r['roofline_share']:.0f}%",
              f"at {100 * ROOFLINE_TARGET:.0f}% a step may take {r['budget_ms']:.0f} ms; the "
              f"convolutions and fc layers take {r['gemm_parts_ms']:.0f} ms (their rate: "
              f"{100 * r['gemm_parts_share_of_rate']:.0f}% of the GEMM's), with the weights' "
              f"update {r['gemm_parts_and_update_ms']:.0f} ms: c's share would be at most "
              f"{100 * r['roofline_share_at_most']:.0f}% if every other part took no time"]
    if r["update_gb_per_s"] is not None:
        lines.append(f"the weights' update moved {UPDATE_BYTES} bytes a parameter at "
                     f"{r['update_gb_per_s']:.0f} GB/s; torch's b.add_(a) streams "
                     f"{r['stream_gb_per_s']:.0f} GB/s on this machine")
    return "\n".join(lines)


def add_arguments(parser) -> None:
    add_step_arguments(parser, "cpu (the only one this times)")


def run(args) -> int:
    result = measure(args)
    print(json.dumps(result) if args.json else format_report(result))
    return 0
