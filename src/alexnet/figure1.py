"""The paper's Figure 1, run as the paper ran it: ReLU against tanh in a four-layer CNN, with seeds.

Krizhevsky, Sutskever & Hinton (2012), Figure 1: "A four-layer convolutional neural network with
ReLUs (solid line) reaches a 25% training error rate on CIFAR-10 six times faster than an
equivalent network with tanh neurons (dashed line). The learning rates for each network were
chosen independently to make training as fast as possible. No regularization of any kind was
employed." The paper names neither the net nor its initialisation; where it is vague we take
Krizhevsky's own CIFAR-10 example of that time, cuda-convnet's `layers-80sec.cfg` ("26% error on
CIFAR-10 in 80 seconds", no dropout, no normalisation layers), without its hidden fc64 layer so
that it has four layers of weights:

    conv 5×5, 32 maps, pad 2 → act → max-pool 3×3 stride 2      weights N(0, 1e-4²)
    conv 5×5, 32 maps, pad 2 → act → avg-pool 3×3 stride 2      weights N(0, 0.01²)
    conv 5×5, 64 maps, pad 2 → act → avg-pool 3×3 stride 2      weights N(0, 0.01²)
    fully connected 1024 → 10 (softmax)                         weights N(0, 0.1²)

(biases 0; pools keep cuda-convnet's sizes 32 → 16 → 8 → 4, i.e. ceil mode). The input is
cuda-convnet's too: pixel values minus the per-pixel mean image, not rescaled. The initial scales
above were chosen for that input range.

Data: CIFAR-10 is not available offline, so Fashion-MNIST (real images, 10 classes; its 28×28
grey images zero-padded to CIFAR's 32×32). An "epoch" is one pass over the first
`train_images` training images, in a fresh order each epoch.

Training error: the running error over the last `window` training images, each counted with the
weights of the step that trained on it. The paper does not say how its curve was measured;
cuda-convnet, the code its nets were trained with, reports this error during training, so we take
it to be the paper's. It costs nothing (train_step returns the logits), where measuring a fixed
subset every few steps would cost extra forward passes on a 2-core CPU. Its price is a lag of
about half a window, the same number of images for both nets.

The study: for each activation a small learning-rate sweep on a pilot seed picks the lr that
reaches the target first (largest lr first; a pilot stops at the target, or as soon as it can no
longer beat the best so far); then every measured seed trains both nets with their own lr, from
the same initial weights (the activations have no weights, so the shapes match exactly) and in the
same data order. The ratio tanh/relu of images-to-target is compared per seed (alexnet.stats).

    alexnet figure1 [--seeds 5] [--lrs 0.0003,0.001,…] [--target 0.25] [--epochs 2]
                    [--train-images 10000] [--out DIR]
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import stats
from .data.fashion import DEFAULT_ROOT, FILES, check_idx, read_idx
from .errors import AlexNetError, DataError, Diverged
from .io import atomic_write_json, atomic_write_text, locked_dir, read_cache
from .machine import most_per_core
from .options import check_value, path_arg
from .step import train_step
from .visualize.figure1 import format_table, verdict_line, write_report

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}
PAPER_RATIO = 6.0  # "six times faster"
LADDER = (0.2, 0.15, 0.1)  # lower training errors also reported, from the same runs
CLASSES = 10  # Fashion-MNIST's, and the net's outputs


@dataclasses.dataclass(frozen=True)
class Figure1Config:
    data: str = DEFAULT_ROOT          # directory with the four Fashion-MNIST IDX .gz files
    train_images: int = 10_000        # the first N training images; one epoch = one pass over them
    epochs: float = 2.0               # budget of every run, in epochs
    batch_size: int = 128             # cuda-convnet's mini-batch
    momentum: float = 0.9             # plain SGD with momentum, no weight decay (no regularisation)
    lrs: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03)  # the sweep (mean-loss gradient)
    target: float = 0.25              # training error to reach (the paper's 25%)
    window: int = 1024                # running error over the last `window` images (whole batches)
    seeds: int = 5                    # measured seeds 1..seeds (the same for both activations)
    pilot_seed: int = 0               # the sweep's seed, kept apart from the measured ones

    @property
    def budget(self) -> int:
        """Images each measured run trains on (whole batches)."""
        return self.steps * self.batch_size

    @property
    def steps(self) -> int:
        return int(self.epochs * self.train_images) // self.batch_size

    @property
    def window_steps(self) -> int:
        return max(1, math.ceil(self.window / self.batch_size))

    def run_settings(self) -> dict:
        """What a cached run depends on: a run is reused only if all of these match."""
        return {k: getattr(self, k) for k in ("data", "train_images", "batch_size", "momentum",
                                              "window")} | {"net": "layers-80sec-4", "v": 1}


def check_config(cfg: Figure1Config) -> None:
    """Bad settings, in the library's words, naming the setting at fault."""
    if not 0 < cfg.target < 1:
        raise AlexNetError(f"target {cfg.target} must be a training error between 0 and 1",
                           option="target")
    for name, least in (("seeds", 1), ("batch_size", 1), ("window", 1), ("pilot_seed", 0)):
        if getattr(cfg, name) < least:
            raise AlexNetError(f"{name} must be at least {least}, got {getattr(cfg, name)}",
                               option=name)
    for name in ("epochs", "momentum"):  # NaN passes every comparison below
        check_value(name, getattr(cfg, name), float, {"low": 0.0})
    if cfg.train_images < cfg.batch_size:
        raise AlexNetError(f"train_images {cfg.train_images} is less than one batch of "
                           f"{cfg.batch_size}", option="train_images")
    if cfg.steps < cfg.window_steps:
        raise AlexNetError(f"a budget of {cfg.budget} images is shorter than the error window of "
                           f"{cfg.window} images", option="epochs")
    if not cfg.lrs or any(not 0 < lr < math.inf for lr in cfg.lrs):
        raise AlexNetError(f"learning rates must be positive and finite: {cfg.lrs}", option="lrs")
    if cfg.pilot_seed in range(1, cfg.seeds + 1):
        raise AlexNetError(f"the pilot seed {cfg.pilot_seed} must not be one of the measured "
                           f"seeds 1..{cfg.seeds} (its lr was chosen on it)", option="pilot_seed")


