"""conv1's weight gradient by space-to-depth (stem.py) against torch's own convolution."""
import pytest
import torch
from torch import nn

from alexnet import stem
from alexnet.model import alexnet
from alexnet.stem import StemConv2d, input_to_depth, weight_from_depth, weight_to_depth


def _pair(k, s, p, c=3, o=8):
    torch.manual_seed(0)
    conv = StemConv2d(c, o, k, stride=s, padding=p).double()
    ref = nn.Conv2d(c, o, k, stride=s, padding=p).double()
    ref.load_state_dict(conv.state_dict())
    conv.space_to_depth_grad = True
    return conv, ref


# (kernel, stride, padding, input size): the paper's conv1, torchvision's, an input that does not
# fill its last block, one that is cropped (230: rows past the last window), and k = s.
@pytest.mark.parametrize("k,s,p,size", [(11, 4, 0, 227), (11, 4, 2, 224), (5, 2, 1, 31),
                                        (11, 4, 0, 230), (4, 4, 0, 16)])
def test_gradients_equal_torchs_in_float64(k, s, p, size):
    conv, ref = _pair(k, s, p)
    x = torch.randn(2, 3, size, size, dtype=torch.float64, requires_grad=True)
    y, y_ref = conv(x), ref(x)
    assert torch.equal(y, y_ref)  # the forward is torch's own
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, conv.weight, conv.bias), g)
    want = torch.autograd.grad(y_ref, (x, ref.weight, ref.bias), g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_rearrangement_by_hand():
    """One kernel tap and one pixel, placed where the docstring says: channel (a·s + b)·C + c of
    block (i, j) holds the kernel's (s·i + a, s·j + b) of channel c, and likewise the input's."""
    w = torch.zeros(1, 3, 11, 11)
    w[0, 2, 9, 6] = 1.0  # i, a = divmod(9, 4) = (2, 1); j, b = divmod(6, 4) = (1, 2)
    wd = weight_to_depth(w, 4)
    assert wd.shape == (1, 48, 3, 3)
    assert wd[0, (1 * 4 + 2) * 3 + 2, 2, 1] == 1.0 and wd.sum() == 1.0
    assert torch.equal(weight_from_depth(wd, 3, 11, 4), w)
    x = torch.zeros(1, 3, 227, 227)
    x[0, 1, 13, 226] = 1.0  # the last column: block 56, b = 2 (column 227 is the padding)
    xd = input_to_depth(x, 11, 4, 0, (55, 55))
    assert xd.shape == (1, 48, 57, 57) and xd.is_contiguous(memory_format=torch.channels_last)
    assert xd[0, (1 * 4 + 2) * 3 + 1, 3, 56] == 1.0 and xd.sum() == 1.0


needs_kernel = pytest.mark.skipif(stem._library.load() is None, reason="no C compiler")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("k,s,p,h,w,c", [(11, 4, 0, 227, 227, 3), (11, 4, 2, 224, 200, 3),
                                         (5, 2, 1, 31, 17, 5), (11, 4, 0, 230, 227, 3),
                                         (4, 4, 0, 16, 16, 3), (3, 2, 1, 1, 1, 2),
                                         (3, 1, 3, 6, 9, 1), (7, 5, 2, 12, 23, 4),
                                         (5, 3, 0, 20, 8, 2)])
def test_the_one_pass_kernel_gives_the_tensor_ops_values(dtype, k, s, p, h, w, c):
    # A channels_last input takes csrc/stem.c; the same values in NCHW take F.pad and a permuted
    # copy. Padding on every side, a last block the image does not fill, rows past the last
    # window (230), an image smaller than a block, h != w, strides 1 to 5, one channel.
    x = torch.randn(3, c, h, w).to(dtype)
    out = ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    fast = input_to_depth(x.contiguous(memory_format=torch.channels_last), k, s, p, out)
    slow = input_to_depth(x.contiguous(), k, s, p, out)
    assert fast.shape == slow.shape and torch.equal(fast, slow)
    assert fast.is_contiguous(memory_format=torch.channels_last)


@needs_kernel
def test_the_one_pass_kernel_on_a_slice_and_on_no_images():
    x = torch.randn(4, 3, 19, 23).contiguous(memory_format=torch.channels_last)
    part = x[2:]  # a storage offset
    assert torch.equal(input_to_depth(part, 11, 4, 0, (3, 4)),
                       input_to_depth(part.contiguous(), 11, 4, 0, (3, 4)))
    assert input_to_depth(x[:0], 11, 4, 0, (3, 4)).shape == (0, 48, 5, 6)
    nchw = torch.randn(2, 3, 9, 9)  # the op itself takes any layout
    assert torch.equal(stem._space_to_depth_op(nchw, 2, 1, 5, 5).permute(0, 3, 1, 2),
                       input_to_depth(nchw, 3, 2, 1, (4, 4)))


def test_double_backward_through_the_rearranged_input():
    # The kernel's op has no autograd formula: with create_graph and an input that requires
    # grad, the tensor ops run (a review found channels_last inputs failing here)
    torch.manual_seed(0)
    conv = StemConv2d(3, 4, 5, stride=2, padding=1).double()
    conv.space_to_depth_grad = True
    ref = nn.Conv2d(3, 4, 5, stride=2, padding=1).double()
    ref.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 13, 13, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    grads = []
    for layer in (conv, ref):
        gw = torch.autograd.grad(layer(x).square().sum(), layer.weight, create_graph=True)[0]
        grads.append(torch.autograd.grad(gw.square().sum(), x)[0])
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


@needs_kernel
def test_the_one_pass_kernel_traces_under_compile():
    torch._dynamo.reset()
    x = torch.randn(2, 3, 19, 19).contiguous(memory_format=torch.channels_last)

    def f(t):
        return input_to_depth(t, 11, 4, 0, (3, 3)) * 2
    assert torch.equal(torch.compile(f, backend="aot_eager", fullgraph=True)(x), f(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paper_net_trains_the_same_with_it(dtype):
    """The whole net in channels_last: logits bit for bit, every gradient but conv1's weight bit
    for bit, conv1's to rounding (its sums run in another order)."""
    x = torch.randn(4, 3, 227, 227).contiguous(memory_format=torch.channels_last).to(dtype)
    grads = []
    for s2d in (False, True):
        torch.manual_seed(0)
        model = alexnet("paper", num_classes=10, dropout=0.0).to(dtype)
        model = model.to(memory_format=torch.channels_last)
        model.features.conv1.space_to_depth_grad = s2d
        y = model(x)
        y.float().square().sum().backward()
        grads.append((y.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (y0, g0), (y1, g1) = grads
    assert torch.equal(y0, y1)
    for name in g0:
        if name != "features.conv1.weight":
            assert torch.equal(g0[name], g1[name]), name
    w0, w1 = g0["features.conv1.weight"].float(), g1["features.conv1.weight"].float()
    tol = 1e-4 if dtype == torch.float32 else 2e-2  # bf16: its result rounded to 8 bits
    assert (w0 - w1).abs().max() <= tol * w0.abs().max()


def test_under_autocast_it_casts_as_autocast_would():
    conv, _ = _pair(11, 4, 0)
    conv = conv.float()
    plain = nn.Conv2d(3, 8, 11, stride=4)
    plain.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 227, 227)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = conv(x), plain(x)
    assert y.dtype == y_ref.dtype == torch.bfloat16 and torch.equal(y, y_ref)
    y.float().sum().backward()
    y_ref.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32
    torch.testing.assert_close(conv.weight.grad, plain.weight.grad, rtol=2e-2,
                               atol=2e-2 * plain.weight.grad.abs().max().item())


def test_off_without_grad_and_where_it_cannot_apply():
    conv, _ = _pair(11, 4, 0)
    with torch.no_grad():
        assert conv(torch.randn(1, 3, 227, 227, dtype=torch.float64)).grad_fn is None
    assert StemConv2d.can_use(conv)
    assert not StemConv2d.can_use(StemConv2d(4, 8, 3, groups=2))
    assert not StemConv2d.can_use(StemConv2d(3, 8, (3, 5)))
    assert not StemConv2d.can_use(nn.Conv2d(3, 8, 11, stride=4))
    # set by hand where it cannot apply, the flag is ignored: torch's conv, torch's numbers
    for kwargs in ({"stride": (2, 3)}, {"dilation": 2}, {"padding": 2, "padding_mode": "reflect"},
                   {"padding": "same"}):
        torch.manual_seed(0)
        odd = StemConv2d(3, 4, 5, **kwargs)
        plain = nn.Conv2d(3, 4, 5, **kwargs)
        plain.load_state_dict(odd.state_dict())
        odd.space_to_depth_grad = True
        x = torch.randn(1, 3, 20, 20)
        assert torch.equal(odd(x), plain(x)), kwargs


def test_autocast_leaves_float64_alone_as_autocast_does():
    conv, ref = _pair(11, 4, 0)  # float64
    x = torch.randn(1, 3, 227, 227, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = conv(x), ref(x)
    assert y.dtype == y_ref.dtype == torch.float64 and torch.equal(y, y_ref)
