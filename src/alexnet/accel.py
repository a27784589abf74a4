"""The fast training path: what pays on each device, and why. The training loop calls these.

    precision = resolve_precision(device, args.precision)      # "auto" -> bf16 / fp16 / fp32
    model = prepare_model(model, device, channels_last=True, compile=args.compile)
    optimizer = make_sgd(param_groups, lr, momentum, weight_decay, device)
    for x, y in loader:
        x = to_input(x, device, channels_last=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(x), y)
        ...
    model_for_eval = prepare_inference(model, device, precision)   # no autocast around it

What each piece buys, and how it is decided. Choices that depend on the CPU are measured, not
assumed: fast_path() runs a short probe the first time on a machine (bf16 against fp32, the stem
in NCHW against NHWC; a few seconds, cached under the cache directory per CPU flags, torch version
and thread count), and `alexnet bench model` prints what it chose with the CPU's flags.
- bf16 autocast: convolutions and GEMMs run at about 2× (AVX512-BF16) to 2.8× (AMX) the fp32
  rate where the CPU has native bf16, and on CUDA GPUs with bf16 (Ampere+); without native bf16
  (e.g. an AVX2-only CPU) oneDNN emulates it, slower than fp32, and the probe keeps fp32. Weights
  and the optimizer stay fp32. Older GPUs get fp16 with a GradScaler; the CPU never does. In
  training on the CPU, bf16 runs without autocast where it can: on bf16 copies of the weights
  that the optimizer keeps in step (masters.py), since autocast re-casts all 61M weights, and
  their gradients back, on every step.
- channels_last: oneDNN's (and cuDNN's) fast convolution kernels are NHWC; in NCHW each conv
  reorders its input and output. The 3-channel stem conv1 is the exception the probe checks, three
  ways (STEMS): on a CPU without AMX its bf16 weight gradient was several times slower in NHWC
  than in NCHW; on one with AMX the NCHW round trip cost more than it saved, and the weight
  gradient computed by space-to-depth (stem.py) was 2.8x faster than NHWC's (before its ~2.5 ms
  of rearranging, at batch 64).
- the glibc allocator: tensors above 128 KiB come from mmap and go back to the OS when freed, so
  every step page-faults (and zeroes) its activations again, ~10% of the step on this CPU.
  tune_allocator() keeps freed memory in the heap for reuse.
- fused SGD: one pass over each parameter instead of three to five (weight decay, momentum, update);
  AlexNet has 61M parameters, so the optimizer step is memory-bound and this halves it or better.
- inference: weights cast to bf16 once (prepare_inference); autocast would cast all 61M weights
  again on every call, which at batch 1 costs more than the forward (2.4x faster at batch 1).
- torch.compile: optional. It works (the LRN kernel stays one opaque op), but on the CPU it
  took over a minute to compile and the step was no faster than eager, so it is off by default.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import ctypes.util
import functools
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .errors import AlexNetError
from .io import atomic_write_json
from .machine import cache_dir, cpu_flags
from .stem import StemConv2d

PRECISIONS = ("auto", "bf16", "fp16", "fp32")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
STEM_CHANNELS = 4  # convs with at most this many input channels stay NCHW on the CPU (see doc)
# How the stem conv1 runs under channels_last on the CPU; the probe picks the fastest.
STEMS = {
    "nchw": "NCHW (its input and weight stay NCHW; its output goes on in channels_last)",
    "nhwc": "NHWC",
    "s2d": "NHWC, weight gradient by space-to-depth",
}


def _device(device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


def native_bf16(device) -> bool:
    """Whether bf16 matrix products run natively (fast) on this device."""
    device = _device(device)
    if device.type == "cuda":
        # Ampere (compute capability 8) and later, on this device. Not is_bf16_supported(): it
        # asks the current device and by default also says True where bf16 is only emulated.
        if not torch.cuda.is_available():
            return False
        index = device.index if device.index is not None else torch.cuda.current_device()
        return bool(torch.version.hip) or torch.cuda.get_device_properties(index).major >= 8
    if device.type == "cpu":
        # True with AVX512-BF16 or AMX: what oneDNN needs for bf16 convs/GEMMs faster than fp32.
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(device, precision: str = "auto") -> str:
    """"auto" -> "bf16" where it is native (CPU with AVX512-BF16/AMX, CUDA Ampere+), "fp16" on
    older CUDA GPUs, "fp32" elsewhere. An explicit choice is checked, not second-guessed."""
    device = _device(device)
    if precision not in PRECISIONS:
        raise AlexNetError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}",
                           option="precision")
    if precision == "auto":
        return fast_path(device).precision
    if precision == "bf16" and device.type == "cuda" and not native_bf16(device):
        raise AlexNetError("this GPU has no native bf16 (before Ampere it is emulated, slowly); "
                           "use fp16 or fp32", option="precision")
    if precision == "fp16" and device.type != "cuda":
        # The CPU has no fp16 convolutions worth the name: a 1-epoch run took 172 s in fp16
        # against 4 s in fp32 (issue 11), so this is refused rather than silently slow.
        raise AlexNetError(f"fp16 is not supported on {device.type} (on the CPU it is emulated, "
                           f"about 40 times slower than fp32); use bf16 or fp32",
                           option="precision")
    return precision


def autocast(device, precision: str = "auto"):
    """The forward pass's autocast context: low-precision convs/GEMMs, fp32 weights and loss."""
    device = _device(device)
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def grad_scaler(device, precision: str = "auto") -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 (bf16 has fp32's range and needs none)."""
    device = _device(device)
    enabled = resolve_precision(device, precision) == "fp16"
    return torch.amp.GradScaler(device.type, enabled=enabled)


# --- the fast path, decided by measuring ---------------------------------------------------------

@dataclass(frozen=True)
class FastPath:
    """What pays on this device: decided by a short probe on the CPU (cached per CPU, torch
    version and thread count), by rule on CUDA. `alexnet bench model` prints it."""
    precision: str          # what precision "auto" means here
    stem: str               # how conv1 runs under channels_last (STEMS; CPU only)
    source: str             # "probe", "cache" (a probe's, from disk) or "rule"
    timings_ms: dict = field(default_factory=dict)  # what the probe measured

    def describe(self) -> str:
        how = ", ".join(f"{k} {v:.1f} ms" for k, v in self.timings_ms.items())
        return (f"precision {self.precision}, stem {STEMS[self.stem]} "
                f"({self.source}{': ' + how if how else ''})")


_fast_paths: dict[str, FastPath] = {}


def fast_path(device) -> FastPath:
    """The fast path of `device`. On the CPU the first call in a process reads the cache or, the
    first time on a machine, runs _probe_cpu (a few seconds) and caches it."""
    device = _device(device)
    if device.type != "cpu":
        bf16 = native_bf16(device)
        return FastPath("bf16" if bf16 else ("fp16" if device.type == "cuda" else "fp32"),
                        stem="nhwc", source="rule")
    key = _probe_key(torch.get_num_threads())
    if key not in _fast_paths:
        path = cache_dir() / f"fastpath-{key}.json"
        try:
            _fast_paths[key] = FastPath(**{**json.loads(path.read_text()), "source": "cache"})
            if _fast_paths[key].stem not in STEMS:
                raise ValueError(f"unknown stem {_fast_paths[key].stem!r}")
        except (OSError, ValueError, TypeError):  # none yet, or an older version's
            _fast_paths[key] = _probe_cpu()
            try:
                if not _busy():  # else this process takes the result, and the next probes again
                    atomic_write_json(path, asdict(_fast_paths[key]))
            except OSError:
                pass  # a read-only cache only costs the probe next time
    return _fast_paths[key]


def use_fast_path(device, path: FastPath) -> None:
    """Take `path` as this process's fast path of `device` (the CPU), instead of its own probe's
    (under DDP: rank 0's, parallel.agree_on_fast_path)."""
    if _device(device).type == "cpu":
        _fast_paths[_probe_key(torch.get_num_threads())] = path


def _busy() -> bool:
    """Whether other work held the cores while the probe ran (the 1-minute load average above
    the core count): its timings then say more about the neighbours than about this CPU, and
    are not kept for later runs."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # no load average on this system
        return False
    # the cores this process may use (a container pinned to 2 of a host's 64 has 2)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return load > (cores or 1)


# Bumped whenever _measure_cpu changes what it measures or how it decides, so that a cache
# written by an older probe is not taken for this one's (2: the stem's three ways, STEMS; 3: the
# least time of each, not the median).
PROBE_VERSION = 3


@functools.lru_cache(maxsize=None)
def _probe_key(threads: int) -> str:
    """What a probe's result depends on: the probe's version, torch's, the thread count and the
    CPU's flags (cached: to_input asks for the fast path on every batch)."""
    return hashlib.sha256(" ".join([str(PROBE_VERSION), torch.__version__, str(threads),
                                    *sorted(cpu_flags())]).encode()).hexdigest()[:16]


def _time_ms(steps: dict, reps: int = 5) -> dict[str, float]:
    """The least ms of each step over `reps`, timed in turns (a b c a b c ...): a burst of load
    on a shared machine then slows every candidate alike instead of deciding between them.

    The least, not the median: load only ever adds time, and under a steady load (the test
    suite beside a training run on 2 cores) the median of a 7.6 ms bf16 conv came out above
    fp32's 23 ms, and an AMX CPU was given fp32 (for as long as the cache holds it)."""
    for step in steps.values():
        step()  # warm-up: oneDNN builds its kernels on first use
    times = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * min(t) for name, t in times.items()}


