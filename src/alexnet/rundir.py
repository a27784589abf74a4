"""The run directory: what it holds, a fresh one for a new run, the config of a run to resume,
what a run that diverged says it kept, and its TensorBoard scalars.

A run directory (rank 0 holds an exclusive lock on it while training: one run per directory):
    config.json      the resolved configuration
    metrics.jsonl    one object per epoch (rewritten atomically from the checkpoint's history)
    events.*         TensorBoard scalars
    best.pt          the weights with the lowest validation top-1 error so far
    checkpoint.pt    the latest state (model, optimizer, schedule, epoch, RNG, config); written
                     after best.pt, so that whatever a kill interrupts, the two agree
    curves.png       loss and error per epoch
    skipped.txt      images that could not be read (ImageFolder sources), if any
    results.json     1-crop and 10-crop errors of the last epoch's weights (`alexnet eval RUN`
                     scores best.pt, which differs when the last epoch was not the best)
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import asdict
from pathlib import Path

from .checkpoint import TRAINING_STATE, load_checkpoint
from .config import DEFAULTS, TrainConfig, absolute_paths, validate
from .data import builtin
from .errors import AlexNetError, Diverged
from .io import LOCK_NAME, is_temp_name
from .model import LEGACY_OPTIONS
from .options import names


def checkpoint_to_resume(run: str | Path) -> Path:
    """RUN/checkpoint.pt, or a one-line error that says what to do instead."""
    if not str(run).strip():  # `--resume "$RUN"` with RUN unset must not start a fresh run
        raise AlexNetError("--resume needs a run directory, got an empty string", option="resume")
    run = Path(run)
    if run.is_file():
        raise AlexNetError(f"{run} is a file; --resume takes the run directory that holds "
                           f"checkpoint.pt", option="resume")
    if run.is_dir() and not (run / "checkpoint.pt").exists() and (run / "config.json").exists():
        raise AlexNetError(f"{run} has no checkpoint.pt: no epoch finished before the run "
                           f"stopped; start it again without --resume", option="resume")
    return run / "checkpoint.pt"


def _check_training_state(ckpt: dict, run: Path) -> None:
    """The kinds of the training state (a resume of a damaged one was a traceback from wherever
    it was first used); what loads into the optimizer and the schedule is checked by loading
    it (train.setup)."""
    epoch, history, best = ckpt["epoch"], ckpt["history"], ckpt["best_top1_error"]
    wrong = [key for key, ok in [
        ("epoch", isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1),
        ("history", isinstance(history, list) and all(isinstance(h, dict) for h in history)),
        ("best_top1_error", isinstance(best, (int, float)) and not isinstance(best, bool)),
        ("optimizer", isinstance(ckpt["optimizer"], dict)),
        ("scheduler", isinstance(ckpt["scheduler"], dict)),
        ("rng", isinstance(ckpt["rng"], dict)),
    ] if not ok]
    if wrong:
        raise AlexNetError(f"{run}/checkpoint.pt is damaged: malformed {', '.join(wrong)}",
                           option="resume")


_NONE_BY_DEFAULT = {k for k, v in DEFAULTS.items() if v is None}
MOVABLE = ("data", "val_labels")  # paths that may change on resume, to the same files elsewhere


def _a_path(value) -> bool:
    return isinstance(value, str) and bool(value) and builtin(value) is None


def resume_config(run: str | Path, overrides: dict | None = None) -> tuple[TrainConfig, dict]:
    """The config and checkpoint of the run in `run`, with the options that may change on resume
    (those declared resumable: epochs, workers, device, progress) taken from `overrides`."""
    overrides = {k: v for k, v in (overrides or {}).items() if k != "resume"}
    ckpt = load_checkpoint(checkpoint_to_resume(run))
    saved = ckpt.get("config")
    if not isinstance(saved, dict) or set(saved) - {f.name for f in dataclasses.fields(TrainConfig)}:
        raise AlexNetError(f"{run}/checkpoint.pt has no config this version can resume",
                           option="resume")
    # best.pt copied over checkpoint.pt has a config but no training state: say so, not KeyError.
    missing = [k for k in (*TRAINING_STATE, "epoch") if k not in ckpt]
    if missing:
        raise AlexNetError(f"{run}/checkpoint.pt holds weights but no training state (no "
                           f"{', '.join(missing)}); --weights starts a new run from it",
                           option="resume")
    _check_training_state(ckpt, run)
    # Before blank paths were refused, --weights "" (or --val-labels, --model-parallel) meant
    # "not given", and a run saved it so: read it as the None it meant.
    saved = {k: None if v == "" and k in _NONE_BY_DEFAULT else v for k, v in saved.items()}
    may_change = set(names(TrainConfig, resumable=True))
    if "epochs" not in overrides and saved.get("schedule") != "cosine":
        asked = _epochs_asked(run, saved, may_change)
        if asked is not None:
            overrides["epochs"] = asked
    given = asdict(absolute_paths(TrainConfig(**{**saved, **overrides})))
    changed = sorted(k for k in overrides if k not in may_change and given[k] != saved.get(k))
    # The same data at another path (moved, or mounted elsewhere on another machine): setup
    # checks that it is the run's (check_same_data, below) before anything is trained.
    moved = [k for k in changed if k in MOVABLE and _a_path(saved.get(k)) and _a_path(given[k])]
    changed = [k for k in changed if k not in moved]
    may_change |= set(moved)
    overrides.update({k: given[k] for k in moved})  # absolute, as the run recorded them
    if changed:
        raise AlexNetError(f"cannot change {', '.join(changed)} when resuming (only "
                           f"{', '.join(sorted(may_change))} may change)", option=changed[0])
    # A run saved before an option existed goes on as it was trained (model.LEGACY_OPTIONS).
    values = {**LEGACY_OPTIONS, **saved,
              **{k: v for k, v in overrides.items() if k in may_change}}
    cfg = TrainConfig(**{**values, "out": str(run), "resume": str(run)})
    try:
        validate(cfg)
    except AlexNetError as e:  # a value the checkpoint holds, not a flag the user gave
        if e.option in overrides:
            raise
        raise AlexNetError(f"{run}/checkpoint.pt is damaged: its config's {e}",
                           option="resume") from None
    if cfg.schedule == "cosine" and cfg.epochs != saved.get("epochs", cfg.epochs):
        # The cosine's length is the run's: another would change the lr of every step to come
        # (and of those done), so the run would no longer be the one it continues.
        raise AlexNetError(f"{run} runs a cosine schedule over {saved['epochs']} epochs; --epochs "
                           "cannot change it on resume (start a new run from its weights: "
                           f"--weights {run}/checkpoint.pt)", option="epochs")
    done = int(ckpt.get("epoch", 0))
    if cfg.epochs < done:  # its config.json would say fewer epochs than metrics.jsonl holds
        raise AlexNetError(f"{run} has trained {done} epochs already; --epochs must be at least "
                           f"{done}", option="epochs")
    return cfg, ckpt


def check_same_data(ckpt: dict, cfg, train_set, val_set) -> None:
    """A resumed run's data must be the data it trained on, wherever it lies now (--data may
    name another path on resume): the same classes, in the same order, and as many images in
    each split (runs saved before the counts were recorded: the classes only)."""
    counts = {"train": len(train_set), "val": len(val_set)}
    saved = ckpt.get("data_counts")
    if not (isinstance(saved, dict) and set(saved) == set(counts)):
        saved = counts  # recorded since this check was made; a malformed value is ignored
    if ckpt.get("classes") and list(ckpt["classes"]) != list(train_set.classes):
        why = "other classes"
    elif saved != counts:
        why = f"{counts['train']} train / {counts['val']} val images, not {saved['train']} / " \
              f"{saved['val']}"
    else:
        return
    raise AlexNetError(f"{cfg.data} is not the data this run trained on: {why}", option="data")


def _epochs_asked(run: Path, saved: dict, may_change: set[str]) -> int | None:
    """The longer run config.json records, if a resume with a new --epochs was stopped before its
    first epoch ended: config.json is rewritten as the resume starts, the checkpoint's config only
    after an epoch, so a plain --resume would otherwise go back to the shorter run without a word.
    None when config.json records nothing longer (or cannot be read: the checkpoint decides)."""
    try:
        recorded = json.loads((Path(run) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(recorded, dict):
        return None
    # the same run: every option that may not change on resume is as the checkpoint has it
    fixed = set(saved) - may_change - {"out", "resume"}
    epochs = recorded.get("epochs")
    if type(epochs) is int and epochs > saved.get("epochs", 0) and all(
            recorded.get(k) == saved[k] for k in fixed):
        print(f"resuming toward {epochs} epochs, as {run}/config.json records (a resume with "
              f"--epochs {epochs} stopped before its first epoch ended)", flush=True)
        return epochs
    return None


# What a run directory holds (the list at the top); with its lock and the temporary files of a
# write killed midway, a directory of these alone is a run's (perhaps one killed before its
# checkpoint).
_RUN_FILE = re.compile(r"^(config\.json|metrics\.jsonl|events\.out\.tfevents\..*|best\.pt|"
                       r"checkpoint\.pt|curves\.png|skipped\.txt|results\.json)$")


def is_run_file(name: str) -> bool:
    return bool(_RUN_FILE.match(name)) or name == LOCK_NAME or is_temp_name(name)


def check_run_files(run: Path) -> None:
    """Each of a run's files that is there is a regular file (or a link to one): a directory
    named results.json was found only when the epoch's results were written, with advice for
    commands that take a file name."""
    for path in sorted(run.iterdir()):
        if _RUN_FILE.match(path.name) and not path.is_file():
            raise AlexNetError(f"{path} is not a file, and the run writes its {path.name} there: "
                               f"remove it")


def fresh_run_dir(cfg: TrainConfig, number_if_taken: bool, in_use=()) -> Path:
    """A run directory holding no run. An explicit --out holding one is an error (nothing is
    overwritten); the default one is numbered instead (runs/demo-2, ...), so that `make demo` can
    run again, also past the directories `in_use` (found locked by a run that has no checkpoint
    yet). Each candidate gets the same checks."""
    out, n = Path(cfg.out), 2
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:  # found only after the epoch, by TensorBoard's writer
        raise AlexNetError("the run directory's name is not UTF-8, which TensorBoard's log "
                           "writer needs; choose another name", option="out") from None
    while holds_a_run(out) or out in in_use:
        if not number_if_taken:
            raise AlexNetError(f"{out} already holds a run; resume it or choose another "
                               f"directory", option="out")
        out, n = Path(f"{cfg.out}-{n}"), n + 1
    return out


def holds_a_run(out: Path) -> bool:
    """Whether `out` holds a finished epoch's run; an error where a run must not write."""
    if out.exists() and not out.is_dir():
        raise AlexNetError(f"{out} exists and is not a directory", option="out")
    others = sorted(p.name for p in out.iterdir() if not is_run_file(p.name)) \
        if out.is_dir() else []
    if others:  # a run would write its files among someone else's, overwriting any of a run's name
        raise AlexNetError(f"{out} holds files that are not a run's ({', '.join(others[:3])}"
                           f"{', …' if len(others) > 3 else ''}); choose an empty or new "
                           f"directory", option="out")
    return (out / "checkpoint.pt").exists()


