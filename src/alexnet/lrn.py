"""Local response normalization (LRN) exactly as in the paper (Section 3.3).

    b[i] = a[i] / (k + alpha * sum_{j = i - n//2 .. i + n//2} a[j]^2) ** beta,   n = 5, k = 2,
                                                                             alpha = 1e-4, beta = 0.75

alpha multiplies the *plain sum* over the window. torch.nn.LocalResponseNorm (and Caffe) multiply
alpha by the window *mean* (alpha / n), so the paper's layer in torch needs alpha = 5e-4 there; most
re-implementations miss this and normalise five times too weakly.

`groups` keeps the window inside each tower: in the paper each GPU normalises its own 48 (then 128)
kernel maps, so channel 47 never sees channel 48. groups=2 reproduces that on one device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lrn_reference(x: torch.Tensor, size: int = 5, alpha: float = 1e-4, beta: float = 0.75,
                  k: float = 2.0, groups: int = 1) -> torch.Tensor:
    """The formula in plain tensor ops (any dtype, any device; autograd gives the gradient)."""
    n, c, h, w = x.shape
    sq = x.pow(2).reshape(n, groups, c // groups, h * w)
    # Zero-pad the channel axis so the window is clipped at the edges (of each tower).
    sq = F.pad(sq, (0, 0, size // 2, (size - 1) // 2))
    window = sq.unfold(2, size, 1).sum(-1)              # (n, groups, c/groups, h*w)
    div = (k + alpha * window).pow(beta).reshape(n, c, h, w)
    return x / div


class LocalResponseNorm(nn.Module):
    """The paper's LRN across channels (alpha times the sum, not the mean); see the module doc."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0,
                 groups: int = 1):
        super().__init__()
        if size < 1:
            raise ValueError(f"LRN size must be >= 1, got {size}")
        if groups < 1:
            raise ValueError(f"LRN groups must be >= 1, got {groups}")
        self.size, self.alpha, self.beta, self.k, self.groups = size, alpha, beta, k, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] % self.groups:
            raise ValueError(f"LRN expects (N, C, H, W) with C divisible by groups={self.groups}, "
                             f"got {tuple(x.shape)}")
        return lrn_reference(x, self.size, self.alpha, self.beta, self.k, self.groups)

    def extra_repr(self) -> str:
        return (f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}, "
                f"groups={self.groups}")
