"""One training step: forward, loss, backward, optimizer update, and the guard against
non-finite losses. `alexnet train`, the ablation's activation study and `alexnet bench model` all
call this, so the step that is measured is the step that trains.

    loss, logits = train_step(model, optimizer, scaler, x, labels, autocast=rt.autocast)

With `masters` (bf16 on the CPU, see masters.py) the step runs on the weights' bf16 copies and the
optimizer updates them with the fp32 weights, instead of autocast casting every weight each step.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from .errors import Diverged


def train_step(model, optimizer, scaler, x: torch.Tensor, labels: torch.Tensor, *,
               autocast=contextlib.nullcontext, label_smoothing: float = 0.0, masters=None,
               all_ranks=None):
    """One SGD (or AdamW) step on a prepared batch; returns (loss as a float, detached logits).

    The loss is computed in float32 whatever the autocast precision (a bf16 log-softmax over
    1000 classes loses digits). A non-finite loss raises Diverged *before* the update, so the
    weights stay as they were. `scaler` is a GradScaler, enabled only for fp16. `masters`
    (a MasterWeights of this model and optimizer, or None) stands in for both, without autocast.
    `all_ranks` (under DDP: a tensor's sum over the ranks) makes every rank see a non-finite loss
    of any rank: one that stepped on waited in the next all-reduce for a rank that had stopped
    (a traceback with gloo, a hang with NCCL)."""
    if masters is not None:
        model, optimizer, autocast = masters, masters, contextlib.nullcontext
    with autocast():
        logits = model(x)
    if len(labels):
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    else:  # every image of this rank's batch was unreadable: a zero step that still all-reduces
        loss = logits.float().sum() * 0.0
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # fp16 only scales; a pass-through for bf16/fp32
    # The one wait for the device in a step, after the backward is queued: read after the
    # forward, it left a GPU idle while the host queued the whole backward. A non-finite loss
    # still raises before the update (its gradients are dropped at the next zero_grad).
    value = loss.item()
    total = value if all_ranks is None else all_ranks(loss.detach().double().reshape(1)).item()
    if not math.isfinite(total):
        became = value if not math.isfinite(value) else f"{total} on another rank"
        raise Diverged(f"the training loss became {became}; the learning rate is probably too "
                       f"high", option="lr")
    scaler.step(optimizer)
    scaler.update()
    return value, logits.detach()
