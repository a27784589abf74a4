"""LRN: the paper's formula, its analytic gradient, the C kernel and its fallbacks."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from alexnet import lrn as lrn_module
from alexnet import native
from alexnet.errors import AlexNetError
from alexnet.lrn import LocalResponseNorm, lrn, lrn_backend, lrn_reference
from conftest import needs_avx512

PAPER = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)


def formula(x: torch.Tensor, size=5, alpha=1e-4, beta=0.75, k=2.0, groups=1) -> torch.Tensor:
    """The paper's equation written out channel by channel in float64, independent of lrn.py:
    b_i = a_i / (k + alpha * sum_{j in window(i), same group} a_j^2)^beta."""
    x = x.double()
    c = x.shape[1]
    per_group = c // groups
    out = []
    for i in range(c):
        first = (i // per_group) * per_group
        lo, hi = max(first, i - size // 2), min(first + per_group - 1, i + (size - 1) // 2)
        s = k + alpha * sum(x[:, j] ** 2 for j in range(lo, hi + 1))
        out.append(x[:, i] / s ** beta)
    return torch.stack(out, 1)


def activations(shape=(2, 12, 5, 6), scale=40.0, seed=0, channels_last=False):
    """ReLU-like inputs large enough that the window sum matters (alpha * sum ~ k)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * scale).relu()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def assert_close_rel(actual, expected, rtol=1e-5):
    """Elementwise relative agreement; entries near zero get 1e-7 of the largest as slack."""
    torch.testing.assert_close(actual.double(), expected, rtol=rtol,
                               atol=1e-7 * expected.abs().max().item())


def forward_backward(x, fn, grad):
    x = x.detach().requires_grad_(True)
    y = fn(x)
    y.backward(grad)
    return y.detach(), x.grad


needs_kernel = pytest.mark.skipif(lrn_module.load_kernel() is None,
                                  reason="no C compiler: the kernel falls back to the reference")


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck_float64(groups, channels_last):
    x = activations((2, 8, 3, 4), scale=60.0, channels_last=channels_last).double()
    assert lrn_backend(x) == "analytic"
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: lrn(t, groups=groups, **PAPER), (x,))


@pytest.mark.parametrize("params", [PAPER, dict(size=3, alpha=2e-3, beta=0.5, k=1.0),
                                    dict(size=4, alpha=1e-3, beta=0.75, k=2.0)])
def test_float64_analytic_matches_formula(params):
    # The analytic backward against autograd through the independent formula.
    x = activations((2, 10, 3, 3)).double()
    grad = torch.randn(x.shape, dtype=torch.float64)
    y, dx = forward_backward(x, lambda t: lrn(t, groups=2, **params), grad)
    y_ref, dx_ref = forward_backward(x, lambda t: formula(t, groups=2, **params), grad)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-10, atol=1e-14)


