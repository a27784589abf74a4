"""A loader's batches augmented where the model runs, the next one prepared while the caller steps.

Where the loader augments (its transform, in the CPU workers) its batches pass through. Otherwise
(training on a GPU) each batch is moved to the device, copied or decoded there from JPEG bytes
(Loader.to_device), and augmented there with the loader's generator for that batch
(Augment.train): the same crops, flips and colours as the workers would draw.

Why a thread, one batch ahead. Done in the training loop, that work ran between one step's
`loss.item()` and the next step's first kernel, with the GPU idle: the copy of a batch (25 MB of
uint8 at batch 128) sat in the training stream's queue, and torchvision's GPU decode waits on the
host until its batch is decoded. On the H200 (session 27) training from prepared shards ran at
74-88% of `bench model`'s rate from raw shards, and at the rate of decoding and stepping one after
the other from JPEG shards. Here a thread prepares batch k+1 on a CUDA stream of its own while
the caller steps on batch k; the caller's stream waits only for an event recorded after the
batch's last kernel. Torch's ops, `.item()` and the loader's queue release the GIL, so the
thread's Python runs while the caller waits for its step.

The first batch is read and prepared in the caller's thread, so that a loader's worker processes
are forked from it as before; the generator is taken in the thread that read the batch (it is
the one of the batch last read), and batches are prepared in order. An error in the thread (a
JPEG that does not decode) is raised in the caller, as itself; a caller that stops early (or
raises) stops the thread before going on. At most `ahead` batches wait prepared: each holds its
augmented images in the device's memory.
"""
from __future__ import annotations

import queue
import threading

import torch

from .prepared import kept_stream

_END = object()
# The devices whose batches a thread prepares. Not the CPU (`--decode device` there): the thread
# would share the step's cores, and it measured no faster, 0.926-1.019x over seven alternating
# rounds on 2 cores (BENCHMARKS.md, session 28; the tests run it there by adding "cpu"). Not
# MPS: two threads running MPS ops at once have crashed inside Metal.
THREADED = ("cuda",)


def augmented(loader, augment, ahead: int = 1):
    """Yields (images, labels) for each batch of `loader`: augmented by `augment` on its device
    unless the loader has done it (its transform); `ahead` batches prepared in advance on a thread
    (0, or a device not in THREADED: none, each prepared when asked for)."""
    if loader.transform is not None:
        yield from loader
        return

    def prepare(images, labels, generator):
        return augment.train(loader.to_device(images), generator=generator), labels

    batches, handed = iter(loader), False
    try:
        if ahead < 1 or loader.device is None or loader.device.type not in THREADED:
            for images, labels in batches:
                yield prepare(images, labels, loader.generator())
            return
        first = next(batches, None)
        if first is None:
            return
        first = prepare(*first, loader.generator())  # before the thread reads the second
        handed = True
    finally:
        if not handed:  # else the thread reads on from here, and closes it when it ends
            batches.close()
    with _Ahead(batches, lambda images, labels: prepare(images, labels, loader.generator()),
                ahead, loader.device) as rest:
        yield first
        yield from rest


class _Ahead:
    """Iterating over it yields prepare(*item) for each item of `items` (an iterator it closes when
    done), computed by a thread (on a CUDA stream of its own where `device` is CUDA) at most
    `depth` items ahead of the caller."""

    def __init__(self, items, prepare, depth: int, device):
        self.items, self.prepare = items, prepare
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        # A new thread starts on CUDA device 0: it is told the caller's (DDP's rank's) device.
        if self.cuda and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.done = queue.SimpleQueue()           # prepared items, then _END or an exception
        self.room = threading.Semaphore(depth)    # taken by a batch prepared, freed as it is taken
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="alexnet-ahead", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()  # it sees the stop within 0.1 s, or once its current batch is ready

    def __iter__(self):
        while True:
            item = self.done.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            self.room.release()
            (images, labels), event = item
            if self.cuda:  # the caller's stream waits for the batch, its memory for that stream
                stream = torch.cuda.current_stream(self.device)
                stream.wait_event(event)
                images.record_stream(stream)
            yield images, labels

    def _run(self) -> None:
        try:
            stream = None
            if self.cuda:
                torch.cuda.set_device(self.device)
                stream = kept_stream(self.device)
            with torch.cuda.stream(stream):  # (a no-op for None)
                while self._room():  # before reading: a caller that stops waits for no read
                    item = next(self.items, _END)
                    if item is _END:
                        break
                    done = self.prepare(*item)
                    self.done.put((done, stream.record_event() if self.cuda else None))
            self.done.put(_END)
        except BaseException as e:  # raised in the caller's thread, as itself
            self.done.put(e)
        finally:  # here, not by the caller: this thread may be inside it until now
            self.items.close()

    def _room(self) -> bool:
        """Wait for room for one more prepared item; False once told to stop."""
        while not self.room.acquire(timeout=0.1):
            if self.stop.is_set():
                return False
        return not self.stop.is_set()
