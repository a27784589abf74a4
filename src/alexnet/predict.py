"""`alexnet predict CKPT IMAGE… [--topk 5] [--crops 1|10] [--json]`: the top-k classes of images.

Each image goes through the paper's test-time preparation: shorter side resized to 256, centre
256×256, then the centre crop (or the 10 views) of the network's input size, minus the training
mean image. Class names come from the checkpoint (ImageNet's for a 1000-class ImageNet model).
"""
from __future__ import annotations

import json

import numpy as np
import torch

from .errors import UserError


def class_names(ckpt: dict) -> list[str]:
    classes = ckpt.get("classes")
    if classes:
        return list(classes)
    n = ckpt["arch"]["num_classes"]
    if n == 1000:  # an ImageNet model without names (e.g. converted weights)
        from torchvision.models import AlexNet_Weights
        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    return [str(i) for i in range(n)]


def load_images(paths, channels: int, size: int = 256) -> torch.Tensor:
    """uint8 (B, size, size, channels) from image files; a bad file is a one-line UserError."""
    from .data.folder import load_image
    out = []
    for path in paths:
        try:
            rgb = load_image(path, size=size)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read image {path}: {e}") from None
        if channels == 1:  # a grey model (Fashion-MNIST): Pillow's "L" weights (ITU-R 601)
            rgb = (rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
            rgb = rgb.round().clip(0, 255).astype(np.uint8)
        out.append(rgb)
    return torch.from_numpy(np.stack(out))


@torch.no_grad()
def predict(model, images: torch.Tensor, augment, rt, classes, topk: int = 5, crops: int = 1):
    """[[(class name, probability), …top-k…] per image]."""
    from .evaluate import predict_probs
    model.eval()
    probs = predict_probs(model, images, augment, rt, crops).cpu()
    k = min(topk, probs.shape[1])
    top = probs.topk(k, dim=1)
    return [[(classes[i], p) for p, i in zip(ps.tolist(), ix.tolist())]
            for ps, ix in zip(top.values, top.indices)]


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="checkpoint, run directory (takes best.pt), "
                        "safetensors export or torchvision weights file; omit it with --weights")
    parser.add_argument("images", nargs="*", help="image files")
    parser.add_argument("--weights", default=None, help="weights file (any of the above)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--crops", type=int, choices=(1, 10), default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp16", "fp32"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    from .checkpoint import model_from_checkpoint
    from .data.augment import Augment
    from .hub import load_any
    from .runtime import Runtime

    if args.weights:  # then every positional argument is an image
        args.images, args.checkpoint = [args.checkpoint, *args.images], args.weights
    if args.topk < 1:
        raise UserError("--topk must be >= 1")
    if not args.images:
        raise UserError("no images given")
    ckpt = load_any(args.checkpoint)
    classes = class_names(ckpt)
    images = load_images(args.images, ckpt["arch"]["in_channels"])
    rt = Runtime.create(args.device, args.precision)
    model = rt.place(model_from_checkpoint(ckpt))
    augment = Augment(ckpt["stats"], crop_size=ckpt["crop_size"], device=rt.device)
    results = predict(model, images, augment, rt, classes, args.topk, args.crops)
    if args.json:
        print(json.dumps({"predictions": [
            {"image": str(path), "top": [{"class": c, "probability": p} for c, p in top]}
            for path, top in zip(args.images, results)]}))
        return 0
    for path, top in zip(args.images, results):
        print(path)
        for name, p in top:
            print(f"  {p:7.2%}  {name}")
    return 0
