"""`alexnet bench data [SRC]`: our loader on prepared data vs torchvision's classic pipeline.

Both sides turn the same images into the model's input tensors, with the same number of worker
processes and the same batch size, measured one after the other in one run:

- baseline: torchvision ImageFolder on the original files + PIL decode + Resize(256) +
  RandomCrop(224) + RandomHorizontalFlip + ToTensor + Normalize, in a DataLoader;
- ours: `alexnet prepare` once (timed separately: a one-time cost), then Loader + Augment.train
  (random 224 crop, flip, PCA lighting, mean-image subtraction) in the loader's workers, for raw
  and for JPEG shards.

With --device D (e.g. cuda), the pipelines deliver the augmented batch on D, as training on an
accelerator consumes it: raw and JPEG (decoded in the workers) batches copied (pinned on CUDA)
and augmented on D, and a third, "jpeg-device": the workers pass each image's JPEG bytes and the
batch is decoded on D in one call (nvJPEG on CUDA, `alexnet train --decode device`), then
augmented there. The baseline's tensors are copied to D too.

Throughput is measured after the first batch (worker start-up excluded on both sides), in --rounds
rounds that alternate the pipelines, keeping each one's best round: on a shared machine other
processes only ever slow a round down, and alternating exposes both sides to the same load. The
model's own CPU training speed (paper net, batch 64, bf16 autocast, channels_last) is measured
too, as the rate the loader has to beat. SRC, when given, is an ImageFolder tree whose train/ images are
used (a sample of --images of them); without it, photo-sized JPEGs (500×375, quality 90) are made
from random crops of scikit-learn's two sample photos with random colour changes, or from `shapes`
rendered at 500×500 if scikit-learn is absent.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import accel
from ..data import Loader, open_dataset
from ..data.ahead import augmented
from ..data.augment import Augment
from ..data.folder import ImageFolder
from ..data.prepare import prepare
from ..data.shapes import Shapes
from ..errors import AlexNetError
from ..model import alexnet
from ..options import path_arg
from ..parallel import resolve_device
from ..step import train_step

PREPARED_SIZE = 256  # the images are prepared at 256², as for training (crops come from it)


def add_arguments(parser) -> None:
    parser.add_argument("src", type=path_arg, metavar="SRC", nargs="?",
                        help="an ImageFolder tree (default: generated photo-sized JPEGs)")
    parser.add_argument("--images", type=int, default=768, help="images to use (default 768)")
    parser.add_argument("--workers", type=int, default=2, help="loader processes, both sides")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--crop", type=int, default=224, help="crop size (torchvision's 224)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating rounds; each pipeline's best counts (default 3)")
    parser.add_argument("--model-steps", type=int, default=3,
                        help="training steps to time the model (0: skip)")
    parser.add_argument("--device", default=None,
                        help="deliver augmented batches on this device (e.g. cuda; default: the "
                        "CPU loader's own output)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args) -> int:
    for name, least in (("batch_size", 1), ("workers", 0), ("rounds", 1), ("model_steps", 0),
                        ("crop", 1)):
        if getattr(args, name) < least:
            raise AlexNetError(f"{name} must be >= {least}, got {getattr(args, name)}",
                               option=name)
    if args.crop > PREPARED_SIZE:
        raise AlexNetError(f"crop must be at most the prepared size {PREPARED_SIZE}, got "
                           f"{args.crop}", option="crop")
    if args.device is not None:  # checked before minutes of preparing, not after
        args.device = resolve_device(args.device)
    if args.images < args.batch_size * 2:
        raise AlexNetError(f"images must be >= 2 × batch_size = {2 * args.batch_size} (each rate "
                           f"is timed after the first batch), got {args.images}", option="images")
    _check_disk(args.images)
    work = Path(tempfile.mkdtemp(prefix="alexnet-bench-data-"))
    try:
        result = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(table(result))
    return 0


def measure(args, work: Path) -> dict:
    originals = work / "originals"
    if args.src:
        describe = link_sample(Path(args.src), originals, args.images)
    else:
        describe = make_photos(originals, args.images)
    sizes = [os.path.getsize(p) for p in originals.rglob("*") if p.is_file()]
    _enough(len(sizes), args.batch_size, describe)
    result = {"source": describe, "images": len(sizes), "mean_file_kb": np.mean(sizes) / 1e3,
              "workers": args.workers, "batch_size": args.batch_size, "crop": args.crop,
              "cpus": os.cpu_count(), "torch": torch.__version__}

    for fmt in ("raw", "jpeg"):
        start = time.perf_counter()
        # small shards, so that every worker gets some
        manifest, _ = prepare(originals, work / fmt, size=PREPARED_SIZE, encoding=fmt,
                              workers=max(1, args.workers), progress=False,
                              shard_size=max(16, len(sizes) // (4 * max(1, args.workers))))
        result[f"prepare_{fmt}_img_s"] = len(sizes) / (time.perf_counter() - start)
        _enough(manifest["splits"]["train"]["count"], args.batch_size, describe, " readable")
    result["unreadable"] = manifest["skipped"]
    loaders = {"baseline": _torchvision_loader(originals, args),
               "raw": _our_loader(work / "raw", args), "jpeg": _our_loader(work / "jpeg", args)}
    if args.device is not None:
        result["device"] = str(args.device)
        loaders["baseline"] = _Copied(loaders["baseline"], args.device)
        loaders["jpeg-device"] = _our_loader(work / "jpeg", args, encoded=True)
    rates = {name: [] for name in loaders}
    try:
        for _ in range(args.rounds):
            for name, loader in loaders.items():
                rates[name].append(_rate(loader))
    finally:
        for loader in loaders.values():
            _close(loader)
    for name, r in rates.items():
        result[f"{name}_img_s"] = max(r)
        result[f"{name}_rounds"] = [round(x, 1) for x in r]
    for fmt in [k for k in loaders if k != "baseline"]:
        result[f"{fmt}_ratio"] = result[f"{fmt}_img_s"] / result["baseline_img_s"]
    if args.model_steps > 0:
        result["model_train_img_s"] = model_train_rate(args.model_steps,
                                                        device=args.device or "cpu")
    return result


def _check_disk(images: int) -> None:
    """Refuse at once what cannot fit: the raw shards alone take images × 256² × 3 bytes in the
    temporary directory (the originals and JPEG shards come on top). `--images 1e23` wrote
    photos until the disk was full."""
    need = images * PREPARED_SIZE * PREPARED_SIZE * 3
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if need > free:
        raise AlexNetError(f"{images} images need more than {need / 1e9:.3g} GB in "
                           f"{tempfile.gettempdir()} (raw shards alone), which has "
                           f"{free / 1e9:.3g} GB free", option="images")


def _enough(n: int, batch_size: int, source: str, kind: str = "") -> None:
    """Each rate is timed after the first batch, so two batches are the least that measures."""
    if n < 2 * batch_size:
        raise AlexNetError(f"the data benchmark needs at least {2 * batch_size}{kind} images (two "
                           f"batches of {batch_size}); it has {n} ({source})")


def _rate(batches) -> float:
    """Images per second of one epoch after its first batch (which pays for starting workers)."""
    it = iter(batches)
    try:
        images, _ = next(it)
        _sync(images)
        start, n = time.perf_counter(), 0
        for images, _ in it:
            n += len(images)
        _sync(images)
        return n / (time.perf_counter() - start)
    finally:  # a generator (data/ahead.py's thread among them) ends now, even on an error
        if hasattr(it, "close"):
            it.close()


def _sync(images: torch.Tensor) -> None:
    if images.device.type == "cuda":
        torch.cuda.synchronize(images.device)


# The loaders are closed when measured (_close): the workers of a loader left to the garbage
# collector outlived `measure`, and its shutdown of them waited 5 s a worker, so `bench data
# --device cuda` printed its table and did not exit in 70 s on the H200 (4 loaders x 14 workers;
# session 27). They were not freed on return: the wrappers were classes made inside functions (a
# class lives in a reference cycle), and importing torchvision.datasets keeps the frames on the
# stack at that moment, the one holding the loaders among them.


class _Copied:
    """Each (images, labels) of `batches` with the images copied to `device`."""

    def __init__(self, batches, device):
        self.batches, self.device = batches, device

    def close(self) -> None:
        _close(self.batches)

    def __iter__(self):
        for images, labels in self.batches:
            yield images.to(self.device, non_blocking=True), labels


class _OnDevice:
    """A Loader's batches augmented on its device as in training: the crops drawn on the CPU from
    the loader's generator."""

    def __init__(self, loader: Loader, augment: Augment):
        self.loader, self.augment = loader, augment

    def close(self) -> None:
        self.loader.close()

    def __iter__(self):
        return augmented(self.loader, self.augment)


