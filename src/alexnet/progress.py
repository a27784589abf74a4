"""A progress bar per epoch (tqdm), in the spirit of torchvision's MetricLogger: it shows the
running loss, the learning rate and img/s, and tqdm adds the elapsed time and the ETA."""
from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    """Use as a context manager: the bar is closed however the block ends, so an error message
    starts on a line of its own, not after a half-drawn bar."""

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr,
                        disable=not enabled, mininterval=0.5)

    def update(self, **fields) -> None:
        self.bar.set_postfix(fields, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        drawn = not self.bar.disable
        self.bar.close()
        # On a terminal the closed bar's line is cleared and reused. In a log file that line is
        # only returned to ("\r"), and what follows (an error) would be read after the bar's text.
        if drawn and not _is_terminal(self.bar.fp):
            self.bar.fp.write("\n")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a wrapper without isatty, or a closed stream
        return False
