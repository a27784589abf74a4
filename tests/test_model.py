"""The model: parameter counts, shapes, initialisation, torchvision compatibility, taps, options.

Structure-only checks build the net on the meta device (no memory, no init cost); checks of values
use one real paper net shared by the module, at batch 2.
"""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from alexnet import LocalResponseNorm, alexnet
from alexnet.model import PaperDropout
from alexnet import lrn as lrn_module
from alexnet.pool import MaxPool2d

PAPER_PARAMETERS = 60_965_224
OWT_PARAMETERS = 61_100_840


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def meta(variant="paper", **options):
    with torch.device("meta"):
        return alexnet(variant, **options)


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return alexnet("paper").eval()


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.randn(2, 3, 227, 227)


def test_parameter_counts():
    assert n_params(meta("paper")) == PAPER_PARAMETERS
    assert n_params(meta("owt")) == OWT_PARAMETERS
    # fc8 alone changes with the classes: (4096 + 1) weights per class.
    assert n_params(meta("paper", num_classes=10)) == PAPER_PARAMETERS - 990 * 4097


def test_output_shapes(paper, image):
    with torch.no_grad():
        assert paper(image).shape == (2, 1000)
    assert meta("owt")(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, 1000)
    assert meta("paper", num_classes=7)(torch.empty(1, 3, 227, 227, device="meta")).shape == (1, 7)


# --------------------------------------------------------------------------------------------------
# Initialisation (paper §5)

def layers(model):
    return {name: m for name, m in [*model.features.named_children(),
                                    *model.classifier.named_children()]
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def test_layer_names(paper):
    assert list(layers(paper)) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]


@pytest.mark.parametrize("name, bias", [("conv1", 0.0), ("conv2", 1.0), ("conv3", 0.0),
                                        ("conv4", 1.0), ("conv5", 1.0), ("fc6", 1.0),
                                        ("fc7", 1.0), ("fc8", 0.0)])
def test_initialisation(paper, name, bias):
    layer = layers(paper)[name]
    w = layer.weight.detach().double()
    se = 0.01 / w.numel() ** 0.5  # standard error of the mean of N(0, 0.01²) samples
    assert abs(w.mean().item()) < 6 * se
    assert w.std().item() == pytest.approx(0.01, rel=0.03)  # conv1, the smallest, has 34,848
    assert torch.equal(layer.bias, torch.full_like(layer.bias, bias))


def test_init_std_option():
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10, init_std=0.05)
    conv1 = model.features.conv1
    assert conv1.weight.std().item() == pytest.approx(0.05, rel=0.03)
    assert model.features.conv2.bias.eq(1).all()  # biases do not depend on init_std


@pytest.mark.parametrize("name, fan_in, gain", [("conv1", 3 * 11 * 11, 2.0),
                                                ("conv2", 48 * 5 * 5, 2.0),  # one tower's maps
                                                ("fc6", 9216, 2.0), ("fc8", 4096, 1.0)])
def test_kaiming_init_option(name, fan_in, gain):
    torch.manual_seed(0)
    layer = layers(alexnet("paper", num_classes=10, init="kaiming"))[name]
    assert layer.weight.std().item() == pytest.approx((gain / fan_in) ** 0.5, rel=0.05)
    assert layer.bias.eq(0).all()


def test_input_scale_multiplies_the_input_and_adds_no_weights():
    torch.manual_seed(0)
    plain = alexnet("paper", num_classes=7, dropout=0.0).eval()
    scaled = alexnet("paper", num_classes=7, dropout=0.0, input_scale=0.25).eval()
    assert list(plain.features)[0] is plain.features.conv1  # the paper's net has no extra stage
    assert scaled.state_dict().keys() == plain.state_dict().keys()
    scaled.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 227, 227) * 60
    with torch.no_grad():
        torch.testing.assert_close(scaled(x), plain(x * 0.25), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scaled.extract(x, "conv1")["conv1"],
                                   plain.extract(x * 0.25, "conv1")["conv1"])


# --------------------------------------------------------------------------------------------------
# torchvision compatibility

