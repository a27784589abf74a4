"""Atomic file writes: a killed run leaves either the old file or the new one, never half of one.

Every writer goes to a temporary file in the same directory, flushes it to disk, then renames it
over the target (rename is atomic on POSIX within one file system).
"""
from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import AlexNetError, Busy, WriteError, first_line


@contextmanager
def atomic_path(path: str | os.PathLike, chunk: int = 0) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path`, else delete it.
    `chunk`: the most bytes the writer asks for at once (see the full-disk check below).

    A symbolic link is followed (the file it points to is replaced, the link stays); a path that
    is a device, a pipe or a socket is refused: renaming over it would replace, say, /dev/null."""
    path = Path(path)
    if str(path) in ("", "."):
        raise WriteError("the output path is empty; give a file name")
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise WriteError(f"{path} is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise WriteError(f"{path} is not a regular file (a device or a pipe); give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # its message would name the temporary file, not the user's path
        raise WriteError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600, and a writer may replace the file with its own: give the published
        # file the usual permissions, after it is written
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as f:  # make the bytes durable before the rename publishes them
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except AlexNetError:
        raise
    except Exception as e:
        # A full disk reaches us in each writer's words (torch.save: "unexpected pos ..." as a
        # RuntimeError), or as an OSError naming the temporary file. Anything else (reading an
        # input, a bug) passes on as it is. (safetensors is written as bytes by Python, since its
        # own writer's error left no sign of the full disk: weights.save_safetensors.)
        if getattr(e, "errno", None) == errno.ENOSPC or (isinstance(e, RuntimeError)
                                                          and _disk_full(path.parent, chunk)):
            raise WriteError(f"cannot write {path}: no space left on device") from None
        if isinstance(e, OSError) and e.filename is not None and Path(e.filename) == tmp:
            raise WriteError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _disk_full(directory: Path, chunk: int = 0) -> bool:
    """Whether the file system holding `directory` has too little left for one more write of
    `chunk` bytes plus 64 MiB. A writer that failed for want of space may leave up to one
    write's worth free (torch.save writes fc6's 151 MB at once), and ext4 shows free a reserve
    (up to some 16 MiB, and root's 5%) that a write may not get."""
    try:
        return shutil.disk_usage(directory).free < chunk + (64 << 20)
    except OSError:
        return False


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], chunk: int = 0) -> None:
    """Call `write(tmp_path)` and publish the result at `path` atomically."""
    with atomic_path(path, chunk) as tmp:
        write(tmp)


# What a command reads from a run directory given as its input: the weights (best.pt) and the
# metrics (show curves).
RUN_INPUTS = ("best.pt", "metrics.jsonl")


def check_not_same(sources, out: str | os.PathLike) -> None:
    """Refuse to write `out` over one of `sources` (a path or several): the atomic rename would
    replace the input with the output. A run directory stands for the files read from it
    (RUN_INPUTS): `export RUN … RUN/best.pt` would replace the weights it reads."""
    out = Path(out)
    if not out.exists():
        return
    for source in [sources] if isinstance(sources, (str, os.PathLike)) else sources:
        source = Path(source)
        files = [source / name for name in RUN_INPUTS] if source.is_dir() else [source]
        for file in files:
            if file.exists() and os.path.samefile(file, out):
                raise AlexNetError(f"the output {out} is the input too ({file}); write to "
                                   f"another file")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8; a file name that is not (Python holds its bytes as surrogates) is written back as
    the bytes it has on disk, so a listing of files names each as it is."""
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def strict_json(obj):
    """`obj` with null for NaN and ±infinity (one seed has no sd and no interval): Python writes
    and reads those, but they are not JSON, and jq or a browser refuse the file. For files we
    do not read back."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


# --- reading back what a run wrote ----------------------------------------------------------------

def read_json(path: Path, lines: bool = False) -> tuple[Any, str | None]:
    """(content, None) of a JSON file (JSON Lines: a list, one value a line), or (None, what is
    wrong with it), so that each caller can say in one line what to do about it (json's own
    message names no file)."""
    number = 0  # JSON Lines: the file's line, where json's own lineno counts within one line
    try:
        text = path.read_text(encoding="utf-8")
        if not lines:
            return json.loads(text), None
        rows = []
        for number, line in enumerate(text.splitlines()):  # blank lines (an editor's) skipped
            if line.strip():
                rows.append(json.loads(line))
        return rows, None
    except OSError as e:
        return None, e.strerror or first_line(e)
    except json.JSONDecodeError as e:  # its own words name no file, and run long
        return None, f"not JSON at line {number + e.lineno} column {e.colno}"
    except ValueError:
        return None, "not UTF-8 text"


def read_text(path: str | os.PathLike) -> str:
    """A user's text file (a names or labels file): UTF-8, with or without the byte-order mark
    that Windows editors put first (read as UTF-8, it glued itself to the first line's first
    field, so that the line matched nothing). OSError and UnicodeDecodeError as open raises them."""
    return Path(path).read_text(encoding="utf-8-sig")


def text_fields(line: str, maxsplit: int = -1) -> list[str]:
    """A line's fields: split at tabs when it has one, so that a field may hold spaces (a class
    folder "café au lait", a file "my photo.jpg"); else at any whitespace, the usual form."""
    if "\t" in line:
        return [f.strip() for f in line.split("\t", maxsplit) if f.strip()]
    return line.split(maxsplit=maxsplit)


def read_cache(path: Path, fields: dict[str, type | tuple | Callable[[Any], bool]], log=print,
               then: str = "computed again") -> dict | None:
    """The result cached at `path`, or None when there is none or it is damaged (not JSON, or
    short of one of `fields`, key: type or a predicate for what lies deeper, what its reader
    reads of it): a cache holds nothing that cannot be computed again, so a damaged one is, and
    overwritten, after a note."""
    if not path.is_file():
        return None
    got, why = read_json(path)
    if why is None and not isinstance(got, dict):
        why = f"a JSON {type(got).__name__}, not an object"
    elif why is None:
        bad = [k for k, kind in fields.items() if k not in got or not _valid(got[k], kind)]
        why = f"no valid {', '.join(bad)}" if bad else None
    if why is None:
        return got
    log(f"{path} is damaged ({why}), {then}")
    return None


def _valid(value: Any, kind) -> bool:
    """isinstance(value, kind) for a type or a tuple of types; else kind is a predicate."""
    return isinstance(value, kind) if isinstance(kind, (type, tuple)) else bool(kind(value))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    atomic_write(path, lambda p: torch.save(obj, p), chunk=_largest_tensor(obj))


def _largest_tensor(obj: Any) -> int:
    """The bytes of the largest tensor storage in nested dicts, lists and tuples: torch.save
    writes each storage at once."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    values = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) \
        else ()
    return max((_largest_tensor(v) for v in values), default=0)


# --- one writer per directory --------------------------------------------------------------------

LOCK_NAME = ".lock"
# What atomic_path leaves behind when its process is killed: ".<name>.<mkstemp's 8 chars>.tmp".
_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def is_temp_name(name: str) -> bool:
    """Whether `name` is that of an atomic write's temporary file."""
    return _TEMP.match(name) is not None


def sweep_temp(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of killed atomic writes in `directory` (not recursive).
    Only safe while holding the directory's lock (locked_dir): a live writer's file looks the
    same. Returns what was deleted."""
    removed = []
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False) and is_temp_name(entry.name):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except FileNotFoundError:
                pass
    return removed


_held_locks: set[int] = set()  # the descriptors of the locks this process holds


def close_inherited_locks() -> None:
    """In a forked child that only helps its parent (a data loader worker): close the lock
    descriptors it inherited. flock(2) locks belong to the open file, which a fork shares, so the
    workers of a SIGKILLed run held its lock until they noticed and exited, seconds later, and an
    immediate --resume was refused. Closing (not unlocking) leaves the parent's lock as it is."""
    for fd in _held_locks:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_locks.clear()


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"  # "an output directory"


@contextmanager
def locked_dir(directory: str | os.PathLike, what: str = "directory") -> Iterator[Path]:
    """Hold an exclusive lock on `directory` (created if missing) for the duration, then sweep
    the temporary files a killed writer left in it. A second process asking for the same lock
    gets Busy at once rather than waiting (two runs writing one directory would mix their files).

    flock(2) locks die with their process, so a SIGKILLed run leaves no stale lock behind (its
    loader workers close their copy: close_inherited_locks)."""
    directory = Path(directory)
    made = [p for p in (directory, *directory.parents) if not p.exists()]  # runs/demo, runs
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise AlexNetError(f"cannot use {directory} as {_a(what)}: {e.strerror or e}") from None
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise Busy(f"{directory} is in use by another process (pid {holder}); wait for it "
                       f"or choose another {what}") from None
        locked = True
        _held_locks.add(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        sweep_temp(directory)
        yield directory
    except BaseException:
        if made and locked and [p.name for p in directory.iterdir()] == [LOCK_NAME]:
            # a run that failed before writing anything leaves no directory it made (still
            # holding the lock, so no other process is using it), nor the parents it made
            (directory / LOCK_NAME).unlink()
            for parent in made:
                try:
                    parent.rmdir()
                except OSError:  # another process wrote there since: it stays
                    break
        raise
    finally:
        _held_locks.discard(fd)
        os.close(fd)  # releases the lock
