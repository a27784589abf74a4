"""The paper's LRN, forward and backward, as Triton kernels: the CUDA path of `alexnet::lrn`.

Same formula as lrn.py (alpha times the plain window sum, window clipped at group edges):

    s[i]  = k + alpha * sum_{j in win(i)} a[j]^2,   win(i) = [i - size//2, i + (size-1)//2]
    b[i]  = a[i] * s[i]^-beta
    da[m] = g[m] s[m]^-beta - 2 alpha beta a[m] * sum_{i : m in win(i)} g[i] a[i] s[i]^(-beta-1)

Why Triton: written as tensor ops LRN is a dozen passes over a large activation and autograd keeps
their intermediates (half of a CUDA training step); here each value is read from memory about once
(neighbouring tiles share their edges through the caches) and written once, and the backward
recomputes s from the input instead of storing it.

Design. One program per tile of BLOCK_C channels x BLOCK_P pixels of one image, with threads along
the axis that is contiguous in memory (pixels in NCHW, channels in channels_last). A channel's
window is read as `size` shifted tiles (neighbouring rows, mostly served by L1/L2), each masked to
its row's group, so the sum is computed directly: no running sum whose subtractions would lose
precision when one channel is much larger than its neighbours, and any C, groups and tile size
work. The backward needs s at the `size` channels whose window holds m, three ways (STRATEGIES):
"two-pass", a first kernel writes each channel's own terms, t = g a s^(-beta-1) and w = g s^-beta,
to float32 scratch, and a second sums `size` shifted tiles of t; "fused" recomputes s at those
channels from 2*size-1 shifted input tiles; "sweep" has each program walk a group's channels in
order for its pixels, carrying the last `size` channels' terms in registers. The forward has a
sweep too (FORWARDS), the window's inputs in registers, its sum in the same order. Which ones
run, and each kernel's tile, is timed on the GPU at first use (FORWARD, BACKWARD and TILE
"auto"; lrn_auto.py). Storage is float32, bfloat16 or float16; arithmetic is float32. Pixels
(h, w) are addressed through one stride, so NCHW and channels_last (and views whose rows flatten
that way) run in place, without a copy.

The launchers take tensors on any device Triton runs on: CUDA, or the CPU under TRITON_INTERPRET=1
(how tests/test_lrn_triton.py checks them on a machine without a GPU).
"""
from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

