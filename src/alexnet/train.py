"""`alexnet train`: the paper's training recipe (§5), resumable, on one device or many.

Laid out like torchvision's references/classification: `train_one_epoch`, `evaluate` (in
evaluate.py) and `main`. Data parallel runs are launched by torchrun; rank 0 alone prints and writes.

The run directory, what it holds and how a run is resumed from it: rundir.py.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import accel, parallel
from .checkpoint import check_compatible, not_finite, rng_state, save_checkpoint, set_rng_state
from .config import (TrainConfig, absolute_paths, add_dataclass_arguments, arch_options,
                     base_lr, resolve_train_config)
from .data import Loader, open_dataset
from .data.ahead import augmented
from .data.augment import Augment
from .errors import AlexNetError, Busy, Diverged, first_line, same_on_every_process
from .evaluate import evaluate, format_results_table, unreadable
from .io import atomic_write_json, atomic_write_text, locked_dir
from .masters import MasterWeights
from .model import alexnet
from .predictor import Predictor
from .progress import Progress
from .rundir import (check_run_files, check_same_data, diverged, fresh_run_dir, kept,
                     resume_config, tensorboard_epoch, tensorboard_writer)
from .runtime import Runtime
from .schedule import LRSchedule
from .step import train_step
from .visualize.curves import plot_curves
from .weights import load_any


@dataclass
class Training:
    """Everything a run trains with, built once by `setup`."""
    cfg: TrainConfig
    info: parallel.DistInfo
    rt: Runtime
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    augment: Augment
    train_loader: Loader
    val_loader: Loader
    meta: dict  # what a checkpoint needs besides the weights: arch, classes, stats, crop_size
    masters: MasterWeights | None = None  # bf16 on the CPU: the weights' bf16 copies (masters.py)


@dataclass
class EpochRates:
    """What `train_one_epoch` measured, besides the loss."""
    img_s: float       # over the whole epoch
    steady: float      # after the first step: the rate to set against `bench model`
    wait_share: float  # of the time after the first step, the share spent between steps
    #                    (under DDP the largest of the ranks')


def train_one_epoch(t: Training, epoch: int) -> tuple[float, EpochRates]:
    """One pass over this rank's share of the training data; returns the mean loss and the rates.

    The steady rate leaves out the first batch's wait and the warm-up (cuDNN's algorithm search,
    compiling). Its time splits in two: inside the steps, and between them (waiting for the next
    batch, mostly). Each step reads its loss before its update, so a GPU has only the update to
    run between steps: a wait_share well above 0 says the data, not the model, sets the pace."""
    cfg, rt, info = t.cfg, t.rt, t.info
    t.model.train()
    torch.manual_seed(_seed(cfg.seed, epoch, info.rank, 2))  # dropout masks, reproducibly per epoch
    step0 = epoch * len(t.train_loader)
    loss_sum, seen, between = 0.0, 0, 0.0
    all_ranks = (lambda v: parallel.all_reduce_sum(v, info)) if info.world_size > 1 else None
    # On an accelerator the batches are augmented there, batched, with the generator the loader's
    # transform would have used; on CUDA the next batch while this one steps (data/ahead.py,
    # a thread). Closed at once on an error, so that the thread stops with the step.
    with Progress(len(t.train_loader), f"epoch {epoch + 1}/{cfg.epochs}",
                  enabled=cfg.progress and info.is_main) as bar, \
            contextlib.closing(augmented(t.train_loader, t.augment)) as batches:
        start = now = time.perf_counter()
        after_first = start, 0  # (time, images) when the first step has ended
        for i, (images, labels) in enumerate(batches):
            begin = time.perf_counter()
            if i > 0:
                between += begin - now
            lr = t.schedule.apply(t.optimizer, step0 + i)
            x = rt.to_input(images)
            labels = labels.to(rt.output_device, non_blocking=True)
            try:
                loss, _ = train_step(t.model, t.optimizer, t.scaler, x, labels,
                                     autocast=rt.autocast, label_smoothing=cfg.label_smoothing,
                                     masters=t.masters, all_ranks=all_ranks)
            except Diverged as e:
                raise diverged(e, cfg, epoch, i) from None
            loss_sum += loss * len(labels)
            seen += len(labels)
            now = time.perf_counter()  # the step has synchronised (train_step reads the loss)
            if i == 0:
                after_first = now, seen
            rate = seen * info.world_size / (now - start)
            bar.update(loss=f"{loss:.3f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
    end = time.perf_counter()
    wait = 0.0
    if seen > after_first[1]:  # the last gap too: the loader's end, the thread's stop
        wait = (between + end - now) / (end - after_first[0])
    # Summed over the ranks: the loss, the images, and each rank's wait share in a slot of its
    # own. The largest is reported: under DDP a rank that waits for data holds every rank's
    # step back (in the gradients' all-reduce), where it counts as the others' step time.
    sums = torch.zeros(2 + info.world_size, dtype=torch.float64)
    sums[0], sums[1], sums[2 + info.rank] = loss_sum, seen, wait
    total = parallel.all_reduce_sum(sums, info)
    rate = total[1].item() / (end - start)
    steady = rate  # one step: nothing after it
    if seen > after_first[1]:
        steady = (seen - after_first[1]) * info.world_size / (end - after_first[0])
    return (total[0] / max(total[1], 1)).item(), EpochRates(rate, steady, total[2:].max().item())


def _seed(seed: int, epoch: int, rank: int, stream: int) -> int:
    """A distinct, reproducible seed per (run seed, epoch, rank, purpose)."""
    return (seed * 1_000_003 + epoch * 10_007 + rank * 101 + stream) % (2 ** 63)


# --- set-up ---------------------------------------------------------------------------------------

def datasets(cfg: TrainConfig):
    """(train set, val set) of the config's data; train_images keeps the first N."""
    train_set = open_dataset(cfg.data, "train", seed=cfg.seed, val_labels=cfg.val_labels)
    val_set = open_dataset(cfg.data, "val", seed=cfg.seed, val_labels=cfg.val_labels)
    if len(train_set) == 0 or len(val_set) == 0:
        raise AlexNetError(f"{cfg.data}: the train or val split is empty", option="data")
    if len(train_set.classes) < 2:  # the loss would be 0 from the first step: nothing to learn
        raise AlexNetError(f"{cfg.data} has {len(train_set.classes)} class; a classifier needs "
                           f"at least 2", option="data")
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

    def __getattr__(self, name):  # read, get_batch, stats, …: the base set's
        return getattr(self.base, name)