def _probe_cpu() -> FastPath:
    """_measure_cpu in a mode and random state of its own: it times training steps whatever the
    caller's mode (a first load under no_grad or inference_mode), and seeds its own generator,
    so that loading a model never changes what a seeded script draws next."""
    with torch.inference_mode(False), torch.enable_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return _measure_cpu()


def _measure_cpu() -> FastPath:
    """Measure, on conv shapes of the paper's net at batch 8, (1) bf16 autocast against fp32
    (conv2, forward+backward), where oneDNN reports native bf16; (2) the stem conv1's
    forward+backward each way of STEMS, at the chosen precision."""
    timings, precision = {}, "fp32"

    def conv_step(conv, x, dtype):
        def step():
            with torch.autocast("cpu", dtype=DTYPES[dtype], enabled=dtype != "fp32"):
                y = conv(x)
            y.backward(torch.ones_like(y))  # no .sum(): its backward would be half the time
        return step

    if native_bf16("cpu"):
        conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=2).to(memory_format=torch.channels_last)
        x2 = torch.randn(8, 96, 27, 27).contiguous(memory_format=torch.channels_last)
        timings.update(_time_ms({f"conv2 {dtype}": conv_step(conv2, x2, dtype)
                                 for dtype in ("fp32", "bf16")}))
        # bf16 unless fp32 is clearly faster: where oneDNN reports native bf16 it ran at 2-3x
        # fp32, and a probe starved by other work times both alike (47 ms each, against 9 and
        # 36 ms otherwise; experiments/cpu-speed/probe_repeat.py), which must not mean fp32.
        precision = "fp32" if timings["conv2 fp32"] < 0.9 * timings["conv2 bf16"] else "bf16"
    nchw = StemConv2d(3, 96, 11, stride=4)
    nhwc = copy.deepcopy(nchw).to(memory_format=torch.channels_last)
    s2d = copy.deepcopy(nhwc)
    s2d.space_to_depth_grad = True
    x1 = torch.randn(8, 3, 227, 227)
    x1_last = x1.contiguous(memory_format=torch.channels_last)
    timings.update(_time_ms({"conv1 NCHW": conv_step(nchw, x1, precision),
                             "conv1 NHWC": conv_step(nhwc, x1_last, precision),
                             "conv1 NHWC s2d": conv_step(s2d, x1_last, precision)}))
    stem = "s2d" if timings["conv1 NHWC s2d"] < 0.9 * timings["conv1 NHWC"] else "nhwc"
    # NCHW needs two layout conversions around the stem (the hooks); it must win clearly.
    if timings["conv1 NCHW"] < 0.8 * min(timings["conv1 NHWC"], timings["conv1 NHWC s2d"]):
        stem = "nchw"
    return FastPath(precision, stem, "probe", {k: round(v, 2) for k, v in timings.items()})


