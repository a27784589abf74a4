"""Max pooling and LRN-with-pooling alone on the paper's conv1 and conv2 shapes, channels_last,
batch 64, forward and forward+backward (torch.autograd.grad: no gradient accumulation), medians
of 15 after two unmeasured (BENCHMARKS.md, session 12). `bf16` (default) or `fp32`:

    python experiments/cpu-speed/pool_alone.py [bf16|fp32]
"""
import sys

import torch

from alexnet import lrn, pool
from alexnet.accel import tune_allocator
from ops_alone import ms  # this folder's: the same timing

if __name__ == "__main__":
    tune_allocator()
    torch.manual_seed(0)
    dtype = torch.float32 if sys.argv[1:] == ["fp32"] else torch.bfloat16
    mp = pool.MaxPool2d(3, 2)
    cells = {}
    for name, (c, hw) in {"1": (96, 55), "2": (256, 27)}.items():
        x = (torch.randn(64, c, hw, hw) * 3).to(dtype).contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        g = torch.randn_like(mp(x))

        def fused():
            return lrn.lrn_pool(x, 5, 1e-4, 0.75, 2.0, 2, True, mp)
        cells[f"pool{name} forward"] = ms(lambda: mp(x), 15)
        cells[f"pool{name} f+b"] = ms(lambda: torch.autograd.grad(mp(x), x, g), 15)
        cells[f"LRN+pool{name} forward"] = ms(fused, 15)
        cells[f"LRN+pool{name} f+b"] = ms(lambda: torch.autograd.grad(fused(), x, g), 15)
    print("| " + " | ".join(cells) + " |")
    print("|" + "---:|" * len(cells))
    print("| " + " | ".join(f"{v:.2f}" for v in cells.values()) + " |")
