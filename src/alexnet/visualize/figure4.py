"""The paper's Figure 4: what the network predicts (left) and what it considers similar (right).

`alexnet show predictions CKPT IMAGE… [--crops 1|10]`: each image with the probabilities of its
top-5 classes, as `alexnet predict` gives them. The paper's red bar marks the correct label; image
files come without one, so ours marks the top prediction.
`alexnet show neighbours CKPT --data D`: query images from the validation split and the training
images closest to them by Euclidean distance of their fc7 vectors (the last hidden layer). The
paper's point: neighbours in feature space are semantically alike even where their pixels are not
(different poses, colours, backgrounds), so fc7 holds a representation, not a template.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import open_dataset
from ..errors import AlexNetError
from ..options import check_value
from ..predictor import Predictor, read_names
from .common import centre, figure, save_figure, short, show_image

ROW_PX, WIDTH_PX = 200, 900        # predictions: one row per image
CELL_PX, LABEL_PX = 150, 30         # neighbours: one cell per image, a title strip above
MAX_IMAGES = 50                     # a taller figure is no longer readable


def _readable(seen: Predictor, names_file: str | None) -> dict[str, str]:
    """{class: what to show}: the class's name, or --names's words for it where it gives them."""
    names = read_names(names_file, seen.classes) if names_file else {}
    return {c: names.get(c, c) for c in seen.classes}


# --- predictions ----------------------------------------------------------------------------------

def draw_predictions(images: np.ndarray, tops: list[list[tuple[str, float]]], names, path):
    """images: uint8 (N, s, s, C) as the net sees them; tops: [(class, probability)…] per image."""
    n = len(images)
    fig = figure(WIDTH_PX, ROW_PX * n)
    for i, (image, top, name) in enumerate(zip(images, tops, names)):
        bottom = 1 - (i + 1) / n
        ax_img = fig.add_axes((0.01, bottom + 0.05 / n, 0.2, 0.85 / n))
        show_image(ax_img, image, short(name, 24), fontsize=8)
        ax_bar = fig.add_axes((0.45, bottom + 0.12 / n, 0.5, 0.76 / n))
        labels = [short(c, 28) for c, _ in top][::-1]  # the most likely at the top
        probs = [100 * p for _, p in top][::-1]
        colours = ["#bbbbbb"] * (len(top) - 1) + ["#d62728"]
        ax_bar.barh(range(len(top)), probs, color=colours)
        ax_bar.set_yticks(range(len(top)), labels, fontsize=9)
        ax_bar.set_xlim(0, 100)
        ax_bar.tick_params(axis="x", labelsize=8)
        for y, p in enumerate(probs):
            ax_bar.text(min(p + 1, 85), y, f"{p:.1f}%", va="center", fontsize=8)
        if i == n - 1:
            ax_bar.set_xlabel("probability (%)", fontsize=9)
    return save_figure(fig, path)


def run_predictions(args) -> int:
    if not args.images:
        raise AlexNetError("no images given")
    if len(args.images) > MAX_IMAGES:
        raise AlexNetError(f"at most {MAX_IMAGES} images per picture, got {len(args.images)}")
    seen = Predictor.from_file(args.checkpoint, args.device, args.precision)
    readable = _readable(seen, args.names)
    images = seen.load_images(args.images)
    tops = [[(readable[c], p) for c, p in top]
            for top in seen.top(seen.probs(images, args.crops), args.topk)]
    path = draw_predictions(centre(images, seen.augment.crop_size), tops,
                            [str(p).rsplit("/", 1)[-1] for p in args.images], args.out)
    print(path)
    return 0


# --- neighbours -----------------------------------------------------------------------------------

def features(seen: Predictor, data, indices: np.ndarray, layer: str, batch: int = 32):
    """(len(indices), D) float32 activations of `layer` for those images of `data`."""
    out = []
    for start in range(0, len(indices), batch):
        images = data.get_batch(indices[start:start + batch])
        out.append(seen.features(images, layer).flatten(1))
    return torch.cat(out)


def nearest(queries: torch.Tensor, pool: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, indices into pool), each (Q, k), by Euclidean distance, nearest first."""
    # float64, and differences rather than cdist's |a|² + |b|² − 2ab shortcut (taken beyond 25
    # rows), which gave an image 2.7e-6 from itself: ties and tiny distances stay exact.
    d = torch.cdist(queries.double(), pool.double(), compute_mode="donot_use_mm_for_euclid_dist")
    dist, idx = d.topk(min(k, pool.shape[0]), dim=1, largest=False)
    return dist, idx


