"""Pictures: `alexnet show filters|predictions|neighbours|curves|activations …`.

Each command writes one picture (atomically; PNG by default, or JPEG, PDF or SVG as --out's name
says; its size in pixels depends only on what it shows) and prints its path. They reproduce the
paper's figures on your own checkpoint:

    filters CKPT                 conv1's kernels, tower 1 and tower 2 apart (Figure 3)
    predictions CKPT IMAGE…      each image with its top-5 classes (Figure 4, left)
    neighbours CKPT --data D     val images and their nearest training images in fc7 space
                                 (Figure 4, right)
    curves RUN [RUN…]            loss and error per epoch of one or several runs
    activations CKPT IMAGE       feature maps per layer, and the fraction of exact zeros per layer

CKPT is anything `alexnet eval` reads: a checkpoint, a run directory (its best.pt), a safetensors
export or torchvision weights. `plot_curves` is also what `alexnet train` draws curves.png with.
"""
from __future__ import annotations

from ..accel import PRECISIONS
from ..data.folder import probe_image
from ..io import check_not_same
from ..options import path_arg
from ..predict import add_names_option
from . import activations, common, curves, figure4, filters
from .curves import plot_curves

__all__ = ["plot_curves", "add_arguments", "run"]


def _common(p, name: str, checkpoint: bool = True) -> None:
    if checkpoint:
        p.add_argument("checkpoint", type=path_arg,
                       help="checkpoint, run directory (takes best.pt), safetensors "
                       "export or torchvision weights file")
    p.add_argument("--out", type=path_arg, default=f"{name}.png",
                   help=f"picture to write, .png, .jpg, .pdf or .svg (default: {name}.png)")
    if checkpoint and name != "filters":
        p.add_argument("--device", default="auto")
        p.add_argument("--precision", default="auto", choices=PRECISIONS)


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="picture", metavar="PICTURE", required=True)
    p = sub.add_parser("filters", help="conv1 kernels, one grid per tower (paper Figure 3)")
    _common(p, "filters")

    p = sub.add_parser("predictions", help="images with their top-5 classes (Figure 4 left)")
    _common(p, "predictions")
    p.add_argument("images", type=path_arg, nargs="+", help="image files")
    p.add_argument("--topk", type=int, default=5, choices=range(1, 11), metavar="1..10")
    p.add_argument("--crops", type=int, choices=(1, 10), default=1,
                   help="the centre crop or the paper's 10 views, averaged (as `alexnet predict`)")
    add_names_option(p)

    p = sub.add_parser("neighbours", help="val images and their nearest training images by "
                       "Euclidean distance of fc7 features (Figure 4 right)")
    _common(p, "neighbours")
    p.add_argument("--data", type=path_arg, required=True,
                   help="dataset (as for `alexnet train --data`)")
    p.add_argument("--queries", type=int, default=5, help="val images to query (default 5)")
    p.add_argument("--pool", type=int, default=1000,
                   help="training images searched, drawn at random (default 1000)")
    p.add_argument("-k", type=int, default=6, help="neighbours per query (default 6, as the paper)")
    p.add_argument("--layer", default="fc7", help="feature layer (default fc7, the last hidden)")
    add_names_option(p)
    p.add_argument("--seed", type=int, default=0,
                   help="which queries and pool are drawn from the model's own data (default 0)")

    p = sub.add_parser("curves", help="loss and error per epoch, several runs on one plot")
    _common(p, "curves", checkpoint=False)
    p.add_argument("runs", type=path_arg, nargs="+", metavar="RUN",
                   help="run directories (with metrics.jsonl)")

    p = sub.add_parser("activations", help="feature maps per layer and their sparsity")
    _common(p, "activations")
    p.add_argument("image", type=path_arg, help="an image file")
    p.add_argument("--channels", type=int, default=8,
                   help="feature maps shown per conv layer, the most active (default 8)")


def run(args) -> int:
    if getattr(args, "out", None):
        common.image_format(args.out)  # before any work, not after
        inputs = [getattr(args, "checkpoint", None), getattr(args, "image", None),
                  *getattr(args, "images", []), *getattr(args, "runs", [])]
        check_not_same([p for p in inputs if p], args.out)  # a photo is not drawn over
    for path in [getattr(args, "image", None), *getattr(args, "images", [])]:
        if path:
            probe_image(path)  # a typo'd or non-image file is said before the model loads
    commands = {"filters": filters.run, "predictions": figure4.run_predictions,
                "neighbours": figure4.run_neighbours, "curves": curves.run,
                "activations": activations.run}
    return commands[args.picture](args)