def test_torchvision_state_dict_loads_into_owt_and_matches():
    torch.manual_seed(0)
    tv = torchvision.models.alexnet(weights=None).eval()
    ours = alexnet("owt").eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = tv(x)
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=0)
        # The taps read the same tensors torchvision computes.
        conv1 = tv.features[:2](x)
        got = ours.extract(x, ["conv1", "fc8"])
    torch.testing.assert_close(got["conv1"], conv1, rtol=0, atol=0)
    torch.testing.assert_close(got["fc8"], expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------------
# Intermediate activations

PAPER_TAPS = {
    "conv1": (96, 55, 55), "norm1": (96, 55, 55), "pool1": (96, 27, 27),
    "conv2": (256, 27, 27), "norm2": (256, 27, 27), "pool2": (256, 13, 13),
    "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
    "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
}
OWT_TAPS = {
    "conv1": (64, 55, 55), "pool1": (64, 27, 27), "conv2": (192, 27, 27), "pool2": (192, 13, 13),
    "conv3": (384, 13, 13), "conv4": (256, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
    "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
}


def test_extract_paper(paper, image):
    assert paper.layer_names == list(PAPER_TAPS)
    with torch.no_grad():
        out = paper.extract(image, list(PAPER_TAPS))
        logits = paper(image)
    assert list(out) == list(PAPER_TAPS)
    for name, shape in PAPER_TAPS.items():
        assert out[name].shape == (2, *shape), name
    torch.testing.assert_close(out["fc8"], logits, rtol=0, atol=0)
    assert out["conv1"].min() >= 0 and out["fc6"].min() >= 0  # after the ReLU
    assert not torch.equal(out["norm1"], out["conv1"])  # LRN changed something


def test_extract_owt_shapes():
    model = meta("owt")
    out = model.extract(torch.empty(2, 3, 224, 224, device="meta"), list(OWT_TAPS))
    assert {name: tuple(t.shape[1:]) for name, t in out.items()} == OWT_TAPS


def test_extract_order_and_errors(paper, image):
    with torch.no_grad():
        out = paper.extract(image[:1], ["pool2", "conv1"])  # requested order, not network order
        single = paper.extract(image[:1], "conv1")
    assert list(out) == ["pool2", "conv1"]
    torch.testing.assert_close(single["conv1"], out["conv1"])
    with pytest.raises(ValueError, match="unknown layer"):
        paper.extract(image[:1], ["conv6"])


# --------------------------------------------------------------------------------------------------
# Options: each of the paper's ideas can be turned off

@pytest.mark.parametrize("activation, low, high", [("tanh", -1.0, 1.0), ("sigmoid", 0.0, 1.0)])
def test_activation(activation, low, high, image):
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10, activation=activation).eval()
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    with torch.no_grad():
        conv1 = model.extract(image[:1], "conv1")["conv1"]
    assert conv1.min() >= low and conv1.max() <= high
    assert conv1.min() < 0 if activation == "tanh" else conv1.min() > 0  # not a ReLU


def test_lrn_off_is_identity():
    model = meta(lrn=False)
    assert isinstance(model.features.norm1, nn.Identity)
    assert isinstance(model.features.norm2, nn.Identity)
    assert not any(isinstance(m, LocalResponseNorm) for m in model.modules())
    assert n_params(model) == PAPER_PARAMETERS
    on = meta()
    assert isinstance(on.features.norm1, LocalResponseNorm) and on.features.norm1.groups == 2


@pytest.mark.parametrize("pooling, cls, kernel, stride", [
    ("overlapping", MaxPool2d, 3, 2), ("non-overlapping", MaxPool2d, 2, 2),
    ("average", nn.AvgPool2d, 3, 2)])
def test_pooling(pooling, cls, kernel, stride):
    model = meta(pooling=pooling)
    pools = [model.features.pool1, model.features.pool2, model.features.pool5]
    for pool in pools:
        assert type(pool) is cls and (pool.kernel_size, pool.stride) == (kernel, stride)
        assert isinstance(pool, nn.AvgPool2d if pooling == "average" else nn.MaxPool2d)
    # 2/2 pooling gives the same sizes as 3/2 here (55 -> 27 -> 13 -> 6), so fc6 still fits.
    out = model.extract(torch.empty(1, 3, 227, 227, device="meta"), ["pool5", "fc8"])
    assert out["pool5"].shape == (1, 256, 6, 6) and out["fc8"].shape == (1, 1000)


def test_towers():
    two, one = meta(towers=2), meta(towers=1)
    for name in ("conv2", "conv4", "conv5"):
        assert getattr(two.features, name).groups == 2 and getattr(one.features, name).groups == 1
    for name in ("conv1", "conv3"):  # these read both towers in the paper
        assert getattr(two.features, name).groups == 1
    # One tower of the same widths has each kernel see all input channels, not half:
    extra = (96 // 2 * 256 * 5 * 5      # conv2: 256 kernels 5×5, now over 96 instead of 48 maps
             + 384 // 2 * 384 * 3 * 3   # conv4: 384 kernels 3×3 over 384 instead of 192
             + 384 // 2 * 256 * 3 * 3)  # conv5: 256 kernels 3×3 over 384 instead of 192
    assert extra == 307_200 + 663_552 + 442_368
    assert n_params(one) - n_params(two) == extra
    assert one.features.norm1.groups == 1


def test_grey_input():
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10, in_channels=1).eval()
    assert model.features.conv1.weight.shape == (96, 1, 11, 11)
    assert n_params(model) == PAPER_PARAMETERS - 2 * 11 * 11 * 96 - 990 * 4097
    with torch.no_grad():
        assert model(torch.randn(2, 1, 227, 227)).shape == (2, 10)
    assert meta("owt", in_channels=1).features[0].weight.shape == (64, 1, 11, 11)


def test_dropout_train_vs_eval(paper, image):
    x = image[:1]
    try:
        torch.manual_seed(2)
        with torch.no_grad():
            paper.train()
            a, b = paper(x), paper(x)
            paper.eval()
            c, d = paper(x), paper(x)
    finally:
        paper.eval()
    assert not torch.equal(a, b)  # a different thinned network each step
    assert torch.equal(c, d)      # the full network at test time


def test_dropout_is_the_papers_by_default(paper):
    """§4.2: kept units pass unchanged in training; at test all pass, "multiplied by 0.5"."""
    torch.manual_seed(3)
    h = torch.rand(16, 4096) + 0.1  # positive fc6-sized inputs: many samples for little time
    try:
        paper.train()
        with torch.no_grad():
            out = paper.classifier.drop6(h)
    finally:
        paper.eval()
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.5, abs=0.02)
    assert torch.equal(out[kept], h[kept])                     # no 1/(1 − p) in training
    assert torch.equal(paper.classifier.drop6(h), 0.5 * h)     # eval: times 1 − p
    assert torch.equal(paper.classifier.drop7(h), 0.5 * h)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paper_dropout_keeps_each_unit_with_probability_1_minus_p(dtype):
    # The mask is uniform < 1 - p drawn in float32: in bf16 the uniforms would round, and a
    # draw just under 1 - p could round up to it.
    torch.manual_seed(4)
    drop = PaperDropout(0.3).train()
    h = (torch.rand(64, 4096) + 0.1).to(dtype).requires_grad_()
    out = drop(h)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.7, abs=0.005)  # 262k draws: sd 0.0009
    assert out.dtype == dtype and torch.equal(out[kept], h[kept])
    out.sum().backward()
    assert torch.equal(h.grad, kept.to(dtype))  # the gradient passes where the unit was kept


