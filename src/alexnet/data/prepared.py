"""Reading a dataset made by `alexnet prepare` (the format is described in alexnet.data.prepare).

Raw shards are memory-mapped: reading a batch is one copy per image out of the page cache, no
decoding. JPEG shards are decoded by libjpeg-turbo through torchvision, image by image, in the
loader (`decode_jpeg`); or, with `alexnet train --decode device`, the loader hands over each
image's bytes (`encoded`) and `decode_batch` decodes the whole batch where the model runs (nvJPEG
on a CUDA GPU, through torchvision.io.decode_jpeg), so that a GPU's loader workers only copy
bytes.
"""
from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import AlexNetError, DataError, first_line
from .imageset import ImageSet, load_numpy, load_stats, new_batch

FORMAT, VERSION = "alexnet-prepared", 1
MANIFEST, CONFIG, STATS, REPORT = "manifest.json", "prepare.json", "stats.npz", "report.txt"


def shard_name(split: str, k: int, encoding: str) -> str:
    return f"{split}-{k:05d}.{'u8' if encoding == 'raw' else 'jpg'}"


def looks_half_prepared(path: Path) -> bool:
    """An output directory of `alexnet prepare` that has no manifest yet (interrupted)."""
    return (path / CONFIG).exists() and not (path / MANIFEST).exists()


class Prepared(ImageSet):
    def __init__(self, root, split: str = "train"):
        self.root, self.split = Path(root), split
        manifest = read_manifest(self.root)
        if split not in manifest["splits"]:
            raise AlexNetError(f"{self.root} has no {split!r} split "
                               f"(it has: {', '.join(manifest['splits'])})")
        self.manifest = manifest
        self.classes = list(manifest["classes"])
        self.channels, self.image_size = manifest["channels"], manifest["image_size"]
        self.encoding = manifest["encoding"]
        info = manifest["splits"][split]
        self.labels = self._read_labels(self.root / info["labels"])
        self.shard_files = [s["file"] for s in info["shards"]]
        counts = np.array([s["count"] for s in info["shards"]], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])  # shard k holds starts[k]..[k+1]
        if self.starts[-1] != len(self.labels):
            raise DataError(f"{self.root}: {split} shards hold {self.starts[-1]} images but "
                            f"there are {len(self.labels)} labels")
        self._check_shards(counts)
        self._open = {}  # shard -> memmap (raw) or (memmap of bytes, offsets) (jpeg); per process

    def _read_labels(self, path: Path) -> np.ndarray:
        try:
            labels = load_numpy(path)
        except (OSError, ValueError, EOFError) as e:
            raise DataError(f"cannot read labels {path}: {type(e).__name__}: {e}") from None
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (
                len(labels) and not 0 <= labels.min() <= labels.max() < len(self.classes)):
            raise DataError(f"labels {path} are damaged: not 1-D integers in "
                            f"0..{len(self.classes) - 1}")
        return labels.astype(np.int64)

    def _check_shards(self, counts: np.ndarray) -> None:
        """Checked here, in the opening process, by their sizes (a stat each, no reading): a
        shard found truncated later, in a loader worker, would stop training mid-epoch."""
        image = self.image_size * self.image_size * self.channels
        for name, count in zip(self.shard_files, counts.tolist()):
            fault = shard_fault(self.root / name, count, self.encoding, image)
            if fault:
                raise DataError(f"{fault}: {redo_advice(self.root)}")

    def __getstate__(self):
        # Memmaps would pickle as copies of the data: reopen them in the other process instead.
        return {**self.__dict__, "_open": {}}

    def train_split(self) -> "Prepared":
        return self if self.split == "train" else Prepared(self.root, "train")

    def stats(self) -> dict[str, torch.Tensor]:
        # Computed over the whole training split by `prepare`, stored with the data.
        if not hasattr(self, "_stats"):
            self._stats = load_stats(self.root / self.manifest["stats"],
                                     (self.image_size, self.image_size, self.channels))
        return self._stats

    def _shard(self, k: int):
        if k not in self._open:
            path = self.root / self.shard_files[k]
            count = int(self.starts[k + 1] - self.starts[k])
            if self.encoding == "raw":
                shape = (count, self.image_size, self.image_size, self.channels)
                # mode "c" (copy-on-write) maps the file read-only on disk but gives writable
                # arrays, which torch.from_numpy takes without a warning; nothing writes to them.
                self._open[k] = np.memmap(path, np.uint8, "c", shape=shape) if count else \
                    np.zeros(shape, np.uint8)
            else:
                self._open[k] = _jpeg_shard(path, count)
        return self._open[k]

    def _load(self, indices: np.ndarray) -> torch.Tensor:
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} images")
        s = self.image_size
        batch = new_batch((len(indices), s, s, self.channels))
        out = batch.numpy()  # the same memory, for NumPy's gathers
        shards = np.searchsorted(self.starts, indices, side="right") - 1
        for k in np.unique(shards):
            rows = np.flatnonzero(shards == k)
            local = indices[rows] - self.starts[k]
            if self.encoding == "raw":
                out[rows] = self._shard(k)[local]  # one gather per shard out of the page cache
            else:
                data, offsets = self._shard(k)
                for row, j in zip(rows.tolist(), local.tolist()):
                    try:
                        batch[row] = decode_jpeg(data[offsets[j]:offsets[j + 1]], self.channels)
                    except Exception as e:  # as any decoder might, on bad bytes
                        raise DataError(f"shard {self.root / self.shard_files[k]} is damaged: "
                                        f"image {j} does not decode ({_reason(e)})"
                                        ) from None
        return batch


    def encoded(self, indices) -> JpegBatch | None:
        """JPEG shards: the images' bytes as one JpegBatch, for `decode_batch`. Raw: None."""
        if self.encoding != "jpeg":
            return None
        indices = np.asarray(indices, dtype=np.int64)
        shards = np.searchsorted(self.starts, indices, side="right") - 1
        files = []
        for k, i in zip(shards.tolist(), indices.tolist()):
            data, offsets = self._shard(k)
            j = i - self.starts[k]
            files.append(data[offsets[j]:offsets[j + 1]])
        sizes = tuple(len(f) for f in files)
        data = np.concatenate(files) if files else np.zeros(0, np.uint8)
        return JpegBatch(torch.from_numpy(data), sizes)

    def views(self, indices) -> list[torch.Tensor] | None:
        """Raw shards: the images as (S, S, C) tensors that are views of the mapped files, no
        copy. Augment crops straight out of them, so a batch of 256×256 images is never
        materialised (the Loader uses this when it runs the augmentation). JPEG: None."""
        if self.encoding != "raw":
            return None
        indices = np.asarray(indices, dtype=np.int64)
        shards = np.searchsorted(self.starts, indices, side="right") - 1
        return [torch.from_numpy(self._shard(k)[i - self.starts[k]])
                for k, i in zip(shards.tolist(), indices.tolist())]


