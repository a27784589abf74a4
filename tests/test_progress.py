"""The progress bar (progress.Progress) and what is written after it."""
from __future__ import annotations

import sys

import pytest

from alexnet.progress import Progress


@pytest.mark.parametrize("enabled", [True, False])
def test_an_error_after_a_bar_starts_its_own_line_in_a_log(capsys, enabled):
    """Written to a file (not a terminal), the closed bar's line was only returned to with "\\r",
    so the error after it read as the end of the bar's line."""
    with pytest.raises(ValueError), Progress(10, "epoch 1/3", enabled=enabled) as bar:
        bar.update(loss=2.3)
        raise ValueError("diverged")
    print("alexnet: error: diverged", file=sys.stderr)
    err = capsys.readouterr().err
    assert "alexnet: error: diverged" in err.split("\n"), repr(err)
    assert ("epoch 1/3" in err) == enabled and (err == "alexnet: error: diverged\n") != enabled
