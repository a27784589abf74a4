"""The Triton LRN kernels (the CUDA path) checked on a machine without a GPU.

Triton's interpreter (TRITON_INTERPRET=1) runs the kernels on CPU tensors with numpy. It must be set
before the kernels are decorated, i.e. before alexnet is imported, and it must not leak into this
process (a GPU session would then interpret inductor's kernels too). So one subprocess runs every
case and saves the outputs; the tests here compare them with the float64 formula. A second test
compiles the kernels for an H100 (sm_90, to PTX and cubin: no GPU needed), which the interpreter
cannot show: that the tuples, constexpr arithmetic and layouts pass Triton's compiler.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from alexnet.lrn import _analytic_backward, lrn_reference
from test_lrn import activations

triton = pytest.importorskip("triton")
lrn_triton = pytest.importorskip("alexnet.lrn_triton")

PAPER = dict(size=5, alpha=1e-4, beta=0.75, k=2.0)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
          "fp64": torch.float64}


def _case(shape, dtype="fp32", channels_last=False, groups=1, seed=0, grad_layout=None,
          via="kernel", tile=None, **params):
    """Inputs for one run. via="kernel": lrn_triton.forward/backward (with `tile`, if given);
    via="op": the CUDA bodies of the custom ops in lrn.py (layout handling, float64), on CPU
    tensors."""
    x = activations(shape, seed=seed, channels_last=channels_last).to(DTYPES[dtype])
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1)).to(x.dtype)
    if grad_layout is not None:
        g = g.contiguous(memory_format=grad_layout)
    return dict(x=x, g=g, via=via, tile=tile, params=dict(PAPER, groups=groups, **params))


def _cases() -> dict:
    # One image of conv1's 96 channels (the interpreter takes about a second a case); the cases
    # below have several images.
    cases = {f"{dt}-{'cl' if cl else 'nchw'}-g{groups}": _case((1, 96, 7, 5), dt, cl, groups)
             for dt in ("fp32", "bf16", "fp16") for cl in (False, True) for groups in (1, 2)}
    # Odd sizes: C not a multiple of the channel block, H*W not a multiple of the pixel block,
    # groups narrower than the block, one channel, one pixel.
    cases["odd-c7-hw195"] = _case((2, 7, 65, 3), channels_last=True)
    cases["odd-c7-hw195-nchw"] = _case((2, 7, 65, 3))
    cases["groups4-c12"] = _case((2, 12, 3, 3), "bf16", True, groups=4)
    cases["groups3-c33"] = _case((1, 33, 4, 5), groups=3)
    cases["c1"] = _case((2, 1, 3, 4))
    cases["hw1"] = _case((3, 20, 1, 1), channels_last=True, groups=2)
    # Other hyperparameters; an even size makes the backward's mirrored window differ from the
    # forward's, so a window flipped the wrong way shows.
    cases["size3"] = _case((2, 16, 5, 5), groups=2, size=3, alpha=2e-3, beta=0.5, k=1.0)
    cases["size4"] = _case((2, 16, 5, 5), channels_last=True, groups=2, size=4, alpha=1e-3)
    cases["size1"] = _case((2, 16, 5, 5), size=1, alpha=1e-2, k=1.0)
    cases["size6-beta1"] = _case((2, 16, 5, 5), groups=2, size=6, alpha=1e-3, beta=1.0)
    # grad in the other layout than x, and a channel-strided view: read in place.
    cases["grad-other-layout"] = _case((2, 24, 5, 6), channels_last=True, groups=2,
                                       grad_layout=torch.contiguous_format)
    view = _case((2, 48, 6, 5), groups=2)
    view["x"], view["g"] = view["x"][:, ::2], view["g"][:, 1::2]
    cases["channel-view"] = view
    # The ops' CUDA bodies: a view whose (h, w) do not flatten is copied first, as is such a grad;
    # float64 takes the analytic formula.
    transposed = _case((2, 12, 6, 5), groups=2, via="op")
    transposed["x"] = transposed["x"].permute(0, 1, 3, 2)
    transposed["g"] = transposed["g"].permute(0, 1, 3, 2)
    cases["op-transposed-view"] = transposed
    cases["op-cl-bf16"] = _case((2, 24, 5, 6), "bf16", channels_last=True, groups=2, via="op")
    cases["op-fp64"] = _case((2, 12, 3, 4), "fp64", channels_last=True, groups=2, via="op")
    # relu=True: the op is LRN(ReLU(x)) with ReLU's backward inside; negatives make it matter.
    for dt in ("bf16", "fp64"):
        fused = _case((2, 24, 5, 6), dt, channels_last=True, groups=2, via="op", relu=True)
        fused["x"] = fused["x"] - 20
        cases[f"op-relu-{dt}"] = fused
    # ...and in the kernels themselves (ReLU as they load, its mask in the backward), with exact
    # zeros of both signs, whose gradient ReLU stops as torch's does (x <= 0).
    for dt, cl in (("fp32", False), ("bf16", True), ("fp16", False)):
        fused = _case((2, 24, 5, 6), dt, channels_last=cl, groups=2, relu=True)
        fused["x"] = fused["x"] - 20
        fused["x"][0, :3, 0, :2] = 0.0
        fused["x"][1, 5:9, 2, 3] = -0.0
        cases[f"relu-{dt}-{'cl' if cl else 'nchw'}"] = fused
    # Other tiles (values per program, warps), as scripts/lrn_tiles.py times them on a GPU: fewer
    # pixels a program than the rows have, and more than the image has.
    for tile, cl in (((128, 2), True), ((256, 2), False), ((4096, 8), True)):
        case = _case((2, 96, 7, 5), "bf16", cl, groups=2, tile=tile, relu=True)
        case["x"] = case["x"] - 20
        cases[f"tile-{tile[0]}x{tile[1]}-{'cl' if cl else 'nchw'}"] = case
    return cases


CASES = _cases()
# The forward's other strategies on the kernel cases but ten of the first twelve (the interpreter
# walks a sweep's channels one at a time: seconds a case): each dtype and layout still once.
FORWARD_CASES = [n for n in CASES if CASES[n]["via"] == "kernel" and not (
    n[:4] in ("fp32", "bf16", "fp16") and n not in ("fp32-nchw-g1", "bf16-cl-g2", "fp16-cl-g2"))]

_CHILD = """
import sys, torch
from alexnet import lrn, lrn_triton
assert type(lrn_triton._lrn_fwd_kernel).__name__ == "InterpretedFunction"
FORWARD_CASES = sys.argv[3].split(",")
run = {"kernel": (lrn_triton.forward, lrn_triton.backward),
       "op": (lrn._lrn_cuda, lrn._lrn_backward_cuda)}
