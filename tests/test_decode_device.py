"""JPEG shards decoded where the model runs (`alexnet train --decode device`; nvJPEG on a GPU).

On the CPU the same path runs with torchvision's CPU decoder, so CI covers the loader handing
over bytes, the batched decode, the augmentation after it, and the errors; the CUDA decode itself
runs in scripts/cuda_check.sh."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main as cli_main
from alexnet.data import Loader, open_dataset
from alexnet.data import prepare as prep
from alexnet.data.prepared import decode_batch
from alexnet.errors import DataError


@pytest.fixture(scope="module")
def jpeg_shards(tmp_path_factory):
    """shapes:24:8 prepared as JPEG shards (256×256, the size the paper's crop needs)."""
    out = tmp_path_factory.mktemp("dec") / "jpeg"
    prep.prepare("shapes:24:8", out, shard_size=5, encoding="jpeg", workers=1,
                 progress=False)
    return out


def _pillow(data, idx) -> torch.Tensor:
    """The images of `idx` decoded by Pillow from their bytes: the independent reference."""
    files = data.encoded(idx).files()
    return torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(f.numpy().tobytes()))
                                                  .convert("RGB"))) for f in files])


def test_the_loaders_and_the_batched_decode_match_pillow(jpeg_shards):
    """The loader's decode (torchvision's, image by image in the workers) and the batched one
    (--decode device, here on the CPU) give Pillow's pixels."""
    data = open_dataset(jpeg_shards, "train")
    idx = [7, 0, 13, 21, 4]
    pillow = _pillow(data, idx)
    for ours in (data.get_batch(idx), decode_batch(data.encoded(idx), data.channels, "cpu")):
        assert ours.shape == pillow.shape == (5, 256, 256, 3) and ours.dtype == torch.uint8
        # Two libjpeg builds may round the inverse DCT differently: equal to within a grey level
        # (on the machines seen so far, equal).
        assert (ours.int() - pillow.int()).abs().max() <= 2
        assert (ours.float() - pillow.float()).abs().mean() < 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_nvjpeg_neither_misdecodes_nor_writes_into_memory_still_being_read(jpeg_shards):
    """Each decode is started while the training stream still has queued work that reads blocks
    freed just before: blocks of the decoded images' size, which the caching allocator would hand
    to a decode on that stream, and which nvJPEG's hardware path writes without waiting for the
    stream (pytorch/vision#9606). The queued sums must come out as computed beforehand, and the
    images exactly as a decode on an idle GPU gives them.

    Against Pillow, nvJPEG is held only to the same images: it upsamples the 4:2:0 chroma
    otherwise than libjpeg's smoothing filter, so at sharp colour edges a channel differed by up to
    43 grey levels on the H200 (session 27); a simulation of nearest-neighbour chroma on the CPU
    moves the mean by up to 1.1. A mix-up of images or memory would move it by tens."""
    data = open_dataset(jpeg_shards, "train")
    idx = [7, 0, 13, 21, 4]
    pillow = _pillow(data, idx)
    torch.cuda.synchronize()
    quiet = decode_batch(data.encoded(idx), data.channels, "cuda").cpu()
    assert quiet.shape == pillow.shape
    mean_diff = (quiet.float() - pillow.float()).abs().flatten(1).mean(1)
    print(f"nvJPEG vs Pillow, mean |difference| per image: {mean_diff.tolist()}, "
          f"max {(quiet.int() - pillow.int()).abs().max().item()}")
    assert mean_diff.max().item() < 4  # other images, or garbage, differ by tens
    g = torch.Generator().manual_seed(0)
    host = [torch.randint(0, 256, pillow.shape[1:], dtype=torch.uint8, generator=g)
            for _ in range(8)]
    expected = torch.tensor([float(h.double().sum()) for h in host], dtype=torch.float64)
    for _ in range(10):
        blocks = [h.cuda() for h in host]
        torch.cuda.synchronize()
        torch.cuda._sleep(50_000_000)  # tens of ms of queued work before the sums
        sums = torch.stack([b.double().sum() for b in blocks])
        del blocks  # freed while the sums that read them are still queued
        ours = decode_batch(data.encoded(idx), data.channels, "cuda")
        assert torch.equal(sums.cpu(), expected)
        assert ours.is_cuda and torch.equal(ours.cpu(), quiet)


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_hands_over_bytes(jpeg_shards, workers):
    data = open_dataset(jpeg_shards, "train")
    loader = Loader(data, 8, shuffle=True, seed=3, workers=workers, encoded=True)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [8, 8, 8]
    for (encoded, labels), idx in zip(batches, loader.batches(0)):
        # one buffer per batch (one tensor to hand over from a worker), split without a copy
        assert encoded.data.dtype == torch.uint8 and encoded.data.ndim == 1
        files = encoded.files()
        assert sum(len(f) for f in files) == len(encoded.data) and len(files) == len(idx)
        assert all(f.untyped_storage().data_ptr() == encoded.data.untyped_storage().data_ptr()
                   for f in files)
        for f in files:  # each a whole JPEG: start- and end-of-image markers
            assert bytes(f[:2].tolist()) == b"\xff\xd8" and bytes(f[-2:].tolist()) == b"\xff\xd9"
        assert torch.equal(labels, torch.from_numpy(data.labels[idx]))


