"""The fast training path's building blocks (alexnet.accel)."""
from __future__ import annotations

import os
import platform
import time

import pytest
import torch
from torch import nn

from alexnet import accel
from alexnet.errors import AlexNetError
from alexnet.model import alexnet
from conftest import exact_fp32

CPU = torch.device("cpu")


def test_resolve_precision_cpu():
    expected = "bf16" if accel.native_bf16(CPU) else "fp32"
    assert accel.resolve_precision(CPU) == expected
    assert accel.resolve_precision("cpu", "fp32") == "fp32"
    assert accel.resolve_precision(CPU, "bf16") == "bf16"   # explicit: honoured even if emulated
    with pytest.raises(AlexNetError, match="precision"):
        accel.resolve_precision(CPU, "int8")


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast(precision, dtype):
    layer = nn.Linear(8, 4)
    with accel.autocast(CPU, precision):
        y = layer(torch.randn(2, 8))
    assert y.dtype == dtype
    assert layer.weight.dtype == torch.float32  # the weights stay fp32


def test_grad_scaler_only_for_fp16():
    assert not accel.grad_scaler(CPU, "bf16").is_enabled()
    assert not accel.grad_scaler(CPU, "fp32").is_enabled()


def test_prepare_model_layouts_and_numerics(monkeypatch):
    # the NCHW-stem branch of the fast path, as a CPU where the probe chose it
    monkeypatch.setattr(accel, "fast_path", lambda device: accel.FastPath("fp32", "nchw", "rule"))
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10, dropout=0.0).eval()
    x = torch.randn(2, 3, 227, 227)
    expected = model(x)
    fast = accel.prepare_model(model, CPU, channels_last=True, allocator=False)
    fast = accel.prepare_model(fast, CPU, channels_last=True, allocator=False)  # idempotent
    features = fast.features
    assert len(features.conv1._forward_hooks) == len(features.conv1._forward_pre_hooks) == 1
    # the 3-channel stem stays NCHW (see accel's doc); every other conv is channels_last
    assert features.conv1.weight.is_contiguous()
    assert not features.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    for name in ("conv2", "conv3", "conv4", "conv5"):
        assert getattr(features, name).weight.is_contiguous(memory_format=torch.channels_last)
    xin = accel.to_input(x, CPU, channels_last=True)
    assert xin.is_contiguous()                                 # images stay NCHW on the CPU
    conv1 = fast.extract(xin, "conv1")["conv1"]
    assert conv1.is_contiguous(memory_format=torch.channels_last)  # handed on as NHWC
    # a channels_last input is accepted too (the stem's hook converts it), same numbers
    torch.testing.assert_close(fast(x.contiguous(memory_format=torch.channels_last)), expected,
                               rtol=1e-4, atol=1e-5)


def test_prepare_inference_casts_weights_once():
    # He init: with the paper's (biases 1) the logits hardly depend on the image (an all-zero
    # image's differ from these by 0.002), so a tolerance of 1e-2 passed whatever the input was.
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=10, init="kaiming")
    x = torch.randn(2, 3, 227, 227)
    fast = accel.prepare_model(model, CPU, allocator=False).eval()
    with torch.inference_mode(), accel.autocast(CPU, "bf16"):
        expected = fast(accel.to_input(x, CPU)).float()
        blank = fast(accel.to_input(torch.zeros_like(x), CPU)).float()
    infer = accel.prepare_inference(fast, CPU, "bf16")
    infer = accel.prepare_inference(infer, CPU, "bf16")  # idempotent
    assert not infer.training and infer.classifier.fc6.weight.dtype == torch.bfloat16
    with torch.inference_mode():
        y = infer(x)
    assert y.dtype == torch.float32
    # autocast casts the same weights the same way: the same logits, up to bf16 rounding. The
    # logits come out of a bf16 fc8 (autocast's are bf16), so two kernels that sum in another
    # order may differ by bf16's epsilon (2^-7) of a logit, or of the largest logit for one that
    # is a sum cancelling to near 0. (On this kind of CPU they are equal bit for bit.)
    eps = 2 ** -7
    atol = eps * expected.abs().max().item()
    torch.testing.assert_close(y, expected, rtol=eps, atol=atol)
    # and the logits say something about the images: far apart from each other and from a blank
    # image's, so that a cast that lost the input (or the scale) cannot pass within the tolerance
    tol = atol + eps * expected.abs().max().item()
    assert (expected[0] - expected[1]).abs().max() > 5 * tol
    assert (expected - blank).abs().max() > 5 * tol