def test_inverted_dropout_is_torchs_and_computes_the_same_function_at_test():
    torch.manual_seed(3)
    inverted = alexnet("paper", num_classes=10, dropout_scaling="inverted").eval()
    h = torch.rand(16, 4096) + 0.1
    inverted.train()
    with torch.no_grad():
        out = inverted.classifier.drop6(h)
    kept = out != 0
    torch.testing.assert_close(out[kept], 2 * h[kept])       # torch's: kept units times 2
    inverted.eval()
    assert torch.equal(inverted.classifier.drop6(h), h)       # eval: identity
    # The same function at test time as the paper's form with fc7's and fc8's weights doubled.
    paper = alexnet("paper", num_classes=10).eval()
    state = inverted.state_dict()
    paper.load_state_dict({k: 2 * v if k in ("classifier.fc7.weight", "classifier.fc8.weight")
                           else v for k, v in state.items()})
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        torch.testing.assert_close(paper(x), inverted(x), rtol=1e-5, atol=1e-5)


def test_dropout_probability_option():
    model = meta(dropout=0.2)
    assert model.classifier.drop6.p == 0.2 and model.classifier.drop7.p == 0.2
    assert meta("owt", dropout=0.0).classifier[0].p == 0.0


@pytest.mark.parametrize("variant, options, message", [
    ("vgg", {}, "variant must be one of"),
    ("paper", {"activation": "gelu"}, "activation must be one of"),
    ("paper", {"pooling": "stochastic"}, "pooling must be one of"),
    ("paper", {"towers": 3}, "towers must be one of 1, 2"),
    ("paper", {"dropout": 1.5}, "dropout must be < 1.0"),
    ("paper", {"dropout": -0.1}, "dropout must be >= 0.0"),
    ("paper", {"init_std": 0.0}, "init_std must be > 0.0"),
    ("paper", {"init": "xavier"}, "init must be one of"),
    ("paper", {"input_scale": 0}, "input_scale must be > 0.0"),
    ("owt", {"init": "kaiming"}, "do not apply to variant 'owt'"),
    ("paper", {"in_channels": 0}, "in_channels must be >= 1"),
    ("paper", {"num_classes": 0}, "num_classes must be >= 1"),
    ("paper", {"lrm": False}, r"option\(s\) lrm do not apply to variant 'paper'"),
    ("owt", {"lrn": False}, r"option\(s\) lrn do not apply to variant 'owt'"),
    ("owt", {"towers": 2}, "do not apply to variant 'owt'"),
])
def test_bad_options(variant, options, message):
    with pytest.raises(ValueError, match=message):
        meta(variant, **options)