def build_model(cfg: TrainConfig, num_classes: int, in_channels: int,
                stats: dict | None = None) -> torch.nn.Module:
    return alexnet(cfg.variant, num_classes=num_classes, in_channels=in_channels,
                   **arch_options(cfg, stats))


def init_from_weights(model: torch.nn.Module, path: str, variant: str, input_norm: str) -> None:
    """Fine-tuning: load a weights file into `model`, all but a classifier of another size."""
    source = load_any(path)
    if source["arch"]["variant"] != variant:
        raise AlexNetError(f"weights {path} hold variant {source['arch']['variant']!r}, not "
                           f"{variant!r}", option="weights")
    # Weights trained on inputs divided by their std (the demo recipe's input_norm) see inputs
    # ~60x too large without it (a first loss of 474 instead of 0.85), and the reverse.
    trained_on = ("mean-std" if source["arch"].get("options", {}).get("input_scale", 1.0) != 1.0
                  else "mean")
    if trained_on != input_norm:  # the flag to give is named, so no option= (it would repeat)
        raise AlexNetError(f"weights {path} were trained with input_norm {trained_on}, this run "
                           f"has {input_norm}: give --input-norm {trained_on}")
    broken = not_finite(source["model"])
    if broken:  # training would stop at its first step, blaming the learning rate
        raise AlexNetError(f"weights {path} are not finite ({broken} holds NaN or inf): the run "
                           f"that wrote them diverged, or the file was damaged", option="weights")
    own = model.state_dict()
    state = {k: v for k, v in source["model"].items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(state))
    if any(not k.startswith(("classifier.fc8", "classifier.6")) for k in missing):
        raise AlexNetError(f"weights {path} do not fit this network (e.g. {missing[0]})",
                           option="weights")
    model.load_state_dict(state, strict=False)
    if missing:
        print(f"weights: {len(missing)} classifier tensors left fresh ({', '.join(missing)})")


