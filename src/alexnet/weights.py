"""Weights files in: every format a trained AlexNet comes in, read into our checkpoint dict.

    load_any(path) -> checkpoint dict       our checkpoint (file or run directory), a safetensors
                                            export, or a torchvision AlexNet state_dict file, as
                                            {model, arch, classes, stats, crop_size}
    load_torchvision_weights(path) -> checkpoint dict
    save_safetensors / read_safetensors     our safetensors export (export.py writes it)

alexnet.predictor builds a ready model on top of this; export.py writes the formats out.

Torchvision preprocessing in our format. torchvision feeds its AlexNet (x/255 − m)/s per channel,
m = (0.485, 0.456, 0.406), s = (0.229, 0.224, 0.225), on a 224 centre crop of a 256 resize. Our
pipeline feeds x − mean_image on the 0..255 scale and never divides by a standard deviation. Since

    (x/255 − m)/s = (x − 255·m) / (255·s)   and conv1 is linear in each input channel,

we set mean_image = 255·m (every pixel) and divide conv1's weights for input channel c by 255·s_c.
The converted network then computes exactly what torchvision computes (up to float rounding), with
no change to any consumer of our checkpoints. Zero padding stays exact too: a padded 0 in our input
is a padded 0 in torchvision's normalised input.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (FORMAT, check_checkpoint, is_torch_file, load_checkpoint, not_finite,
                         read_torch_file)
from .errors import AlexNetError, DataError, first_line
from .model import alexnet
from .io import atomic_write_bytes

# torchvision's ImageNet normalisation, on 0..1 pixels (AlexNet_Weights.IMAGENET1K_V1.transforms()).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The ImageNet RGB principal components used by fb.resnet.torch (and GluonCV, timm) for the paper's
# PCA lighting: eigenvalues of the pixel covariance on the 0..1 scale, eigenvectors as columns.
# Our `stats` keep the covariance's eigenvalues on the 0..255 scale (as alexnet.data computes them),
# so they are multiplied by 255² below.
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
TORCHVISION_CROP = 224
SAFETENSORS_FORMAT = "alexnet-safetensors/1"
STATS_PREFIX = "stats."  # safetensors keys of the preprocessing statistics (weights have none)


def class_names(ckpt: dict) -> list[str]:
    """The checkpoint's class names; ImageNet's for a 1000-class model without names."""
    classes = ckpt.get("classes")
    if classes:
        return list(classes)
    n = ckpt["arch"]["num_classes"]
    if n == 1000:  # an ImageNet model without names (e.g. converted weights)
        from torchvision.models import AlexNet_Weights  # slow import, needed only here
        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return [str(i) for i in range(n)]


# --- torchvision weights -------------------------------------------------------------------------

def imagenet_stats(size: int = 256) -> dict[str, torch.Tensor]:
    """torchvision's normalisation as our `stats` (0..255 scale); std is recorded, not applied."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64) * 255
    return {
        "mean_image": mean.expand(size, size, 3).float().contiguous(),
        "mean": mean.float(),
        "std": (torch.tensor(IMAGENET_STD, dtype=torch.float64) * 255).float(),
        "eigval": (torch.tensor(IMAGENET_EIGVAL, dtype=torch.float64) * 255 ** 2).float(),
        "eigvec": torch.tensor(IMAGENET_EIGVEC, dtype=torch.float32),
    }


