"""The loader: disjoint rank shares, per-epoch reshuffles, equal batch counts, worker processes."""
import os

import numpy as np
import pytest
import torch

from alexnet.data import Loader, open_dataset


class Numbers:
    """A duck-typed ImageSet whose image i is filled with i (so batches tell what they hold)."""

    classes = ["even", "odd"]

    def __init__(self, n):
        self.labels = np.arange(n, dtype=np.int64) % 2

    def __len__(self):
        return len(self.labels)

    def get_batch(self, indices):
        i = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return (i % 256).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 4, 4, 1).clone()


@pytest.mark.parametrize("n,world,drop_last", [(10, 3, False), (10, 3, True), (12, 4, False),
                                               (7, 1, False)])
def test_ranks_are_disjoint_and_even(n, world, drop_last):
    loaders = [Loader(Numbers(n), 2, shuffle=True, seed=1, rank=r, world_size=world,
                      drop_last=drop_last, workers=0) for r in range(world)]
    parts = [ld.indices() for ld in loaders]
    assert len({len(ld) for ld in loaders}) == 1  # same number of batches on every rank
    assert len({len(p) for p in parts}) == 1
    flat = np.concatenate(parts)
    if drop_last:
        assert len(set(flat.tolist())) == len(flat)  # nothing twice
        assert len(flat) >= n - world - world * 2  # at most one cut per rank and batch
    else:
        assert set(flat.tolist()) == set(range(n))  # everything, ...
        assert len(flat) - n < world  # ... and only the wrap-around padding twice
        starts = [set(p[: len(p) - 1].tolist()) for p in parts]  # without the possible pad
        for a in range(world):
            for b in range(a + 1, world):
                assert not starts[a] & starts[b]


def test_uneven_split_for_exact_evaluation():
    parts = [Loader(Numbers(10), 3, shuffle=False, rank=r, world_size=3, even=False,
                    workers=0).indices() for r in range(3)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]


def test_reshuffled_per_epoch_and_same_on_all_ranks():
    ld = Loader(Numbers(50), 5, shuffle=True, seed=3, workers=0)
    e0, e1 = ld.indices(0), ld.indices(1)
    assert sorted(e0.tolist()) == sorted(e1.tolist()) == list(range(50))
    assert not np.array_equal(e0, e1)
    assert np.array_equal(e0, Loader(Numbers(50), 5, shuffle=True, seed=3).indices(0))
    assert not np.array_equal(e0, Loader(Numbers(50), 5, shuffle=True, seed=4).indices(0))
    # all ranks derive the same epoch order: their shares interleave it exactly
    ranks = [Loader(Numbers(50), 5, shuffle=True, seed=3, rank=r, world_size=2).indices(1)
             for r in range(2)]
    assert np.array_equal(np.stack(ranks, 1).ravel(), e1)
    assert np.array_equal(Loader(Numbers(7), 2, shuffle=False).indices(5), np.arange(7))


def test_iteration_yields_the_batches_it_says():
    ld = Loader(Numbers(11), 4, shuffle=True, seed=0, workers=0)
    ld.set_epoch(2)
    batches = list(ld)
    assert len(batches) == len(ld) == 3
    for (images, labels), idx in zip(batches, ld.batches(2)):
        assert images.dtype == torch.uint8 and images.shape[1:] == (4, 4, 1)
        assert images[:, 0, 0, 0].tolist() == idx.tolist()
        assert labels.dtype == torch.int64 and labels.tolist() == (idx % 2).tolist()
    assert len(list(Loader(Numbers(11), 4, shuffle=False, drop_last=True, workers=0))) == 2


def test_worker_processes_give_the_same_stream():
    data = open_dataset("shapes:12:4", "train")
    inline = Loader(data, 5, shuffle=True, seed=2, workers=0)
    workers = Loader(data, 5, shuffle=True, seed=2, workers=2)
    for epoch in (0, 1):
        inline.set_epoch(epoch)
        workers.set_epoch(epoch)
        got = list(workers)
        assert len(got) == len(inline) == 3
        for (a, la), (b, lb) in zip(inline, got):
            assert torch.equal(a, b) and torch.equal(la, lb)


def test_transform_runs_with_a_per_batch_generator():
    outs = [[x for x, _ in Loader(Numbers(9), 3, shuffle=False, transform=jitter, workers=w)]
            for w in (0, 2)]
    for a, b in zip(*outs):
        assert torch.equal(a, b)  # same numbers whatever runs the batches
    assert not torch.equal(outs[0][0] - outs[0][0].floor(), outs[0][1] - outs[0][1].floor())