def make_optimizer(model, cfg: TrainConfig, device):
    # Paper §5: weight decay 5e-4 on the weights. The paper's update rule applies it to every
    # parameter it lists (w); we apply it to biases too, as most frameworks do by default.
    # torch's SGD keeps its momentum per unit of gradient; the schedule rescales it at each lr drop
    # so that the update is the paper's (v <- 0.9 v - 0.0005 ε w - ε g; schedule.carry_velocity).
    if cfg.optimizer == "adamw":  # not in paper (the demo's); its decay is decoupled: w -= lr·wd·w
        return accel.make_adamw(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                device=device)
    return accel.make_sgd(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay, device=device)


def setup(cfg: TrainConfig, ckpt: dict | None = None, info=None) -> Training:
    """Data, model, optimizer and schedule of a run (a resumed one from `ckpt`)."""
    info = info or parallel.DistInfo()
    torch.manual_seed(cfg.seed)
    train_set, val_set = datasets(cfg)
    num_classes, in_channels = len(train_set.classes), train_set.channels
    if ckpt is not None:
        check_compatible(ckpt, num_classes, cfg.variant)
        check_same_data(ckpt, cfg, train_set, val_set)
    # A resumed run keeps the statistics (and so the input scale) it started with.
    stats = ckpt["stats"] if ckpt is not None else train_set.stats()
    model = build_model(cfg, num_classes, in_channels, stats)
    if cfg.weights and ckpt is None:
        init_from_weights(model, cfg.weights, cfg.variant, cfg.input_norm)
    parallel.agree_on_fast_path(info)  # the same layouts and precision on every rank
    if ckpt is not None:
        _resume_stem(ckpt, info.device)
    rt = Runtime.create(info.device, cfg.precision, cfg.channels_last, cfg.model_parallel)
    model = rt.place(model)
    optimizer = make_optimizer(model, cfg, rt.device)
    augment = Augment(stats, crop_size=rt.unwrap(model).input_size, flip=cfg.flip,
                      lighting_std=cfg.lighting_std, device=rt.device)
    batch = _per_rank_batch(cfg.batch_size, info.world_size)
    # On the CPU the augmentation runs in the loader (in its workers when there are any), seeded
    # per batch, so that the step's cores only step; the same seeds whatever the worker count.
    # --decode device: the loader hands over JPEG bytes, decoded and augmented on the device.
    encoded = cfg.decode == "device"
    if encoded and getattr(train_set, "encoding", None) != "jpeg":
        raise AlexNetError(f"--decode device needs prepared JPEG shards (alexnet prepare "
                           f"--format jpeg); {cfg.data} has none", option="decode")
    on_cpu = rt.device.type == "cpu" and not encoded
    train_loader = Loader(train_set, batch, shuffle=True, seed=cfg.seed, rank=info.rank,
                          world_size=info.world_size, drop_last=True, workers=cfg.workers,
                          transform=augment.train if on_cpu else None, encoded=encoded,
                          device=rt.device)
    # even=False: no rank pads its share with repeats, so the summed metrics are exact.
    val_loader = Loader(val_set, batch, shuffle=False, seed=cfg.seed, rank=info.rank,
                        world_size=info.world_size, workers=cfg.workers, even=False,
                        device=rt.device)
    if len(train_loader) == 0:
        raise AlexNetError(f"batch_size {cfg.batch_size} is larger than the training set "
                           f"({len(train_set)} images)", option="batch_size")
    schedule = LRSchedule(base_lr(cfg), cfg.schedule, cfg.epochs, len(train_loader), cfg.warmup_epochs,
                          cfg.step_epochs, cfg.patience, cfg.lr_drops)
    model = parallel.wrap_ddp(model, info)
    if cfg.compile:
        model = torch.compile(model)
    meta = {"arch": {"variant": cfg.variant, "num_classes": num_classes,
                     "in_channels": in_channels, "options": arch_options(cfg, stats)},
            "classes": list(train_set.classes), "stats": stats, "crop_size": augment.crop_size,
            "data_counts": {"train": len(train_set), "val": len(val_set)}}  # check_same_data
    t = Training(cfg, info, rt, model, optimizer, accel.grad_scaler(rt.device, rt.precision),
                 schedule, augment, train_loader, val_loader, meta)
    if ckpt is not None:
        _load_training_state(t, ckpt)
    # After the weights are loaded: the bf16 copies are made from them.
    t.masters = MasterWeights.create(model, optimizer, rt.device, rt.precision)
    return t


