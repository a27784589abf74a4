"""What the bf16 weight copies (alexnet.masters) save per step, measured alone: the update of
the weights, which costs the same at any batch size. `alexnet bench model --configs ce` reports
it under the c-against-e comparison of whole steps."""
from __future__ import annotations

import statistics
import time

import torch

from .. import accel
from ..masters import MasterWeights
from ..model import alexnet


def measure_weight_update(num_classes: int = 1000, reps: int = 7) -> dict | None:
    """The per-step work on the weights alone (the paper net's parameters, CPU): autocast's
    casts (every weight to bf16 for the forward, every bf16 gradient to fp32) and fused SGD,
    against the bf16 copies' one kernel pass (alexnet.masters). Interleaved; median ms. None
    where the copies are not available."""
    accel.tune_allocator()  # as in training: freed blocks reused, not page-faulted in again
    torch.manual_seed(0)
    models = [alexnet("paper", num_classes=num_classes) for _ in range(2)]
    opts = [accel.make_sgd(m.parameters(), 0.01, 0.9, 5e-4, "cpu") for m in models]
    masters = MasterWeights.create(models[1], opts[1], "cpu", "bf16")
    if masters is None:
        return None
    grads = [torch.randn_like(p).to(torch.bfloat16) for p in models[0].parameters()]
    for copy, g in zip(masters.copies.values(), grads):
        copy.grad = g

    def autocast_update():
        for p, g in zip(models[0].parameters(), grads):
            p.to(torch.bfloat16)  # the forward's cast of each weight
            p.grad = g.float()    # the backward's cast of each gradient
        opts[0].step()

    times = {"autocast": [], "copies": []}
    for _ in range(reps + 1):  # the first round warms up (state allocated, pages touched)
        for name, fn in (("autocast", autocast_update), ("copies", masters.step)):
            start = time.perf_counter()
            fn()
            times[name].append(1000 * (time.perf_counter() - start))
    ms = {k: statistics.median(v[1:]) for k, v in times.items()}
    return {"parameters": sum(p.numel() for p in models[0].parameters()),
            "autocast_ms": ms["autocast"], "copies_ms": ms["copies"],
            "ratio": ms["autocast"] / ms["copies"]}
