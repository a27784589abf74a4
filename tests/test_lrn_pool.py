"""LRN then max pooling in one pass (lrn.lrn_pool, csrc/lrn.c) against the two ops in turn."""
import pytest
import torch

from alexnet import lrn as lrn_module
from alexnet.lrn import lrn, lrn_pool
from alexnet.pool import MaxPool2d

CL = torch.channels_last
needs_kernel = pytest.mark.skipif(lrn_module.load_kernel() is None, reason="no C compiler")


def _apart_and_fused(x, grad, size, beta, groups, relu, pool):
    results = []
    for fused in (False, True):
        leaf = x.detach().clone().requires_grad_()
        if fused:
            y = lrn_pool(leaf, size, 1e-4, beta, 2.0, groups, relu, pool)
        else:
            y = pool(lrn(leaf, size, 1e-4, beta, 2.0, groups, relu))
        y.backward(grad)
        results.append((y, leaf.grad))
    return results


# (n, c, h, w, groups, size, beta, pool k, pool s): the paper's pool1 and pool2 shapes (the
# AVX-512 path where there is one), batch 1 (the image split in bands), channel counts and
# settings that take the general loops, non-square images, and non-overlapping pooling.
CASES = [(2, 96, 55, 55, 2, 5, 0.75, 3, 2), (2, 256, 27, 27, 2, 5, 0.75, 3, 2),
         (1, 96, 31, 29, 2, 5, 0.75, 3, 2), (3, 20, 9, 13, 2, 5, 0.75, 3, 2),
         (2, 12, 11, 11, 1, 4, 0.6, 3, 2), (2, 32, 12, 12, 1, 5, 0.75, 2, 2)]


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("n,c,h,w,groups,size,beta,pk,ps", CASES)
def test_fused_equals_apart_bit_for_bit(dtype, relu, n, c, h, w, groups, size, beta, pk, ps):
    g = torch.Generator().manual_seed(c * h + w)
    x = (torch.randn(n, c, h, w, generator=g) * 40).round().to(dtype).contiguous(memory_format=CL)
    pool = MaxPool2d(pk, ps)
    grad = torch.randn(pool(x).shape, generator=g).to(dtype).contiguous(memory_format=CL)
    (y, dx), (y_fused, dx_fused) = _apart_and_fused(x, grad, size, beta, groups, relu, pool)
    assert y_fused.is_contiguous(memory_format=CL) and dx_fused.is_contiguous(memory_format=CL)
    assert torch.equal(y, y_fused) and torch.equal(dx, dx_fused)


@needs_kernel
def test_the_fused_op_is_what_ran_and_nan_stays_put(monkeypatch):
    calls = []
    real = lrn_module._lrn_pool_op
    monkeypatch.setattr(lrn_module, "_lrn_pool_op", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(1, 32, 9, 9) * 40
    x[0, 3, 4, 4] = float("nan")
    x = x.contiguous(memory_format=CL)
    grad = torch.ones(1, 32, 4, 4).contiguous(memory_format=CL)
    (y, dx), (y_fused, dx_fused) = _apart_and_fused(x, grad, 5, 0.75, 2, True, MaxPool2d(3, 2))
    assert calls == [1]
    assert torch.equal(y.isnan(), y_fused.isnan()) and y.isnan().any()
    assert torch.equal(y.nan_to_num(), y_fused.nan_to_num())
    assert torch.equal(dx.isnan(), dx_fused.isnan())
    assert torch.equal(dx.nan_to_num(), dx_fused.nan_to_num())


def test_where_the_kernels_do_not_run_it_is_the_two_ops():
    pool = MaxPool2d(3, 2)
    for x in (torch.randn(2, 8, 9, 9),                                   # NCHW
              torch.randn(2, 8, 9, 9, dtype=torch.float64).contiguous(memory_format=CL)):
        assert torch.equal(lrn_pool(x, 5, 1e-4, 0.75, 2.0, 2, True, pool),
                           pool(lrn(x, 5, 1e-4, 0.75, 2.0, 2, True)))
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=CL)
    padded = MaxPool2d(3, 2, padding=1)
    assert torch.equal(lrn_pool(x, 5, 1e-4, 0.75, 2.0, 2, False, padded),
                       padded(lrn(x, 5, 1e-4, 0.75, 2.0, 2)))


