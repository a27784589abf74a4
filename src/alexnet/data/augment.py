"""The paper's augmentation and evaluation views, batched, on whatever device the batch is on.

Input: uint8 (B, S, S, C) NHWC images at S = 256 (what datasets and the Loader yield).
Output: float32 (B, C, crop, crop) in channels_last memory (the model runs channels_last), the
per-pixel mean image subtracted (§2: "subtracting the mean activity over the training set from each
pixel"). Pixel scale stays 0..255, as in the paper: there is no division by a standard deviation.

Train (§4.1): a random crop per image, a horizontal flip with p = 0.5, and PCA lighting.
Eval (§4.1): the centre crop, or the ten views (four corners and the centre, and their mirrors),
whose softmax outputs the caller averages.

The mean image is cropped at the same position as the image and flipped with it: that is the same
as subtracting it from the whole 256×256 image first, as the paper does, but costs a crop, not an
image.

PCA lighting (§4.1). The paper adds Σᵢ αᵢ λᵢ pᵢ to every pixel, pᵢ, λᵢ the eigenvectors and
eigenvalues of the 3×3 covariance of RGB pixel values, αᵢ ~ N(0, 0.1) per image per use. We take
that literally with the pixel values in [0, 1], as fb.resnet.torch and the ports after it do: the
added colour then has covariance 0.01 · Σᵢ λᵢ² pᵢ pᵢᵀ on the [0, 1] scale, i.e. a shift of
255 · Σᵢ αᵢ (λᵢ / 255²) pᵢ = Σᵢ αᵢ (λᵢ / 255) pᵢ grey levels on our 0..255 pixels. Why the scale
must be named: λ₁ is about 10⁴ on 0..255 pixels (13,400 on `shapes`), where the literal formula
would shift colours by some ±1,300 grey levels; on [0, 1] pixels it gives a few grey levels.
Krizhevsky's own code (cuda-convnet2, convdata.py: `pca_stdevs`) instead multiplies αᵢ by √λᵢ,
a shift with covariance 0.01 · the data's own colour covariance, about 2.5× larger on ImageNet-
like data; `alexnet.data.augment.pca_shift_scale` is the one place to change to get that.
`stats["eigval"]` stays the eigenvalues λᵢ (variances, 0..255 scale).
"""
from __future__ import annotations

import torch

from ..errors import AlexNetError
from .imageset import new_batch


def pca_shift_scale(eigval: torch.Tensor) -> torch.Tensor:
    """What multiplies αᵢ along pᵢ, in grey levels, for eigenvalues λᵢ of 0..255 pixels: the
    paper's λᵢ read on [0, 1] pixels (λᵢ / 255²), times 255 back to our scale."""
    return eigval / 255.0


# Corners and centre as torchvision's FiveCrop orders them, then each of those five crops mirrored,
# as the paper says (the five patches "and their horizontal reflections"). torchvision's TenCrop
# crops the mirrored image instead: its sixth view is the mirrored top-right crop, and with an odd
# margin (256 - 227 = 29) its mirrored centre sits one column off ours. The other nine views are
# the same in another order (checked against torchvision.transforms.functional.ten_crop).
VIEWS = ("top_left", "top_right", "bottom_left", "bottom_right", "centre")