def draw_neighbours(queries, q_labels, neighbours, n_labels, distances, classes, layer, path):
    """queries: uint8 (Q, s, s, C); neighbours: uint8 (Q, k, s, s, C); labels are ints."""
    q, k = len(queries), neighbours.shape[1]
    fig = figure(CELL_PX * (k + 1), (CELL_PX + LABEL_PX) * q + LABEL_PX)
    fig.suptitle(f"val queries (left) and their {k} nearest training images by Euclidean distance "
                 f"of {layer} features", fontsize=9)
    cols, rows = k + 1, q
    top = 1 - LABEL_PX / ((CELL_PX + LABEL_PX) * q + LABEL_PX)
    h = top / rows
    for r in range(rows):
        for c in range(cols):
            ax = fig.add_axes((c / cols + 0.01 / cols, top - (r + 1) * h + 0.02 * h,
                               0.98 / cols, h * CELL_PX / (CELL_PX + LABEL_PX)))
            if c == 0:
                show_image(ax, queries[r], "query: " + short(classes[q_labels[r]], 14),
                           fontsize=8, fontweight="bold")
                continue
            label = n_labels[r][c - 1]
            same = label == q_labels[r]
            show_image(ax, neighbours[r, c - 1], f"{short(classes[label], 12)} "
                       f"d={distances[r, c - 1]:.3g}", fontsize=7,
                       color="green" if same else "red")
    return save_figure(fig, path)


def run_neighbours(args) -> int:
    for flag, value in (("--queries", args.queries), ("--pool", args.pool), ("-k", args.k)):
        if value < 1:
            raise AlexNetError(f"{flag} must be >= 1")
    check_value("seed", args.seed, int, {"low": 0})  # numpy's own words name no flag
    if args.queries > MAX_IMAGES:
        raise AlexNetError(f"--queries: at most {MAX_IMAGES}")
    seen = Predictor.from_file(args.checkpoint, args.device, args.precision)
    seen.check_layer(args.layer)
    classes = list(_readable(seen, args.names).values())
    # The model's own data (shapes is rendered from its run's seed); --seed draws from it.
    train = open_dataset(args.data, "train", seed=seen.data_seed)
    val = open_dataset(args.data, "val", seed=seen.data_seed)
    seen.check_data(train)
    # Random but reproducible picks: ImageFolder sets are sorted by class, so the first N images
    # would all be of one class.
    rng = np.random.default_rng(args.seed)
    q_idx = np.sort(rng.choice(len(val), min(args.queries, len(val)), replace=False))
    p_idx = np.sort(rng.choice(len(train), min(args.pool, len(train)), replace=False))
    if args.k > len(p_idx):  # it drew fewer columns than asked for, unsaid
        print(f"note: {len(p_idx)} neighbours a query, as many as the pool holds (-k {args.k})")
    dist, near = nearest(features(seen, val, q_idx, args.layer),
                         features(seen, train, p_idx, args.layer), args.k)
    crop = seen.augment.crop_size
    queries = centre(val.get_batch(q_idx), crop)
    chosen = p_idx[near.numpy()]                                  # (Q, k) training indices
    neighbours = centre(train.get_batch(chosen.reshape(-1)), crop).reshape(
        *chosen.shape, crop, crop, -1)
    path = draw_neighbours(queries, val.labels[q_idx], neighbours, train.labels[chosen],
                           dist.numpy(), classes, args.layer, args.out)
    same = (train.labels[chosen] == val.labels[q_idx][:, None]).mean()
    print(f"{same:.0%} of the neighbours share their query's class "
          f"({len(q_idx)} queries, pool of {len(p_idx)} training images)")
    print(path)
    return 0
