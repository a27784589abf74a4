"""Local response normalization (LRN) exactly as in the paper (Section 3.3).

    b[i] = a[i] / (k + alpha * sum_{j = i - n//2 .. i + n//2} a[j]^2) ** beta,   n = 5, k = 2,
                                                                             alpha = 1e-4, beta = 0.75

alpha multiplies the *plain sum* over the window. torch.nn.LocalResponseNorm (and Caffe) multiply
alpha by the window *mean* (alpha / n), so the paper's layer in torch needs alpha = 5e-4 there; most
re-implementations miss this and normalise five times too weakly.

`groups` keeps the window inside each tower: in the paper each GPU normalises its own 48 (then 128)
kernel maps, so channel 47 never sees channel 48. groups=2 reproduces that on one device.

Speed. Written as tensor ops (lrn_reference, or torch's module) LRN is a dozen passes over a large
activation, and autograd stores their intermediates: on the CPU it took half to three quarters of
the paper net's training step, on an H100 half of it. So the layer is a torch custom op
(`alexnet::lrn`, with `alexnet::lrn_backward` its analytic gradient; the forward stores only x and
the backward recomputes s), which eager mode, torch.compile (one opaque op) and the two-device
split all call. Its `relu` flag makes it LRN(ReLU(x)), ReLU's backward included: AlexNet.forward
runs conv1's and conv2's ReLU that way, one pass less over those activations each way. On the CPU
in channels_last it also takes the max pooling that follows (`lrn_pool`, `alexnet::lrn_pool`):
the LRN's output, and in the backward its gradient, then never go to memory. What runs where
(lrn_backend(x) says which):

    CPU, float32/bfloat16    "kernel"     fused C (csrc/lrn.c, built with gcc on first use, cached)
    CUDA, float32/bf16/fp16  "triton"     Triton kernels (lrn_triton.py), fp32 arithmetic
    float64 (CPU or CUDA)    "analytic"   the analytic formula in tensor ops (gradcheck checks it)
    anything else            "reference"  lrn_reference: float16 on the CPU, no C compiler, no
                                          triton, other devices, or ALEXNET_LRN=reference
"""
from __future__ import annotations

import ctypes
import os

import torch
import torch.nn.functional as F
from torch import nn

from . import native, pool
from .errors import AlexNetError

try:  # optional: a CPU-only torch may come without triton, and then CUDA runs lrn_reference
    from . import lrn_triton
    _triton_error = None
except Exception as e:  # noqa: BLE001 - triton's import probes backends and can fail otherwise too
    lrn_triton, _triton_error = None, f"{type(e).__name__}: {e}"


