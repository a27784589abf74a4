"""data/ahead.py: the batches augmented where the model runs, the next one prepared on a thread
while the caller steps. The thread runs only for CUDA; here the CPU stands in for it (the
`threaded_cpu` fixture), and the stream and event handling runs in the CUDA test at the end (in
scripts/cuda_check.sh): the same values as preparing each batch when asked, the thread really
ahead, errors raised in the caller as themselves, and no thread left behind. By default the CPU
and other devices prepare each batch when asked."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from alexnet.data import Loader, open_dataset
from alexnet.data import prepare as prep
from alexnet.data import prepared
from alexnet.data import ahead as ahead_module
from alexnet.data.ahead import augmented
from alexnet.data.augment import Augment
from alexnet.errors import DataError


@pytest.fixture(scope="module")
def raw_shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("ahead") / "raw"
    prep.prepare("shapes:20:4", out, shard_size=8, workers=0, progress=False)
    return out


@pytest.fixture
def threaded_cpu(monkeypatch):
    """The thread on the CPU too, as it runs for CUDA."""
    monkeypatch.setattr(ahead_module, "THREADED", ("cuda", "cpu"))


def _loader(raw_shards, **kw):
    data = open_dataset(raw_shards, "train")
    # device="cpu" and no transform: the accelerator's path (copied, then augmented), on the CPU
    return Loader(data, 4, shuffle=True, seed=3, device="cpu", **kw), Augment(
        data.stats(), crop_size=224, device=torch.device("cpu"))


def _threads():
    return [t for t in threading.enumerate() if t.name == "alexnet-ahead"]


def test_ahead_gives_what_each_batch_prepared_when_asked_gives(threaded_cpu, raw_shards):
    # With the loader's default worker count; and what the loader's own transform (the CPU path,
    # in its workers) gives: the same generator for each batch.
    loader, augment = _loader(raw_shards)
    in_workers = Loader(loader.imageset, 4, shuffle=True, seed=3, transform=augment.train)
    for epoch in range(2):
        loader.set_epoch(epoch)
        in_workers.set_epoch(epoch)
        ahead = list(augmented(loader, augment))
        asked = list(augmented(loader, augment, ahead=0))
        assert len(ahead) == len(asked) == 5
        for (a, la), (b, lb), (c, lc) in zip(ahead, asked, in_workers):
            assert torch.equal(a, b) and torch.equal(a, c)
            assert torch.equal(la, lb) and torch.equal(la, lc)
    assert not torch.equal(ahead[0][0], ahead[1][0])
    loader.close()
    in_workers.close()
    assert not _threads()


class _Counting:
    """An Augment whose train() counts the batches it has prepared."""

    def __init__(self, augment):
        self.augment, self.prepared = augment, 0

    def train(self, images, generator=None):
        out = self.augment.train(images, generator=generator)
        self.prepared += 1
        return out


def _wait_for(condition, seconds=5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


@pytest.mark.parametrize("ahead", [1, 0])
def test_the_next_batch_is_prepared_while_the_caller_holds_this_one(threaded_cpu, raw_shards,
                                                                    ahead):
    loader, augment = _loader(raw_shards, workers=0)
    counting = _Counting(augment)
    batches = augmented(loader, counting, ahead=ahead)
    next(batches)
    # The caller now "steps" on batch 1: the thread prepares batch 2 meanwhile, and no further
    # (ahead=1: one in the queue, then it waits for room); without it, nothing happens.
    if ahead:
        assert _wait_for(lambda: counting.prepared == 2)
    time.sleep(0.2)
    assert counting.prepared == 1 + ahead
    batches.close()
    assert not _threads()


def test_an_error_in_the_thread_is_raised_in_the_caller_as_itself(threaded_cpu, raw_shards,
                                                                  monkeypatch):
    loader, augment = _loader(raw_shards, workers=0)
    copy = Loader.to_device
    calls = []

    def damaged(self, images):
        calls.append(1)
        if len(calls) == 3:  # batch 3, prepared on the thread
            raise DataError("a JPEG of this batch does not decode on cpu: damaged")
        return copy(self, images)

    monkeypatch.setattr(Loader, "to_device", damaged)
    got = []
    with pytest.raises(DataError, match="does not decode"):
        for x, _ in augmented(loader, augment):
            got.append(x)
    assert len(got) == 2 and not _threads()
    monkeypatch.setattr(Loader, "to_device", copy)
    assert len(list(augmented(loader, augment))) == 5  # the loader reads on, next time


def test_a_caller_that_stops_early_stops_the_thread(threaded_cpu, raw_shards):
    loader, augment = _loader(raw_shards)  # default workers
    for _, _ in augmented(loader, augment):
        break  # the generator is closed here (its last reference goes)
    assert _wait_for(lambda: not _threads())
    assert len(list(augmented(loader, augment))) == 5
    loader.close()


def test_a_loader_that_augments_passes_its_batches_through(raw_shards):
    loader, augment = _loader(raw_shards, workers=0)
    loader.transform = augment.train
    batches = augmented(loader, None)  # nothing to augment with: never called
    assert len(list(batches)) == 5 and not _threads()


class _Slow:
    """An Augment that first keeps the stream it runs on busy (tens of millions of GPU cycles,
    about 10 ms): the thread's, when it prepares batches."""

    def __init__(self, augment):
        self.augment = augment

    def train(self, images, generator=None):
        torch.cuda._sleep(20_000_000)
        return self.augment.train(images, generator=generator)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_on_cuda_the_caller_reads_each_batch_whole(tmp_path, encoding):
    """On a GPU the thread copies (raw) or decodes (JPEG, nvJPEG) and augments on a stream of its
    own. Two hazards, each provoked by work kept queued, and the sums read back only at the end:
    - the thread's stream still busy when the caller reads (its stream must wait for the event);
    - the caller's step still queued when it drops a batch, which the thread's next one must not
      overwrite (record_stream).
    Each gives what preparing each batch when asked (on the caller's stream) gives, bit for bit.
    And the thread's stream is never nvJPEG's, however many streams torch's pool (32 a device,
    in turn) hands out to others."""
    out = tmp_path / encoding
    prep.prepare("shapes:40:4", out, shard_size=8, encoding=encoding, workers=0, progress=False)
    data = open_dataset(out, "train")
    cuda = torch.device("cuda")
    augment = Augment(data.stats(), crop_size=224, device=cuda)
    loader = Loader(data, 4, shuffle=True, seed=3, device=cuda, encoded=encoding == "jpeg")
    sums = {}
    for ahead, hazard in ((0, None), (1, "thread busy"), (1, "caller busy")):
        kept = []
        for x, _ in augmented(loader, _Slow(augment) if hazard == "thread busy" else augment,
                              ahead=ahead):
            if hazard == "caller busy":
                torch.cuda._sleep(20_000_000)  # the caller's step, queued before it reads x
            kept.append(x.double().sum(dim=(1, 2, 3)))
        sums[hazard] = torch.stack(kept).cpu()
    loader.close()
    assert sums[None].shape == (10, 4)
    assert torch.equal(sums["thread busy"], sums[None])
    assert torch.equal(sums["caller busy"], sums[None])
    here = torch.device("cuda", torch.cuda.current_device())
    decode = prepared._decode_stream(cuda)
    drawn = [torch.cuda.Stream(cuda) for _ in range(70)] + [prepared.kept_stream(here)]
    assert prepared.kept_stream(cuda) is prepared.kept_stream(here)
    assert all(s.cuda_stream != decode.cuda_stream for s in drawn)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_by_default_no_thread_off_cuda(raw_shards, device):
    # The CPU (no faster with it: the thread shares the step's cores), MPS (two threads running
    # its ops at once have crashed inside Metal) and any other device, which meta stands in for:
    # each batch prepared when asked, with the loader's default workers.
    data = open_dataset(raw_shards, "train")
    loader = Loader(data, 4, shuffle=True, seed=3, device=device)
    counting = _Counting(Augment(data.stats(), crop_size=224, device=torch.device(device)))
    batches = augmented(loader, counting)
    x, _ = next(batches)
    assert x.device.type == device and x.shape == (4, 3, 224, 224)
    time.sleep(0.2)
    assert counting.prepared == 1 and not _threads()
    assert len(list(batches)) == 4
    loader.close()