# --- the run --------------------------------------------------------------------------------------

def main(cfg: TrainConfig, ckpt: dict | None = None, *, number_if_taken: bool = False) -> dict:
    """Train (or continue `ckpt`); returns {"run", "history", "results"}."""
    info = parallel.init_distributed(cfg.device)
    try:
        with contextlib.ExitStack() as held:
            # Rank 0 picks the directory for all: a numbered default (runs/demo-2) is picked by
            # looking at the disk, and a rank that looked a moment later could pick another. A
            # refusal (the lock held, a run there) then stops every rank, not rank 0 alone.
            run = parallel.decided_by_rank0(
                lambda: _claim_run_dir(cfg, ckpt, number_if_taken, held), info)  # rank 0 writes
            cfg = dataclasses.replace(cfg, out=str(run))  # what config.json and checkpoints record
            return _train(setup(cfg, ckpt, info), run, ckpt)
    finally:
        parallel.cleanup_distributed()


def _claim_run_dir(cfg: TrainConfig, ckpt: dict | None, number_if_taken: bool,
                   held: contextlib.ExitStack) -> Path:
    """The run's directory, locked (the lock held by `held`): the resumed run's, or a fresh one.
    A default directory locked by a run still in its first epoch (no checkpoint.pt yet, so it
    looks free) is passed over like one that holds a run: `make demo` twice at once gets
    runs/demo and runs/demo-2, not a refusal."""
    in_use: set[Path] = set()
    while True:
        run = Path(cfg.out) if ckpt is not None else fresh_run_dir(cfg, number_if_taken, in_use)
        try:
            held.enter_context(locked_dir(run, "run directory"))
        except Busy:
            if ckpt is not None or not number_if_taken:
                raise
            in_use.add(run)
            continue
        if ckpt is None and (run / "checkpoint.pt").exists():  # another run got here first
            raise AlexNetError(f"{run} already holds a run", option="out")
        check_run_files(run)
        return run


def _train(t: Training, run: Path, ckpt: dict | None) -> dict:
    cfg, info = t.cfg, t.info
    history, best, start_epoch = ([], math.inf, 0) if ckpt is None else \
        (ckpt["history"], ckpt["best_top1_error"], ckpt["epoch"])
    writer = None
    if ckpt is not None:
        _warn_if_not_exact(ckpt, t)
    if info.is_main:
        atomic_write_json(run / "config.json", asdict(cfg))
        writer = tensorboard_writer(run)
        print(f"run {run}: {cfg.variant} AlexNet, {t.meta['arch']['num_classes']} classes, "
              f"{len(t.train_loader.imageset)} train / {len(t.val_loader.imageset)} val images "
              f"of {cfg.data}, {t.rt.describe()}"
              f"{' (bf16 weight copies kept by the optimizer)' if t.masters else ''}, world size "
              f"{info.world_size}", flush=True)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        t.train_loader.set_epoch(epoch)
        train_loss, rates = train_one_epoch(t, epoch)
        val = evaluate(Predictor.snapshot(t.model, t.meta, t.rt), t.val_loader, crops=1,
                       info=info)
        lr = t.optimizer.param_groups[0]["lr"]
        dropped = t.schedule.end_epoch(val["top1_error"])
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val["loss"],
                        "val_top1_error": val["top1_error"], "val_top5_error": val["top5_error"],
                        "lr": lr, "img_per_s": rates.img_s,
                        "img_per_s_after_first_step": rates.steady,
                        "wait_share": rates.wait_share, "seconds": time.perf_counter() - t0})
        _check_finite(t, val, epoch)
        improved = val["top1_error"] < best
        best = min(best, val["top1_error"])
        skipped = unreadable([t.train_loader, t.val_loader], info)  # every rank takes part
        if info.is_main:
            # TensorBoard's scalars are appended, never rewritten: before the checkpoint, so
            # that a kill in between leaves the epoch in them (a resume redoes it exactly and
            # writes the same values again), never out of them for good.
            tensorboard_epoch(writer, history[-1])
            _save_epoch(t, run, history, best, improved)
            _history_outputs(run, history)
            _report_skipped(run, skipped)
            print(_epoch_line(history[-1], cfg.epochs, dropped), flush=True)
    if info.is_main and history and start_epoch >= cfg.epochs:
        # Nothing left to train: write what a kill between the last checkpoint.pt and its
        # outputs may have left out (both rewritten whole from the history).
        _history_outputs(run, history)
    predictor = Predictor.snapshot(t.model, t.meta, t.rt)
    results = {f"{crops}-crop": evaluate(predictor, t.val_loader, crops=crops, info=info)
               for crops in sorted({1, cfg.eval_crops})}
    if info.is_main:
        atomic_write_json(run / "results.json", results)
        print(format_results_table(results), flush=True)
        if writer is not None:
            writer.close()
    return {"run": str(run), "history": history, "results": results}