def test_prepare_inference_scales_in_fp32_before_the_cast():
    # --input-norm puts a Scale before conv1: as under autocast in training, it must multiply the
    # fp32 pixels and conv1 round the product to bf16 once (casting the input first rounds twice)
    torch.manual_seed(0)
    factor = 1 / 57.3
    scaled = alexnet("paper", num_classes=10, input_scale=factor)
    plain = alexnet("paper", num_classes=10)
    plain.load_state_dict(scaled.state_dict())
    x = 100 * torch.randn(2, 3, 227, 227)
    with torch.inference_mode():
        y = accel.prepare_inference(scaled, CPU, "bf16")(x)
        expected = accel.prepare_inference(plain, CPU, "bf16")(x * factor)
    assert torch.equal(y, expected)


def test_to_input_channels_last_for_feature_maps():
    x = torch.randn(2, 16, 5, 5)
    assert accel.to_input(x, CPU, channels_last=True).is_contiguous(
        memory_format=torch.channels_last)
    assert accel.to_input(x, CPU, channels_last=False).is_contiguous()


def _one_step(optimizer_factory):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    optimizer = optimizer_factory(model.parameters())
    for _ in range(3):  # momentum buffers matter from the second step
        optimizer.zero_grad()
        model(torch.randn(4, 6)).square().sum().backward()
        optimizer.step()
    return optimizer, [p.detach().clone() for p in model.parameters()]


