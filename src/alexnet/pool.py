"""Max pooling with a one-byte argmax: the paper's overlapping pooling (§3.4), fast on the CPU.

`MaxPool2d` is torch's nn.MaxPool2d (same arguments) that, on the CPU for a channels_last
float32/bfloat16 input, runs csrc/pool.c through the custom op `alexnet::max_pool`. torch's own
kernel stores an int64 index per output and its backward zero-fills, then scatters into, the
input gradient; ours keeps the window position in a byte and gathers (BENCHMARKS.md has what it
saves). The numbers: in float32 torch's, bit for bit; in bfloat16 the same outputs, and each
input's gradient is its contributions summed in float32 and rounded once (torch may round after
each add). Anything else (NCHW, padding, dilation, ceil_mode, other dtypes or devices, torch.func
transforms, forward-mode AD, no C compiler) runs torch's max_pool2d. Not in the paper, only about
speed.
"""
from __future__ import annotations

import ctypes

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from . import native

_DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # the codes csrc/pool.c expects
# Below this many input values one thread does it all: waking the other costs more.
_PARALLEL_MIN = 1 << 18


def _declare(lib) -> None:
    sizes = [ctypes.c_int64] * 8 + [ctypes.c_int]  # n, c, h, w, oh, ow, k, s, nthreads
    ptr = ctypes.c_void_p
    lib.maxpool_forward.argtypes = [ctypes.c_int, ptr, ptr, ptr] + sizes
    lib.maxpool_backward.argtypes = [ctypes.c_int, ptr, ptr, ptr] + sizes
    lib.maxpool_forward.restype = lib.maxpool_backward.restype = ctypes.c_int


_library = native.Library("pool", _declare)


def kernel_error() -> str | None:
    """Why the C kernel is not in use (None when it is, or has not been tried yet)."""
    return _library.error


def _nhwc(like: torch.Tensor, h: int, w: int, dtype=None) -> torch.Tensor:
    """An empty (N, C, h, w) tensor like `like` (its dtype unless given), channels_last."""
    return torch.empty((like.shape[0], like.shape[1], h, w), dtype=dtype or like.dtype,
                       device=like.device, memory_format=torch.channels_last)


def empty_pooled(x: torch.Tensor, k: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty (y, argmax) for pooling x."""
    oh, ow = (x.shape[2] - k) // s + 1, (x.shape[3] - k) // s + 1
    return _nhwc(x, oh, ow), _nhwc(x, oh, ow, torch.uint8)


def check_argmax(grad: torch.Tensor, arg: torch.Tensor) -> None:
    """A backward's argmax must be its forward's: one byte per output."""
    if arg.shape != grad.shape or arg.dtype != torch.uint8:
        raise ValueError(f"argmax {tuple(arg.shape)} {arg.dtype} does not fit the gradient "
                         f"{tuple(grad.shape)}")


def _call(fn, x_or_grad, arg, out, shape, k: int, s: int) -> None:
    n, c, h, w = shape
    oh, ow = (h - k) // s + 1, (w - k) // s + 1
    ptrs = [ctypes.c_void_p(t.data_ptr()) for t in (x_or_grad, arg, out)]
    threads = torch.get_num_threads() if n * c * h * w >= _PARALLEL_MIN else 1
    err = fn(_DTYPES[out.dtype], *ptrs, n, c, h, w, oh, ow, k, s, threads)
    if err:
        raise RuntimeError(f"max pooling kernel failed with code {err}")


@torch.library.custom_op("alexnet::max_pool", mutates_args=(), device_types="cpu")
def _max_pool_op(x: torch.Tensor, k: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, argmax): y as F.max_pool2d(x, k, s); argmax the winner's position in its window
    (row * k + column), one byte per output. x: channels_last, float32 or bfloat16."""
    x = x.contiguous(memory_format=torch.channels_last)
    y, arg = empty_pooled(x, k, s)
    if y.numel():
        _call(_library.load().maxpool_forward, x, arg, y, x.shape, k, s)
    return y, arg


@_max_pool_op.register_fake
def _(x, k, s):
    return empty_pooled(x, k, s)


@torch.library.custom_op("alexnet::max_pool_backward", mutates_args=(), device_types="cpu")
def _max_pool_backward_op(grad: torch.Tensor, arg: torch.Tensor, h: int, w: int, k: int,
                          s: int) -> torch.Tensor:
    check_argmax(grad, arg)
    grad, arg = (t.contiguous(memory_format=torch.channels_last) for t in (grad, arg))
    dx = _nhwc(grad, h, w)
    if dx.numel():
        _call(_library.load().maxpool_backward, grad, arg, dx, dx.shape, k, s)
    return dx


@_max_pool_backward_op.register_fake
def _(grad, arg, h, w, k, s):
    return _nhwc(grad, h, w)


def _setup_context(ctx, inputs, output):
    x, ctx.k, ctx.s = inputs
    ctx.hw, ctx.dtype = x.shape[2:], x.dtype
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])  # the argmax bytes only: not x, not y