out = {}
for name, case in torch.load(sys.argv[1]).items():
    forward, backward = run[case["via"]]
    tile = dict(tile=case["tile"]) if case["tile"] else {}
    out[name] = (forward(case["x"], **case["params"], **tile),
                 backward(case["g"], case["x"], **case["params"], **tile))
    if case["via"] == "kernel":  # the strategies but the fallbacks (the ones run here)
        out[name] += tuple(lrn_triton.backward(case["g"], case["x"], **case["params"], **tile,
                                               strategy=other)
                           for other in lrn_triton.STRATEGIES if other != lrn_triton.FALLBACK)
    if name in FORWARD_CASES:
        out["forwards", name] = tuple(
            lrn_triton.forward(case["x"], **case["params"], **tile, strategy=other)
            for other in lrn_triton.FORWARDS if other != lrn_triton.FORWARD_FALLBACK)
torch.save(out, sys.argv[2])
"""


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """{case name: (y, dx)} from the kernels run by Triton's interpreter in a subprocess."""
    tmp = tmp_path_factory.mktemp("lrn-triton")
    torch.save(CASES, tmp / "cases.pt")
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_CACHE_DIR=str(tmp / "triton"))
    args = [sys.executable, "-c", _CHILD, str(tmp / "cases.pt"), str(tmp / "out.pt"),
            ",".join(FORWARD_CASES)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return torch.load(tmp / "out.pt")


def _expected(case):
    x, g, p = case["x"].double(), case["g"].double(), dict(case["params"])
    relu = p.pop("relu", False)
    a = x.relu() if relu else x
    dx = _analytic_backward(g, a, p["size"], p["alpha"], p["beta"], p["k"], p["groups"])
    return lrn_reference(a, **p), torch.where(x <= 0, 0.0, dx) if relu else dx


def _tolerances(dtype, dx_ref):
    """(forward, backward) tolerances: fp32 arithmetic, then one rounding to the storage dtype.
    bfloat16 allows a whole unit in the last place: the interpreter truncates fp32 to bf16 where a
    GPU rounds to nearest (test_cuda.py checks the GPU's rounding bit for bit)."""
    scale = dx_ref.abs().max().item()
    if dtype == torch.float64:
        return dict(rtol=1e-12, atol=0.0), dict(rtol=1e-10, atol=1e-14 * scale)
    if dtype == torch.float32:   # the backward's two terms can cancel: slack relative to the max
        return dict(rtol=1e-5, atol=1e-7), dict(rtol=1e-5, atol=1e-6 * scale)
    if dtype == torch.bfloat16:
        return dict(rtol=2 ** -7, atol=1e-6), dict(rtol=2 ** -7, atol=2 ** -9 * scale)
    return dict(rtol=2 ** -10, atol=1e-6), dict(rtol=2 ** -10, atol=2 ** -12 * scale)


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_matches_float64_formula(interpreted, name):
    case = CASES[name]
    y, dx = interpreted[name][:2]
    x = case["x"]
    assert y.dtype == dx.dtype == x.dtype and y.shape == dx.shape == x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        assert y.is_contiguous(memory_format=torch.channels_last)  # layout kept, not copied
        assert dx.is_contiguous(memory_format=torch.channels_last)
    elif case["via"] == "op":
        assert y.is_contiguous() and dx.is_contiguous()            # what the ops' fake promises
    y_ref, dx_ref = _expected(case)
    tol_y, tol_dx = _tolerances(x.dtype, dx_ref)
    torch.testing.assert_close(y.double(), y_ref, **tol_y)
    torch.testing.assert_close(dx.double(), dx_ref, **tol_dx)


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n]["via"] == "kernel"])
def test_every_backward_strategy_gives_the_same_values(interpreted, name):
    """The two-pass backward (t to a float32 scratch, then summed), the fused one and the sweep
    (a program walks the channels, the window in registers) compute each value with the same
    float32 operations in the same order: equal bit for bit here, where the interpreter runs them
    as numpy does (on a GPU the compiler may contract them differently)."""
    _, dx, *others = interpreted[name]
    assert len(others) == len(lrn_triton.STRATEGIES) - 1
    for dx_other in others:
        assert torch.equal(dx, dx_other)


