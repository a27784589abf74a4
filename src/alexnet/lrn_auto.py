"""The LRN backward's strategy chosen by timing it on the GPU (lrn_triton.BACKWARD = "auto").

At the first backward of each shape (dtypes, sizes, strides, parameters) on a GPU, each of
lrn_triton's strategies is run and timed and the fastest kept: for the process, and on disk, with
every strategy's time, in cache_dir()/lrn-backward-<GPU>-triton<version>.json. Later processes (a
resumed run) take the same one without timing again, and `alexnet bench model` (`used`) and
scripts/cuda_check.sh show what was measured.

    strategy = choose(grad, x, params, run=lambda how: ..., strategies=STRATEGIES,
                      fallback=FALLBACK)
"""
from __future__ import annotations

import functools
import json
import re
import threading
import warnings
from pathlib import Path

import torch
import triton

from .errors import first_line
from .io import atomic_write_json
from .machine import cache_dir

_CHOSEN: dict[tuple[str, str], str] = {}   # (GPU, shape key): strategy; read with no lock
_USED: dict[tuple[str, str], dict] = {}    # the same keys: {"strategy", "ms": {strategy: ms}}
_SAVED: dict[tuple[str, str], dict] = {}   # what the files of the GPUs in _READ hold
_READ: set[str] = set()                    # GPUs whose file has been read
_LOCK = threading.Lock()


def choose(grad, x, params, run, strategies, fallback: str) -> str:
    """The strategy to run for this backward. `run(strategy)` runs one (into a scratch dx);
    params: the launch's (size, alpha, beta, k, groups, relu, tile). Off CUDA, and while a CUDA
    graph is captured (nothing may wait for the GPU then), `fallback` without timing."""
    if not _timed_here(x):
        return fallback
    gpu = _gpu(x.device)
    key = (gpu, f"{x.dtype}|{grad.dtype}|{tuple(x.shape)}|{x.stride()}|{grad.stride()}|{params}")
    chosen = _CHOSEN.get(key)  # every backward after the first: no lock, no file
    if chosen is not None:
        return chosen
    with _LOCK:  # the two-device split's towers run their backwards on two threads
        if key not in _CHOSEN:
            if gpu not in _READ:
                _READ.add(gpu)
                _SAVED.update({(gpu, k): v for k, v in _read_choices(gpu).items()})
            found = _SAVED.get(key)
            if found is None or found["strategy"] not in strategies:  # (another version's)
                if torch.cuda.is_current_stream_capturing():
                    return fallback
                found = _fastest(run, strategies, x.device)
                _write_choice(gpu, key[1], found)
            _USED[key] = found
            _CHOSEN[key] = found["strategy"]
        return _CHOSEN[key]


def used() -> list[dict]:
    """The choices this process's backwards ran, one dict a shape: gpu, key, strategy and ms
    (each strategy's milliseconds where this process or the one that chose timed them)."""
    return [{"gpu": gpu, "key": key, **found} for (gpu, key), found in list(_USED.items())]


def _fastest(run, strategies, device) -> dict:
    """Each strategy timed; the fastest. One that fails to compile or to find memory here (an
    older triton; two-pass's scratch) is passed over with a warning; a CUDA error is raised at
    once (it is sticky: the others would fail after it)."""
    times, error = {}, None
    for how in strategies:
        try:
            times[how] = _time_ms(lambda how=how: run(how), device)
        except Exception as e:  # noqa: BLE001 (which errors a compile raises varies by version)
            if "CUDA error" in str(e):
                raise
            error = e
            warnings.warn(f"LRN backward {how!r} left out on this GPU: {first_line(e)}")
    if not times:
        raise error
    return {"strategy": min(times, key=times.get), "ms": times}


def _timed_here(x) -> bool:
    return x.device.type == "cuda"


def _time_ms(fn, device, reps: int = 5) -> float:
    """Milliseconds a call of fn takes on the GPU: reps calls queued back to back between two
    CUDA events (so that the host's launches hide behind the GPU's work, as in a training step),
    after one call that compiles it and warms the caches."""
    fn()
    with torch.cuda.device(device):  # the events on the stream the kernels run on
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / reps


@functools.lru_cache(maxsize=None)  # asked at every backward
def _gpu(device) -> str:
    """What a choice holds for: the GPU's model and triton's version, as a file name may hold it."""
    name = f"{torch.cuda.get_device_name(device)}-triton{triton.__version__}"
    return re.sub(r"[^A-Za-z0-9.]+", "-", name).strip("-")


def _choices_path(gpu: str) -> Path:
    return cache_dir() / f"lrn-backward-{gpu}.json"


def _read_choices(gpu: str) -> dict[str, dict]:
    """{shape key: {"strategy", "ms"}}; a file of session 29 held the strategy's name alone.
    What does not read as that (a damaged file) is left out, as if never timed."""
    try:
        saved = json.loads(_choices_path(gpu).read_text())
        found = {k: v if isinstance(v, dict) else {"strategy": v} for k, v in saved.items()}
    except (OSError, ValueError, AttributeError):  # none yet, unreadable, or not a dict
        return {}
    return {k: {"strategy": v["strategy"], "ms": _times(v.get("ms"))}
            for k, v in found.items() if isinstance(v.get("strategy"), str)}


def _times(ms) -> dict[str, float]:
    if not isinstance(ms, dict):
        return {}
    return {str(k): float(v) for k, v in ms.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _write_choice(gpu: str, key: str, found: dict) -> None:
    """Added to what the file holds now (another process, a DDP rank, may have added its own
    since this one read it: a choice lost that way is only timed again)."""
    try:
        _choices_path(gpu).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_choices_path(gpu), {**_read_choices(gpu), key: found})
    except OSError:
        pass  # a read-only cache only costs the timing in the next process
