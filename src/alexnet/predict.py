"""`alexnet predict CKPT IMAGE… [--topk 5] [--crops 1|10] [--json]`: the top-k classes of images.

Each image goes through the paper's test-time preparation: shorter side resized to 256 (the size
the checkpoint's training data had), centre 256×256, then the centre crop (or the 10 views) of the
network's input size, minus the training mean image. Class names come from the checkpoint
(ImageNet's for a 1000-class model without names); a model trained on ImageNet's folders names
its classes by WordNet ID, and `--names LOC_synset_mapping.txt` adds the words. All of it is
alexnet.predictor's. The images go through in batches of BATCH, so memory stays bounded however
many are given (`predict CKPT photos/*.jpg`), and the text output appears as each batch is done.
"""
from __future__ import annotations

import json
import unicodedata

from .accel import PRECISIONS
from .data.folder import probe_image
from .errors import AlexNetError
from .options import path_arg
from .predictor import Predictor, read_names

BATCH = 32  # images per forward pass: with --crops 10, 320 views (about 0.6 MB each as input)


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", type=path_arg, nargs="?",
                        help="checkpoint, run directory (takes best.pt), "
                        "safetensors export or torchvision weights file; omit it with --weights")
    parser.add_argument("images", type=path_arg, nargs="*", help="image files")
    parser.add_argument("--weights", type=path_arg, default=None,
                        help="weights file (any of the above)")
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--crops", type=int, choices=(1, 10), default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    add_names_option(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def one_line(name) -> str:
    """A class or file name as one row of the table: a tab, newline or other control character
    in it (folder names may hold them) as its escape, e.g. \\n, instead of breaking the row."""
    name = str(name)
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) == "Cc" else ch for ch in name)


def add_names_option(parser) -> None:
    """--names, for every command that shows class names (predict, show predictions/neighbours)."""
    parser.add_argument("--names", type=path_arg, default=None, metavar="FILE",
                        help="readable class names: "
                        "lines '<class> <name>', as ImageNet's LOC_synset_mapping.txt")


def run(args) -> int:
    if args.weights:  # then every positional argument is an image
        args.images = [p for p in (args.checkpoint, *args.images) if p is not None]
        args.checkpoint = args.weights
    if args.checkpoint is None:
        raise AlexNetError("give a checkpoint and images (or --weights and images)")
    if args.topk < 1:
        raise AlexNetError("topk must be >= 1", option="topk")
    if not args.images:
        raise AlexNetError("no images given")
    for path in args.images:  # a typo'd or non-image file is said before the model loads
        probe_image(path)
    predictor = Predictor.from_file(args.checkpoint, args.device, args.precision)
    names = read_names(args.names, predictor.classes) if args.names else {}
    predictions = []
    for i in range(0, len(args.images), BATCH):
        paths = args.images[i:i + BATCH]
        probs = predictor.probs(predictor.load_images(paths), args.crops)
        for path, top in zip(paths, predictor.top(probs, args.topk)):
            if args.json:
                predictions.append({"image": str(path), "top": [
                    {"class": c, "probability": p, **({"name": names[c]} if c in names else {})}
                    for c, p in top]})
                continue
            print(one_line(path))
            for c, p in top:
                print(f"  {p:7.2%}  {one_line(c)}" + (f"  {names[c]}" if c in names else ""),
                      flush=True)
    if args.json:
        print(json.dumps({"predictions": predictions}))
    return 0
