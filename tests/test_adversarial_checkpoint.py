"""Checkpoints an adversarial user hands to the commands (issue 11): crafted, damaged or edited
ones are refused in one line with exit code 2 that names the file, and pickled code is never
run. What a checkpoint must hold is checkpoint.check_checkpoint's; what loads with weights_only is
checkpoint.read_torch_file's."""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import pytest
import torch

from alexnet.cli import main as cli_main
from conftest import FAST, one_line_exit_2


def _leave_a_mark(path: str) -> str:
    """What a pickled object runs when it is unpickled: proof that a load ran its code."""
    Path(path).write_text("the checkpoint's pickled code ran")
    return "loaded"


class _RunsOnLoad:
    """Unpickled, calls _leave_a_mark(path) (any callable could stand there: os.system...)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return _leave_a_mark, (self.path,)


@pytest.mark.parametrize("command, payload", [
    ("eval", "object"), ("eval", "function"), ("predict", "object"),
    ("train --weights", "object"), ("train --resume", "object"), ("export", "object")])
def test_a_checkpoint_carrying_pickled_code_is_refused_not_run(trained, tmp_path, capsys,
                                                               command, payload):
    """Checkpoints are read with torch.load(weights_only=True) (checkpoint.read_torch_file): a
    valid checkpoint with one more entry, a class instance whose unpickling calls a function or a
    bare function reference, must be refused in one line, the function never called. A plain
    torch.load would run it and go on with the checkpoint as if nothing were there."""
    mark = tmp_path / "MARK"
    # best.pt's weights (a third of checkpoint.pt's bytes) where no training state is needed
    source = "checkpoint.pt" if command == "train --resume" else "best.pt"
    ckpt = torch.load(trained / source, weights_only=True)
    ckpt["note"] = _RunsOnLoad(mark) if payload == "object" else _leave_a_mark
    run = tmp_path / "run"  # a run directory whose checkpoint.pt carries it
    run.mkdir()
    (run / "config.json").write_bytes((trained / "config.json").read_bytes())
    bad = run / "checkpoint.pt"
    torch.save(ckpt, bad)
    argv = {"eval": ["eval", str(bad), "--data", "shapes:16:8", "--workers", "0"],
            "predict": ["predict", str(bad), str(trained / "curves.png")],
            "train --weights": ["train", *FAST, "--epochs", "1", "--weights", str(bad),
                                "--out", str(tmp_path / "new")],
            "train --resume": ["train", "--resume", str(run), "--epochs", "2"],
            "export": ["export", str(bad), "--format", "safetensors",
                       str(tmp_path / "x.safetensors")]}[command]
    capsys.readouterr()
    code = cli_main(argv)
    err = capsys.readouterr().err
    assert not mark.exists(), f"the checkpoint's pickled code ran (exit {code})"
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"alexnet: error: cannot read {bad}: Weights only load failed"), err
    assert not (tmp_path / "x.safetensors").exists() and not (run / "metrics.jsonl").exists()
    assert not (tmp_path / "new" / "checkpoint.pt").exists()


def test_corrupt_checkpoints_and_metrics(trained, tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    del ckpt["arch"]
    torch.save(ckpt, tmp_path / "noarch.pt")
    err = one_line_exit_2(capsys, ["eval", str(tmp_path / "noarch.pt"), "--data", "shapes:16:8"])
    assert "arch" in err
    first = (trained / "metrics.jsonl").read_text().splitlines()[0]
    for damage, words in ((b"\xff\xfe not utf-8 \x80", "not UTF-8 text"),  # a copy's, not trained's
                          (f"{first}\n\n{{oops\n".encode(), "not JSON at line 3 column 2")):
        (run / "metrics.jsonl").write_bytes(damage)
        err = one_line_exit_2(capsys, ["show", "curves", str(run), "--out",
                                       str(tmp_path / "c.png")])
        assert "metrics.jsonl: not JSON lines" in err and words in err, err  # was always line 1
        assert not (tmp_path / "c.png").exists()
    (tmp_path / "text.pt").write_text("hello\n")
    (tmp_path / "cut.pt").write_bytes((trained / "best.pt").read_bytes()[:1000])
    with zipfile.ZipFile(tmp_path / "zip.pt", "w") as z:  # a zip, not torch.save's
        z.writestr("a.txt", "hello")
    for name, words in (("text.pt", "text.pt: not a PyTorch file"),
                        ("cut.pt", "cut.pt: PytorchStreamReader failed reading zip archive"),
                        # it was cut to "[enforce fail at inline_container.cc:180]"
                        ("zip.pt", "zip.pt: file in archive is not in a subdirectory: a.txt")):
        err = one_line_exit_2(capsys, ["eval", str(tmp_path / name), "--data", "shapes:16:8"])
        assert words in err and "UserWarning" not in err, err


@pytest.mark.parametrize("change, words", [
    ({"classes": ["a"]}, "classes"),       # fewer names than the net has classes
    ({"crop_size": 5}, "crop_size 5"),     # an input size the net cannot take
    ("nan", "not finite (features.conv1.weight"),  # every prediction would be nan%
    ({"config": None}, "malformed config"),  # was an AttributeError reading the run's seed
    ({"config": {"seed": "1"}}, "malformed config"),
    # a bad option is the checkpoint's, not a flag's: was "… got 'foo' (--activation)"
    ("activation", "does not describe a network this version builds: activation must be"),
    ("unknown option", "does not describe a network this version builds"),  # was a TypeError
    ("list weight", "malformed model"),  # was an AttributeError
    ("nan mean", "its stats mean_image holds NaN or inf"),  # every prediction was nan%
    ("small mean", "its stats mean_image is (100, 100, 3), not (S, S, 3)"),  # blamed --data
])
def test_checkpoints_whose_metadata_does_not_fit_their_network(trained, tmp_path, capsys,
                                                               change, words):
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    if change in ("activation", "unknown option"):
        key, value = ("activation", "foo") if change == "activation" else ("colour", 1)
        change = {"arch": {**ckpt["arch"], "options": {**ckpt["arch"]["options"], key: value}}}
    if change == "list weight":
        change = {"model": {**ckpt["model"], "features.conv1.weight": [1.0, 2.0]}}
    if change in ("nan mean", "small mean"):
        image = (torch.full((256, 256, 3), math.nan) if change == "nan mean"
                 else torch.zeros(100, 100, 3))
        change = {"stats": {**ckpt["stats"], "mean_image": image}}
    if change == "nan":
        change = {"model": dict(ckpt["model"])}
        change["model"]["features.conv1.weight"] = torch.full_like(
            ckpt["model"]["features.conv1.weight"], math.nan)
    torch.save({**ckpt, **change}, tmp_path / "bad.pt")
    for argv in (["predict", str(tmp_path / "bad.pt"), str(trained / "curves.png")],
                 ["eval", str(tmp_path / "bad.pt"), "--data", "shapes:16:8"]):
        err = one_line_exit_2(capsys, argv)
        assert words in err and "(--" not in err, err
