"""AlexNet, as published.

Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
NIPS 2012. Two variants:

- "paper": the network of the paper (Figure 2): five convolutional layers, three fully connected,
  ReLU, local response normalisation after conv1 and conv2, overlapping max pooling (3/2), dropout
  0.5 in fc6 and fc7 (the paper's form: ×0.5 at test time, see PaperDropout), and the two-GPU
  "towers" (conv2, conv4 and conv5 see only the kernel maps on their own GPU; conv3 and the fully
  connected layers see both). On one device the towers are grouped convolutions (groups=2);
  `alexnet.parallel` places them on two devices. 60,965,224 parameters.
  With towers=1 and width=0.5 it is the one-GPU net the paper compared the towers with (§3.2):
  half the kernels in conv1-conv4, conv5 and the fully connected layers at full size.
- "owt": torchvision's `alexnet`, which is the single-tower network of "One weird trick for
  parallelizing convolutional neural networks" (Krizhevsky, 2014): 64-192-384-256-256 kernels, no
  LRN, no groups, 61,100,840 parameters. It keeps torchvision's module layout, so a torchvision
  state_dict loads as is.

Input: the paper says 224×224, but conv1 (11×11, stride 4, no padding) gives 55×55 only from 227×227,
so the paper geometry here is 227 crops of 256×256 images (see SPEC.md §2). owt takes 224.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from .errors import AlexNetError
from .lrn import LocalResponseNorm
from .options import check, check_value, option
from .pool import MaxPool2d, hooked
from .stem import StemConv2d

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
# name -> (pooling class, kernel, stride). The paper's is overlapping max pooling, z=3, s=2 (§3.4);
# its control is non-overlapping z=2, s=2, which gives the same output sizes here. MaxPool2d is
# torch's, run by a faster kernel on the CPU (pool.py).
POOLINGS = {
    "overlapping": (MaxPool2d, 3, 2),
    "non-overlapping": (MaxPool2d, 2, 2),
    "average": (nn.AvgPool2d, 3, 2),
}
VARIANTS = ("paper", "owt")
# The conv and fc layers whose outputs extract() returns after their non-linearity.
RELU_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
INITS = ("paper", "kaiming")
DROPOUT_SCALINGS = ("paper", "inverted")
# What a checkpoint or run saved before an option existed was trained with: checkpoint and resume
# fill these in where the saved options lack them (before dropout_scaling, torch's dropout).
LEGACY_OPTIONS = {"dropout_scaling": "inverted"}


@dataclass
class ModelOptions:
    """The one list of the network's options. Each is one of the paper's ideas, so that `alexnet
    ablate` can switch it off (its `arms`); TrainConfig inherits them as command-line flags and the
    resume check refuses to change them. Adding an option: a field here and its use in AlexNet."""

    activation: str = option("relu", "relu (paper §3.1) | tanh | sigmoid",
                             choices=tuple(ACTIVATIONS), variants=VARIANTS, arms={
                                 "tanh": ("tanh", "tanh for ReLU",
                                          "ReLU reaches 25% train error 6× sooner (Fig. 1, §3.1)"),
                                 "sigmoid": ("sigmoid", "sigmoid for ReLU",
                                             "saturating units train slower")})
    lrn: bool = option(True, "local response normalisation (paper §3.3)", arms={
        "no-lrn": (False, "no LRN", "LRN: top-1 −1.4%, top-5 −1.2% (§3.3)")})
    pooling: str = option("overlapping", "overlapping (3/2, paper §3.4) | non-overlapping (2/2) "
                          "| average", choices=tuple(POOLINGS), arms={
                              "non-overlapping": ("non-overlapping", "max pooling 2/2 for 3/2",
                                                  "overlapping: top-1 −0.4%, top-5 −0.3% (§3.4)"),
                              "average-pool": ("average", "average pooling 3/2 for max",
                                               "not compared")})
    dropout: float = option(0.5, "dropout in fc6 and fc7 (paper §4.2: 0.5)", low=0.0, high=1.0,
                            high_open=True, variants=VARIANTS, arms={
                                "no-dropout": (0.0, "no dropout in fc6/fc7",
                                               "without it, substantial overfitting (§4.2)")})
    dropout_scaling: str = option(
        "paper", "paper (§4.2: kept units pass as they are, and at test time all pass times "
        "1 − p) | inverted (torch's nn.Dropout: kept units times 1/(1 − p), all unscaled at test)",
        choices=DROPOUT_SCALINGS)
    towers: int = option(2, "2 (the paper's two GPUs, as groups; §3.2) or 1", choices=(1, 2),
                         arms={"one-tower": (1, "one tower, full width (no groups)",
                                             "not run in the paper (its one-GPU net had half "
                                             "the kernels: one-tower-half)")})
    width: float = option(1.0, "kernel counts of conv1-conv4 times this (paper: 1); conv5 and "
                          "fc6/fc7 keep theirs, as the paper's one-GPU net did (§3.2, note 2)",
                          low=0.0, low_open=True, high=16.0, arms={
                              "one-tower-half": (0.5, "one tower, half the kernels in conv1-4",
                                                 "two towers: top-1 −1.7%, top-5 −1.2% vs this "
                                                 "net (§3.2)")})
    init_std: float = option(0.01, "weight init N(0, std²) (paper §5: 0.01)", low=0.0,
                             low_open=True)
    bias_init: float = option(1.0, "the biases the paper sets to 1 (conv2/4/5, fc6/7); Caffe "
                              "uses 0.1")
    init: str = option("paper", "paper (N(0, init_std²), biases as above) | kaiming (He normal, "
                       "biases 0; not in paper)", choices=INITS)

    @classmethod
    def for_variant(cls, variant: str) -> list[str]:
        """The options that apply to a variant (owt, torchvision's net, takes fewer)."""
        return [f.name for f in fields(cls) if variant in f.metadata["variants"]]


class PaperDropout(nn.Dropout):
    """Dropout as the paper does it (§4.2): in training each unit is zeroed with probability p and
    the others pass *unchanged*; at test time every unit passes, "multiplied by 0.5" (1 − p).

    torch's nn.Dropout is the "inverted" form: kept units times 1/(1 − p) in training, nothing at
    test. The test-time function is the same, but training is not: fc7 and fc8 would train on
    inputs twice as large, which is the paper's net with their weights started at std 0.02 and
    stepped 4× as far. `dropout_scaling="inverted"` keeps torch's form (and older checkpoints)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0:
            return x
        if self.training:  # a 0/1 mask, no rescaling. Drawn as uniform < 1 - p in float32 (the
            # same law as bernoulli_(1 - p), whose CPU kernel took 4x as long at fc6's size)
            return x * (torch.rand(x.shape, device=x.device) < 1 - self.p)
        return x * (1 - self.p)


class Scale(nn.Module):
    """Multiplies its input by a constant: the `input_scale` option (not in the paper, which feeds
    mean-subtracted pixels in 0..255 straight to conv1). Part of the model, so that evaluation,
    prediction, features and exports apply the same scale as training did."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:.6g}"


class _TappedNet(nn.Module):
    """A features -> flatten -> classifier net whose named intermediate outputs can be returned.

    Subclasses set `self.taps`: {module path: public layer name}, e.g. {"features.relu1": "conv1"}.
    """

    taps: dict[str, str]
    input_size: int

    @property
    def layer_names(self) -> list[str]:
        return list(self.taps.values())

    def _stages(self):
        for name, module in self.features.named_children():
            yield f"features.{name}", module
        if hasattr(self, "avgpool"):
            yield "avgpool", self.avgpool
        yield "flatten", self.flatten
        for name, module in self.classifier.named_children():
            yield f"classifier.{name}", module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, module in self._stages():
            x = module(x)
        return x

    def extract(self, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        """Run the net up to the deepest requested layer; return {layer name: activation}.

        Conv and fc layer names (conv1 … fc7) give the output after the non-linearity (as Caffe's
        in-place ReLU does); fc8 gives the logits.
        """
        layers = [layers] if isinstance(layers, str) else list(layers)
        if not layers:
            raise AlexNetError("extract() needs at least one layer name", option="layer")
        unknown = [name for name in layers if name not in self.layer_names]
        if unknown:
            raise AlexNetError(f"unknown layer {unknown[0]!r}; choose from "
                               f"{', '.join(self.layer_names)}", option="layer")
        wanted, out = set(layers), {}
        for path, module in self._stages():
            x = module(x)
            name = self.taps.get(path)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return {name: out[name] for name in layers}


class AlexNet(_TappedNet):
    """The paper's network. Every option is one of the paper's ideas, so ablations can turn it off."""

    input_size = 227

    def __init__(self, num_classes: int = 1000, activation: str = "relu", lrn: bool = True,
                 pooling: str = "overlapping", dropout: float = 0.5,
                 dropout_scaling: str = "paper", towers: int = 2, width: float = 1.0,
                 in_channels: int = 3, init_std: float = 0.01, bias_init: float = 1.0,
                 init: str = "paper", input_scale: float = 1.0):
        super().__init__()
        check(ModelOptions(activation=activation, lrn=lrn, pooling=pooling, dropout=dropout,
                           dropout_scaling=dropout_scaling, towers=towers, width=width,
                           init_std=init_std, bias_init=bias_init, init=init))
        drop = PaperDropout if dropout_scaling == "paper" else nn.Dropout
        _check_shape(num_classes, in_channels, input_scale)
        act = ACTIVATIONS[activation]
        pool_cls, pool_k, pool_s = POOLINGS[pooling]
        g = towers  # conv2, conv4, conv5 connect only within a tower (GPU) in the paper
        c1, c2, c3, c4 = (scaled(c, width, g) for c in (96, 256, 384, 384))

        def norm():
            # LRN inside each tower, as each GPU normalised only its own kernel maps.
            return LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0, groups=g) if lrn \
                else nn.Identity()

        # Only a scaled net has the extra stage: the paper's keeps its exact module list.
        scale = [("scale", Scale(input_scale))] if input_scale != 1.0 else []
        # conv1: an nn.Conv2d whose weight gradient may run by space-to-depth (stem.py, speed)
        self.features = nn.Sequential(OrderedDict(scale + [
            ("conv1", StemConv2d(in_channels, c1, 11, stride=4)),  # 227×227×3 -> 55×55×96
            ("relu1", act()),
            ("norm1", norm()),
            ("pool1", pool_cls(pool_k, pool_s)),                # -> 27×27×96
            ("conv2", nn.Conv2d(c1, c2, 5, padding=2, groups=g)),  # -> 27×27×256
            ("relu2", act()),
            ("norm2", norm()),
            ("pool2", pool_cls(pool_k, pool_s)),                # -> 13×13×256
            ("conv3", nn.Conv2d(c2, c3, 3, padding=1)),         # -> 13×13×384, both towers' input
            ("relu3", act()),
            ("conv4", nn.Conv2d(c3, c4, 3, padding=1, groups=g)),  # -> 13×13×384
            ("relu4", act()),
            ("conv5", nn.Conv2d(c4, 256, 3, padding=1, groups=g)),  # -> 13×13×256 at any width
            ("relu5", act()),
            ("pool5", pool_cls(pool_k, pool_s)),                # -> 6×6×256
        ]))
        self.flatten = nn.Flatten()                             # -> 9216
        self.classifier = nn.Sequential(OrderedDict([
            ("fc6", nn.Linear(256 * 6 * 6, 4096)),
            ("relu6", act()),
            ("drop6", drop(dropout)),
            ("fc7", nn.Linear(4096, 4096)),
            ("relu7", act()),
            ("drop7", drop(dropout)),
            ("fc8", nn.Linear(4096, num_classes)),              # logits; softmax gives probabilities
        ]))
        self.towers, self.num_classes, self.in_channels = towers, num_classes, in_channels
        self.taps = {
            "features.relu1": "conv1", "features.norm1": "norm1", "features.pool1": "pool1",
            "features.relu2": "conv2", "features.norm2": "norm2", "features.pool2": "pool2",
            "features.relu3": "conv3", "features.relu4": "conv4", "features.relu5": "conv5",
            "features.pool5": "pool5", "classifier.relu6": "fc6", "classifier.relu7": "fc7",
            "classifier.fc8": "fc8",
        }
        self.reset_parameters(init_std, bias_init, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Where a ReLU feeds an LRN (conv1, conv2) the two run as one op, LRN(ReLU(x)) with ReLU's
        # backward inside it, and with the max pooling after them where it follows: on the CPU
        # the LRN's output and its gradient never go to memory, and ReLU's pass over the largest
        # activations is saved. The same numbers bit for bit (tests/test_model.py). Not in the
        # paper; only about speed. Where any hook watches one of these modules (e.g. summary's
        # trace), they run apart, as every layer does in extract().
        stages = [module for _, module in self._stages()] + [None, None]
        i = 0
        while stages[i] is not None:
            module, after, pooling = stages[i:i + 3]
            if type(module) is nn.ReLU and isinstance(after, LocalResponseNorm) \
                    and not hooked(module) and not hooked(after):
                if isinstance(pooling, MaxPool2d):  # lrn_pool runs it apart if a hook watches
                    x, i = after(x, relu=True, pooling=pooling), i + 3
                else:
                    x, i = after(x, relu=True), i + 2
            else:
                x, i = module(x), i + 1
        return x

    @torch.no_grad()
    def reset_parameters(self, init_std: float = 0.01, bias_init: float = 1.0,
                         init: str = "paper") -> None:
        """Initialisation per paper (§5): weights ~ N(0, 0.01²); biases 1 in conv2, conv4, conv5 and
        the hidden fully connected layers (to give ReLUs positive inputs early on), 0 elsewhere.

        The source document says "variance 1" for the weights; with no normalisation between layers
        that makes activations grow by orders of magnitude per layer (the logits overflow), so we
        follow the paper's 0.01 and keep `init_std` as an option.

        `bias_init` replaces the paper's 1. With 1, conv4 to fc7 start almost constant (≈ 1 plus a
        small image-dependent part), and fc8's SGD step moves the logits by lr·‖fc7‖² ≈ 150× the
        gradient at lr 0.01: on a few classes the net sits at chance for hundreds of steps. Caffe's
        reference model (bvlc_alexnet) uses 0.1 for these biases.

        init="kaiming" (not in the paper; He et al. 2015) draws each weight from N(0, 2/fan_in)
        (fc8: 1/fan_in) and sets every bias to 0, so that activations keep their scale from layer
        to layer; it assumes inputs of unit variance (see `input_scale`). The short demo recipe
        uses it: with the paper's init the net sat at chance for its whole ten-minute budget.
        """
        ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        for name, module in [*self.features.named_children(), *self.classifier.named_children()]:
            if not isinstance(module, (nn.Conv2d, nn.Linear)):
                continue
            if init == "kaiming":
                nn.init.kaiming_normal_(module.weight, nonlinearity="linear" if name == "fc8"
                                        else "relu")
                nn.init.zeros_(module.bias)
            else:
                nn.init.normal_(module.weight, mean=0.0, std=init_std)
                nn.init.constant_(module.bias, bias_init if name in ones else 0.0)


class OWTAlexNet(_TappedNet):
    """torchvision's AlexNet ("one weird trick"), same module layout so its state_dict loads as is.

    Differences from the paper: 64/192 kernels in conv1/conv2 (paper 96/256), padding 2 in conv1 and
    224 input, no LRN, no towers, adaptive average pooling to 6×6, dropout before fc6/fc7.
    """

    input_size = 224

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, in_channels: int = 3,
                 activation: str = "relu"):
        super().__init__()
        check(ModelOptions(activation=activation, dropout=dropout))
        _check_shape(num_classes, in_channels)
        act = ACTIVATIONS[activation]
        self.features = nn.Sequential(
            StemConv2d(in_channels, 64, 11, stride=4, padding=2), act(),  # 224 -> 55×55×64
            MaxPool2d(3, 2),                                              # -> 27×27×64
            nn.Conv2d(64, 192, 5, padding=2), act(),                      # -> 27×27×192
            MaxPool2d(3, 2),                                              # -> 13×13×192
            nn.Conv2d(192, 384, 3, padding=1), act(),                     # -> 13×13×384
            nn.Conv2d(384, 256, 3, padding=1), act(),                     # -> 13×13×256
            nn.Conv2d(256, 256, 3, padding=1), act(),                     # -> 13×13×256
            MaxPool2d(3, 2),                                              # -> 6×6×256
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), act(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), act(),
            nn.Linear(4096, num_classes),
        )
        self.towers, self.num_classes, self.in_channels = 1, num_classes, in_channels
        self.taps = {
            "features.1": "conv1", "features.2": "pool1", "features.4": "conv2",
            "features.5": "pool2", "features.7": "conv3", "features.9": "conv4",
            "features.11": "conv5", "avgpool": "pool5", "classifier.2": "fc6",
            "classifier.5": "fc7", "classifier.6": "fc8",
        }


