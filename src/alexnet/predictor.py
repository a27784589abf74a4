"""The one way in for a trained model: weights, network, preprocessing, class names and the fast
inference path, from any weights file (as torchvision's `AlexNet_Weights` bundles weights,
transforms and categories, so that nobody re-assembles them).

    p = Predictor.from_file("runs/demo", device="auto", precision="auto")
    images = p.load_images(["cat.jpg"])       # uint8 (B, S, S, C): the paper's S×S preparation
    probs = p.probs(images, crops=10)         # (B, classes): softmax averaged over the 10 views
    p.top(probs, k=5)                         # [[(class name, probability), …], …]
    fc7 = p.features(images, "fc7")           # (B, 4096) of the centre crops, eval mode

`alexnet eval`, `predict`, `features`, `show`, `export` and hubconf.py all come in here. The
network runs on the fast inference path of alexnet.accel (weights cast once to bf16 where that is
native, instead of autocast re-casting all 61M weights on every call), the same path that
`alexnet bench model` measures for inference.
"""
from __future__ import annotations

import copy
import os
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from .checkpoint import (LATER_TRAINING_STATE, TRAINING_STATE, check_compatible,
                         model_from_checkpoint)
from .data.augment import Augment
from .data.folder import load_image
from .errors import AlexNetError, DataError
from .io import read_text, text_fields
from .runtime import Runtime
from .weights import class_names, load_any