@pytest.mark.parametrize("name", FORWARD_CASES)
def test_every_forward_strategy_gives_the_same_values(interpreted, name):
    """The sweep forward (a program walks the channels, each input loaded once) sums the same
    window in the same order as the tile forward (SIZE shifted tiles): equal bit for bit here."""
    others = interpreted["forwards", name]
    assert len(others) == len(lrn_triton.FORWARDS) - 1
    for y_other in others:
        assert torch.equal(interpreted[name][0], y_other)
        assert y_other.stride() == interpreted[name][0].stride()


def test_an_unknown_strategy_is_refused():
    x = activations((1, 4, 3, 3))
    with pytest.raises(ValueError, match="two-pass"):
        lrn_triton.backward(x, x, strategy="fast")
    with pytest.raises(ValueError, match="tile, sweep or auto"):
        lrn_triton.forward(x, strategy="two-pass")


def test_alpha_times_mean_does_not_match(interpreted):
    # Negative control: torch's and Caffe's convention (alpha / n) normalises five times too weakly
    # and must be far outside the tolerance the kernel meets; so must a window that ignores groups.
    case = CASES["fp32-nchw-g2"]
    y = interpreted["fp32-nchw-g2"][0]
    x = case["x"].double()
    mean_convention = lrn_reference(x, **dict(PAPER, alpha=PAPER["alpha"] / PAPER["size"]),
                                    groups=2)
    assert not torch.allclose(y.double(), mean_convention, rtol=1e-3)
    no_towers = lrn_reference(x, **PAPER, groups=1)
    edge = slice(46, 50)  # the last two channels of tower 1 and the first two of tower 2
    assert not torch.allclose(y[:, edge].double(), no_towers[:, edge], rtol=1e-4)
    torch.testing.assert_close(y[:, 50:94].double(), no_towers[:, 50:94], rtol=1e-5, atol=1e-7)


