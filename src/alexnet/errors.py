"""The errors the library raises, in its own words. `alexnet.cli` prints any of them (and any
ValueError or OSError) as one line on stderr with exit code 2, naming the flag when it knows it."""
import contextlib
import os


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), cut at
    `limit` characters: what a one-line error quotes of someone else's exception."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]


def at_least(args, low: int, *names: str) -> None:
    """Raise AlexNetError for the first of these options (attributes of an argparse namespace)
    below `low`, naming its flag: --batch-size must be at least 1."""
    for name in names:
        if getattr(args, name) < low:
            raise AlexNetError(f"--{name.replace('_', '-')} must be at least {low}")


class AlexNetError(ValueError):
    """Bad input: an option out of range, a file that is missing, unreadable or does not fit.

    `option` names the setting at fault (a TrainConfig field such as "batch_size") where there is
    one, so that the command line can name its flag (--batch-size)."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


@contextlib.contextmanager
def same_on_every_process():
    """Errors raised inside are ones every process of a machine meets alike: they come from the
    command line and the files it names (the checkpoint to resume), read before the processes
    part ways. Under torchrun only local rank 0 says them: one line a machine, not one a process
    (see quiet_here). The error keeps its class and message; it is marked, not wrapped."""
    try:
        yield
    except Exception as e:
        e.said_by_local_rank0 = True
        raise


def quiet_here(e: BaseException | None = None) -> bool:
    """Whether this process leaves error `e` (None: argparse's usage error) to another one to
    print. Only under torchrun's agent (TORCHELASTIC_RUN_ID set), which ends every process once
    one fails: there errors of `same_on_every_process` are said by local rank 0, and rank 0's
    decisions (`said_by_rank0`: parallel.decided_by_rank0 raised rank 0's error here) by rank 0.
    Under other launchers every process says its own."""
    if not os.environ.get("TORCHELASTIC_RUN_ID"):
        return False
    if getattr(e, "said_by_rank0", False):
        return True
    local = os.environ.get("LOCAL_RANK", "0").strip()
    return local != "0" and (e is None or getattr(e, "said_by_local_rank0", False))


class DataError(AlexNetError):
    """A dataset, image, shard, statistics or checkpoint file that is missing or corrupt."""


class Busy(AlexNetError):
    """Another process holds the directory this one would write (see io.locked_dir)."""


class Diverged(AlexNetError):
    """Training produced a non-finite loss or weights; nothing non-finite was saved."""


class WriteError(AlexNetError, OSError):
    """A file that cannot be written, named as the user gave it (not the temporary file of the
    atomic write). Also an OSError, so that callers that treat an unwritable cache as a cost,
    not a failure, still do."""