_allocator_tuned = False


def tune_allocator() -> bool:
    """Keep freed memory in glibc's heap for reuse instead of returning it to the OS.

    By default glibc serves every block above 128 KiB (up to 32 MiB, adaptively) with its own
    mmap and unmaps it on free, so the next step page-faults the same activations in again and the
    kernel zeroes each page: on this CPU ~180k faults and ~0.3 s of system time per batch-64 step.
    With mmap off and trimming off, freed blocks are reused; the process's peak memory is simply
    kept. Process-wide, idempotent, a no-op (False) where the C library is not glibc.
    """
    global _allocator_tuned
    if _allocator_tuned:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from <malloc.h>
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    except (OSError, AttributeError):
        return False
    _allocator_tuned = ok
    return ok


def _stem_to_channels_first(module: nn.Module, inputs):
    return tuple(x.contiguous() if torch.is_tensor(x) else x for x in inputs)


def _output_to_channels_last(module: nn.Module, inputs, output):
    return output.contiguous(memory_format=torch.channels_last)


def _set_stem(model: nn.Module, stem: str) -> None:
    """Run the stem convs (at most STEM_CHANNELS input channels) the way `stem` says (STEMS)."""
    for module in model.modules():
        if not (isinstance(module, nn.Conv2d) and module.in_channels <= STEM_CHANNELS):
            continue
        if StemConv2d.can_use(module):
            module.space_to_depth_grad = stem == "s2d"
        if stem == "nchw":
            module.weight.data = module.weight.data.contiguous()
            if not getattr(module, "_alexnet_nchw_stem", False):  # hooks only once
                module.register_forward_pre_hook(_stem_to_channels_first)
                module.register_forward_hook(_output_to_channels_last)
                module._alexnet_nchw_stem = True


