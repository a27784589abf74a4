"""`alexnet ablate`: the same recipe and seeds, one idea of the paper changed at a time.

    alexnet ablate --data shapes --budget 4000 [--seeds 3] [--seed S] [--epochs 2]
                   [--arms baseline,no-lrn] [--study relu,tanh,sigmoid,dropout] [--out DIR]

The budget. --budget N is the number of training images each run sees, summed over its epochs: a
run trains --epochs E passes over the first N/E training images (E is raised when N/E would exceed
the training set). A count of images, unlike a time limit, gives the same runs on any machine.
Batches are whole (drop_last), so a run trains E·⌊N/E/B⌋·B images; the table says how many.

Arms (ARMS): the paper's net (baseline), then each idea switched off or swapped for its
alternative, as declared on the options (`arms=` on ModelOptions and TrainConfig fields).
`one-tower-half` is the paper's comparison for its towers (§3.2): one tower of half the kernels,
width 0.5 and towers 1 (the declaration on `width` names one field; ARM_ALSO adds the other).
`one-tower` (full width, no groups) is an extra the paper did not run. The baseline's dropout
may be set with --dropout (BASELINE_OPTIONS): with --dropout 0 every arm trains without it and
the no-dropout arm, the baseline itself then, is dropped.

Paired seeds. Every arm trains seeds S..S+N−1 (--seed S, --seeds N), each an `alexnet train` run
(train.main) in DIR/<arm>/seed<k>. Seed k gives every arm the same data order and augmentation
draws and, where the arm leaves the weights' shapes alone (all but the tower arms), the same
initial weights; on `shapes` it also draws the images. So each arm is compared with the baseline
seed by seed: the mean over seeds of arm − baseline in val top-1 error, with a 95% t-interval
(stats.paired_difference, df = N − 1). The verdict is read off that interval and the sign the
paper claims (CLAIMS: each idea lowers the error, so switching it off should raise it): "held"
when all of the interval is above 0, "not held" when all is below, "cannot tell" when it holds 0,
as it always does with one seed (no interval). For tanh and sigmoid the paper's claim is speed
(see the activation study), for dropout overfitting (the dropout study): their error differences
are reported and tested the same way, and marked as such. There is no `reseed` arm: the
baseline's sd over its seeds is the chance spread, and the paired interval allows for it.
A finished run (results.json or diverged.json) is skipped, one with a checkpoint resumed; a larger
--seeds into the same DIR adds seeds (N is not among the settings compared on reuse).

Choosing a budget: a pilot. `--arms baseline` trains the baseline alone over the seeds and prints
its sd s over seeds and the smallest paired effect N seeds can detect at that budget,
d = t(0.975, N−1)·sd_diff/√N (stats.detectable_difference), with sd_diff taken as √2·s: a pilot's
rule, the sd of a difference of two independent runs (pairing makes the real sd_diff smaller when
arm and baseline share their seed's luck, so d is cautious). An effect of size d yields an
interval that excludes 0 about half the time. Run the pilot at a few budgets (one --out each) and
take one where the baseline has left chance and d is below the effects sought. (At chance s is
small, but only because nothing has been learnt: the report says so. Just past it, the seed
decides when the net leaves its initial plateau, and s is large.)

The dropout study (--study dropout): the paper's claim is about overfitting ("without dropout, our
network exhibits substantial overfitting", §4.2), which a short run on many images cannot show.
Per seed, the baseline with and without dropout trains --overfit-epochs passes over only
--overfit-images training images, measured at up to ten evenly spaced epochs in eval mode (no
dropout, centre crop) on those images and on as many val images. The gap val − train error is
the overfitting; the verdict is on the paired difference of the last epoch's gap, without − with,
claimed > 0.

The activation study (the paper's Figure 1; `alexnet figure1` repeats the figure's own set-up)
is a loop of its own, since it needs the running training error after every step, which
train.main does not record. Per activation (relu, tanh, sigmoid), seed S, from the same initial
weights: the gradient norm of every conv/fc weight on one batch at initialisation, the fraction
of exact zeros per layer on fixed val images before and after training, and the steps, images and
seconds until the training error over the last --window images falls to --threshold.

Outputs in DIR: results.md, results.json, ablation.png (val error per arm, mean ± sd and the seeds
as dots; the paired differences with their intervals), dropout.png (train and val error per epoch
with and without dropout, mean over seeds with a min–max band; the gap), activation.png, the
studies' cached runs (DIR/dropout/, DIR/activation/) and ablate.json (the settings; a rerun with
other settings into the same DIR is refused).
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import get_type_hints

from . import train
from .config import TrainConfig, add_dataclass_arguments, resolve_train_config
from .data import open_dataset
from .errors import AlexNetError, Diverged, at_least, first_line
from .io import atomic_write_json, locked_dir, read_cache, read_json
from .options import arms as option_arms, check_value
from .studies import (ACTIVATIONS, RunningError, activation_study, note,  # noqa: F401
                      overfit_run, records_of, study_one)
from .visualize.ablation import (crossing, format_arms_table, format_pilot, pilot, read_run,
                                 summarise, summarise_dropout, write_report)

# name -> (TrainConfig changes, what changes, what the paper reports about it). Beside the
# baseline, the arms are those the options declare (ModelOptions and TrainConfig fields).
ARMS: dict[str, tuple[dict, str, str]] = {
    "baseline": ({}, "the paper's net", "—"),
    **option_arms(TrainConfig),
}
# Arms that change more fields than the one they are declared on (a declaration names one).
ARM_ALSO: dict[str, dict] = {"one-tower-half": {"towers": 1}}
# The sign the paper claims for arm − baseline in validation top-1 error, and what that tests.
# Arms not listed have no claim in the paper (average pooling, the full-width one tower).
CLAIMS: dict[str, tuple[str, str]] = {
    "no-lrn": ("greater", "LRN lowers the error (§3.3)"),
    "non-overlapping": ("greater", "overlapping pooling lowers the error (§3.4)"),
    "no-lighting": ("greater", "PCA lighting lowers the error (§4.1)"),
    "one-tower-half": ("greater", "two towers beat one tower of half the kernels (§3.2)"),
    "no-dropout": ("greater", "the paper claims less overfitting (§4.2), so a lower error; see "
                   "the dropout study"),
    "tanh": ("greater", "the paper claims speed (Fig. 1): here, error after the same budget"),
    "sigmoid": ("greater", "the source claims speed: here, error after the same budget"),
}
STUDIES = (*ACTIVATIONS, "dropout")
# The baseline has every idea of the paper on, whatever the recipe preset says (the demo's turns
# dropout off for its short run; an ablation of dropout needs it on): the declared defaults of
# the fields that have arms, which are the paper's.
PAPER_IDEAS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.metadata["arms"]}
DROPOUTS = (PAPER_IDEAS["dropout"], ARMS["no-dropout"][0]["dropout"])  # the dropout study's two
# Ideas whose baseline value may be set with their flag (default: the paper's). Dropout, because it
# halves the speed of early training (the paper: "roughly doubles the number of iterations"), so
# that at a budget this CPU can afford the paper's net with dropout on has not left chance, while
# without it the same net has (EXPERIMENTS.md). `--dropout 0` then compares the other ideas on a
# baseline that learns, drops the no-dropout arm (it would be the baseline itself) and leaves
# dropout's own claim to the dropout study.
BASELINE_OPTIONS = ("dropout",)
# TrainConfig fields the arms vary or ablate sets itself; the rest make up the shared recipe.
NOT_SHARED = (set(PAPER_IDEAS) - set(BASELINE_OPTIONS)) | {"variant", "weights", "train_images",
                                                          "resume", "model_parallel"}
RUN_ONLY = {"workers", "progress", "device", "out"}  # may differ when an ablation is continued


# --- the plan -------------------------------------------------------------------------------------

def plan_budget(budget: int, epochs: int, n_train: int, batch: int) -> tuple[int, int]:
    """(epochs, images per epoch) for `budget` training images per run; see the module doc."""
    for name, value in (("budget", budget), ("epochs", epochs)):
        if value < 1:
            raise AlexNetError(f"{name} must be at least 1, got {value}", option=name)
    epochs = max(epochs, math.ceil(budget / n_train))
    per_epoch = budget // epochs
    if per_epoch < batch:
        raise AlexNetError(f"--budget {budget} over {epochs} epoch(s) is {per_epoch} images per "
                           f"epoch, less than one batch of {batch}: raise --budget or lower "
                           f"--batch-size/--epochs", option="budget")
    return epochs, per_epoch


def arm_given(shared: dict, arm: str, out: Path, seed: int) -> dict:
    """The `alexnet train` options of one arm and seed: the shared recipe, the paper's ideas on,
    and the arm's change."""
    change = {**ARMS[arm][0], **ARM_ALSO.get(arm, {})}
    return {**PAPER_IDEAS, **shared, **change, "seed": seed,
            "out": str(out / arm / f"seed{seed}")}