def _close(loader) -> None:
    """Stop a measured loader's workers (torchvision's DataLoader here has none between epochs)."""
    if hasattr(loader, "close"):
        loader.close()


def _torchvision_loader(root: Path, args):
    from torchvision import datasets, transforms

    t = transforms.Compose([
        transforms.Resize(PREPARED_SIZE), transforms.RandomCrop(args.crop),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])])
    dataset = _Readable(datasets.ImageFolder(root / "train", transform=t))
    # Workers started per epoch, and stopped at its end: each rate is timed after the first
    # batch, so their start is not counted (and no DataLoader is left with workers to close).
    return torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                                       num_workers=args.workers, collate_fn=_collate_readable)


class _Readable(torch.utils.data.Dataset):
    """The baseline skips unreadable files too (as our Loader does), instead of crashing."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        try:
            return self.dataset[i]
        except Exception:  # Pillow's decoders raise many types on a damaged file
            return None


def _collate_readable(samples):
    kept = [s for s in samples if s is not None]
    if not kept:
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    return torch.utils.data.default_collate(kept)


def _our_loader(prepared: Path, args, encoded: bool = False):
    """Loader + Augment: in the workers (no --device), or on the device as training does there
    (Loader.to_device: copied, or decoded there from JPEG bytes when `encoded`)."""
    data = open_dataset(prepared, "train")
    if args.device is None:
        augment = Augment(data.stats(), crop_size=args.crop)
        return Loader(data, args.batch_size, shuffle=True, workers=args.workers,
                      transform=augment.train)
    device = torch.device(args.device)
    augment = Augment(data.stats(), crop_size=args.crop, device=device)
    loader = Loader(data, args.batch_size, shuffle=True, workers=args.workers, encoded=encoded,
                    device=device)  # pinned on CUDA unless encoded, as in training
    return _OnDevice(loader, augment)


def model_train_rate(steps: int, batch: int = 64, device="cpu") -> float:
    """The paper net's training img/s on the device's fast path (alexnet.accel, alexnet.step),
    for scale: the loader must deliver at least this."""
    device = torch.device(device)
    precision = accel.resolve_precision(device)
    model = accel.prepare_model(alexnet("paper", num_classes=1000), device)
    optimizer = accel.make_sgd(model.parameters(), 0.01, 0.9, 5e-4, device)
    scaler = accel.grad_scaler(device, precision)
    x = accel.to_input(torch.randn(batch, 3, 227, 227), device)
    y = torch.randint(0, 1000, (batch,), device=device)
    times = []
    for _ in range(steps + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        train_step(model, optimizer, scaler, x, y,
                   autocast=lambda: accel.autocast(device, precision))
        _sync(x)
        times.append(time.perf_counter() - start)
    return batch / float(np.median(times[1:]))


def make_photos(root: Path, n: int, classes: int = 10, seed: int = 0, first: int = 0,
                split: str = "train") -> str:
    """n photo-like 500×375 JPEGs (quality 90) in root/<split>/<class>/, 10 classes, numbered
    from `first` (so that several processes can each make a share of one folder)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    try:
        from sklearn.datasets import load_sample_images

        photos = [np.asarray(p) for p in load_sample_images().images]  # 427×640 each
        source = "generated: random 500×375 crops of scikit-learn's sample photos, JPEG q90"
    except ImportError:
        photos = list(Shapes("train", n=8, image_size=500).get_batch(range(8)).numpy())
        source = "generated: shapes rendered at 500×500, cropped to 500×375, JPEG q90"
    for i in range(first, first + n):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        top, left = rng.integers(0, h - 375 + 1), rng.integers(0, w - 500 + 1)
        crop = photo[top:top + 375, left:left + 500].astype(np.float32)
        crop = crop * rng.uniform(0.7, 1.3, 3) + rng.uniform(-20, 20, 3)  # colour changes
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        folder = root / split / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))
        img.save(folder / f"{i:06d}.jpg", quality=90)
    return source


