"""`alexnet ablate`: the budget plan, the paired statistics of the report (against numbers worked
by hand on fake run directories, no training), the verdict rules, the pilot, the width option of
the tower arm, and the runner on a tiny budget (seeds layout, skipping finished runs, resuming
partial ones, --seeds 1). The studies (activation, dropout) are in test_studies.py."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from alexnet import ablate, alexnet, studies, train
from alexnet.config import resolve_train_config
from alexnet.errors import AlexNetError
from alexnet.io import locked_dir
from alexnet.model import scaled
from alexnet.visualize.ablation import RUN_NUMBERS
from conftest import ablate_cli, one_line_error, png_ok

T975_2 = 4.302653   # t(0.975, df 2), from published tables (as tests/test_stats.py)
T975_1 = 12.706205  # t(0.975, df 1)


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


# --- the paired statistics, on fake run directories -----------------------------------------------

def fake_run(path, top1: float, seconds: float = 60.0) -> None:
    """What a finished `alexnet train` run leaves that the report reads."""
    path.mkdir(parents=True)
    epoch = {"epoch": 1, "train_loss": 1.0, "val_loss": 1.25, "val_top1_error": top1,
             "val_top5_error": 0.1, "lr": 1e-3, "img_per_s": 10.0, "seconds": seconds}
    (path / "metrics.jsonl").write_text(json.dumps(epoch) + "\n")
    (path / "results.json").write_text(json.dumps(
        {"1-crop": {"top1_error": top1, "top5_error": 0.1, "images": 500, "loss": 1.25}}))
    (path / "config.json").write_text(json.dumps({"train_images": 64, "batch_size": 32}))


# Validation top-1 errors for seeds 0, 1, 2 (None: the run diverged).
FAKE = {"baseline": (0.40, 0.50, 0.60),         # mean 0.5; deviations −0.1, 0, 0.1: sd 0.1
        "no-lrn": (0.44, 0.55, 0.66),           # differences +4, +5, +6 points
        "non-overlapping": (0.36, 0.45, 0.54),  # −4, −5, −6
        "no-lighting": (0.41, 0.48, 0.64),      # +1, −2, +4
        "average-pool": (0.44, 0.55, 0.66),     # as no-lrn, but the paper claims nothing
        "one-tower-half": (0.45, None, 0.68)}   # +5, (diverged), +8


@pytest.fixture
def fake_ablation(tmp_path, capsys):
    for arm, errors in FAKE.items():
        for seed, e in enumerate(errors):
            if e is None:
                (tmp_path / arm / f"seed{seed}").mkdir(parents=True)
                (tmp_path / arm / f"seed{seed}" / "diverged.json").write_text(
                    json.dumps({"message": "loss became nan"}))
            else:
                fake_run(tmp_path / arm / f"seed{seed}", e)
    rows = ablate.run_arms({}, tmp_path, list(FAKE), [0, 1, 2])  # all finished: no training
    assert "baseline/seed0 is finished, skipped" in capsys.readouterr().out
    return tmp_path, {r["arm"]: r for r in rows}


def test_paired_differences_and_verdicts_by_hand(fake_ablation):
    _, rows = fake_ablation
    base = rows["baseline"]
    assert base["val_top1_mean"] == pytest.approx(0.5) and base["val_top1_sd"] == pytest.approx(0.1)
    assert "difference" not in base and "verdict" not in base
    # no-lrn: differences 0.04, 0.05, 0.06: mean 0.05, sd 0.01, standard error 0.01/√3 = 0.005774;
    # half-width 4.302653 × 0.005774 = 0.024841 → [0.025159, 0.074841]: all above 0, held.
    d = rows["no-lrn"]["difference"]
    assert d["estimate"] == pytest.approx(0.05)
    assert (d["low"], d["high"]) == pytest.approx((0.05 - 0.024841, 0.05 + 0.024841), abs=1e-6)
    assert d["n"] == 3 and rows["no-lrn"]["verdict"] == "held"
    # non-overlapping: the mirror image, all below 0: not held.
    assert rows["non-overlapping"]["difference"]["high"] == pytest.approx(-0.025159, abs=1e-6)
    assert rows["non-overlapping"]["verdict"] == "not held"
    # no-lighting: +0.01, −0.02, +0.04: mean 0.01, deviations 0, −0.03, 0.03, sd 0.03; half-width
    # 4.302653 × 0.03/√3 = 0.074524 → [−0.064524, 0.084524]: holds 0, cannot tell.
    d = rows["no-lighting"]["difference"]
    assert (d["low"], d["high"]) == pytest.approx((-0.064524, 0.084524), abs=1e-6)
    assert rows["no-lighting"]["verdict"] == "cannot tell"
    # average-pool: the same numbers as no-lrn, but no claim in the paper: no verdict.
    assert rows["average-pool"]["verdict"] == "—"
    assert rows["average-pool"]["difference"] == rows["no-lrn"]["difference"]
    # one-tower-half: seed 1 diverged, so two pairs: +0.05, +0.08: mean 0.065, sd 0.03/√2, standard
    # error 0.015; t(0.975, 1) = 12.706205, half-width 0.190593: cannot tell.
    d = rows["one-tower-half"]["difference"]
    assert d["n"] == 2 and d["estimate"] == pytest.approx(0.065)
    assert d["high"] - d["estimate"] == pytest.approx(T975_1 * 0.015, abs=1e-6)
    assert rows["one-tower-half"]["diverged"] == {1: "loss became nan"}
    assert rows["one-tower-half"]["verdict"] == "cannot tell"


def test_pilot_gives_the_smallest_detectable_effect(fake_ablation):
    _, rows = fake_ablation
    p = ablate.pilot(rows["baseline"], classes=10)
    # sd 0.1; the pilot rule sd_diff = √2 × 0.1 = 0.141421; over 3 seeds:
    # 4.302653 × 0.141421 / √3 = 0.351310.
    assert p["sd_diff"] == pytest.approx(math.sqrt(2) * 0.1)
    assert p["detectable"] == pytest.approx(T975_2 * math.sqrt(2) * 0.1 / math.sqrt(3), abs=1e-6)
    assert "35.1 points" in ablate.format_pilot(p, 3) and "chance" not in ablate.format_pilot(p, 3)
    # A baseline at chance (90% error with 10 classes) has a small spread for a bad reason.
    at_chance = ablate.pilot({**rows["baseline"], "val_top1_mean": 0.891}, classes=10)
    assert "at chance (90.0% error)" in ablate.format_pilot(at_chance, 3)
    one = ablate.summarise("baseline", {0: {"val_top1_error": 0.4, **dict.fromkeys(
        RUN_NUMBERS, 0.0)}}, None, ablate.about("baseline"))
    assert ablate.pilot(one, classes=10) is None and "cannot tell" in ablate.format_pilot(None, 1)


def test_one_seed_has_no_interval_and_cannot_tell():
    numbers = dict.fromkeys(RUN_NUMBERS, 0.0)
    base = {0: {"val_top1_error": 0.5, **numbers}}
    arm = {0: {"val_top1_error": 0.9, **numbers}}  # 40 points worse, but one seed says nothing
    row = ablate.summarise("no-lrn", arm, base, ablate.about("no-lrn"))
    assert row["verdict"] == "cannot tell" and math.isinf(row["difference"]["high"])
    assert "one seed: no interval" in ablate.format_arms_table([row])


def test_one_seeds_report_is_strict_json(tmp_path):
    """One seed has no sd and no interval: results.json held NaN and -Infinity, which Python
    reads but jq and browsers refuse."""
    numbers = dict.fromkeys(RUN_NUMBERS, 0.0)
    base = ablate.summarise("baseline", {0: {"val_top1_error": 0.5, **numbers}}, None,
                            ablate.about("baseline"))
    arm = ablate.summarise("no-lrn", {0: {"val_top1_error": 0.9, **numbers}},
                           {0: {"val_top1_error": 0.5, **numbers}}, ablate.about("no-lrn"))
    assert math.isnan(base["val_top1_sd"]) and math.isinf(arm["difference"]["high"])
    cfg = resolve_train_config({"data": "shapes:16:8"})
    ablate.write_report(tmp_path, cfg, {}, "plan", [base, arm], {}, {}, None)
    saved = json.loads((tmp_path / "results.json").read_text(), parse_constant=pytest.fail)
    baseline, no_lrn = saved["arms"]
    assert baseline["val_top1_sd"] is None and no_lrn["difference"]["high"] is None


def test_the_report_shows_the_numbers(fake_ablation):
    out, rows = fake_ablation
    cfg = resolve_train_config({"data": "shapes:16:8"})
    ablate.write_report(out, cfg, {}, "plan", list(rows.values()), {}, {},
                        ablate.pilot(rows["baseline"], classes=10))
    md = (out / "results.md").read_text()
    cells = table_rows(md)
    assert cells["baseline"][2] == "50.0% ± 10.0" and cells["baseline"][4:6] == ["", ""]
    assert cells["no-lrn"][4] == "+5.0 [+2.5, +7.5]" and cells["no-lrn"][5] == "held"
    assert cells["non-overlapping"][5] == "not held"
    assert cells["one-tower-half"][3] == "2 (+1 diverged)"
    assert "| one-tower-half | 45.0% | diverged | 68.0% |" in md  # the per-seed table
    assert png_ok(out / "ablation.png")
    saved = json.loads((out / "results.json").read_text())
    assert saved["arms"][1]["verdict"] == "held" and saved["pilot"]["seeds"] == 3


# --- the arms and the width option ----------------------------------------------------------------

def test_one_tower_half_is_the_papers_one_gpu_net():
    given = ablate.arm_given({"seed": 0}, "one-tower-half", Path("d"), 3)
    assert (given["towers"], given["width"], given["seed"]) == (1, 0.5, 3)
    assert given["out"] == str(Path("d") / "one-tower-half" / "seed3")
    # Half the kernels in conv1-conv4; conv5 and fc6/fc7 at full size (paper §3.2, note 2). By
    # hand, (inputs·k² + 1)·outputs per layer, one tower:
    #   conv1 (3·121 + 1)·48 = 17,472      conv2 (48·25 + 1)·128 = 153,728
    #   conv3 (128·9 + 1)·192 = 221,376    conv4 (192·9 + 1)·192 = 331,968
    #   conv5 (192·9 + 1)·256 = 442,624    fc6 (9216 + 1)·4096 = 37,752,832
    #   fc7 (4096 + 1)·4096 = 16,781,312   fc8 (4096 + 1)·1000 = 4,097,000
    # total 59,798,312, against the two-tower net's 60,965,224 ("approximately the same").
    with torch.device("meta"):
        half = alexnet("paper", towers=1, width=0.5)
        paper = alexnet("paper", width=1.0)
    assert sum(p.numel() for p in half.parameters()) == 59_798_312
    assert sum(p.numel() for p in paper.parameters()) == 60_965_224
    assert [getattr(half.features, n).out_channels for n in ("conv1", "conv2", "conv3", "conv4",
                                                    "conv5")] == [48, 128, 192, 192, 256]
    # Rounding: to a whole number of kernels per tower, half up, at least one per tower.
    assert scaled(96, 0.3, 2) == 28 and scaled(96, 0.3, 1) == 29 and scaled(256, 0.001, 2) == 2
    with pytest.raises(AlexNetError, match="width must be > 0.0") as e:
        alexnet("paper", width=0.0)
    assert e.value.option == "width"


def test_one_seed_gives_every_arm_the_same_start():
    """Same seed: same initial weights where the shapes agree (baseline, no-lrn) and the same
    data order; another seed: other weights."""
    given = {"data": "shapes:16:8", "batch_size": 4, "precision": "fp32", "workers": 0,
             "epochs": 1, "train_images": 8}
    nets = {}
    for name, seed, change in (("base", 0, {}), ("no-lrn", 0, {"lrn": False}), ("other", 1, {})):
        t = train.setup(resolve_train_config({**given, "seed": seed, **change}))
        nets[name] = (t.rt.unwrap(t.model).features.conv2.weight.detach().clone(),
                      t.train_loader.indices(0).tolist())
    assert torch.equal(nets["base"][0], nets["no-lrn"][0]) and nets["base"][1] == nets["no-lrn"][1]
    assert not torch.equal(nets["base"][0], nets["other"][0])


# --- the runner -----------------------------------------------------------------------------------

def test_seeds_layout_skip_resume_and_more_seeds(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(studies, "PROBE_IMAGES", 4)  # sparsity on 4 val images: faster
    out = tmp_path / "abl"
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "no-lrn", "--study", "relu",
                                 "--seeds", "2", "--seed", "5")
    assert code == 0 and "seeds 5–6 (2), paired" in stdout
    for arm in ("baseline", "no-lrn"):
        for seed in (5, 6):
            config = json.loads((out / arm / f"seed{seed}" / "config.json").read_text())
            assert config["seed"] == seed and config["lrn"] is (arm == "baseline")
    rows = table_rows((out / "results.md").read_text())
    assert list(rows) == ["baseline", "no-lrn"]  # the baseline is always run, and first
    assert rows["no-lrn"][5] in ("held", "not held", "cannot tell") and rows["baseline"][4] == ""
    assert png_ok(out / "ablation.png") and png_ok(out / "activation.png")

    # A second call skips what is finished and resumes what is not.
    (out / "no-lrn" / "seed6" / "results.json").unlink()
    before = (out / "baseline" / "seed5" / "checkpoint.pt").stat().st_mtime_ns
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "no-lrn", "--study", "relu",
                                 "--seeds", "2", "--seed", "5")
    assert code == 0 and "baseline/seed5 is finished, skipped" in stdout
    assert "no-lrn/seed6 resumed from its checkpoint" in stdout
    assert "relu is finished, skipped" in stdout
    assert (out / "baseline" / "seed5" / "checkpoint.pt").stat().st_mtime_ns == before
    assert table_rows((out / "results.md").read_text()) == rows  # the same numbers again

    # --seeds 1 reports on the first seed alone, trains nothing, and can tell nothing.
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "no-lrn", "--study", "none",
                                 "--seeds", "1", "--seed", "5")
    assert code == 0 and ": training" not in stdout
    rows = table_rows((out / "results.md").read_text())
    assert rows["no-lrn"][5] == "cannot tell" and "one seed: no interval" in rows["no-lrn"][4]
    assert "fewer than two finished baseline seeds" in stdout


def test_a_diverging_arm_is_recorded_and_the_others_go_on(tmp_path, capsys, monkeypatch):
    real = train.main

    def main(cfg, ckpt=None, **kwargs):
        if cfg.activation == "sigmoid":
            raise train.Diverged("loss became nan at epoch 1, step 1")
        return real(cfg, ckpt, **kwargs)

    monkeypatch.setattr(train, "main", main)
    out = tmp_path / "abl"
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "sigmoid", "--study", "none",
                                 "--seeds", "1")
    assert code == 0 and "sigmoid/seed0 diverged: loss became nan" in stdout
    rows = table_rows((out / "results.md").read_text())
    assert rows["sigmoid"][2] == "diverged" and rows["baseline"][2].endswith("%")
    assert rows["sigmoid"][5] == "cannot tell"
    code, stdout, _ = ablate_cli(capsys, out, "--arms", "sigmoid", "--study", "none",
                                 "--seeds", "1")
    assert code == 0 and "sigmoid/seed0 is finished, skipped" in stdout  # not trained again


def test_a_flag_spelt_out_at_its_default_is_no_change_of_settings(tmp_path):
    """ablate.json holds the flags as typed: adding `--dropout 0.5` (the default) to the same
    command was refused as other settings."""
    shared = {"data": "shapes:16:8", "batch_size": 4, "epochs": 1, "train_images": 4,
              "precision": "fp32", "seed": 0}
    settings = {"shared": shared, "budget": 4}
    ablate.check_settings(tmp_path, settings)
    ablate.check_settings(tmp_path, {**settings, "shared": {**shared, "dropout": 0.5,
                                                            "recipe": "auto"}})
    with pytest.raises(AlexNetError, match=r"other settings \(--dropout\)"):
        ablate.check_settings(tmp_path, {**settings, "shared": {**shared, "dropout": 0.3}})


def test_other_settings_in_the_same_directory_are_refused(tmp_path, capsys):
    out = tmp_path / "abl"
    out.mkdir()
    (out / "ablate.json").write_text(json.dumps({"budget": 999, "shared": {}}))
    code, _, err = ablate_cli(capsys, out, "--study", "none")
    assert code == 2 and "other settings" in err and "budget" in err
    assert len(err.strip().splitlines()) == 1


def test_a_second_ablation_into_the_same_directory_stops_at_once(tmp_path, capsys):
    """Two ablations into one --out both ran the whole study; with arms the second stopped only
    at its first run directory, after saying it had "resumed from its checkpoint"."""
    out = tmp_path / "abl"
    with locked_dir(out, "ablate output directory"):  # the first one, still working
        code, stdout, err = ablate_cli(capsys, out, "--arms", "none", "--study", "dropout",
                                       "--overfit-images", "8", "--overfit-epochs", "1")
    one_line_error(code, err, "is in use by another process", "ablate output directory")
    assert "ablate: " not in stdout and not (out / "ablate.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--arms", "baseline,nope"], "unknown nope; choose from baseline, tanh"),
    (["--arms", "reseed"], "unknown reseed"),  # gone: the seeds are the spread now
    (["--arms", ","], "no names given; choose from baseline"),
    (["--study", "relu,swish"], "unknown swish; choose from"),
    (["--threshold", "25"], "--threshold"),
    (["--seeds", "0"], "--seeds"),
    (["--study", "dropout", "--overfit-images", "2"], "--overfit-images 2 is less than one"),
    (["--arms", "none", "--study", "none"], "nothing to do"),
    (["--activation", "tanh"], "unrecognized arguments"),  # what the arms vary is not an option
    (["--width", "0.5"], "unrecognized arguments"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, extra, message):
    try:
        code, _, err = ablate_cli(capsys, tmp_path / "abl", *extra)
    except SystemExit as e:  # argparse's own errors
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "abl" / "baseline").exists()


@pytest.mark.parametrize("flag, value", [
    ("--seeds", 0), ("--overfit-epochs", 0), ("--window", 0), ("--study-budget", -1),
    ("--budget", 0)])
def test_a_bad_option_names_its_own_flag(tmp_path, capsys, flag, value):
    """Each check names the flag at fault, and no other (--overfit-epochs 0 said "(--seeds)")."""
    code, _, err = ablate_cli(capsys, tmp_path / "abl", flag, value)
    one_line_error(code, err, flag.lstrip("-"), "must be at least")
    others = {"--seeds", "--overfit-epochs", "--window", "--study-budget", "--budget",
              "--epochs"} - {flag}
    assert not any(other in err for other in others), err


@pytest.mark.parametrize("content", ["[1]", "{", '{"shared": 3}'])
def test_a_damaged_ablate_json_is_a_one_line_error_naming_it(tmp_path, capsys, content):
    """ablate.json keeps runs of other settings apart: not a cache to rewrite unasked."""
    out = tmp_path / "abl"
    out.mkdir()
    (out / "ablate.json").write_text(content)
    code, _, err = ablate_cli(capsys, out, "--study", "none", "--arms", "baseline")
    one_line_error(code, err, str(out / "ablate.json"), "is damaged", "delete it", "--out")
    assert not (out / "baseline").exists() and (out / "ablate.json").read_text() == content


@pytest.mark.parametrize("name, content, named", [
    ("metrics.jsonl", "", "metrics.jsonl"), ("results.json", "[1]", "results.json"),
    ("results.json", "{", "results.json"), ("config.json", "{}", ""),  # "": a key is missing
    ("diverged.json", "[]", "diverged.json")])
def test_a_damaged_finished_run_is_a_one_line_error_naming_it(tmp_path, capsys, name, content,
                                                              named):
    """A finished run is train's output, not a cache: named, for the user to delete."""
    out = tmp_path / "abl"
    run = out / "baseline" / "seed0"
    fake_run(run, 0.5)
    (run / name).write_text(content)
    code, _, err = ablate_cli(capsys, out, "--study", "none", "--arms", "baseline", "--seeds", 1)
    one_line_error(code, err, f"{run / named} is damaged", f"delete {run} to train")
    assert (run / name).read_text() == content


