"""Shared fixtures: tiny generated datasets (no network, no files outside tmp) and a private
statistics cache, so that tests never read or write ~/.cache."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main as cli_main
from alexnet.machine import cpu_flags

# The C kernels are built with -march=native: only on a CPU with AVX-512 (x86 only) do they take
# their hand-vectorised paths; elsewhere the builds the AVX-512 tests compare are the same loops.
needs_avx512 = pytest.mark.skipif(
    "avx512f" not in cpu_flags(),
    reason="the CPU has no avx512f flag in /proc/cpuinfo: no AVX-512 path to compare")

_RAM_DISK, _RAM_NEEDED = Path("/dev/shm"), 12 << 30
_IN_RAM = pytest.StashKey[Path]()


def _free_memory() -> int:
    """MemAvailable in bytes (0 where /proc/meminfo does not say): a tmpfs's free space is only
    its size cap, and its files take real memory."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _ram_disk_usable() -> bool:
    """/dev/shm exists, is writable and not noexec (the kernel cache compiles and loads .so files
    under the tests' directory), and memory has room for the tests and their files."""
    try:
        flags = os.statvfs(_RAM_DISK).f_flag
        return os.access(_RAM_DISK, os.W_OK) and not flags & os.ST_NOEXEC \
            and min(shutil.disk_usage(_RAM_DISK).free, _free_memory()) >= _RAM_NEEDED
    except OSError:
        return False


def _sweep_dead_runs() -> None:
    """What runs that were killed (SIGTERM, SIGKILL) or failed left in /dev/shm."""
    for old in _RAM_DISK.glob("alexnet-tests-*-*"):
        pid = old.name.split("-")[2]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except (ValueError, PermissionError):  # not ours, or a live process of another user
            pass


@pytest.hookimpl(tryfirst=True)  # before pytest's tmpdir plugin reads --basetemp
def pytest_configure(config):
    """Test files in memory (/dev/shm) where it has room, unless --basetemp says where. A training
    test writes checkpoints of up to 0.7 GB, several per test, and on a VM's disk those writes
    were the largest part of the suite's time (BENCHMARKS.md, "The test suite"). A passing test's
    files are removed when it ends (tmp_path_retention_policy) and the directory when the run
    passes; a failed run's stays for a look, and the next run removes it."""
    if config.option.basetemp is not None:
        return
    # First: a killed run's files would otherwise fill the memory this run measures for room,
    # so that it ran on disk, with them still held in memory, and never removed them.
    _sweep_dead_runs()
    if not _ram_disk_usable():
        return
    config.option.basetemp = tempfile.mkdtemp(prefix=f"alexnet-tests-{os.getpid()}-",
                                              dir=_RAM_DISK)
    config.stash[_IN_RAM] = Path(config.option.basetemp)


def pytest_sessionfinish(session, exitstatus):
    where = session.config.stash.get(_IN_RAM, None)
    if where is None:
        return
    if exitstatus == 0:
        shutil.rmtree(where, ignore_errors=True)
    else:
        print(f"\nthe tests' files are kept in {where} (in memory); the next run removes them")


@pytest.fixture(autouse=True, scope="session")
def _private_stats_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ALEXNET_CACHE", str(tmp_path_factory.mktemp("alexnet-cache")))
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _triton_lrn_at_one_tile():
    """On a GPU the Triton LRN's tests run at its fallback tile and forward: with TILE and FORWARD
    "auto" every shape of theirs would time, and first compile, each option (about 200 compiles
    of a second each, past the device script's limit). The tests of "auto" set them back. (On the
    CPU nothing is timed: the fallbacks are what run anyway.)"""
    from alexnet import lrn
    mp = pytest.MonkeyPatch()
    if torch.cuda.is_available() and lrn.lrn_triton is not None:
        tile = lrn.lrn_triton.FALLBACK_TILE
        mp.setattr(lrn.lrn_triton, "TILE", {"forward": tile, "backward": tile})
        mp.setattr(lrn.lrn_triton, "FORWARD", lrn.lrn_triton.FORWARD_FALLBACK)
    yield
    mp.undo()


def write_idx(path, array) -> None:
    """An IDX file (Fashion-MNIST's format), gzip'd: uint8 values, big-endian int32 sizes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_image_folder(root, classes=("cat", "dog", "eel"), per_class=(3, 2),
                       size=(40, 30), seed=0, fmt="JPEG"):
    """An ImageFolder tree root/train/<class>/*, root/val/<class>/* of random RGB images.

    per_class: images per class in (train, val); size: (width, height) of the originals.
    Returns root (a pathlib.Path)."""
    rng = np.random.default_rng(seed)
    ext = {"JPEG": "jpg", "PNG": "png"}[fmt]
    for split, n in zip(("train", "val"), per_class):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{c}_{i}.{ext}", fmt)
    return root


@pytest.fixture
def image_folder(tmp_path):
    """A small ImageFolder tree: 3 classes, 3 train and 2 val JPEGs each, 40×30 pixels."""
    return write_image_folder(tmp_path / "folder")


@contextlib.contextmanager
def exact_fp32():
    """fp32 convolutions and matrix products in real fp32, not TF32 (10-bit mantissa; cuDNN's
    default for convolutions), for comparisons with an fp32 or float64 reference; restored after.

    By the legacy flags alone. torch >= 2.9 also has a per-operator API (`cudnn.conv.
    fp32_precision`), but setting it leaves the legacy flag behind, and any later read of
    `cudnn.allow_tf32` (torch itself may read it) then raises: mixing the two made this fixture
    fail on its second use. The legacy setter also sets the per-operator values."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def cli(capsys, *argv):
    """Run `alexnet ARGV` in-process: (exit code, stdout, stderr)."""
    rc = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, *words):
    """Bad input's promise: exit code 2, one line on stderr naming `words`, no traceback."""
    assert rc == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def one_line_exit_2(capsys, argv) -> str:
    """Run the CLI; it must fail with exit code 2 and one line on stderr, no traceback."""
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


# --- tiny training runs ---------------------------------------------------------------------------

# A run in seconds: the paper recipe (dropout on) on 16 images, in fp32, without workers.
FAST = ["--data", "shapes:16:8", "--batch-size", "8", "--workers", "0", "--eval-crops", "1",
        "--no-progress", "--recipe", "paper", "--precision", "fp32"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One finished 1-epoch run, shared by the tests of a module that only read it."""
    run = tmp_path_factory.mktemp("trained") / "r"
    assert cli_main(["train", *FAST, "--epochs", "1", "--out", str(run)]) == 0
    return run


def metrics(run: Path) -> list[dict]:
    """A run's metrics.jsonl, one dict per epoch."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


# --- tiny ablations ------------------------------------------------------------------------------

# The real paper network on 8 images of the built-in data, batches of 4, fp32 for exactness.
ABLATE_TINY = ["--data", "shapes:16:8", "--budget", "4", "--batch-size", "4", "--epochs",
               "1", "--precision", "fp32", "--workers", "0", "--no-progress", "--window",
               "4"]


def ablate_cli(capsys, out, *extra) -> tuple[int, str, str]:
    code = cli_main(["ablate", *ABLATE_TINY, "--out", str(out), *map(str, extra)])
    stdout, err = capsys.readouterr()
    return code, stdout, err


def png_ok(path) -> bool:
    with Image.open(path) as img:
        img.load()
        return img.format == "PNG" and img.size[0] > 100
