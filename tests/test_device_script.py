"""scripts/cuda_check.sh runs only on a lent GPU, with minutes of device time for all its steps:
an option misspelt there would cost a whole step. So every `alexnet` command in it must parse
here, with the command-line parser that would run it (nothing is executed)."""
import argparse
import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from alexnet.cli import COMMANDS, ArgumentParser

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "cuda_check.sh"
VARIABLES = {"$OUT": "/tmp/out", "$WORK": "/tmp/work", "$W": "14", "$PHOTOS": "8192",
             "$A": "alexnet"}


def _commands() -> list[list[str]]:
    """Every `$A ...` command in the script, continuation lines joined, variables filled in."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        # a command runs to `&&` or to the end of its line, less the quote closing `bash -c "..."`
        for match in re.finditer(r"\$A ([^&]+)", line):
            command = match.group(1).strip()
            if command.count('"') % 2:
                command = command.removesuffix('"')
            for name, value in VARIABLES.items():
                command = command.replace(name, value)
            commands.append(shlex.split(command))
    return commands


def _parse(argv: list[str]) -> argparse.Namespace:
    command, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[command][0])
    parser = ArgumentParser(prog=f"alexnet {command}")
    (getattr(module, f"add_arguments_{command}", None) or module.add_arguments)(parser)
    return parser.parse_args(rest)


def test_the_script_has_its_commands():
    names = {" ".join(c[:2]) for c in _commands()}
    assert {"bench model", "bench data", "prepare /tmp/photos", "train --data"} <= names


@pytest.mark.parametrize("argv", _commands(), ids=lambda argv: " ".join(argv[:3]))
def test_each_command_parses(argv):
    assert argv[0] in COMMANDS
    try:
        _parse(argv)
    except SystemExit as e:  # argparse's one-line error (printed) and exit 2
        pytest.fail(f"`alexnet {' '.join(argv)}` does not parse (exit {e.code})")


def test_a_misspelt_option_is_caught():
    with pytest.raises(SystemExit):
        _parse(["train", "--epocs", "2"])


def test_the_photos_script_makes_each_image_once(tmp_path):
    """scripts/photos.py splits the images over processes by number: none lost or made twice."""
    spec = importlib.util.spec_from_file_location("photos", SCRIPT.parent / "photos.py")
    photos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(photos)
    photos.main(str(tmp_path), 13, 5)
    for split, n in (("train", 13), ("val", 5)):
        names = sorted(p.name for p in (tmp_path / split).glob("class*/*.jpg"))
        assert names == [f"{i:06d}.jpg" for i in range(n)]
    photos.main(str(tmp_path / "none"), 3, 0)  # no val images: none asked for, no error
    assert not (tmp_path / "none" / "val").exists()


def test_the_default_steps_fit_one_device_call():
    """One call may run 600 s; the machine's start and the copies need the rest."""
    text = SCRIPT.read_text()
    default = re.search(r'STEPS=\$\{STEPS:-([^}]*)\}', text).group(1).split()
    limits = {name: int(limit) for limit, name in re.findall(r"^step (\d+) (\S+)", text, re.M)}
    assert set(default) <= set(limits), "a default step the script does not have"
    total = sum(limits[name] for name in default)
    assert 400 <= total <= 510, f"the default steps' limits sum to {total} s"


def test_every_test_the_script_names_exists():
    """A misspelt test id would spend the step finding nothing to run."""
    ids = re.findall(r"(tests/\w+\.py)(?:::(\w+))?", SCRIPT.read_text())
    root = SCRIPT.parents[1]
    assert len(ids) >= 5
    for path, name in ids:
        source = (root / path).read_text()
        assert not name or re.search(rf"^def {name}\(", source, flags=re.M), f"{path}::{name}"
