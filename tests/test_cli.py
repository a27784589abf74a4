"""The `alexnet` command's basic behaviour: help, version, errors as one line with exit code 2."""
import subprocess
import sys
from pathlib import Path

import pytest

from alexnet.cli import COMMANDS, main


def command_line() -> list[str]:
    """The installed console script when there is one, else the module (same entry point)."""
    script = Path(sys.executable).with_name("alexnet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "alexnet.cli"]


def test_help_as_installed():
    done = subprocess.run([*command_line(), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    for name in COMMANDS:
        assert name in done.stdout


def test_error_as_installed_is_one_line():
    done = subprocess.run([*command_line(), "summary", "--input-size", "224"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr


def test_no_arguments_prints_help(capsys):
    assert main([]) == 0
    assert "summary" in capsys.readouterr().out


def test_version(capsys):
    code = main(["--version"])
    assert code == 0
    assert capsys.readouterr().out.startswith("alexnet ")


@pytest.mark.parametrize("argv, says", [
    (["bogus"], "invalid choice: 'bogus'"),
    (["--bogus"], "--bogus"),
    (["summary", "--bogus"], "unrecognized arguments: --bogus"),
    (["summary", "--variant", "vgg"], "invalid choice: 'vgg'"),
    (["summary", "--input-size", "big"], "invalid int value: 'big'"),
])
def test_bad_usage_is_one_line_and_exit_2(capsys, argv, says):
    code = main(argv)
    assert code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and says in err


def test_user_error_is_one_line_and_exit_2(capsys):
    assert main(["summary", "--num-classes", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "alexnet: error: num_classes must be >= 1, got 0 (--num-classes)\n"


@pytest.mark.parametrize("flag", ["--batch-size", "--gemm-size", "--inference-batch-sizes"])
def test_a_number_past_int64_is_one_line(capsys, flag):
    # torch says "Overflow when unpacking long long" as a TypeError (with C++ frames) for a size
    # that fits no C integer; found by fuzzing every option with odd values
    argv = ["bench", "model", "--steps", "1", "--warmup", "0", "--configs", "c", flag, "9" * 23]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith("alexnet: error: a number too large (past int64): ")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_pythons_overflow_error_is_one_line_without_a_guess_at_its_kind(capsys, monkeypatch):
    import math
    monkeypatch.setattr("alexnet.summary.run", lambda args: math.exp(1e6))  # a float's range
    assert main(["summary"]) == 2
    assert capsys.readouterr().err == "alexnet: error: a number too large: math range error\n"


def test_a_type_error_that_is_not_an_overflow_stays_a_traceback(monkeypatch):
    monkeypatch.setattr("alexnet.summary.run", lambda args: None + 1)  # a bug of ours
    with pytest.raises(TypeError):
        main(["summary"])


@pytest.mark.parametrize("argv", [
    # `--out "$DIR"` with DIR unset: the current directory, or "not given", before
    ["train", "--out", ""], ["train", "--weights", " "], ["train", "--model-parallel", ""],
    ["ablate", "--budget", "1000", "--out", ""], ["figure1", "--out", ""],
    ["prepare", "SRC", ""], ["prepare", "SRC", "OUT", "--val-labels", ""],
    ["eval", "RUN", "--weights", ""], ["eval", "RUN", "--data", ""],
    ["predict", "RUN", "IMG", "--names", ""], ["predict", "RUN", ""],
    ["show", "filters", "RUN", "--out", ""], ["show", "curves", ""],
    ["export", "--format", "safetensors", "RUN", ""], ["convert", "torchvision", "", "x.pt"],
    ["features", "RUN", "x.npy", "--data", ""], ["bench", "data", ""],
])
def test_a_blank_path_is_refused_and_writes_nothing(tmp_path, capsys, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)  # where a blank output directory used to write
    argv = [{"SRC": str(tmp_path / "src"), "OUT": str(tmp_path / "out"), "RUN": "run",
             "IMG": "a.png"}.get(a, a) for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert len(err.splitlines()) == 1 and "an empty string" in err, err
    assert list(tmp_path.iterdir()) == []


def test_summary_help(capsys):
    code = main(["summary", "--help"])
    assert code == 0
    out = capsys.readouterr().out
    for option in ("--variant", "--input-size", "--num-classes", "--format"):
        assert option in out


def test_summary_works(capsys):
    assert main(["summary", "--variant", "owt", "--num-classes", "10"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "conv1" in out and "1×1×10" in out


def test_boolean_flags_alone_mean_on_and_take_on_off():
    import argparse

    from alexnet.config import TrainConfig, add_dataclass_arguments
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, TrainConfig)
    assert vars(parser.parse_args(["--compile"])) == {"compile": True}
    assert vars(parser.parse_args(["--lrn", "off", "--flip", "on"])) == {"lrn": False,
                                                                       "flip": True}
    assert vars(parser.parse_args(["--no-progress", "--compile", "--epochs", "2"])) == {
        "progress": False, "compile": True, "epochs": 2}
    with pytest.raises(SystemExit):
        parser.parse_args(["--lrn", "maybe"])


def test_sigterm_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, capsys,
                                                                       monkeypatch):
    # `timeout` or a scheduler ends a run with SIGTERM, whose default action would kill the
    # process before the temporary file is removed. main() turns it into an exception instead.
    import os
    import signal
    import time

    from alexnet.io import atomic_write, atomic_write_text

    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def write(tmp):
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises during the sleep
        tmp.write_text("new")

    monkeypatch.setattr("alexnet.summary.run", lambda args: atomic_write(target, write))
    before = signal.getsignal(signal.SIGTERM)
    assert main(["summary"]) == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "alexnet: error: terminated"
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert signal.getsignal(signal.SIGTERM) == before  # put back for whoever runs main() next


def test_ctrl_c_is_130_not_the_bad_input_code(capsys, monkeypatch):
    import signal

    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr("alexnet.summary.run", interrupted)
    assert main(["summary"]) == 128 + signal.SIGINT
    assert capsys.readouterr().err.strip() == "alexnet: error: interrupted"


def test_outputs_follow_links_and_never_replace_devices_or_pipes(tmp_path):
    # Every file the package writes goes through atomic_path, whose rename would replace what
    # is at the name: a reviewer's `alexnet export … /dev/full` turned the device into a file.
    import os

    from alexnet.io import atomic_write_text

    (tmp_path / "target.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to(tmp_path / "target.txt")
    atomic_write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "target.txt").read_text() == "new"
    os.mkfifo(tmp_path / "pipe")
    for special in (tmp_path / "pipe", Path("/dev/null")):
        with pytest.raises(ValueError, match="not a regular file"):
            atomic_write_text(special, "x")
    assert (tmp_path / "pipe").is_fifo() and Path("/dev/null").is_char_device()


def test_sigterm_to_a_training_process_ends_it_cleanly(tmp_path):
    """`timeout`, `kill` or a scheduler end a run with SIGTERM: in its own process (not main()
    called in the test's), with the defaults a user gets (workers, progress bar, recipe), the run
    exits 143 with one line, leaves no temporary file, and its checkpoint.pt is whole."""
    import os
    import signal

    from alexnet.checkpoint import load_checkpoint

    with open(tmp_path / "stderr.txt", "w") as err:  # a file: a full pipe would block the run
        proc = subprocess.Popen([sys.executable, "-m", "alexnet", "train", "--data",
                                 "shapes:64:16"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    for line in proc.stdout:  # epoch 1's line is printed after its checkpoint.pt is written
        if line.startswith("epoch   1/"):
            proc.send_signal(signal.SIGTERM)  # in epoch 2
            break
    proc.communicate(timeout=120)
    err = (tmp_path / "stderr.txt").read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.split("\n")[-2:] == ["alexnet: error: terminated", ""], repr(err[-300:])
    run = tmp_path / "runs" / "demo"
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    left = [p for p in [*tmp_path.rglob(".*"), *Path("/dev/shm").glob(f"*{proc.pid}*")]
            if p.name != ".lock"]  # the run directory's lock file stays, unlocked
    assert left == [], left  # no temporary file beside the run's, none in /dev/shm


def test_mean_std_on_images_without_variation_is_one_line_error(tmp_path, capsys):
    """Solid black images have pixel std 0: mean-std's 1/std was a ZeroDivisionError traceback."""
    from PIL import Image

    from conftest import one_line_error

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "data" / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (64, 64)).save(tmp_path / "data" / split / c / f"{i}.png")
    rc = main(["train", "--data", str(tmp_path / "data"), "--input-norm", "mean-std",
               "--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-progress",
               "--out", str(tmp_path / "run")])
    one_line_error(rc, capsys.readouterr().err, "(--input-norm)", "no variation",
                   "--input-norm mean")