# --- data -----------------------------------------------------------------------------------------

def load_data(cfg: Figure1Config) -> tuple[torch.Tensor, torch.Tensor]:
    """The first train_images Fashion-MNIST training images, (N, 1, 32, 32) float32 minus the
    per-pixel mean image, and their labels."""
    root = Path(cfg.data).expanduser()
    paths = [root / f for f in FILES["train"]]
    if not all(p.is_file() for p in paths):
        raise AlexNetError(f"no Fashion-MNIST training files in {root} (install Debian's "
                           f"dataset-fashion-mnist or give the directory of its IDX files)",
                           option="data")
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    check_idx(paths, images, labels)
    if len(images) < cfg.train_images:
        raise AlexNetError(f"{root} has {len(images)} training images, fewer than "
                           f"train_images {cfg.train_images}", option="train_images")
    n, h, w = cfg.train_images, images.shape[1], images.shape[2]
    if h > 32 or w > 32:
        raise AlexNetError(f"images of {h}×{w} do not fit the net's 32×32 input", option="data")
    x = torch.zeros(n, 1, 32, 32)
    top, left = (32 - h) // 2, (32 - w) // 2     # zero padding, 2 pixels a side for 28×28
    x[:, 0, top:top + h, left:left + w] = torch.from_numpy(np.array(images[:n], np.float32))
    x -= x.mean(dim=0, keepdim=True)             # the mean image, as the paper and cuda-convnet
    return x, torch.from_numpy(labels[:n].astype(np.int64))


