"""One rank of the 2-process DDP test (tests/test_parallel.py), launched by torchrun on CPUs:

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_ddp_worker.py OUT_DIR

Each rank trains the paper AlexNet (fc6 and fc7 narrowed: make_model) on its half of every global
batch, then writes the reduced metrics and a hash of its weights to OUT_DIR/rank<R>.pt (rank 0
also the weights themselves). The test trains one process on the whole batches
(`train_reference`) and compares. The recipe lives here so that both sides use the same one.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from alexnet.model import AlexNet
from alexnet.parallel import (all_reduce_sum, cleanup_distributed, gather_objects,
                              init_distributed, unwrap, wrap_ddp)

STEPS, GLOBAL_BATCH, CLASSES, LR = 2, 4, 3, 0.01
INIT_SEED = 100  # rank 0's seed; rank r seeds INIT_SEED + r, so DDP must broadcast rank 0's weights


FC_WIDTH = 64  # the width of fc6 and fc7 here (4096 in the paper): see make_model


def make_model(seed: int) -> AlexNet:
    torch.manual_seed(seed)
    # dropout 0: the masks would differ between one process and two; LRN on, as in the paper.
    # float64: half batches and whole batches sum in another order, and conv1's tiny gradient is a
    # sum with much cancellation, so in fp32 it differs by ~1% between the two; in fp64 by ~1e-13,
    # and the test can demand agreement far below what any synchronisation bug would produce.
    model = AlexNet(num_classes=CLASSES, dropout=0.0, lrn=True)
    # The paper's convolutions (two towers, LRN, overlapping pooling), but fc6 and fc7 narrowed:
    # at 4096 they are 55 M of the 57 M weights, and in float64 each rank touched over 2 GB, which
    # made this test 45 s inside the suite against 12 s alone (BENCHMARKS.md, "The test suite").
    # `alexnet train` under torchrun runs the whole paper net (test_parallel.py).
    fc = model.classifier
    fc.fc6, fc.fc7 = nn.Linear(256 * 6 * 6, FC_WIDTH), nn.Linear(FC_WIDTH, FC_WIDTH)
    fc.fc8 = nn.Linear(FC_WIDTH, CLASSES)
    return model.double()


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=5e-4)


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """STEPS fixed global batches of 227×227 images, plus one more to evaluate on."""
    g = torch.Generator().manual_seed(1234)
    return [(torch.randn(GLOBAL_BATCH, 3, 227, 227, generator=g, dtype=torch.float64),
             torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=g)) for _ in range(STEPS + 1)]


def metric_sums(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    with torch.no_grad():
        logits = model(x)
    return {"loss_sum": F.cross_entropy(logits, y, reduction="sum").item(),
            "correct": int((logits.argmax(1) == y).sum()), "n": len(y)}


def weight_hashes(model: torch.nn.Module) -> dict[str, str]:
    """Bitwise fingerprints: DDP replicas must stay identical, not merely close."""
    return {name: hashlib.sha256(p.detach().numpy().tobytes()).hexdigest()
            for name, p in model.state_dict().items()}


def train_reference() -> tuple[AlexNet, dict]:
    """One process, the whole global batches, the mean loss over each (what DDP's average gives)."""
    model = make_model(INIT_SEED)
    opt = make_optimizer(model)
    *train, (x_eval, y_eval) = batches()
    for x, y in train:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model, metric_sums(model, x_eval, y_eval)


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)  # two processes on two cores
    info = init_distributed("cpu")
    assert info.world_size == 2 and info.device.type == "cpu", info
    model = make_model(INIT_SEED + info.rank)
    ddp = wrap_ddp(model, info)  # DDP's options as `alexnet train` has them: the defaults
    assert unwrap(ddp) is model
    opt = make_optimizer(ddp)
    per_rank = GLOBAL_BATCH // info.world_size
    mine = slice(info.rank * per_rank, (info.rank + 1) * per_rank)
    *train, (x_eval, y_eval) = batches()
    for x, y in train:
        opt.zero_grad()
        F.cross_entropy(ddp(x[mine]), y[mine]).backward()  # DDP averages the grads over ranks
        opt.step()
    totals = all_reduce_sum(metric_sums(model, x_eval[mine], y_eval[mine]), info)
    result = {"hashes": weight_hashes(model), "totals": totals,
              "rank_sum": all_reduce_sum(torch.tensor([info.rank + 1]), info).item(),
              "gathered": gather_objects({"rank": info.rank}, info)}
    if info.is_main:
        result["state"] = model.state_dict()
    torch.save(result, out_dir / f"rank{info.rank}.pt")
    cleanup_distributed()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
