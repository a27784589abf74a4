"""alexnet: AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012), faithfully and fast, on PyTorch."""
from .lrn import LocalResponseNorm
from .model import AlexNet, OWTAlexNet, alexnet
from .hub import features, load

__all__ = ["AlexNet", "OWTAlexNet", "LocalResponseNorm", "alexnet", "features", "load"]
__version__ = "0.1.0"
