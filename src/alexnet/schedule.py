"""The learning-rate schedule, set once per step.

paper    (§5) "divide the learning rate by 10 when the validation error rate stopped improving with
         the current learning rate"; the paper did this three times over ~90 epochs.
step     divide by 10 every `step_epochs` epochs (a common fixed stand-in for the above).
cosine   half a cosine from lr to 0 over the run (ours, for short runs such as the demo).
An optional linear warm-up (not in the paper) multiplies any of them over the first epochs.

The paper's update (§5) keeps a velocity in units of the step: v <- 0.9 v - 0.0005 ε w - ε g,
w <- w + v. torch's SGD keeps it in units of the gradient: b <- 0.9 b + g + 0.0005 w, w <- w - ε b.
The two agree while ε stays put (v = -ε b), but when ε is divided by 10 torch's next steps shrink
at once, while the paper's velocity carries on and fades at 0.9 a step. So at each of the paper's
drops (plateau, step) `apply` multiplies every momentum buffer by ε_old / ε_new, which makes
torch's update the paper's exactly. Warm-up and cosine (ours, not the paper's) change ε a little
every step; there the buffers are left as torch keeps them, which is Goyal et al.'s (2017)
"momentum correction" of the paper's form, and saves a pass over 61M numbers per step.

The state is a handful of numbers, so it checkpoints as a plain dict.
"""
from __future__ import annotations

import math

import torch


class LRSchedule:
    def __init__(self, base_lr: float, kind: str, epochs: int, steps_per_epoch: int,
                 warmup_epochs: float = 0.0, step_epochs: int = 30, patience: int = 2,
                 max_drops: int = 3):
        self.base_lr, self.kind, self.epochs = base_lr, kind, epochs
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.warmup_steps = int(round(warmup_epochs * self.steps_per_epoch))
        self.step_epochs, self.patience, self.max_drops = step_epochs, patience, max_drops
        # plateau state
        self.drops, self.best, self.bad_epochs = 0, math.inf, 0

    def lr_at(self, step: int) -> float:
        """The learning rate for global step `step` (0-based, counted over the whole run)."""
        epoch = step / self.steps_per_epoch
        if self.kind == "plateau":
            factor = 0.1 ** self.drops
        elif self.kind == "step":
            factor = 0.1 ** int(epoch // self.step_epochs)
        elif self.kind == "cosine":
            total = self.epochs * self.steps_per_epoch
            factor = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        else:
            raise ValueError(f"unknown schedule {self.kind!r}")
        if step < self.warmup_steps:
            factor *= (step + 1) / self.warmup_steps
        return self.base_lr * factor

    def apply(self, optimizer, step: int) -> float:
        """Set the lr of `step`; at one of the paper's drops, carry the velocity (module doc)."""
        lr = self.lr_at(step)
        drops = self.kind in ("plateau", "step") and step >= self.warmup_steps
        for group in optimizer.param_groups:
            old = group["lr"]
            if drops and lr != old and old > 0 and lr > 0:
                carry_velocity(optimizer, group, old / lr)
            group["lr"] = lr
        return lr

    def end_epoch(self, val_error: float) -> bool:
        """Tell the schedule the epoch's validation error; True when the lr was just divided."""
        if self.kind != "plateau":
            return False
        if val_error < self.best - 1e-9:
            self.best, self.bad_epochs = val_error, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience and self.drops < self.max_drops:
            self.drops, self.bad_epochs = self.drops + 1, 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"drops": self.drops, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.drops, self.best, self.bad_epochs = state["drops"], state["best"], state["bad_epochs"]


@torch.no_grad()
def carry_velocity(optimizer, group: dict, ratio: float) -> None:
    """Scale the group's SGD momentum buffers by `ratio` (= ε_old / ε_new), so that the next
    step moves the weights by the paper's velocity, not one rescaled to the new ε. Optimisers
    without momentum buffers (AdamW) are left alone: their update has no velocity in these units."""
    for p in group["params"]:
        buf = optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            buf.mul_(ratio)
