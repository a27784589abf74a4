"""Training, resume, checkpoints, evaluation and prediction, end to end on tiny built-in data."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alexnet.checkpoint import load_checkpoint
from alexnet.cli import main as cli_main
from alexnet.schedule import LRSchedule
from conftest import metrics

# Small and fast, but the real paper network: 24 training images, batches of 8, fp32 for exactness.
TINY = ["--data", "shapes:24:16", "--batch-size", "8", "--precision", "fp32", "--workers", "0",
        "--no-progress", "--eval-crops", "1", "--recipe", "paper", "--schedule", "step"]


def train(tmp: Path, name: str, *extra: str) -> int:
    return cli_main(["train", *TINY, "--out", str(tmp / name), *extra])


def same_metrics(a: list[dict], b: list[dict]) -> bool:
    keys = ("epoch", "train_loss", "val_loss", "val_top1_error", "val_top5_error", "lr")
    return len(a) == len(b) and all(
        math.isclose(x[k], y[k], rel_tol=1e-6, abs_tol=1e-9) for x, y in zip(a, b) for k in keys)


def test_run_directory_and_resume_reproduces_an_uninterrupted_run(tmp_path, capsys):
    # The lr drops at the resume (step schedule, every epoch): the momentum carried across the
    # drop (schedule.carry_velocity) must come out the same from the saved optimizer.
    drop = ("--step-epochs", "1")
    assert train(tmp_path, "full", "--epochs", "2", *drop) == 0
    out = capsys.readouterr().out
    assert "epoch   2/2" in out and "top-1 err" in out and "1-crop" in out
    full = tmp_path / "full"
    for name in ("config.json", "metrics.jsonl", "checkpoint.pt", "best.pt", "curves.png",
                 "results.json"):
        assert (full / name).is_file(), name
    assert list(full.glob("events.out.tfevents.*")), "TensorBoard events missing"
    rows = metrics(full)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "val_top1_error", "val_top5_error", "lr", "img_per_s",
            "img_per_s_after_first_step", "seconds"} <= set(rows[0])

    assert train(tmp_path, "part", "--epochs", "1", *drop) == 0
    assert cli_main(["train", "--resume", str(tmp_path / "part"), "--epochs", "2",
                     "--no-progress"]) == 0
    assert same_metrics(metrics(full), metrics(tmp_path / "part"))
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.001])
    ckpt = load_checkpoint(tmp_path / "part" / "checkpoint.pt")
    assert ckpt["epoch"] == 2 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "config"}


def test_a_run_from_before_dropout_scaling_resumes_with_torchs_dropout(tmp_path):
    from alexnet.checkpoint import save_checkpoint
    from alexnet.train import resume_config
    assert train(tmp_path, "old", "--epochs", "1") == 0
    path = tmp_path / "old" / "checkpoint.pt"
    ckpt = load_checkpoint(path)
    del ckpt["config"]["dropout_scaling"], ckpt["arch"]["options"]["dropout_scaling"]
    save_checkpoint(path, ckpt)  # as a run saved before the option existed
    cfg, _ = resume_config(tmp_path / "old", {"epochs": 2})
    assert cfg.dropout_scaling == "inverted"  # as it was trained, not the new default
    assert cli_main(["train", "--resume", str(tmp_path / "old"), "--epochs", "2",
                     "--no-progress"]) == 0
    assert load_checkpoint(path)["arch"]["options"]["dropout_scaling"] == "inverted"


def test_resume_refuses_changed_recipe(tmp_path, capsys):
    assert train(tmp_path, "r", "--epochs", "1") == 0
    capsys.readouterr()
    code = cli_main(["train", "--resume", str(tmp_path / "r"), "--lr", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "--lr" in err and len(err.strip().splitlines()) == 1


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    assert train(tmp_path, "nan", "--epochs", "1") == 0
    before = (tmp_path / "nan" / "checkpoint.pt").read_bytes()
    import alexnet.step as step_module
    real = step_module.F.cross_entropy
    monkeypatch.setattr(step_module.F, "cross_entropy",
                        lambda *a, **k: real(*a, **k) * float("nan"))
    code = cli_main(["train", "--resume", str(tmp_path / "nan"), "--epochs", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "loss became nan" in err
    assert (tmp_path / "nan" / "checkpoint.pt").read_bytes() == before


def test_explicit_out_is_never_overwritten(tmp_path, capsys):
    assert train(tmp_path, "keep", "--epochs", "1") == 0
    before = (tmp_path / "keep" / "checkpoint.pt").read_bytes()
    assert train(tmp_path, "keep", "--epochs", "1") == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (tmp_path / "keep" / "checkpoint.pt").read_bytes() == before


def test_eval_and_predict_json(tmp_path, capsys):
    assert train(tmp_path, "ep", "--epochs", "1") == 0
    capsys.readouterr()
    ckpt = tmp_path / "ep" / "checkpoint.pt"
    assert cli_main(["eval", str(ckpt), "--data", "shapes:24:16", "--crops", "10", "--json",
                     "--precision", "fp32", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["crops"] == 10 and result["images"] == 16
    assert 0 <= result["top1_error"] <= 1 and result["top5_error"] <= result["top1_error"]

    from PIL import Image
    image = tmp_path / "x.png"
    Image.new("RGB", (300, 200), (200, 30, 30)).save(image)
    assert cli_main(["predict", str(ckpt), str(image), "--topk", "3", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    classes = load_checkpoint(ckpt)["classes"]
    assert len(top) == 3 and all(t["class"] in classes for t in top)
    assert top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "/nonexistent/dir"], "nonexistent"),
    (["train", "--bogus-option", "1"], "unrecognized"),
    (["train", "--epochs", "zero"], "invalid int"),
    (["train", "--activation", "swish", "--epochs", "1"], "activation"),
    (["eval", "/nonexistent.pt"], "not found"),
    (["predict", "/nonexistent.pt", "/nonexistent.jpg"], "cannot read image /nonexistent.jpg"),
    # argparse said "required: checkpoint, images" though the weights were given
    (["predict", "--weights", "/nonexistent.pt"], "no images given"),
    (["predict"], "give a checkpoint and images"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_unreadable_and_mismatched_checkpoints(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert cli_main(["eval", str(junk), "--data", "shapes:24:16"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert train(tmp_path, "m", "--epochs", "1") == 0
    capsys.readouterr()
    # fashion-mnist has 10 classes too, so mismatch the class count with a hand-edited checkpoint
    ckpt = torch.load(tmp_path / "m" / "checkpoint.pt", weights_only=True)
    ckpt["arch"]["num_classes"] = 7
    ckpt["classes"] = ckpt["classes"][:7]  # names that fit, so that the weights are what is off
    torch.save(ckpt, tmp_path / "seven.pt")
    assert cli_main(["eval", str(tmp_path / "seven.pt"), "--data", "shapes:24:16"]) == 2
    assert "do not fit" in capsys.readouterr().err


def test_plateau_schedule_divides_by_ten_at_most_three_times():
    s = LRSchedule(0.01, "plateau", epochs=90, steps_per_epoch=10, patience=1, max_drops=3)
    assert s.lr_at(0) == 0.01
    for err in [0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]:
        s.end_epoch(err)
    assert s.drops == 3 and math.isclose(s.lr_at(500), 1e-5)
    cos = LRSchedule(1.0, "cosine", epochs=2, steps_per_epoch=10, warmup_epochs=1)
    assert cos.lr_at(0) == pytest.approx(0.1 * 0.5 * (1 + math.cos(0)))
    assert cos.lr_at(20) == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["plateau", "step"])
def test_sgd_follows_the_papers_update_across_a_learning_rate_drop(kind):
    """Against the paper's own recurrence in float64 (§5): v <- 0.9 v - 0.0005 ε w - ε ∂L/∂w,
    w <- w + v, with ε divided by 10 after 4 steps. torch's form alone would shrink the velocity
    10× at the drop (this test fails without schedule.carry_velocity)."""
    from alexnet.accel import make_sgd
    grad = lambda w: 0.3 * w + torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)  # noqa: E731
    w = nn.Parameter(torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64))
    opt = make_sgd([w], lr=0.1)
    s = LRSchedule(0.1, kind, epochs=3, steps_per_epoch=4, patience=1, step_epochs=1)
    paper_w, v = w.detach().clone(), torch.zeros(3, dtype=torch.float64)
    for step in range(8):
        eps = 0.1 if step < 4 else 0.01
        if step == 4 and kind == "plateau":
            s.end_epoch(0.5), s.end_epoch(0.5)  # no improvement: the drop
        assert s.apply(opt, step) == pytest.approx(eps)
        w.grad = grad(w.detach())
        before = w.detach().clone()
        opt.step()
        v = 0.9 * v - 0.0005 * eps * paper_w - eps * grad(paper_w)
        paper_w = paper_w + v
        torch.testing.assert_close(w.detach() - before, v, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(w.detach(), paper_w, rtol=1e-12, atol=1e-15)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_loses_nothing(tmp_path):
    """A run killed with SIGKILL in epoch 2 resumes from its epoch-1 checkpoint, sweeps what the
    kill left, and ends like an uninterrupted run: with the default workers and precision."""
    defaults = [a for a in TINY if a not in ("--workers", "0", "--precision", "fp32")]

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "alexnet.cli", "train", *defaults, "--data", "shapes:96:16",
                "--epochs", "3", "--out", str(out)]

    run, ref = tmp_path / "killed", tmp_path / "ref"
    proc = subprocess.Popen(command(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # well inside epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
    assert cli_main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert not list(run.glob(".*.tmp"))  # whatever the kill left mid-write was swept
    assert subprocess.call(command(ref), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0
    assert same_metrics(metrics(ref), metrics(run))


def test_torchvision_weights_in_predict_and_train(tmp_path, capsys):
    """--weights takes a torchvision state_dict file directly: predict names ImageNet classes, and
    train fine-tunes from it with a fresh fc8 for its own class count."""
    import torchvision
    from PIL import Image
    torch.manual_seed(0)
    pth = tmp_path / "tv.pth"
    torch.save(torchvision.models.alexnet().state_dict(), pth)
    image = tmp_path / "x.png"
    Image.new("RGB", (300, 260), (20, 120, 200)).save(image)
    assert cli_main(["predict", "--weights", str(pth), str(image), "--json", "--topk", "2"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    assert len(top) == 2 and top[0]["class"] in torchvision.models.AlexNet_Weights.IMAGENET1K_V1.meta["categories"]
    assert train(tmp_path, "ft", "--epochs", "1", "--variant", "owt", "--weights", str(pth)) == 0
    assert "classifier tensors left fresh" in capsys.readouterr().out
    tuned = load_checkpoint(tmp_path / "ft" / "checkpoint.pt")["model"]
    assert tuned["classifier.6.weight"].shape == (10, 4096)
    assert cli_main(["train", *TINY, "--out", str(tmp_path / "bad"), "--weights", str(pth)]) == 2
    assert "hold variant 'owt'" in capsys.readouterr().err


def test_weights_that_are_not_finite_are_named_not_blamed_on_the_lr(tmp_path, capsys):
    """They went as far as the first step, whose divergence was put down to the learning rate.
    Both kinds of weights file: torchvision's state_dict, and a checkpoint of ours."""
    import torchvision

    from alexnet.checkpoint import save_checkpoint
    from alexnet.data import open_dataset
    from alexnet.model import alexnet
    state = torchvision.models.alexnet(num_classes=16).state_dict()
    state["classifier.1.weight"][0, 0] = float("nan")  # fc6: fine-tuning keeps it
    torch.save(state, tmp_path / "nan.pth")
    ours = alexnet("paper", num_classes=10).state_dict()
    ours["classifier.fc6.weight"][0, 0] = float("inf")
    save_checkpoint(tmp_path / "nan.pt", {
        "model": ours, "arch": {"variant": "paper", "num_classes": 10, "in_channels": 3,
                                "options": {}},
        "stats": open_dataset("shapes:8:4", "train").stats(), "crop_size": 227})
    for name, variant, tensor in (("nan.pth", "owt", "classifier.1.weight"),
                                  ("nan.pt", "paper", "classifier.fc6.weight")):
        capsys.readouterr()
        assert train(tmp_path, "ft", "--epochs", "1", "--variant", variant, "--weights",
                     str(tmp_path / name)) == 2
        err = capsys.readouterr().err
        assert name in err and f"not finite ({tensor} holds NaN or inf)" in err, err
        assert err.count("\n") == 1 and "--lr" not in err and not (tmp_path / "ft").exists()


