"""The test suite's own set-up (conftest.py): where the tests' files go."""
from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import conftest


def test_a_killed_runs_files_are_removed_before_the_room_is_measured(tmp_path, monkeypatch):
    # A run killed mid-way leaves its files in memory (/dev/shm). They were removed only once the
    # ram disk was found to have room, which they took: so the next run wrote to disk, with that
    # memory still held, and removed nothing. The ram disk is tmp_path here.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    left = tmp_path / f"alexnet-tests-{int(ended.stdout)}-abc123"  # a process no longer running
    left.mkdir()
    (left / "checkpoint.pt").write_bytes(b"\0" * 1024)
    mine = tmp_path / f"alexnet-tests-{os.getpid()}-def456"  # a live run's: kept
    mine.mkdir()
    seen = []
    monkeypatch.setattr(conftest, "_RAM_DISK", tmp_path)
    monkeypatch.setattr(conftest, "_ram_disk_usable", lambda: seen.append(left.exists()) or False)
    config = SimpleNamespace(option=SimpleNamespace(basetemp=None), stash={})
    conftest.pytest_configure(config)
    assert seen == [False]  # removed before the room was measured
    assert not left.exists() and mine.exists()
    assert config.option.basetemp is None  # no room (as faked): pytest's own place, on disk