def _check_finite(t: Training, val: dict, epoch: int) -> None:
    """Nothing non-finite is ever saved: a step with a finite loss can still leave NaN weights
    (a huge gradient), which the next epoch's checkpoint would keep and a resume would train on."""
    bad = sum(int((~torch.isfinite(p)).sum()) for p in t.model.parameters())
    if bad or not math.isfinite(val["loss"]):
        what = f"{bad} weights became non-finite" if bad else f"the validation loss became " \
                                                              f"{val['loss']}"
        raise Diverged(f"{what} in epoch {epoch + 1}; nothing of it was saved ({kept(epoch)}); "
                       f"the learning rate is probably too high", option="lr")


def _per_rank_batch(batch_size: int, world_size: int) -> int:
    """--batch-size is the global batch; each of the processes takes an equal share of it."""
    if batch_size % world_size:
        raise AlexNetError(f"batch_size {batch_size} does not split evenly among {world_size} "
                           f"processes; give a multiple of {world_size}", option="batch_size")
    return batch_size // world_size


def _load_training_state(t: Training, ckpt: dict) -> None:
    """The weights, optimizer, schedule, scaler and RNG states of a resumed run; a state that
    does not load (a damaged or edited checkpoint.pt) is one line, not torch's traceback."""
    try:
        t.rt.load_state_dict(t.model, ckpt["model"])
        t.optimizer.load_state_dict(ckpt["optimizer"])
        t.schedule.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):  # empty when saved disabled (not fp16): a fresh one then
            t.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as e:
        raise AlexNetError(f"{t.cfg.resume}/checkpoint.pt is damaged: its training state does "
                           f"not load ({type(e).__name__}: {first_line(e, 120)})",
                           option="resume") from None


def _resume_stem(ckpt: dict, device) -> None:
    """Run conv1 the way the run trained it. The way is measured per process (accel.fast_path)
    and cached only on an idle machine, so a resume on a busy one could measure another; and
    space-to-depth's weight gradient rounds differently from NHWC's: no longer exact."""
    stem = ckpt.get("stem")  # none in checkpoints written before it was recorded, or on a GPU
    if stem in accel.STEMS:
        accel.use_fast_path(device, dataclasses.replace(accel.fast_path(device), stem=stem))


def _stem(rt: Runtime) -> str | None:
    """How conv1 runs (accel.STEMS), recorded for a resume: only on the CPU in channels_last."""
    cpu = rt.device.type == "cpu" and rt.channels_last and rt.model_devices is None
    return accel.fast_path(rt.device).stem if cpu else None


