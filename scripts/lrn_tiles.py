"""Times the Triton LRN kernels at other tiles (values per program, warps) on the paper net's two
LRN layers, for a lent GPU (scripts/cuda_check.sh, step lrn-tiles; BENCHMARKS.md, "On a GPU").

On the H200 the LRN backward took 18% of c's step (session 27), far from what its memory traffic
needs; that fused kernel compiles to 167 registers a thread at the default tile. This times each
tile, each forward strategy (lrn_triton.FORWARDS: "tile", and "sweep" since session 30) and each
backward strategy (lrn_triton.STRATEGIES: "two-pass", "fused", and "sweep", since session 29; a
sweep takes a pixel a thread, 32 x warps pixels a program, whatever the tile's values; training
takes the fastest strategy and tile at each shape, timed at first use: lrn_triton.FORWARD,
BACKWARD and TILE "auto", among TILES_TIMED). It checks that each tile gives the first tile's
outputs bit for bit (the arithmetic of each value does not depend on the tile), that the forwards
agree bit for bit, and that the backwards agree to bf16's rounding. Each layer runs as in c's
step: bf16, channels_last, ReLU fused, groups=2.

    python3 scripts/lrn_tiles.py [--batch 128] [--reps 20] [--tiles 1024x4,1024x8,...]
    python3 scripts/lrn_tiles.py --registers   # no GPU needed: registers, instructions for sm_90
    TRITON_INTERPRET=1 python3 scripts/lrn_tiles.py --device cpu --batch 1 --reps 1 --small
        # a smoke test, on the CPU
"""
import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time

import torch

from alexnet import lrn_triton
from alexnet.errors import first_line

# 512x2 and 256x2 compile as 1024x4 and 512x4 do, a thread's values and registers alike
TILES = "1024x4,1024x8,512x4,2048x8"
PAPER = dict(size=5, alpha=1e-4, beta=0.75, k=2.0, groups=2, relu=True)


def _time(fn, device, reps: int) -> float:
    """Median milliseconds of fn. On a GPU by triton.testing.do_bench: the calls queued back to
    back (so that the host's launches, two for the two-pass backward, hide behind the GPU's work
    as they do in a training step) with the L2 cache flushed between them (conv2's bf16 input
    alone is about the H200's L2); on the CPU, reps calls timed one by one."""
    if device.type == "cuda":
        import triton.testing
        return triton.testing.do_bench(fn, warmup=5, rep=max(reps, 20), return_mode="median")
    fn()  # compiles
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


KERNELS = {"forward": "_lrn_fwd_kernel", "forward (sweep)": "_lrn_fwd_sweep_kernel",
           "backward (fused)": "_lrn_bwd_kernel",
           "backward pass 1": "_lrn_bwd_terms_kernel", "backward pass 2": "_lrn_bwd_dx_kernel",
           "backward (sweep)": "_lrn_bwd_sweep_kernel"}