def _strip_ddp(state_dict: dict) -> dict:
    """Keys without the "module." that DataParallel/DDP-wrapped models save."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _is_torchvision_state_dict(obj: Any) -> bool:
    return (isinstance(obj, dict) and "features.0.weight" in obj
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


def torchvision_checkpoint(state_dict: dict[str, torch.Tensor], source: str = "") -> dict:
    """Our checkpoint (variant owt) for a torchvision AlexNet state_dict, with torchvision's
    per-channel std folded into conv1 (see the module doc)."""
    state_dict = _strip_ddp(state_dict) if isinstance(state_dict, dict) else state_dict
    if not _is_torchvision_state_dict(state_dict) or "classifier.6.weight" not in state_dict:
        odd = next((k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)), None) \
            if isinstance(state_dict, dict) else None
        why = (f"its {odd} is a {type(state_dict[odd]).__name__}, not a tensor"
               if odd is not None else "no features.0.weight / classifier.6.weight")
        raise AlexNetError(f"{source or 'input'} is not a torchvision AlexNet state_dict ({why})")
    num_classes, in_channels = (state_dict["classifier.6.weight"].shape[0],
                                state_dict["features.0.weight"].shape[1])
    if in_channels != 3:
        raise AlexNetError(f"{source}: torchvision's normalisation is for RGB; conv1 takes "
                        f"{in_channels} channels")
    reference = alexnet("owt", num_classes=num_classes).state_dict()
    mismatch = sorted(k for k in reference.keys() | state_dict.keys()
                      if k not in state_dict or k not in reference
                      or reference[k].shape != state_dict[k].shape)
    if mismatch:
        raise AlexNetError(f"{source} does not fit torchvision's AlexNet layout: {mismatch[:4]}")
    broken = not_finite(state_dict)
    if broken:  # else written, then refused by every command as a run that diverged
        raise AlexNetError(f"{source}: its weights are not finite ({broken} holds NaN or inf)")
    weights = {k: v.detach().float().clone() for k, v in state_dict.items()}
    std255 = torch.tensor(IMAGENET_STD, dtype=torch.float64) * 255
    conv1 = state_dict["features.0.weight"].double() / std255[None, :, None, None]
    weights["features.0.weight"] = conv1.float()
    arch = {"variant": "owt", "num_classes": num_classes, "in_channels": 3, "options": {}}
    return {
        "format": FORMAT, "model": weights, "arch": arch,
        "classes": class_names({"arch": arch}),  # ImageNet's names for 1000 classes, else "0", …
        "stats": imagenet_stats(), "crop_size": TORCHVISION_CROP,
        "origin": f"torchvision state_dict {Path(source).name}; std folded into conv1",
    }


def load_torchvision_weights(path: str | os.PathLike) -> dict:
    """Our checkpoint dict for a file saved by torch.save(torchvision.models.alexnet().state_dict())
    (also accepts torchvision's reference-script checkpoints, {"model": state_dict, …})."""
    path = Path(path)
    if path.is_file() and _is_safetensors(path):
        raise AlexNetError(f"{path} is a safetensors file; convert takes torchvision's "
                           f"torch.save(model.state_dict()) file (alexnet's own safetensors "
                           f"exports load as they are)")
    obj = _read_torch(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:  # its std would be folded twice
        raise AlexNetError(f"{path} is an alexnet checkpoint already: every command takes it as "
                           f"it is")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # torchvision's reference training scripts save {"model": …, …}
    return torchvision_checkpoint(obj, str(path))


# --- safetensors ---------------------------------------------------------------------------------

def save_safetensors(path: str | os.PathLike, ckpt: dict) -> None:
    """Weights under their state_dict names, the statistics under "stats.*", and the rest of what
    rebuilds the model (arch, classes, crop_size) as JSON strings in the metadata."""
    from safetensors.torch import save  # imported on use: safetensors is slow to import

    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt["model"].items()}
    for k, v in ckpt["stats"].items():
        tensors[STATS_PREFIX + k] = torch.as_tensor(v).float().contiguous()
    metadata = {"format": SAFETENSORS_FORMAT, "arch": json.dumps(ckpt["arch"]),
                "classes": json.dumps(list(ckpt.get("classes") or [])),
                "crop_size": str(int(ckpt["crop_size"]))}
    # Bytes, written by Python: safetensors' own writer reports a full disk as a SafetensorError
    # (a traceback), where Python's OSError is the usual one-line "no space left" error.
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def read_safetensors(path: str | os.PathLike) -> dict:
    """The checkpoint dict (no optimiser state) stored by save_safetensors."""
    from safetensors import safe_open  # imported on use, as in save_safetensors

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise AlexNetError(f"cannot read safetensors file {path}: {first_line(e)}") from None
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise AlexNetError(f"{path} is a safetensors file but not an alexnet export "
                        f"(no '{SAFETENSORS_FORMAT}' metadata)")
    stats = {k[len(STATS_PREFIX):]: v for k, v in tensors.items() if k.startswith(STATS_PREFIX)}
    weights = {k: v for k, v in tensors.items() if not k.startswith(STATS_PREFIX)}
    ckpt = {"format": FORMAT, "model": weights, "stats": stats}
    for key in ("arch", "classes", "crop_size"):  # JSON strings: the metadata holds only strings
        try:
            ckpt[key] = json.loads(meta[key])
        except (KeyError, TypeError, ValueError):
            raise AlexNetError(f"{path} is damaged: its metadata has no JSON '{key}'") from None
    check_checkpoint(ckpt, path)
    return ckpt


# --- any file ------------------------------------------------------------------------------------

def _read_torch(path: Path) -> Any:
    _check_file(path)
    return read_torch_file(path)


def _check_file(path: Path) -> None:
    if path.is_file():
        return
    raise AlexNetError(f"{path} is a directory, not a weights file" if path.is_dir() else
                       f"weights file not found: {path}" if not path.exists() else
                       f"{path} is not a regular file")


def _is_safetensors(path: Path) -> bool:
    # The format: an 8-byte little-endian header length, then a JSON header.
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and path.stat().st_size > 8


def load_any(path: str | os.PathLike) -> dict:
    """The checkpoint dict for our checkpoint (file or run directory), a safetensors export or a
    torchvision AlexNet state_dict file; anything else is a one-line AlexNetError."""
    path = Path(path)
    if path.is_dir():
        return load_checkpoint(path)
    _check_file(path)
    if _is_safetensors(path):
        return read_safetensors(path)
    # named so, but too short or with no JSON header (a torch.save file renamed still loads)
    if path.suffix.lower() == ".safetensors" and not is_torch_file(path):
        raise AlexNetError(f"cannot read {path}: not a safetensors file (no JSON header)")
    obj = read_torch_file(path)  # _check_file above: a regular file
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        check_checkpoint(obj, path)
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # torchvision's reference training scripts save {"model": …, …}
    if isinstance(obj, dict) and _is_torchvision_state_dict(_strip_ddp(obj)):
        return torchvision_checkpoint(obj, str(path))
    raise AlexNetError(f"{path} is neither an alexnet checkpoint, an alexnet safetensors export "
                    "nor a torchvision AlexNet state_dict")
