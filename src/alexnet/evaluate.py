"""Evaluation: top-1 / top-5 error from the centre crop or the paper's 10 views (§4.1).

"At test time, the network makes a prediction by extracting five 224×224 patches (the four corner
patches and the center patch) as well as their horizontal reflections (hence ten patches in all),
and averaging the predictions made by the network's softmax layer on the ten patches."
`alexnet eval CKPT --data … [--crops 1|10] [--json]` prints the errors of a checkpoint; `evaluate`
is also what training runs between epochs.
"""
from __future__ import annotations

import json
import sys

import torch

from . import parallel
from .accel import PRECISIONS, tune_allocator
from .data import Loader, open_dataset
from .errors import AlexNetError, DataError, same_on_every_process
from .options import check_value, path_arg
from .predictor import Predictor
from .progress import Progress
from .weights import load_any


def top_k_hits(probs: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """(len(ks), B) float64: per k, 1 where the label is among the k most probable classes, 0
    where not, and for a label tied with others across the k-th place the chance that a random
    order of the tie puts it inside. torch.topk orders ties as it happens to (bf16 logits tie
    often), and a dead net's equal probabilities would score 0% top-1 error on whichever class
    came first: here they score what chance does (k / classes). A NaN probability is a miss."""
    p = probs.gather(1, labels[:, None])                            # (B, 1) the label's
    above = (probs > p).sum(1)                                      # classes ranked above it
    tied = (probs == p).sum(1).clamp_min(1)                         # itself and its equals
    k = torch.tensor(ks, device=probs.device)[:, None]              # (K, 1)
    hits = ((k - above).double() / tied).clamp(0, 1)                # (K, B)
    return torch.where(p[:, 0].isnan(), 0.0, hits)


@torch.no_grad()
def evaluate(predictor, loader, crops: int = 1, info=None, progress: bool = False,
             label_map: torch.Tensor | None = None) -> dict:
    """Exact top-1/top-5 error and loss of a Predictor over the whole loader (summed over ranks
    under DDP). Images the loader could not read are left out (loader.skipped lists them).
    label_map: the model's output for each of the data's labels (Predictor.label_map)."""
    # sums: loss, top-1 correct, top-5 correct, images
    sums = torch.zeros(4, dtype=torch.float64)
    desc = f"eval ({crops} crop{'s' if crops > 1 else ''})"
    with Progress(len(loader), desc, enabled=progress) as bar:
        for images, labels in loader:
            probs = predictor.probs(images, crops)
            labels = labels.to(probs.device)
            if label_map is not None:
                labels = label_map.to(probs.device)[labels]
            nll = -probs.gather(1, labels[:, None]).clamp_min(1e-12).log()
            top1, top5 = top_k_hits(probs, labels).sum(1).tolist()
            sums += torch.tensor([nll.sum().item(), top1, top5, len(labels)],
                                 dtype=torch.float64)
            bar.update()
    if info is not None:
        sums = parallel.all_reduce_sum(sums, info)
    if sums[3] == 0:  # after the sum over ranks: every rank raises alike
        raise _nothing_to_score(loader, info)
    n = sums[3].item()
    return {"loss": sums[0].item() / n, "top1_error": 1 - sums[1].item() / n,
            "top5_error": 1 - sums[2].item() / n, "crops": crops, "images": int(sums[3].item())}


def _nothing_to_score(loader, info) -> DataError:
    """No image scored: an error of 100% over 0 images, what evaluate returned before, read as a
    result (train chose its best.pt on it). Under torchrun rank 0 alone says it."""
    total = len(loader.imageset)
    if total == 0:
        e = DataError("the validation set has no images: nothing to score", option="data")
    else:
        skipped = unreadable([loader], info) if info is not None else list(loader.skipped.values())
        e = DataError(f"none of the {total} validation images could be read, so there is nothing "
                      f"to score (the first: {skipped[0] if skipped else '?'})", option="data")
    e.said_by_rank0 = info is not None and info.rank != 0
    return e


def unreadable(loaders, info) -> list[str]:
    """The images no rank could read, "file: why": loader by loader, each in index order. Under
    DDP each rank meets only its own share of them, so this gathers them (every rank calls it)."""
    parts = parallel.gather_objects([loader.skipped for loader in loaders], info)
    out = []
    for k in range(len(loaders)):
        merged = {i: why for part in parts for i, why in part[k].items()}
        out += [merged[i] for i in sorted(merged)]
    return out


def format_results_table(results: dict) -> str:
    """results: {"1-crop": {...}, "10-crop": {...}} -> a small aligned table."""
    lines = [f"{'test views':<12}{'top-1 err':>10}{'top-5 err':>10}{'images':>8}"]
    for name, r in results.items():
        lines.append(f"{name:<12}{r['top1_error']:>10.2%}{r['top5_error']:>10.2%}{r['images']:>8}")
    return "\n".join(lines)


# --- the `alexnet eval` command -------------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", type=path_arg, nargs="?",
                        help="checkpoint, run directory (takes "
                        "best.pt), safetensors export or torchvision weights file")
    parser.add_argument("--weights", type=path_arg, default=None, help="the same, as an option")
    parser.add_argument("--data", type=path_arg, default=None,
                        help="dataset; its val split is evaluated "
                        "(default: the one the model trained on, else shapes)")
    parser.add_argument("--val-labels", type=path_arg, default=None,
                        help="ILSVRC-2012 ground-truth file")
    parser.add_argument("--crops", type=int, choices=(1, 10), default=10)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per batch (per process under torchrun)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS)
    parser.add_argument("--workers", type=int, default=None,
                        help="loader processes (default: by device and cores, as in train)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    with same_on_every_process():  # the command line's errors: once a machine under torchrun
        if args.weights and args.checkpoint and args.weights != args.checkpoint:
            raise AlexNetError(f"two checkpoints given, {args.checkpoint} and {args.weights}; "
                               "give one", option="weights")
        path = args.weights or args.checkpoint
        if path is None:
            raise AlexNetError("give a checkpoint or a weights file", option="weights")
        check_value("batch_size", args.batch_size, int, {"low": 1})
        if args.workers is not None:
            check_value("workers", args.workers, int, {"low": 0})
        ckpt = load_any(path)  # read by every process alike, before they part ways
    tune_allocator()  # our own process, over a whole dataset (the library leaves it alone)
    info = parallel.init_distributed(args.device)  # under torchrun each rank takes a share
    try:
        parallel.agree_on_fast_path(info)
        predictor = Predictor.from_checkpoint(ckpt, info.device, args.precision)
        del ckpt  # its training state (the momentum: the weights' size again) is not needed
        spec, val_labels = predictor.own_data(args.data, args.val_labels)
        # At the model's image size: one trained on `prepare --size 300` data takes a folder too.
        data = open_dataset(spec, "val", seed=predictor.data_seed, val_labels=val_labels,
                            image_size=predictor.image_size)
        predictor.check_data(data, classes=False)
        label_map, note = predictor.label_map(data)
        if note and info.is_main:
            print(note, file=sys.stderr)
        loader = Loader(data, args.batch_size, shuffle=False, workers=args.workers,
                        rank=info.rank, world_size=info.world_size, even=False,
                        device=predictor.rt.device)
        result = evaluate(predictor, loader, crops=args.crops, info=info,
                          progress=not args.json and info.is_main, label_map=label_map)
        skipped = unreadable([loader], info)
    finally:
        parallel.cleanup_distributed()
    if not info.is_main:
        return 0
    if skipped:
        print(f"{len(skipped)} unreadable images left out:\n" + "\n".join(skipped),
              file=sys.stderr)
    if args.json:
        print(json.dumps({k: result[k] for k in ("top1_error", "top5_error", "crops", "images")}))
    else:
        print(format_results_table({f"{args.crops}-crop": result}))
    return 0
