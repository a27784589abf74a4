"""`alexnet bench model|step|data`: speed measurements, each side by side in one run."""
from __future__ import annotations

import importlib

TARGETS = {
    "model": ("alexnet.benchmarks.model", "training and inference img/s against baselines"),
    "step": ("alexnet.benchmarks.step", "where c's training step goes, against the roofline"),
    "data": ("alexnet.benchmarks.data", "loader img/s against a torchvision baseline"),
}


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name, (module_name, help_) in TARGETS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.error = parser.error  # one-line errors, exit 2
        importlib.import_module(module_name).add_arguments(p)


def run(args) -> int:
    return importlib.import_module(TARGETS[args.target][0]).run(args)