# --- the net --------------------------------------------------------------------------------------

def build_net(activation: str, seed: int) -> nn.Sequential:
    """The four-layer net of the module docstring, its weights drawn from `seed` alone, so that
    relu and tanh nets of one seed start from identical weights."""
    act = ACTIVATIONS[activation]
    pool = dict(kernel_size=3, stride=2, ceil_mode=True)  # cuda-convnet's 32 → 16 → 8 → 4
    net = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), act(), nn.MaxPool2d(**pool),
        nn.Conv2d(32, 32, 5, padding=2), act(), nn.AvgPool2d(**pool),
        nn.Conv2d(32, 64, 5, padding=2), act(), nn.AvgPool2d(**pool),
        nn.Flatten(), nn.Linear(64 * 4 * 4, CLASSES))
    g = torch.Generator().manual_seed(seed)
    layers = [m for m in net if isinstance(m, (nn.Conv2d, nn.Linear))]
    for layer, std in zip(layers, (1e-4, 1e-2, 1e-2, 1e-1)):  # layers-80sec.cfg's initW
        with torch.no_grad():
            layer.weight.normal_(0.0, std, generator=g)
            layer.bias.zero_()
    return net


# --- one run --------------------------------------------------------------------------------------

def running_error(wrong: list[int], batch: int, window_steps: int) -> list[float | None]:
    """After each step, the error over the last window_steps batches (None until the window is
    full: a few lucky early batches must not count as reaching the target)."""
    out, total = [], 0
    for i, w in enumerate(wrong):
        total += w - (wrong[i - window_steps] if i >= window_steps else 0)
        out.append(total / (window_steps * batch) if i + 1 >= window_steps else None)
    return out


def steps_to_target(run: dict, cfg: Figure1Config) -> int | None:
    """The first step (counted from 1) after which the running error is at most the target."""
    for i, e in enumerate(running_error(run["wrong"], cfg.batch_size, cfg.window_steps)):
        if e is not None and e <= cfg.target:
            return i + 1
    return None


def train_run(activation: str, lr: float, seed: int, data, cfg: Figure1Config,
              max_steps: int, stop_at_target: bool = False) -> dict:
    """Train one net with plain SGD + momentum for up to max_steps, recording each batch's
    mistakes and loss. The data order comes from `seed` alone (a generator apart from the
    weights'), so both activations of one seed see the same batches."""
    x, y = data
    net = build_net(activation, seed)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=cfg.momentum, weight_decay=0.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    order = torch.Generator().manual_seed(seed)
    per_epoch = len(x) // cfg.batch_size           # whole batches; the rest waits for next epoch
    run = {"activation": activation, "lr": lr, "seed": seed, "wrong": [], "loss": [],
           "diverged": False, "stopped": "budget"}
    start, perm = time.perf_counter(), None
    net.train()
    for step in range(max_steps):
        if step % per_epoch == 0:
            perm = torch.randperm(len(x), generator=order)
        idx = perm[(step % per_epoch) * cfg.batch_size:][:cfg.batch_size]
        try:
            loss, logits = train_step(net, opt, scaler, x[idx], y[idx])
        except Diverged:
            run["diverged"], run["stopped"] = True, "diverged"
            break
        run["wrong"].append(int((logits.argmax(1) != y[idx]).sum()))
        run["loss"].append(round(loss, 5))
        last = run["wrong"][-cfg.window_steps:]    # the same test as running_error's
        if (stop_at_target and len(last) == cfg.window_steps
                and sum(last) / (cfg.window_steps * cfg.batch_size) <= cfg.target):
            run["stopped"] = "target"
            break
    run["seconds"] = round(time.perf_counter() - start, 2)
    run["max_steps"] = max_steps
    return run


# --- runs cached on disk (the study resumes where it was killed) ----------------------------------

