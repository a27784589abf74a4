"""Checkpoints: written atomically, read with weights_only=True (no pickled code ever runs).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
    format       "alexnet-checkpoint/1"
    model        the state_dict (single-device layout, also for model-parallel runs)
    arch         {"variant", "num_classes", "in_channels", "options": {...}} to rebuild the model
    classes      class names, in label order
    stats        the training data's statistics used for preprocessing ("mean_image", …)
    crop_size    the network's input size (227 paper, 224 owt)
    and, for resuming: optimizer, scheduler, epoch (completed), rng, config, history, best_top1_error,
    scaler, world_size (the number of DDP processes), precision (as resolved: bf16, fp16 or fp32);
    TRAINING_STATE below
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.imageset import STAT_KEYS
from .errors import AlexNetError, DataError, first_line
from .io import atomic_torch_save
from .model import LEGACY_OPTIONS, alexnet
from .summary import layer_table

FORMAT = "alexnet-checkpoint/1"
# What checkpoint.pt holds beyond a model file (best.pt and exports have none of it): what
# --resume needs, and what prediction drops on loading (SGD's momentum alone is as large as the
# weights). Checkpoints written before the LATER ones were kept resume without them.
TRAINING_STATE = ("optimizer", "scheduler", "rng", "history", "best_top1_error")
LATER_TRAINING_STATE = ("scaler", "world_size", "precision")


def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> None:
    atomic_torch_save(path, {"format": FORMAT, **ckpt})


def is_torch_file(path: Path) -> bool:
    """Starts as torch.save's files do: a zip archive (legacy: a pickle, protocol byte 0x80)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _is_torchscript(path: Path) -> bool:
    """torch.jit.save's archives hold the module's code (…/code/); torch.save's do not."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(name.split("/")[1:2] == ["code"] for name in z.namelist())
    except (zipfile.BadZipFile, OSError):  # a legacy pickle, or a damaged zip: torch.load says
        return False


def read_torch_file(path: Path, map_location="cpu") -> Any:
    """What torch.save wrote to `path`, loaded with weights_only=True; any other file (text, an
    image, safetensors, a truncated file, pickled code) is a one-line DataError naming it."""
    # say so plainly for anything else instead of passing on torch's message about unpickling
    if not is_torch_file(path):
        raise DataError(f"cannot read {path}: not a PyTorch file (torch.save)")
    try:
        with warnings.catch_warnings():  # torch warns before it fails; the error says it all
            warnings.simplefilter("ignore")
            # a file object: given a path ending in .safetensors, torch.load (2.14) reads it
            # as safetensors whatever it holds; we decide the format by content
            with open(path, "rb") as f, _reference_script_args_allowed():
                return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, pickled code, …
        if _is_torchscript(path):  # torch's words ("Cannot use weights_only=True …") hide it
            raise DataError(f"cannot read {path}: a TorchScript module (torch.jit.load reads "
                            f"it; give a checkpoint, a run directory or a safetensors export)")
        raise DataError(f"cannot read {path}: {_torch_reason(e)}") from None


def _torch_reason(e: Exception) -> str:
    """torch's reason in a few words: its first sentence, after the C++ source position that
    some of its errors start with ("[enforce fail at inline_container.cc:180] . file in archive
    is not in a subdirectory: a.txt", a zip that torch.save did not write)."""
    line = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", first_line(e))
    return line.split(". ")[0] or type(e).__name__


def _reference_script_args_allowed():
    """torchvision's reference training script saves its argparse.Namespace ("args") beside the
    weights, which weights_only refuses by default. A Namespace is only a __dict__ of what the
    weights-only unpickler checks anyway, so it is allowed while we read."""
    allow = getattr(torch.serialization, "safe_globals", None)
    if allow is None:  # torch 2.4 has only the process-wide list
        torch.serialization.add_safe_globals([argparse.Namespace])
        return contextlib.nullcontext()
    return allow([argparse.Namespace])


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Load and check a checkpoint; any problem is a one-line DataError.

    A run directory means its best.pt. A run killed in its first epoch has none yet: that is said
    rather than silently taking another file (name checkpoint.pt to get the latest weights)."""
    path = Path(path)
    if path.is_dir():
        if not any((path / name).exists() for name in ("config.json", "best.pt",
                                                       "checkpoint.pt")):
            # train writes config.json before its first step
            raise DataError(f"{path} is a directory but not a training run: give a run "
                            "directory, a checkpoint or a weights file")
        if not (path / "best.pt").is_file():
            hint = (f"; {path / 'checkpoint.pt'} holds the latest weights"
                    if (path / "checkpoint.pt").is_file() else "")
            raise DataError(f"{path} has no best.pt (no epoch has finished){hint}")
        path = path / "best.pt"
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    ckpt = read_torch_file(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataError(f"{path} is not an alexnet checkpoint (no '{FORMAT}' marker)")
    check_checkpoint(ckpt, path)
    return ckpt


def check_checkpoint(ckpt: dict, source) -> None:
    """What every consumer of a checkpoint relies on is there and of the right kind."""
    arch = ckpt.get("arch")
    problems = [key for key, ok in [
        ("model", isinstance(ckpt.get("model"), dict)
         and all(torch.is_tensor(v) for v in ckpt["model"].values())),
        ("arch", isinstance(arch, dict) and isinstance(arch.get("options"), dict)
         and all(isinstance(arch.get(k), t) for k, t in
                 (("variant", str), ("num_classes", int), ("in_channels", int)))),
        ("stats", isinstance(ckpt.get("stats"), dict)
         and all(torch.is_tensor(ckpt["stats"].get(k)) for k in STAT_KEYS)),
        ("crop_size", isinstance(ckpt.get("crop_size"), int)),
        # the training run's options, read for its data and seed (exports carry none)
        ("config", "config" not in ckpt or isinstance(ckpt["config"], dict)
         and isinstance(ckpt["config"].get("seed", 0), int)
         and isinstance(ckpt["config"].get("data", ""), (str, type(None)))),
    ] if not ok]
    if problems:
        raise DataError(f"{source} is damaged: missing or malformed {', '.join(problems)}")
    wrong = _stats_problem(ckpt["stats"], arch["in_channels"], ckpt["crop_size"])
    if wrong:  # else blamed on --data, or every prediction NaN
        raise DataError(f"{source} is damaged: its stats {wrong}")
    classes = ckpt.get("classes")  # none (or []): predictions are named by number
    if classes and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
                        and len(classes) == arch["num_classes"]):
        raise DataError(f"{source} is damaged: its classes are not {arch['num_classes']} names, "
                        f"one per class of its network")


def _stats_problem(stats: dict, channels: int, crop_size: int) -> str | None:
    """What is wrong with a checkpoint's statistics for a net of `channels` inputs taking
    `crop_size` crops, or None: the shapes Augment needs, and finite values."""
    mean_image = stats["mean_image"]
    if mean_image.dim() != 3 or mean_image.shape[0] != mean_image.shape[1] \
            or mean_image.shape[2] != channels or mean_image.shape[0] < crop_size:
        return (f"mean_image is {tuple(mean_image.shape)}, not (S, S, {channels}) with S at "
                f"least the crop size {crop_size}")
    shapes = {"mean": (channels,), "std": (channels,), "eigval": (channels,),
              "eigvec": (channels, channels)}
    for key, shape in shapes.items():
        if tuple(stats[key].shape) != shape:
            return f"{key} is {tuple(stats[key].shape)}, not {shape}"
    broken = not_finite({k: stats[k] for k in STAT_KEYS})
    return f"{broken} holds NaN or inf" if broken else None


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the network described by `arch` and load its weights."""
    arch = ckpt["arch"]
    options = arch["options"]
    if arch["variant"] == "paper":  # owt never had these options
        options = {**LEGACY_OPTIONS, **options}

    # Built on the meta device: no memory and no random initialisation, both wasted on weights
    # the checkpoint replaces (the paper's init of 60M weights was most of a predict's start-up).
    try:
        with torch.device("meta"):
            model = alexnet(arch["variant"], num_classes=arch["num_classes"],
                            in_channels=arch["in_channels"], **options)
    except (AlexNetError, TypeError) as e:  # its option= would name a flag the user never gave
        raise DataError(f"the checkpoint's arch does not describe a network this version "
                        f"builds: {first_line(e)}") from None
    try:
        layer_table(model, ckpt["crop_size"])  # traced for free: does it take crop_size inputs?
    except AlexNetError:  # not the checkpoint's (ALEXNET_LRN set wrong): as it is
        raise
    except ValueError as e:
        raise DataError(f"the checkpoint's crop_size {ckpt['crop_size']} does not fit its "
                        f"network: {e}") from None
    own = model.state_dict()
    weights = ckpt["model"]
    wrong = [k for k in own.keys() | weights.keys() if k not in own or k not in weights
             or tuple(own[k].shape) != tuple(weights[k].shape)]
    if wrong:
        k = sorted(wrong)[0]
        found = tuple(weights[k].shape) if k in weights else "nothing"
        wanted = tuple(own[k].shape) if k in own else "nothing"
        raise DataError(f"the checkpoint's weights do not fit its own architecture ({arch}): "
                        f"{k} is {found} where {wanted} was expected")
    broken = not_finite(weights)
    if broken:  # every prediction would be NaN; say so once, here
        raise DataError(f"the checkpoint's weights are not finite ({broken} holds NaN or inf): "
                        f"the run that wrote it diverged, or the file was damaged")
    # assign: the model takes contiguous copies in its own dtypes, as load_state_dict's copy
    # would give, and never the checkpoint's tensors (changing the model leaves ckpt alone)
    model.load_state_dict({k: v.to(dtype=own[k].dtype, memory_format=torch.contiguous_format,
                                   copy=True) for k, v in weights.items()}, assign=True)
    left = [k for k, v in [*model.named_parameters(), *model.named_buffers()] if v.is_meta]
    if left:  # a tensor outside the state_dict (none today) would have no value: our bug
        raise RuntimeError(f"model_from_checkpoint: {left[0]} was not in the state_dict")
    return model


def not_finite(weights: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf, or None."""
    return next((k for k, v in weights.items()
                 if v.is_floating_point() and not torch.isfinite(v).all()), None)


def check_compatible(ckpt: dict[str, Any], num_classes: int, variant: str | None = None) -> None:
    """A checkpoint used on a dataset (eval, resume) must match its class count and variant."""
    arch = ckpt["arch"]
    if arch["num_classes"] != num_classes:
        raise AlexNetError(f"checkpoint has {arch['num_classes']} classes but the data has "
                        f"{num_classes}")
    if variant is not None and arch["variant"] != variant:
        raise AlexNetError(f"checkpoint is variant {arch['variant']!r}, not {variant!r}")


# --- random number generator state (weights_only-safe: tensors and plain Python values) ----------

def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, key, *rest = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), *rest))
    *inner, version, gauss = state["python"]
    random.setstate((version, tuple(inner), gauss))
    if "cuda" in state and torch.cuda.is_available():
        # Only the GPUs visible now: a run saved with more (resumed under CUDA_VISIBLE_DEVICES=0)
        # would otherwise fail on a device that does not exist. Training reseeds every epoch.
        for i, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, i)