# Wrongly typed options (read from a config file they can easily be strings or floats) must be a
# clear ValueError, not a TypeError from deep inside torch, nor silently accepted (towers=True as 1).
@pytest.mark.parametrize("options", [{"dropout": "0.5"}, {"towers": 2.0}, {"towers": True},
                                     {"num_classes": True}, {"lrn": "no"}])
def test_wrongly_typed_options(options):
    with pytest.raises(ValueError):
        meta(**options)


def test_numpy_scalars_are_taken_as_the_numbers_they_hold():
    """Options read from a numpy array or a .npz config: np.int64(10) is 10, not a type error."""
    net = alexnet(num_classes=np.int64(10), in_channels=np.int64(1), dropout=np.float32(0.5),
                          towers=np.int32(2), lrn=np.bool_(False))
    plain = alexnet(num_classes=10, in_channels=1, dropout=0.5, towers=2, lrn=False)
    assert [tuple(p.shape) for p in net.parameters()] == [tuple(p.shape) for p in plain.parameters()]
    assert net.classifier[-1].out_features == 10 and not any(
        isinstance(m, LocalResponseNorm) for m in net.modules())
    with pytest.raises(ValueError, match="towers must be one of"):
        alexnet(towers=np.int64(3))


@pytest.mark.parametrize("dtype,channels_last", [(torch.float32, True), (torch.bfloat16, True),
                                                 (torch.float32, False)])
def test_relu_and_lrn_fused_compute_what_they_compute_apart(monkeypatch, dtype, channels_last):
    # forward() runs relu1+norm1 and relu2+norm2 as one op; extract() runs every layer on its own.
    # Logits and every gradient must be the same bit for bit (dropout seeded alike).
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = alexnet("paper", num_classes=10).to(dtype).to(memory_format=fmt)
    x = (torch.randn(2, 3, 227, 227) * 60).to(dtype).contiguous(memory_format=fmt)
    results = []
    for run in (model, lambda t: model.extract(t, "fc8")["fc8"]):
        model.zero_grad()
        torch.manual_seed(1)
        logits = run(x)
        logits.float().square().sum().backward()
        results.append([logits, *(p.grad.clone() for p in model.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*results))
    # and forward() did fuse: ReLU, LRN and pooling in one op where the kernels run (the CPU,
    # channels_last), else ReLU and LRN in one and the pooling after
    calls, fused = [], []
    real, real_fused = lrn_module.lrn, lrn_module._lrn_pool_op
    monkeypatch.setattr(lrn_module, "lrn", lambda *a, **k: calls.append(a[-1]) or real(*a, **k))
    monkeypatch.setattr(lrn_module, "_lrn_pool_op",
                        lambda *a: fused.append(a[6]) or real_fused(*a))
    model(x)
    kernel = channels_last and lrn_module.load_kernel() is not None
    assert (fused, calls) == (([True, True], []) if kernel else ([], [True, True]))


def test_hooks_see_relu_and_lrn_apart():
    # Any hook on relu1/norm1, or a global module hook, must see what the unfused net does.
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10)
    x = torch.randn(1, 3, 227, 227) * 60
    fired = []
    handle = model.features.relu1.register_full_backward_hook(lambda *a: fired.append(1))
    model(x).sum().backward()
    handle.remove()
    assert fired == [1]
    inputs = []
    handle = model.features.norm1.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
    model(x)
    handle.remove()
    assert inputs[0].min() >= 0  # the ReLU's output, not conv1's
    pooled = []  # a hook on pool1 sees norm1's output, so the three run apart there
    handle = model.features.pool1.register_forward_hook(lambda m, i, o: pooled.append(i[0]))
    model(x)
    handle.remove()
    assert torch.equal(pooled[0], model.extract(x, "norm1")["norm1"])
    seen = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(type(m).__name__))
    model(x)
    handle.remove()
    assert seen.count("ReLU") == 7 and seen.count("LocalResponseNorm") == 2
    assert seen.count("MaxPool2d") == 3