@needs_kernel
@pytest.mark.parametrize("shape,groups", [((3, 96, 7, 9), 2), ((2, 20, 4, 5), 1),
                                          ((2, 12, 3, 3), 4), ((1, 256, 2, 3), 2),
                                          ((2, 7, 65, 3), 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_float32_kernel_matches_float64_formula(shape, groups, channels_last):
    x = activations(shape, channels_last=channels_last)
    assert lrn_backend(x) == "kernel"
    grad = torch.randn(shape)
    y, dx = forward_backward(x, lambda t: lrn(t, groups=groups, **PAPER), grad)
    y_ref, dx_ref = forward_backward(x.double(), lambda t: formula(t, groups=groups), grad.double())
    assert y.dtype == dx.dtype == torch.float32
    # 1e-5 relative, elementwise; atol only for entries that are (near) zero
    assert_close_rel(y, y_ref)
    assert_close_rel(dx, dx_ref)


@needs_kernel
@pytest.mark.parametrize("params", [dict(size=3, alpha=2e-3, beta=0.5, k=1.0),
                                    dict(size=1, alpha=1e-2, beta=0.75, k=1.0),
                                    dict(size=6, alpha=1e-3, beta=1.0, k=2.0)])
def test_float32_kernel_other_hyperparameters(params):
    x = activations((2, 16, 5, 5), channels_last=True)
    grad = torch.randn(x.shape)
    y, dx = forward_backward(x, lambda t: lrn(t, groups=2, **params), grad)
    y_ref, dx_ref = forward_backward(x.double(), lambda t: formula(t, groups=2, **params),
                                     grad.double())
    assert_close_rel(y, y_ref)
    assert_close_rel(dx, dx_ref)


@needs_kernel
@pytest.mark.parametrize("channels_last", [False, True])
def test_bfloat16_kernel(channels_last):
    x = activations((2, 96, 6, 7), channels_last=channels_last).bfloat16()
    grad = torch.randn(x.shape).bfloat16()
    y, dx = forward_backward(x, lambda t: lrn(t, groups=2), grad)
    assert y.dtype == dx.dtype == torch.bfloat16
    y_ref, dx_ref = forward_backward(x.double(), lambda t: formula(t, groups=2), grad.double())
    # one bf16 rounding of the result: 2^-8 relative
    torch.testing.assert_close(y.double(), y_ref, rtol=2 ** -8, atol=1e-3)
    torch.testing.assert_close(dx.double(), dx_ref, rtol=2 ** -7,
                               atol=2 ** -8 * dx_ref.abs().max().item())
    # The kernel computes in fp32 either way; bf16 storage must round as torch does (to nearest
    # even), so it equals the fp32 kernel's result rounded by torch, bit for bit.
    y32, dx32 = forward_backward(x.float(), lambda t: lrn(t, groups=2), grad.float())
    assert torch.equal(y, y32.bfloat16())
    assert torch.equal(dx, dx32.bfloat16())


@pytest.mark.parametrize("make", [
    lambda x: x.contiguous(memory_format=torch.channels_last),
    lambda x: x[:, :, ::2, 1:],                                      # strided view
    lambda x: x.permute(0, 1, 3, 2),                                 # transposed view
    lambda x: x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)[:, :, :, :4],
])
def test_layouts_and_views(make):
    base = activations((2, 12, 6, 6))
    x = make(base)
    grad = torch.randn(x.shape)
    y, dx = forward_backward(x, lambda t: lrn(t, groups=2), grad)
    y_ref, dx_ref = forward_backward(x.contiguous(), lambda t: formula(t, groups=2), grad)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dx.double(), dx_ref.double(), rtol=1e-5, atol=1e-6)


def test_channels_last_is_preserved():
    x = activations((2, 16, 5, 5), channels_last=True)
    assert lrn(x).is_contiguous(memory_format=torch.channels_last)
    assert lrn(x.contiguous()).is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_groups_keep_towers_apart(dtype):
    # Paper: each GPU normalises its own 48 kernel maps; channel 47 never sees channel 48.
    x = activations((1, 96, 3, 3)).to(dtype)
    bumped = x.clone()
    bumped[:, 48:50] += 1000.0
    y, y_bumped = lrn(x, groups=2), lrn(bumped, groups=2)
    assert torch.equal(y[:, :48], y_bumped[:, :48])
    assert not torch.allclose(y[:, 50:52], y_bumped[:, 50:52])      # inside the tower it does
    x = x.clone().requires_grad_(True)
    lrn(x, groups=2)[:, 47].sum().backward()
    assert torch.all(x.grad[:, 48:] == 0) and torch.any(x.grad[:, 45:47] != 0)
    # ...while with one group the window does cross 47/48
    assert not torch.allclose(lrn(x.detach(), groups=1)[:, 47], lrn(bumped, groups=1)[:, 47])


@pytest.mark.parametrize("size", [3, 5])
def test_torch_lrn_is_alpha_times_mean(size):
    # torch's LocalResponseNorm divides alpha by the window size: alpha_torch = alpha * n.
    x = activations((2, 16, 4, 4))
    ours = LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=2.0)(x)
    theirs = nn.LocalResponseNorm(size, alpha=1e-4 * size, beta=0.75, k=2.0)(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    naive = nn.LocalResponseNorm(size, alpha=1e-4, beta=0.75, k=2.0)(x)
    assert not torch.allclose(ours, naive, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fallback_equals_fast_path(monkeypatch, dtype):
    x = activations((2, 96, 5, 5), channels_last=True).to(dtype)
    grad = torch.randn(x.shape).to(dtype)
    fast = forward_backward(x, lambda t: lrn(t, groups=2), grad)
    monkeypatch.setenv("ALEXNET_LRN", "reference")
    assert lrn_backend(x) == "reference"
    slow = forward_backward(x, lambda t: lrn(t, groups=2), grad)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2 ** -7, atol=1e-2)
    for a, b in zip(fast, slow):
        assert a.dtype == b.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), **tol)