def run_path(out: Path, kind: str, activation: str, lr: float, seed: int) -> Path:
    return out / "runs" / f"{kind}-{activation}-lr{lr:g}-seed{seed}.json"


def cached_run(out: Path, kind: str, activation: str, lr: float, seed: int, data,
               cfg: Figure1Config, max_steps: int, log=print) -> dict:
    """A run from out/runs/ if one with the same settings covers what is asked, else trained
    now and written there atomically. A pilot (kind "pilot") stops at the target; a cached pilot
    that stopped short of max_steps for any other reason than the target is not enough."""
    path, settings = run_path(out, kind, activation, lr, seed), cfg.run_settings()
    pilot = kind == "pilot"
    old = _cached(path, settings, log)  # None when there is none
    if old and _covers(old, cfg, max_steps):
        # A longer cached run serves a shorter one: its first max_steps steps are the same.
        old["wrong"], old["loss"] = old["wrong"][:max_steps], old["loss"][:max_steps]
        return old
    run = train_run(activation, lr, seed, data, cfg, max_steps, stop_at_target=pilot)
    run["settings"] = settings
    atomic_write_json(path, run)
    hit = steps_to_target(run, cfg)
    log(f"{kind:>5} {activation} lr {lr:g} seed {seed}: {len(run['wrong'])} steps, "
        f"{'diverged' if run['diverged'] else f'target at step {hit}' if hit else 'no target'}"
        f", {run['seconds']:.0f} s")
    return run


def _covers(old: dict, cfg: Figure1Config, max_steps: int) -> bool:
    """Whether a cached run answers for a run of max_steps: one that diverged would diverge
    again; one stopped at *a* target serves only if that reaches this cfg's target (a pilot
    for 25% says nothing about 15%); one stopped by its budget, if that budget was as long."""
    if old["stopped"] == "diverged":
        return True
    if old["stopped"] == "target":
        return steps_to_target(old, cfg) is not None
    return old["max_steps"] >= max_steps


NUMBER = (int, float)
# What a cached run must hold (key: type) to be used: what the study reads of it.
RUN_FIELDS = {"stopped": str, "max_steps": int, "loss": list, "diverged": bool, "seconds": NUMBER,
              # steps_to_target adds them up
              "wrong": lambda v: isinstance(v, list) and all(isinstance(w, int) for w in v)}


def _cached(path: Path, settings: dict, log=print) -> dict | None:
    """The run cached at `path` if made with these settings, else None. A damaged one (not
    JSON, or short of one of RUN_FIELDS) is trained again and overwritten, after a note."""
    old = read_cache(path, {**RUN_FIELDS, "settings": dict}, log, then="trained again")
    if old is None or old["settings"] != settings:  # other settings: trained again, silently
        return None
    return old


# --- the study ------------------------------------------------------------------------------------

def sweep(activation: str, data, cfg: Figure1Config, out: Path, log=print) -> dict:
    """Pilot runs over cfg.lrs, largest first; each stops at the target, or once it has run as
    many steps as the best so far (it can no longer win). Picks the lr that reached the target
    in the fewest steps (ties: the smaller lr); if none did, the lowest final running error."""
    rows, best = [], None
    for lr in sorted(cfg.lrs, reverse=True):
        cap = cfg.steps if best is None else best
        run = cached_run(out, "pilot", activation, lr, cfg.pilot_seed, data, cfg, cap, log)
        hit = steps_to_target(run, cfg)
        errors = running_error(run["wrong"], cfg.batch_size, cfg.window_steps)
        rows.append({"lr": lr, "steps": hit, "ran_steps": len(run["wrong"]),
                     "diverged": run["diverged"], "final_error": errors[-1] if errors else None,
                     "seconds": run["seconds"]})
        if hit is not None and (best is None or hit <= best):
            best = hit
    reached = [r for r in rows if r["steps"] is not None]
    if reached:
        chosen = min(reached, key=lambda r: (r["steps"], r["lr"]))
    else:
        alive = [r for r in rows if not r["diverged"] and r["final_error"] is not None] or rows
        chosen = min(alive, key=lambda r: (r["final_error"] or 1.0, r["lr"]))
    grid = sorted(cfg.lrs)
    return {"rows": sorted(rows, key=lambda r: r["lr"]), "lr": chosen["lr"],
            "reached": bool(reached), "at_edge": chosen["lr"] in (grid[0], grid[-1])
            and len(grid) > 1}