@contextmanager
def _evaluating(model: torch.nn.Module):
    """Eval mode for the duration, then every module back in the mode it was in (a snapshot of
    a model being trained wraps the live model: the caller's training mode must survive)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def read_names(path: str | os.PathLike, classes: list[str]) -> dict[str, str]:
    """{class: readable name} from a file of lines '<class> <name…>', the form of ImageNet's
    LOC_synset_mapping.txt ('n01440764 tench, Tinca tinca') and Caffe's synset_words.txt: a model
    trained on ImageNet's folders names its classes by WordNet ID. Lines for classes the model
    lacks are skipped, so the 1000-line file serves a model of a few of them. A class whose name
    holds a space is named on a line '<class><TAB><name>' (io.text_fields)."""
    try:
        lines = read_text(path).splitlines()
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise DataError(f"cannot read the names file {path}: {why}", option="names") from None
    names, known = {}, set(classes)
    for n, line in enumerate(lines, 1):
        fields = text_fields(line, maxsplit=1)
        if not fields:
            continue
        if len(fields) < 2:
            raise DataError(f"{path}, line {n}: expected '<class> <name>'", option="names")
        if fields[0] in known:
            names[fields[0]] = fields[1].strip()
    if not names:
        raise DataError(f"{path} names none of the model's classes (e.g. {classes[0]!r})",
                        option="names")
    return names


def _check_batch(images: torch.Tensor) -> None:
    if len(images) == 0:
        raise AlexNetError("no images: the batch is empty")


class Predictor:
    """A trained network with what it needs to be used (see the module doc)."""

    def __init__(self, ckpt: dict, rt: Runtime, model: torch.nn.Module, autocast: bool = False):
        self.ckpt, self.rt, self.model = ckpt, rt, model
        self.autocast = autocast  # True for a live training model (weights left in fp32)
        self.classes = class_names(ckpt)
        self.channels = ckpt["arch"]["in_channels"]
        self.stats = ckpt["stats"]
        self.augment = Augment(self.stats, crop_size=ckpt["crop_size"], device=rt.device)
        self.image_size, self.crop_size = self.augment.size, self.augment.crop_size

    @classmethod
    def from_file(cls, path: str | os.PathLike, device="auto", precision: str = "auto",
                  compile: bool = False) -> "Predictor":
        """Our checkpoint or run directory (best.pt), a safetensors export or torchvision
        weights, ready to run on `device` at `precision` ("auto": the device's fast one)."""
        return cls.from_checkpoint(load_any(path), device, precision, compile)

    @classmethod
    def from_checkpoint(cls, ckpt: dict, device="auto", precision: str = "auto",
                        compile: bool = False) -> "Predictor":
        """The same, from a checkpoint already read (`load_any`)."""
        drop = (*TRAINING_STATE, *LATER_TRAINING_STATE)  # never needed to predict
        ckpt = {k: v for k, v in ckpt.items() if k not in drop}
        rt = Runtime.create(device, precision)
        return cls(ckpt, rt, rt.prepare_inference(model_from_checkpoint(ckpt), compile=compile))

    @classmethod
    def snapshot(cls, model: torch.nn.Module, meta: dict, rt: Runtime) -> "Predictor":
        """A predictor of a model being trained (meta: arch, classes, stats, crop_size), for the
        evaluation between epochs. On one device it is a copy on the fast inference path (so the
        training weights are never cast); split, DDP-wrapped or compiled models are evaluated
        as they are, under autocast."""
        inner = rt.unwrap(model)
        if rt.model_devices is None and inner is model and rt.precision != "fp32":
            return cls(meta, rt, rt.prepare_inference(copy.deepcopy(inner)))
        return cls(meta, rt, model, autocast=True)

    def network(self) -> torch.nn.Module:
        """A plain float32 copy of the network on the CPU, in eval mode (for export, torch.hub
        and anyone who wants the nn.Module as it was trained, without the fast path's casts)."""
        return model_from_checkpoint(self.ckpt).eval()

    # --- running the network ---------------------------------------------------------------

    def _run(self, fn, x: torch.Tensor):
        """fn on float32 crops: on the inference path each conv/fc layer casts its own input to
        its weights' dtype (accel.cast_inputs_at_layers), so that a Scale before conv1 multiplies
        in float32 as in training; a live training model runs under autocast instead."""
        with self.rt.autocast() if self.autocast else nullcontext():
            return fn(self.rt.to_input(x))

    @torch.no_grad()
    def probs(self, images: torch.Tensor, crops: int = 1) -> torch.Tensor:
        """Softmax probabilities (B, classes), float32, of uint8 (B, S, S, C) images, averaged
        over the centre crop (crops=1) or the paper's 10 views (§4.1)."""
        if crops not in (1, 10):
            raise AlexNetError(f"crops must be 1 or 10, got {crops}", option="crops")
        _check_batch(images)
        images = images.to(self.rt.device, non_blocking=True)
        views = self.augment.center(images) if crops == 1 else \
            self.augment.ten(images).flatten(0, 1)              # (B·crops, C, s, s)
        with _evaluating(self.model):
            logits = self._run(self.model, views)
        probs = logits.float().softmax(dim=1)
        return probs.view(len(images), crops, -1).mean(dim=1)   # average of the softmax outputs

    @torch.no_grad()
    def extract(self, images: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """Named activations (float32, CPU) of the centre crops of uint8 (B, S, S, C) images."""
        _check_batch(images)
        net = self._one_device()
        x = self.augment.center(images.to(self.rt.device))
        with _evaluating(net):
            out = self._run(lambda v: net.extract(v, layers), x)
        return {name: t.float().cpu() for name, t in out.items()}

    def _one_device(self):
        """The network whose layers can be named: the two-device split does not offer them."""
        net = self.rt.unwrap(self.model)
        if not hasattr(net, "extract"):
            raise AlexNetError("named activations need the network on one device, not the "
                               "two-device split (--model-parallel)")
        return net

    def check_layer(self, layer: str) -> None:
        """Before a long run over a dataset: the layer must exist (model.extract says it too)."""
        names = self._one_device().layer_names
        if layer not in names:
            raise AlexNetError(f"unknown layer {layer!r}; choose from {', '.join(names)}",
                               option="layer")

    def features(self, images: torch.Tensor, layer: str) -> torch.Tensor:
        """One layer's activations (conv1 … fc8, see model.layer_names) of the centre crops."""
        return self.extract(images, [layer])[layer]

    def top(self, probs: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """[[(class name, probability), …the k most probable…] per image]."""
        top = probs.cpu().topk(min(k, probs.shape[1]), dim=1)
        return [[(self.classes[i], p) for p, i in zip(ps.tolist(), ix.tolist())]
                for ps, ix in zip(top.values, top.indices)]

    # --- inputs ------------------------------------------------------------------------------

    def load_images(self, paths) -> torch.Tensor:
        """uint8 (B, S, S, C) from image files (a list of paths, or one path: B = 1), prepared as
        the training data was (S from the checkpoint's statistics, 256 for the paper); a bad file
        is a one-line DataError."""
        if isinstance(paths, (str, Path)):  # one path, not its characters
            paths = [paths]
        paths = list(paths)
        if not paths:
            raise AlexNetError("load_images: no paths given")
        out = []
        for path in paths:
            rgb = load_image(path, size=self.image_size)  # a bad file: a DataError naming it
            if self.channels == 1:  # a grey model (Fashion-MNIST): Pillow's "L" weights (ITU-R 601)
                grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
                rgb = grey[..., None].round().clip(0, 255).astype(np.uint8)
            out.append(rgb)
        return torch.from_numpy(np.stack(out))

    @property
    def data_seed(self) -> int:
        """The seed the model's run trained with: open the model's own data with it (`shapes`
        renders its images from the seed; another seed is another set of images)."""
        return self.ckpt.get("config", {}).get("seed", 0)

    def own_data(self, data: str | None, val_labels: str | None = None) -> tuple[str, str | None]:
        """(--data, --val-labels) for a command given `data` or none: then the dataset the
        model's run trained on (its checkpoint's config), or `shapes` for weights from
        elsewhere."""
        if data:
            return data, val_labels
        config = self.ckpt.get("config") or {}
        if not config.get("data"):  # an export or torchvision's weights: say what is scored
            print("alexnet: note: the model file records no dataset (exports and converted "
                  "weights do not); using shapes, give --data to choose", file=sys.stderr)
        return config.get("data") or "shapes", val_labels or config.get("val_labels")

    def label_map(self, data) -> tuple[torch.Tensor | None, str | None]:
        """(for each of the data's classes the model's output, or None where they are the same;
        a note to show, or None), so that a dataset is scored by class name, not by position.
        The data may hold fewer classes than the model (a val folder of a few of them), in any
        order. A model whose classes have no names of their own (converted weights: "0", …, or
        torchvision's ImageNet words, in the order of the sorted WordNet IDs) and a dataset whose
        names are not the model's but as many are matched by position, as before; the latter
        says so (it was scored in silence)."""
        model, ours = self.classes, list(data.classes)
        if ours == model:
            return None, None
        if set(ours) <= set(model):  # a dataset's class names are distinct
            index = {c: k for k, c in enumerate(model)}
            return torch.tensor([index[c] for c in ours]), None
        if len(ours) != len(model):
            raise DataError(f"the model has {len(model)} classes but the data has {len(ours)}, "
                            f"not all of them the model's (e.g. {_first_new(ours, model)!r})",
                            option="data")
        if model == class_names({"arch": {"num_classes": len(model)}}):
            return None, None  # names the model had no say in
        return None, (f"alexnet: note: the data's classes are not the model's (e.g. "
                      f"{_first_new(ours, model)!r}): scored by their position")

    def check_data(self, data, classes: bool = True) -> None:
        """A dataset used with this model must have its channels and image size, and for scoring
        (classes=True) its classes; features can be taken of any dataset's images."""
        if classes:
            check_compatible(self.ckpt, len(data.classes))
        if data.channels != self.channels:
            raise DataError(f"the data has {data.channels} channel(s), the model takes "
                            f"{self.channels}", option="data")
        size = getattr(data, "image_size", self.image_size)
        if size != self.image_size:  # its crops are cut from images of the training set's size
            raise DataError(f"the data's images are {size}×{size}; this model was trained on "
                            f"{self.image_size}×{self.image_size} (prepare with --size "
                            f"{self.image_size})", option="data")


def _first_new(ours: list[str], model: list[str]) -> str:
    known = set(model)
    return next(c for c in ours if c not in known)