def settings_of(shared: dict, args) -> dict:
    """What defines the results (compared when an ablation directory is used again); not the
    number of seeds, so that more can be added."""
    return {"shared": {k: v for k, v in shared.items() if k not in RUN_ONLY},
            "budget": args.budget, "threshold": args.threshold, "window": args.window,
            "study_budget": args.study_budget or args.budget, "layout": "arm/seed",
            "overfit_images": args.overfit_images, "overfit_epochs": args.overfit_epochs}


def check_settings(out: Path, settings: dict) -> None:
    path = out / "ablate.json"
    if path.is_file():
        before, why = read_json(path)
        if why is None and not (isinstance(before, dict)
                                and isinstance(before.get("shared", {}), dict)):
            why = "not the settings of an ablation"
        if why:  # not a cache: it is what keeps runs of other settings apart, so the user decides
            raise AlexNetError(f"{path} is damaged ({why}); delete it if the runs beside it used "
                               f"these settings, else use another --out")
        diff = sorted(k for k in set(before) | set(settings)
                      if k != "shared" and before.get(k) != settings.get(k))
        diff += _shared_diff(before.get("shared", {}), settings["shared"])
        if diff:
            raise AlexNetError(f"{out} holds an ablation with other settings ({', '.join(diff)}); "
                               f"use another --out", option="out")
    atomic_write_json(path, settings)