def scaled(channels: int, width: float, towers: int) -> int:
    """The kernel count of a layer of the paper's net at `width`: channels × width rounded half up
    to a whole number of kernels per tower (the towers are groups, which must split the channels
    evenly), at least one per tower. Exact at width 1; at 0.5 it halves every count of conv1-4.

    Only conv1-conv4 scale: the paper's one-GPU comparison net (§3.2, note 2) halved "each
    convolutional layer" but kept conv5 and the fully connected layers at full size, since fc6
    holds most of the weights and the two nets were to have about as many parameters."""
    return max(towers, towers * math.floor(channels * width / towers + 0.5))


MAX_SIZE = 2**31 - 1  # the most classes, or the widest input side, that we build or trace


def _check_shape(num_classes, in_channels, input_scale: float = 1.0) -> None:
    """What the data sets rather than the user: the class and channel counts, the input scale."""
    # The cap is no dataset's limit: far above it, fc8's byte count overflows int64 and torch
    # fails with a traceback (a TypeError past int64, a RuntimeError below).
    check_value("num_classes", num_classes, int, {"low": 1, "high": MAX_SIZE})
    check_value("in_channels", in_channels, int, {"low": 1})
    check_value("input_scale", input_scale, float, {"low": 0.0, "low_open": True})


def alexnet(variant: str = "paper", num_classes: int = 1000, *, in_channels: int = 3,
            **options) -> nn.Module:
    """Build AlexNet. variant "paper" (the paper's network) or "owt" (torchvision's).

    Options: the fields of ModelOptions that apply to the variant (owt takes activation and
    dropout), plus `input_scale` for the paper's net (set from the data by --input-norm)."""
    if variant not in VARIANTS:
        raise AlexNetError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}",
                           option="variant")
    allowed = set(ModelOptions.for_variant(variant)) | ({"input_scale"} if variant == "paper"
                                                          else set())
    bad = sorted(set(options) - allowed)
    if bad:
        raise AlexNetError(f"option(s) {', '.join(bad)} do not apply to variant {variant!r}; it "
                           f"takes {', '.join(sorted(allowed))}", option=bad[0])
    cls = AlexNet if variant == "paper" else OWTAlexNet
    options = {k: _plain(v) for k, v in options.items()}
    return cls(num_classes=_plain(num_classes), in_channels=_plain(in_channels), **options)


def _plain(value):
    """A numpy scalar (np.int64(10) from a config array, np.float32(0.5)) as the Python number it
    holds, so that the checks take it and a checkpoint's arch stays plain JSON; anything else as is
    (a wrong type is then refused by the checks)."""
    return value.item() if isinstance(value, np.generic) else value