def _differentiable_backward(grad, arg, h: int, w: int, k: int, s: int) -> torch.Tensor:
    """The backward in tensor ops that autograd can differentiate again (a double backward):
    each output's gradient added at its window's argmax."""
    n, c, oh, ow = grad.shape
    p = arg.long()
    rows = torch.arange(oh, device=grad.device).view(1, 1, oh, 1) * s + p // k
    cols = torch.arange(ow, device=grad.device).view(1, 1, 1, ow) * s + p % k
    dx = grad.new_zeros(n, c, h * w).scatter_add(2, (rows * w + cols).reshape(n, c, -1),
                                                 grad.reshape(n, c, -1))
    return dx.view(n, c, h, w).contiguous(memory_format=torch.channels_last)


def _backward(ctx, grad, _grad_arg):
    (arg,) = ctx.saved_tensors
    grad = grad.to(ctx.dtype)
    if torch.is_grad_enabled():  # create_graph: the kernel's op has no derivative of its own
        return _differentiable_backward(grad, arg, *ctx.hw, ctx.k, ctx.s), None, None
    return _max_pool_backward_op(grad, arg, *ctx.hw, ctx.k, ctx.s), None, None


_max_pool_op.register_autograd(_backward, setup_context=_setup_context)


def hooked(module: nn.Module) -> bool:
    """Whether a hook would see this module's call: its own forward or backward hooks, or
    torch's global module hooks (nn.modules.module.register_module_forward_hook and kin).
    Where one would, a fused path must not skip the module (model.py, lrn.py ask here)."""
    own = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    glob = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
            "_global_backward_pre_hooks")
    return any(getattr(module, name, None) for name in own) or \
        any(getattr(nn.modules.module, name, None) for name in glob)


def transformed(x: torch.Tensor) -> bool:
    """Whether x is under a torch.func transform (vmap, grad, jacrev) or carries a forward-mode
    tangent: torch's ops have rules for those, our custom ops (here and in lrn.py) have none.
    (Not asked while torch.compile traces, which cannot trace the question.)"""
    if torch.compiler.is_compiling():
        return False
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return (wrapped is not None and wrapped(x)) or fwAD.unpack_dual(x).tangent is not None


def kernel_applies(x: torch.Tensor, pool: nn.MaxPool2d) -> bool:
    """Whether the C kernel runs this pooling of x (see the module doc)."""
    k, s = pool.kernel_size, pool.stride
    return (x.device.type == "cpu" and x.dtype in _DTYPES and x.dim() == 4 and not transformed(x)
            and x.is_contiguous(memory_format=torch.channels_last)
            and isinstance(k, int) and isinstance(s, int) and k * k <= 256
            and pool.padding == 0 and pool.dilation == 1 and not pool.ceil_mode
            and not pool.return_indices and min(x.shape[2:]) >= k
            and _library.available() is not None)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d, on csrc/pool.c where it applies (see the module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _library.load()  # build now, outside any torch.compile trace (a no-op once built)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not kernel_applies(x, self):
            return super().forward(x)
        return _max_pool_op(x, self.kernel_size, self.stride)[0]