def _shared_diff(before: dict, now: dict) -> list[str]:
    """The flags whose values differ between two ablations, as the baseline resolves them: a
    flag spelt out at the value it takes anyway (`--dropout 0.5`) is no change."""
    try:
        before, now = (dataclasses.asdict(resolve_train_config({**PAPER_IDEAS, **flags,
                                                                "out": "-"}))
                       for flags in (before, now))
    except AlexNetError:  # flags this version cannot resolve: compare them as written
        pass
    return sorted(f"--{k.replace('_', '-')}" for k in set(before) | set(now)
                  if k not in RUN_ONLY and before.get(k) != now.get(k))


# --- the files a previous call wrote -------------------------------------------------------------

# What a cached dropout-study result must hold (key: type) to be used: what the report reads.
DROPOUT_FIELDS = {"curve": records_of("epoch", "train_error", "val_error", "train_loss",
                                     "val_loss"),
                   "diverged": (str, type(None))}


RUN_FILES = ("metrics.jsonl", "results.json", "config.json")  # what read_run reads


def run_numbers(run: Path) -> dict:
    """read_run, with a damaged file named in one line. A finished run is `alexnet train`'s
    output (its weights beside), not a cache to drop unasked: the user deletes it to retrain."""
    try:
        return read_run(run)
    except (OSError, ValueError, LookupError, TypeError) as e:
        where, why = _damage(run) or (run, f"{type(e).__name__}: {first_line(e)}")
        raise AlexNetError(f"{where} is damaged ({why}); delete {run} to train that run "
                           f"again") from None


