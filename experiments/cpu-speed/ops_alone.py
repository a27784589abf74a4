"""The GEMM-bound ops of c's step timed alone, bf16, channels_last, batch 64, on the CPU: what
oneDNN makes of AlexNet's shapes, two rearrangements tried against them, and conv1's input by
space-to-depth (BENCHMARKS.md, session 12). Medians of 7 after two unmeasured; the allocator tuned as in training.

    python experiments/cpu-speed/ops_alone.py
"""
import statistics
import time

import torch
import torch.nn.functional as F

from alexnet.accel import tune_allocator
from alexnet.stem import input_to_depth

N, BF, CL = 64, torch.bfloat16, torch.channels_last
backward = torch.ops.aten.convolution_backward
LAYERS = {  # cin, cout, kernel, padding, groups, size: conv2-conv5 of the paper's net
    "conv2": (96, 256, 5, 2, 2, 27), "conv3": (256, 384, 3, 1, 1, 13),
    "conv4": (384, 384, 3, 1, 2, 13), "conv5": (384, 256, 3, 1, 2, 13)}
FC = {"fc6": (9216, 4096), "fc7": (4096, 4096)}


def ms(fn, reps=7):
    fn(), fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def convolutions():
    print("| conv | forward | + ReLU | fused ReLU (oneDNN post-op) | input grad | weight grad |")
    print("|---|---:|---:|---:|---:|---:|")
    pointwise = torch.ops.mkldnn._convolution_pointwise
    for name, (ci, co, k, p, g, hw) in LAYERS.items():
        x = torch.randn(N, ci, hw, hw, dtype=BF).contiguous(memory_format=CL)
        w = (torch.randn(co, ci // g, k, k, dtype=BF) * 0.01).contiguous(memory_format=CL)
        b = torch.zeros(co, dtype=BF)
        gy = torch.randn_like(F.conv2d(x, w, b, 1, p, 1, g))
        gflop = 2 * gy.numel() * ci // g * k * k / 1e9
        assert torch.equal(F.conv2d(x, w, b, 1, p, 1, g).relu(),
                           pointwise(x, w, b, [p, p], [1, 1], [1, 1], g, "relu", [], ""))
        cells = [ms(lambda: F.conv2d(x, w, b, 1, p, 1, g)),
                 ms(lambda: F.conv2d(x, w, b, 1, p, 1, g).relu()),
                 ms(lambda: pointwise(x, w, b, [p, p], [1, 1], [1, 1], g, "relu", [], "")),
                 ms(lambda: backward(gy, x, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], g,
                                     [True, False, False])),
                 ms(lambda: backward(gy, x, w, None, [1, 1], [p, p], [1, 1], False, [0, 0], g,
                                     [False, True, False]))]
        print(f"| {name} | " + " | ".join(f"{t:.1f} ms ({gflop / t:.1f} TFLOP/s)" for t in cells)
              + " |")


def fc_layers():
    print("\n| fc | x W^T (torch's linear) | (W x^T)^T | dX = g W | dW = g^T x | W.sum() |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (i, o) in FC.items():
        w, x = torch.randn(o, i, dtype=BF), torch.randn(N, i, dtype=BF)
        g = torch.randn(N, o, dtype=BF)
        cells = [ms(lambda: x @ w.t()), ms(lambda: (w @ x.t()).t()), ms(lambda: g @ w),
                 ms(lambda: g.t() @ x), ms(lambda: w.sum())]
        print(f"| {name} | " + " | ".join(f"{t:.2f} ms" for t in cells) + " |")


def space_to_depth():
    """conv1's input rearranged for its weight gradient (stem.py): one pass of csrc/stem.c against
    the tensor ops it replaced (F.pad, then a permuted copy), both on a channels_last input."""
    x = torch.randn(N, 3, 227, 227, dtype=BF).contiguous(memory_format=CL)

    def tensor_ops():
        xp = F.pad(x, (0, 1, 0, 1))  # 227 -> 228: 57 whole blocks of 4
        xp = xp.permute(0, 2, 3, 1).reshape(N, 57, 4, 57, 4, 3)
        return xp.permute(0, 1, 3, 2, 4, 5).reshape(N, 57, 57, 48)
    one_pass = input_to_depth(x, 11, 4, 0, (55, 55))
    assert torch.equal(one_pass, tensor_ops().permute(0, 3, 1, 2))
    print(f"\nspace-to-depth of conv1's input (bf16, channels_last): one pass "
          f"{ms(lambda: input_to_depth(x, 11, 4, 0, (55, 55))):.2f} ms, tensor ops "
          f"{ms(tensor_ops):.2f} ms")


if __name__ == "__main__":
    torch.manual_seed(0)
    tune_allocator()
    convolutions()
    fc_layers()
    space_to_depth()
