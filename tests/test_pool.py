"""Max pooling on csrc/pool.c (pool.py) against torch's max_pool2d."""
import pytest
import torch
import torch.nn.functional as F

from alexnet import native, pool
from alexnet.model import alexnet
from alexnet.pool import MaxPool2d
from conftest import needs_avx512

CL = torch.channels_last


def _both(x, k, s):
    """(ours, torch's): outputs and input gradients for one upstream gradient."""
    ours = x.detach().clone().requires_grad_()
    ref = x.detach().clone().requires_grad_()
    y, y_ref = MaxPool2d(k, s)(ours), F.max_pool2d(ref, k, s)
    g = torch.randn(y_ref.shape, dtype=x.dtype).contiguous(memory_format=CL)
    y.backward(g)
    y_ref.backward(g)
    return (y, ours.grad), (y_ref, ref.grad)


# (channels, size, kernel, stride): the paper's three pools, non-overlapping 2/2, a size the
# windows do not fill (pixels no window covers get 0), and channel counts off any vector width.
SHAPES = [(96, 55, 3, 2), (256, 27, 3, 2), (256, 13, 3, 2), (16, 12, 2, 2), (5, 10, 3, 2),
          (17, 9, 3, 3), (3, 7, 4, 1)]


@pytest.mark.parametrize("c,size,k,s", SHAPES)
def test_float32_equals_torch_bit_for_bit(c, size, k, s):
    # Rounded to a few values, so that ties (the first maximum wins) and pixels that win several
    # overlapping windows (their gradients add up) both happen often.
    x = (torch.randn(2, c, size, size) * 2).round().contiguous(memory_format=CL)
    (y, gx), (y_ref, gx_ref) = _both(x, k, s)
    assert y.is_contiguous(memory_format=CL) and gx.is_contiguous(memory_format=CL)
    assert torch.equal(y, y_ref) and torch.equal(gx, gx_ref)


def test_the_kernel_is_what_ran():
    x = torch.randn(1, 8, 9, 9).contiguous(memory_format=CL).requires_grad_()
    y = MaxPool2d(3, 2)(x)
    assert "max_pool" in y.grad_fn.name().lower() and "WithIndices" not in y.grad_fn.name()
    assert pool.kernel_error() is None


def test_bfloat16_against_float64():
    """bf16: the output is an input value (exact); the gradient is the float64 sum rounded once."""
    x = torch.randn(2, 96, 27, 27).round().to(torch.bfloat16).contiguous(memory_format=CL)
    (y, _), (y_ref, _) = _both(x, 3, 2)
    assert torch.equal(y, y_ref)
    x64 = x.double().requires_grad_()
    ours = x.detach().clone().requires_grad_()
    g = torch.randn(y.shape).to(torch.bfloat16).contiguous(memory_format=CL)
    MaxPool2d(3, 2)(ours).backward(g)
    F.max_pool2d(x64, 3, 2).backward(g.double())
    assert torch.equal(ours.grad, x64.grad.to(torch.bfloat16))


@needs_avx512
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("c,size,k,s", [(16, 13, 3, 2), (96, 13, 3, 2), (32, 25, 12, 5),
                                        (256, 13, 3, 4)])  # window positions past 127; s > k
def test_the_16_channel_rows_and_the_general_loops_agree_bit_for_bit(dtype, c, size, k, s):
    # Where the compiler targets AVX-512, channel counts that are multiples of 16 take pool.h's
    # 16-channel rows (also inside LRN with pooling); the same source built with -mno-avx512f
    # runs the general loops. Ties, NaN, inf, -0.0 and denormals included (the CPU's own bf16
    # conversion reads denormals as zero: store16 must not use it for them). NaN gradients are
    # not: which NaN's bits a sum keeps is the compiler's choice (below).
    general = native.build("pool", ("-mno-avx512f",))
    pool._declare(general)
    x = (torch.randn(2, c, size, size) * 2).round()
    x[0, 3, 2, 2], x[0, 5, 4, 1], x[1, 7, 0, 0], x[1, 9, 6, 6] = float("nan"), float("inf"), \
        -0.0, float("-inf")
    x[1, 2] = -1.0
    x[1, 2, 4, 4] = 1e-39  # a maximum that is a denormal
    x = x.to(dtype).contiguous(memory_format=CL)
    out = (size - k) // s + 1
    grad = torch.randn(2, c, out, out).round().to(dtype).contiguous(memory_format=CL)
    grad[0, 1, 0, 0], grad[1, 4] = -0.0, 3e-39  # sums of denormals
    results = []
    for lib in (pool._library.load(), general):
        y, arg = pool.empty_pooled(x, k, s)
        pool._call(lib.maxpool_forward, x, arg, y, x.shape, k, s)
        dx = torch.empty_like(x)
        pool._call(lib.maxpool_backward, grad, arg, dx, x.shape, k, s)
        bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
        results.append((y.view(bits), arg, dx.view(bits)))
    for ours, theirs in zip(*results):
        assert torch.equal(ours, theirs)


