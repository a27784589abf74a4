"""Moving out: export to ONNX / TorchScript / safetensors, torchvision conversion, features.

    alexnet export CKPT --format onnx|torchscript|safetensors OUT
    alexnet convert torchvision FILE OUT
    alexnet features CKPT --data SPEC --layer fc7 OUT.npy [--split val] [--limit N]

CKPT is anything Predictor.from_file reads (checkpoint, run directory, safetensors export,
torchvision state_dict). The ONNX and TorchScript graphs take what the model takes: float32 (N, C,
crop, crop), the centre crop of a 256×256 image (or the size the data was prepared at) on the 0..255
scale minus the training mean image; they return the logits. Their metadata (ONNX metadata_props,
TorchScript extra file "alexnet.json") carries arch, classes, crop_size, image_size and the
per-channel mean; the safetensors export carries the mean image.

Exported graphs use `PortableLRN`, the paper's formula written with ops every exporter knows (pad,
slice, add, pow), in place of alexnet.lrn.LocalResponseNorm, whose forward may dispatch to a fast
native kernel that neither the ONNX exporter nor a TorchScript consumer could see; likewise torch's
nn.MaxPool2d and nn.Conv2d for our pool.MaxPool2d and stem.StemConv2d.
"""
from __future__ import annotations

import copy
import errno
import io
import json
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .accel import PRECISIONS, tune_allocator
from .checkpoint import model_from_checkpoint, save_checkpoint
from .data import open_dataset
from .errors import AlexNetError, WriteError
from .io import atomic_path, atomic_write, atomic_write_bytes, check_not_same
from .lrn import LocalResponseNorm
from .options import check_value, path_arg
from .pool import MaxPool2d
from .predictor import Predictor
from .progress import Progress
from .stem import StemConv2d
from .weights import load_torchvision_weights, save_safetensors

FORMATS = ("onnx", "torchscript", "safetensors")
ONNX_OPSET = 17


class PortableLRN(nn.Module):
    """The paper's LRN, b = a / (k + α Σ_window a²)^β, in exportable ops; equal to lrn_reference."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, groups: int):
        super().__init__()
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for part in x.chunk(self.groups, dim=1):  # the window stays inside each tower
            c = part.shape[1]
            # Zero-pad the channel axis (pad lists the last dims first: W, H, then C).
            sq = F.pad(part * part, (0, 0, 0, 0, self.size // 2, (self.size - 1) // 2))
            window = sq[:, 0:c]
            for i in range(1, self.size):
                window = window + sq[:, i:i + c]
            out.append(part / (self.k + self.alpha * window).pow(self.beta))
        return torch.cat(out, dim=1)


# Our modules that are torch's own with a faster CPU path (the same parameters and numbers): an
# export gets torch's class, whose forward every exporter knows.
_TORCH_CLASS = {MaxPool2d: nn.MaxPool2d, StemConv2d: nn.Conv2d}


def portable(model: nn.Module) -> nn.Module:
    """An eval-mode copy of the model with every LRN swapped for PortableLRN, and our pooling and
    stem conv for torch's classes (the same numbers; nothing an exporter cannot see)."""
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        if type(module) in _TORCH_CLASS:  # a copy, so retyped in place: weights and hooks kept
            module.__class__ = _TORCH_CLASS[type(module)]
        elif isinstance(module, LocalResponseNorm):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, PortableLRN(module.size, module.alpha, module.beta, module.k,
                                               module.groups))
    return model


def _metadata(ckpt: dict) -> dict[str, str]:
    """What a deployment needs besides the graph, as strings (ONNX and TorchScript take those).
    The mean image itself (image_size² × C floats) is in the safetensors export."""
    size = int(torch.as_tensor(ckpt["stats"]["mean_image"]).shape[0])  # prepare --size
    return {"format": "alexnet-export/1", "arch": json.dumps(ckpt["arch"]),
            "classes": json.dumps(list(ckpt.get("classes") or [])),
            "crop_size": str(int(ckpt["crop_size"])), "image_size": str(size),
            "mean": json.dumps(torch.as_tensor(ckpt["stats"]["mean"]).float().tolist()),
            "input": f"float32 (N, C, crop, crop): centre crop of a {size}x{size} image, 0..255, "
                     "minus the training mean image (in the safetensors export)"}


