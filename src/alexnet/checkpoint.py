"""Checkpoints: written atomically, read with weights_only=True (no pickled code ever runs).

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts:
    format       "alexnet-checkpoint/1"
    model        the state_dict (single-device layout, also for model-parallel runs)
    arch         {"variant", "num_classes", "in_channels", "options": {...}} to rebuild the model
    classes      class names, in label order
    stats        the training data's statistics used for preprocessing ("mean_image", …)
    crop_size    the network's input size (227 paper, 224 owt)
    and, for resuming: optimizer, scheduler, epoch (completed), rng, config, history, best_top1_error
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .io import atomic_torch_save
from .model import alexnet

FORMAT = "alexnet-checkpoint/1"


def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> None:
    atomic_torch_save(path, {"format": FORMAT, **ckpt})


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Load and check a checkpoint; any problem is a one-line UserError."""
    path = Path(path)
    if path.is_dir():  # a run directory: take its best (else latest) checkpoint
        candidates = [path / "best.pt", path / "checkpoint.pt"]
        path = next((p for p in candidates if p.is_file()), candidates[-1])
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled code, …
        raise UserError(f"cannot read checkpoint {path}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path} is not an alexnet checkpoint (no '{FORMAT}' marker)")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the network described by `arch` and load its weights."""
    arch = ckpt["arch"]
    model = alexnet(arch["variant"], num_classes=arch["num_classes"],
                    in_channels=arch["in_channels"], **arch["options"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"checkpoint weights do not fit its own architecture: "
                        f"{str(e).splitlines()[0][:200]}") from None
    return model


def check_compatible(ckpt: dict[str, Any], num_classes: int, variant: str | None = None) -> None:
    """A checkpoint used on a dataset (eval, resume) must match its class count and variant."""
    arch = ckpt["arch"]
    if arch["num_classes"] != num_classes:
        raise UserError(f"checkpoint has {arch['num_classes']} classes but the data has "
                        f"{num_classes}")
    if variant is not None and arch["variant"] != variant:
        raise UserError(f"checkpoint is variant {arch['variant']!r}, not {variant!r}")


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
        torch.cuda.set_rng_state_all(state["cuda"])