def test_a_misspelt_backend_is_an_error_not_the_default(monkeypatch):
    monkeypatch.setenv("ALEXNET_LRN", "refrence")
    with pytest.raises(AlexNetError, match="ALEXNET_LRN='refrence'"):
        lrn_backend(torch.zeros(1, 4, 2, 2))


def test_a_misspelt_backend_is_not_blamed_on_a_flag_or_a_checkpoint(monkeypatch, tmp_path,
                                                                    capsys):
    """summary called it an --input-size that does not fit, and loading a checkpoint a crop_size
    that does not fit its network."""
    from alexnet.checkpoint import model_from_checkpoint
    from alexnet.cli import main
    from alexnet.weights import torchvision_checkpoint
    from torchvision.models import alexnet as tv_alexnet
    monkeypatch.setenv("ALEXNET_LRN", "refrence")
    assert main(["summary"]) == 2
    err = capsys.readouterr().err
    assert err == "alexnet: error: ALEXNET_LRN='refrence': the only value is 'reference' (or " \
                  "unset)\n", err
    ckpt = torchvision_checkpoint(tv_alexnet(num_classes=10).state_dict())
    ckpt["arch"] = {**ckpt["arch"], "variant": "paper"}  # with LRN
    with pytest.raises(AlexNetError) as caught:
        model_from_checkpoint(ckpt)
    assert str(caught.value).startswith("ALEXNET_LRN='refrence'")


def test_no_compiler_falls_back(monkeypatch):
    monkeypatch.setattr(lrn_module._library, "lib", None)  # restored after the test
    monkeypatch.setattr(lrn_module._library, "error", None)
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert lrn_module.load_kernel() is None
    assert "no C compiler" in lrn_module.kernel_error()
    x = activations()
    assert lrn_backend(x) == "reference"
    torch.testing.assert_close(lrn(x, groups=2).double(), formula(x, groups=2), rtol=1e-5,
                               atol=1e-6)


@needs_kernel
def test_kernel_is_cached_in_alexnet_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(lrn_module._library, "lib", None)  # restored after the test
    monkeypatch.setattr(lrn_module._library, "error", None)
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    assert lrn_module.load_kernel() is not None
    built = list(tmp_path.glob("lrn-*.so"))
    assert len(built) == 1 and not list(tmp_path.glob(".*.tmp"))  # renamed into place


@needs_kernel
@pytest.mark.parametrize("tamper", ["world-writable", "someone else's"])
def test_a_planted_kernel_is_not_loaded(tmp_path, monkeypatch, tamper):
    monkeypatch.setattr(lrn_module._library, "lib", None)  # restored after the test
    monkeypatch.setattr(lrn_module._library, "error", None)
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    assert lrn_module.load_kernel() is not None
    (lib,) = tmp_path.glob("lrn-*.so")
    if tamper == "world-writable":
        lib.chmod(0o777)
    else:
        if os.getuid() != 0:
            pytest.skip("only root can give a file to another user")
        os.chown(lib, 65534, -1)
    monkeypatch.setattr(lrn_module._library, "lib", None)  # restored after the test
    monkeypatch.setattr(lrn_module._library, "error", None)
    assert lrn_module.load_kernel() is None
    assert "refusing to load" in lrn_module.kernel_error()
    assert lrn_backend(activations()) == "reference"  # the formula still runs


def test_autocast_cpu_keeps_input_dtype():
    conv = nn.Conv2d(3, 8, 3)
    norm = LocalResponseNorm(groups=2)
    x = torch.randn(2, 3, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x).relu()
        y = norm(h)
    assert h.dtype == y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):     # an fp32 input stays fp32
        assert norm(activations((1, 8, 3, 3))).dtype == torch.float32


