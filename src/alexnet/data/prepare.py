"""`alexnet prepare SRC OUT`: decode, resize and crop a dataset once, into shards for fast reading.

SRC is anything `open_dataset` accepts (an ImageFolder tree, `shapes`, `fashion-mnist`). Every image
gets the paper's preprocessing: shorter side resized to --size (256), centre crop --size × --size.

The output directory (format "alexnet-prepared", version 1):

    OUT/prepare.json         the options of the run; written first, checked when resuming
    OUT/train-00000.u8 ...   raw shards: n × S × S × C uint8 pixels, NHWC, C order, no header
    OUT/train-00000.jpg      (--format jpeg) the JPEG files of the shard, concatenated, with
    OUT/train-00000.idx.npy    their byte offsets, int64 (n + 1,): image j = bytes [o[j], o[j+1])
    OUT/train-00000.npz      the shard's sidecar: labels, skipped files, partial statistics;
                               written last, so it marks the shard as finished
    OUT/train-labels.npy     int64 labels of the whole split, in shard order
    OUT/val-…                the same for the val split, when the source has one
    OUT/stats.npz            training-split statistics: mean_image (S,S,C), mean, std, eigval,
                               eigvec; float32, pixel scale 0..255 (alexnet.data.imageset)
    OUT/report.txt           files that could not be read (skipped, never fatal), with reasons
    OUT/manifest.json        classes, channels, size, encoding, shards and counts; written LAST
    OUT/.lock                held by the running prepare (alexnet.io.locked_dir)

A directory is a finished dataset if and only if manifest.json exists. Every file is written to a
temporary name and renamed into place, so a killed run leaves whole shards or nothing; running the
same command again skips the finished shards and goes on (taking the lock deletes the killed run's
temporary files). A second run into the same OUT while one is running stops with an error. Shard k
of a split holds the readable images among source indices [k·shard_size, (k+1)·shard_size), in
order. A finished directory is checked before it is taken as done (its files exist, raw shards
have the size the manifest implies, JPEG shards match their index): a broken shard is redone, and
the manifest written again, by running the same command again.

raw (the default) vs jpeg, for 256×256 RGB images: raw costs 196,608 bytes per image (252 GB for
ILSVRC-2012's 1.28 M training images) and reading is a memory copy; JPEG at quality 90 is about
10-20× smaller but each read decodes, which costs a few ms per image per core (see `alexnet bench
data`): fast enough for a CPU-trained model, not for a fast GPU fed by few cores.
"""
from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import signal
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import AlexNetError, DataError
from ..io import (LOCK_NAME, atomic_path, atomic_write, atomic_write_json, atomic_write_text,
                  locked_dir, sweep_temp)
from ..options import path_arg
from . import SPLITS, open_dataset
from .imageset import StatsAccumulator, drop_failed, load_numpy, save_stats
from .loader import check_workers
from .prepared import (CONFIG, FORMAT, MANIFEST, REPORT, STATS, VERSION, read_manifest,
                       shard_fault, shard_name)

READ_BATCH = 32  # images read at a time inside a shard


def add_arguments(parser) -> None:
    parser.add_argument("src", type=path_arg, metavar="SRC",
                        help="an ImageFolder tree (train/<class>/*, "
                        "val/<class>/*), shapes[:TRAIN_N[:VAL_N]] or fashion-mnist[:DIR]")
    parser.add_argument("out", type=path_arg, metavar="OUT",
                        help="output directory (created; resumed if "
                        "an earlier run with the same options was interrupted)")
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="parallel processes (default: the number of CPUs)")
    parser.add_argument("--format", choices=("raw", "jpeg"), default="raw",
                        help="raw pixels (default; fastest to read) or JPEG (smaller)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--shard-size", type=int, default=1024, help="images per shard")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shapes dataset")
    parser.add_argument("--val-labels", type=path_arg, metavar="FILE",
                        help="label file of a flat ILSVRC-2012 val folder")


