"""`shapes`: the built-in procedural dataset, generated on the fly, no download.

Ten classes of large filled shapes (circle, square, triangle, star, cross, ring, hexagon, crescent,
arrow, heart) on 256×256 colour images, each with a random position, size, rotation, aspect and
colour, drawn over a cluttered background: a random crop of one of 32 textures (a smooth colour
field, three sinusoidal gratings, line segments and dots), its channels permuted and its colours
remapped; up to two thin lines may cross the shape. The label of image i is i % 10 (balanced), and
the image is a pure function of (seed, split, i): its parameters come from a NumPy generator seeded
with exactly those three numbers (the textures from the seed alone), so any worker can render any
index. Rendering costs 2-4 ms of one core per image (≈ 250-500 img/s per core), so each image is
rendered once and then read back from a file kept in the cache directory (data/diskcache.py).

Why this design: the demo trains the paper's net on a 2-core CPU for ten minutes (a few ten thousand
images), so the shapes are big and high-contrast (shape and background sit on opposite sides of the
brightness range), yet position, rotation and colour are random, so a linear model on the pixels
cannot learn them: measured, 11-13% val accuracy (chance 10%) where a small convnet gets 97%
(tests/test_data_shapes_learnable.py).

Rendering is vectorised in torch over a batch: every shape is a signed distance function of the
pixel coordinates, turned into anti-aliased coverage by clamp(0.5 - distance_in_pixels, 0, 1).
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import AlexNetError
from .diskcache import ImageCache
from .imageset import ImageSet, key_of, new_batch

CLASSES = ["circle", "square", "triangle", "star", "cross", "ring", "hexagon", "crescent", "arrow",
           "heart"]
DEFAULT_SIZES = {"train": 20000, "val": 2000}
_SPLIT_ID = {"train": 0, "val": 1}
_BANK, _BANK_MARGIN = 32, 96  # background textures per seed; their extra size, for random crops
_OVER = 2  # line segments that may cross the shape (each drawn with probability 0.3)
_VERSION = 1  # of the renderer: raise it when the images change (stats and image caches)
_CHUNK = 8  # images rendered at once: a float32 channel plane of 8 images (2 MB) stays in cache


class Shapes(ImageSet):
    def __init__(self, split: str = "train", n: int | None = None, *, seed: int = 0,
                 image_size: int = 256, sizes: dict[str, int] | None = None):
        if seed < 0:  # numpy's generators take seeds >= 0; say so in our words
            raise AlexNetError(f"seed must be >= 0, got {seed}", option="seed")
        self.sizes = dict(DEFAULT_SIZES, **(sizes or {}))
        if n is not None:
            self.sizes[split] = n
        self.split, self.seed, self.image_size = split, seed, image_size
        self.classes = list(CLASSES)
        self.channels = 3
        n = self.sizes[split]
        self.labels = np.arange(n, dtype=np.int64) % len(CLASSES)
        # Rendered once, then read back (diskcache.py): every later epoch and run is a copy.
        self._cache = ImageCache.create(
            key_of(kind="shapes-images", version=_VERSION, seed=seed, split=split, n=n,
                   size=image_size), n, (image_size, image_size, 3))

    def train_split(self) -> "Shapes":
        return self if self.split == "train" else Shapes(
            "train", seed=self.seed, image_size=self.image_size, sizes=self.sizes)

    def cache_key(self) -> str:
        return key_of(kind="shapes", version=_VERSION, seed=self.seed, size=self.image_size,
                      n=self.sizes["train"])

    def _load(self, indices: np.ndarray) -> torch.Tensor:
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        out = new_batch((len(indices), self.image_size, self.image_size, 3))
        if self._cache is not None and self._cache.load(
                np.asarray(indices, dtype=np.int64), out.numpy(),
                lambda missing: self._render(missing, torch.empty(
                    (len(missing), self.image_size, self.image_size, 3), dtype=torch.uint8)
                ).numpy()):
            return out
        return self._render(indices, out)

    def _render(self, indices, out: torch.Tensor) -> torch.Tensor:
        for start in range(0, len(indices), _CHUNK):
            chunk = indices[start:start + _CHUNK]
            params = [image_params(self.seed, self.split, int(i)) for i in chunk]
            out[start:start + len(chunk)] = render(params, self.image_size, self.seed)
        return out


def image_params(seed: int, split: str, index: int) -> dict[str, np.ndarray]:
    """Every random choice for one image, drawn from a generator seeded by (seed, split, index)."""
    rng = np.random.default_rng([seed, _SPLIT_ID[split], index])
    r = rng.uniform(0.17, 0.30)  # circumradius, as a fraction of the image side
    dark_shape = rng.random() < 0.5
    # The background sits on the other side of the brightness range from the shape, so the shape
    # always stands out; only the thin lines drawn over it cross that gap.
    side = (0.5, 1.0) if dark_shape else (0.0, 0.5)
    bg_lo = rng.uniform(side[0], side[0] + 0.3, 3)
    bg_hi = rng.uniform(bg_lo + 0.1, side[1])
    used = rng.random(_OVER) < 0.3
    return {
        "label": np.array(index % len(CLASSES)),
        "shape": np.array([r, *rng.uniform(r * 0.8, 1 - r * 0.8, 2), rng.uniform(0, 2 * math.pi),
                           rng.uniform(0.8, 1.25)]),  # radius, centre x, y, angle, aspect
        "fg": rng.uniform(0.0, 0.35, 3) if dark_shape else rng.uniform(0.65, 1.0, 3),
        "fg_grad": rng.uniform(-0.15, 0.15, 3),
        "texture": np.array([rng.integers(_BANK), *rng.integers(0, _BANK_MARGIN + 1, 2)]),
        "perm": rng.permutation(3),
        "bg": np.stack([bg_lo, bg_hi - bg_lo]),
        # lines over the shape: x0, y0, x1, y1, half-width in px at 256 (negative: unused, drawn
        # invisibly so that every image consumes the same random numbers), then the colour
        "over": np.concatenate([rng.uniform(0, 1, (_OVER, 4)),
                                np.where(used, rng.uniform(1.0, 2.5, _OVER), -2.0)[:, None],
                                rng.uniform(0, 1, (_OVER, 3))], axis=1),
    }


def render(params: list[dict], size: int = 256, seed: int = 0) -> torch.Tensor:
    """uint8 (B, size, size, 3) images for a list of `image_params` dicts.

    Works channels-first, (B, 3, S, S), so that every per-pixel operation runs along contiguous
    rows, and in place where it can (fresh multi-MB buffers cost page faults); one copy at the end
    gives the NHWC layout of the dataset interface."""
    p = {k: torch.from_numpy(np.stack([q[k] for q in params])) for k in params[0]}
    b = len(params)
    bank = texture_bank(seed, size)
    img = torch.empty((b, 3, size, size))
    for i, (j, dy, dx) in enumerate(p["texture"].tolist()):
        img[i] = bank[j, :, dy:dy + size, dx:dx + size][p["perm"][i]]
    bg = p["bg"].float()  # (B, 2, 3): the low end and the span of each background channel
    img.mul_(bg[:, 1].view(b, 3, 1, 1) / 255).add_(bg[:, 0].view(b, 3, 1, 1))
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size  # pixel centres in [0, 1]
    _draw_shapes(img, p, coords.view(1, 1, size), coords.view(1, size, 1), size)
    over = p["over"].float()
    for k in range(_OVER):
        ends = over[:, k, :4].T.reshape(4, b, 1) * size
        cover = _segment_cover(coords * size, *ends, over[:, k, 4:5] * (size / 256))
        img.lerp_(over[:, k, 5:].reshape(b, 3, 1, 1), cover)
    img = img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)
    return img.permute(0, 2, 3, 1).contiguous()


@functools.lru_cache(maxsize=2)
def texture_bank(seed: int, size: int = 256) -> torch.Tensor:
    """uint8 (BANK, 3, L, L) cluttered textures, L = size + margin, a pure function of the seed.

    Why a bank: clutter is most of the rendering work, so it is drawn once per process and each
    image takes a random crop of a random texture, with its channels permuted and its colours
    remapped into the image's background range; that is cheap and still never repeats exactly."""
    rng = np.random.default_rng([seed, 1 << 20])
    big = size + _BANK_MARGIN
    coords = (torch.arange(big, dtype=torch.float32) + 0.5) / big
    x, y = coords.view(1, 1, big), coords.view(1, big, 1)
    img = _smooth_field(torch.from_numpy(rng.uniform(0, 1, (_BANK, 3, 5, 5))).float(), big)
    for _ in range(3):  # three gratings of random frequency, orientation and colour
        freq, theta, phase = (torch.from_numpy(rng.uniform(lo, hi, (_BANK, 1))).float()
                              for lo, hi in ((3, 16), (0, math.pi), (0, 2 * math.pi)))
        amp = torch.from_numpy(rng.uniform(-0.12, 0.12, (_BANK, 3, 1, 1))).float()
        img.add_(_grating(freq, theta, phase, coords) * amp)
    for k in range(12):  # line segments, 1 to 3 px half-width, random colours
        line = torch.from_numpy(rng.uniform(0, 1, (4, _BANK, 1))).float() * big
        width = torch.from_numpy(rng.uniform(1.0, 3.0, (_BANK, 1))).float()
        colour = torch.from_numpy(rng.uniform(0, 1, (_BANK, 3, 1, 1))).float()
        img.lerp_(colour, _segment_cover(coords * big, *line, width))
    for k in range(12):  # dots, 3 to 10 px radius
        cx, cy, rad = (torch.from_numpy(rng.uniform(lo, hi, (_BANK, 1, 1))).float()
                       for lo, hi in ((0, 1), (0, 1), (0.012, 0.04)))
        colour = torch.from_numpy(rng.uniform(0, 1, (_BANK, 3, 1, 1))).float()
        dist = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2) - rad
        img.lerp_(colour, (0.5 - dist * big).clamp_(0, 1).unsqueeze(1))
    return img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def _smooth_field(points: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic upsampling of (B, C, n, n) control points to (B, C, size, size). Bicubic is
    separable, so it is two small matmuls with the weights of upsampling each unit vector."""
    n = points.shape[-1]
    eye = torch.eye(n).view(n, 1, 1, n)
    w = F.interpolate(eye, size=(1, size), mode="bicubic", align_corners=False).view(n, size)
    return w.T @ points @ w


def _grating(freq, theta, phase, coords) -> torch.Tensor:
    """sin(2π f (x cos θ + y sin θ) + φ), (B, 1, S, S), from rows and columns only:
    sin(a + b) = sin a cos b + cos a sin b is an outer product, not a per-pixel sine."""
    ax = 2 * math.pi * freq * torch.cos(theta) * coords  # (B, S)
    ay = 2 * math.pi * freq * torch.sin(theta) * coords + phase
    wave = torch.sin(ay).unsqueeze(2) * torch.cos(ax).unsqueeze(1)
    wave += torch.cos(ay).unsqueeze(2) * torch.sin(ax).unsqueeze(1)
    return wave.unsqueeze(1)


def _segment_cover(coords, x0, y0, x1, y1, half_width) -> torch.Tensor:
    """Anti-aliased coverage (B, 1, S, S) of a thick segment with square caps, all in pixels.

    The distances across and along the segment are affine in x and y, so each is one broadcast
    add of a row and a column vector; the segment is the box |across| <= w, |along| <= length/2."""
    dx, dy = x1 - x0, y1 - y0
    length = torch.sqrt(dx * dx + dy * dy).clamp_(min=1e-3)
    nx, ny = dx / length, dy / length  # (B, 1) unit direction
    mx, my = (x0 + x1) / 2, (y0 + y1) / 2
    across = ((coords - mx) * -ny).unsqueeze(1) + ((coords - my) * nx).unsqueeze(2)
    along = ((coords - mx) * nx).unsqueeze(1) + ((coords - my) * ny).unsqueeze(2)
    dist = torch.maximum(across.abs_() - half_width.unsqueeze(2) / 256 * coords.numel(),
                         along.abs_() - (length / 2).unsqueeze(2))
    return (0.5 - dist).clamp_(0, 1).unsqueeze(1)


def _draw_shapes(img, p, x, y, size) -> None:
    """Paint each image's shape: a signed distance in shape units, then coverage in pixels."""
    b = len(img)
    r, cx, cy, angle, aspect = p["shape"].float().T.reshape(5, b, 1, 1)
    c, s = torch.cos(angle), torch.sin(angle)
    # Shape coordinates: rotate about the centre, scale by the radius, squash one axis.
    u = ((x - cx) * (c / r)) + ((y - cy) * (s / r))
    v = ((x - cx) * (-s / (r * aspect))) + ((y - cy) * (c / (r * aspect)))
    dist = torch.empty_like(u)
    labels = p["label"].numpy()
    for label in np.unique(labels):
        rows = torch.from_numpy(np.flatnonzero(labels == label))
        dist[rows] = SDF[CLASSES[label]](u[rows], v[rows])
    # Distances are in radius units; × r × size gives pixels (exact enough for anti-aliasing).
    cover = dist.mul_(-r * size).add_(0.5).clamp_(0, 1).unsqueeze(1)
    grad = p["fg_grad"].float().view(b, 3, 1, 1)
    fg = p["fg"].float().view(b, 3, 1, 1) + grad * (0.5 * u).unsqueeze(1)  # gentle shading
    img.lerp_(fg, cover)


# ---- signed distances (negative inside) in shape units: circumradius ≈ 1 ----------------------

def _star(u, v, points: int, inner: float):
    """A regular star with `points` tips at radius 1 and notches at radius `inner`; with
    inner = cos(pi/points) it is the regular polygon. Folding the angle into one half-sector
    leaves a single edge, from the tip (1, 0) to the notch, to measure against."""
    sector = 2 * math.pi / points
    phi = torch.remainder(torch.atan2(v, u), sector)
    phi = torch.minimum(phi, sector - phi)
    rho = torch.sqrt(u * u + v * v)
    px, py = rho * torch.cos(phi), rho * torch.sin(phi)
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    ex, ey = bx - 1.0, by
    norm = math.hypot(ex, ey)
    return ((px - 1.0) * ey - py * ex) / norm  # distance to the edge line, outward positive


def _box(u, v, a, b):
    return torch.maximum(u.abs() - a, v.abs() - b)


def _circle(u, v, cx=0.0, cy=0.0, radius=1.0):
    return torch.sqrt((u - cx) ** 2 + (v - cy) ** 2) - radius


def _arrow(u, v):
    shaft = _box(u + 0.45, v, 0.55, 0.2)
    # head: a triangle with its tip at (1, 0) and its base at u = 0.1, v in [-0.6, 0.6]
    n = math.hypot(0.6, 0.9)
    head = torch.maximum(0.1 - u, ((u - 1.0) * 0.6 + v.abs() * 0.9) / n)
    return torch.minimum(shaft, head)


def _heart(u, v):
    lobes = torch.minimum(_circle(u, v, -0.42, -0.3, 0.5), _circle(u, v, 0.42, -0.3, 0.5))
    n = math.hypot(1.0, 1.2)
    # the point: below the lobes, between two lines meeting at (0, 1) and passing (±0.85, -0.02)
    point = torch.maximum(((v - 1.0) + u.abs() * 1.2) / n, -0.15 - v)
    return torch.minimum(lobes, point)


SDF = {
    "circle": lambda u, v: _circle(u, v, radius=0.9),
    "square": lambda u, v: _star(u, v, 4, math.cos(math.pi / 4)),
    "triangle": lambda u, v: _star(u, v, 3, 0.5),
    "star": lambda u, v: _star(u, v, 5, 0.42),
    "cross": lambda u, v: torch.minimum(_box(u, v, 0.95, 0.3), _box(u, v, 0.3, 0.95)),
    "ring": lambda u, v: (torch.sqrt(u * u + v * v) - 0.68).abs() - 0.25,
    "hexagon": lambda u, v: _star(u, v, 6, math.cos(math.pi / 6)),
    "crescent": lambda u, v: torch.maximum(_circle(u, v), -_circle(u, v, 0.5, 0.0, 0.8)),
    "arrow": _arrow,
    "heart": _heart,
}


# Eight times ImageNet's training set. The labels and the epoch's permutation are held in memory,
# so a count far above this is a typo that would fail later with an allocation error.
MAX_IMAGES = 10_000_000


def parse_spec(spec: str) -> tuple[int | None, int | None]:
    """"shapes", "shapes:TRAIN_N" or "shapes:TRAIN_N:VAL_N" -> (train_n, val_n)."""

    parts = spec.split(":")[1:]
    if len(parts) > 2:
        raise AlexNetError(f"bad dataset {spec!r}: expected shapes[:TRAIN_N[:VAL_N]]")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise AlexNetError(f"bad dataset {spec!r}: sizes must be integers, "
                           "as in shapes:20000:2000") from None
    if any(n <= 0 for n in sizes):
        raise AlexNetError(f"bad dataset {spec!r}: sizes must be positive")
    if any(n > MAX_IMAGES for n in sizes):  # a typo's extra zeros, not a dataset: say so up front
        raise AlexNetError(f"bad dataset {spec!r}: at most {MAX_IMAGES:,} images a split")
    sizes += [None] * (2 - len(sizes))
    return sizes[0], sizes[1]
