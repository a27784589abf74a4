"""The studies of `alexnet ablate` (alexnet.studies): the running error, the activation study
(reproducible, vanishing gradients), the dropout study (its summary worked by hand, end to end),
and their caches, computed again when damaged."""
from __future__ import annotations

import json

import pytest

from alexnet import ablate, studies
from alexnet.config import resolve_train_config
from conftest import ablate_cli, png_ok


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


def test_activation_study_takes_jpeg_shards_decoded_on_the_device_and_any_seed(tmp_path):
    # --decode device yields each batch as JPEG bytes: the study copied them with .to(); and a
    # seed near 2**63 overflowed the study's seed arithmetic.
    from alexnet.data.prepare import prepare
    prepare("shapes:16:8", tmp_path / "jpeg", encoding="jpeg", workers=0, progress=False)
    cfg = resolve_train_config({"data": str(tmp_path / "jpeg"), "batch_size": 4, "workers": 0,
                                "precision": "fp32", "epochs": 1, "decode": "device",
                                "seed": 2 ** 63 - 1, "progress": False})
    run = ablate.study_one(cfg, steps=2, threshold=0.5, window=4, probe_images=4)
    assert len(run["curve"]) == 2

# --- the dropout study ----------------------------------------------------------------------------

def curve(*pairs) -> dict:
    return {"diverged": None, "curve": [{"train_error": t, "val_error": v, "train_loss": t,
                                         "val_loss": v} for t, v in pairs]}


def test_dropout_study_summary_by_hand():
    runs = {"0.5": {0: curve((0.9, 0.9), (0.30, 0.40)), 1: curve((0.20, 0.35))},
            "0": {0: curve((0.8, 0.8), (0.05, 0.45)), 1: curve((0.00, 0.42))}}
    s = ablate.summarise_dropout(runs, (0.5, 0.0))
    # Last epochs. With dropout: gaps 0.10, 0.15; without: 0.40, 0.42. Without − with: 0.30, 0.27,
    # mean 0.285, sd 0.03/√2, standard error 0.015, half-width 12.706205 × 0.015 = 0.190593:
    # [0.094407, 0.475593], above 0: held. Val error: 0.05, 0.07, mean 0.06, standard error
    # 0.01, half-width 0.127062: [−0.067062, 0.187062]: cannot tell.
    assert s["last"]["0.5"]["gap"] == pytest.approx(0.125)
    assert s["last"]["0"]["train_error"] == pytest.approx(0.025)
    gap, val = s["gap"]["difference"], s["val_error"]["difference"]
    assert (gap["estimate"], gap["low"]) == pytest.approx((0.285, 0.094407), abs=1e-6)
    assert s["gap"]["verdict"] == "held"
    assert (val["low"], val["high"]) == pytest.approx((-0.067062, 0.187062), abs=1e-6)
    assert s["val_error"]["verdict"] == "cannot tell"


def test_dropout_study_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(studies, "OVERFIT_POINTS", 1)  # measure the last of the 2 epochs only
    out = tmp_path / "abl"
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "none", "--study", "dropout",
                                 "--seeds", "1", "--overfit-images", "4", "--overfit-epochs", "2")
    assert code == 0 and "Dropout study: 2 epochs over 4" in stdout
    run = json.loads((out / "dropout" / "p0-seed0.json").read_text())
    assert run["dropout"] == 0.0 and [c["epoch"] for c in run["curve"]] == [2]
    assert set(run["curve"][0]) >= {"train_error", "val_error", "train_loss", "val_loss"}
    md = (out / "results.md").read_text()
    assert "## Dropout and overfitting" in md and png_ok(out / "dropout.png")
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "none", "--study", "dropout",
                                 "--seeds", "1", "--overfit-images", "4", "--overfit-epochs", "2")
    assert "p 0.5 seed 0 is finished, skipped" in stdout  # cached


def test_dropout_study_reports_the_sizes_it_measured(tmp_path, capsys, monkeypatch):
    """Asked for more images than the splits hold (16 train, 8 val), the study trains and
    measures on what there is, and its report and plan say so rather than echo the request."""
    monkeypatch.setattr(studies, "OVERFIT_POINTS", 1)
    out = tmp_path / "abl"
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "none", "--study", "dropout",
                                 "--seeds", "1", "--overfit-images", "40", "--overfit-epochs", "1")
    assert code == 0 and "Dropout study: 1 epochs over 16 training images" in stdout
    run = json.loads((out / "dropout" / "p0.5-seed0.json").read_text())
    assert (run["train_images"], run["val_images"]) == (16, 8)
    md = (out / "results.md").read_text()
    assert "over 16 training images per run" in md and "on 8 val images" in md
    assert "train_images=4," in md  # the budget's, as the arms train; it said the default 0

def test_damaged_study_caches_are_computed_again(tmp_path, capsys, monkeypatch):
    """The studies' caches hold nothing that cannot be computed again: a damaged one is, with a
    note naming it."""
    monkeypatch.setattr(studies, "PROBE_IMAGES", 4)
    monkeypatch.setattr(studies, "OVERFIT_POINTS", 1)
    out = tmp_path / "abl"
    damaged = {out / "activation" / "relu.json": "[1]", out / "dropout" / "p0.5-seed0.json": "{",
               out / "dropout" / "p0-seed0.json": "{}"}
    for path, content in damaged.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "none", "--study", "relu,dropout",
                                 "--seeds", 1, "--overfit-images", 4, "--overfit-epochs", 1)
    assert code == 0
    for path in damaged:
        assert f"{path} is damaged" in stdout and "computed again" in stdout
        assert isinstance(json.loads(path.read_text())["curve"], list)  # rewritten
    assert png_ok(out / "activation.png") and png_ok(out / "dropout.png")
    relu = out / "activation" / "relu.json"
    relu.write_text(json.dumps({k: v for k, v in json.loads(relu.read_text()).items()
                                if k != "final_error"}))  # the report reads it: a KeyError
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "none", "--study", "relu,dropout",
                                 "--seeds", 1, "--overfit-images", 4, "--overfit-epochs", 1)
    assert code == 0 and f"{relu} is damaged (no valid final_error)" in stdout
    # damage deeper in: what the report and the plots read inside the curves and the norms
    relu_run, drop = json.loads(relu.read_text()), out / "dropout" / "p0.5-seed0.json"
    relu.write_text(json.dumps({**relu_run, "curve": [[1, 0.5]], "grad_norms": {"conv1": "x"},
                                "sparsity_init": {}}))  # the tables read each layer's
    drop.write_text(json.dumps({**json.loads(drop.read_text()), "curve": [{"epoch": 1}]}))
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "none", "--study", "relu,dropout",
                                 "--seeds", 1, "--overfit-images", 4, "--overfit-epochs", 1)
    assert code == 0 and f"{relu} is damaged (no valid curve, grad_norms, sparsity_init)" in stdout
    assert f"{drop} is damaged (no valid curve)" in stdout
    assert len(json.loads(relu.read_text())["curve"][0]) == 4  # computed again
