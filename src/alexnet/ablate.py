"""`alexnet ablate`: the same seed and recipe, one idea of the paper changed at a time.

    alexnet ablate --data shapes --budget 4000 [--epochs 2] [--arms baseline,no-lrn] [--out DIR]

The budget. --budget N is the number of training images each arm sees, summed over its epochs: an
arm trains --epochs E passes over the first N/E training images (E is raised when N/E would exceed
the training set). A count of images, unlike a time limit, gives the same runs on any machine.
Batches are whole (drop_last), so an arm trains E·⌊N/E/B⌋·B images; the table says how many.

Arms (ARMS): the paper's net (baseline), then each idea switched off or swapped for its
alternative, plus `reseed`, the baseline with seed S+1: how far a result moves by chance alone, the
yardstick against which the other differences must be read. Every arm is an `alexnet train` run
(train.main) in DIR/<arm>; an arm whose results.json exists is skipped, one with a checkpoint but no
results is resumed from it, so an interrupted ablation goes on where it stopped.

The activation study (the paper's Figure 1: a ReLU net reached 25% training error six times sooner
than a tanh net) is a small loop of its own, since it needs what train.main does not record: the
running training error after every step. Per activation (relu, tanh, sigmoid), from the same
initial weights: the gradient norm of every conv/fc weight on one batch at initialisation
(vanishing gradients), the fraction of exact zeros per layer on fixed val images before and after
training (sparsity), and the steps, images and seconds until the training error over the last
--window images falls to --threshold. Its results are cached per activation in DIR/activation/.

Outputs in DIR: results.md (the tables), results.json, ablation.png (validation error and losses
per arm), activation.png (training error against steps, gradient norms, sparsity), ablate.json
(the settings; a rerun with other settings into the same DIR is refused).
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import deque
from pathlib import Path
from typing import get_type_hints

import torch
import torch.nn.functional as F

from . import train
from .config import TrainConfig, add_dataclass_arguments, resolve_train_config
from .data import open_dataset
from .errors import AlexNetError, Diverged
from .io import atomic_write_json
from .model import RELU_LAYERS
from .options import arms as option_arms
from .predictor import Predictor
from .progress import Progress
from .step import train_step
from .visualize.ablation import crossing, format_arms_table, write_report
from .visualize.activations import sparsity

# name -> (TrainConfig changes, what changes, what the paper reports about it). Beside the baseline
# and the reseed, the arms are those the options declare (ModelOptions and TrainConfig fields).
ARMS: dict[str, tuple[dict, str, str]] = {
    "baseline": ({}, "the paper's net", "—"),
    "reseed": ({"seed": +1}, "seed S+1 (chance alone)", "—"),
    **option_arms(TrainConfig),
}
ACTIVATIONS = ("relu", "tanh", "sigmoid")
# The baseline has every idea of the paper on, whatever the recipe preset says (the demo's turns
# dropout off for its short run; an ablation of dropout needs it on): the declared defaults of
# the fields that have arms, which are the paper's.
PAPER_IDEAS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.metadata["arms"]}
# TrainConfig fields the arms vary or ablate sets itself; the rest make up the shared recipe.
NOT_SHARED = set(PAPER_IDEAS) | {"variant", "weights", "train_images", "resume", "model_parallel"}
RUN_ONLY = {"workers", "progress", "device", "out"}  # may differ when an ablation is continued
PROBE_IMAGES = 32  # val images on which sparsity is measured


# --- the plan -------------------------------------------------------------------------------------

def plan_budget(budget: int, epochs: int, n_train: int, batch: int) -> tuple[int, int]:
    """(epochs, images per epoch) for `budget` training images per arm; see the module doc."""
    if budget < 1 or epochs < 1:
        raise AlexNetError("--budget and --epochs must be >= 1")
    epochs = max(epochs, math.ceil(budget / n_train))
    per_epoch = budget // epochs
    if per_epoch < batch:
        raise AlexNetError(f"--budget {budget} over {epochs} epoch(s) is {per_epoch} images per "
                        f"epoch, less than one batch of {batch}: raise --budget or lower "
                        f"--batch-size/--epochs")
    return epochs, per_epoch


def arm_given(shared: dict, arm: str, out: Path) -> dict:
    """The `alexnet train` options of one arm: the shared recipe plus the arm's one change."""
    change = dict(ARMS[arm][0])
    if "seed" in change:
        change["seed"] = shared["seed"] + change["seed"]
    return {**PAPER_IDEAS, **shared, **change, "out": str(out / arm)}


def settings_of(shared: dict, args) -> dict:
    """What defines the results (compared when an ablation directory is used again)."""
    return {"shared": {k: v for k, v in shared.items() if k not in RUN_ONLY},
            "budget": args.budget, "threshold": args.threshold, "window": args.window,
            "study_budget": args.study_budget or args.budget}