def _example_input(ckpt: dict, batch: int = 2) -> torch.Tensor:
    s, c = int(ckpt["crop_size"]), int(ckpt["arch"]["in_channels"])
    return torch.randn(batch, c, s, s, generator=torch.Generator().manual_seed(0)) * 50


def export_onnx(ckpt: dict, path: str | os.PathLike, opset: int = ONNX_OPSET) -> None:
    """ONNX with a dynamic batch axis: input "input", output "logits", metadata "alexnet.*"."""
    try:
        import onnx
    except ImportError:
        raise AlexNetError("ONNX export needs the onnx package: pip install 'alexnet[export]'") \
            from None
    model = portable(model_from_checkpoint(ckpt))

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            # dynamo=False: the TorchScript-based exporter, which needs no onnxscript. Its
            # deprecation warning is expected; we choose it because it has no extra dependency.
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
            # It also notes, three times, that it cannot constant-fold PortableLRN's slices.
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            torch.onnx.export(model, (_example_input(ckpt),), str(tmp), dynamo=False,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=opset)
        proto = onnx.load(str(tmp))
        for key, value in _metadata(ckpt).items():
            proto.metadata_props.add(key=f"alexnet.{key}", value=value)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

    atomic_write(path, write)


def export_torchscript(ckpt: dict, path: str | os.PathLike) -> None:
    """A traced TorchScript module; torch.jit.load(path, _extra_files={"alexnet.json": ""})
    also returns the metadata."""
    model = portable(model_from_checkpoint(ckpt))
    extra = {"alexnet.json": json.dumps(_metadata(ckpt))}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        # check_trace=False: the check reruns the model twice; the tests compare outputs instead.
        traced = torch.jit.trace(model, (_example_input(ckpt),), check_trace=False)
        # Saved to memory, then written by Python: torch.jit.save's own file writer aborts the
        # process in C++ on a full disk (no exception to catch, and the temporary file is left).
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files=extra)
    atomic_write_bytes(path, buffer.getvalue())


def export(ckpt: dict, fmt: str, path: str | os.PathLike) -> None:
    if fmt == "onnx":
        export_onnx(ckpt, path)
    elif fmt == "torchscript":
        export_torchscript(ckpt, path)
    elif fmt == "safetensors":
        save_safetensors(path, ckpt)
    else:
        raise AlexNetError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")


# --- features for a dataset ----------------------------------------------------------------------

def dataset_features(predictor: Predictor, data, layer: str, out: Path, batch_size: int = 64,
                     limit: int | None = None, progress: bool = True) -> tuple:
    """Write the `layer` activations of the first `limit` images of `data` (centre crop) to `out`
    (.npy, float32, (N, …)) and their labels to out.labels.npy; both atomic. Row i is image i;
    an image that cannot be read gets label -1 (and the features of a black image). Returns
    (shape, labels path, [(index, why) of the unreadable images]).

    The array is a memory map filled batch by batch, so conv1 features of a large dataset need
    disk, not RAM."""
    n = len(data) if limit is None else min(limit, len(data))
    if n == 0:
        raise AlexNetError("the dataset has no images to extract features from")
    starts = range(0, n, batch_size)
    labels = np.empty(n, dtype=np.int64)
    labels_path = out.with_suffix(".labels.npy")
    unreadable = []
    # both temporaries first, so that a labels path that cannot be written fails before any work
    # and a failure leaves neither file
    with (Progress(len(starts), f"features {layer}", enabled=progress) as bar,
          atomic_path(out) as tmp, atomic_path(labels_path) as labels_tmp):
        array = None
        for start in starts:
            idx = list(range(start, min(start + batch_size, n)))
            images, batch_labels, failed = _batch(data, idx)
            unreadable += failed
            act = predictor.features(images, layer).numpy()
            if array is None:  # the layer's shape is known after the first batch
                array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                                  shape=(n, *act.shape[1:]))
                _reserve(tmp, out)
            array[start:start + len(idx)] = act
            labels[start:start + len(idx)] = batch_labels
            bar.update()
        array.flush()
        shape = array.shape
        del array  # close the map before the file is renamed into place
        _save_npy(labels_tmp, labels)
    return shape, labels_path, unreadable


