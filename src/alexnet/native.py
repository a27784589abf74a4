"""The project's C kernels (csrc/*.c): built with the system's C compiler on first use, cached.

Four kernels live in csrc/: lrn.c (the paper's LRN, forward and backward), pool.c (max pooling
with a one-byte argmax, for pool.py), optim.c (SGD and AdamW steps that keep a bf16 copy of the
weights, for masters.py) and stem.c (conv1's input by space-to-depth in one pass, for stem.py). Each is compiled once per (source, headers, flags, compiler, CPU), since
-march=native makes the library specific to this CPU, into the cache directory, and loaded with
ctypes. Without a compiler, or when the cached
library looks planted, `Library.load()` returns None and the callers fall back to tensor ops.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Callable

import torch

from .io import atomic_path
from .machine import cache_dir, cpu_flags

CSRC = Path(__file__).with_name("csrc")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-shared", "-fPIC")


def _check_owner(lib_path: Path) -> None:
    """Refuse to load a library someone else could have planted: it must belong to this user
    (or root) and be writable by nobody else. This matters when ALEXNET_CACHE is shared."""
    st = os.stat(lib_path)
    if st.st_uid not in (os.getuid(), 0) or st.st_mode & 0o022:
        raise RuntimeError(f"refusing to load {lib_path}: owned by uid {st.st_uid} with mode "
                           f"{st.st_mode & 0o777:o} (must be yours and not group/world-writable)")


def build(name: str, extra_flags: tuple[str, ...] = ()) -> ctypes.CDLL:
    """csrc/<name>.c as a loaded library, compiled into the cache directory if not there yet."""
    source = CSRC / f"{name}.c"
    flags = (*FLAGS, *extra_flags)
    cc = os.environ.get("CC", "gcc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler ({cc})")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    headers = [h.read_text() for h in sorted(CSRC.glob("*.h"))]
    key = hashlib.sha256("\0".join([source.read_text(), *headers, " ".join(flags), version,
                                    platform.machine(), " ".join(sorted(cpu_flags()))]
                                   ).encode()).hexdigest()[:16]  # -march=native: per CPU
    lib_path = cache_dir() / f"{name}-{key}.so"
    if not lib_path.exists():
        # Compile to a temporary name and rename: a concurrent or killed build never leaves half a
        # library behind at the name others load.
        with atomic_path(lib_path) as tmp:
            done = subprocess.run([cc, *flags, "-I", str(CSRC), "-o", str(tmp), str(source)],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode:
                raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-500:]}")
    _check_owner(lib_path)
    # Loaded after torch, so its libgomp (same soname) is the one the kernel's OpenMP uses: one
    # thread pool for both, not two competing for the cores.
    return ctypes.CDLL(str(lib_path))


class Library:
    """One kernel, built on first use. `declare` sets the functions' ctypes signatures;
    `extra_flags` are added to FLAGS for this kernel."""

    def __init__(self, name: str, declare: Callable[[ctypes.CDLL], None],
                 extra_flags: tuple[str, ...] = ()):
        self.name, self.declare, self.extra_flags = name, declare, extra_flags
        self.lib: ctypes.CDLL | None = None
        self.error: str | None = None  # why there is none, once tried
        self._lock = threading.Lock()

    def load(self) -> ctypes.CDLL | None:
        """The library, building it on first use; None if it cannot be built (see .error).
        Never raises: the callers then run their tensor-op fallback."""
        with self._lock:
            if self.lib is None and self.error is None:
                try:
                    self.lib = build(self.name, self.extra_flags)
                    self.declare(self.lib)
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    self.error = str(e) or type(e).__name__
        return self.lib

    def available(self) -> ctypes.CDLL | None:
        """load(), except while torch.compile traces: then only a library built already (a
        build's subprocess cannot be traced; the modules build theirs when constructed)."""
        return self.lib if torch.compiler.is_compiling() else self.load()