def _damage(run: Path) -> tuple[Path, str] | None:
    """The first file of a finished run that read_run cannot read, and why (None: the files
    are JSON objects, and something inside one is missing)."""
    names = ["diverged.json"] if (run / "diverged.json").is_file() else RUN_FILES
    for name in names:
        lines = name.endswith(".jsonl")
        got, why = read_json(run / name, lines)
        values = got if lines else [got]
        if why is None and not values:
            why = "empty"
        elif why is None and not all(isinstance(v, dict) for v in values):
            why = "not a JSON object"
        if why:
            return run / name, why
    return None


# --- the runs -------------------------------------------------------------------------------------

def run_arm(given: dict, run_only: dict) -> Path:
    """Train one arm's seed, or skip it when finished, or resume it from its checkpoint. A run
    whose loss diverges is recorded as such (diverged.json) and the ablation goes on: a saturating
    activation blowing up is a result, not a reason to lose the other runs."""
    run = Path(given["out"])
    name = f"{run.parent.name}/{run.name}"
    if (run / "results.json").is_file() or (run / "diverged.json").is_file():
        print(f"ablate: {name} is finished, skipped", flush=True)
        return run
    try:
        if (run / "checkpoint.pt").is_file():
            print(f"ablate: {name} resumed from its checkpoint", flush=True)
            train.main(*train.resume_config(run, run_only))
        else:
            print(f"ablate: {name}: training", flush=True)
            train.main(resolve_train_config(given))
    except Diverged as e:
        print(f"ablate: {name} diverged: {e}", flush=True)
        atomic_write_json(run / "diverged.json", {"message": str(e)})
    return run


# --- the dropout study ----------------------------------------------------------------------------

def dropout_study(shared: dict, out: Path, seeds: list[int], images: int,
                  epochs: int) -> dict:
    """{"runs": {dropout: {seed: run}}, "summary": …}, each run cached in out/dropout/."""
    runs: dict[str, dict[int, dict]] = {}
    for p in DROPOUTS:
        for seed in seeds:
            path = out / "dropout" / f"p{p:g}-seed{seed}.json"
            if (run := read_cache(path, DROPOUT_FIELDS, note)) is not None:
                print(f"ablate: dropout study, p {p:g} seed {seed} is finished, skipped",
                      flush=True)
                runs.setdefault(f"{p:g}", {})[seed] = run
                continue
            print(f"ablate: dropout study, p {p:g} seed {seed}: {epochs} epochs over {images} "
                  f"images", flush=True)
            given = {**arm_given(shared, "baseline", out, seed), "dropout": p,
                     "train_images": images, "epochs": epochs}
            runs.setdefault(f"{p:g}", {})[seed] = overfit_run(resolve_train_config(given), images)
            atomic_write_json(path, runs[f"{p:g}"][seed])
    # the sizes as measured (runs cached before they were recorded: as asked)
    measured = next((r for by_seed in runs.values() for r in by_seed.values()
                     if "val_images" in r), {})
    return {"runs": runs, "epochs": epochs, "dropouts": DROPOUTS,
            "images": measured.get("train_images", images),
            "val_images": measured.get("val_images", images),
            "summary": summarise_dropout(runs, DROPOUTS)}


# --- the command ----------------------------------------------------------------------------------

def _recipe_class():
    """TrainConfig's shared fields as a dataclass, so each becomes the same --flag as in `alexnet
    train`; a few get ablate's meaning."""
    hints = get_type_hints(TrainConfig)
    ours = {"epochs": (2, "passes over the first budget/epochs training images (default 2)"),
            "out": ("runs/ablate", "ablation directory, DIR/<arm>/seed<k> inside"),
            "seed": (0, "the first seed S; the runs use S..S+N-1 (default 0)"),
            "eval_crops": (1, "final evaluation: 1 or 10 crops (default 1: ten is 10× slower)"),
            "dropout": (PAPER_IDEAS["dropout"], "the baseline's dropout, and every arm's but "
                        "no-dropout's (default: the paper's 0.5; see BASELINE_OPTIONS)")}
    spec = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in NOT_SHARED:
            continue
        default, help_ = ours.get(f.name, (f.default, f.metadata.get("help", "")))
        spec.append((f.name, hints[f.name], dataclasses.field(default=default,
                                                              metadata={"help": help_})))
    return dataclasses.make_dataclass("AblateRecipe", spec)