def test_nan_gradients_that_meet_give_nan():
    # Two outputs choose the same input and both gradients are NaNs with other bits. Their sum is
    # NaN; which NaN's bits it keeps is the compiler's choice of operand order (x86 returns the
    # first NaN operand), in torch's kernels as in ours, so only NaN-ness is asserted.
    x = torch.zeros(1, 16, 3, 2)
    x[:, :, 1, 0] = 1.0
    for dtype, bits, nans in ((torch.float32, torch.int32, [0x7FC00000, -0x00400000]),
                              (torch.bfloat16, torch.int16, [0x7FC0, -0x0040])):
        grad = torch.tensor(nans, dtype=bits).view(dtype).reshape(1, 1, 2, 1).expand(1, 16, 2, 1)
        ours = x.to(dtype).contiguous(memory_format=CL).requires_grad_()
        MaxPool2d(2, 1)(ours).backward(grad.contiguous(memory_format=CL))
        assert ours.grad[0, :, 1, 0].isnan().all() and (ours.grad[0, :, 0, 0] == 0).all()


def test_denormals_pass_through_with_denormals_flushed():
    # With torch.set_flush_denormal(True) (MXCSR's DAZ and FTZ), a bf16 maximum that is a
    # denormal is still the input's value, as in torch: store16 must not take the CPU's
    # conversion (which reads it as 0) for it.
    x = torch.full((1, 16, 3, 3), -1.0)
    x[0, :, 1, 1] = 1e-39
    x = x.to(torch.bfloat16).contiguous(memory_format=CL)
    flushed = torch.set_flush_denormal(True)
    try:
        y = MaxPool2d(3, 2)(x)
        y_ref = F.max_pool2d(x, 3, 2)
    finally:
        torch.set_flush_denormal(False)
    assert flushed  # the mode exists on this CPU, else the test shows nothing
    assert torch.equal(y.view(torch.int16), y_ref.view(torch.int16))
    assert y.view(torch.int16).ne(0).all()


def test_nan_propagates_as_in_torch():
    x = torch.randn(1, 16, 7, 7)
    x[0, 3, 2, 2] = float("nan")
    x[0, 5, 4, 1] = float("inf")
    x = x.contiguous(memory_format=CL)
    (y, gx), (y_ref, gx_ref) = _both(x, 3, 2)
    assert torch.equal(y.isnan(), y_ref.isnan()) and y.isnan().any()
    assert torch.equal(y.nan_to_num(), y_ref.nan_to_num())
    assert torch.equal(gx, gx_ref)


def test_falls_back_to_torch_where_the_kernel_does_not_apply():
    x = torch.randn(2, 8, 9, 9)  # NCHW
    for module in (MaxPool2d(3, 2), MaxPool2d(3, 2, padding=1), MaxPool2d(3, 2, ceil_mode=True)):
        ref = torch.nn.MaxPool2d(module.kernel_size, module.stride, module.padding,
                                 ceil_mode=module.ceil_mode)
        assert torch.equal(module(x), ref(x))
    y = MaxPool2d(3, 2, padding=1)(x.contiguous(memory_format=CL).requires_grad_())
    assert "WithIndices" in y.grad_fn.name()


def test_paper_net_uses_it_and_trains_the_same():
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10, dropout=0.0).to(memory_format=CL)
    assert isinstance(model.features.pool1, MaxPool2d)
    x = torch.randn(2, 3, 227, 227).contiguous(memory_format=CL)
    y = model(x)
    y.square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for name in ("pool1", "pool2", "pool5"):  # torch's pooling in their place
        setattr(model.features, name, torch.nn.MaxPool2d(3, 2))
    y_ref = model(x)
    y_ref.square().sum().backward()
    assert torch.equal(y, y_ref)
    for n, p in model.named_parameters():
        assert torch.equal(grads[n], p.grad), n


def test_compiles():
    x = torch.randn(2, 8, 9, 9).contiguous(memory_format=CL).requires_grad_()
    compiled = torch.compile(MaxPool2d(3, 2), backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), F.max_pool2d(x, 3, 2), rtol=0, atol=0)


def test_double_backward_forward_ad_and_vmap_as_torchs():
    """What nn.MaxPool2d supports keeps working: a double backward (the backward then runs in
    differentiable tensor ops), forward-mode AD and torch.func.vmap (torch's pooling runs)."""
    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64).float().contiguous(memory_format=CL)
    grads = []
    for module in (MaxPool2d(3, 2), torch.nn.MaxPool2d(3, 2)):
        leaf = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(module(leaf).square().sum(), leaf, create_graph=True)
        (gg,) = torch.autograd.grad(g.square().sum(), leaf)
        grads.append((g.detach(), gg))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])
    tangent = torch.randn_like(x)
    with torch.autograd.forward_ad.dual_level():
        out = MaxPool2d(3, 2)(torch.autograd.forward_ad.make_dual(x, tangent))
        jvp = torch.autograd.forward_ad.unpack_dual(out).tangent
    assert jvp is not None and torch.equal(jvp, torch.func.jvp(
        lambda t: F.max_pool2d(t, 3, 2), (x,), (tangent,))[1])
    batched = torch.func.vmap(MaxPool2d(3, 2))(x.unsqueeze(1).expand(2, 3, 4, 9, 9))
    assert torch.equal(batched[:, 0], F.max_pool2d(x, 3, 2))


def test_the_backward_op_refuses_an_argmax_of_another_shape():
    grad = torch.randn(1, 4, 4, 4).contiguous(memory_format=CL)
    with pytest.raises(ValueError, match="does not fit"):
        torch.ops.alexnet.max_pool_backward(grad, torch.zeros(1, 4, 3, 3, dtype=torch.uint8),
                                            9, 9, 3, 2)
