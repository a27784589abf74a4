"""The two studies `alexnet ablate` runs beside its arms: the activation study (running training
error per step, gradient norms at initialisation, sparsity: the paper's Figure 1 on our data) and
the overfitting runs of the dropout study (train and val error in eval mode over epochs)."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections import deque
from pathlib import Path

import torch
import torch.nn.functional as F

from . import train
from .config import TrainConfig
from .data import Loader
from .data.ahead import augmented
from .errors import Diverged
from .evaluate import evaluate
from .io import atomic_write_json, read_cache
from .model import RELU_LAYERS
from .predictor import Predictor
from .progress import Progress
from .step import train_step
from .visualize.ablation import crossing
from .visualize.activations import sparsity

ACTIVATIONS = ("relu", "tanh", "sigmoid")
PROBE_IMAGES = 32  # val images on which sparsity is measured
OVERFIT_POINTS = 10  # epochs at which the dropout study measures train and val error, at most


def overfit_run(cfg: TrainConfig, images: int) -> dict:
    """Train cfg.epochs epochs over cfg.train_images images, measuring after each epoch (at
    most OVERFIT_POINTS of them, evenly spaced, and the last) the error and loss, in eval mode
    (no dropout, centre crop), on those training images and on the first `images` val images.
    A plateau schedule sees the measured epochs only (the demo's cosine needs none)."""
    t = train.setup(cfg)
    sets = {"train": t.train_loader.imageset, "val": train._Head(t.val_loader.imageset, images)}
    loaders = {k: Loader(v, cfg.batch_size, shuffle=False, seed=cfg.seed, workers=0, even=False)
               for k, v in sets.items()}
    # the sizes measured: --overfit-images asks for more than a split may hold
    run = {"dropout": cfg.dropout, "seed": cfg.seed, "curve": [], "diverged": None,
           **{f"{k}_images": len(v) for k, v in sets.items()}}
    every = math.ceil(cfg.epochs / OVERFIT_POINTS)
    for epoch in range(cfg.epochs):
        t.train_loader.set_epoch(epoch)
        try:
            augmented_loss, _ = train.train_one_epoch(t, epoch)
        except Diverged as e:
            run["diverged"] = str(e)
            break
        if (epoch + 1) % every and epoch + 1 < cfg.epochs:
            continue  # measured at OVERFIT_POINTS epochs at most: each costs 2 × images
        predictor = Predictor.snapshot(t.model, t.meta, t.rt)
        m = {k: evaluate(predictor, loader) for k, loader in loaders.items()}
        t.schedule.end_epoch(m["val"]["top1_error"])
        run["curve"].append({"epoch": epoch + 1, "augmented_train_loss": augmented_loss,
                             **{f"{k}_{x}": m[k][y] for k in m for x, y in
                                (("error", "top1_error"), ("loss", "loss"))}})
        last = run["curve"][-1]
        print(f"  epoch {epoch + 1}/{cfg.epochs}: train error {last['train_error']:.1%} "
              f"(loss {last['train_loss']:.3f}), val {last['val_error']:.1%} "
              f"({last['val_loss']:.3f})", flush=True)
    return run


# --- the activation study -------------------------------------------------------------------------

NUMBER, NONE = (int, float), type(None)


def rows_of(width: int):
    """A predicate: a list of rows of `width` numbers (the activation study's curve)."""
    return lambda v: isinstance(v, list) and all(
        isinstance(r, list) and len(r) == width and all(isinstance(x, NUMBER) for x in r)
        for r in v)


def records_of(*keys: str):
    """A predicate: a list of objects, each with a number at every one of `keys`."""
    return lambda v: isinstance(v, list) and all(
        isinstance(r, dict) and all(isinstance(r.get(k), NUMBER) for k in keys) for r in v)


def by_layer(*layers: str):
    """A predicate: an object with a number for each of `layers` (the report's tables index every
    study's result by the layers)."""
    return lambda v: isinstance(v, dict) and all(isinstance(v.get(k), NUMBER) for k in layers)


# What a cached result must hold (key: type, or a predicate for what lies deeper) to be used:
# what the report and the plots read of it.
ACTIVATION_FIELDS = {"batch_size": int, "window": int, "threshold": NUMBER, "steps": int,
                     "seconds": NUMBER, "curve": rows_of(4),
                     "reached": lambda v: v is None or records_of("steps")([v]),
                     "diverged": (int, NONE), "grad_norms": by_layer(*RELU_LAYERS, "fc8"),
                     "sparsity_init": by_layer(*RELU_LAYERS),
                     "sparsity_trained": by_layer(*RELU_LAYERS),
                     "final_error": (*NUMBER, NONE), "probe_images": int}


def note(message: str) -> None:
    """A line of `alexnet ablate`'s progress."""
    print(f"ablate: {message}", flush=True)


def activation_study(cfg: TrainConfig, out: Path, steps: int, threshold: float, window: int,
                     activations=ACTIVATIONS) -> dict[str, dict]:
    """{activation: result} for each activation, cached in out/activation/<name>.json."""
    results = {}
    for act in activations:
        path = out / "activation" / f"{act}.json"
        if (result := read_cache(path, ACTIVATION_FIELDS, note)) is not None:
            print(f"ablate: activation study, {act} is finished, skipped", flush=True)
            results[act] = result
            continue
        print(f"ablate: activation study, {act}: {steps} steps", flush=True)
        results[act] = study_one(dataclasses.replace(cfg, activation=act), steps, threshold,
                                 window, probe_images=PROBE_IMAGES)
        atomic_write_json(path, results[act])
    return results


def _study_setup(cfg: TrainConfig, probe_images: int):
    """The run's set-up (train.setup seeds the same initial weights for every activation) and
    the fixed val images on which sparsity is measured."""
    t = train.setup(cfg)
    val = t.val_loader.imageset
    return t, val.get_batch(range(min(probe_images, len(val))))


def grad_norms(model, rt, x: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """‖∂loss/∂W‖ of every conv and fc weight, on one batch (dropout masks seeded by the caller)."""
    model.zero_grad(set_to_none=True)
    with rt.autocast():
        logits = model(x)
    F.cross_entropy(logits.float(), labels).backward()
    norms = {name.rsplit(".", 1)[-1]: m.weight.grad.float().norm().item()
             for name, m in rt.unwrap(model).named_modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    model.zero_grad(set_to_none=True)
    return norms


def zero_fractions(t, images: torch.Tensor) -> dict[str, float]:
    """Fraction of exact zeros after each layer's non-linearity, on fixed images, eval mode."""
    acts = Predictor.snapshot(t.model, t.meta, t.rt).extract(images, RELU_LAYERS)
    t.model.train()
    return sparsity(acts)


class RunningError:
    """The training error over the last `window` images, counted in whole batches."""

    def __init__(self, window: int):
        self.window, self.batches = window, deque()

    def add(self, wrong: int, n: int) -> None:
        self.batches.append((wrong, n))
        while self.seen - self.batches[0][1] >= self.window:  # keep just enough batches
            self.batches.popleft()

    @property
    def seen(self) -> int:
        return sum(n for _, n in self.batches)

    @property
    def value(self) -> float:
        return sum(w for w, _ in self.batches) / max(self.seen, 1)


def _batches(loader, augment, rt, seed: int, steps: int):
    """(step, augmented images, labels) for `steps` steps, epoch after epoch, reproducibly."""
    step = 0
    for epoch in range(math.ceil(steps / len(loader))):
        loader.set_epoch(epoch)
        # Kept below 2**63 for any allowed seed (torch refuses larger ones); the same stream as
        # before for the seeds the recorded studies used.
        torch.manual_seed((seed * 1_000_003 + epoch + 500_009) % 2 ** 63)  # dropout masks
        # as training has them; none asked for past the last step (on CUDA the thread of
        # data/ahead.py still prepares one ahead)
        with contextlib.closing(augmented(loader, augment)) as batches:
            for images, labels in itertools.islice(batches, steps - step):
                yield step, rt.to_input(images), labels.to(rt.device)
                step += 1


def study_one(cfg: TrainConfig, steps: int, threshold: float, window: int,
              probe_images: int = PROBE_IMAGES) -> dict:
    """Train `steps` steps from the seed's initial weights, recording the running training error
    after every step, the gradient norms at initialisation and the sparsity before and after (on
    the first `probe_images` val images)."""
    t, probe = _study_setup(cfg, probe_images)
    result = {"activation": cfg.activation, "batch_size": cfg.batch_size, "threshold": threshold,
              "window": window, "probe_images": len(probe), "reached": None, "diverged": None,
              "sparsity_init": zero_fractions(t, probe)}
    running, curve, start = RunningError(window), [], time.perf_counter()
    with Progress(steps, f"activation study, {cfg.activation}", enabled=cfg.progress) as bar:
        t.model.train()
        for step, x, labels in _batches(t.train_loader, t.augment, t.rt, cfg.seed, steps):
            if step == 0:  # at initialisation, on the first training batch
                result["grad_norms"] = grad_norms(t.model, t.rt, x, labels)
                start = time.perf_counter()
            t.schedule.apply(t.optimizer, step)
            try:
                loss, logits = train_step(t.model, t.optimizer, t.scaler, x, labels,
                                          autocast=t.rt.autocast, masters=t.masters)
            except Diverged:
                result["diverged"] = step + 1
                break
            running.add((logits.argmax(1) != labels).sum().item(), len(labels))
            seconds = time.perf_counter() - start
            curve.append([step + 1, round(seconds, 3), running.value, loss])
            bar.update(loss=f"{loss:.3f}", train_err=f"{running.value:.1%}")
    result.update(steps=len(curve), seconds=time.perf_counter() - start, curve=curve,
                  final_error=curve[-1][2] if curve else None,
                  sparsity_trained=zero_fractions(t, probe))
    result["reached"] = crossing(result, threshold)
    return result