RECIPE = _recipe_class()
STUDY_OPTIONS = ("budget", "seeds", "arms", "study", "study_budget", "threshold", "window",
                 "overfit_images", "overfit_epochs")


def add_arguments(parser) -> None:
    parser.add_argument("--budget", type=int, required=True,
                        help="training images per run, summed over its epochs")
    parser.add_argument("--seeds", type=int, default=3,
                        help="seeds per arm, S..S+N-1, paired across arms (default 3; >= 2 for "
                        "an interval)")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated, from {', '.join(ARMS)} (default: all; baseline "
                        "is always run; 'baseline' alone is the pilot), or 'none'")
    parser.add_argument("--study", default=",".join(ACTIVATIONS),
                        help="studies: activations for the activation study and/or 'dropout' "
                        "(default relu,tanh,sigmoid; 'none' to skip)")
    parser.add_argument("--study-budget", type=int, default=0,
                        help="training images per activation in the study (default: --budget)")
    parser.add_argument("--threshold", type=float, default=0.25,
                        help="the study's running training error to reach (default 0.25)")
    parser.add_argument("--window", type=int, default=512,
                        help="the study's running error is over this many last images (512)")
    parser.add_argument("--overfit-images", type=int, default=128,
                        help="dropout study: training images (and val images measured) (128)")
    parser.add_argument("--overfit-epochs", type=int, default=30,
                        help="dropout study: passes over them (default 30)")
    add_dataclass_arguments(parser, RECIPE)