class Augment:
    def __init__(self, stats: dict, crop_size: int = 227, *, flip: bool = True,
                 lighting_std: float = 0.1, device=None):
        mean_image = torch.as_tensor(stats["mean_image"], dtype=torch.float32)
        if mean_image.ndim != 3 or mean_image.shape[0] != mean_image.shape[1]:
            raise ValueError(f"mean_image must be (S, S, C), got {tuple(mean_image.shape)}")
        self.size, self.channels = mean_image.shape[0], mean_image.shape[2]
        if crop_size < 1:
            raise ValueError(f"crop_size must be >= 1, got {crop_size}")
        if crop_size > self.size:
            # The data is what does not fit (e.g. prepared at a smaller size), not the model.
            raise AlexNetError(f"crop_size {crop_size} must be <= the image size {self.size} of "
                               f"the data: prepare the data at a size of at least {crop_size}",
                               option="data")
        self.crop_size = crop_size
        self.flip, self.lighting_std = flip, lighting_std
        # λᵢ of 0..255 pixels; pca_shift_scale turns them into the shift per unit αᵢ (module doc).
        eigval = torch.as_tensor(stats["eigval"], dtype=torch.float32).clamp(min=0)
        # The mirrored mean image is kept too: a mirrored crop of it is then a view, not a copy.
        self._cpu = {"mean_image": mean_image, "mean_mirrored": mean_image.flip(1),
                     "eigvec": torch.as_tensor(stats["eigvec"], dtype=torch.float32),
                     "pc_scale": pca_shift_scale(eigval)}
        self._by_device: dict[torch.device, dict] = {}
        if device is not None:
            self._on(torch.device(device))

    def _on(self, device: torch.device) -> dict:
        if device not in self._by_device:
            self._by_device[device] = {k: v.to(device) for k, v in self._cpu.items()}
        return self._by_device[device]

    # ---- the random parameters, drawn on the CPU whatever the images' device -----------------
    # Why the CPU: on an accelerator they go over in one pinned copy (_crops_batched), and a seed
    # gives the same crops, flips and colours on every device.

    def sample(self, batch: int, generator: torch.Generator | None = None) -> dict:
        """Per-image random choices: crop offsets (y, x), flips, lighting αs (B, C), on the CPU;
        `generator` must be a CPU one (torch.Generator())."""
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"the augmentation draws on the CPU: pass torch.Generator(), not a "
                             f"{generator.device} generator")
        span = self.size - self.crop_size + 1
        offsets = torch.randint(0, span, (batch, 2), generator=generator)
        flips = torch.rand(batch, generator=generator) < 0.5
        alphas = torch.randn(batch, self.channels, generator=generator)
        return {"offsets": offsets, "flips": flips & self.flip,
                "alphas": alphas * self.lighting_std}

    def lighting(self, alphas: torch.Tensor) -> torch.Tensor:
        """(B, C) colour shifts Σᵢ αᵢ (λᵢ/255) pᵢ, in grey levels, for (B, C) αs (already scaled
        by lighting_std): the paper's Σᵢ αᵢ λᵢ pᵢ on [0, 1] pixels, times 255 (module doc)."""
        t = self._on(alphas.device)
        return (alphas * t["pc_scale"]) @ t["eigvec"].T

    # ---- the views ---------------------------------------------------------------------------

    def train(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Random crop, flip with p = 0.5, PCA lighting, mean subtraction: (B, C, crop, crop)."""
        self._check(x)
        p = self.sample(len(x), generator)
        shift = self.lighting(p["alphas"]) if self.lighting_std > 0 else None
        return self.crops(x, p["offsets"], p["flips"], shift)

    def center(self, x: torch.Tensor) -> torch.Tensor:
        """The centre crop, mean subtracted: (B, C, crop, crop)."""
        self._check(x)
        o = (self.size - self.crop_size) // 2
        offsets = torch.full((len(x), 2), o, dtype=torch.long)
        return self.crops(x, offsets, torch.zeros(len(x), dtype=torch.bool))

    def ten(self, x: torch.Tensor) -> torch.Tensor:
        """The paper's ten test views, (B, 10, C, crop, crop): VIEWS, then VIEWS mirrored.

        `.flatten(0, 1)` gives (10·B, C, crop, crop) in channels_last memory, as a view."""
        self._check(x)
        b, e, c = len(x), self.size - self.crop_size, (self.size - self.crop_size) // 2
        corners = torch.tensor([[0, 0], [0, e], [e, 0], [e, e], [c, c]] * 2)  # (y, x)
        flips = torch.tensor([False] * 5 + [True] * 5)
        # image-major: the 10 views of image 0, then of image 1, ...
        idx = torch.arange(b).repeat_interleave(10)
        out = self.crops(x, corners.repeat(b, 1), flips.repeat(b), None, index=idx)
        return out.unflatten(0, (b, 10))

    # ---- the work ----------------------------------------------------------------------------

    def crops(self, x, offsets, flips, shift=None, index=None) -> torch.Tensor:
        """(N, C, crop, crop) float32: crop n is x[index[n]] at offsets[n] (y, x), mirrored where
        flips[n], minus the mean image cropped and mirrored the same way, plus shift[n] (C,)."""
        device = x[0].device if isinstance(x, (list, tuple)) else x.device
        t = self._on(device)
        if index is None:
            index = torch.arange(len(x))
        if device.type == "cpu":
            return _crops_loop(x, t["mean_image"], t["mean_mirrored"], offsets, flips, index,
                               self.crop_size, shift)
        out = _crops_batched(x, t["mean_image"], offsets, flips, index, self.crop_size, shift)
        return out.permute(0, 3, 1, 2)  # NHWC storage seen as NCHW: channels_last, no copy

    def _check(self, x) -> None:
        """x: uint8 (B, S, S, C); on the CPU also a list of (S, S, C) uint8 tensors (views)."""
        if isinstance(x, (list, tuple)):
            ok = all(t.dtype == torch.uint8 and t.device.type == "cpu" and tuple(t.shape) == (
                self.size, self.size, self.channels) for t in x)
            shape = f"a list of {len(x)}"
        else:
            ok = x.dtype == torch.uint8 and tuple(x.shape[1:]) == (
                self.size, self.size, self.channels) and x.ndim == 4
            shape = f"{x.dtype} {tuple(x.shape)}"
        if not ok:
            raise ValueError(f"expected uint8 (B, {self.size}, {self.size}, {self.channels}) "
                             f"images, got {shape}")


def _crops_loop(x, mean, mean_mirrored, offsets, flips, index, crop, shift=None):
    """CPU: per crop, one conversion copy, one subtraction and one addition, on views, while the
    crop is in cache. A batched gather of the same crops measured ~4× slower on this CPU."""
    n, size, ch = len(index), mean.shape[0], mean.shape[-1]  # from the mean: x may be empty
    out = new_batch((n, crop, crop, ch), torch.float32)
    if shift is not None:
        # One image row of shifts (crop × C, tiled), added to every row: a broadcast over a
        # period-C innermost axis does not vectorise and cost 4× more.
        rows = shift.to(torch.float32).repeat(1, crop).view(n, 1, crop * ch)
    for k, ((oy, ox), flip, i) in enumerate(zip(offsets.tolist(), flips.tolist(), index.tolist())):
        img = x[i][oy:oy + crop, ox:ox + crop]
        if flip:  # x mirrored at column ox is mean_mirrored at column size - ox - crop
            img, m = img.flip(1), mean_mirrored[oy:oy + crop, size - ox - crop:size - ox]
        else:
            m = mean[oy:oy + crop, ox:ox + crop]
        o = out[k]
        o.copy_(img)
        o.sub_(m)
        if shift is not None:
            o.view(crop, -1).add_(rows[k])
    return out.permute(0, 3, 1, 2)


def _crops_batched(x, mean, offsets, flips, index, crop, shift=None):
    """Accelerators: _crops_gather on x's device, plus the lighting shift; NHWC. The crops'
    parameters, drawn on the CPU, go over in one copy (from pinned memory on CUDA, so that it
    queues like a kernel instead of waiting for the GPU to drain)."""
    params = _to(torch.cat([offsets, flips[:, None], index[:, None]], 1).long(), x.device)
    out = _crops_gather(x, mean, params[:, :2], params[:, 2].bool(), params[:, 3], crop)
    if shift is not None:
        out += _to(shift.float(), x.device).view(-1, 1, 1, x.shape[-1])
    return out


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on `device`, asynchronously from pinned memory where that is CUDA (the
    caching host allocator keeps the pinned block until the copy has run)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _crops_gather(x, mean, offsets, flips, index, crop):
    """Accelerators: all crops in one gather (a loop of small copies would be launch-bound).
    Returns NHWC (N, crop, crop, C)."""
    ar = torch.arange(crop, device=x.device)
    rows = offsets[:, :1] + ar  # (N, crop)
    cols = torch.where(flips[:, None], offsets[:, 1:] + crop - 1 - ar, offsets[:, 1:] + ar)
    rows, cols = rows[:, :, None], cols[:, None, :]
    return x[index[:, None, None], rows, cols].float() - mean[rows, cols]
