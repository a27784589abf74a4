"""What machine this is, in one place: the CPU's name and the flags that decide the fast path
(AVX-512, AVX512-BF16, AMX), a one-line description for reports, and the cache directory that
the LRN kernel, the dataset statistics and the fast-path probe share.

Speed figures in BENCHMARKS.md name these flags, since the same code runs 2-3× apart on CPUs with
and without native bf16."""
from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

from .errors import AlexNetError

# The flags that change which path is fast (and so belong next to every speed figure).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@lru_cache(maxsize=None)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor only
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_name() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """Every flag of /proc/cpuinfo (empty where there is none)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def speed_flags() -> str:
    """The SPEED_FLAGS this CPU has, e.g. "avx2 avx512f avx512_bf16 amx_bf16 amx_tile"."""
    have = cpu_flags()
    return " ".join(f for f in SPEED_FLAGS if f in have) or "none of " + ", ".join(SPEED_FLAGS)


def describe() -> str:
    """One line for a report: CPU, its speed flags, cores."""
    return f"{cpu_name()} ({speed_flags()}), {os.cpu_count()} cores"


_ON, _OFF = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


def most_per_core() -> int:
    """The most worker processes or threads an option may ask for: 8 per core, at least 32.
    Far more only spends memory and start-up time, thousands of processes hang at start, and
    torch.set_num_threads(100000) crashed the process."""
    return max(32, 8 * (os.cpu_count() or 1))


def env_flag(name: str, default: bool = True) -> bool:
    """An on/off switch from the environment (ALEXNET_IMAGE_CACHE, ALEXNET_MASTERS): 1/on/true/yes
    or 0/off/false/no, any case; unset or empty is the default. Anything else is an error rather
    than a guess, so that a misspelt "flase" does not silently leave the switch on."""
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _ON or value in _OFF:
        return value in _ON
    raise AlexNetError(f"{name}={os.environ[name]!r}: use 1 or 0 (on/off, true/false, yes/no)")


def cache_dir() -> Path:
    """$ALEXNET_CACHE, else $XDG_CACHE_HOME/alexnet, else ~/.cache/alexnet."""
    if os.environ.get("ALEXNET_CACHE"):
        return Path(os.environ["ALEXNET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet"