def check_settings(out: Path, settings: dict) -> None:
    path = out / "ablate.json"
    if path.is_file():
        before = json.loads(path.read_text())
        diff = sorted(k for k in set(before) | set(settings)
                      if k != "shared" and before.get(k) != settings.get(k))
        diff += sorted(f"--{k.replace('_', '-')}" for k in set(before.get("shared", {}))
                       | set(settings["shared"])
                       if before.get("shared", {}).get(k) != settings["shared"].get(k))
        if diff:
            raise AlexNetError(f"{out} holds an ablation with other settings ({', '.join(diff)}); "
                            f"use another --out")
    atomic_write_json(path, settings)


# --- the arms -------------------------------------------------------------------------------------

def run_arm(given: dict, run_only: dict) -> Path:
    """Train one arm, or skip it when finished, or resume it from its checkpoint. An arm whose
    loss diverges is recorded as such (diverged.json) and the ablation goes on: a saturating
    activation blowing up is a result, not a reason to lose the other arms."""
    run = Path(given["out"])
    if (run / "results.json").is_file() or (run / "diverged.json").is_file():
        print(f"ablate: {run.name} is finished, skipped", flush=True)
        return run
    try:
        if (run / "checkpoint.pt").is_file():
            print(f"ablate: {run.name} resumed from its checkpoint", flush=True)
            train.main(*train.resume_config(run, run_only))
        else:
            print(f"ablate: {run.name}: training", flush=True)
            train.main(resolve_train_config(given))
    except Diverged as e:
        print(f"ablate: {run.name} diverged: {e}", flush=True)
        atomic_write_json(run / "diverged.json", {"message": str(e)})
    return run


def arm_row(arm: str, run: Path) -> dict:
    """One row of the table from a finished run directory."""
    if (run / "diverged.json").is_file():
        message = json.loads((run / "diverged.json").read_text())["message"]
        return {"arm": arm, "change": ARMS[arm][1], "paper": ARMS[arm][2], "diverged": message}
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    last = history[-1]
    batches = config["train_images"] // config["batch_size"]
    row = {"arm": arm, "change": ARMS[arm][1], "paper": ARMS[arm][2],
           "val_top1_error": results["1-crop"]["top1_error"],
           "val_top5_error": results["1-crop"]["top5_error"],
           "train_loss": last["train_loss"], "val_loss": last["val_loss"],
           "images_trained": len(history) * batches * config["batch_size"],
           "val_images": results["1-crop"]["images"], "epochs": len(history),
           "seconds": sum(h["seconds"] for h in history),
           "img_per_s": sum(h["img_per_s"] for h in history) / len(history),
           "history": history}
    if "10-crop" in results:
        row["val_top1_error_10crop"] = results["10-crop"]["top1_error"]
    return row


# --- the activation study -------------------------------------------------------------------------

def activation_study(cfg: TrainConfig, out: Path, steps: int, threshold: float, window: int,
                     activations=ACTIVATIONS) -> dict[str, dict]:
    """{activation: result} for each activation, cached in out/activation/<name>.json."""
    results = {}
    for act in activations:
        path = out / "activation" / f"{act}.json"
        if path.is_file():
            print(f"ablate: activation study, {act} is finished, skipped", flush=True)
            results[act] = json.loads(path.read_text())
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
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        torch.manual_seed(seed * 1_000_003 + epoch + 500_009)  # dropout masks
        for images, labels in loader:
            if step == steps:
                return
            if loader.transform is None:  # else the loader has augmented them (on the CPU)
                images = augment.train(images.to(rt.device), generator=gen)
            x = rt.to_input(images)
            yield step, x, labels.to(rt.device)
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
    bar = Progress(steps, f"activation study, {cfg.activation}", enabled=cfg.progress)
    t.model.train()
    for step, x, labels in _batches(t.train_loader, t.augment, t.rt, cfg.seed, steps):
        if step == 0:  # at initialisation, on the first training batch
            result["grad_norms"] = grad_norms(t.model, t.rt, x, labels)
            start = time.perf_counter()
        t.schedule.apply(t.optimizer, step)
        try:
            loss, logits = train_step(t.model, t.optimizer, t.scaler, x, labels,
                                      autocast=t.rt.autocast)
        except Diverged:
            result["diverged"] = step + 1
            break
        running.add((logits.argmax(1) != labels).sum().item(), len(labels))
        seconds = time.perf_counter() - start
        curve.append([step + 1, round(seconds, 3), running.value, loss])
        bar.update(loss=f"{loss:.3f}", train_err=f"{running.value:.1%}")
    bar.close()
    result.update(steps=len(curve), seconds=time.perf_counter() - start, curve=curve,
                  final_error=curve[-1][2] if curve else None,
                  sparsity_trained=zero_fractions(t, probe))
    result["reached"] = crossing(result, threshold)
    return result


# --- the command ----------------------------------------------------------------------------------

