"""torch.hub entry points, offline:

    model = torch.hub.load("path/to/alexnet", "alexnet", source="local")  # paper, random
    model = torch.hub.load("path/to/alexnet", "alexnet", source="local", weights="run/best.pt")
    model = torch.hub.load("path/to/alexnet", "owt", source="local", weights="alexnet-owt.pth")

`weights` is any file alexnet.Predictor.from_file reads (our checkpoint or run directory, a safetensors export, a
torchvision state_dict); the model then has the file's architecture, is in eval mode, and carries
`model.classes`. Preprocessing (centre crop minus the mean image) is in alexnet.data.augment.
"""
import os
import sys

dependencies = ["torch", "numpy"]

try:
    import alexnet as _alexnet  # installed (pip install -e .)
except ImportError:  # a bare checkout: the package lives in src/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))
    import alexnet as _alexnet


def alexnet(variant=None, num_classes=None, weights=None, **options):
    """AlexNet: variant "paper" (Krizhevsky et al. 2012, 2 towers, LRN; the default) or "owt"
    (torchvision's), num_classes 1000 by default.

    Without weights, a freshly initialised network built with `options` (see alexnet.alexnet).
    With weights (a path), the network stored in that file; variant and num_classes, if given,
    must match it, and options cannot change it.
    """
    if weights is None:
        num_classes = 1000 if num_classes is None else num_classes
        model = _alexnet.alexnet(variant or "paper", num_classes=num_classes, **options)
        model.classes = [str(i) for i in range(num_classes)]
        return model
    if options:
        raise ValueError(f"options {sorted(options)} cannot change a loaded network's architecture")
    predictor = _alexnet.Predictor.from_file(weights, device="cpu", precision="fp32")
    model, classes = predictor.network(), predictor.classes
    held = "owt" if isinstance(model, _alexnet.OWTAlexNet) else "paper"
    if variant not in (None, held) or num_classes not in (None, model.num_classes):
        raise ValueError(f"{weights} holds variant {held!r} with {model.num_classes} classes, "
                         f"not {variant or held!r} with {num_classes or model.num_classes}")
    model.classes = classes
    return model


def owt(num_classes=None, weights=None, **options):
    """torchvision's AlexNet ("one weird trick" single tower); weights as for `alexnet`."""
    return alexnet("owt", num_classes=num_classes, weights=weights, **options)