def registers(tiles) -> None:
    """Each kernel's registers and local memory (spills) a thread at each tile, and its SASS
    instructions (all, and MUFU: the special-function unit's exp2 and reciprocals; log2 compiles
    to a polynomial), as Triton compiles it for sm_90 (bf16, channels_last, ReLU fused), read
    from the cubin by cuobjdump. The instructions are counted in the code, not as run: in the
    kernels without a loop each runs once for a thread's values, so per value they are the count
    over values a thread. The sweep's loop body (a backward branch's span) runs once a channel,
    with one value a thread: its own columns."""
    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    tool = tool if os.path.exists(tool) else shutil.which("cuobjdump")
    if tool is None:
        raise SystemExit("lrn_tiles.py --registers needs cuobjdump (triton's, or CUDA's on PATH)")
    like = torch.empty(1, 96, 1, 2).contiguous(memory_format=torch.channels_last)  # conv1's C
    print("| tile | kernel | registers | local bytes (spills) | SASS instructions | MUFU | "
          "values a thread | loop body: instructions | loop body: MUFU |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for values, warps in tiles:
            for name, kernel in KERNELS.items():
                blocks = lrn_triton._blocks(like, values)
                if "sweep" in kernel:  # a pixel a thread, all its channels
                    blocks = (1, 32 * warps)
                compiled = lrn_triton.compile_for_hopper(
                    getattr(lrn_triton, kernel), "bf16", True, True, *blocks, warps)
                cubin = os.path.join(tmp, "k.cubin")
                with open(cubin, "wb") as f:
                    f.write(compiled.asm["cubin"])
                usage, sass = (subprocess.run([tool, flag, cubin], check=True,
                                              capture_output=True, text=True).stdout
                               for flag in ("--dump-resource-usage", "-sass"))
                reg, local = re.search(r"REG:(\d+).*LOCAL:(\d+)", usage).groups()
                ops, loop = _sass(sass)
                body = f"{len(loop)} | {_mufu(loop)}" if loop else "- | -"
                print(f"| {values}x{warps} | {name} | {reg} | {local} | {len(ops)} | "
                      f"{_mufu(ops)} | {blocks[0] * blocks[1] // (32 * warps)} | {body} |")


def _sass(sass: str) -> tuple[list[str], list[str]]:
    """(every instruction's opcode but NOPs, those of the loop body: from a backward branch's
    target to the branch, or [] without one)."""
    code = [(int(at, 16), op) for at, op in re.findall(
        r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)", sass)
        if op != "NOP"]
    loop = []
    for at, target in re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?BRA 0x([0-9a-f]+)",
                                 sass):
        if int(target, 16) < int(at, 16):
            loop = [op for a, op in code if int(target, 16) <= a <= int(at, 16)]
    return [op for _, op in code], loop