@pytest.mark.slow
def test_every_arm_is_a_row(tmp_path, capsys):
    out = tmp_path / "all"
    code, _, _ = ablate_cli(capsys, out, "--study", "none", "--seeds", "1")
    assert code == 0
    assert list(table_rows((out / "results.md").read_text())) == list(ablate.ARMS)
    half = json.loads((out / "one-tower-half" / "seed0" / "config.json").read_text())
    assert (half["towers"], half["width"]) == (1, 0.5)
    assert json.loads((out / "one-tower" / "seed0" / "config.json").read_text())["towers"] == 1
    best = torch.load(out / "no-lrn" / "seed0" / "best.pt", weights_only=True)
    assert best["arch"]["options"]["lrn"] is False


def test_baseline_dropout_flag_sets_every_arm_and_drops_the_identical_arm(tmp_path, capsys):
    """--dropout 0: the baseline and the other arms train without dropout, and no-dropout (which
    would be the baseline itself) is dropped, with a note; the default keeps the paper's 0.5."""
    out = tmp_path / "d0"
    code, stdout, _ = ablate_cli(capsys, out, "--study", "none", "--seeds", "1", "--dropout", "0",
                                 "--arms", "no-lrn,no-dropout")
    assert code == 0
    assert "arm no-dropout is the baseline under these options, dropped" in stdout
    rows = table_rows((out / "results.md").read_text())
    assert list(rows) == ["baseline", "no-lrn"] and rows["baseline"][1] == "the paper's net, dropout 0"
    for arm in ("baseline", "no-lrn"):
        assert json.loads((out / arm / "seed0" / "config.json").read_text())["dropout"] == 0.0
    assert not (out / "no-dropout").exists()
    assert json.loads((out / "ablate.json").read_text())["shared"]["dropout"] == 0.0
    default = tmp_path / "paper"
    code, stdout, _ = ablate_cli(capsys, default, "--study", "none", "--seeds", "1", "--arms",
                                 "no-dropout")
    assert code == 0 and "dropped" not in stdout
    assert json.loads((default / "baseline" / "seed0" / "config.json").read_text())["dropout"] == 0.5
    assert json.loads((default / "no-dropout" / "seed0" / "config.json").read_text())["dropout"] == 0.0