class Holey(Numbers):
    """Numbers whose images 3, 4 and 5 cannot be read (`read` reports them, as a folder does)."""

    def read(self, indices):
        return self.get_batch(indices), [(i, "unreadable") for i in indices if 3 <= i <= 5]


def jitter(images, generator):
    return images.float() + torch.rand(len(images), generator=generator).view(-1, 1, 1, 1)


@pytest.mark.parametrize("workers", [None, 0])  # None: the default count
def test_a_caller_that_augments_gets_the_transforms_generator(workers):
    """Training on an accelerator augments after the loader, with loader.generator(): the same
    draws as the loader's own transform makes on the CPU, batch for batch, also past a batch that
    was skipped (3, 4, 5 unreadable: batch 1 is skipped, so the third batch read is number 2)."""
    for epoch in (0, 1):
        ahead = Loader(Holey(9), 3, shuffle=False, transform=jitter, workers=workers)
        after = Loader(Holey(9), 3, shuffle=False, workers=workers)
        ahead.set_epoch(epoch)
        after.set_epoch(epoch)
        assert [x[:, 0, 0, 0].tolist() for x, _ in after] == [[0, 1, 2], [6, 7, 8]]
        outs = [jitter(x, after.generator()) for x, _ in after]  # each right after its batch
        expected = [x for x, _ in ahead]
        assert len(expected) == len(outs) == 2
        assert all(torch.equal(a, b) for a, b in zip(expected, outs))
        assert not torch.equal(outs[0] - outs[0].floor(), outs[1] - outs[1].floor())
    with pytest.raises(RuntimeError, match="before the first batch"):
        Loader(Numbers(4), 2, shuffle=False).generator()


def test_bad_arguments():
    with pytest.raises(ValueError):
        Loader(Numbers(4), 0, shuffle=False)
    with pytest.raises(ValueError):
        Loader(Numbers(4), 2, shuffle=False, rank=2, world_size=2)


def test_auto_workers_leave_a_two_core_cpu_to_the_step(monkeypatch):
    from alexnet.data import loader
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 2)
    assert loader.auto_workers("cpu") == 0
    monkeypatch.setattr(loader.os, "cpu_count", lambda: 16)
    assert loader.auto_workers("cpu") == 2 and loader.auto_workers("cuda") == 4


def test_batches_are_pinned_where_they_go_to_a_gpu():
    """Pinned by default only for CUDA (a pageable copy stalls the host), not for JPEG bytes
    (decoded on the GPU from CPU tensors), and as the caller says when it says."""
    for device, pinned in [(None, False), ("cpu", False), ("cuda", True), ("cuda:0", True)]:
        assert Loader(Numbers(4), 2, shuffle=False, workers=0, device=device).pin_memory is pinned

    class Encoded(Numbers):
        def encoded(self, indices):
            return [torch.zeros(1, dtype=torch.uint8) for _ in indices]
    assert Loader(Encoded(4), 2, shuffle=False, workers=0, encoded=True,
                  device="cuda").pin_memory is False
    assert Loader(Numbers(4), 2, shuffle=False, workers=0, device="cuda",
                  pin_memory=False).pin_memory is False


def _children(pid: int) -> list[int]:
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            kids += [int(k) for k in f.read().split()]
    return kids


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task"), reason="needs Linux /proc")
def test_loader_workers_do_not_hold_the_run_directorys_lock(tmp_path, monkeypatch):
    """flock locks belong to the open file, which fork shares: the workers of a SIGKILLed run
    held its lock for seconds after, and an immediate --resume was refused ('in use'). With the
    default worker count of a CPU of more than 2 cores (2 workers), as train makes its loaders."""
    from alexnet.data import loader as loader_module
    from alexnet.io import LOCK_NAME, locked_dir
    monkeypatch.setattr(loader_module.os, "cpu_count", lambda: 16)
    with locked_dir(tmp_path / "run"):
        loader = Loader(Numbers(8), 2, shuffle=False, device="cpu")  # workers: the default
        assert loader.workers == 2
        assert len(list(loader)) == 4  # both workers have started (persistent: they stay)
        workers = _children(os.getpid())
        assert len(workers) >= 2
        for pid in workers:
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
            assert not any(f.endswith(LOCK_NAME) for f in fds), (pid, fds)
        del loader
    with locked_dir(tmp_path / "run"):  # the parent's lock was released as before
        pass
