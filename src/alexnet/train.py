"""`alexnet train`: the paper's training recipe (§5), resumable, on one device or many.

Laid out like torchvision's references/classification: `train_one_epoch`, `evaluate` (in
evaluate.py) and `main`. Data parallel runs are launched by torchrun; rank 0 alone prints and writes.

Run directory:
    config.json      the resolved configuration
    metrics.jsonl    one object per epoch (rewritten atomically from the checkpoint's history)
    events.*         TensorBoard scalars
    checkpoint.pt    the latest state (model, optimizer, schedule, epoch, RNG, config)
    best.pt          the weights with the lowest validation top-1 error so far
    curves.png       loss and error per epoch
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from . import accel, parallel
from .checkpoint import (check_compatible, load_checkpoint, rng_state, save_checkpoint,
                         set_rng_state)
from .config import TrainConfig, add_dataclass_arguments, model_options, resolve_train_config
from .data import Loader, open_dataset
from .data.augment import Augment
from .errors import UserError
from .evaluate import evaluate, format_results_table
from .io import atomic_write_json, atomic_write_text
from .model import alexnet
from .progress import Progress
from .schedule import LRSchedule

# Options that may change when a run is resumed; any other would break reproducibility.
RESUME_MAY_CHANGE = {"resume", "epochs", "workers", "progress", "device"}


class Diverged(UserError):
    pass


def train_one_epoch(model, optimizer, scaler, schedule, loader, augment, ctx, epoch, cfg, info):
    """One pass over this rank's share of the training data; returns (mean loss, img/s)."""
    model.train()
    gen = torch.Generator(device=ctx.device).manual_seed(_seed(cfg.seed, epoch, info.rank, 1))
    torch.manual_seed(_seed(cfg.seed, epoch, info.rank, 2))  # dropout masks, reproducibly per epoch
    step0 = epoch * len(loader)
    loss_sum, seen = torch.zeros((), dtype=torch.float64), 0
    bar = Progress(len(loader), f"epoch {epoch + 1}/{cfg.epochs}", enabled=cfg.progress and info.is_main)
    start = time.perf_counter()
    for i, (images, labels) in enumerate(loader):
        lr = schedule.apply(optimizer, step0 + i)
        x = augment.train(images.to(ctx.device, non_blocking=True), generator=gen)
        x = ctx.to_input(x)
        labels = labels.to(ctx.output_device, non_blocking=True)
        with ctx.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=cfg.label_smoothing)
        loss_value = loss.item()  # syncs; also what the progress bar shows
        if not math.isfinite(loss_value):
            raise Diverged(f"loss became {loss_value} at epoch {epoch + 1}, step {i + 1}; the last "
                           f"good checkpoint is kept; try a lower --lr")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # fp16 only; a no-op pass-through for bf16/fp32
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss_value * len(labels)
        seen += len(labels)
        rate = seen * info.world_size / (time.perf_counter() - start)
        bar.update(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
    bar.close()
    seconds = time.perf_counter() - start
    total = parallel.all_reduce_sum(torch.tensor([loss_sum.item(), float(seen)]), info)
    return (total[0] / max(total[1], 1)).item(), total[1].item() / seconds


def _seed(seed: int, epoch: int, rank: int, stream: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch, rank, purpose)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + stream) % (2 ** 63)


# --- set-up ---------------------------------------------------------------------------------------

def _datasets(cfg: TrainConfig):
    train_set = open_dataset(cfg.data, "train", seed=cfg.seed, val_labels=cfg.val_labels)
    val_set = open_dataset(cfg.data, "val", seed=cfg.seed, val_labels=cfg.val_labels)
    if len(train_set) == 0 or len(val_set) == 0:
        raise UserError(f"{cfg.data}: the train or val split is empty")
    if cfg.train_images:
        train_set = _Head(train_set, cfg.train_images)
    return train_set, val_set


class _Head:
    """The first n images of an ImageSet (a quick way to train on less data)."""

    def __init__(self, base, n: int):
        self.base, self.n = base, min(n, len(base))
        self.classes, self.channels = base.classes, base.channels
        self.labels = base.labels[: self.n]

    def __len__(self):
        return self.n

    def get_batch(self, indices):
        return self.base.get_batch(indices)

    def stats(self):
        return self.base.stats()


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int,
                stats: dict | None = None) -> torch.nn.Module:
    try:
        return alexnet(cfg.variant, num_classes=num_classes, in_channels=in_channels,
                       **model_options(cfg, stats))
    except ValueError as e:
        raise UserError(str(e)) from None


