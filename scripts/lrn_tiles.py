"""Times the Triton LRN kernels at other tiles (values per program, warps) on the paper net's two
LRN layers, for a lent GPU (scripts/cuda_check.sh, step lrn-tiles; BENCHMARKS.md, "On a GPU").

On the H200 the LRN backward took 18% of c's step (session 27), far from what its memory traffic
needs; its default tile compiles to 167 registers a thread. This measures whether another tile
does better, and checks that each gives the first tile's outputs bit for bit (the arithmetic of
each value does not depend on the tile). Each layer runs as in c's step: bf16, channels_last,
ReLU fused, groups=2.

    python3 scripts/lrn_tiles.py [--batch 128] [--reps 20] [--tiles 1024x4,1024x8,...]
    python3 scripts/lrn_tiles.py --registers   # no GPU needed: each tile's registers for sm_90
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

TILES = "1024x4,1024x8,512x4,512x2,256x2,2048x8"
PAPER = dict(size=5, alpha=1e-4, beta=0.75, k=2.0, groups=2, relu=True)


def _time(fn, device, reps: int) -> float:
    """Median milliseconds of fn over reps calls, after one warm-up call (which compiles)."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def registers(tiles) -> None:
    """Each tile's registers and local memory (spills) a thread, as Triton compiles the kernels
    for sm_90 (bf16, channels_last, ReLU fused), read from the cubin by cuobjdump."""
    import triton
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    tool = tool if os.path.exists(tool) else shutil.which("cuobjdump")
    if tool is None:
        raise SystemExit("lrn_tiles.py --registers needs cuobjdump (triton's, or CUDA's on PATH)")
    like = torch.empty(1, 96, 1, 2).contiguous(memory_format=torch.channels_last)  # conv1's C
    print("| tile | kernel | registers | local bytes (spills) |\n|---|---|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for values, warps in tiles:
            for name, kernel in (("forward", lrn_triton._lrn_fwd_kernel),
                                 ("backward", lrn_triton._lrn_bwd_kernel)):
                compiled = lrn_triton.compile_for_hopper(
                    kernel, "bf16", True, True, *lrn_triton._blocks(like, values), warps)
                cubin = os.path.join(tmp, "k.cubin")
                with open(cubin, "wb") as f:
                    f.write(compiled.asm["cubin"])
                usage = subprocess.run([tool, "--dump-resource-usage", cubin], check=True,
                                       capture_output=True, text=True).stdout
                reg, local = re.search(r"REG:(\d+).*LOCAL:(\d+)", usage).groups()
                print(f"| {values}x{warps} | {name} | {reg} | {local} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--tiles", default=TILES, help="VALUESxWARPS, comma-separated; the first "
                        "is the reference the others must equal")
    parser.add_argument("--small", action="store_true", help="7x5 images (the interpreter's size)")
    parser.add_argument("--registers", action="store_true",
                        help="instead: each tile's registers for sm_90 (compiled here, no GPU)")
    args = parser.parse_args()
    tiles = [tuple(int(v) for v in t.split("x")) for t in args.tiles.split(",")]
    if args.registers:
        return registers(tiles)
    device = torch.device(args.device)
    hw = (7, 5) if args.small else None
    layers = {"conv1": (96, hw or (55, 55)), "conv2": (256, hw or (27, 27))}
    g = torch.Generator().manual_seed(0)
    print(f"LRN kernels on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}"
          f", batch {args.batch}, bf16 channels_last, ReLU fused, groups 2; median of {args.reps}")
    print("\n| tile | " + " | ".join(f"{n} fwd ms | {n} bwd ms" for n in layers)
          + " | bwd GB/s (both) |\n|---|" + "---:|" * (2 * len(layers) + 1))
    inputs, reference = {}, {}
    for name, (c, (h, w)) in layers.items():
        x = (torch.randn(args.batch, c, h, w, generator=g) * 30).to(device, torch.bfloat16)
        grad = torch.randn(args.batch, c, h, w, generator=g).to(device, torch.bfloat16)
        inputs[name] = (x.contiguous(memory_format=torch.channels_last),
                        grad.contiguous(memory_format=torch.channels_last))
    totals = {}  # tile: (forward ms, backward ms), both layers
    for tile in tiles:
        cells, totals[tile] = _one_tile(tile, inputs, reference, tiles[0], device, args.reps)
        moved = sum(3 * x.numel() * x.element_size() for x, _ in inputs.values())
        print(f"| {tile[0]}x{tile[1]} | " + " | ".join(cells)
              + f" | {moved / totals[tile][1] / 1e6:.0f} |")
    print(f"\n(the default: {lrn_triton.TILE}; bwd GB/s counts x, grad and dx once each)")
    for k, kind in enumerate(("forward", "backward")):  # what lrn_triton.TILE could become
        best, default = min(totals, key=lambda t: totals[t][k]), lrn_triton.TILE[kind]
        than = (f" (the default {default[0]}x{default[1]}: {totals[default][k]:.3f} ms)"
                if default in totals else "")
        print(f"fastest {kind}: {best[0]}x{best[1]}, {totals[best][k]:.3f} ms for both "
              f"layers{than}")


def _one_tile(tile, inputs, reference, first, device, reps):
    """Each layer's forward and backward ms at `tile` (as table cells), and their sums; the
    outputs checked against the first tile's."""
    cells, fwd_ms, bwd_ms = [], 0.0, 0.0
    for name, (x, grad) in inputs.items():
        y = lrn_triton.forward(x, **PAPER, tile=tile)
        dx = lrn_triton.backward(grad, x, **PAPER, tile=tile)
        if name not in reference:
            reference[name] = (y, dx)
        elif not (torch.equal(y, reference[name][0]) and torch.equal(dx, reference[name][1])):
            raise SystemExit(f"tile {tile} gives other outputs than tile {first} ({name})")
        fwd = _time(lambda: lrn_triton.forward(x, **PAPER, tile=tile), device, reps)
        bwd = _time(lambda: lrn_triton.backward(grad, x, **PAPER, tile=tile), device, reps)
        cells += [f"{fwd:.3f}", f"{bwd:.3f}"]
        fwd_ms, bwd_ms = fwd_ms + fwd, bwd_ms + bwd
    return cells, (fwd_ms, bwd_ms)


if __name__ == "__main__":
    main()
