"""The `alexnet` command. Each subcommand lives in its own module, imported only when it runs.

A command module provides `add_arguments(parser)` and `run(args) -> int`. Bad input (an AlexNetError or
other ValueError, an OSError, an unknown option, a size too large to allocate or past int64) prints
one line on stderr and exits with code 2.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import importlib
import os
import signal
import sys
import time
import warnings

from . import __version__
from .errors import AlexNetError, first_line, quiet_here
from .machine import env_flag

# command -> (module, one-line help)
COMMANDS = {
    "train": ("alexnet.train", "train a network (default: the paper's, on the built-in data)"),
    "eval": ("alexnet.evaluate", "top-1/top-5 error of a checkpoint, 1 or 10 crops"),
    "predict": ("alexnet.predict", "top-k classes of images"),
    "summary": ("alexnet.summary", "the layer table, generated from the model"),
    "prepare": ("alexnet.data.prepare", "prepare a dataset once: 256×256 shards and statistics"),
    "bench": ("alexnet.benchmarks", "measure training/inference speed and the data loader"),
    "show": ("alexnet.visualize", "pictures: filters, predictions, neighbours, curves, activations"),
    "ablate": ("alexnet.ablate", "train with one idea of the paper changed at a time"),
    "figure1": ("alexnet.figure1", "the paper's Figure 1: ReLU against tanh in a small CNN, "
                                   "with seeds"),
    "export": ("alexnet.export", "export a checkpoint to onnx, torchscript or safetensors"),
    "convert": ("alexnet.export", "convert torchvision weights into an alexnet checkpoint"),
    "features": ("alexnet.export", "extract a layer's activations for a dataset"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit 2 (argparse's own also exits 2, with usage)."""

    def error(self, message):
        said = f"{self.prog}: error: {message}\n"
        if quiet_here():
            self.exit(quiet_exit(lambda: sys.stderr.write(said)))
        self.exit(2, said)


QUIET_WAIT_S = 30.0


def quiet_exit(say) -> int:
    """Exit code 2 without a word, leaving the message to another rank (errors.quiet_here), but
    not before it: torchrun ends every process as soon as one fails, the one that would have
    printed among them. So this one waits to be ended (outside a command SIGTERM ends it at once),
    at most QUIET_WAIT_S. Still alive then, it calls `say()`: the rank that was to say the error
    has not failed (this process met it alone: memory, a read), so nobody else will."""
    try:
        time.sleep(QUIET_WAIT_S)
    except KeyboardInterrupt:  # Ctrl-C, forwarded by torchrun: no traceback
        return 2
    say()
    return 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, `kill`, a scheduler), raised in the command's own process like Ctrl-C, so
    that a file being written has its temporary file removed on the way out: the old file or the
    new one stays, and no half-written temporary is left beside it."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _forked_child_ends_on_sigterm() -> None:
    """After every fork: a process forked while a command runs (a loader or prepare worker) ends
    on SIGTERM at once, as SIGTERM would end it. Our handler, inherited, runs only between
    bytecodes: a SIGTERM that came just before a blocking call (a pool worker waiting for its next
    task) was noted and never acted on, and the parent waited for that worker forever (once in 12
    `bench data` runs here, session 27)."""
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_forked_child_ends_on_sigterm)