# --------------------------------------------------------------------------------------------------
# What a run that diverged says and leaves

def diverged(e: Diverged, cfg: TrainConfig, epoch: int, step: int) -> Diverged:
    """A non-finite training loss, with where it happened and what the run directory keeps, and
    the initialisation named where the user moved it from the paper's (--init-std 10 blows up
    at step 2 whatever the lr). At a run's very first step the learning rate has not acted yet
    (the loss is computed before the update): the weights it started from are at fault."""
    init = _init_given(cfg)
    if epoch or step:
        also = f", or the initialisation is too large ({init})" if init else ""
        return Diverged(f"{e}{also} (epoch {epoch + 1}, step {step + 1}); {kept(epoch)}",
                        option="lr")
    loss = str(e).split(";")[0]  # "the training loss became nan"
    start = (f"the weights of --weights {cfg.weights}" if cfg.weights else
             f"the initialisation ({init or f'--init {cfg.init}'})")
    return Diverged(f"{loss} at the first step, before any update, so not through the learning "
                    f"rate: {start} or the input makes the forward pass overflow; "
                    f"{kept(epoch)}", option="weights" if cfg.weights else "init_std"
                    if cfg.init == "paper" else "init")


def _init_given(cfg: TrainConfig) -> str:
    """The paper-init flags set away from their defaults ("--init-std 10"), or ""."""
    if cfg.weights or cfg.init != "paper":
        return ""
    return ", ".join(f"--{k.replace('_', '-')} {getattr(cfg, k):g}"
                     for k in ("init_std", "bias_init") if getattr(cfg, k) != DEFAULTS[k])


def kept(epoch: int) -> str:
    """What the run directory still holds when epoch `epoch` + 1 (0-based `epoch`) diverged."""
    # An exact --resume would replay the same steps, and --lr cannot change on resume.
    return (f"checkpoint.pt still holds epoch {epoch}: a new run can start from its weights with "
            f"--weights and a lower --lr" if epoch else "no epoch had finished")


def tensorboard_writer(run: Path):
    """A TensorBoard writer into the run directory, or None without TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional at run time; slow to import
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(run))


def tensorboard_epoch(writer, h: dict) -> None:
    """One epoch's line of metrics.jsonl as TensorBoard scalars (appended, never rewritten)."""
    if writer is not None:
        for key in ("train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr", "img_per_s",
                    "wait_share"):
            writer.add_scalar(key, h[key], h["epoch"])
        writer.flush()