def lrn_reference(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                  k: float = 2.0, groups: int = 1) -> torch.Tensor:
    """The formula in plain tensor ops (any dtype, any device; autograd gives the gradient)."""
    n, c, h, w = x.shape
    sq = x.pow(2).reshape(n, groups, c // groups, h * w)
    # Zero-pad the channel axis so the window is clipped at the edges (of each tower).
    sq = F.pad(sq, (0, 0, size // 2, (size - 1) // 2))
    window = sq.unfold(2, size, 1).sum(-1)              # (n, groups, c/groups, h*w)
    div = (k + alpha * window).pow(beta).reshape(n, c, h, w)
    return x / div


# ---- the analytic gradient in tensor ops: the float64 path of the custom op (gradcheck checks
# it), and the readable statement of what csrc/lrn.c computes ----

def _window_sum(t: torch.Tensor, size: int, groups: int, mirrored: bool = False) -> torch.Tensor:
    """Sum over each channel's window [i - size//2, i + (size-1)//2], clipped at group edges.

    mirrored=True sums over the window's mirror image [i - (size-1)//2, i + size//2]: the set of
    i whose window holds channel m, which is what the backward needs.
    """
    n, c, h, w = t.shape
    before, after = size // 2, (size - 1) // 2
    if mirrored:
        before, after = after, before
    t = F.pad(t.reshape(n, groups, c // groups, h * w), (0, 0, before, after))
    return t.unfold(2, size, 1).sum(-1).reshape(n, c, h, w)


def _analytic_forward(x, size, alpha, beta, k, groups):
    s = k + alpha * _window_sum(x * x, size, groups)
    return x * s.pow(-beta)


def _analytic_backward(grad, x, size, alpha, beta, k, groups):
    # b_i = a_i s_i^-beta  =>
    # dL/da_m = g_m s_m^-beta - 2 alpha beta a_m sum_{i: m in win(i)} g_i a_i s_i^(-beta-1)
    s = k + alpha * _window_sum(x * x, size, groups)
    p = s.pow(-beta)
    u = _window_sum(grad * x * p / s, size, groups, mirrored=True)
    return grad * p - 2 * alpha * beta * x * u


# ---- the C kernel (csrc/lrn.c), built by native.py on first use and cached ----

_KERNEL_DTYPES = {torch.float32: 0, torch.bfloat16: 1}  # the codes csrc/lrn.c expects


def _declare(lib) -> None:
    args = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p] + [ctypes.c_int64] * 5 \
        + [ctypes.c_float] * 3 + [ctypes.c_int] * 2  # ..., k, relu, nthreads
    lib.lrn_forward.argtypes = args
    lib.lrn_backward.argtypes = args[:3] + [ctypes.c_void_p] + args[3:]
    lib.lrn_forward.restype = lib.lrn_backward.restype = ctypes.c_int
    # LRN then max pooling: dtype, x, (g,) arg, y or dx, n, c, h, w, groups, size, alpha, beta,
    # k, relu, pool kernel, pool stride, nthreads
    tail = [ctypes.c_int64] * 6 + [ctypes.c_float] * 3 + [ctypes.c_int] + [ctypes.c_int64] * 2 \
        + [ctypes.c_int]
    lib.lrn_pool_forward.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 3 + tail
    lib.lrn_pool_backward.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 4 + tail
    lib.lrn_pool_forward.restype = lib.lrn_pool_backward.restype = ctypes.c_int


_library = native.Library("lrn", _declare)


def load_kernel() -> ctypes.CDLL | None:
    """The compiled kernel, building it on first use; None if it cannot be built (see
    kernel_error()). Never raises: LRN then runs lrn_reference."""
    return _library.load()


def kernel_error() -> str | None:
    """Why the C kernel is not in use (None when it is, or has not been tried yet)."""
    return _library.error


def triton_error() -> str | None:
    """Why the Triton kernels are not available for CUDA (None when they are)."""
    return _triton_error


def triton_choices() -> list[dict]:
    """The Triton kernels' launch (forward and backward: strategy and tile) for each shape this
    process ran on a GPU, with each option's time (lrn_auto.used); none without Triton."""
    return lrn_triton.lrn_auto.used() if lrn_triton is not None else []


def _layout(x: torch.Tensor) -> torch.memory_format:
    """The layout the kernel runs in: channels_last when x is (the fast case), else NCHW."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


# Below this many values the kernel runs on one thread (about 1 ms of work): waking the others
# costs more than it saves, and on a busy machine a sleeping thread can take milliseconds to wake.
_PARALLEL_MIN = 1 << 20


def _call(fn, x, grad, out, size, alpha, beta, k, groups, relu=False) -> None:
    n, c, h, w = x.shape
    if x.numel() == 0:
        return
    ptrs = [ctypes.c_void_p(t.data_ptr()) for t in (x, grad, out) if t is not None]
    threads = torch.get_num_threads() if x.numel() >= _PARALLEL_MIN else 1
    err = fn(_KERNEL_DTYPES[x.dtype], int(_layout(x) == torch.channels_last), *ptrs, n, c, h * w,
             groups, size, alpha, beta, k, int(relu), threads)
    if err:
        raise RuntimeError(f"LRN kernel failed with code {err}")


# ---- the custom ops: the kernel for float32/bfloat16, the analytic formula for float64 ----

# `relu`: x is the ReLU's input, and the op is LRN(ReLU(x)) with ReLU's backward included (the
# kernel's pass does both; see csrc/lrn.c). The tensor-op paths below do the same in two steps.

def _relu_backward(dx: torch.Tensor, x: torch.Tensor, relu: bool) -> torch.Tensor:
    """ReLU's backward applied to the LRN's input gradient: zero where x <= 0 (a NaN passes, as
    in torch's threshold_backward)."""
    return torch.where(x <= 0, 0.0, dx) if relu else dx


@torch.library.custom_op("alexnet::lrn", mutates_args=(), device_types="cpu")
def _lrn_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float,
            groups: int, relu: bool = False) -> torch.Tensor:
    kernel = load_kernel()
    if x.dtype not in _KERNEL_DTYPES or kernel is None:  # strides as the fake below promises
        return _analytic_forward(x.relu() if relu else x, size, alpha, beta, k, groups
                                 ).contiguous(memory_format=_layout(x))
    x = x.contiguous(memory_format=_layout(x))
    y = torch.empty_like(x)
    _call(kernel.lrn_forward, x, None, y, size, alpha, beta, k, groups, relu)
    return y


@_lrn_op.register_fake
def _(x, size, alpha, beta, k, groups, relu=False):
    return torch.empty_like(x, memory_format=_layout(x))


@torch.library.custom_op("alexnet::lrn_backward", mutates_args=(), device_types="cpu")
def _lrn_backward_op(grad: torch.Tensor, x: torch.Tensor, size: int, alpha: float, beta: float,
                     k: float, groups: int, relu: bool = False) -> torch.Tensor:
    kernel = load_kernel()
    if x.dtype not in _KERNEL_DTYPES or kernel is None:
        dx = _analytic_backward(grad, x.relu() if relu else x, size, alpha, beta, k, groups)
        return _relu_backward(dx, x, relu).contiguous(memory_format=_layout(x))
    fmt = _layout(x)
    x, grad = x.contiguous(memory_format=fmt), grad.to(x.dtype).contiguous(memory_format=fmt)
    dx = torch.empty_like(x)
    _call(kernel.lrn_backward, x, grad, dx, size, alpha, beta, k, groups, relu)
    return dx


@_lrn_backward_op.register_fake
def _(grad, x, size, alpha, beta, k, groups, relu=False):
    return torch.empty_like(x, memory_format=_layout(x))


def _setup_context(ctx, inputs, output):
    x, *ctx.params = inputs
    ctx.save_for_backward(x)  # only the input: the backward recomputes s, cheaper than storing it


def _backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return (_lrn_backward_op(grad, x, *ctx.params),) + (None,) * len(ctx.params)


_lrn_op.register_autograd(_backward, setup_context=_setup_context)


# ---- CUDA: the same ops run the Triton kernels (float32/bfloat16/float16, either layout, no copy),
# the analytic formula for float64 ----

@_lrn_op.register_kernel("cuda")
def _lrn_cuda(x, size, alpha, beta, k, groups, relu=False):
    fmt = _layout(x)  # the output's layout, as the fake promises
    x = x.contiguous(memory_format=fmt)
    if lrn_triton is None or x.dtype not in lrn_triton.DTYPES:
        a = x.relu() if relu else x
        return _analytic_forward(a, size, alpha, beta, k, groups).contiguous(memory_format=fmt)
    return lrn_triton.forward(x, size, alpha, beta, k, groups, relu)  # ReLU as it loads


@_lrn_backward_op.register_kernel("cuda")
def _lrn_backward_cuda(grad, x, size, alpha, beta, k, groups, relu=False):
    fmt = _layout(x)
    x = x.contiguous(memory_format=fmt)
    if lrn_triton is None or x.dtype not in lrn_triton.DTYPES:
        dx = _analytic_backward(grad, x.relu() if relu else x, size, alpha, beta, k, groups)
        return _relu_backward(dx, x, relu).contiguous(memory_format=fmt)
    # the kernel reads grad in either layout and any of its dtypes (a strided view is copied),
    # and applies ReLU and its backward itself
    return lrn_triton.backward(grad.contiguous(memory_format=_layout(grad)), x, size, alpha,
                               beta, k, groups, relu)


# ---- LRN then max pooling in one pass (csrc/lrn.c): the LRN's output never goes to memory ----

def _call_fused(fn, tensors, x, params) -> None:
    n, c, h, w = x.shape
    size, alpha, beta, k, groups, relu, pool_k, pool_s = params
    threads = torch.get_num_threads() if x.numel() >= _PARALLEL_MIN else 1
    err = fn(_KERNEL_DTYPES[x.dtype], *[ctypes.c_void_p(t.data_ptr()) for t in tensors], n, c, h,
             w, groups, size, alpha, beta, k, int(relu), pool_k, pool_s, threads)
    if err:
        raise RuntimeError(f"LRN-and-pooling kernel failed with code {err}")


@torch.library.custom_op("alexnet::lrn_pool", mutates_args=(), device_types="cpu")
def _lrn_pool_op(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int,
                 relu: bool, pool_k: int, pool_s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(max_pool(LRN(x)), its argmax) as pool.py's op returns them. x: channels_last,
    float32/bfloat16, and the kernel built (lrn_pool checks)."""
    x = x.contiguous(memory_format=torch.channels_last)
    y, arg = pool.empty_pooled(x, pool_k, pool_s)
    if y.numel():
        _call_fused(load_kernel().lrn_pool_forward, (x, arg, y), x,
                    (size, alpha, beta, k, groups, relu, pool_k, pool_s))
    return y, arg


@_lrn_pool_op.register_fake
def _(x, size, alpha, beta, k, groups, relu, pool_k, pool_s):
    return pool.empty_pooled(x, pool_k, pool_s)


@torch.library.custom_op("alexnet::lrn_pool_backward", mutates_args=(), device_types="cpu")
def _lrn_pool_backward_op(grad: torch.Tensor, arg: torch.Tensor, x: torch.Tensor, size: int,
                          alpha: float, beta: float, k: float, groups: int, relu: bool,
                          pool_k: int, pool_s: int) -> torch.Tensor:
    pool.check_argmax(grad, arg)
    x = x.contiguous(memory_format=torch.channels_last)
    grad, arg = (t.contiguous(memory_format=torch.channels_last) for t in (grad.to(x.dtype), arg))
    dx = torch.empty_like(x)
    if dx.numel():
        _call_fused(load_kernel().lrn_pool_backward, (x, grad, arg, dx), x,
                    (size, alpha, beta, k, groups, relu, pool_k, pool_s))
    return dx


@_lrn_pool_backward_op.register_fake
def _(grad, arg, x, size, alpha, beta, k, groups, relu, pool_k, pool_s):
    return torch.empty_like(x, memory_format=torch.channels_last)


def _setup_fused(ctx, inputs, output):
    x, *ctx.params = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, output[1])  # the input and the argmax bytes: nothing in between


def _backward_fused(ctx, grad, _grad_arg):
    x, arg = ctx.saved_tensors
    return (_lrn_pool_backward_op(grad, arg, x, *ctx.params),) + (None,) * len(ctx.params)


_lrn_pool_op.register_autograd(_backward_fused, setup_context=_setup_fused)


def lrn_pool(x: torch.Tensor, size: int, alpha: float, beta: float, k: float, groups: int,
             relu: bool, pooling: nn.Module) -> torch.Tensor:
    """pooling(lrn(x, ..., relu)): in one pass where pooling is a pool.MaxPool2d that no hook
    watches and both C kernels would run (the CPU, channels_last, float32/bfloat16), the same
    numbers bit for bit; else the two in turn."""
    # kernel_applies first: it turns away vmap's tensors, which _layout's question would fail on
    if isinstance(pooling, pool.MaxPool2d) and not pool.hooked(pooling) \
            and pool.kernel_applies(x, pooling) and lrn_backend(x) == "kernel" \
            and _layout(x) == torch.channels_last and x.shape[1] % groups == 0:
        return _lrn_pool_op(x, size, float(alpha), float(beta), float(k), groups, bool(relu),
                            pooling.kernel_size, pooling.stride)[0]
    return pooling(lrn(x, size, alpha, beta, k, groups, relu))


def lrn_backend(x: torch.Tensor) -> str:
    """Which implementation lrn(x) uses: "kernel" (C, CPU), "triton" (CUDA), "analytic" (float64
    through the same custom op, for gradcheck) or "reference" (lrn_reference); see the module
    doc."""
    forced = os.environ.get("ALEXNET_LRN", "")
    if forced == "reference":
        return "reference"
    if forced:
        raise AlexNetError(f"ALEXNET_LRN={forced!r}: the only value is 'reference' (or unset)")
    if pool.transformed(x):  # torch.func transforms, forward-mode AD: the custom op has no rules
        return "reference"
    if x.device.type == "cuda":
        if x.dtype == torch.float64:
            return "analytic"
        return "triton" if lrn_triton is not None and x.dtype in lrn_triton.DTYPES else "reference"
    if x.device.type != "cpu":
        return "reference"
    if x.dtype == torch.float64:
        return "analytic"
    if x.dtype not in _KERNEL_DTYPES:
        return "reference"
    return "kernel" if _library.available() is not None else "reference"


def lrn(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
        groups: int = 1, relu: bool = False) -> torch.Tensor:
    """The paper's LRN of an (N, C, H, W) tensor, on the fastest path available (see module doc).
    relu=True gives LRN(ReLU(x)), one pass where the kernel runs (as AlexNet.forward uses it).

    The result has x's dtype, also under autocast: low-precision inputs on the reference path are
    computed in float32 (a float16 sum of squares of ReLU outputs can overflow) and cast back.
    """
    if x.dim() != 4 or x.shape[1] % groups:
        raise ValueError(f"LRN expects (N, C, H, W) with C divisible by groups={groups}, "
                         f"got {tuple(x.shape)}")
    backend = lrn_backend(x)
    if backend != "reference":
        return _lrn_op(x, size, float(alpha), float(beta), float(k), groups, bool(relu))
    x = x.relu() if relu else x
    if x.dtype in (torch.float16, torch.bfloat16):
        return lrn_reference(x.float(), size, alpha, beta, k, groups).to(x.dtype)
    return lrn_reference(x, size, alpha, beta, k, groups)


class LocalResponseNorm(nn.Module):
    """The paper's LRN across channels (alpha times the sum, not the mean); see the module doc."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 groups: int = 1):
        super().__init__()
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        if groups < 1:
            raise ValueError(f"LRN groups must be >= 1, got {groups}")
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups
        load_kernel()  # build now, outside any torch.compile trace (a no-op once built or failed)

    def forward(self, x: torch.Tensor, relu: bool = False,
                pooling: nn.Module | None = None) -> torch.Tensor:
        """LRN(x); with relu=True, LRN(ReLU(x)) in one pass, and with `pooling` (pool.MaxPool2d)
        that pooling of it, in one pass too where the kernels run (AlexNet.forward's fused path)."""
        if pooling is not None:
            return lrn_pool(x, self.size, self.alpha, self.beta, self.k, self.groups, relu, pooling)
        return lrn(x, self.size, self.alpha, self.beta, self.k, self.groups, relu)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"groups={self.groups}")