def test_a_tile_that_is_not_a_power_of_two_is_refused():
    x = activations((1, 4, 3, 3))
    for tile in ((1000, 4), (1024, 3), (0, 4)):
        with pytest.raises(ValueError, match="powers of 2"):
            lrn_triton.forward(x, tile=tile)
        with pytest.raises(ValueError, match="powers of 2"):
            lrn_triton.backward(x, x, tile=tile)


def test_layout_that_does_not_flatten_is_refused():
    x = activations((1, 4, 3, 5)).permute(0, 1, 3, 2)  # (h, w) transposed: no one pixel stride
    with pytest.raises(ValueError, match="flatten"):
        lrn_triton.forward(x)
    with pytest.raises(TypeError):
        lrn_triton.forward(activations((1, 4, 3, 3)).double())


def test_kernels_compile_for_h100(tmp_path, monkeypatch):
    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("this triton has no NVIDIA backend")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    for kernel in (lrn_triton._lrn_fwd_kernel, lrn_triton._lrn_bwd_kernel,
                   lrn_triton._lrn_bwd_terms_kernel, lrn_triton._lrn_bwd_dx_kernel,
                   lrn_triton._lrn_bwd_sweep_kernel, lrn_triton._lrn_fwd_sweep_kernel):
        sweep = "sweep" in kernel.fn.__name__  # 1-D: pixels, 32 x warps of them
        for dtype, channels_last, relu in (("bf16", True, True), ("fp32", False, False)):
            blocks = (1, 128) if sweep else (32, 32) if channels_last else (16, 64)
            compiled = lrn_triton.compile_for_hopper(kernel, dtype, channels_last, relu, *blocks)
            assert "ld.global" in compiled.asm["ptx"] and compiled.asm["cubin"]
            order = "order = [0, 1]" if channels_last else "order = [1, 0]"
            assert sweep or order in compiled.asm["ttgir"]  # threads along the contiguous axis
            stores_dtype = kernel is not lrn_triton._lrn_bwd_terms_kernel  # (t is float32)
            if dtype == "bf16" and stores_dtype:  # rounded to nearest even, as torch rounds
                assert "cvt.rn.bf16.f32" in compiled.asm["ptx"]


def test_the_tile_script_counts_registers_for_sm90(tmp_path):
    """`scripts/lrn_tiles.py --registers`: each kernel compiled for sm_90 here (no GPU), its
    registers and spills read from the cubin (BENCHMARKS.md's table of them)."""
    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("this triton has no NVIDIA backend")
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "scripts/lrn_tiles.py", "--registers", "--tiles",
                           "1024x4"], env=env, capture_output=True, text=True, timeout=300,
                          cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split(" | ") for line in done.stdout.splitlines() if line.startswith("| 1024")]
    assert [r[1] for r in rows] == ["forward", "forward (sweep)", "backward (fused)",
                                    "backward pass 1", "backward pass 2", "backward (sweep)"]
    assert all(int(r[2]) > 0 and int(r[4]) > 0 for r in rows)  # registers, instructions
    mufu = {r[1]: int(r[5]) for r in rows}  # the fused backward's five powers a value show
    assert mufu["backward (fused)"] > 2 * (mufu["backward pass 1"] + mufu["backward pass 2"])
    # the sweep: a value a thread, its loop's body run once a channel: one exp2 and one
    # reciprocal (log2 is a polynomial); the other kernels have no loop
    sweeps = {r[1]: r for r in rows if "sweep" in r[1]}
    for name, exp2s in (("backward (sweep)", "2 |"), ("forward (sweep)", "1 |")):  # forward:
        sweep = sweeps[name]  # its exp2 only
        assert sweep[6] == "1" and 0 < int(sweep[7]) < int(sweep[4]) and sweep[8] == exp2s
    assert all(r[7] == "-" for r in rows if "sweep" not in r[1])