def seed_row(seed: int, runs: dict, cfg: Figure1Config) -> dict:
    """One seed's images-to-target per activation; a net that never got there is censored at
    the budget (its true time is longer, so a ratio using it is a lower bound)."""
    row = {"seed": seed}
    for act, run in runs.items():
        hit = steps_to_target(run, cfg)
        row[act] = {"images": None if hit is None else hit * cfg.batch_size,
                    "censored": hit is None, "diverged": run["diverged"],
                    "seconds": run["seconds"]}
    return row


def summarize(rows: list[dict], cfg: Figure1Config) -> dict:
    """Means per activation and the paired ratio tanh/relu with its 95% interval."""
    summary = {}
    for act in ACTIVATIONS:
        got = [r[act]["images"] for r in rows if not r[act]["censored"]]
        summary[act] = {"reached": len(got), "mean_images": stats.mean(got) if got else None,
                        "sd_images": stats.sample_sd(got) if len(got) > 1 else None,
                        "mean_seconds_per_run": stats.mean([r[act]["seconds"] for r in rows])}
    if any(r["relu"]["censored"] for r in rows):
        summary["ratio"] = None             # no lower or upper bound can be put on it
        summary["verdict"] = "cannot tell"
        summary["note"] = ("relu diverged at its chosen lr with some seed: lower --lrs"
                           if any(r["relu"]["diverged"] for r in rows) else
                           "relu did not reach the target with every seed: raise --epochs")
        return summary
    budget = cfg.budget
    relu = [r["relu"]["images"] for r in rows]
    tanh = [budget if r["tanh"]["censored"] else r["tanh"]["images"] for r in rows]
    ratio = stats.paired_ratio(relu, tanh)
    censored = sum(r["tanh"]["censored"] for r in rows)
    summary.update(ratio=ratio.as_dict(), per_seed=[t / r for r, t in zip(relu, tanh)],
                   verdict=stats.verdict(ratio, "greater"),
                   paper_ratio=PAPER_RATIO, paper=stats.locate(PAPER_RATIO, ratio),
                   tanh_censored=censored,
                   note=(f"tanh did not reach the target with {censored} seed(s); they count "
                         f"at the budget, so the ratio and its interval are lower bounds")
                   if censored else "")
    return summary


def ladder(full_runs: list[tuple[int, dict]], cfg: Figure1Config) -> list[dict]:
    """The same paired comparison at lower training errors, read from the same runs (each net
    keeps the lr chosen for cfg.target). Fashion-MNIST is easier than CIFAR-10: the paper's 25%
    comes within the first epoch here, so lower levels show whether the gap opens later."""
    levels = sorted({cfg.target, *(t for t in LADDER if t < cfg.target)}, reverse=True)
    out = []
    for target in levels:
        at = dataclasses.replace(cfg, target=target)
        summ = summarize([seed_row(seed, runs, at) for seed, runs in full_runs], at)
        out.append({"target": target, "relu": summ["relu"], "tanh": summ["tanh"],
                    "ratio": summ["ratio"], "verdict": summ["verdict"],
                    "paper": summ.get("paper"), "note": summ["note"]})
    return out