def run(args) -> int:
    start = time.time()
    manifest, done = prepare(args.src, args.out, size=args.size, workers=args.workers,
                             encoding=args.format, quality=args.quality,
                             shard_size=args.shard_size, seed=args.seed,
                             val_labels=args.val_labels)
    out = Path(args.out)
    counts = ", ".join(f"{v['count']} {k}" for k, v in manifest["splits"].items())
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    if done == 0:
        print(f"{out} is already prepared: {counts} images")
        return 0
    elapsed = time.time() - start
    print(f"prepared {counts} images ({manifest['skipped']} skipped, listed in "
          f"{out / REPORT}) into {out}: {manifest['encoding']}, {size / 1e9:.2f} GB, "
          f"{done / elapsed:.0f} img/s")
    # Fine for features; say it now, not when train or eval fails.
    if "val" not in manifest["splits"]:
        print(f"note: {args.src} has no val split (val/<class>/*): alexnet train and eval need one")
    elif manifest["splits"]["val"]["count"] == 0:
        print(f"note: no image of {args.src}'s val split could be read (listed in {out / REPORT}): "
              "alexnet train and eval need one")
    return 0


def prepare(src: str, out, *, size: int = 256, workers: int = 1, encoding: str = "raw",
            quality: int = 90, shard_size: int = 1024, seed: int = 0, val_labels=None,
            progress: bool | None = None) -> tuple[dict, int]:
    """Prepare `src` into `out`; returns (manifest, number of images processed by this call).

    The whole run holds `out`'s lock (alexnet.io.locked_dir): a second run into the same
    directory stops at once instead of mixing its files with ours, and taking the lock sweeps
    the temporary files of a killed run (never those of a live one)."""
    _check_options(size, shard_size, workers, quality, encoding)
    out = Path(out)
    _check_foreign(out)  # before the lock, which would leave a .lock file in it
    with locked_dir(out, "output directory"):
        # A directory is recorded by its absolute path, so that a resume from elsewhere matches.
        src = str(Path(src).resolve()) if Path(src).is_dir() else str(src)
        source = {"src": src, "seed": seed, "val_labels": str(val_labels) if val_labels else None,
                  "size": size}
        sets = _open_splits(source)
        first = sets["train"]
        if first.image_size != size:  # a prepared source: its images are at its own size
            raise AlexNetError(f"{src} is prepared at {first.image_size}×{first.image_size}: give "
                               f"--size {first.image_size} to re-prepare it", option="size")
        config = {"format": FORMAT, "version": VERSION, **source, "encoding": encoding,
                  "quality": quality, "shard_size": shard_size, "classes": first.classes,
                  "channels": first.channels, "counts": {k: len(v) for k, v in sets.items()}}
        _check_config(out, config)
        manifest, done = _finished(out), 0
        # A second pass only where a damaged manifest hid the state of the shards: the new one
        # is checked like any other, and what is broken is redone.
        for _ in range(2):
            if manifest is not None:
                return manifest, done
            tasks = [(split, k) for split, s in sets.items()
                     for k in range(_num_shards(len(s), shard_size))
                     if not (out / _sidecar(split, k)).exists()]
            todo = sum(min(shard_size, len(sets[s]) - k * shard_size) for s, k in tasks)
            _run_tasks(out, [(config, str(out), split, k) for split, k in tasks], todo, workers,
                       progress)
            done += todo
            _finish(out, config)
            manifest = _finished(out)
        if manifest is None:
            raise DataError(f"the shards this run wrote into {out} fail their check: is the disk "
                            "sound?")
        return manifest, done


MAX_SIZE = 4096


def _check_options(size, shard_size, workers, quality, encoding) -> None:
    for name, value, least in (("size", size, 8), ("shard_size", shard_size, 1),
                               ("workers", workers, 0)):
        if value < least:
            raise AlexNetError(f"{name} must be >= {least}, got {value}", option=name)
    check_workers(workers)  # the same bound as the loader's: each is a process
    if size > MAX_SIZE:  # 256 is the paper's; a shard of 1024 images of 4096² is 48 GiB already
        raise AlexNetError(f"size must be <= {MAX_SIZE}, got {size}", option="size")
    if not 1 <= quality <= 100:
        raise AlexNetError(f"quality must be in 1..100, got {quality}", option="quality")
    if encoding not in ("raw", "jpeg"):
        raise AlexNetError(f"unknown format {encoding!r}: raw or jpeg", option="format")


def _check_foreign(out: Path) -> None:
    """Refuse a directory that is not ours before locking it, which would leave a .lock in it.
    One that has a .lock already is checked under the lock (_check_config), so that a second
    run finds the first one's lock rather than its temporary files."""
    if out.exists() and not out.is_dir():
        raise AlexNetError(f"{out} exists and is not a directory: choose another output directory")
    if out.is_dir() and not (out / CONFIG).exists() and not (out / LOCK_NAME).exists() and any(
            out.iterdir()):
        raise AlexNetError(f"{out} exists and is not an `alexnet prepare` output: choose another "
                           "output directory")


