"""`alexnet bench model`: training and inference speed of our fast path against the baselines.

All configurations run in one process, interleaved step by step (a b c d a b c d ...), and each
reports the median of its steps: the machine this project measures on is shared and noisy, and
only ratios measured side by side mean anything there.

    a  the naive faithful baseline: the paper's net with torch.nn.LocalResponseNorm (alpha * n),
       fp32, NCHW, plain SGD -- what a typical re-implementation does
    b  torchvision.models.alexnet(), fp32, NCHW, SGD with momentum: its reference recipe
    c  our paper model on the default fast path (alexnet.accel: bf16 autocast where native,
       channels_last, fused SGD, our LRN kernel; --compile adds torch.compile)
    d  c without LRN: what LRN costs on the fast path (in c the ReLUs of conv1 and conv2 run
       inside the LRN op, AlexNet.forward; in d they run on their own)
    e  c with bf16 autocast re-casting every weight each step, instead of the bf16 copies that
       the optimizer keeps (alexnet.masters; bf16 on the CPU only): what the copies save.
       Not run by default (--configs ce).

The roofline share of c is img/s x training FLOPs per image (3 x forward MACs x 2) over the rate
of a large GEMM in c's precision, measured in the same run. Also: c's inference img/s, and LRN
alone (forward+backward on conv1's output shape, fp32) against torch's nn.LocalResponseNorm.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .. import accel
from ..errors import AlexNetError, at_least
from ..lrn import LocalResponseNorm, kernel_error, lrn_backend, triton_choices, triton_error
from ..masters import MasterWeights
from ..model import alexnet
from ..parallel import resolve_device
from ..step import train_step
from .common import (add_step_arguments, gemm_probe, machine, step_header, sync,
                     tf32_convolutions)
from .update import measure_weight_update

CONFIGS = {
    "a": "paper net, torch LRN (naive), fp32, NCHW",
    "b": "torchvision alexnet, fp32, NCHW",
    "c": "paper net, our fast path",
    "d": "paper net without LRN, fast path",
    "e": "c under autocast, without the bf16 weight copies (differs from c only in bf16 on CPU)",
}
RATIOS = ("c/a", "c/d", "c/b")
# Issue 12's targets, set for a 2-core CPU with AMX (where bf16 runs at ~3x fp32 or more; on a
# CPU without native bf16, c/a cannot reach 4.8: BENCHMARKS.md says why), and issue 14's on a GPU
# (with the LRN as a Triton kernel).
TARGETS = {"cpu": {"c/a": 4.8, "c/d": 0.9, "c/b": 1.5}, "cuda": {"c/d": 0.95}}
ROOFLINE_TARGET = 0.65  # issue 12, CPU: c's img/s x FLOPs over the GEMM rate of its precision


def add_arguments(parser) -> None:
    add_step_arguments(parser, "cpu or cuda (default: cuda if available)")
    parser.add_argument("--compile", action="store_true", help="torch.compile c and d")
    parser.add_argument("--configs", default="abcd", help="which of a, b, c, d, e to train (abcd)")
    parser.add_argument("--inference-batch-sizes", default="1,128",
                        help="batch sizes for c's inference img/s, comma-separated ('' skips)")
    parser.add_argument("--lrn-batch-size", type=int, default=64,
                        help="batch of the LRN forward+backward comparison (0 skips it)")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="instead: profile STEPS training steps of c, per op (torch.profiler)")
    parser.add_argument("--batch-sweep", default=None, metavar="B1,B2,...",
                        help="instead: img/s of --configs at each of these batch sizes, and the "
                        "fastest (e.g. 128,256,512,1024 on a GPU)")


@dataclass
class Trainee:
    key: str
    precision: str
    layout: str
    step: Callable[[], None]
    flops_per_image: float  # training: 3 x forward MACs x 2
    parameters: int = 0
    masters: MasterWeights | None = None  # the bf16 weight copies (alexnet.masters), as train
    seconds: list[float] = field(default_factory=list)      # wall clock per step
    cpu_seconds: list[float] = field(default_factory=list)  # this process's CPU time per step

    @property
    def label(self) -> str:
        """The precision as reports show it, e.g. "bf16 +copies"."""
        return self.precision + (" +copies" if self.masters is not None else "")


def forward_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of x (conv and linear layers), per image."""
    macs = []

    def count(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs.append(output.numel() * module.in_channels // module.groups * kh * kw)
        elif isinstance(module, nn.Linear):
            macs.append(output.numel() * module.in_features)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
        model.train()
    return sum(macs) // x.shape[0]


def naive_paper_net(num_classes: int = 1000) -> nn.Module:
    """Our paper net with each LRN swapped for torch's (alpha times the mean: alpha * size)."""
    model = alexnet("paper", num_classes=num_classes)
    for name, module in list(model.features.named_children()):
        if isinstance(module, LocalResponseNorm):
            torch_lrn = nn.LocalResponseNorm(module.size, module.alpha * module.size,
                                             module.beta, module.k)
            setattr(model.features, name, torch_lrn)
    return model


def _training_step(model, optimizer, x, y, device, precision,
                   masters: MasterWeights | None = None) -> Callable[[], None]:
    """The training step of `alexnet train` (alexnet.step), on a fixed batch."""
    scaler = accel.grad_scaler(device, precision)
    return lambda: train_step(model, optimizer, scaler, x, y, masters=masters,
                              autocast=lambda: accel.autocast(device, precision))


def build(key: str, device: torch.device, args) -> Trainee:
    """One configuration of the module doc, ready to step on a fixed random batch."""
    torch.manual_seed(0)
    n, classes = args.batch_size, args.num_classes
    if key in "ab":  # the baselines: fp32, NCHW, torch's SGD as their recipes use it
        if key == "a":
            model, size, wd = naive_paper_net(classes), 227, 5e-4
        else:
            import torchvision
            model, size, wd = torchvision.models.alexnet(num_classes=classes), 224, 1e-4
        model = model.to(device)
        x = torch.randn(n, 3, size, size, device=device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=wd)
        precision, layout = "fp32", "NCHW"
    else:  # c, d, e: the fast path (e without the bf16 copies)
        precision = accel.resolve_precision(device, args.precision)
        model = alexnet("paper", num_classes=classes, lrn=key != "d")
        model = accel.prepare_model(model, device, channels_last=True)
        x = accel.to_input(torch.randn(n, 3, 227, 227), device, channels_last=True)
        optimizer = accel.make_sgd(model.parameters(), 0.01, 0.9, 5e-4, device)
        layout = "NHWC" + (" +compile" if args.compile else "")
    # Counted before compiling: a compiled model's batch-1 call would compile a graph of its own,
    # and make the training graph's batch dynamic (symbolic) when it compiles next.
    flops = 6.0 * forward_macs(model, x[:1])
    if args.compile and key in "cde":
        # dynamic=False: each batch of a sweep compiles for its own shape (a new batch size
        # would otherwise recompile AlexNet.forward with a symbolic batch).
        model = torch.compile(model, dynamic=False)
    # As `alexnet train` does (bf16 on the CPU): the weights' bf16 copies, kept by the optimizer.
    masters = MasterWeights.create(model, optimizer, device, precision) if key in "cd" else None
    y = torch.randint(0, classes, (n,), device=device)
    step = _training_step(model, optimizer, x, y, device, precision, masters)
    return Trainee(key, precision, layout, step, flops, sum(p.numel() for p in model.parameters()),
                   masters=masters)


def _cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_training(trainees: list[Trainee], warmup: int, steps: int, device: torch.device,
                     probes: dict[str, Callable[[], float]] | None = None) -> dict[str, list]:
    """Interleave the configurations step by step, rotating the order each round (a b c d,
    b c d a, ...: no configuration always follows the same one), and fill each trainee's wall and
    CPU seconds per step. Each probe runs once per round, so that it sees the machine in the same
    state as the steps; returns {probe name: its values}."""
    probes = probes or {}
    for _ in range(warmup):
        for t in trainees:
            t.step()
    sync(device)
    values = {name: [] for name in probes}
    for round_ in range(steps):
        shift = round_ % len(trainees)
        for t in trainees[shift:] + trainees[:shift]:
            cpu, start = _cpu_time(), time.perf_counter()
            t.step()
            sync(device)
            t.seconds.append(time.perf_counter() - start)
            t.cpu_seconds.append(_cpu_time() - cpu)
        for name, probe in probes.items():
            values[name].append(probe())
    return values


def measure_inference(model: nn.Module, device: torch.device, batch: int, reps: int = 3) -> float:
    """img/s of a model from accel.prepare_inference on a batch of `batch` random images."""
    x = accel.to_input(torch.randn(batch, 3, 227, 227), device, channels_last=True)
    times = []
    with torch.inference_mode():
        for i in range(reps + 1):
            sync(device)
            start = time.perf_counter()
            model(x)
            sync(device)
            if i:
                times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def measure_lrn(device: torch.device, batch: int, reps: int = 5) -> dict:
    """Forward+backward ms of LRN on a conv1-shaped fp32 tensor (batch x 96 x 55 x 55): torch's
    nn.LocalResponseNorm(5, alpha=5e-4) against ours (the paper's alpha=1e-4, both towers), NCHW
    for both, and ours in channels_last too. Interleaved, medians."""
    torch.manual_seed(0)
    x = (torch.randn(batch, 96, 55, 55, device=device) * 10).relu()  # ReLU outputs, as in the net
    grad = torch.randn_like(x)
    candidates = {
        "torch": (nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0), x),
        "ours": (LocalResponseNorm(groups=2), x),
        "ours_channels_last": (LocalResponseNorm(groups=2),
                               x.contiguous(memory_format=torch.channels_last)),
    }
    times = {name: [] for name in candidates}
    for i in range(reps + 1):
        for name, (layer, inp) in candidates.items():
            inp = inp.detach().requires_grad_(True)
            sync(device)
            start = time.perf_counter()
            layer(inp).backward(grad)
            sync(device)
            if i:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    result = {f"{name}_ms": 1000 * statistics.median(t) for name, t in times.items()}
    result["shape"] = list(x.shape)
    result["speedup"] = result["torch_ms"] / result["ours_ms"]
    result["speedup_channels_last"] = result["torch_ms"] / result["ours_channels_last_ms"]
    return result


def busy() -> dict:
    """How busy the machine is: the 1-minute load average and the median time of a trivial
    parallel op (ReLU of 1M floats: well under 1 ms when the cores are free). On a busy machine a
    parallel op waits for its sleeping threads to be scheduled (16 ms each was seen here), and a
    step has about 150 of them: that compresses every ratio towards 1, the fast path's most."""
    x = torch.randn(1 << 20)
    times = []
    for _ in range(21):
        start = time.perf_counter()
        torch.relu(x)
        times.append(time.perf_counter() - start)
    return {"load_average": os.getloadavg()[0], "cores": os.cpu_count(),
            "parallel_op_ms": 1000 * statistics.median(times)}


def _check(args) -> tuple[torch.device, list[str], list[int]]:
    device = resolve_device(args.device or "auto")  # one line, not a traceback, for cuda:x
    if device.type not in ("cpu", "cuda"):
        raise AlexNetError(f"--device must be cpu or cuda, got {args.device!r}")
    at_least(args, 1, "batch_size", "steps", "num_classes", "gemm_size")
    at_least(args, 0, "warmup", "lrn_batch_size", "profile")
    keys = list(dict.fromkeys(args.configs))
    if not keys or set(keys) - set(CONFIGS):
        raise AlexNetError(f"--configs takes letters from '{''.join(CONFIGS)}', got "
                           f"{args.configs!r}")
    try:
        batches = [int(b) for b in args.inference_batch_sizes.split(",") if b.strip()]
    except ValueError:
        raise AlexNetError(f"--inference-batch-sizes: integers, got {args.inference_batch_sizes!r}")
    if any(b < 1 for b in batches):
        raise AlexNetError("--inference-batch-sizes must be at least 1")
    return device, keys, batches


def _summary(t: Trainee, batch: int) -> dict:
    median = statistics.median(t.seconds)
    return {"what": CONFIGS[t.key], "precision": t.label, "layout": t.layout,
            "img_per_s": batch / median, "ms_per_step": 1000 * median,
            "cpu_s_per_step": statistics.median(t.cpu_seconds),
            "train_gflop_per_image": t.flops_per_image / 1e9, "step_seconds": t.seconds}


def measure(args) -> dict:
    """Run the benchmark; return the results as one JSON-able dict."""
    device, keys, batches = _check(args)
    busy_before = busy()
    accel.tune_allocator()  # process-wide, so it helps the baselines too: ratios stay conservative
    trainees = [build(k, device, args) for k in keys]
    precision = accel.resolve_precision(device, args.precision)
    probes = {p: gemm_probe(device, accel.DTYPES[p], args.gemm_size)
              for p in dict.fromkeys(["fp32", precision])}
    gemm_values = measure_training(trainees, args.warmup, args.steps, device, probes)
    gemm = {p: statistics.median(v) / 1e9 for p, v in gemm_values.items()}
    train = {t.key: _summary(t, args.batch_size) for t in trainees}
    for t in trainees:  # each against the GEMM rate of its own precision
        s = train[t.key]
        s["roofline_share"] = s["img_per_s"] * s["train_gflop_per_image"] / gemm[t.precision]
    rate = {k: v["img_per_s"] for k, v in train.items()}
    cpu = {k: v["cpu_s_per_step"] for k, v in train.items()}
    ratios = {r: rate[r[0]] / rate[r[2]] for r in RATIOS if r[0] in rate and r[2] in rate}
    targets = {r: v for r, v in TARGETS.get(device.type, {}).items() if r in ratios}
    if "c" in rate and "e" in rate:  # what the bf16 copies buy (no target: 1 where they are off)
        ratios["c/e"] = rate["c"] / rate["e"]
    result = {
        "machine": machine(device), "device": device.type, "batch_size": args.batch_size,
        "fast_path": accel.fast_path(device).describe(),
        "steps": args.steps, "warmup": args.warmup, "compile": args.compile,
        "lrn_backend": lrn_backend(torch.zeros(1, 2, 1, 1, device=device, dtype=accel.DTYPES[
            "fp32" if precision == "fp32" else precision])),
        "lrn_fallback_reason": (kernel_error() if device.type == "cpu" else triton_error()),
        "train": train, "ratios": ratios,
        "targets": targets, "targets_met": {r: ratios[r] >= v for r, v in targets.items()},
        # the same ratios by CPU time per step: the work per image, which time-slicing on a busy
        # machine does not dilute (it includes OpenMP's short spin-waits)
        "ratios_cpu_time": {r: cpu[r[2]] / cpu[r[0]] for r in ratios},
        "gemm_gflops": gemm, "gemm_size": args.gemm_size,
        # the fp32 roofline GEMM as TF32, as cuDNN runs the fp32 rows' convolutions (their fc
        # layers' matrix products stay fp32: torch's default for matmul)
        "fp32_as_tf32": tf32_convolutions(device),
    }
    if "c" in train:
        result["roofline_share_c"] = train["c"]["roofline_share"]
    torch.manual_seed(0)
    model = accel.prepare_inference(alexnet("paper", num_classes=args.num_classes), device,
                                    precision, compile=args.compile)
    result["inference_img_per_s"] = {str(b): measure_inference(model, device, b) for b in batches}
    if args.lrn_batch_size:
        result["lrn"] = measure_lrn(device, args.lrn_batch_size)
    if "e" in keys and any(t.masters for t in trainees if t.key == "c"):
        result["weight_update"] = measure_weight_update(args.num_classes)  # benchmarks/update.py
    result["busy"] = {**busy_before, "load_average_after": os.getloadavg()[0]}
    result["lrn_launch"] = triton_choices()
    return result


def format_report(r: dict) -> str:
    lines = [f"machine: {r['machine']}",
             f"fast path (what c runs; decided by measuring on this machine): {r['fast_path']}",
             f"batch {r['batch_size']}, median of {r['steps']} steps after {r['warmup']} warm-up, "
             f"interleaved; LRN backend: {r['lrn_backend']}"
             + (f" ({r['lrn_fallback_reason']})" if r.get("lrn_fallback_reason") else ""),
             "busy: load average {:.1f} at the start, {:.1f} at the end, on {} cores; a 1M-value "
             "ReLU took {:.2f} ms at the start".format(
                 r["busy"]["load_average"], r["busy"]["load_average_after"], r["busy"]["cores"],
                 r["busy"]["parallel_op_ms"]), "",
             "| | configuration | precision | layout | img/s | ms/step | CPU s/step | GFLOP/img "
             "| roofline |", "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for key, t in r["train"].items():
        lines.append(f"| {key} | {t['what']} | {t['precision']} | {t['layout']} | "
                     f"{t['img_per_s']:.1f} | {t['ms_per_step']:.0f} | "
                     f"{t['cpu_s_per_step']:.2f} | {t['train_gflop_per_image']:.2f} | "
                     f"{100 * t['roofline_share']:.0f}% |")
    lines.append("")
    for name, value in r["ratios"].items():
        target = (f"target >= {r['targets'][name]}: "
                  f"{'met' if r['targets_met'][name] else 'NOT met'}; "
                  if name in r["targets"] else "")
        lines.append(f"{name} = {value:.2f}  ({target}by CPU time "
                     f"{r['ratios_cpu_time'][name]:.2f})")
    tf32 = " (as TF32, as cuDNN runs fp32 convolutions)" if r.get("fp32_as_tf32") else ""
    gemm = ", ".join(f"{p}{tf32 if p == 'fp32' else ''} {v:.0f}"
                     for p, v in r["gemm_gflops"].items())
    lines.append(f"GEMM {r['gemm_size']}^3 GFLOP/s (median, one per round): {gemm}")
    if "roofline_share_c" in r:
        met = "met" if r["roofline_share_c"] >= ROOFLINE_TARGET else "NOT met"
        target = f"target >= {100 * ROOFLINE_TARGET:.0f}%: {met}; " if r["device"] == "cpu" else ""
        lines.append(f"c's share of the roofline: {100 * r['roofline_share_c']:.0f}% ({target}"
                     "roofline: img/s x GFLOP/img over the GEMM rate of the config's own "
                     "precision)")
    for batch, rate in r["inference_img_per_s"].items():
        lines.append(f"inference (c, Predictor's path: accel.prepare_inference) at batch {batch}: "
                     f"{rate:.1f} img/s")
    if "lrn" in r:
        lrn = r["lrn"]
        lines += ["", f"LRN forward+backward, fp32, {'x'.join(map(str, lrn['shape']))}: "
                  f"torch {lrn['torch_ms']:.0f} ms, ours {lrn['ours_ms']:.0f} ms "
                  f"(NHWC {lrn['ours_channels_last_ms']:.0f} ms): {lrn['speedup']:.1f}x "
                  f"({lrn['speedup_channels_last']:.1f}x; target >= 3x)"]
    if r.get("weight_update"):
        w = r["weight_update"]
        lines += ["", f"the weights' per-step update alone ({w['parameters'] / 1e6:.1f}M "
                  f"parameters): autocast's casts + "
                  f"fused SGD {w['autocast_ms']:.0f} ms, the bf16 copies' kernel "
                  f"{w['copies_ms']:.0f} ms: {w['ratio']:.1f}x"]
    return "\n".join(lines + _lrn_launch_lines(r))


def _lrn_launch_lines(r: dict) -> list[str]:
    """How the Triton LRN ran each shape on the GPU, and each option's time (lrn_auto.py)."""
    lines = []
    for c in r.get("lrn_launch", []):
        times = ", ".join(f"{k} {v:.3f}" for k, v in c["ms"].items()) or "an earlier run's choice"
        lines.append(f"  {c['kind']} {c['dtype']} {c['shape']}: {c['choice']} ({times})")
    return ["", "LRN kernels, chosen by timing on this GPU (ms a call):", *lines] if lines else []


def profile_c(args) -> dict:
    """Where c's step goes: self time per op over `args.profile` steps (after warm-up), on the
    CPU's clock, or on a GPU's (the host's time there is mostly kernel launches)."""
    device, _, _ = _check(args)
    trainee = build("c", device, args)
    for _ in range(max(1, args.warmup)):
        trainee.step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.profile):
            trainee.step()
        sync(device)

    def self_us(e) -> float:
        if device.type == "cpu":
            return e.self_cpu_time_total
        return getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
    # On CUDA each kernel is listed twice: as its own event and inside the self device time of
    # the op that launched it. Only the ops (CPU-side events) are kept, so nothing counts twice.
    cpu = torch.autograd.DeviceType.CPU
    events = [e for e in prof.key_averages() if self_us(e) > 0 and e.device_type == cpu]
    total = sum(self_us(e) for e in events)
    ops = sorted(events, key=self_us, reverse=True)
    return {"machine": machine(device), "fast_path": accel.fast_path(device).describe(),
            "precision": trainee.label, "clock": "CPU" if device.type == "cpu" else "GPU",
            "batch_size": args.batch_size, "steps": args.profile, "ops": [
                {"op": e.key, "share": self_us(e) / total, "calls_per_step": e.count / args.profile,
                 "ms_per_step": self_us(e) / 1000 / args.profile} for e in ops[:15]]}


def format_profile(r: dict) -> str:
    lines = step_header(r, f"self {r.get('clock', 'CPU')} time per op over {r['steps']} steps "
                           f"(torch.profiler):")
    lines += ["| op | share | calls/step | ms/step |", "|---|---:|---:|---:|"]
    lines += [f"| {o['op']} | {100 * o['share']:.1f}% | {o['calls_per_step']:.0f} | "
              f"{o['ms_per_step']:.1f} |" for o in r["ops"]]
    return "\n".join(lines)


def batch_sweep(args) -> dict:
    """img/s of each of --configs at each --batch-sweep size (the same interleaved measurement),
    and the fastest batch per configuration; a batch that does not fit on the GPU is skipped."""
    device, keys, _ = _check(args)
    try:
        sizes = [int(b) for b in args.batch_sweep.split(",") if b.strip()]
    except ValueError:
        raise AlexNetError(f"--batch-sweep: integers, got {args.batch_sweep!r}") from None
    if not sizes or min(sizes) < 1:
        raise AlexNetError("--batch-sweep needs batch sizes of at least 1")
    rates: dict[str, dict | None] = {}
    for b in sizes:
        try:
            trainees = [build(k, device, argparse.Namespace(**{**vars(args), "batch_size": b}))
                        for k in keys]
            measure_training(trainees, args.warmup, args.steps, device)
            rates[str(b)] = {t.key: b / statistics.median(t.seconds) for t in trainees}
        except torch.cuda.OutOfMemoryError:
            rates[str(b)] = None
        trainees = None
        if device.type == "cuda":
            torch.cuda.empty_cache()
    fitted = [b for b, r in rates.items() if r is not None]
    best = {k: max(fitted, key=lambda b: rates[b][k]) for k in keys} if fitted else {}
    return {"machine": machine(device), "device": device.type, "compile": args.compile,
            "steps": args.steps, "warmup": args.warmup, "rates": rates, "best": best,
            "lrn_launch": triton_choices()}


def format_sweep(r: dict) -> str:
    keys = list(r["best"])
    lines = [f"machine: {r['machine']}", f"batch sweep, {'compiled' if r['compile'] else 'eager'}"
             f", median of {r['steps']} steps after {r['warmup']} warm-up (img/s):", "",
             "| batch | " + " | ".join(keys) + " |", "|---:|" + "---:|" * len(keys)]
    for b, rate in r["rates"].items():
        cells = [f"{rate[k]:.0f}" for k in keys] if rate else ["out of memory"] * len(keys)
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += ["", "best: " + ", ".join(f"{k} at batch {b} ({r['rates'][b][k]:.0f} img/s)"
                                       for k, b in r["best"].items())]
    return "\n".join(lines + _lrn_launch_lines(r))


def run(args) -> int:
    if args.batch_sweep is not None:  # "" too: an empty list is an error, not "no sweep"
        result = batch_sweep(args)
        print(json.dumps(result) if args.json else format_sweep(result))
        return 0
    if args.profile:
        result = profile_c(args)
        print(json.dumps(result) if args.json else format_profile(result))
        return 0
    result = measure(args)
    print(json.dumps(result) if args.json else format_report(result))
    return 0