def test_make_sgd_equals_plain_sgd():
    fast, fast_params = _one_step(lambda p: accel.make_sgd(p, 0.1, 0.9, 5e-4, CPU))
    _, plain_params = _one_step(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9,
                                                          weight_decay=5e-4, foreach=False))
    assert fast.defaults["fused"] == accel.fused_supported(CPU, torch.optim.SGD)
    assert fast.defaults["fused"] or fast.defaults["foreach"]
    for a, b in zip(fast_params, plain_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_make_sgd_accepts_groups_rejects_module():
    model = nn.Linear(3, 2)
    groups = [{"params": [model.weight]}, {"params": [model.bias], "weight_decay": 0.0}]
    assert len(accel.make_sgd(groups, 0.01, device=CPU).param_groups) == 2
    with pytest.raises(TypeError):
        accel.make_sgd(model, 0.01)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_allocator_is_idempotent():
    assert accel.tune_allocator()
    assert accel.tune_allocator()
    big = torch.ones(64, 1024, 1024)  # still allocates and frees normally
    assert big.sum().item() == 64 * 1024 * 1024


def test_exact_fp32_can_be_entered_test_after_test():
    """test_cuda.py's fixture: TF32 off inside, restored after, and the legacy flags still
    readable every time (a fixture that mixed torch's two TF32 APIs raised on its second use,
    on every torch since 2.9, and so errored every CUDA test after the first)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    for _ in range(3):
        with exact_fp32():
            assert not torch.backends.cudnn.allow_tf32
            assert not torch.backends.cuda.matmul.allow_tf32
            conv = getattr(torch.backends.cudnn, "conv", None)  # torch >= 2.9: per operator
            assert getattr(conv, "fp32_precision", "ieee") != "tf32"
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


@pytest.mark.parametrize("major,auto", [(7, "fp16"), (8, "bf16"), (9, "bf16")])
def test_auto_precision_on_a_gpu_follows_its_compute_capability(monkeypatch, major, auto):
    # torch.cuda.is_bf16_supported() says True before Ampere too (emulated), and asks the current
    # GPU: auto chose slow bf16 on a V100 or T4. Asked of the given GPU's capability instead.
    from types import SimpleNamespace
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: asked.append(i) or SimpleNamespace(major=major))
    assert accel.resolve_precision(torch.device("cuda", 1), "auto") == auto
    assert asked == [1]
    if major < 8:
        with pytest.raises(AlexNetError, match="no native bf16"):
            accel.resolve_precision(torch.device("cuda", 1), "bf16")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_path():
    device = torch.device("cuda")
    precision = accel.resolve_precision(device)
    assert precision in ("bf16", "fp16")
    model = accel.prepare_model(alexnet("paper", num_classes=10), device)
    x = accel.to_input(torch.randn(2, 3, 227, 227), device)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with accel.autocast(device, precision):
        assert model(x).dtype == accel.DTYPES[precision]


def test_every_stem_computes_the_same():
    """The fast path's stem choice (NCHW hooks, plain NHWC, space-to-depth weight gradient)
    changes speed, never numbers beyond rounding."""
    x = torch.randn(2, 3, 227, 227)
    outs = []
    for stem in accel.STEMS:
        torch.manual_seed(0)
        model = accel.prepare_model(alexnet("paper", num_classes=10, dropout=0.0), CPU,
                                    allocator=False, stem=stem)
        assert model.features.conv1.space_to_depth_grad == (stem == "s2d")
        stem_input = x if stem == "nchw" else x.contiguous(memory_format=torch.channels_last)
        y = model(stem_input)
        y.square().sum().backward()
        outs.append((y.detach(), model.features.conv1.weight.grad.clone(),
                     model.features.conv1.bias.grad.clone()))
    y1, g1, b1 = outs[0]
    for y2, g2, b2 in outs[1:]:
        torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(g1, g2, rtol=1e-3, atol=1e-3 * g1.abs().max().item())
        torch.testing.assert_close(b1, b2, rtol=1e-3, atol=1e-3 * b1.abs().max().item())


def test_fast_path_is_measured_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "_fast_paths", {})
    monkeypatch.setattr(accel, "_busy", lambda: False)  # cached whatever else runs now
    probes = []
    real = accel._probe_cpu
    monkeypatch.setattr(accel, "_probe_cpu", lambda: probes.append(1) or real())
    first = accel.fast_path(CPU)
    assert first.source == "probe" and probes == [1]
    assert {"conv1 NCHW", "conv1 NHWC", "conv1 NHWC s2d"} <= set(first.timings_ms)
    assert first.stem in accel.STEMS
    t = first.timings_ms  # bf16 only where native, and then unless fp32 was clearly faster
    assert first.precision == ("fp32" if "conv2 bf16" not in t
                               or t["conv2 fp32"] < 0.9 * t["conv2 bf16"] else "bf16")
    monkeypatch.setattr(accel, "_fast_paths", {})  # a new process: from the disk cache
    again = accel.fast_path(CPU)
    assert again.source == "cache" and probes == [1]
    assert (again.precision, again.stem) == (first.precision, first.stem)
    assert accel.resolve_precision(CPU, "auto") == again.precision


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_the_probe_leaves_the_callers_mode_and_random_state(tmp_path, monkeypatch, mode):
    # Loading a model under no_grad or inference_mode on a fresh cache probes the fast path
    # there; the probe times backward passes and failed ("does not require grad"). It also
    # seeded torch's global generator, so a seeded script drew other numbers on its first run.
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "_fast_paths", {})
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    with mode():
        assert accel.fast_path(CPU).source == "probe"
        assert not torch.is_grad_enabled()  # the caller's mode is left as it was
    assert torch.equal(torch.rand(3), expected)


def test_only_training_tunes_the_process_allocator(monkeypatch):
    # A model loaded for inference (a notebook, torch.hub) must not change how the whole process
    # returns memory to the OS; prepare_model (training, the benchmarks) still does.
    calls = []
    monkeypatch.setattr(accel, "tune_allocator", lambda: calls.append(1) or True)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    accel.prepare_inference(net, CPU, precision="fp32")
    assert calls == []
    accel.prepare_model(net, CPU)
    assert calls == [1]


def test_a_newer_probe_does_not_read_an_older_probes_cache(monkeypatch):
    key = accel._probe_key(2)
    monkeypatch.setattr(accel, "PROBE_VERSION", accel.PROBE_VERSION + 1)
    accel._probe_key.cache_clear()
    try:
        assert accel._probe_key(2) != key
    finally:
        monkeypatch.undo()
        accel._probe_key.cache_clear()
    assert accel._probe_key(2) == key


def test_the_probe_times_its_candidates_in_turns():
    # so that a burst of load on a shared machine slows each alike (a probe that timed one
    # candidate after the other once chose fp32 on an AMX CPU while another job ran)
    calls = []
    timings = accel._time_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                             reps=3)
    assert calls == ["a", "b"] * 4 and set(timings) == {"a", "b"}


def test_the_probe_takes_each_candidates_least_time():
    """Load only adds time: a candidate slowed in most of its turns (here a, 40 ms in all but
    one) is still the faster one (a median chose fp32 on an AMX CPU under a steady load)."""
    turns = iter([0.04, 0.04, 0.0, 0.04, 0.04, 0.04])  # a's warm-up, then its 5 timed turns
    timings = accel._time_ms({"a": lambda: time.sleep(next(turns)),
                              "b": lambda: time.sleep(0.01)}, reps=5)
    assert timings["a"] < timings["b"]


def _probe_with(monkeypatch, conv2_ms: dict[str, float]) -> accel.FastPath:
    """_measure_cpu with conv2's timings as given (the stem's as measured)."""
    real = accel._time_ms

    def timed(steps, reps=5):
        if any(name.startswith("conv2") for name in steps):
            return dict(conv2_ms)
        return real(steps, reps=1)
    monkeypatch.setattr(accel, "_time_ms", timed)
    return accel._measure_cpu()


@pytest.mark.skipif(not accel.native_bf16(CPU), reason="the CPU has no native bf16")
def test_the_probe_keeps_bf16_unless_fp32_is_clearly_faster(monkeypatch):
    # a probe starved by other work timed both alike (47 ms each): that must not give fp32
    assert _probe_with(monkeypatch, {"conv2 fp32": 47.2, "conv2 bf16": 47.3}).precision == "bf16"
    assert _probe_with(monkeypatch, {"conv2 fp32": 36.0, "conv2 bf16": 9.0}).precision == "bf16"
    assert _probe_with(monkeypatch, {"conv2 fp32": 9.0, "conv2 bf16": 36.0}).precision == "fp32"


def test_a_probe_on_a_busy_machine_is_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    monkeypatch.setattr(accel, "_fast_paths", {})
    monkeypatch.setattr(accel, "_probe_cpu", lambda: accel.FastPath("bf16", "nhwc", "probe"))
    cores = len(os.sched_getaffinity(0))  # the cores this process may use
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 1.5, 0.0, 0.0))
    assert accel.fast_path(CPU).source == "probe"
    assert not list(tmp_path.glob("fastpath-*.json"))  # busy: kept for this process only
    monkeypatch.setattr(accel, "_fast_paths", {})
    monkeypatch.setattr(os, "getloadavg", lambda: (cores - 0.5, 0.0, 0.0))
    assert accel.fast_path(CPU).source == "probe"
    assert len(list(tmp_path.glob("fastpath-*.json"))) == 1
    monkeypatch.setattr(accel, "_fast_paths", {})
    assert accel.fast_path(CPU).source == "cache"