def _open_splits(source: dict) -> dict:
    sets, path = {}, Path(source["src"])
    for split in SPLITS:
        if split != "train" and path.is_dir():
            manifest = path / MANIFEST
            if manifest.exists() and split not in read_manifest(path)["splits"]:
                continue  # a prepared dataset without this split (re-preparing, e.g. raw->jpeg)
            if not manifest.exists() and not (path / split).exists():
                continue  # an ImageFolder tree without this split
        sets[split] = _source(source, split)
    return sets


_sources: dict = {}


def _source(source: dict, split: str):
    """The source split, opened once per process (workers reuse theirs for every shard)."""
    key = (json.dumps(source, sort_keys=True), split)
    if key not in _sources:
        _sources[key] = open_dataset(source["src"], split, seed=source["seed"],
                                     val_labels=source["val_labels"], image_size=source["size"])
    return _sources[key]


def _check_config(out: Path, config: dict) -> None:
    """Write the run's options, or check them against those of the run being resumed."""
    path = out / CONFIG
    if not path.exists():
        if any(p.name != LOCK_NAME for p in out.iterdir()):
            raise AlexNetError(f"{out} exists and is not an `alexnet prepare` output: choose "
                               "another output directory")
        atomic_write_json(path, config)
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise DataError(f"{path} is damaged (not JSON): delete {out} or choose another output "
                        "directory") from None
    if old != config:
        raise AlexNetError(f"{out} holds a preparation with other options or another source "
                           f"(see {path}): delete it or choose another output directory")


def _finished(out: Path) -> dict | None:
    """OUT's manifest if OUT is finished and whole, else None. A finished OUT that is not whole (a
    shard file deleted or cut short, a damaged manifest: what reading it reports, with the advice
    to run prepare again) is made unfinished, so that this run redoes what is broken: the broken
    shards' sidecars go first, then the manifest, so that a run killed in between still finds the
    manifest and checks again. A stat per raw shard; a JPEG shard's index is read."""
    if not (out / MANIFEST).exists():
        return None
    try:
        manifest = read_manifest(out)
    except DataError:
        manifest = None  # rewritten from the sidecars
    broken = [] if manifest is None else _broken_shards(out, manifest)
    if manifest is not None and not broken and all(
            (out / name).is_file() for name in [manifest["stats"]] + [
                s["labels"] for s in manifest["splits"].values()]):
        return manifest
    for name in broken:
        (out / name).unlink(missing_ok=True)
    (out / MANIFEST).unlink()
    return None


def _broken_shards(out: Path, manifest: dict) -> list[str]:
    """The sidecars of the shards that are missing or do not hold what the manifest says."""
    image = manifest["image_size"] ** 2 * manifest["channels"]
    return [_sidecar(split, k) for split, info in manifest["splits"].items()
            for k, shard in enumerate(info["shards"])
            if shard["file"] != shard_name(split, k, manifest["encoding"])
            or shard_fault(out / shard["file"], shard["count"], manifest["encoding"], image,
                           index=True)]


def _num_shards(n: int, shard_size: int) -> int:
    return (n + shard_size - 1) // shard_size


def _sidecar(split: str, k: int) -> str:
    return f"{split}-{k:05d}.npz"


def _run_tasks(out: Path, tasks: list, todo: int, workers: int,
               progress: bool | None) -> None:
    from tqdm import tqdm

    # disable=None: a bar on a terminal only
    bar = tqdm(total=todo, unit="img", desc="prepare", smoothing=0.05,
               disable=None if progress is None else not progress)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for task in tasks:
                bar.update(prepare_shard(task))
            return
        pool = mp.get_context("fork").Pool(min(workers, len(tasks)), _worker_init)
        try:
            for n in pool.imap_unordered(prepare_shard, tasks):
                bar.update(n)
            pool.close()  # done: the workers take their end-of-work message and exit
        except BaseException:
            pool.terminate()  # an error or Ctrl-C: SIGTERM the workers (what `with Pool` does
            pool.join()       # always, racing a worker that is taking its next task) ...
            sweep_temp(out)   # ... which ends them where they stand, mid-write too
            raise
        pool.join()
    finally:
        bar.close()