def redo_advice(root: Path) -> str:
    # True advice: `alexnet prepare` checks a finished directory's shards and redoes broken ones.
    return f"rerun the `alexnet prepare` command that made {root}"


def shard_fault(path: Path, count: int, encoding: str, image_bytes: int,
                index: bool = False) -> str | None:
    """Why the shard `path` cannot hold `count` images of `image_bytes` pixels, or None: a file
    missing, a raw shard of another size, and with `index` (which reads the index file) a JPEG
    shard that does not match its index. `Prepared` calls it without reading; `prepare` with."""
    files = [path] if encoding == "raw" else [path, path.with_suffix(".idx.npy")]
    for f in files:
        if not f.is_file():
            return f"shard file {f} is missing"
    size = path.stat().st_size
    if encoding == "raw" and size != count * image_bytes:
        return (f"shard {path} is truncated or damaged: {size} bytes, expected "
                f"{count * image_bytes} ({count} images)")
    if encoding == "jpeg" and index:
        try:
            _jpeg_shard(path, count)
        except (DataError, OSError) as e:
            return str(e)
    return None


def _jpeg_shard(path: Path, count: int):
    """(the shard's bytes, memory-mapped; its int64 offsets), checked against each other."""
    idx = path.with_suffix(".idx.npy")
    try:
        offsets = load_numpy(idx)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {idx}: {type(e).__name__}: {e}; "
                        f"{redo_advice(path.parent)}") from None
    size = path.stat().st_size
    if (offsets.shape != (count + 1,) or offsets.dtype.kind not in "iu" or offsets[0] != 0
            or np.any(np.diff(offsets) < 0) or offsets[-1] != size):
        said = f"{offsets.ravel()[-1]}" if offsets.size else "nothing"  # an empty index too
        raise DataError(f"shard {path} does not match its index {idx.name}: {size} bytes, the "
                        f"index says {said} for {count} images; {redo_advice(path.parent)}")
    # Copy-on-write, as raw shards: writable arrays, which torch.from_numpy takes without a
    # warning (decode_jpeg); nothing writes to them.
    data = np.memmap(path, np.uint8, "c") if size else np.zeros(0, np.uint8)
    return data, offsets


def read_manifest(root: Path) -> dict:
    """The manifest of a prepared directory, checked for every key this module reads."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or \
            manifest.get("version") != VERSION:
        raise DataError(f"{root} is not an {FORMAT} v{VERSION} directory ({path})")
    try:
        ok = (isinstance(manifest["classes"], list) and manifest["channels"] in (1, 3)
              and _is_int(manifest["image_size"], 1) and manifest["encoding"] in ("raw", "jpeg")
              and isinstance(manifest["stats"], str) and isinstance(manifest["splits"], dict)
              and "train" in manifest["splits"]
              and all(isinstance(s["labels"], str) and isinstance(s["shards"], list)
                      and all(isinstance(h["file"], str) and _is_int(h["count"], 0)
                              for h in s["shards"]) for s in manifest["splits"].values()))
    except (KeyError, TypeError) as e:
        raise DataError(f"{path} is damaged: {type(e).__name__} {e}; prepare the dataset "
                        "again") from None
    if not ok:
        raise DataError(f"{path} is damaged (a value of the wrong kind); prepare the dataset "
                        "again")
    return manifest


def _is_int(value, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def decode_jpeg(buf: np.ndarray, channels: int) -> torch.Tensor:
    """One JPEG file's bytes (uint8) decoded on the CPU: (S, S, C) uint8, a view of (C, S, S).

    torchvision's decoder, not Pillow's (until session 30): both run libjpeg-turbo and gave the
    same pixels, but torchvision's decoded 1.6-1.9x the images a second on one core
    (scripts/jpeg_decoders.py; BENCHMARKS.md, "Data loader"). It reads the bytes where they lie
    and writes one tensor, where Pillow copied the bytes, made an image, converted it and was
    copied out. A loader worker of a GPU run does little else. Damaged bytes raise, as Pillow's
    did (a RuntimeError: truncated, not a JPEG)."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as tv_decode_jpeg  # torchvision: slow to import

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    return tv_decode_jpeg(torch.from_numpy(buf), mode=mode).permute(1, 2, 0)