def _names(text: str, allowed, flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        what = f"unknown {', '.join(bad)}" if bad else "no names given"
        raise AlexNetError(f"{what}; choose from {', '.join(allowed)}", option=flag.lstrip("-"))
    return names


def _check(args) -> None:
    if not 0 < args.threshold < 1:
        raise AlexNetError("--threshold must be between 0 and 1 (a fraction, e.g. 0.25)",
                           option="threshold")
    at_least(args, 1, "window", "seeds", "overfit_epochs")  # each names its own flag
    at_least(args, 0, "study_budget")


def _plan(args, shared: dict, base: TrainConfig, studies: list[str]) -> tuple[str, int]:
    """Turn the budget into epochs × images per epoch (into `shared`); describe it. Returns the
    description and the number of classes."""
    train_set = open_dataset(base.data, "train", seed=base.seed, val_labels=base.val_labels)
    n_train = len(train_set)
    epochs, per_epoch = plan_budget(args.budget, base.epochs, n_train, base.batch_size)
    shared.update(epochs=epochs, train_images=per_epoch)
    b, s = base.batch_size, base.seed
    plan = (f"Budget: {args.budget} training images per run = {epochs} epoch(s) over the first "
            f"{per_epoch} of the {n_train} training images, batch {b} "
            f"(whole batches: {epochs * (per_epoch // b) * b} images); seeds {s}–"
            f"{s + args.seeds - 1} ({args.seeds}), paired across arms.")
    if set(studies) & set(ACTIVATIONS):
        steps = (args.study_budget or args.budget) // b
        if steps < 1:
            raise AlexNetError(f"--study-budget is less than one batch of {b}",
                               option="study_budget")
        plan += f" Activation study: {steps} steps of {b} images per activation, seed {s}."
    if "dropout" in studies:
        if args.overfit_images < b:
            raise AlexNetError(f"--overfit-images {args.overfit_images} is less than one batch "
                               f"of {b}", option="overfit_images")
        plan += (f" Dropout study: {args.overfit_epochs} epochs over "
                 f"{min(args.overfit_images, n_train)} "
                 f"training images, with and without dropout, per seed.")
    return plan, len(train_set.classes)


def _run_study(args, shared: dict, out: Path, acts: list[str]) -> dict:
    steps = (args.study_budget or args.budget) // shared["batch_size"]
    per_epoch_steps = shared["train_images"] // shared["batch_size"]
    given = {**arm_given(shared, "baseline", out, shared["seed"]),
             "epochs": math.ceil(steps / per_epoch_steps)}
    return activation_study(resolve_train_config(given), out, steps, args.threshold,
                            args.window, acts)


def run_arms(shared: dict, out: Path, arms: list[str], seeds: list[int]) -> list[dict]:
    """Every arm over every seed (baseline first), then one summary row per arm."""
    run_only = {k: shared[k] for k in ("workers", "progress", "device") if k in shared}
    runs = {arm: {seed: run_numbers(run_arm(arm_given(shared, arm, out, seed), run_only))
                  for seed in seeds} for arm in arms}
    return [summarise(arm, runs[arm], runs.get("baseline"), about(arm, shared)) for arm in arms]


def about(arm: str, shared: dict | None = None) -> dict:
    """The words of an arm and of the paper's claim about it, for its row of the report."""
    direction, tests = CLAIMS.get(arm, (None, "no claim in the paper"))
    change = ARMS[arm][1]
    if arm == "baseline":  # say where the baseline is not the paper's (BASELINE_OPTIONS)
        change += "".join(f", {k} {shared[k]:g}" for k in BASELINE_OPTIONS
                          if shared and shared.get(k, PAPER_IDEAS[k]) != PAPER_IDEAS[k])
    return {"change": change, "paper": ARMS[arm][2], "direction": direction, "tests": tests}


def run(args) -> int:
    _check(args)
    given = {k: v for k, v in vars(args).items() if k not in STUDY_OPTIONS}
    defaults = {f.name: f.default for f in dataclasses.fields(RECIPE)}
    shared = {**{k: defaults[k] for k in ("seed", "epochs", "eval_crops", "out")}, **given}
    # checked here: each arm's own config holds OUT/<arm>/seedN, never blank
    check_value("out", shared["out"], str, {"help": "the output directory"})
    out = Path(shared.pop("out"))
    arms = [] if args.arms.strip() == "none" else [
        a for a in ARMS if a == "baseline" or a in _names(args.arms, ARMS, "--arms")]
    same = [a for a in arms if a != "baseline" and all(
        shared.get(k, PAPER_IDEAS.get(k)) == v for k, v in ARMS[a][0].items())]
    for a in same:  # e.g. no-dropout under --dropout 0
        print(f"ablate: arm {a} is the baseline under these options, dropped", flush=True)
    arms = [a for a in arms if a not in same]
    studies = [] if args.study.strip() == "none" else _names(args.study, STUDIES, "--study")
    if not arms and not studies:
        raise AlexNetError("--arms none and --study none: nothing to do", option="arms")
    base = resolve_train_config(arm_given(shared, "baseline", out, shared["seed"]))
    shared["batch_size"] = base.batch_size  # the recipe's, should the recipe set it
    plan, classes = _plan(args, shared, base, studies)
    # again, with the budget's epochs and train_images: the report shows the baseline's recipe
    base = resolve_train_config(arm_given(shared, "baseline", out, shared["seed"]))
    # One ablation a directory: a second one into it did the whole study again beside the first
    # (each run directory has its own lock, the study caches and the report had none).
    with locked_dir(out, "ablate output directory"):
        print(f"ablate: {plan}", flush=True)
        settings = settings_of(shared, args)
        check_settings(out, settings)
        seeds = list(range(shared["seed"], shared["seed"] + args.seeds))
        rows = run_arms(shared, out, arms, seeds)
        acts = [s for s in studies if s in ACTIVATIONS]
        study = _run_study(args, shared, out, acts) if acts else {}
        drop = dropout_study(shared, out, seeds, args.overfit_images, args.overfit_epochs) \
            if "dropout" in studies else {}
        spread = pilot(rows[0] if rows else None, classes)
        write_report(out, base, settings, plan, rows, study, drop, spread)
    if rows:
        print(format_arms_table(rows))
        print(f"ablate: {format_pilot(spread, len(seeds))}")
    print(f"ablate: wrote {out / 'results.md'}")
    return 0