def _worker_init() -> None:
    torch.set_num_threads(1)  # the parallelism is across processes
    # Ctrl-C reaches the whole process group: the parent alone acts on it, and ends the workers.
    # Each worker's own KeyboardInterrupt printed a traceback, and could leave the pool's
    # result thread waiting on a dead worker: the parent hung in join() (3 times in 9).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def prepare_shard(task) -> int:
    """Read, encode and write one shard; returns the number of source images it covered."""
    config, out, split, k = task
    out = Path(out)
    imageset = _source({key: config[key] for key in ("src", "seed", "val_labels", "size")}, split)
    start = k * config["shard_size"]
    indices = np.arange(start, min(start + config["shard_size"], len(imageset)))
    acc = StatsAccumulator(config["size"], config["channels"]) if split == "train" else None
    labels, skipped, offsets = [], [], [0]
    data = out / shard_name(split, k, config["encoding"])
    with atomic_path(data) as tmp, open(tmp, "wb") as f:
        for i in range(0, len(indices), READ_BATCH):
            batch = indices[i:i + READ_BATCH]
            images, errors = imageset.read(batch)
            skipped += [f"{imageset.describe(j)}\t{why}" for j, why in errors]
            images, kept = drop_failed(images, batch, errors)
            images = images.numpy()
            labels += imageset.labels[kept].tolist()
            if acc is not None:
                acc.add(images)
            for img in images:
                f.write(img.tobytes() if config["encoding"] == "raw"
                        else _encode_jpeg(img, config["quality"]))
                offsets.append(f.tell())
    if config["encoding"] == "jpeg":
        _atomic_npy(data.with_suffix(".idx.npy"), np.asarray(offsets, np.int64))
    sidecar = {"labels": np.asarray(labels, np.int64), "skipped": np.asarray(skipped, dtype=str)}
    if acc is not None:
        sidecar.update(acc.state())
    atomic_write(out / _sidecar(split, k), lambda p: _savez(p, sidecar))  # last: shard done
    return len(indices)


def _encode_jpeg(img: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _atomic_npy(path: Path, array: np.ndarray) -> None:
    def write(p: Path):
        with open(p, "wb") as f:
            np.save(f, array)
    atomic_write(path, write)


def _finish(out: Path, config: dict) -> dict:
    """Gather the sidecars into labels, statistics and the report; write the manifest last."""
    splits, report, acc = {}, [], None
    for split, n in config["counts"].items():
        shards, labels = [], []
        for k in range(_num_shards(n, config["shard_size"])):
            z = _read_sidecar(out / _sidecar(split, k), with_stats=split == "train")
            labels.append(z["labels"])
            report += z["skipped"].tolist()
            shards.append({"file": shard_name(split, k, config["encoding"]),
                           "count": len(z["labels"])})
            if split == "train":
                part = StatsAccumulator.from_state(z)
                acc = part if acc is None else (acc.merge(part) or acc)
        labels_file = f"{split}-labels.npy"
        _atomic_npy(out / labels_file, np.concatenate(labels))
        splits[split] = {"count": int(sum(s["count"] for s in shards)), "labels": labels_file,
                         "shards": shards}
    total = sum(config["counts"].values())
    # The report first: the error below sends the reader to it.
    atomic_write_text(out / REPORT, f"# {len(report)} of {total} source images could not be "
                      "read and were skipped\n" + "".join(line + "\n" for line in report))
    if splits["train"]["count"] == 0:
        raise DataError(f"no readable training images in {config['src']} (see {out / REPORT})")
    save_stats(out / STATS, acc.result())
    manifest = {"format": FORMAT, "version": VERSION, "source": config["src"],
                "encoding": config["encoding"], "quality": config["quality"],
                "image_size": config["size"], "channels": config["channels"],
                "classes": config["classes"], "splits": splits, "stats": STATS,
                "report": REPORT, "skipped": len(report)}
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def _read_sidecar(path: Path, with_stats: bool) -> dict:
    """A shard's sidecar, all in memory. Damaged (a disk error: it is written atomically), the
    shard is redone by deleting the sidecar and running the same command again."""
    keys = ("labels", "skipped") + (("count", "sum_image", "sum_pixel", "sum_outer")
                                    if with_stats else ())
    try:
        with load_numpy(path) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e}): delete it and run the "
                        "same command again to redo that shard") from None