def _warn_if_not_exact(ckpt: dict, t: Training) -> None:
    """A resume that cannot continue exactly goes on, but says so: on another number of processes
    (each rank's data order, augmentation and dropout draws depend on it), or in another precision
    (`--precision auto` is resolved again on the machine that resumes: a CPU without native bf16
    goes on in fp32). Neither is in checkpoints written before it was recorded."""
    if not t.info.is_main:
        return
    before, now = ckpt.get("world_size"), t.info.world_size
    if before is not None and before != now:
        _warn(f"this run trained on {before} process{'es' * (before > 1)} and resumes on {now}; "
              f"from here its data order, augmentation and dropout differ from an uninterrupted "
              f"run's")
    before, now = ckpt.get("precision"), t.rt.precision
    if before is not None and before != now:
        _warn(f"this run trained in {before} and resumes in {now} (--precision {t.cfg.precision} "
              f"on this machine); from here its numbers differ from an uninterrupted run's")


def _warn(message: str) -> None:
    print(f"alexnet: warning: {message}", file=sys.stderr, flush=True)


def _save_epoch(t: Training, run: Path, history: list, best: float, improved: bool) -> None:
    """best.pt first, then checkpoint.pt: a kill between the two leaves the previous
    checkpoint.pt, whose resume redoes this epoch and writes the same best.pt again."""
    weights = t.rt.state_dict(t.model)
    config, epoch = asdict(t.cfg), history[-1]["epoch"]
    if improved:
        save_checkpoint(run / "best.pt", {**t.meta, "model": weights, "epoch": epoch,
                                          "config": config})
    save_checkpoint(run / "checkpoint.pt", {
        **t.meta, "model": weights, "optimizer": t.optimizer.state_dict(),
        "scheduler": t.schedule.state_dict(), "scaler": t.scaler.state_dict(), "epoch": epoch,
        "rng": rng_state(), "config": config, "history": history, "best_top1_error": best,
        "world_size": t.info.world_size, "precision": t.rt.precision, "stem": _stem(t.rt)})


def _report_skipped(run: Path, skipped: list[str]) -> None:
    """List the images that could not be read (all of them, once per new batch of failures).
    Those the file lists already stay listed: a resumed run's loaders start with none met, and
    may not meet them all again (drop_last leaves a different few unread each epoch)."""
    if not skipped:  # nothing met: no need to read the file every epoch
        return
    path = run / "skipped.txt"
    listed = path.read_bytes().decode("utf-8", "surrogateescape").splitlines() \
        if path.exists() else []
    known, met = set(listed), set(skipped)
    if known >= met:
        return
    if not met >= known:
        skipped = listed + [why for why in skipped if why not in known]
    atomic_write_text(path, "".join(f"{why}\n" for why in skipped))
    print(f"{len(skipped)} unreadable images were left out; listed in {path}", flush=True)


def _epoch_line(h: dict, epochs: int, dropped: bool) -> str:
    # said when the data held the steps back for a tenth of the time or more
    wait = f" ({h['wait_share']:.0%} of it waiting for batches)" if h["wait_share"] >= 0.1 else ""
    return (f"epoch {h['epoch']:3d}/{epochs}  train loss {h['train_loss']:.4f}  val top-1 err "
            f"{h['val_top1_error']:6.2%}  top-5 err {h['val_top5_error']:6.2%}  lr {h['lr']:.2e}"
            f"{' (divided by 10)' if dropped else ''}  {h['img_per_s']:.0f} img/s{wait}  "
            f"{h['seconds']:.0f} s")


def _history_outputs(run: Path, history: list[dict]) -> None:
    atomic_write_text(run / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
    plot_curves({run.name: history}, run / "curves.png")


def add_arguments(parser) -> None:
    add_dataclass_arguments(parser, TrainConfig)


def run(args) -> int:
    given = vars(args).copy()
    # What the command line and the checkpoint it names decide is decided alike by every process
    # (and said once a machine under torchrun); from main on, each process meets its own.
    with same_on_every_process():
        if given.get("resume") is not None:  # "" too: an error, not a fresh default run
            cfg, ckpt = resume_config(given["resume"], given)
        else:
            cfg, ckpt = absolute_paths(resolve_train_config(given)), None
    main(cfg, ckpt, number_if_taken=ckpt is None and "out" not in given)
    return 0
