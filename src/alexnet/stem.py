"""conv1's weight gradient by space-to-depth: the same sums, as a convolution the CPU runs fast.

conv1 (11×11, stride 4, 3 input channels) is a poor shape for oneDNN: on a 2-core AMX CPU its bf16
weight gradient ran at about 430 GFLOP/s, where conv2-conv5 ran at 960-2,600, and it was the
slowest convolution of the step (31 ms at batch 64, BENCHMARKS.md). Cut the input into s×s blocks
(s = the stride) and stack each block's s·s·C values as channels; pad the kernel to a multiple of s
and cut it the same way. Then

    conv(x, w, stride s)[n, o, u, v] = Σ_{c, ky, kx} w[o, c, ky, kx] · x[n, c, s·u + ky, s·v + kx]
                                     = conv(space_to_depth(x), space_to_depth(w), stride 1)

with ky = s·i + a, kx = s·j + b: for the paper's conv1 a 3×3, stride-1 convolution over 48
channels, whose weight gradient oneDNN computes in 11 ms instead of 31 (rearranging the input
costs ~2.5 ms more, in one pass of csrc/stem.c where x is channels_last on the CPU, else ~5 ms of
tensor copies). The padded kernel has 19% more multiply-adds, all on zeros.

Only the weight (and bias) gradient is computed this way; the forward, and the input's gradient
where one is wanted, are torch's own, so the logits are bit for bit those of nn.Conv2d. The weight
gradient differs from torch's in the order of its sums (float rounding; tests/test_stem.py). Not in
the paper, only about speed: accel's probe turns it on where it measured it faster.
"""
from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F
from torch import nn

from . import native
from .pool import transformed


def _declare(lib) -> None:
    i64 = ctypes.c_int64  # es, x, out, n, h, w, c, s, hb, wb, p, nthreads
    lib.space_to_depth.argtypes = [i64, ctypes.c_void_p, ctypes.c_void_p] + [i64] * 8 + [
        ctypes.c_int]
    lib.space_to_depth.restype = ctypes.c_int


_library = native.Library("stem", _declare)
_PARALLEL_MIN = 1 << 18  # values: below, one thread does it all (waking the other costs more)


def _blocks(k: int, s: int) -> int:
    """How many s-wide blocks a k-wide kernel spans once padded to a multiple of s."""
    return -(-k // s)


def input_to_depth(x: torch.Tensor, k: int, s: int, p: int, out_hw: tuple[int, int]):
    """(N, C, H, W) -> (N, s·s·C, Ho + K - 1, Wo + K - 1) with K = ceil(k / s), channel index
    (a·s + b)·C + c for the pixel (s·row + a, s·col + b) of channel c; channels_last, since the
    CPU's convolutions are. Zero-pads (or crops) to whole blocks around conv's own padding p.
    One pass in C (csrc/stem.c) where it applies, else two tensor copies: the same values."""
    n, c, h, w = x.shape
    kb = _blocks(k, s)
    hb, wb = out_hw[0] + kb - 1, out_hw[1] + kb - 1  # blocks the output's windows cover
    # the op has no autograd formula: where a graph through x is wanted (create_graph with an
    # input that requires grad), the tensor ops build it
    if (x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last)
            and not transformed(x) and not (torch.is_grad_enabled() and x.requires_grad)
            and _library.available() is not None):
        return _space_to_depth_op(x, s, p, hb, wb).permute(0, 3, 1, 2)
    x = F.pad(x, (p, wb * s - w - p, p, hb * s - h - p))  # negative padding crops
    x = x.permute(0, 2, 3, 1).reshape(n, hb, s, wb, s, c)          # (n, row, a, col, b, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(n, hb, wb, s * s * c)  # (n, row, col, a·b·c)
    return x.permute(0, 3, 1, 2)                                    # NCHW view of NHWC memory