def test_the_tile_timing_script_runs_under_the_interpreter(tmp_path):
    """scripts/lrn_tiles.py (a GPU's step in scripts/cuda_check.sh) runs each tile on both layers
    and checks each against the first tile's outputs; here on CPU tensors, in Triton's
    interpreter."""
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_CACHE_DIR=str(tmp_path))
    args = [sys.executable, "scripts/lrn_tiles.py", "--device", "cpu", "--batch", "1", "--reps",
            "1", "--small", "--tiles", "1024x4,2048x8"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows[1:]] == ["| 1024x4", "| 2048x8"]
    assert "fastest forward: " in done.stdout and "fastest backward: " in done.stdout


def test_the_tile_script_leaves_out_a_strategy_that_does_not_compile(monkeypatch, capsys):
    """On the lent GPU's own (older) triton a strategy may fail to compile: lrn_tiles.py says so
    and times the others, rather than losing the whole step."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("lrn_tiles",
                                                  os.path.join(root, "scripts", "lrn_tiles.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def backward(grad, x, strategy, **kwargs):
        if strategy == "sweep":
            raise RuntimeError("PassManager::run failed\n(the rest of a long message)")
        return x
    monkeypatch.setattr(script.lrn_triton, "backward", backward)
    x = activations((1, 4, 3, 3))
    assert script._compiling(x, x, [(1024, 4), (1024, 8)]) == ("two-pass", "fused")
    assert capsys.readouterr().out == ("backward 'sweep' left out, it failed here at tile "
                                       "1024x4: RuntimeError: PassManager::run failed\n")


def test_the_sweep_launches_one_grid_axis_whatever_the_groups(monkeypatch):
    """CUDA's second grid axis stops at 65535: the sweeps, a program per group, put their groups
    on the first axis, so that any groups the other kernels take they take too (the interpreter
    has no such limit: the launches are recorded, nothing runs)."""
    grids = []

    class Kernel:
        def __getitem__(self, grid):
            grids.append(grid)
            return lambda *args, **kwargs: None
    sweeps = Kernel(), Kernel()
    monkeypatch.setattr(lrn_triton, "_lrn_bwd_sweep_kernel", sweeps[0])
    monkeypatch.setattr(lrn_triton, "_lrn_fwd_sweep_kernel", sweeps[1])
    x = torch.zeros(2, 70000, 1, 3)
    lrn_triton.backward(x, x, groups=70000, strategy="sweep")
    lrn_triton.forward(x, groups=70000, strategy="sweep")
    assert grids == [(2 * 1 * 70000,)] * 2  # images x pixel blocks x groups


def test_each_backward_strategy_launches_its_own_kernels(monkeypatch):
    """The bit-for-bit comparison of the two strategies means something only if each runs its own
    kernels: the launches, recorded (nothing runs)."""
    launched = []
    monkeypatch.setattr(lrn_triton, "_launch", lambda kernel, *a, **k: launched.append(kernel))
    x = activations((1, 4, 3, 3))
    lrn_triton.backward(x, x, strategy="fused")
    assert launched == [lrn_triton._lrn_bwd_kernel]
    launched.clear()
    lrn_triton.backward(x, x, strategy="sweep")
    assert launched == [lrn_triton._lrn_bwd_sweep_kernel]
    launched.clear()
    lrn_triton.backward(x, x)  # the default, BACKWARD: "auto", FALLBACK where nothing is timed
    assert (lrn_triton.BACKWARD, lrn_triton.FALLBACK) == ("auto", "two-pass")
    assert launched == [lrn_triton._lrn_bwd_terms_kernel, lrn_triton._lrn_bwd_dx_kernel]


@pytest.fixture
def fake_gpu(tmp_path, monkeypatch):
    """lrn_auto on a faked GPU, with nothing chosen yet. Each option's run is recorded in `calls`
    ((strategy, tile); the forward's as ("forward tile" or "forward sweep", tile)), nothing runs;
    the timer runs the option and answers speeds[option] (5 ms unless set; None: it does not
    compile)."""
    from alexnet import lrn_auto
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    for name in ("_CHOSEN", "_USED", "_SAVED"):
        monkeypatch.setattr(lrn_auto, name, {})
    monkeypatch.setattr(lrn_auto, "_READ", set())
    monkeypatch.setattr(lrn_auto, "_timed_here", lambda x: True)
    monkeypatch.setattr(lrn_auto, "_gpu", lambda device: "Fake-GPU-triton3")
    monkeypatch.setattr(lrn_triton, "TILE", {"forward": "auto", "backward": "auto"})  # defaults
    monkeypatch.setattr(lrn_triton, "FORWARD", "auto")
    capturing = [False]
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing[0])
    calls, timed, speeds = [], [], {}
    monkeypatch.setattr(lrn_triton, "_run", lambda how, *args: calls.append((how, args[-1])))
    monkeypatch.setattr(lrn_triton, "_launch", lambda kernel, x, tensors, *args: calls.append(
        ("forward " + ("sweep" if kernel is lrn_triton._lrn_fwd_sweep_kernel else "tile"),
         args[-1])))

    def time_ms(fn, device):
        fn()
        timed.append(calls[-1])
        if speeds.get(calls[-1], 5.0) is None:
            raise RuntimeError("does not compile")
        return speeds.get(calls[-1], 5.0)
    monkeypatch.setattr(lrn_auto, "_time_ms", time_ms)

    def forget():  # as a new process starts
        for kept in (lrn_auto._CHOSEN, lrn_auto._USED, lrn_auto._SAVED, lrn_auto._READ):
            kept.clear()
    return SimpleNamespace(auto=lrn_auto, calls=calls, timed=timed, speeds=speeds,
                           capturing=capturing, forget=forget,
                           file=tmp_path / "lrn-Fake-GPU-triton3.json")


def test_auto_times_each_option_once_and_keeps_the_fastest(fake_gpu):
    """BACKWARD, FORWARD and TILE "auto" on a GPU: each (strategy, tile) of the backward and of
    the forward timed at a shape's first call, the fastest kept for the process and on disk with
    every option's time (a resumed run takes the same without timing, and can report them)."""
    g = fake_gpu
    x = activations((1, 4, 3, 3))
    g.speeds.update({("fused", (1024, 8)): 1.0, ("sweep", (1024, 4)): 2.0,
                     ("forward tile", (512, 4)): 1.5})
    lrn_triton.backward(x, x)
    tiles = lrn_triton.TILES_TIMED
    assert sorted(g.timed) == sorted([(s, t) for s in ("two-pass", "fused") for t in tiles]
                                     + [("sweep", (1024, 4)), ("sweep", (1024, 8))])  # its warps
    assert g.calls[-1] == ("fused", (1024, 8))
    lrn_triton.backward(x, x)  # the same shape: not timed again
    assert len(g.timed) == 8 and g.calls[-1] == ("fused", (1024, 8))
    lrn_triton.forward(x)
    assert g.timed[8:] == [("forward tile", t) for t in tiles] + [
        ("forward sweep", (1024, 4)), ("forward sweep", (1024, 8))]
    assert g.calls[-1] == ("forward tile", (512, 4))
    saved = json.loads(g.file.read_text())
    assert [v["choice"] for v in saved.values()] == ["fused 1024x8", "tile 512x4"]
    assert list(saved.values())[0]["ms"]["sweep 1024x4"] == 2.0 and len(saved) == 2
    g.forget()  # the next process reads them (a resume takes what the run took)
    lrn_triton.backward(x, x)
    lrn_triton.forward(x)
    assert len(g.timed) == 13
    assert g.calls[-2:] == [("fused", (1024, 8)), ("forward tile", (512, 4))]
    used = g.auto.used()
    assert [(u["kind"], u["dtype"], u["shape"], u["choice"]) for u in used] == [
        ("backward", "float32", "(1, 4, 3, 3)", "fused 1024x8"),
        ("forward", "float32", "(1, 4, 3, 3)", "tile 512x4")]
    assert used[0]["ms"] == list(saved.values())[0]["ms"]
    # A strategy or tile given: only the rest is timed; both given: nothing is.
    lrn_triton.backward(x, x, strategy="sweep")
    assert g.timed[13:] == [("sweep", (1024, 4)), ("sweep", (1024, 8))]
    lrn_triton.backward(x, x, tile=(512, 4))
    assert g.timed[15:] == [(s, (512, 4)) for s in lrn_triton.STRATEGIES]
    lrn_triton.backward(x, x, strategy="fused", tile=(512, 4))
    lrn_triton.forward(x, strategy="sweep", tile=(512, 4))
    assert len(g.timed) == 18 and g.calls[-2:] == [("fused", (512, 4)),
                                                   ("forward sweep", (512, 4))]


def test_auto_falls_back_passes_over_and_raises_as_it_should(fake_gpu):
    """While a CUDA graph is captured nothing is timed (the fallback runs, nothing is kept); an
    option that does not compile is passed over, said; if none compiles, its error; a CUDA error
    is raised at once (it is sticky: the others would fail after it)."""
    g = fake_gpu
    y = activations((1, 8, 3, 3))
    g.capturing[0] = True
    lrn_triton.backward(y, y)
    lrn_triton.forward(y)
    assert g.timed == [] and g.calls == [(lrn_triton.FALLBACK, lrn_triton.FALLBACK_TILE),
                                         ("forward tile", lrn_triton.FALLBACK_TILE)]
    g.capturing[0] = False
    g.speeds.update({("fused", (1024, 8)): None, ("fused", (1024, 4)): 1.0})
    with pytest.warns(UserWarning, match="LRN backward 'fused 1024x8' left out on this GPU: does"):
        lrn_triton.backward(y, y)
    assert len(g.timed) == 8 and g.calls[-1] == ("fused", (1024, 4))
    g.speeds.update({(s, (512, 4)): None for s in lrn_triton.STRATEGIES})
    with pytest.raises(RuntimeError, match="does not compile"), pytest.warns(UserWarning):
        lrn_triton.backward(y, y, tile=(512, 4))
    g.auto._time_ms = lambda fn, device: (_ for _ in ()).throw(
        RuntimeError("CUDA error: an illegal memory access was encountered"))
    with pytest.raises(RuntimeError, match="illegal memory access"):
        lrn_triton.backward(*(2 * (activations((1, 16, 3, 3)),)))


def test_auto_leaves_out_what_it_cannot_read_in_its_file(fake_gpu):
    """A damaged choices file: an entry that is not a choice, or names an option this version does
    not run, is timed again; times that do not read as numbers are left out."""
    g = fake_gpu
    x = activations((1, 4, 3, 3))
    lrn_triton.backward(x, x)
    (key,) = json.loads(g.file.read_text())
    damaged = {"choice": "sweep 1024x8", "ms": {"fused 1024x4": "x", "sweep 1024x8": 0.5}}
    for saved, runs, timed in (("sweep", lrn_triton.FALLBACK, 8),
                               ({"choice": "warp 1x1", "ms": {}}, lrn_triton.FALLBACK, 8),
                               ({"choice": "sweep 1024x8", "ms": None}, "sweep", 0),
                               (damaged, "sweep", 0)):
        g.file.write_text(json.dumps({key: saved}))
        g.forget()
        g.timed.clear()
        lrn_triton.backward(x, x)  # all at 5 ms: the first timed, two-pass 1024x4, is kept
        assert g.calls[-1][0] == runs and len(g.timed) == timed, saved
        if isinstance(saved, dict) and timed == 0:
            (used,) = g.auto.used()
            assert used["ms"] == ({"sweep 1024x8": 0.5} if saved is damaged else {})
