"""Shared fixtures: tiny generated datasets (no network, no files outside tmp) and a private
statistics cache, so that tests never read or write ~/.cache."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.cli import main as cli_main


_RAM_DISK, _RAM_NEEDED = Path("/dev/shm"), 8 << 30
_IN_RAM = pytest.StashKey[str]()


def pytest_configure(config):
    """Test files in memory (/dev/shm) where it has room, unless --basetemp says where. A training
    test writes checkpoints of up to 0.7 GB, several per test, and on a VM's disk those writes
    were the largest part of the suite's time (BENCHMARKS.md, "The test suite"). Every file a
    test writes is removed when it passes (tmp_path_retention_policy), and the whole directory
    when the run ends, a failed test's too, so that nothing is left in memory."""
    if config.option.basetemp is not None or not _RAM_DISK.is_dir() \
            or not os.access(_RAM_DISK, os.W_OK) or shutil.disk_usage(_RAM_DISK).free < _RAM_NEEDED:
        return
    config.option.basetemp = tempfile.mkdtemp(prefix="alexnet-tests-", dir=_RAM_DISK)
    config.stash[_IN_RAM] = config.option.basetemp


def pytest_unconfigure(config):
    if _IN_RAM in config.stash:
        shutil.rmtree(config.stash[_IN_RAM], ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _private_stats_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ALEXNET_CACHE", str(tmp_path_factory.mktemp("alexnet-cache")))
    yield
    mp.undo()


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