def init_from_weights(model: torch.nn.Module, path: str, variant: str) -> None:
    """Fine-tuning: load a weights file into `model`, all but a classifier of another size."""
    from .hub import load_any
    source = load_any(path)
    if source["arch"]["variant"] != variant:
        raise UserError(f"--weights {path} holds variant {source['arch']['variant']!r}; "
                        f"use --variant {source['arch']['variant']}")
    own = model.state_dict()
    state = {k: v for k, v in source["model"].items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(state))
    if any(not k.startswith(("classifier.fc8", "classifier.6")) for k in missing):
        raise UserError(f"--weights {path} does not fit this network (e.g. {missing[0]})")
    model.load_state_dict(state, strict=False)
    if missing:
        print(f"--weights: {len(missing)} classifier tensors left fresh ({', '.join(missing)})")


def arch_of(cfg: TrainConfig, num_classes: int, in_channels: int, stats: dict) -> dict:
    return {"variant": cfg.variant, "num_classes": num_classes, "in_channels": in_channels,
            "options": model_options(cfg, stats)}


def _run_dir(cfg: TrainConfig, given: dict) -> Path:
    """A fresh run directory. An explicit --out holding a run is an error (nothing is overwritten);
    the default one is numbered instead, so that `make demo` can run again."""
    out = Path(cfg.out)
    if (out / "checkpoint.pt").exists():
        if "out" in given:
            raise UserError(f"{out} already holds a run; continue it with --resume {out} or "
                            f"choose another --out")
        n = 2
        while (Path(f"{cfg.out}-{n}") / "checkpoint.pt").exists():
            n += 1
        out = Path(f"{cfg.out}-{n}")
    return out


def _resume_config(given: dict) -> tuple[TrainConfig, dict]:
    ckpt = load_checkpoint(Path(given["resume"]) / "checkpoint.pt")
    changed = sorted(k for k in set(given) - RESUME_MAY_CHANGE if k in ckpt["config"]
                     and given[k] != ckpt["config"][k])
    if changed:
        raise UserError(f"cannot change {', '.join('--' + c.replace('_', '-') for c in changed)}"
                        f" when resuming (only {', '.join(sorted(RESUME_MAY_CHANGE))} may change)")
    values = {**ckpt["config"], **{k: given[k] for k in given if k in RESUME_MAY_CHANGE}}
    values["out"] = str(given["resume"])
    return TrainConfig(**values), ckpt


def make_optimizer(model, cfg: TrainConfig, device):
    # Paper §5: weight decay 5e-4 on the weights. The paper's update rule applies it to every
    # parameter it lists (w); we apply it to biases too, as most frameworks do by default.
    if cfg.optimizer == "adamw":  # not in paper (the demo's); its decay is decoupled: w -= lr·wd·w
        return accel.make_adamw(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                device=device)
    return accel.make_sgd(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, device=device)


def _history_outputs(run: Path, history: list[dict], writer) -> None:
    atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    if writer is not None:
        h = history[-1]
        for key in ("train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr", "img_per_s"):
            writer.add_scalar(key, h[key], h["epoch"])
        writer.flush()
    from .visualize import plot_curves
    plot_curves({run.name: history}, run / "curves.png")