@torch.library.custom_op("alexnet::space_to_depth", mutates_args=(), device_types="cpu")
def _space_to_depth_op(x: torch.Tensor, s: int, p: int, hb: int, wb: int) -> torch.Tensor:
    """input_to_depth's values as an (N, hb, wb, s·s·C) tensor (csrc/stem.c)."""
    x = x.contiguous(memory_format=torch.channels_last)  # the kernel reads NHWC memory
    n, c, h, w = x.shape
    out = x.new_empty((n, hb, wb, s * s * c))
    if out.numel():
        threads = torch.get_num_threads() if out.numel() >= _PARALLEL_MIN else 1
        err = _library.load().space_to_depth(x.element_size(), ctypes.c_void_p(x.data_ptr()),
                                             ctypes.c_void_p(out.data_ptr()), n, h, w, c, s, hb,
                                             wb, p, threads)
        if err:
            raise RuntimeError(f"space-to-depth kernel failed with code {err}")
    return out


@_space_to_depth_op.register_fake
def _(x, s, p, hb, wb):
    return x.new_empty((x.shape[0], hb, wb, s * s * x.shape[1]))


def weight_to_depth(w: torch.Tensor, s: int) -> torch.Tensor:
    """(O, C, k, k) -> (O, s·s·C, K, K): the kernel zero-padded to K·s and cut like the input."""
    o, c, k, _ = w.shape
    kb = _blocks(k, s)
    w = F.pad(w, (0, kb * s - k, 0, kb * s - k)).reshape(o, c, kb, s, kb, s)  # (o, c, i, a, j, b)
    return w.permute(0, 3, 5, 1, 2, 4).reshape(o, s * s * c, kb, kb)


def weight_from_depth(g: torch.Tensor, c: int, k: int, s: int) -> torch.Tensor:
    """weight_to_depth's inverse for a gradient: the padding's entries dropped."""
    o, _, kb, _ = g.shape
    g = g.reshape(o, s, s, c, kb, kb).permute(0, 3, 4, 1, 5, 2)  # (o, c, i, a, j, b)
    return g.reshape(o, c, kb * s, kb * s)[:, :, :k, :k].contiguous()


class _SpaceToDepthGrad(torch.autograd.Function):
    """F.conv2d(x, w, b, s, p) whose backward computes w's gradient on the space-to-depth form."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride: int, padding: int):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding = stride, padding
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        s, p, k = ctx.stride, ctx.padding, weight.shape[-1]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x:  # e.g. saliency maps: torch's own input gradient
            gx = torch.ops.aten.convolution_backward(
                gy, x, weight, None, [s, s], [p, p], [1, 1], False, [0, 0], 1,
                [True, False, False])[0]
        if need_w or need_b:
            xd = input_to_depth(x, k, s, p, gy.shape[-2:])
            wd = weight_to_depth(weight, s).contiguous(memory_format=torch.channels_last)
            _, gwd, gb = torch.ops.aten.convolution_backward(
                gy, xd, wd, [gy.shape[1]] if need_b else None, [1, 1], [0, 0], [1, 1], False,
                [0, 0], 1, [False, need_w, need_b])
            if need_w:
                gw = weight_from_depth(gwd, x.shape[1], k, s)
        return gx, gw, gb, None, None


class StemConv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, same state_dict) whose weight gradient is computed by
    space-to-depth when `space_to_depth_grad` is set (accel.prepare_model sets it where the probe
    measured it faster). Square kernel and stride, groups 1, no dilation: conv1's shape."""

    space_to_depth_grad = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.space_to_depth_grad and torch.is_grad_enabled()
                and (self.weight.requires_grad or x.requires_grad) and self.can_use(self)):
            return super().forward(x)
        device = x.device.type
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(device):  # cast as autocast would, then run without it
            dtype = torch.get_autocast_dtype(device)
            x, weight, bias = (t.to(dtype) if t is not None and t.is_floating_point()
                               and t.dtype != torch.float64 else t for t in (x, weight, bias))
        with torch.autocast(device, enabled=False):
            return _SpaceToDepthGrad.apply(x, weight, bias, self.stride[0], self.padding[0])

    @classmethod
    def can_use(cls, conv: nn.Module) -> bool:
        """Whether space_to_depth_grad applies to this conv (conv1's shape); where it does not,
        the flag is ignored."""
        return (isinstance(conv, cls) and conv.groups == 1 and conv.dilation == (1, 1)
                and conv.padding_mode == "zeros" and isinstance(conv.padding, tuple)
                and len(set(conv.kernel_size)) == len(set(conv.stride)) == 1
                and len(set(conv.padding)) == 1)