from . import lrn_auto

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Arguments Triton must not specialise on (by default it compiles a variant per divisibility by 16
# and per value 1 of every integer): they change with each layer and batch size, and each variant
# is a compile at first use. The channel and pixel strides stay specialised: a unit stride is what
# tells the compiler which axis is contiguous, so that loads coalesce.
_SIZES = ("C", "HW", "CG", "n_pblocks")


@triton.jit
def _tile(C, HW, CG, n_pblocks, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """This program's image, channel rows (BLOCK_C, 1), pixel columns (1, BLOCK_P), the bounds
    [lo, hi) of each row's group, and which pixels exist."""
    pid = tl.program_id(0)
    n = pid // n_pblocks
    p = (pid % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    lo = (c // CG) * CG
    hi = tl.minimum(lo + CG, C)  # rows past C get lo >= C = hi: they load and store nothing
    return n.to(tl.int64), c[:, None], p[None, :], lo[:, None], hi[:, None], p[None, :] < HW


@triton.jit
def _load(ptr, n, c, p, lo, hi, p_ok, off, s_n, s_c, s_p, RELU: tl.constexpr):
    """Channel c + off of each row as float32; 0 outside the row's group (the clipped window).
    RELU: ReLU applied as it loads (torch's: a NaN stays NaN)."""
    j = c + off
    mask = (j >= lo) & (j < hi) & p_ok
    v = tl.load(ptr + n * s_n + j * s_c + p * s_p, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        v = tl.where(v <= 0.0, 0.0, v)
    return v


@triton.jit
def _neg_pow(s, beta):
    """s^-beta for s > 0 (s >= k)."""
    return tl.exp2(-beta * tl.log2(s))


@triton.jit(do_not_specialize=_SIZES + ("sx_n", "sy_n"))
def _lrn_fwd_kernel(x_ptr, y_ptr, C, HW, CG, n_pblocks, sx_n, sx_c, sx_p, sy_n, sy_c, sy_p,
                    alpha, beta, k, SIZE: tl.constexpr, RELU: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n, c, p, lo, hi, p_ok = _tile(C, HW, CG, n_pblocks, BLOCK_C, BLOCK_P)
    # xs[d] is channel c + d - SIZE//2: the window, left to right (a tuple, unrolled when compiled)
    xs = ()
    for d in tl.static_range(SIZE):
        xs = xs + (_load(x_ptr, n, c, p, lo, hi, p_ok, d - SIZE // 2, sx_n, sx_c, sx_p, RELU),)
    total = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for d in tl.static_range(SIZE):
        total += xs[d] * xs[d]
    y = xs[SIZE // 2] * _neg_pow(k + alpha * total, beta)
    ok = (c < hi) & p_ok  # the row exists (hi <= c past C) and so does the pixel
    tl.store(y_ptr + n * sy_n + c * sy_c + p * sy_p, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=_SIZES + ("sx_n", "sg_n", "sd_n"))
def _lrn_bwd_kernel(x_ptr, g_ptr, dx_ptr, C, HW, CG, n_pblocks, sx_n, sx_c, sx_p, sg_n, sg_c,
                    sg_p, sd_n, sd_c, sd_p, alpha, beta, k, SIZE: tl.constexpr,
                    RELU: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    n, c, p, lo, hi, p_ok = _tile(C, HW, CG, n_pblocks, BLOCK_C, BLOCK_P)
    BEFORE: tl.constexpr = SIZE // 2
    AFTER: tl.constexpr = (SIZE - 1) // 2
    # The i whose window holds m are i = m + e, e in [-AFTER, BEFORE]; their windows reach channels
    # m - AFTER - BEFORE .. m + BEFORE + AFTER. xs[q] is channel m + q - (SIZE - 1).
    xs = ()
    for q in tl.static_range(2 * SIZE - 1):
        xs = xs + (_load(x_ptr, n, c, p, lo, hi, p_ok, q - (SIZE - 1), sx_n, sx_c, sx_p, RELU),)
    u = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)   # sum over those i of g_i a_i s_i^(-beta-1)
    ps = ()                                        # s_i^-beta; ps[AFTER] is m's own
    gs = ()
    for e in tl.static_range(SIZE):                # i = m + e - AFTER
        total = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
        for d in tl.static_range(SIZE):            # i's window: xs[e + d]
            total += xs[e + d] * xs[e + d]
        s = k + alpha * total
        pw = _neg_pow(s, beta)
        g = _load(g_ptr, n, c, p, lo, hi, p_ok, e - AFTER, sg_n, sg_c, sg_p, False)
        # i outside m's group loads a_i = 0 (masked), so it adds nothing, as it must
        u += g * xs[e + BEFORE] * pw / s
        ps = ps + (pw,)
        gs = gs + (g,)
    dx = gs[AFTER] * ps[AFTER] - 2.0 * alpha * beta * xs[SIZE - 1] * u
    if RELU:  # ReLU's backward: m's ReLU output is 0 exactly where its input was <= 0
        dx = tl.where(xs[SIZE - 1] == 0.0, 0.0, dx)
    ok = (c < hi) & p_ok  # the row exists (hi <= c past C) and so does the pixel
    tl.store(dx_ptr + n * sd_n + c * sd_c + p * sd_p, dx.to(dx_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=_SIZES + ("sx_n", "sg_n", "st_n", "sw_n"))
def _lrn_bwd_terms_kernel(x_ptr, g_ptr, t_ptr, w_ptr, C, HW, CG, n_pblocks, sx_n, sx_c, sx_p,
                          sg_n, sg_c, sg_p, st_n, st_c, st_p, sw_n, sw_c, sw_p, alpha, beta, k,
                          SIZE: tl.constexpr, RELU: tl.constexpr, BLOCK_C: tl.constexpr,
                          BLOCK_P: tl.constexpr):
    """Two-pass backward, pass 1: t[i] = g[i] a[i] s[i]^(-beta-1) and w[i] = g[i] s[i]^-beta, in
    float32 (scratch)."""
    n, c, p, lo, hi, p_ok = _tile(C, HW, CG, n_pblocks, BLOCK_C, BLOCK_P)
    total = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    a = total
    for d in tl.static_range(SIZE):  # i's window, left to right, as the fused kernel sums it
        v = _load(x_ptr, n, c, p, lo, hi, p_ok, d - SIZE // 2, sx_n, sx_c, sx_p, RELU)
        total += v * v
        if d == SIZE // 2:
            a = v
    s = k + alpha * total
    pw = _neg_pow(s, beta)
    g = _load(g_ptr, n, c, p, lo, hi, p_ok, 0, sg_n, sg_c, sg_p, False)
    ok = (c < hi) & p_ok
    tl.store(t_ptr + n * st_n + c * st_c + p * st_p, g * a * pw / s, mask=ok)
    tl.store(w_ptr + n * sw_n + c * sw_c + p * sw_p, g * pw, mask=ok)


@triton.jit(do_not_specialize=_SIZES + ("sx_n", "st_n", "sw_n", "sd_n"))
def _lrn_bwd_dx_kernel(x_ptr, t_ptr, w_ptr, dx_ptr, C, HW, CG, n_pblocks, sx_n, sx_c, sx_p, st_n,
                       st_c, st_p, sw_n, sw_c, sw_p, sd_n, sd_c, sd_p, alpha, beta, k,
                       SIZE: tl.constexpr, RELU: tl.constexpr, BLOCK_C: tl.constexpr,
                       BLOCK_P: tl.constexpr):
    """Two-pass backward, pass 2: da[m] = w[m] - 2 alpha beta a[m] sum t[i] over the i whose
    window holds m (t of another group loads as 0)."""
    n, c, p, lo, hi, p_ok = _tile(C, HW, CG, n_pblocks, BLOCK_C, BLOCK_P)
    AFTER: tl.constexpr = (SIZE - 1) // 2
    u = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for e in tl.static_range(SIZE):  # i = m + e - AFTER, in the fused kernel's order
        u += _load(t_ptr, n, c, p, lo, hi, p_ok, e - AFTER, st_n, st_c, st_p, False)
    a = _load(x_ptr, n, c, p, lo, hi, p_ok, 0, sx_n, sx_c, sx_p, RELU)
    w = _load(w_ptr, n, c, p, lo, hi, p_ok, 0, sw_n, sw_c, sw_p, False)
    dx = w - 2.0 * alpha * beta * a * u
    if RELU:
        dx = tl.where(a == 0.0, 0.0, dx)
    ok = (c < hi) & p_ok
    tl.store(dx_ptr + n * sd_n + c * sd_c + p * sd_p, dx.to(dx_ptr.dtype.element_ty), mask=ok)


@triton.jit(do_not_specialize=_SIZES + ("sx_n", "sg_n", "sd_n"))
def _lrn_bwd_sweep_kernel(x_ptr, g_ptr, dx_ptr, C, HW, CG, n_pblocks, sx_n, sx_c, sx_p, sg_n,
                          sg_c, sg_p, sd_n, sd_c, sd_p, alpha, beta, k, SIZE: tl.constexpr,
                          RELU: tl.constexpr, BLOCK_P: tl.constexpr):
    """Sweep backward: one program takes BLOCK_P pixels of one image and walks its group's
    channels in order, carrying the last SIZE channels' a, g, s^-beta and t = g a s^(-beta-1) in
    registers. Each value is loaded once and its power computed once, as the fused kernel's
    arithmetic, in the same order (equal bit for bit in the interpreter). At step j it reads
    channel j, finishes s and t of channel i = j - AFTER, and dx of channel m = j - (SIZE - 1)."""
    n, lo, p, p_ok = _sweep_start(C, HW, CG, n_pblocks, BLOCK_P)
    BEFORE: tl.constexpr = SIZE // 2
    AFTER: tl.constexpr = (SIZE - 1) // 2
    zero = tl.zeros([BLOCK_P], tl.float32)
    # windows, oldest first: xs[d] is channel j - (SIZE-1) + d; gs, ps, ts[d] channel i - (SIZE-1)
    # + d. Channels outside the group are 0 (masked loads), as the fused kernel's.
    xs, gs, ps, ts = (), (), (), ()
    for d in tl.static_range(SIZE):
        xs, gs, ps, ts = xs + (zero,), gs + (zero,), ps + (zero,), ts + (zero,)
    for j in range(0, CG + SIZE - 1):
        ok = p_ok & (j < CG)
        a = tl.load(x_ptr + n * sx_n + (lo + j) * sx_c + p * sx_p, mask=ok, other=0.0)
        a = a.to(tl.float32)
        if RELU:
            a = tl.where(a <= 0.0, 0.0, a)
        xs = _shift(xs, a)
        i = j - AFTER  # its window, xs, is complete
        g = tl.load(g_ptr + n * sg_n + (lo + i) * sg_c + p * sg_p,
                    mask=p_ok & (i >= 0) & (i < CG), other=0.0).to(tl.float32)
        total = tl.zeros([BLOCK_P], tl.float32)
        for d in tl.static_range(SIZE):
            total += xs[d] * xs[d]
        s = k + alpha * total
        pw = _neg_pow(s, beta)
        gs, ps, ts = _shift(gs, g), _shift(ps, pw), _shift(ts, g * xs[BEFORE] * pw / s)
        m = j - (SIZE - 1)  # the t of every i whose window holds m is in ts
        u = tl.zeros([BLOCK_P], tl.float32)
        for e in tl.static_range(SIZE):  # i = m + e - AFTER, in the fused kernel's order
            u += ts[e]
        dx = gs[AFTER] * ps[AFTER] - 2.0 * alpha * beta * xs[0] * u
        if RELU:
            dx = tl.where(xs[0] == 0.0, 0.0, dx)
        tl.store(dx_ptr + n * sd_n + (lo + m) * sd_c + p * sd_p, dx.to(dx_ptr.dtype.element_ty),
                 mask=p_ok & (m >= 0))


@triton.jit(do_not_specialize=_SIZES + ("sx_n", "sy_n"))
def _lrn_fwd_sweep_kernel(x_ptr, y_ptr, C, HW, CG, n_pblocks, sx_n, sx_c, sx_p, sy_n, sy_c, sy_p,
                          alpha, beta, k, SIZE: tl.constexpr, RELU: tl.constexpr,
                          BLOCK_P: tl.constexpr):
    """Sweep forward: as the sweep backward, a program walks its group's channels for BLOCK_P
    pixels of one image, the last SIZE inputs in registers: each value loaded once, where the tile
    kernel loads SIZE shifted tiles. The window is summed left to right, as there (equal bit for
    bit in the interpreter). At step j it reads channel j and finishes channel i = j - AFTER."""
    n, lo, p, p_ok = _sweep_start(C, HW, CG, n_pblocks, BLOCK_P)
    BEFORE: tl.constexpr = SIZE // 2
    AFTER: tl.constexpr = (SIZE - 1) // 2
    zero = tl.zeros([BLOCK_P], tl.float32)
    xs = ()  # xs[d] is channel j - (SIZE-1) + d = i - BEFORE + d: the tile kernel's xs
    for d in tl.static_range(SIZE):
        xs = xs + (zero,)
    for j in range(0, CG + AFTER):
        a = tl.load(x_ptr + n * sx_n + (lo + j) * sx_c + p * sx_p, mask=p_ok & (j < CG),
                    other=0.0).to(tl.float32)
        if RELU:
            a = tl.where(a <= 0.0, 0.0, a)
        xs = _shift(xs, a)
        i = j - AFTER
        total = tl.zeros([BLOCK_P], tl.float32)
        for d in tl.static_range(SIZE):
            total += xs[d] * xs[d]
        y = xs[BEFORE] * _neg_pow(k + alpha * total, beta)
        tl.store(y_ptr + n * sy_n + (lo + i) * sy_c + p * sy_p, y.to(y_ptr.dtype.element_ty),
                 mask=p_ok & (i >= 0))


@triton.jit
def _sweep_start(C, HW, CG, n_pblocks, BLOCK_P: tl.constexpr):
    """A sweep program's image, its group's first channel, its pixels and which exist. One grid
    axis: (image, pixel block, group), the group fastest (CUDA's second axis stops at 65535,
    which `groups` may pass)."""
    pid = tl.program_id(0)
    n_groups = C // CG
    lo = (pid % n_groups) * CG
    pid = pid // n_groups
    p = (pid % n_pblocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    return (pid // n_pblocks).to(tl.int64), lo, p, p < HW


@triton.jit
def _shift(window, new):
    """The window (a tuple, oldest first) moved on by one: its oldest dropped, `new` appended."""
    out = ()
    for d in tl.static_range(1, len(window)):
        out = out + (window[d],)
    return out + (new,)


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    """(image, channel, pixel) strides, where pixel p = h * W + w. Holds for NCHW and channels_last
    (and any view whose rows flatten so); anything else is refused rather than copied silently."""
    _, c, h, w = t.shape
    s_h, s_w = t.stride(2), t.stride(3)
    s_p = s_w if w > 1 else (s_h if h > 1 else 1)
    if (w > 1 and s_w != s_p) or (h > 1 and s_h != w * s_p):
        raise ValueError(f"LRN kernel needs (H, W) to flatten to one stride (NCHW or channels_last)"
                         f", got shape {tuple(t.shape)} strides {t.stride()}")
    if (c - 1) * t.stride(1) + (h * w - 1) * s_p >= 2 ** 31:
        raise ValueError("LRN kernel: offsets within one image must fit in int32")
    return t.stride(0), t.stride(1), s_p


def _check(x: torch.Tensor, size: int, groups: int) -> None:
    if x.dim() != 4 or x.shape[1] % groups or size < 1:
        raise ValueError(f"LRN expects (N, C, H, W) with C divisible by groups={groups} and "
                         f"size >= 1, got {tuple(x.shape)}, size={size}")
    if x.dtype not in DTYPES:
        raise TypeError(f"LRN kernel takes {DTYPES}, got {x.dtype}")


# The tile, (values per program, warps), each kernel launches with unless told otherwise: "auto"
# times TILES_TIMED on a GPU at a shape's first call and keeps the fastest (lrn_auto.py; each
# strategy at each tile, FORWARD and BACKWARD "auto"); where nothing is timed, FALLBACK_TILE. The
# fused backward holds about 20 tiles in registers: at 1024 values and 4 warps it compiles to 167
# registers a thread for sm_90 (95 with 8 warps, as at 512 and 4; no spills; triton 3.8, counted
# by cuobjdump: scripts/lrn_tiles.py --registers, session 27). Which runs faster is for a GPU to
# say.
TILE = {"forward": "auto", "backward": "auto"}
TILES_TIMED = ((1024, 4), (1024, 8), (512, 4))
FALLBACK_TILE = (1024, 4)
# The backward's strategies. "fused": one kernel; each program recomputes s at the `size`
# channels whose window holds its own (2*size-1 input tiles, `size` powers a value); on the H200 it
# took 0.9 ms of c's 4.9 ms step at batch 64, twenty times what its memory traffic needs (session
# 27). "two-pass": pass 1 writes t = g a s^(-beta-1) and w = g s^-beta in float32, pass 2 sums
# `size` shifted tiles of t: each value's power is computed once, each kernel holds a third of the
# tiles, for four times the memory traffic; the scratch is 8 bytes a value while the backward runs
# (300 MB for conv1's LRN at batch 128, 2.4 GB at 1024). "sweep" (session 29): a program walks a
# group's channels for a pixel a thread, carrying the window in registers: each value loaded once,
# its power computed once, no scratch; its loop runs the group's channels one after another, and in
# channels_last a warp's loads are strided by C. Their instructions and registers compiled for
# sm_90: BENCHMARKS.md, sessions 28 and 29; none has been timed on a GPU yet.
STRATEGIES = ("two-pass", "fused", "sweep")
# Which one runs: a strategy's name, or "auto" (lrn_auto.py): on a GPU each strategy is timed at
# the first backward of each shape (at each tile of TILES_TIMED, with TILE "auto") and the fastest
# kept, for the process and on disk per GPU model and triton version, so that later processes (a
# resumed run) usually take the same one without timing again. They differ only in the last bits
# (the compiler contracts each otherwise), less than cuDNN's own run-to-run differences on a GPU.
# DDP ranks time on their own and may differ. Before a GPU has timed them (on the CPU, in the
# interpreter; while a CUDA graph is captured): FALLBACK, the fewest instructions a value by the
# sm_90 count.
BACKWARD = "auto"
FALLBACK = "two-pass"
# The forward's, chosen as the backward's (FORWARD "auto"): "tile" loads `size` shifted tiles of
# the input a program (its neighbours' rows mostly from L1/L2); "sweep" (session 30) walks the
# group's channels as the backward's sweep does, each input loaded once. Same arithmetic, in the
# same order. Untimed on a GPU; FORWARD_FALLBACK is what ran before.
FORWARDS = ("tile", "sweep")
FORWARD = "auto"
FORWARD_FALLBACK = "tile"


def compile_for_hopper(kernel, dtype: str, channels_last: bool, relu: bool, block_c: int,
                       block_p: int, warps: int = 4):
    """`kernel` compiled for sm_90 (H100/H200) without a GPU, specialised as a launch would be
    (the contiguous axis's unit stride is a constant: that is what lets the loads coalesce).
    dtype: Triton's name ("bf16", "fp32", "fp16"). For the tests, and for counting registers
    (scripts/lrn_tiles.py --registers)."""
    from triton.backends.compiler import GPUTarget
    unit = "_c" if channels_last else "_p"
    constants = dict(SIZE=5, RELU=relu, BLOCK_C=block_c, BLOCK_P=block_p)
    constants = {name: v for name, v in constants.items() if name in kernel.arg_names}
    signature = {}
    for name in kernel.arg_names:
        if name in constants:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):  # t and w, the two-pass backward's scratch, are float32
            signature[name] = "*fp32" if name in ("t_ptr", "w_ptr") else "*" + dtype
        elif name in ("alpha", "beta", "k"):
            signature[name] = "fp32"
        elif name.startswith("s") and name.endswith(unit):
            signature[name], constants[name] = "constexpr", 1
        else:
            signature[name] = "i32"
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))


def _blocks(x: torch.Tensor, values: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P): `values` per program, long along the contiguous axis so loads
    coalesce."""
    c = x.shape[1]
    if x.stride(1) == 1 and c > 1:  # channels_last: a pixel's channels are adjacent
        block_c = min(32, triton.next_power_of_2(c))
    else:
        block_c = min(16, triton.next_power_of_2(c))
    return block_c, max(1, values // block_c)


def _launch(kernel, x: torch.Tensor, tensors, size, alpha, beta, k, groups, relu,
            tile: tuple[int, int]) -> None:
    values, warps = tile
    if values < 1 or values & (values - 1) or warps < 1 or warps & (warps - 1):
        raise ValueError(f"LRN kernel tile: values and warps must be powers of 2, got {tile}")
    n, c, h, w = x.shape
    if kernel in (_lrn_bwd_sweep_kernel, _lrn_fwd_sweep_kernel):  # a pixel a thread, a program
        # a group: the tile's values unused
        block_p = 32 * warps
        n_pblocks = triton.cdiv(h * w, block_p)
        grid, blocks = (n * n_pblocks * groups,), dict(BLOCK_P=block_p)
    else:
        block_c, block_p = _blocks(x, values)
        n_pblocks = triton.cdiv(h * w, block_p)
        grid, blocks = (n * n_pblocks, triton.cdiv(c, block_c)), dict(BLOCK_C=block_c,
                                                                      BLOCK_P=block_p)
    strides = [s for t in tensors for s in _strides(t)]
    # Triton launches on the current CUDA device: make it x's (the two-device split uses cuda:1)
    guard = torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()
    with guard:
        kernel[grid](
            *tensors, c, h * w, c // groups, n_pblocks, *strides, float(alpha), float(beta),
            float(k), SIZE=size, RELU=bool(relu), **blocks, num_warps=warps)


def forward(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
            k: float = 2.0, groups: int = 1, relu: bool = False,
            tile: tuple[int, int] | None = None, strategy: str | None = None) -> torch.Tensor:
    """The LRN of x (of ReLU(x) with relu: one pass, no ReLU output in memory), in x's dtype and
    layout (empty_like keeps a dense x's strides). tile: (values per program, warps) or "auto",
    default TILE["forward"]; strategy: one of FORWARDS or "auto", default FORWARD."""
    _check(x, size, groups)
    strategy = _strategy(strategy or FORWARD, FORWARDS, "forward")
    y = torch.empty_like(x)
    if x.numel():
        params = (size, alpha, beta, k, groups, relu)
        kernels = {"tile": _lrn_fwd_kernel, "sweep": _lrn_fwd_sweep_kernel}
        strategy, tile = _choose("forward", (x,), params, strategy, tile or TILE["forward"],
                                 lambda how, t: _launch(kernels[how], x, (x, y), *params, t))
        _launch(kernels[strategy], x, (x, y), *params, tile)
    return y


def _strategy(strategy: str, strategies: tuple, kind: str) -> str:
    if strategy not in strategies + ("auto",):
        raise ValueError(f"LRN {kind} strategy: one of {', '.join(strategies)} or auto, got "
                         f"{strategy!r}")
    return strategy


def backward(grad: torch.Tensor, x: torch.Tensor, size: int = 5, alpha: float = 1e-4,
             beta: float = 0.75, k: float = 2.0, groups: int = 1,
             relu: bool = False, tile: tuple[int, int] | None = None,
             strategy: str | None = None) -> torch.Tensor:
    """dL/dx given dL/dy = grad (any of DTYPES, either layout: read as it is), in x's dtype and
    layout; with relu, through ReLU's backward too. s is recomputed from x, not stored by the
    forward. tile: (values per program, warps) or "auto", default TILE["backward"] ("sweep" takes
    its warps only). strategy: one of STRATEGIES or "auto" (see BACKWARD), default BACKWARD; each
    computes the same float32 operations in the same order (equal bit for bit in the
    interpreter; compiled, the fused and sweep kernels may contract a multiply and a subtraction
    into one FMA that the two passes round apart)."""
    _check(x, size, groups)
    if grad.shape != x.shape:
        raise ValueError(f"grad shape {tuple(grad.shape)} != input shape {tuple(x.shape)}")
    _check(grad, size, groups)
    strategy = _strategy(strategy or BACKWARD, STRATEGIES, "backward")
    dx = torch.empty_like(x)
    if not x.numel():
        return dx
    params = (size, alpha, beta, k, groups, relu)
    strategy, tile = _choose("backward", (x, grad), params, strategy, tile or TILE["backward"],
                             lambda how, t: _run(how, grad, x, dx, params, t))
    _run(strategy, grad, x, dx, params, tile)
    return dx


def _run(strategy: str, grad, x, dx, params, tile) -> None:
    if strategy == "fused":
        _launch(_lrn_bwd_kernel, x, (x, grad, dx), *params, tile)
    elif strategy == "sweep":
        _launch(_lrn_bwd_sweep_kernel, x, (x, grad, dx), *params, tile)
    else:  # t in float32 whatever x's dtype: the fused kernel keeps it in fp32 registers too
        t, w = (torch.empty_like(x, dtype=torch.float32) for _ in range(2))
        _launch(_lrn_bwd_terms_kernel, x, (x, grad, t, w), *params, tile)
        _launch(_lrn_bwd_dx_kernel, x, (x, t, w, dx), *params, tile)


def _choose(kind: str, tensors, params, strategy: str, tile, run) -> tuple:
    """(strategy, tile) to run: as given, or where either is "auto" the fastest on this GPU of
    every strategy of `kind` at every tile of TILES_TIMED (lrn_auto.choose: timed at a shape's
    first call; a sweep's tiles count by their warps alone, its values unused). Where nothing is
    timed: the fallbacks (FALLBACK or FORWARD_FALLBACK, FALLBACK_TILE) for what is "auto"."""
    if strategy != "auto" and tile != "auto":
        return strategy, tuple(tile)
    strategies, first = (FORWARDS, FORWARD_FALLBACK) if kind == "forward" else (STRATEGIES,
                                                                                FALLBACK)
    fallback = (first if strategy == "auto" else strategy,
                FALLBACK_TILE if tile == "auto" else tuple(tile))

    def options() -> dict:  # {name: run it}, made only when a shape is first timed
        runs, seen = {}, set()
        for how in (strategies if strategy == "auto" else (strategy,)):
            for t in (TILES_TIMED if tile == "auto" else (tuple(tile),)):
                launch = (how, t[1] if how == "sweep" else t)  # a sweep: its warps alone
                if launch not in seen:
                    seen.add(launch)
                    runs[_name(how, t)] = functools.partial(run, how, t)
        return runs
    return _parse(lrn_auto.choose(kind, tensors, params, (strategy, tile), options,
                                  _name(*fallback)))


def _name(strategy: str, tile) -> str:
    return f"{strategy} {tile[0]}x{tile[1]}"


@functools.lru_cache(maxsize=None)  # every call: the few names there are, parsed once
def _parse(name: str) -> tuple[str, tuple[int, int]]:
    """_name's inverse: "sweep 1024x8" -> ("sweep", (1024, 8))."""
    how, t = name.split()
    return how, tuple(int(v) for v in t.split("x"))