@needs_kernel
def test_compiles():
    x = (torch.randn(2, 32, 9, 9) * 40).contiguous(memory_format=CL).requires_grad_()
    pool = MaxPool2d(3, 2)

    def f(t):
        return lrn_pool(t, 5, 1e-4, 0.75, 2.0, 2, True, pool)
    y = torch.compile(f, backend="eager", fullgraph=True)(x)
    assert torch.equal(y, f(x))


def test_only_our_unwatched_pooling_is_fused(monkeypatch):
    # torch's own nn.MaxPool2d rounds bf16 gradients its own way, and a hook must see the
    # pooling's call: both run apart (a review found them fused)
    calls = []
    real = lrn_module._lrn_pool_op
    monkeypatch.setattr(lrn_module, "_lrn_pool_op", lambda *a: calls.append(1) or real(*a))
    x = (torch.randn(2, 32, 13, 13) * 40).contiguous(memory_format=CL)
    torchs = torch.nn.MaxPool2d(3, 2)
    assert torch.equal(lrn_pool(x, 5, 1e-4, 0.75, 2.0, 2, True, torchs),
                       torchs(lrn(x, 5, 1e-4, 0.75, 2.0, 2, True)))
    watched, seen = MaxPool2d(3, 2), []
    watched.register_forward_hook(lambda m, i, o: seen.append(o))
    y = lrn_pool(x, 5, 1e-4, 0.75, 2.0, 2, True, watched)
    assert calls == [] and len(seen) == 1 and torch.equal(seen[0], y)


def test_vmap_and_forward_ad_take_the_tensor_ops():
    # torch.func transforms and forward-mode AD have no rules for the custom ops: LRN and the
    # pooling run as tensor ops there (vmap used to fail on a layout question inside lrn_pool)
    pool = MaxPool2d(3, 2)
    x = (torch.randn(2, 1, 32, 9, 9) * 40).relu()

    def f(t):
        return lrn_pool(t, 5, 1e-4, 0.75, 2.0, 2, False, pool)
    batched = torch.func.vmap(f)(x)
    torch.testing.assert_close(batched[:, 0], f(x[:, 0]), rtol=1e-5, atol=1e-5)
    tangent = torch.randn_like(x[:, 0])
    _, jvp = torch.func.jvp(lambda t: lrn(t, 5, 1e-4, 0.75, 2.0, 2), (x[:, 0],), (tangent,))
    eps = 1e-3  # against a finite difference in float64
    x64, t64 = x[:, 0].double(), tangent.double()
    fd = (lrn(x64 + eps * t64, 5, 1e-4, 0.75, 2.0, 2) - lrn(x64 - eps * t64, 5, 1e-4, 0.75, 2.0,
                                                             2)) / (2 * eps)
    assert jvp.abs().max() > 0
    torch.testing.assert_close(jvp.double(), fd, rtol=1e-3, atol=1e-4)


@needs_kernel
def test_an_empty_batch():
    x = torch.empty(0, 32, 9, 9).contiguous(memory_format=CL).requires_grad_()
    y = lrn_pool(x, 5, 1e-4, 0.75, 2.0, 2, True, MaxPool2d(3, 2))
    assert y.shape == (0, 32, 4, 4)
    y.sum().backward()
    assert x.grad.shape == x.shape
    # and the C entry point itself, which the op does not call for no images: returns 0
    arg = torch.empty(0, 32, 4, 4, dtype=torch.uint8)
    assert lrn_module.load_kernel().lrn_pool_forward(
        0, x.data_ptr(), arg.data_ptr(), y.data_ptr(), 0, 32, 9, 9, 2, 5, 1e-4, 0.75, 2.0, 1,
        3, 2, 2) == 0