def _recipe_class():
    """TrainConfig's shared fields as a dataclass, so each becomes the same --flag as in `alexnet
    train`; a few get ablate's meaning."""
    hints = get_type_hints(TrainConfig)
    ours = {"epochs": (2, "passes over the first budget/epochs training images (default 2)"),
            "out": ("runs/ablate", "ablation directory, one run per arm inside"),
            "eval_crops": (1, "final evaluation: 1 or 10 crops (default 1: ten is 10× slower)")}
    spec = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_SHARED:
            continue
        default, help_ = ours.get(f.name, (f.default, f.metadata.get("help", "")))
        spec.append((f.name, hints[f.name], dataclasses.field(default=default,
                                                              metadata={"help": help_})))
    return dataclasses.make_dataclass("AblateRecipe", spec)


RECIPE = _recipe_class()
STUDY_OPTIONS = ("budget", "arms", "study", "study_budget", "threshold", "window")


def add_arguments(parser) -> None:
    parser.add_argument("--budget", type=int, required=True,
                        help="training images per arm, summed over its epochs")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated, from {', '.join(ARMS)} (default: all; baseline "
                        "is always run), or 'none' for the activation study alone")
    parser.add_argument("--study", default=",".join(ACTIVATIONS),
                        help="activations of the activation study (default relu,tanh,sigmoid; "
                        "'none' to skip it)")
    parser.add_argument("--study-budget", type=int, default=0,
                        help="training images per activation in the study (default: --budget)")
    parser.add_argument("--threshold", type=float, default=0.25,
                        help="the study's running training error to reach (default 0.25)")
    parser.add_argument("--window", type=int, default=512,
                        help="the study's running error is over this many last images (512)")
    add_dataclass_arguments(parser, RECIPE)


def _names(text: str, allowed, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise AlexNetError(f"{flag}: unknown {', '.join(bad) or 'empty list'}; choose from "
                        f"{', '.join(allowed)}")
    return names


def _check(args) -> None:
    if not 0 < args.threshold < 1:
        raise AlexNetError("--threshold must be between 0 and 1 (a fraction, e.g. 0.25)")
    if args.window < 1 or args.study_budget < 0:
        raise AlexNetError("--window must be >= 1 and --study-budget >= 0")


def _plan(args, shared: dict, base: TrainConfig) -> str:
    """Turn the budget into epochs × images per epoch (into `shared`); describe it."""
    n_train = len(open_dataset(base.data, "train", seed=base.seed, val_labels=base.val_labels))
    epochs, per_epoch = plan_budget(args.budget, base.epochs, n_train, base.batch_size)
    shared.update(epochs=epochs, train_images=per_epoch)
    b = base.batch_size
    plan = (f"Budget: {args.budget} training images per arm = {epochs} epoch(s) over the first "
            f"{per_epoch} of the {n_train} training images, batch {b} "
            f"(whole batches: {epochs * (per_epoch // b) * b} images).")
    if args.study.strip() != "none":
        steps = (args.study_budget or args.budget) // b
        if steps < 1:
            raise AlexNetError(f"--study-budget is less than one batch of {b}")
        plan += f" Activation study: {steps} steps of {b} images per activation."
    return plan


def _run_study(args, shared: dict, out: Path, acts: list[str]) -> dict:
    steps = (args.study_budget or args.budget) // shared["batch_size"]
    per_epoch_steps = shared["train_images"] // shared["batch_size"]
    given = {**arm_given(shared, "baseline", out), "epochs": math.ceil(steps / per_epoch_steps)}
    return activation_study(resolve_train_config(given), out, steps, args.threshold,
                            args.window, acts)


def run(args) -> int:
    _check(args)
    given = {k: v for k, v in vars(args).items() if k not in STUDY_OPTIONS}
    defaults = {f.name: f.default for f in dataclasses.fields(RECIPE)}
    shared = {**{k: defaults[k] for k in ("seed", "epochs", "eval_crops", "out")}, **given}
    out = Path(shared.pop("out"))
    arms = [] if args.arms.strip() == "none" else [
        a for a in ARMS if a == "baseline" or a in _names(args.arms, ARMS, "--arms")]
    acts = [] if args.study.strip() == "none" else _names(args.study, ACTIVATIONS, "--study")
    if not arms and not acts:
        raise AlexNetError("--arms none and --study none: nothing to do")
    base = resolve_train_config(arm_given(shared, "baseline", out))  # the recipe, validated
    shared["batch_size"] = base.batch_size  # the recipe's, should the recipe set it
    plan = _plan(args, shared, base)
    print(f"ablate: {plan}", flush=True)
    settings = settings_of(shared, args)
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    run_only = {k: shared[k] for k in ("workers", "progress", "device") if k in shared}
    rows = [arm_row(arm, run_arm(arm_given(shared, arm, out), run_only)) for arm in arms]
    study = _run_study(args, shared, out, acts) if acts else {}
    write_report(out, base, settings, plan, rows, study)
    if rows:
        print(format_arms_table(rows))
    print(f"ablate: wrote {out / 'results.md'}")
    return 0