def _reserve(tmp: Path, out: Path) -> None:
    """Allocate the disk blocks of the sparse file `tmp` a memory map was made on (to be
    published as `out`). Without this a full disk is met only when a page is written back, and
    the process dies of SIGBUS, with no error to report and the temporary files left."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: the map stays sparse
        return
    with open(tmp, "rb+") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno == errno.ENOSPC:  # named here: the labels' writer would be blamed
                raise WriteError(f"cannot write {out}: no space left on device") from None
            # EOPNOTSUPP / EINVAL: a file system without fallocate; the map stays sparse


def _batch(data, idx):
    """uint8 images, int64 labels (-1 where unreadable) and [(index, why)] of the items `idx`."""
    images, failed = data.read(idx)
    images = torch.as_tensor(images) if not isinstance(images, torch.Tensor) else images
    labels = np.asarray(data.labels)[idx].copy()
    labels[[idx.index(i) for i, _ in failed]] = -1
    return images, labels, failed


def _save_npy(path: Path, array) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a bare path
        np.save(f, array)


# --- the commands --------------------------------------------------------------------------------

def add_arguments_export(parser) -> None:
    parser.add_argument("checkpoint", type=path_arg,
                        help="checkpoint, run directory or weights file")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("out", type=path_arg, help="output file")


def run_export(args) -> int:
    check_not_same(args.checkpoint, args.out)
    ckpt = Predictor.from_file(args.checkpoint, device="cpu", precision="fp32").ckpt
    export(ckpt, args.format, args.out)
    print(f"wrote {args.format} export of {ckpt['arch']['variant']} "
          f"({ckpt['arch']['num_classes']} classes, input {ckpt['crop_size']}) to {args.out}")
    return 0


def add_arguments_convert(parser) -> None:
    parser.add_argument("source", choices=("torchvision",), help="where the weights come from")
    parser.add_argument("file", type=path_arg,
                        help="torchvision AlexNet state_dict (torch.save of .state_dict())")
    parser.add_argument("out", type=path_arg, help="output checkpoint (.pt)")


def run_convert(args) -> int:
    check_not_same(args.file, args.out)
    ckpt = load_torchvision_weights(args.file)
    save_checkpoint(args.out, {k: v for k, v in ckpt.items() if k != "format"})
    print(f"wrote {args.out}: variant owt, {ckpt['arch']['num_classes']} classes, "
          f"crop {ckpt['crop_size']}, torchvision normalisation folded into conv1")
    return 0


def add_arguments_features(parser) -> None:
    parser.add_argument("checkpoint", type=path_arg,
                        help="checkpoint, run directory or weights file")
    parser.add_argument("out", type=path_arg, help="output .npy (labels go to OUT.labels.npy)")
    parser.add_argument("--data", type=path_arg, default=None,
                        help="dataset spec (as for train/eval; "
                        "default: the one the model trained on, else shapes)")
    parser.add_argument("--split", default="val", choices=("train", "val"))
    parser.add_argument("--val-labels", type=path_arg, default=None,
                        help="ILSVRC-2012 ground-truth file")
    parser.add_argument("--layer", default="fc7", help="conv1 … conv5, pool5, fc6, fc7, fc8 …")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--device", default="auto")
    # fp32 by default: features are data for analysis, where bf16's 3 significant digits show.
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--no-progress", action="store_true")


def run_features(args) -> int:
    out = Path(args.out)
    if out.suffix != ".npy":
        raise AlexNetError(f"the output OUT must be a .npy file, got {out}")
    check_value("batch_size", args.batch_size, int, {"low": 1})
    check_value("limit", args.limit, Optional[int], {"low": 1})
    check_not_same(args.checkpoint, out)
    tune_allocator()  # our own process, over a whole dataset (the library leaves it alone)
    predictor = Predictor.from_file(args.checkpoint, args.device, args.precision)
    predictor.check_layer(args.layer)
    spec, val_labels = predictor.own_data(args.data, args.val_labels)
    data = open_dataset(spec, args.split, seed=predictor.data_seed, val_labels=val_labels)
    predictor.check_data(data, classes=False)
    shape, labels_path, unreadable = dataset_features(predictor, data, args.layer, out,
                                                      args.batch_size, args.limit,
                                                      not args.no_progress)
    print(f"wrote {args.layer} features {tuple(shape)} to {out} and labels to {labels_path}")
    if unreadable:
        i, why = unreadable[0]
        print(f"{len(unreadable)} unreadable image(s) have label -1 (their rows are a black "
              f"image's), e.g. row {i}, {data.describe(i)}: {why}")
    return 0