def run_study(cfg: Figure1Config, out: Path, data=None, log=print) -> dict:
    """The whole study: the sweeps, the measured seeds, the summary (results.json's content)."""
    check_config(cfg)
    data = load_data(cfg) if data is None else data
    sweeps = {act: sweep(act, data, cfg, out, log) for act in ACTIVATIONS}
    full_runs, curves = [], {act: [] for act in ACTIVATIONS}
    for seed in range(1, cfg.seeds + 1):
        runs = {act: cached_run(out, "full", act, sweeps[act]["lr"], seed, data, cfg,
                                cfg.steps, log) for act in ACTIVATIONS}
        full_runs.append((seed, runs))
        for act, run in runs.items():
            curves[act].append(running_error(run["wrong"], cfg.batch_size, cfg.window_steps))
    rows = [seed_row(seed, runs, cfg) for seed, runs in full_runs]
    # Training time summed over the runs as they were trained (not this call's, which may have
    # read them all from the cache).
    seconds = sum(r["seconds"] for sw in sweeps.values() for r in sw["rows"]) + sum(
        run["seconds"] for _, runs in full_runs for run in runs.values())
    return {"config": dataclasses.asdict(cfg), "budget_images": cfg.budget,
            "images_per_epoch": cfg.train_images, "sweeps": sweeps, "seeds": rows,
            "summary": summarize(rows, cfg), "ladder": ladder(full_runs, cfg), "curves": curves,
            "train_minutes": round(seconds / 60, 2), "threads": torch.get_num_threads()}


# --- the `alexnet figure1` command ----------------------------------------------------------------

def add_arguments(parser) -> None:
    d = Figure1Config()
    parser.add_argument("--data", type=path_arg, default=d.data,
                        help="directory of the Fashion-MNIST IDX files")
    parser.add_argument("--seeds", type=int, default=d.seeds, help="measured seeds 1..N")
    parser.add_argument("--pilot-seed", type=int, default=d.pilot_seed, help="the sweep's seed")
    parser.add_argument("--lrs", default=",".join(f"{x:g}" for x in d.lrs),
                        help="learning rates of the sweep, comma-separated")
    parser.add_argument("--target", type=float, default=d.target, help="training error to reach")
    parser.add_argument("--epochs", type=float, default=d.epochs, help="budget of every run")
    parser.add_argument("--train-images", type=int, default=d.train_images,
                        help="first N training images (one epoch)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--window", type=int, default=d.window,
                        help="running training error over this many images")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                        help="torch CPU threads (default: the cores this process may use)")
    parser.add_argument("--out", type=path_arg, default="figure1",
                        help="output directory (runs are cached "
                        "there, so a killed study resumes)")


def _log(line: str) -> None:
    print(f"figure1: {line}", flush=True)


def config_from_args(args) -> Figure1Config:
    """The command line's options as a checked Figure1Config."""
    try:
        lrs = tuple(float(x) for x in args.lrs.split(",") if x.strip())
    except ValueError:
        raise AlexNetError(f"cannot read learning rates {args.lrs!r}", option="lrs") from None
    cfg = Figure1Config(data=args.data, train_images=args.train_images, epochs=args.epochs,
                        batch_size=args.batch_size, lrs=lrs, target=args.target,
                        window=args.window, seeds=args.seeds, pilot_seed=args.pilot_seed)
    check_config(cfg)
    return cfg


def run(args) -> int:
    cfg = config_from_args(args)
    most = most_per_core()  # as for --workers; set_num_threads(100000) was a segfault
    if not 1 <= args.threads <= most:
        raise AlexNetError(f"threads must be in 1..{most} (8 per core), got {args.threads}",
                           option="threads")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    command = "alexnet figure1 " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "command")
    data = load_data(cfg)           # before the lock: bad data must not leave an empty --out
    with locked_dir(out, "figure1 output directory"):
        result = run_study(cfg, out, data=data, log=_log)
        write_report(result, out, command)
    print(format_table(result))
    print(verdict_line(result))
    print(f"figure1: wrote {out / 'results.md'}, results.json and figure1.png")
    return 0