def _mufu(ops: list[str]) -> int:
    return sum(op.startswith("MUFU") for op in ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=20, help="calls timed on the CPU; on a GPU "
                        "the milliseconds of calls do_bench times (at least 20)")
    parser.add_argument("--tiles", default=TILES, help="VALUESxWARPS, comma-separated; the first "
                        "is the reference the others must equal")
    parser.add_argument("--small", action="store_true",
                        help="7x5 images of 24 and 32 channels (the interpreter's size)")
    parser.add_argument("--registers", action="store_true",
                        help="instead: each tile's registers for sm_90 (compiled here, no GPU)")
    args = parser.parse_args()
    tiles = [tuple(int(v) for v in t.split("x")) for t in args.tiles.split(",")]
    if args.registers:
        return registers(tiles)
    device = torch.device(args.device)
    if args.small:  # the interpreter walks a sweep's channels one at a time: seconds a layer
        layers = {"conv1": (24, (7, 5)), "conv2": (32, (7, 5))}
    else:
        layers = {"conv1": (96, (55, 55)), "conv2": (256, (27, 27))}
    g = torch.Generator().manual_seed(0)
    how = (f"do_bench's median over {max(args.reps, 20)} ms of calls" if device.type == "cuda"
           else f"median of {args.reps} calls")
    print(f"LRN kernels on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          f", batch {args.batch}, bf16 channels_last, ReLU fused, groups 2; {how}")
    inputs, reference = {}, {}
    for name, (c, (h, w)) in layers.items():
        x = (torch.randn(args.batch, c, h, w, generator=g) * 30).to(device, torch.bfloat16)
        grad = torch.randn(args.batch, c, h, w, generator=g).to(device, torch.bfloat16)
        inputs[name] = (x.contiguous(memory_format=torch.channels_last),
                        grad.contiguous(memory_format=torch.channels_last))
    strategies = _compiling(*inputs["conv1"], tiles)
    forwards = _compiling(*inputs["conv1"], tiles, "forward")
    if not strategies or not forwards:
        raise SystemExit("no backward or no forward strategy compiles and runs here")
    print("\n| tile | " + " | ".join(" | ".join(
        [f"{n} {how} fwd ms" for how in forwards] + [f"{n} {how} bwd ms" for how in strategies])
        for n in layers) + " |\n|---|" + "---:|" * ((len(forwards) + len(strategies))
                                                       * len(layers)))
    totals = {}  # (tile, what): ms for both layers; what: "forward <strategy>", or a backward's
    for tile in tiles:
        cells, ms = _one_tile(tile, inputs, reference, tiles[0], device, args.reps, strategies,
                              forwards)
        totals.update({(tile, what): v for what, v in ms.items()})
        print(f"| {tile[0]}x{tile[1]} | " + " | ".join(cells) + " |")
    # Training takes the fastest itself, timed at each shape's first call (TILE and BACKWARD
    # "auto", lrn_auto.py); the fallback runs where nothing is timed (a CUDA graph's capture).
    fallback = {"forward": (lrn_triton.FALLBACK_TILE, f"forward {lrn_triton.FORWARD_FALLBACK}"),
                "backward": (lrn_triton.FALLBACK_TILE, lrn_triton.FALLBACK)}
    for kind, whats in (("forward", tuple(f"forward {how}" for how in forwards)),
                        ("backward", strategies)):
        mine = {key: v for key, v in totals.items() if key[1] in whats}
        best = min(mine, key=mine.get)
        t, w = fallback[kind]
        than = f" (the fallback {t[0]}x{t[1]} {w}: {totals[(t, w)]:.3f} ms)" if (
            (t, w) in totals) else ""
        print(f"fastest {kind}: {best[0][0]}x{best[0][1]} {best[1]}, {mine[best]:.3f} ms for "
              f"both layers{than}")


def _compiling(x, grad, tiles, kind: str = "backward") -> tuple:
    """The strategies of `kind` this machine's triton compiles and runs at every tile: one that
    fails (a sweep's tuples carried through a loop, on an older triton) is said and left out,
    so that the others are still timed."""
    ok = []
    for how in (lrn_triton.STRATEGIES if kind == "backward" else lrn_triton.FORWARDS):
        try:
            for tile in tiles:
                if kind == "backward":
                    lrn_triton.backward(grad, x, **PAPER, tile=tile, strategy=how)
                else:
                    lrn_triton.forward(x, **PAPER, tile=tile, strategy=how)
            ok.append(how)
        except Exception as e:  # noqa: BLE001 (any compile error: report it, time the rest)
            print(f"{kind} {how!r} left out, it failed here at tile {tile[0]}x{tile[1]}: "
                  f"{type(e).__name__}: {first_line(e, 300)}")
    return tuple(ok)


def _one_tile(tile, inputs, reference, first, device, reps, strategies, forwards):
    """Each layer's forward and backward (each strategy) ms at `tile`, as table cells, and their
    sums over the layers; the outputs checked against the first tile's, and the strategies
    against each other."""
    cells, ms = [], dict.fromkeys(tuple(f"forward {how}" for how in forwards) + strategies, 0.0)
    for name, (x, grad) in inputs.items():
        ys = {how: lrn_triton.forward(x, **PAPER, tile=tile, strategy=how) for how in forwards}
        y = ys[forwards[0]]
        dx = {how: lrn_triton.backward(grad, x, **PAPER, tile=tile, strategy=how)
              for how in strategies}
        if name not in reference:
            reference[name] = (y, dx)
        elif not (torch.equal(y, reference[name][0])
                  and all(torch.equal(dx[h], reference[name][1][h]) for h in dx)):
            raise SystemExit(f"tile {tile} gives other outputs than tile {first} ({name})")
        if not all(torch.equal(y, other) for other in ys.values()):  # the same sums in order
            raise SystemExit(f"the forwards differ at tile {tile} ({name})")
        # the same float32 arithmetic, which the compiler may contract otherwise: one bf16 unit
        base = dx[strategies[0]].float()
        for how in strategies:
            torch.testing.assert_close(dx[how].float(), base, rtol=2 ** -7,
                                       atol=2 ** -9 * base.abs().max().item())
        row = [_time(lambda how=how: lrn_triton.forward(x, **PAPER, tile=tile, strategy=how),
                     device, reps) for how in forwards]
        for how in strategies:
            row.append(_time(lambda: lrn_triton.backward(grad, x, **PAPER, tile=tile,
                                                         strategy=how), device, reps))
        cells += [f"{v:.3f}" for v in row]
        for what, v in zip(ms, row):
            ms[what] += v
    return cells, ms


if __name__ == "__main__":
    main()