def test_encoded_needs_jpeg_and_no_transform(jpeg_shards, tmp_path):
    with pytest.raises(ValueError, match="encoded=True"):
        Loader(open_dataset("shapes:8:8", "train"), 4, shuffle=False, encoded=True)
    # raw shards have encoded() too (it returns None): their batches were None, failing later
    prep.prepare("shapes:4:4", tmp_path / "raw", workers=0, progress=False)
    with pytest.raises(ValueError, match="encoded=True"):
        Loader(open_dataset(tmp_path / "raw", "train"), 4, shuffle=False, encoded=True)
    with pytest.raises(ValueError, match="encoded=True"):
        Loader(open_dataset(jpeg_shards, "train"), 4, shuffle=False, encoded=True,
               transform=lambda x, generator: x)


def test_damaged_bytes_are_one_data_error():
    with pytest.raises(DataError, match="does not decode on cpu") as e:
        decode_batch([torch.tensor([0xFF, 0xD8, 1, 2, 3], dtype=torch.uint8)], 3, "cpu")
    assert "\n" not in str(e.value) and ".cpp:" not in str(e.value), str(e.value)


def test_decode_device_without_jpeg_shards_is_one_line(tmp_path, capsys):
    code = cli_main(["train", "--data", "shapes:16:8", "--decode", "device", "--epochs", "1",
                     "--no-progress", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "needs prepared JPEG shards" in err and len(err.strip().splitlines()) == 1


def test_train_with_decode_device_on_the_cpu_draws_what_the_loader_would(jpeg_shards, tmp_path,
                                                                       monkeypatch):
    """--decode device trains, and a seed gives the same crops, flips and colours whether the
    loader augments (the CPU path) or the training loop does after decoding on the device: each
    batch's draws come from the same per-batch generator."""
    from alexnet.data.augment import Augment

    draws = []
    sample = Augment.sample

    def spy(self, batch, generator=None):
        p = sample(self, batch, generator)
        draws[-1].append(p)
        return p

    monkeypatch.setattr(Augment, "sample", spy)
    for decode in ("cpu", "device"):
        draws.append([])
        assert cli_main(["train", "--data", str(jpeg_shards), "--decode", decode, "--epochs", "1",
                         "--batch-size", "8", "--recipe", "paper", "--precision", "fp32",
                         "--workers", "0", "--no-progress", "--eval-crops", "1",
                         "--out", str(tmp_path / decode)]) == 0
    run = tmp_path / "device"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and np.isfinite(metrics[0]["train_loss"])
    assert json.loads((run / "config.json").read_text())["decode"] == "device"
    on_cpu, on_device = draws
    assert len(on_cpu) == len(on_device) == 3  # 24 images in batches of 8
    for a, b in zip(on_cpu, on_device):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(on_cpu[0]["alphas"], on_cpu[1]["alphas"])  # batches differ


def test_a_run_that_diverges_leaves_no_thread_behind(jpeg_shards, tmp_path, capsys,
                                                     monkeypatch):
    """On CUDA, --decode device prepares batches on a thread (data/ahead.py; the CPU stands in
    for it here): a run that stops on an error in the step (a diverged loss, with the default
    workers) stops that thread too."""
    import threading

    from alexnet.data import ahead

    monkeypatch.setattr(ahead, "THREADED", ("cuda", "cpu"))
    started = []
    thread_init = threading.Thread.__init__

    def spy(self, *args, **kwargs):
        thread_init(self, *args, **kwargs)
        started.append(self.name)

    monkeypatch.setattr(threading.Thread, "__init__", spy)
    code = cli_main(["train", "--data", str(jpeg_shards), "--decode", "device", "--epochs", "1",
                     "--batch-size", "4", "--lr", "1e30", "--precision", "fp32",
                     "--no-progress", "--out", str(tmp_path / "nan")])
    err = capsys.readouterr().err
    assert code == 2 and "loss became" in err
    assert "alexnet-ahead" in started  # there was one
    assert not [t for t in threading.enumerate() if t.name == "alexnet-ahead"]