def test_float16_and_reference_dtype():
    x = activations((1, 8, 3, 3)).half()
    assert lrn_backend(x) == "reference"
    y = lrn(x, groups=2)
    assert y.dtype == torch.float16
    torch.testing.assert_close(y.double(), formula(x, groups=2), rtol=2 ** -10, atol=1e-3)


def test_bad_shapes():
    with pytest.raises(ValueError, match="divisible"):
        lrn(torch.ones(1, 6, 2, 2), groups=4)
    with pytest.raises(ValueError, match="N, C, H, W"):
        lrn(torch.ones(6, 2, 2))
    with pytest.raises(ValueError):
        LocalResponseNorm(size=0)


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), LocalResponseNorm(groups=2),
                         nn.Conv2d(8, 4, 3), nn.ReLU(), LocalResponseNorm(), nn.Flatten(),
                         nn.LazyLinear(5))


def _compiled_matches_eager(model, x, **compile_kwargs):
    model(x)  # materialise lazy layers
    eager_y = model(x)
    eager_y.sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, **compile_kwargs)
    y = compiled(x)
    y.sum().backward()
    torch.testing.assert_close(y, eager_y, rtol=1e-4, atol=1e-5)
    for p, g in zip(model.parameters(), eager_grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)


def test_compile_traces_the_custom_op():
    # Fast: dynamo + fake tensors + AOT autograd over the custom op (what can break), no codegen.
    torch._dynamo.reset()
    x = torch.randn(2, 3, 10, 10).contiguous(memory_format=torch.channels_last)
    _compiled_matches_eager(_small_net(), x, backend="aot_eager", fullgraph=True)


@pytest.mark.slow
def test_compile_paper_model_matches_eager():
    from alexnet.model import alexnet
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10, dropout=0.0).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 227, 227).contiguous(memory_format=torch.channels_last)
    _compiled_matches_eager(model, x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype):
    x = activations((2, 96, 6, 6)).cuda().requires_grad_(True)
    with torch.autocast("cuda", dtype=dtype):
        y = LocalResponseNorm(groups=2)(x.to(dtype))
    assert y.dtype == dtype
    y.float().sum().backward()
    torch.testing.assert_close(y.double().cpu(), formula(x.detach().to(dtype).cpu(), groups=2),
                               rtol=1e-2, atol=1e-2)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("groups", [1, 2, 4])
def test_channels_last_groups_of_16_match_formula(dtype, groups):
    # 64 channels: groups of 64, 32 and 16, what the AVX-512 path of csrc/lrn.c takes (where the
    # CPU has it; elsewhere the general loops). Windows must stop at group edges; a NaN spreads
    # only to its own window.
    x = activations((2, 64, 3, 5), channels_last=True)
    x[1, 20, 1, 2] = float("nan")
    x = x.to(dtype)
    grad = torch.randn(x.shape).to(dtype)
    y, dx = forward_backward(x, lambda t: lrn(t, groups=groups), grad)
    y_ref, dx_ref = forward_backward(x.double(), lambda t: formula(t, groups=groups),
                                     grad.double())
    assert torch.equal(y.isnan(), y_ref.isnan()) and torch.equal(dx.isnan(), dx_ref.isnan())
    ok = ~dx_ref.isnan()
    rtol = 1e-5 if dtype == torch.float32 else 2 ** -7
    torch.testing.assert_close(y.double()[ok], y_ref[ok], rtol=rtol, atol=1e-7 * 300)
    torch.testing.assert_close(dx.double()[ok], dx_ref[ok], rtol=rtol * 2,
                               atol=2 ** -8 * dx_ref[ok].abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape,channels_last", [((2, 64, 3, 5), True), ((2, 64, 3, 5), False),
                                                 ((2, 12, 4, 3), True)])
