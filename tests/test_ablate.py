"""`alexnet ablate`: the budget plan, the running error, the activation study, and the runner on a
tiny budget (its table, its pictures, and resuming: finished arms are skipped, partial ones
resumed)."""
from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from alexnet import ablate
from alexnet.cli import main as cli_main
from alexnet.config import resolve_train_config
from alexnet.errors import AlexNetError

# The real paper network on 8 images of the built-in data, batches of 4, fp32 for exactness.
TINY = ["--data", "shapes:16:8", "--budget", "4", "--batch-size", "4", "--epochs", "1",
        "--precision", "fp32", "--workers", "0", "--no-progress", "--window", "4"]


def ablate_cli(capsys, out, *extra) -> tuple[int, str, str]:
    code = cli_main(["ablate", *TINY, "--out", str(out), *map(str, extra)])
    stdout, err = capsys.readouterr()
    return code, stdout, err


def table_rows(results_md: str) -> dict[str, list[str]]:
    """{arm: cells} of the arms table in results.md."""
    section = results_md.split("## One idea changed at a time")[1].split("\n\n")[1]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows}


def test_budget_becomes_epochs_and_images_per_epoch():
    assert ablate.plan_budget(4000, 2, 60000, 128) == (2, 2000)
    assert ablate.plan_budget(100, 1, 40, 8) == (3, 33)  # more epochs than asked: a small set
    with pytest.raises(AlexNetError, match="less than one batch"):
        ablate.plan_budget(100, 2, 60000, 128)


def test_running_error_keeps_the_last_window_of_images():
    r = ablate.RunningError(window=8)
    for wrong in (4, 4, 0, 2):  # batches of 4
        r.add(wrong, 4)
    assert r.seen == 8 and r.value == 2 / 8  # only the last two batches count
    study = {"batch_size": 4, "window": 8,
             "curve": [[1, 0.1, 1.0, 0], [2, 0.2, 0.5, 0], [3, 0.3, 0.25, 0], [4, 0.4, 0.2, 0]]}
    assert ablate.crossing(study, 0.6) == {"steps": 2, "images": 8, "seconds": 0.2}
    assert ablate.crossing(study, 0.9) == {"steps": 2, "images": 8, "seconds": 0.2}  # full window
    assert ablate.crossing(study, 0.1) is None


def test_activation_study_is_reproducible_and_shows_vanishing_gradients():
    cfg = resolve_train_config({"data": "shapes:16:8", "batch_size": 4, "precision": "fp32",
                                "workers": 0, "epochs": 1, "train_images": 8})
    runs = [ablate.study_one(cfg, steps=2, threshold=0.5, window=4, probe_images=4)
            for _ in range(2)]
    assert [row[2:] for row in runs[0]["curve"]] == [row[2:] for row in runs[1]["curve"]]
    assert runs[0]["grad_norms"] == runs[1]["grad_norms"]
    assert list(runs[0]["grad_norms"]) == [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
    assert runs[0]["sparsity_init"]["conv1"] > 0.1  # ReLU: exact zeros
    sig = ablate.study_one(resolve_train_config({**cfg.__dict__, "activation": "sigmoid"}),
                           steps=1, threshold=0.5, window=4, probe_images=4)
    # A sigmoid is 0 only where it underflows (a saturated unit, input < -88 in fp32): rarely.
    assert sig["sparsity_init"]["conv1"] < 0.01 < runs[0]["sparsity_init"]["conv1"]
    # The gradient reaching conv1 through four saturating layers is far smaller than with ReLU.
    assert sig["grad_norms"]["conv1"] < 0.01 * runs[0]["grad_norms"]["conv1"]


def png_ok(path) -> bool:
    with Image.open(path) as img:
        img.load()
        return img.format == "PNG" and img.size[0] > 100


def test_ablation_table_pictures_and_resume(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(ablate, "PROBE_IMAGES", 4)  # sparsity on 4 val images: faster
    out = tmp_path / "abl"
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "no-lrn", "--study", "relu")
    assert code == 0 and "budget" in stdout.lower()
    md = (out / "results.md").read_text()
    rows = table_rows(md)
    assert list(rows) == ["baseline", "no-lrn"]  # the baseline is always run, and first
    assert rows["no-lrn"][1] == "no LRN" and rows["baseline"][3] == ""  # no Δ for itself
    assert "| relu |" in md and "Gradient norm" in md
    assert png_ok(out / "ablation.png") and png_ok(out / "activation.png")
    assert json.loads((out / "activation" / "relu.json").read_text())["steps"] == 1

    # A second call skips what is finished and resumes what is not.
    (out / "no-lrn" / "results.json").unlink()
    before = (out / "baseline" / "checkpoint.pt").stat().st_mtime_ns
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "no-lrn", "--study", "relu")
    assert code == 0
    assert "baseline is finished, skipped" in stdout and "relu is finished, skipped" in stdout
    assert "no-lrn resumed from its checkpoint" in stdout
    assert (out / "baseline" / "checkpoint.pt").stat().st_mtime_ns == before
    assert table_rows((out / "results.md").read_text()) == rows  # the same numbers again


def test_a_diverging_arm_is_recorded_and_the_others_go_on(tmp_path, capsys, monkeypatch):
    import alexnet.train as train
    real = train.main

    def main(cfg, ckpt=None, **kwargs):
        if cfg.activation == "sigmoid":
            raise train.Diverged("loss became nan at epoch 1, step 1")
        return real(cfg, ckpt, **kwargs)

    monkeypatch.setattr(train, "main", main)
    out = tmp_path / "abl"
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "sigmoid", "--study", "none")
    assert code == 0 and "sigmoid diverged: loss became nan" in stdout
    rows = table_rows((out / "results.md").read_text())
    assert rows["sigmoid"][2] == "diverged" and rows["baseline"][2].endswith("%")
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "sigmoid", "--study", "none")
    assert code == 0 and "sigmoid is finished, skipped" in stdout  # not trained again


def test_other_settings_in_the_same_directory_are_refused(tmp_path, capsys):
    out = tmp_path / "abl"
    out.mkdir()
    (out / "ablate.json").write_text(json.dumps({"budget": 999, "shared": {}}))
    code, _, err = ablate_cli(capsys, out, "--study", "none")
    assert code == 2 and "other settings" in err and "budget" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("extra, message", [
    (["--arms", "baseline,nope"], "--arms: unknown nope"),
    (["--study", "relu,swish"], "--study: unknown swish"),
    (["--threshold", "25"], "--threshold"),
    (["--arms", "none", "--study", "none"], "nothing to do"),
    (["--activation", "tanh"], "unrecognized arguments"),  # what the arms vary is not an option
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, extra, message):
    try:
        code, _, err = ablate_cli(capsys, tmp_path / "abl", *extra)
    except SystemExit as e:  # argparse's own errors
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "abl" / "baseline").exists()


@pytest.mark.slow
def test_every_arm_is_a_row(tmp_path, capsys):
    out = tmp_path / "all"
    code, _, _ = ablate_cli(capsys, out, "--study", "none")
    assert code == 0
    assert list(table_rows((out / "results.md").read_text())) == list(ablate.ARMS)
    reseed = json.loads((out / "reseed" / "config.json").read_text())
    assert reseed["seed"] == 1 and json.loads((out / "baseline" / "config.json").read_text())[
        "seed"] == 0
    assert json.loads((out / "one-tower" / "config.json").read_text())["towers"] == 1
    best = torch.load(out / "no-lrn" / "best.pt", weights_only=True)
    assert best["arch"]["options"]["lrn"] is False