def prepare_model(model: nn.Module, device, channels_last: bool = True, compile: bool = False,
                  allocator: bool = True, stem: str | None = None) -> nn.Module:
    """Move the model to the device, in channels_last where that pays; optionally torch.compile.

    On the CPU with channels_last, the stem conv1 runs as `stem` says (STEMS; default: what
    fast_path measured on this CPU). "nchw": convs with at most STEM_CHANNELS input channels keep
    NCHW weights and inputs and hand their output on in channels_last (hooks): on a CPU without
    AMX oneDNN's NHWC bf16 weight gradient for a 3-channel input was several times slower than
    its NCHW one; on one with AMX the hooks cost more than they saved. "s2d": NHWC, with the
    weight gradient computed by space-to-depth (stem.py). On the CPU `allocator` also calls
    tune_allocator(). Returns the (possibly compiled) model; its parameters are the original
    module's, so build the optimizer from either.
    """
    device = _device(device)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        if device.type == "cpu":
            _set_stem(model, stem if stem is not None else fast_path(device).stem)
    if device.type == "cpu" and allocator:
        tune_allocator()
    if compile:
        model = torch.compile(model)
    return model


def _input_to_weight_dtype(module: nn.Module, inputs):
    """Cast a layer's input to its weight's dtype where that weight is bf16/fp16 (else no-op)."""
    x = inputs[0]
    low = module.weight.dtype
    if low in (torch.bfloat16, torch.float16) and x.is_floating_point() and x.dtype != low:
        return (x.to(low), *inputs[1:])
    return None


