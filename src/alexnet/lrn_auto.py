"""The Triton LRN's launch chosen by timing it on the GPU: the forward's and the backward's
strategy and tile (lrn_triton.FORWARD, BACKWARD and TILE: "auto").

At the first call of each shape (dtypes, sizes, strides, parameters) on a GPU, each option is run
and timed and the fastest kept: for the process, and on disk, with every option's time, in
cache_dir()/lrn-<GPU>-triton<version>.json. Later processes (a resumed run) take the same one
without timing again, and `alexnet bench model` (`used`) and scripts/cuda_check.sh show what was
measured.

    name = choose("backward", (x, grad), params, ("auto", "auto"),
                  lambda: {"sweep 1024x4": run_it, ...}, "two-pass 1024x4")
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

_CHOSEN: dict[tuple, str] = {}             # a call's tensors, params, spec: option's name
_USED: dict[tuple[str, str], dict] = {}    # (GPU, file key): {"choice", "ms": {option: ms}}
_SAVED: dict[tuple[str, str], dict] = {}   # what the files of the GPUs in _READ hold
_READ: set[str] = set()                    # GPUs whose file has been read
_LOCK = threading.Lock()


def choose(kind: str, tensors, params, spec, options, fallback: str) -> str:
    """The name of the option to run for this call of `kind` ("forward", "backward") on
    `tensors` (x first) with the LRN's `params` and what the caller left open (`spec`, hashable);
    options() gives {name: run it (into scratch outputs)}, asked only when a shape is first
    timed. Off CUDA, and while a CUDA graph is captured (nothing may wait for the GPU then),
    `fallback` without timing."""
    x = tensors[0]
    if not _timed_here(x):
        return fallback
    # Every call after a shape's first: this tuple's lookup only, no lock, no file, no strings.
    fast = (x.device, kind, *((t.dtype, t.shape, t.stride()) for t in tensors), params, spec)
    chosen = _CHOSEN.get(fast)
    if chosen is not None:
        return chosen
    with _LOCK:  # the two-device split's towers run their backwards on two threads
        if fast not in _CHOSEN:
            runs, gpu = options(), _gpu(x.device)
            key = (gpu, "|".join([kind, *(f"{t.dtype}|{tuple(t.shape)}|{t.stride()}"
                                          for t in tensors), str(params), ",".join(runs)]))
            if gpu not in _READ:
                _READ.add(gpu)
                _SAVED.update({(gpu, k): v for k, v in _read_choices(gpu).items()})
            found = _SAVED.get(key)
            if found is None or found["choice"] not in runs:  # (a damaged file's)
                if torch.cuda.is_current_stream_capturing():
                    return fallback
                found = _fastest(kind, runs, x.device)
                _write_choice(gpu, key[1], found)
            _USED[key] = found
            _CHOSEN[fast] = found["choice"]
        return _CHOSEN[fast]


def used() -> list[dict]:
    """What this process's calls ran on the GPU, one dict a call shape: kind, dtype, shape,
    choice, and ms (each option's milliseconds, as this process or the one that chose timed
    them)."""
    out = []
    for (_, key), found in list(_USED.items()):
        kind, dtype, shape = key.split("|")[:3]
        out.append({"kind": kind, "dtype": dtype.removeprefix("torch."), "shape": shape,
                    **found})
    return out


def _fastest(kind: str, runs: dict, device) -> dict:
    """Each option timed; the fastest. One that fails to compile or to find memory here (an
    older triton; two-pass's scratch) is passed over with a warning; a CUDA error is raised at
    once (it is sticky: the others would fail after it)."""
    times, error = {}, None
    for name, run in runs.items():
        try:
            times[name] = _time_ms(run, device)
        except Exception as e:  # noqa: BLE001 (which errors a compile raises varies by version)
            if "CUDA error" in str(e):
                raise
            error = e
            warnings.warn(f"LRN {kind} {name!r} left out on this GPU: {first_line(e)}")
    if not times:
        raise error
    return {"choice": min(times, key=times.get), "ms": times}


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
    return cache_dir() / f"lrn-{gpu}.json"


def _read_choices(gpu: str) -> dict[str, dict]:
    """{call key: {"choice", "ms"}}. What does not read as that (a damaged file) is left out, as
    if never timed. (Session 29's lrn-backward-*.json, the strategy alone, is not read: its
    choices were made at one tile.)"""
    try:
        saved = json.loads(_choices_path(gpu).read_text())
        found = {k: v for k, v in saved.items() if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):  # none yet, unreadable, or not a dict
        return {}
    return {k: {"choice": v["choice"], "ms": _times(v.get("ms"))}
            for k, v in found.items() if isinstance(v.get("choice"), str)}


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