@pytest.mark.parametrize("reference", [False, True])
def test_relu_fused_equals_relu_then_lrn(monkeypatch, dtype, shape, channels_last, reference):
    # lrn(x, relu=True) is LRN(ReLU(x)) with ReLU's backward inside: on every path (the kernel's
    # general loops, its AVX-512 path, float64's analytic op, the reference) it must give what
    # ReLU and LRN give one after the other, bit for bit, NaN included.
    if reference:
        monkeypatch.setenv("ALEXNET_LRN", "reference")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(shape, generator=g) * 40  # half negative: ReLU's zeros matter
    x[0, 5, 1, 1] = float("nan")
    x = x.to(dtype).contiguous(memory_format=torch.channels_last if channels_last
                               else torch.contiguous_format)
    grad = torch.randn(shape, generator=g).to(dtype)
    fused = forward_backward(x, lambda t: lrn(t, groups=2, relu=True), grad)
    apart = forward_backward(x, lambda t: lrn(t.relu(), groups=2), grad)
    for a, b in zip(fused, apart):
        assert a.dtype == b.dtype == dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@needs_kernel
@pytest.mark.parametrize("channels_last", [False, True])
def test_a_nan_or_inf_stays_in_its_own_group(channels_last):
    # Channel 15 is the last of group 0: its NaN (or inf) must not reach channels 16-17 of group 1,
    # whose windows stop at the group edge (the kernel once weighted it by 0, and 0 * NaN is NaN).
    for bad in (float("nan"), float("inf")):
        x = activations((1, 32, 2, 3), channels_last=channels_last)
        x[0, 15, 1, 2] = bad
        y, dx = forward_backward(x, lambda t: lrn(t, groups=2), torch.ones(x.shape))
        y_ref, _ = forward_backward(x.double(), lambda t: formula(t, groups=2),
                                    torch.ones(x.shape, dtype=torch.float64))
        assert torch.isfinite(y[0, 16:]).all() and torch.isfinite(dx[0, 16:]).all()
        assert_close_rel(y[:, 16:], y_ref[:, 16:])


def _both_paths(x, grad, relu=False):
    """[(y, dx) of the kernel as built here, (y, dx) of its general loops]: the same source built
    with -mno-avx512f, so that where the CPU has AVX-512 the two paths are compared."""
    general = native.build("lrn", ("-mno-avx512f",))
    lrn_module._declare(general)
    results = []
    for lib in (lrn_module.load_kernel(), general):
        y, dx = torch.empty_like(x), torch.empty_like(x)
        lrn_module._call(lib.lrn_forward, x, None, y, 5, 1e-4, 0.75, 2.0, 2, relu)
        lrn_module._call(lib.lrn_backward, x, grad, dx, 5, 1e-4, 0.75, 2.0, 2, relu)
        results.append((y, dx))
    return results


@needs_kernel
@needs_avx512
def test_an_overflowing_window_gives_what_the_general_loops_give():
    # a^2 overflows float32 above ~1.8e19, and s becomes inf: the general loops then give 0 for a
    # finite a and NaN for an infinite one. The AVX-512 path's Newton step must not make that NaN
    # (or, with s clamped, a value growing with a).
    x = activations((1, 32, 2, 3), channels_last=True)
    for k, big in enumerate((1e20, 1e25, 1e30, 3e38, float("inf"))):
        x[0, 4 + k, 1, k % 3] = big
    grad = torch.ones(x.shape).contiguous(memory_format=torch.channels_last)
    (y, dx), (y_gen, dx_gen) = _both_paths(x, grad)
    torch.testing.assert_close(y, y_gen, rtol=4e-6, atol=1e-30, equal_nan=True)
    torch.testing.assert_close(dx, dx_gen, rtol=4e-6, atol=1e-30, equal_nan=True)
    assert y[0, 4, 1, 0] == 0  # the formula's 1e-7 is below what float32 gets here


@needs_kernel
@needs_avx512
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu", [False, True])
def test_avx512_path_and_general_loops_agree(dtype, relu):
    # Where the compiler targets AVX-512, the paper's layer in channels_last takes csrc/lrn.c's
    # hand-vectorised path; the same source built without AVX-512 runs the general loops. Both
    # must give the same numbers to within their roundings (elsewhere both are the general loops).
    x = (activations((2, 96, 5, 7), channels_last=True) - 10).to(dtype)  # negatives for the ReLU
    grad = torch.randn(x.shape).to(dtype).contiguous(memory_format=torch.channels_last)
    results = _both_paths(x, grad, relu)
    rtol = 4e-6 if dtype == torch.float32 else 2 ** -7
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * b.abs().max().item())