def cast_inputs_at_layers(model: nn.Module) -> None:
    """Have each conv and fc layer cast its input to its weight's dtype, as autocast does, rather
    than casting the network's input: a Scale before conv1 (--input-norm) then multiplies in fp32
    first and the pixels are rounded to bf16 once, not twice. Idempotent. Used by inference
    (prepare_inference) and by training on bf16 weight copies (masters.py)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not getattr(
                module, "_alexnet_input_cast", False):
            module.register_forward_pre_hook(_input_to_weight_dtype)
            module._alexnet_input_cast = True


def _output_to_float32(module: nn.Module, inputs, output):
    return output.float()


def prepare_inference(model: nn.Module, device, precision: str = "auto",
                      channels_last: bool = True, compile: bool = False) -> nn.Module:
    """prepare_model for evaluation and prediction: eval mode, and for bf16/fp16 the weights cast
    once instead of autocast, which re-casts every weight on every call (AlexNet's 61M: at batch
    1 that costs more than the forward itself). Each conv/fc layer casts its input (as autocast
    would, so the numbers match training's) and the logits come out as fp32, so it is a drop-in
    for the fp32 model. Use no autocast around it."""
    device = _device(device)
    precision = resolve_precision(device, precision)
    # allocator=False: loading a model for inference (a notebook, torch.hub) must not change how
    # the whole process returns memory; training and the benchmarks tune it themselves.
    model = prepare_model(model.eval(), device, channels_last=channels_last, allocator=False)
    if precision != "fp32" and not getattr(model, "_alexnet_inference_dtype", None):
        model = model.to(DTYPES[precision])
        cast_inputs_at_layers(model)
        model.register_forward_hook(_output_to_float32)
        model._alexnet_inference_dtype = precision
    return torch.compile(model) if compile else model


def to_input(x: torch.Tensor, device, channels_last: bool = True) -> torch.Tensor:
    """A batch on the device in the layout the prepared model wants (non_blocking from pinned
    memory). Images with at most STEM_CHANNELS channels stay NCHW where the stem does (see
    prepare_model)."""
    device = _device(device)
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4 and not (x.shape[1] <= STEM_CHANNELS
                                                 and fast_path(device).stem == "nchw"):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def fused_supported(device, optimizer=torch.optim.SGD) -> bool:
    """torch's fused SGD and AdamW kernels exist for CUDA and, since torch 2.4, the CPU."""
    device = _device(device)
    if device.type not in ("cpu", "cuda"):
        return False
    try:
        probe = nn.Parameter(torch.zeros(1, device=device))
        optimizer([probe], lr=0.1, fused=True)
        return True
    except (RuntimeError, ValueError, TypeError):
        return False


def make_sgd(params_or_groups, lr: float, momentum: float = 0.9, weight_decay: float = 5e-4,
             device="cpu") -> torch.optim.SGD:
    """The paper's optimiser (SGD with momentum and weight decay), fused where torch has the
    kernel (one pass over each parameter), else the multi-tensor foreach path."""
    if isinstance(params_or_groups, (torch.Tensor, nn.Module)):
        raise TypeError("make_sgd takes parameters or parameter groups (model.parameters()), "
                        "not a tensor or module")
    fused = fused_supported(device, torch.optim.SGD)
    return torch.optim.SGD(params_or_groups, lr=lr, momentum=momentum,
                           weight_decay=weight_decay, fused=fused or None,
                           foreach=None if fused else True)


def make_adamw(params, lr: float, weight_decay: float = 5e-4, device="cpu") -> torch.optim.AdamW:
    """AdamW (not the paper's optimiser; the demo recipe's), fused where torch has the kernel."""
    fused = fused_supported(device, torch.optim.AdamW)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None,
                             foreach=None if fused else True)