@contextlib.contextmanager
def _sigterm_raises():
    """While a command runs, SIGTERM raises Terminated in this process (unless someone else, e.g.
    a test runner, handles SIGTERM already); the previous handler is put back after. Processes
    it forks meanwhile end on SIGTERM (_forked_child_ends_on_sigterm)."""
    try:
        previous = signal.getsignal(signal.SIGTERM)
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (main() called from a thread): leave it
        previous = None
    try:
        yield
    finally:
        if previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _own_warnings_on_one_line():
    """While a command runs, a warning raised in alexnet's own code prints as one line,
    `alexnet: warning: …` (as train's notes do): Python's form adds our file, line number and
    source line, which tell the user nothing. Warnings from other libraries keep Python's form."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not os.path.abspath(filename).startswith(package):
            return previous(message, category, filename, lineno, file, line)
        print(f"alexnet: warning: {message}", file=file or sys.stderr, flush=True)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


@contextlib.contextmanager
def _names_print_as_they_are():
    """While a command runs, a file or class name that is not UTF-8 (Python holds its bytes as
    surrogates) goes to stdout as its own bytes, as `ls` or `find` print it. Python's default under
    a UTF-8 locale other than C is errors="strict": `predict` stopped halfway through its table.
    A stdout that is not UTF-8 shows what it cannot encode as backslash escapes instead."""
    stream = sys.stdout
    errors = getattr(stream, "errors", None)
    if errors is None or not hasattr(stream, "reconfigure"):  # not a text stream: leave it
        yield
        return
    utf8 = codecs.lookup(stream.encoding or "ascii").name == "utf-8"
    stream.reconfigure(errors="surrogateescape" if utf8 else "backslashreplace")
    try:
        yield
    finally:
        stream.reconfigure(errors=errors)


def fail(message: str) -> int:
    print(f"alexnet: error: {message}", file=sys.stderr)
    return 2


def _top_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="alexnet", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version="alexnet " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        try:
            args = _top_parser().parse_args(argv)  # prints help/version or a one-line error
        except SystemExit as e:
            return int(e.code or 0)
        _top_parser().print_help()
        return 0 if args.command is None and not argv else 2
    command, rest = argv[0], argv[1:]
    module_name, help_ = COMMANDS[command]
    module = importlib.import_module(module_name)
    parser = ArgumentParser(prog=f"alexnet {command}", description=help_)
    # A module serving several commands (export) has add_arguments_<command>/run_<command>.
    add = getattr(module, f"add_arguments_{command}", None) or module.add_arguments
    run = getattr(module, f"run_{command}", None) or module.run
    add(parser)
    try:
        args = parser.parse_args(rest)
    except SystemExit as e:  # --help (0) or a one-line usage error (2), already printed
        return int(e.code or 0)
    try:
        with _sigterm_raises(), _own_warnings_on_one_line(), _names_print_as_they_are():
            return int(run(args) or 0)
    except Terminated:
        fail("terminated")
        return 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM
    except KeyboardInterrupt:
        fail("interrupted")
        return 128 + signal.SIGINT  # as a shell reports Ctrl-C: not the bad-input code 2
    except BrokenPipeError:  # `alexnet summary | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0
    except (ValueError, OSError, MemoryError) as e:  # AlexNetError is a ValueError
        if _debug():
            raise
        if quiet_here(e):
            return quiet_exit(lambda: fail(describe_error(e)))
        return fail(describe_error(e))
    except (RuntimeError, TypeError, OverflowError) as e:
        # torch reports an allocation it cannot make as a RuntimeError, and a size past int64
        # (`--batch-size 99999999999999999999`) as a TypeError or RuntimeError; others are bugs
        overflow = _overflow(e)
        if _debug() or not (overflow or _out_of_memory(e)):
            raise
        if overflow:
            what = first_line(e, 300).split(" with error")[0]  # torch's words: an unpaired quote
            past = "" if isinstance(e, OverflowError) else " (past int64)"  # Python's: any kind
            return fail(describe_error(ValueError(f"a number too large{past}: {what}")))
        return fail(describe_error(MemoryError(first_line(e, 300))))


def _out_of_memory(e: Exception) -> bool:
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text
                                            or "out of memory" in text.lower())


def _overflow(e: Exception) -> bool:
    """A size that fits no C integer: torch's "Overflow when unpacking long long" (TypeError) or
    "Storage size calculation overflowed" (RuntimeError), or Python's OverflowError."""
    text = str(e)
    return (isinstance(e, OverflowError) or "Overflow when unpacking long" in text
            or "size calculation overflowed" in text)


def _debug() -> bool:
    """ALEXNET_DEBUG=1: the traceback instead of the one-line error. 0 (off, false, no) is off,
    as for the other switches; a value it cannot read counts as on (the user asked for more)."""
    try:
        return env_flag("ALEXNET_DEBUG", default=False)
    except AlexNetError:
        return True


def describe_error(e: BaseException) -> str:
    """One line for an error: the library's message, the flag it concerns, the file for an OSError.

    The library raises AlexNetError (a ValueError) in its own words, with the option at fault
    where it knows it; other ValueErrors (torch's, numpy's), OSErrors (a full disk, a path that
    is a directory) and MemoryErrors (an allocation far too large) are bad input or a bad
    environment too, never a reason for a traceback. Set ALEXNET_DEBUG=1 to get the traceback
    instead."""
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        message = f"{e.strerror}{where}"
    else:
        message = first_line(e, 300)
    if isinstance(e, MemoryError):  # e.g. a --size or an image count far too large
        message = f"not enough memory: {message}"
    option = getattr(e, "option", None)
    if option:
        message += f" (--{option.replace('_', '-')})"
    return message

if __name__ == "__main__":
    sys.exit(main())