def _tensorboard(run: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a declared dependency; tolerate its absence anyway
        return None
    return SummaryWriter(log_dir=str(run))


def main(cfg: TrainConfig, given: dict, ckpt: dict | None = None) -> dict:
    info = parallel.init_distributed(cfg.device)
    try:
        return _main(cfg, given, ckpt, info)
    finally:
        parallel.cleanup_distributed()


def _main(cfg: TrainConfig, given: dict, ckpt: dict | None, info) -> dict:
    from .runtime import Runtime

    torch.manual_seed(cfg.seed)
    train_set, val_set = _datasets(cfg)
    num_classes, in_channels = len(train_set.classes), train_set.channels
    if ckpt is not None:
        check_compatible(ckpt, num_classes, cfg.variant)
    # A resumed run keeps the statistics (and so the input scale) it started with.
    stats = ckpt["stats"] if ckpt is not None else train_set.stats()
    model = build_model(cfg, num_classes, in_channels, stats)
    if cfg.weights and ckpt is None:
        init_from_weights(model, cfg.weights, cfg.variant)
    rt = Runtime.create(info.device, cfg.precision, cfg.channels_last, cfg.model_parallel)
    model = rt.place(model)
    optimizer = make_optimizer(model, cfg, rt.device)
    scaler = accel.grad_scaler(rt.device, rt.precision)
    augment = Augment(stats, crop_size=rt.unwrap(model).input_size, flip=cfg.flip,
                      lighting_std=cfg.lighting_std, device=rt.device)
    train_loader = Loader(train_set, cfg.batch_size // info.world_size, shuffle=True, seed=cfg.seed,
                          rank=info.rank, world_size=info.world_size, drop_last=True,
                          workers=cfg.workers)
    # even=False: no rank pads its share with repeats, so the summed metrics are exact.
    val_loader = Loader(val_set, cfg.batch_size // info.world_size, shuffle=False, seed=cfg.seed,
                        rank=info.rank, world_size=info.world_size, workers=cfg.workers,
                        even=False)
    if len(train_loader) == 0:
        raise UserError(f"--batch-size {cfg.batch_size} is larger than the training set "
                        f"({len(train_set)} images)")
    schedule = LRSchedule(cfg.lr, cfg.schedule, cfg.epochs, len(train_loader), cfg.warmup_epochs,
                          cfg.step_epochs, cfg.patience, cfg.lr_drops)
    model = parallel.wrap_ddp(model, info)
    if cfg.compile:
        model = torch.compile(model)

    run = Path(cfg.out) if ckpt is not None else _run_dir(cfg, given)
    history, best, start_epoch = [], math.inf, 0
    if ckpt is not None:
        rt.load_state_dict(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt.get("scaler", {}))
        history, best, start_epoch = ckpt["history"], ckpt["best_top1_error"], ckpt["epoch"]
        set_rng_state(ckpt["rng"])
    writer = None
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / "config.json", asdict(cfg))
        writer = _tensorboard(run)
        print(f"run {run}: {cfg.variant} AlexNet, {num_classes} classes, {len(train_set)} train / "
              f"{len(val_set)} val images of {cfg.data}, {rt.describe()}, "
              f"world size {info.world_size}", flush=True)

    base = {"arch": arch_of(cfg, num_classes, in_channels, stats), "classes": list(train_set.classes),
            "stats": stats, "crop_size": augment.crop_size}
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train_loader.set_epoch(epoch)
        train_loss, img_s = train_one_epoch(model, optimizer, scaler, schedule, train_loader,
                                            augment, rt, epoch, cfg, info)
        val = evaluate(model, val_loader, augment, rt, crops=1, info=info)
        lr = optimizer.param_groups[0]["lr"]
        dropped = schedule.end_epoch(val["top1_error"])
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["loss"],
                        "val_top1_error": val["top1_error"], "val_top5_error": val["top5_error"],
                        "lr": lr, "img_per_s": img_s, "seconds": time.perf_counter() - t0})
        improved = val["top1_error"] < best
        best = min(best, val["top1_error"])
        if info.is_main:
            state = {**base, "model": rt.state_dict(model), "optimizer": optimizer.state_dict(),
                     "scheduler": schedule.state_dict(), "scaler": scaler.state_dict(),
                     "epoch": epoch + 1, "rng": rng_state(),
                     "config": asdict(cfg), "history": history, "best_top1_error": best}
            save_checkpoint(run / "checkpoint.pt", state)
            if improved:
                save_checkpoint(run / "best.pt", {**base, "model": state["model"],
                                                  "epoch": epoch + 1, "config": asdict(cfg)})
            _history_outputs(run, history, writer)
            h = history[-1]
            print(f"epoch {epoch + 1:3d}/{cfg.epochs}  train loss {train_loss:.4f}  val top-1 err "
                  f"{h['val_top1_error']:6.2%}  top-5 err {h['val_top5_error']:6.2%}  lr {lr:.2e}"
                  f"{' (divided by 10)' if dropped else ''}  {img_s:.0f} img/s  "
                  f"{h['seconds']:.0f} s", flush=True)

    results = {f"{crops}-crop": evaluate(model, val_loader, augment, rt, crops=crops, info=info)
               for crops in sorted({1, cfg.eval_crops})}
    if info.is_main:
        atomic_write_json(run / "results.json", results)
        print(format_results_table(results), flush=True)
        if writer is not None:
            writer.close()
    return {"run": str(run), "history": history, "results": results}


def add_arguments(parser) -> None:
    add_dataclass_arguments(parser, TrainConfig)


def run(args) -> int:
    given = vars(args).copy()
    if given.get("resume"):
        cfg, ckpt = _resume_config(given)
    else:
        cfg, ckpt = resolve_train_config(given), None
    main(cfg, given, ckpt)
    return 0