def link_sample(src: Path, root: Path, n: int) -> str:
    """A random sample of n of SRC's training images, as symlinks in root/train/<class>/."""
    data = ImageFolder(src, "train")
    chosen = random.Random(0).sample(range(len(data)), min(n, len(data)))
    for i in chosen:
        folder = root / "train" / data.classes[data.labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:08d}{data.files[i].suffix}").symlink_to(data.files[i].resolve())
    return f"{len(chosen)} of the {len(data)} training images of {src}"


def table(r: dict) -> str:
    names = {"baseline": "torchvision ImageFolder + PIL (original JPEGs)",
             "raw": "alexnet Loader + Augment (prepared, raw)",
             "jpeg": "alexnet Loader + Augment (prepared, JPEG q90)",
             "jpeg-device": "alexnet, JPEG q90 decoded on the device"}
    names = {k: v for k, v in names.items() if f"{k}_img_s" in r}
    unreadable = f", {r['unreadable']} unreadable (skipped)" if r.get("unreadable") else ""
    lines = [f"{r['images']} images{unreadable} ({r['source']}; {r['mean_file_kb']:.0f} kB each), "
             f"batch {r['batch_size']}, crop {r['crop']}, {r['workers']} workers, "
             f"{r['cpus']} CPUs, torch {r['torch']}; {len(r['baseline_rounds'])} alternating "
             f"rounds{'; delivered augmented on ' + r['device'] if 'device' in r else ''}", "",
             f"{'pipeline':<48} {'best img/s':>10} {'median':>8} {'× baseline':>11}"]
    for key, name in names.items():
        best, median = r[f"{key}_img_s"], float(np.median(r[f"{key}_rounds"]))
        lines.append(f"{name:<48} {best:>10.0f} {median:>8.0f} "
                     f"{best / r['baseline_img_s']:>10.1f}×")
    lines += ["", f"one-time `alexnet prepare`: {r['prepare_raw_img_s']:.0f} img/s (raw), "
                  f"{r['prepare_jpeg_img_s']:.0f} img/s (JPEG)"]
    if "model_train_img_s" in r:
        m = r["model_train_img_s"]
        lines.append(f"paper AlexNet training step ({r.get('device', 'cpu')}): {m:.0f} img/s; "
                     f"the raw loader is "
                     f"{r['raw_img_s'] / m:.0f}× that")
    return "\n".join(lines)
