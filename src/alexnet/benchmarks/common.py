"""What `bench model` and `bench step` share: the options of c's step, the machine line, the
GEMM that sets the roofline, and the head of a report on c's step."""
from __future__ import annotations

import time
from typing import Callable

import torch

from .. import accel
from ..machine import describe


def add_step_arguments(parser, device_help: str) -> None:
    """The options of c's training step, shared with `bench step`."""
    parser.add_argument("--device", default=None, help=device_help)
    parser.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    parser.add_argument("--steps", type=int, default=5, help="measured steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    parser.add_argument("--precision", default="auto", choices=accel.PRECISIONS,
                        help="precision of c and d (default auto: bf16 where native)")
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--gemm-size", type=int, default=4096, help="n of the roofline's n^3 GEMM")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def sync(device: torch.device) -> None:
    """Wait for the device (a GPU runs asynchronously), so that a clock around an op times it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tf32_convolutions(device: torch.device) -> bool:
    """Whether fp32 convolutions on `device` run as TF32 (10-bit mantissa): cuDNN's default
    (`torch.backends.cudnn.allow_tf32`). Their convolutions being most of the FLOPs, the fp32
    configurations' roofline is then the TF32 GEMM rate (it overstates them a little: the fc
    layers' products stay fp32). Against a real fp32 GEMM torchvision's fp32 net came to 128% of
    "the roofline" on the H200 (session 27)."""
    return device.type == "cuda" and bool(torch.backends.cudnn.allow_tf32)


def gemm_probe(device: torch.device, dtype: torch.dtype, n: int = 4096) -> Callable[[], float]:
    """A callable that times one n x n x n matrix product and returns its FLOP/s: the machine's
    roofline for this dtype (fp32 on CUDA: as TF32 where the convolutions run so)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    tf32 = dtype == torch.float32 and tf32_convolutions(device)

    def product() -> None:
        if not tf32:
            torch.mm(a, b)
            return
        saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            torch.mm(a, b)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = saved

    product()  # warm-up

    def probe() -> float:
        sync(device)
        start = time.perf_counter()
        product()
        sync(device)
        return 2.0 * n ** 3 / (time.perf_counter() - start)
    return probe


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{describe()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def step_header(r: dict, how: str) -> list[str]:
    """The first lines of a report on c's step: the machine, the fast path, how it was timed."""
    return [f"machine: {r['machine']}", f"fast path: {r['fast_path']}",
            f"c's training step ({r['precision']}) at batch {r['batch_size']}, {how}", ""]