def _reason(e: Exception) -> str:
    """A decoder's error in a few words: torchvision's start with the C++ file and line it was
    raised at (`decode_jpeg, /__w/vision/.../decode_jpeg.cpp:171, Not a JPEG file: ...`)."""
    return re.sub(r"^decode_jpeg, \S+:\d+, ", "", first_line(e)) or type(e).__name__


@dataclass(frozen=True, eq=False)  # eq=False: no == over tensors
class JpegBatch:
    """A batch of JPEG files: their bytes one after another, and each file's length. One tensor
    crosses from a loader worker to the training process (one shared-memory segment, one file
    descriptor; the sizes travel pickled), where a list of B tensors crossed as B: that cost the
    training process 30-37× the CPU time per batch and held B descriptors open per batch in
    flight (BENCHMARKS.md, session 17)."""
    data: torch.Tensor        # uint8 (total bytes,)
    sizes: tuple[int, ...]    # each file's length, in order

    def __len__(self) -> int:
        return len(self.sizes)

    def files(self) -> list[torch.Tensor]:
        """Each file's bytes: 1-D views of `data`, no copy."""
        return list(torch.split(self.data, list(self.sizes)))


def decode_batch(encoded: JpegBatch | list[torch.Tensor], channels: int, device) -> torch.Tensor:
    """A batch of JPEGs (a JpegBatch, or a list of byte tensors) decoded on `device` in one call
    (nvJPEG on CUDA; libjpeg-turbo on the CPU): uint8 (B, S, S, C), the layout every loader batch
    has.

    torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec (not a dependency
    here); they still work, and its warning is silenced (_QUIET) rather than printed every epoch."""
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as tv_decode_jpeg  # torchvision: slow to import

    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    device = torch.device(device)
    if isinstance(encoded, JpegBatch):
        encoded = encoded.files()
    side = _decode_stream(device)
    try:
        with torch.cuda.stream(side):  # (a no-op for None)
            batch = torch.stack(tv_decode_jpeg(encoded, mode=mode, device=device))
    except RuntimeError as e:
        raise DataError(f"a JPEG of this batch does not decode on {device}: {_reason(e)}"
                        ) from None
    if side is not None:
        # nvJPEG's hardware decoder writes its outputs without waiting for the stream it is
        # given (pytorch/vision#9606): memory the training stream freed but still reads must
        # never be handed to it. So it decodes on a stream of its own, whose memory pool the
        # training stream's frees do not reach; `side` is drained, so that nothing queued there
        # still reads a block the next decode may get; and the training stream waits for it.
        side.synchronize()
        torch.cuda.current_stream(device).wait_stream(side)
        batch.record_stream(torch.cuda.current_stream(device))
    return batch.permute(0, 2, 3, 1)


# The decoders' deprecation warning, silenced once for the process by its message: a
# warnings.catch_warnings() around each call would swap the process's filters, which another
# thread (data/ahead.py decodes on one) may be reading or changing meanwhile.
_QUIET = "The image decoding and encoding capabilities of TorchVision are deprecated"
warnings.filterwarnings("ignore", message=_QUIET, category=DeprecationWarning)

_STREAMS: dict[tuple[torch.device, int], "torch.cuda.Stream"] = {}


def kept_stream(device, priority: int = 0):
    """A CUDA stream of `device` (index None: the current one) and `priority`, the same one each
    call; None off CUDA. Its users here each have a priority of their own: the JPEG decode -1
    (high), the thread that prepares batches (data/ahead.py) 0. A stream drawn from torch's pool
    at each use would be handed out again (32 a device and priority, in turn), to another user;
    and the caching allocator keeps each stream's freed memory for that stream alone."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    device = torch.device("cuda", torch.cuda.current_device() if device.index is None
                          else device.index)
    if (device, priority) not in _STREAMS:
        _STREAMS[device, priority] = torch.cuda.Stream(device, priority=priority)
    return _STREAMS[device, priority]


def _decode_stream(device: torch.device):
    """The CUDA stream JPEG batches decode on, one per device; None off CUDA. High priority, a
    pool of streams nothing else here draws from: nvJPEG writes into memory its stream's frees
    return, so no other user's frees may reach it."""
    return kept_stream(device, priority=-1)