def test_weights_are_fine_tuned_on_the_input_scale_they_were_trained_on(tmp_path, capsys):
    # A demo run (input_norm mean-std) fine-tuned with the paper's plain mean subtraction saw
    # inputs ~60x too large: a first loss of 474 instead of 0.85.
    assert train(tmp_path, "demo", "--epochs", "1", "--recipe", "demo") == 0
    weights = str(tmp_path / "demo" / "best.pt")
    capsys.readouterr()
    assert train(tmp_path, "ft", "--epochs", "1", "--weights", weights) == 2
    err = capsys.readouterr().err
    assert "trained with input_norm mean-std" in err and "give --input-norm mean-std" in err
    assert err.count("\n") == 1 and err.count("--input-norm") == 1  # the flag named once
    assert train(tmp_path, "ft", "--epochs", "1", "--weights", weights,
                 "--input-norm", "mean-std") == 0


def test_eval_and_features_default_to_the_data_the_model_trained_on(tmp_path, capsys):
    # They read `shapes` (its 500 default val images, another set) or refused another class
    # count, whatever the run had trained on.
    assert train(tmp_path, "run", "--epochs", "1") == 0
    run = tmp_path / "run"
    capsys.readouterr()
    assert cli_main(["eval", str(run), "--crops", "1", "--precision", "fp32", "--workers", "0",
                     "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 16  # shapes:24:16's val split
    assert result["top1_error"] == pytest.approx(metrics(run)[-1]["val_top1_error"])
    assert cli_main(["features", str(run), str(tmp_path / "f.npy"), "--no-progress"]) == 0
    assert np.load(tmp_path / "f.npy").shape == (16, 4096)


def test_no_arguments_means_the_demo_recipe():
    from alexnet.config import DEMO, resolve_train_config
    cfg = resolve_train_config({})
    assert cfg.recipe == "demo" and cfg.data.startswith("shapes")
    assert (cfg.optimizer, cfg.init, cfg.input_norm, cfg.dropout) == ("adamw", "kaiming",
                                                                      "mean-std", 0.0)
    assert all(getattr(cfg, k) == v for k, v in DEMO.items())
    # The network's ideas stay the paper's; the paper's recipe is one flag away.
    assert (cfg.variant, cfg.towers, cfg.lrn, cfg.pooling) == ("paper", 2, True, "overlapping")
    paper = resolve_train_config({"recipe": "paper"})
    assert (paper.optimizer, paper.init, paper.lr, paper.batch_size) == ("sgd", "paper", 0.01, 128)


def test_a_folder_called_shapes_is_the_users_data_with_the_papers_recipe(tmp_path, monkeypatch):
    """open_dataset reads ./shapes when it exists; auto still chose the demo recipe for it."""
    from alexnet.config import resolve_train_config
    monkeypatch.chdir(tmp_path)
    assert resolve_train_config({"data": "shapes"}).recipe == "demo"  # the built-in set
    (tmp_path / "shapes" / "train").mkdir(parents=True)
    assert resolve_train_config({"data": "shapes"}).recipe == "paper"


def test_demo_options_train_resume_and_evaluate(tmp_path, capsys):
    """AdamW, He init and std-scaled inputs: the scale is saved with the model, so eval rebuilds
    the same function; resuming restores AdamW's state exactly."""
    demo = ["--optimizer", "adamw", "--init", "kaiming", "--input-norm", "mean-std",
            "--dropout", "0", "--lr", "3e-4"]
    assert train(tmp_path, "full", "--epochs", "2", *demo) == 0
    assert train(tmp_path, "part", "--epochs", "1", *demo) == 0
    assert cli_main(["train", "--resume", str(tmp_path / "part"), "--epochs", "2",
                     "--no-progress"]) == 0
    assert same_metrics(metrics(tmp_path / "full"), metrics(tmp_path / "part"))
    ckpt = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    scale = ckpt["arch"]["options"]["input_scale"]
    assert scale == pytest.approx(1 / ckpt["stats"]["std"].float().mean().item(), rel=1e-5)
    assert "exp_avg" in next(iter(ckpt["optimizer"]["state"].values()))  # AdamW's moments
    capsys.readouterr()
    assert cli_main(["eval", str(tmp_path / "full" / "checkpoint.pt"), "--data", "shapes:24:16",
                     "--crops", "1", "--precision", "fp32", "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1_error"] == pytest.approx(metrics(tmp_path / "full")[-1]["val_top1_error"])


def test_kaiming_init_needs_the_paper_variant(tmp_path, capsys):
    assert train(tmp_path, "owt", "--variant", "owt", "--init", "kaiming") == 2
    assert "--init does not apply to variant 'owt'" in capsys.readouterr().err
    assert train(tmp_path, "owt", "--variant", "owt", "--input-norm", "mean-std") == 2
    assert "init and input_norm apply to the paper variant only" in capsys.readouterr().err
    # on shapes data with no --recipe, the demo recipe set them: the message says so
    assert cli_main(["train", "--variant", "owt", "--data", "shapes:24:16", "--epochs", "1",
                     "--out", str(tmp_path / "owt2")]) == 2
    err = capsys.readouterr().err
    assert "the demo recipe" in err and "--recipe paper" in err and err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--init-std", "--bias-init"])
def test_the_paper_inits_options_are_refused_under_another_init(tmp_path, capsys, flag):
    # they were silently ignored: --init-std 1e308 trained exactly as without it
    assert cli_main(["train", "--data", "shapes:24:16", "--epochs", "1", flag, "0.5",
                     "--out", str(tmp_path / "k")]) == 2
    err = capsys.readouterr().err
    assert "init is kaiming" in err and "demo recipe" in err and err.count("\n") == 1
    assert train(tmp_path, "k2", "--init", "kaiming", flag, "0.5") == 2
    assert not (tmp_path / "k").exists() and not (tmp_path / "k2").exists()


@pytest.mark.parametrize("flag,value", [("--lrn", "off"), ("--towers", "1"), ("--width", "0.5"),
                                        ("--pooling", "average")])
def test_options_the_owt_variant_does_not_take_are_refused(tmp_path, capsys, flag, value):
    # they were silently ignored: owt trained as without them, and config.json recorded them
    assert train(tmp_path, "owt", "--variant", "owt", "--recipe", "paper", flag, value) == 2
    err = capsys.readouterr().err
    assert f"{flag} does not apply to variant 'owt'" in err and err.count("\n") == 1
    assert not (tmp_path / "owt").exists()
    # given at its default, an option changes nothing and passes (dropout owt does take)
    from alexnet.config import resolve_train_config
    cfg = resolve_train_config({"variant": "owt", "recipe": "paper", "lrn": True, "dropout": 0.2})
    assert (cfg.variant, cfg.dropout) == ("owt", 0.2)


@pytest.mark.parametrize("slow", ["data", "step"])
def test_the_wait_share_is_the_time_spent_between_steps(tmp_path, monkeypatch, capsys, slow):
    """metrics.jsonl's wait_share splits the steady rate's time: between the steps (waiting for a
    batch) and inside them. On a GPU it says whether the data or the model sets the pace. Here a
    sleep of D seconds before batches 2 and 3 (or in steps 2 and 3) bounds it from below (above),
    whatever the load: the steady time T is 16 images over the steady rate."""
    import alexnet.train as train_module
    d = 0.6
    real_batches, real_step = train_module.augmented, train_module.train_step

    def slow_batches(loader, augment):
        for k, batch in enumerate(real_batches(loader, augment)):
            time.sleep(d if k else 0.0)
            yield batch

    calls = []

    def slow_step(*args, **kwargs):
        calls.append(1)
        time.sleep(d if len(calls) > 1 else 0.0)
        return real_step(*args, **kwargs)
    if slow == "data":
        monkeypatch.setattr(train_module, "augmented", slow_batches)
    else:
        monkeypatch.setattr(train_module, "train_step", slow_step)
    assert train(tmp_path, "wait", "--epochs", "1") == 0
    row = metrics(tmp_path / "wait")[0]
    steady_seconds = 16 / row["img_per_s_after_first_step"]
    assert steady_seconds > 2 * d
    out = capsys.readouterr().out
    if slow == "data":
        assert 2 * d / steady_seconds * (1 - 1e-6) <= row["wait_share"] <= 1
        said = f"({row['wait_share']:.0%} of it waiting for batches)" in out
        assert said == (row["wait_share"] >= 0.1)  # (it is, unless the machine is very busy)
    else:
        assert 0 <= row["wait_share"] <= 1 - 2 * d / steady_seconds * (1 - 1e-6)


def test_the_rate_after_the_first_step_leaves_its_wait_out(tmp_path, monkeypatch):
    """metrics.jsonl's img_per_s_after_first_step (the rate to set against `bench model`) does
    not count the first step, where a GPU run waits for the first batch and warms up."""
    import alexnet.train as train_module
    real, calls = train_module.train_step, []

    def slow_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(3.0)
        return real(*args, **kwargs)
    monkeypatch.setattr(train_module, "train_step", slow_first)
    assert train(tmp_path, "rate", "--epochs", "1") == 0
    row = metrics(tmp_path / "rate")[0]
    # 3 steps of 8 images: 24 over the epoch's T seconds, 16 over the last two steps, which
    # took at most T - 3 (whatever the load; over the whole epoch it would be 24 / T, which
    # is less for T < 9 s)
    whole = 24 / row["img_per_s"]
    assert whole > 3.0
    assert row["img_per_s_after_first_step"] >= 16 / (whole - 3.0) * (1 - 1e-9)
