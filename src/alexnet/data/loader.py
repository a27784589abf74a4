"""The loader: whole batches read in background worker processes, DDP-aware sampling.

Each worker call reads one whole batch with `imageset.get_batch(indices)` (a memmap slice, a batch
of decodes, or a batch of rendered shapes) rather than B single images collated afterwards, so the
per-image Python overhead of a classic Dataset/DataLoader disappears. torch's DataLoader runs those
calls in worker processes (one intra-op thread each, batches handed over in shared memory, in
order); this module decides which indices make each batch.

Sampling, as torch's DistributedSampler: every epoch has an order, a permutation drawn from
(seed, epoch) when shuffling, identical on all ranks; rank r takes every world_size-th index of it
starting at r, so the ranks' parts are disjoint. When N is not divisible by world_size the order
is padded by wrapping around (drop_last=False; a few images are seen twice per epoch) or cut
(drop_last=True), so every rank has the same number of batches and collective ops stay in step.
With drop_last=True the last incomplete batch of a rank is dropped too. For an exact evaluation
under DDP pass even=False: no padding, each image on exactly one rank, so ranks may differ by one
image (and one batch); reduce sums across ranks only after the loop. Call `set_epoch(e)` before
each epoch to reshuffle (iterating again without it repeats the order, as DistributedSampler does).

An optional `transform(images, generator)` runs in the workers, e.g. `Augment(...).train` when
training on the CPU; its generator is seeded from (seed, epoch, rank, batch number)
(`batch_generator`), so the augmentation is the same whatever the number of workers. Without a
transform (training on an accelerator, which augments there) `loader.generator()` gives the same
generator for the batch last yielded: a seed draws the same crops, flips and colours wherever they
are applied. With a transform, a set that offers
`views(indices)` (prepared raw shards) hands it a list of zero-copy (S, S, C) views instead of a
batch tensor, which Augment accepts: the crops then come straight out of the page cache. With
encoded=True (prepared JPEG shards, no transform) a batch is its images' JPEG bytes in one buffer
(prepared.JpegBatch), for the caller to decode where the model runs (prepared.decode_batch).

Unreadable files (an ImageFolder read straight from disk; prepared, Shapes and Fashion-MNIST sets
never fail) are dropped from their batch, images and labels alike, so they count in neither the
training loss nor the metrics; a batch can then be smaller than batch_size. An all-unreadable batch
is skipped, except under DDP (world_size > 1) with even=True (training), where it is yielded
empty so that the ranks keep the same number of steps. `loader.skipped` collects them in the main
process, {index: "file: reason"}, across epochs (each once), for the caller to report. An AlexNetError raised in a worker
(a damaged shard) is re-raised as itself in the main process, not wrapped in DataLoader's
multi-line message.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..errors import AlexNetError
from ..io import close_inherited_locks
from ..machine import most_per_core
from .imageset import ImageSet, drop_failed
from .prepared import decode_batch


def batch_generator(seed: int, epoch: int, rank: int, k: int) -> torch.Generator:
    """The CPU generator that augments batch k of `epoch` on `rank`: one stream per batch, so the
    draws depend neither on which process reads the batch nor on where it is augmented."""
    state = np.random.SeedSequence([seed, epoch, rank, k]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def auto_workers(device=None) -> int:
    """The worker count when none is given (default_workers() for no device). On the CPU the
    step's threads already take every core, so a worker process can only take cycles from them,
    and a step whose threads wait for one preempted thread loses more than the worker's share: on
    2 cores the training loop ran 1.04-1.10x faster with no workers than with 2 (BENCHMARKS.md,
    "The training loop against the step"), the main process reading and augmenting between steps
    with all its threads. With more cores, 2 workers (not measured beyond 2 cores). On an
    accelerator the CPU only feeds it: default_workers()."""
    if device is not None and torch.device(device).type == "cpu":
        return 0 if (os.cpu_count() or 1) <= 2 else 2
    return default_workers()


def check_workers(workers: int | None) -> None:
    """A worker count a machine can start: 0 .. 8 per core (machine.most_per_core)."""
    most = most_per_core()
    if workers is not None and not 0 <= workers <= most:
        raise AlexNetError(f"workers must be in 0..{most} (8 per core), got {workers}",
                           option="workers")


class Loader:
    def __init__(self, imageset: ImageSet, batch_size: int, *, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_last: bool = False,
                 workers: int | None = None, prefetch: int = 2, transform=None,
                 pin_memory: bool | None = None, even: bool = True, encoded: bool = False,
                 device=None):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in 0..{world_size - 1}")
        self.imageset, self.batch_size = imageset, batch_size
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.drop_last, self.transform, self.even = drop_last, transform, even
        # Prepared raw shards have encoded() too, which returns None: no bytes to decode.
        if encoded and (transform is not None or getattr(imageset, "encoded", None) is None
                        or getattr(imageset, "encoding", "jpeg") != "jpeg"):
            raise ValueError("encoded=True needs a set with JPEG bytes (encoded()) and no "
                             "transform")
        self.encoded = encoded
        # Where the batches go (to_device), and what sets the default worker count.
        self.device = None if device is None else torch.device(device)
        check_workers(workers)
        self.workers = auto_workers(device) if workers is None else workers
        # Pinned batches by default where they go to a GPU: a copy from pageable memory stalls
        # the host until the GPU's queue drains, then runs at a fraction of the bus's speed.
        if pin_memory is None:
            pin_memory = self.device is not None and self.device.type == "cuda" and not encoded
        self.prefetch, self.pin_memory = prefetch, pin_memory
        self.epoch = 0
        self.skipped: dict[int, str] = {}  # unreadable images met so far: index -> "file: why"
        self._loader = None
        self._last = None  # (epoch, batch number) of the batch last yielded

    def generator(self) -> torch.Generator:
        """The augmentation generator of the batch last yielded, for a caller that augments it
        (the transform, when there is one, was handed the same)."""
        if self._last is None:
            raise RuntimeError("generator() before the first batch")
        epoch, k = self._last
        return batch_generator(self.seed, epoch, self.rank, k)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def to_device(self, images) -> torch.Tensor:
        """A batch of this loader on its device: decoded there from JPEG bytes (encoded), or
        copied."""
        if self.encoded:
            return decode_batch(images, self.imageset.channels, self.device)
        return images.to(self.device, non_blocking=True)

    @property
    def per_rank(self) -> int:
        """Images each rank sees per epoch (including wrap-around padding)."""
        n = len(self.imageset)
        if not self.even:
            return len(range(self.rank, n, self.world_size))
        return n // self.world_size if self.drop_last else math.ceil(n / self.world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return math.ceil(self.per_rank / self.batch_size)

    def indices(self, epoch: int | None = None) -> np.ndarray:
        """This rank's indices for `epoch` (default: the current one), in batch order."""
        epoch = self.epoch if epoch is None else epoch
        n = len(self.imageset)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
        else:
            order = np.arange(n)
        total = self.per_rank * self.world_size if self.even else n
        if total > n:  # pad by wrapping around (np.resize repeats from the start)
            order = np.resize(order, total)
        mine = order[:total][self.rank::self.world_size]
        if self.drop_last:
            mine = mine[:len(self) * self.batch_size]
        return mine.astype(np.int64)

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        mine = self.indices(epoch)
        return [mine[i:i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def __iter__(self):
        epoch = self.epoch
        tasks = [(epoch, k, b) for k, b in enumerate(self.batches(epoch))]
        if self.workers == 0:
            read = _ReadBatch(self)
            results = (read[task] for task in tasks)
        else:
            results = self._dataloader(tasks)
        for result in results:
            if isinstance(result, AlexNetError):  # raised in a worker (_ReadBatch.__getitem__)
                self._stop(results)
                raise result
            k, images, labels, failed = result
            for i, why in failed:
                self.skipped.setdefault(i, why)
            if len(labels) == 0 and (self.world_size == 1 or not self.even):
                continue  # nothing readable; a DDP training rank must still take the step
            self._last = epoch, k
            yield images, labels

    def _stop(self, results) -> None:
        """Shut the workers down now, before raising: the exception's traceback holds this frame
        (a reference cycle), and DataLoader's shutdown run later by the garbage collector was
        measured to wait 5 s per worker."""
        results.close()
        self.close()

    def close(self) -> None:
        """Stop the workers now, not when the garbage collector frees this loader (its shutdown
        of them then waits 5 s a worker). A later iteration starts new workers."""
        self._loader = None  # the last reference to the DataLoader: it stops its workers

    def _dataloader(self, tasks):
        # Persistent workers: forking and warming up (e.g. the shapes texture bank) once, not
        # once per epoch. The task list is handed over per epoch through the sampler.
        if self._loader is None:
            self._sampler = _Tasks()
            self._loader = torch.utils.data.DataLoader(
                _ReadBatch(self), batch_size=None, sampler=self._sampler,
                num_workers=self.workers, prefetch_factor=self.prefetch,
                persistent_workers=True, pin_memory=self.pin_memory,
                worker_init_fn=_worker_started,
                # The workers' base seed is drawn from this generator, not from torch's global
                # one: drawing from the global one would shift the dropout masks of a resumed
                # run, whose first epoch creates the workers at another point of the sequence.
                generator=torch.Generator().manual_seed(self.seed))
        self._sampler.tasks = tasks
        yield from self._loader


def _worker_started(worker_id: int) -> None:
    close_inherited_locks()  # the run directory's lock stays the main process's alone


class _Tasks(torch.utils.data.Sampler):
    """The (epoch, batch number, indices) of one epoch; replaced before each iteration."""

    def __init__(self):
        self.tasks = []

    def __iter__(self):
        return iter(list(self.tasks))

    def __len__(self):
        return len(self.tasks)


class _ReadBatch(torch.utils.data.Dataset):
    """What a worker does for one task: read the batch, optionally transform it."""

    def __init__(self, loader: Loader):
        self.imageset, self.transform = loader.imageset, loader.transform
        self.seed, self.rank, self.encoded = loader.seed, loader.rank, loader.encoded

    def __getitem__(self, task):
        """(batch number, images, labels, [(index, "file: why") of the unreadable images
        dropped]), or, in a worker, the AlexNetError that reading raised: DataLoader would re-raise
        it wrapped in a multi-line message of its own, which no longer says what went wrong on its
        first line."""
        try:
            return self._read(task)
        except AlexNetError as e:
            if torch.utils.data.get_worker_info() is None:
                raise
            return e

    def _read(self, task):
        epoch, k, indices = task
        if self.encoded:  # each image's bytes, decoded by the caller (prepared.decode_batch)
            return k, self.imageset.encoded(indices), torch.from_numpy(
                self.imageset.labels[indices]), []
        views = getattr(self.imageset, "views", None)
        images = views(indices) if views is not None and self.transform is not None else None
        failed = []
        if images is None:
            images, indices, failed = self._batch(indices)
        labels = torch.from_numpy(self.imageset.labels[indices])
        if self.transform is not None:
            g = batch_generator(self.seed, epoch, self.rank, k)
            images = self.transform(images, generator=g)
        return k, images, labels, failed

    def _batch(self, indices):
        """The readable images of a batch, their indices, and the unreadable ones described."""
        read = getattr(self.imageset, "read", None)
        if read is None:  # a duck-typed set with get_batch only: it cannot report failures
            return self.imageset.get_batch(indices), indices, []
        images, errors = read(indices)
        if not errors:
            return images, indices, []
        images, indices = drop_failed(images, indices, errors)
        describe = getattr(self.imageset, "describe", lambda i: f"image {i}")
        return images, indices, [(int(i), f"{describe(i)}: {why}") for i, why in errors]
