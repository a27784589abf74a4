"""alexnet: AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012), faithfully and fast, on PyTorch.

    model = alexnet.alexnet()                            # the paper's network, freshly initialised
    p = alexnet.Predictor.from_file("runs/demo/best.pt")  # a trained one, ready to use
"""
from .lrn import LocalResponseNorm
from .model import AlexNet, ModelOptions, OWTAlexNet, alexnet
from .predictor import Predictor

__all__ = ["AlexNet", "OWTAlexNet", "ModelOptions", "LocalResponseNorm", "Predictor", "alexnet"]
__version__ = "0.1.0"
