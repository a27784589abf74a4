"""Moving in and out: torchvision conversion, ONNX / TorchScript / safetensors export, alexnet.load,
torch.hub, features. Small random networks on the CPU; every comparison is against our own model."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from alexnet import alexnet
from alexnet.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from alexnet.cli import main as cli_main
from alexnet.errors import AlexNetError
from alexnet import export
from alexnet.export import PortableLRN, portable
from alexnet.predictor import Predictor
from alexnet.weights import load_any, load_torchvision_weights
from alexnet.lrn import lrn_reference

REPO = Path(__file__).resolve().parents[1]
CLASSES = [f"class{i}" for i in range(10)]


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / b.abs().max()).item()


def same_top5(a, b) -> bool:
    return torch.equal(torch.as_tensor(a).topk(5).indices, torch.as_tensor(b).topk(5).indices)


def lively(model: nn.Module) -> nn.Module:
    """He-initialised weights: the paper's N(0, 0.01²) gives near-constant logits in an untrained
    net, where "same top-5" would compare round-off; these logits are O(10) and well apart."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            nn.init.normal_(m.bias, std=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """(checkpoint path, model): the paper net, 10 classes, with a non-trivial mean image."""
    model = lively(alexnet("paper", num_classes=10))
    g = torch.Generator().manual_seed(1)
    stats = {"mean_image": torch.rand(256, 256, 3, generator=g) * 255,
             "mean": torch.full((3,), 127.0), "std": torch.full((3,), 60.0),
             "eigval": torch.tensor([900.0, 90.0, 9.0]), "eigvec": torch.eye(3)}
    path = tmp_path_factory.mktemp("paper") / "best.pt"
    save_checkpoint(path, {"model": model.state_dict(), "classes": CLASSES, "stats": stats,
                           "crop_size": 227, "arch": {"variant": "paper", "num_classes": 10,
                                                      "in_channels": 3,
                                                      "options": {"dropout_scaling": "paper"}}})
    return path, model


def load(path):
    """(plain fp32 network, class names) through the one way in."""
    predictor = Predictor.from_file(path, device="cpu", precision="fp32")
    return predictor.network(), predictor.classes


def crops(n=3, size=227, seed=2) -> torch.Tensor:
    """Preprocessed-looking input: centre crops minus a mean image are roughly ±128."""
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 60


@torch.no_grad()
def test_portable_lrn_equals_the_reference():
    x = torch.randn(2, 96, 5, 5).abs() * 40  # ReLU outputs, large enough for the LRN to matter
    for groups in (1, 2):
        for size in (5, 4):  # odd and even windows are padded asymmetrically the same way
            ref = lrn_reference(x, size, 1e-4, 0.75, 2.0, groups)
            assert torch.allclose(PortableLRN(size, 1e-4, 0.75, 2.0, groups)(x), ref,
                                  rtol=1e-6, atol=0)
            assert not torch.allclose(ref, x / 2.0 ** 0.75)  # the window sum does matter here


def test_portable_swaps_every_lrn_and_keeps_the_original(paper):
    _, model = paper
    copy = portable(model)
    assert sum(isinstance(m, PortableLRN) for m in copy.modules()) == 2
    assert not any(isinstance(m, PortableLRN) for m in model.modules())
    # our pooling and stem conv (CPU speed only) become torch's own classes, weights kept
    assert type(copy.features.pool1) is nn.MaxPool2d and type(copy.features.conv1) is nn.Conv2d
    assert torch.equal(copy.features.conv1.weight, model.features.conv1.weight)
    assert type(model.features.conv1) is not nn.Conv2d  # the original keeps its classes
    low = portable(alexnet("paper", num_classes=10).bfloat16())  # dtype kept (a review found
    # conv1 rebuilt in fp32)
    assert low.features.conv1.weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert low(crops(1).bfloat16()).dtype == torch.bfloat16
    x = crops(2)
    with torch.no_grad():
        assert rel_err(copy(x), model(x)) < 1e-5


# --- torchvision ---------------------------------------------------------------------------------

def test_convert_torchvision_gives_torchvision_logits_through_our_pipeline(tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    from torchvision.transforms import v2 as T

    from alexnet.data.augment import Augment

    torch.manual_seed(3)
    tv = lively(torchvision.models.alexnet())
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    assert cli_main(["convert", "torchvision", str(tmp_path / "tv.pth"),
                     str(tmp_path / "conv.pt")]) == 0
    ckpt = load_checkpoint(tmp_path / "conv.pt")
    assert ckpt["arch"]["variant"] == "owt" and ckpt["crop_size"] == 224
    assert ckpt["classes"][:2] == ["tench", "goldfish"] and len(ckpt["classes"]) == 1000

    images = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(4))
    ours = Augment(ckpt["stats"], crop_size=ckpt["crop_size"]).center(images)
    theirs = T.Compose([T.CenterCrop(224), T.ToDtype(torch.float32, scale=True),
                        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with torch.no_grad():
        expected = tv(theirs(images.permute(0, 3, 1, 2)))
        got = model_from_checkpoint(ckpt).eval()(ours)
        direct = load(tmp_path / "tv.pth")[0](ours)  # --weights FILE path: no convert step
    assert rel_err(got, expected) < 1e-4 and same_top5(got, expected)
    assert torch.equal(direct, got)
    assert torch.equal(load_torchvision_weights(tmp_path / "tv.pth")["model"]["features.0.weight"],
                       ckpt["model"]["features.0.weight"])


def test_convert_rejects_what_is_not_torchvision_alexnet(tmp_path, capsys):
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "resnet.pth")
    bad = alexnet("owt", num_classes=10).state_dict()
    bad["features.3.weight"] = torch.zeros(5, 64, 5, 5)
    torch.save(bad, tmp_path / "wrong_shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file at all")
    listed = alexnet("owt", num_classes=10).state_dict()
    listed["features.0.weight"] = [1.0, 2.0]  # was called "no features.0.weight"
    torch.save(listed, tmp_path / "listed.pth")
    (tmp_path / "folder").mkdir()
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    for name, message in [("resnet.pth", "not a torchvision AlexNet"),
                          ("model.safetensors", "is a safetensors file; convert takes"),
                          ("wrong_shape.pth", "features.3.weight"),
                          ("listed.pth", "its features.0.weight is a list, not a tensor"),
                          ("junk.pth", "not a PyTorch"), ("missing.pth", "not found"),
                          ("folder", "folder is a directory, not a weights file")]:
        assert cli_main(["convert", "torchvision", str(tmp_path / name),
                         str(tmp_path / "out.pt")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.pt").exists()


def test_a_damaged_safetensors_file_is_called_one(tmp_path, capsys):
    """Cut short or with its header damaged, a .safetensors file is not reported as a PyTorch
    file that failed (the loaders tell the two formats apart by the header)."""
    from safetensors.torch import save_file
    whole = tmp_path / "whole.safetensors"
    save_file({"w": torch.zeros(2)}, str(whole))
    (tmp_path / "short.safetensors").write_bytes(whole.read_bytes()[:5])
    (tmp_path / "mangled.SAFETENSORS").write_bytes(b"\0" * 9 + whole.read_bytes()[9:])
    for name in ("short.safetensors", "mangled.SAFETENSORS"):
        assert cli_main(["export", str(tmp_path / name), "--format", "onnx",
                         str(tmp_path / "x.onnx")]) == 2
        err = capsys.readouterr().err
        assert f"cannot read {tmp_path / name}: not a safetensors file" in err, err
        assert err.count("\n") == 1 and "PyTorch" not in err
    # a torch.save file under that name is read as what it is
    torch.save(alexnet("owt", num_classes=10).state_dict(), tmp_path / "tv.safetensors")
    assert load_any(tmp_path / "tv.safetensors")["arch"]["variant"] == "owt"


@pytest.mark.parametrize("key, value, words", [
    ("arch", "null", "malformed arch"),          # was a TypeError
    ("arch", "{not json", "no JSON 'arch'"),     # was json's message, naming no file
    ("crop_size", "\"227\"", "malformed crop_size"),
    ("classes", None, "no JSON 'classes'"),
])
def test_a_safetensors_export_with_damaged_metadata_is_one_line(paper, tmp_path, capsys, key,
                                                                value, words):
    from safetensors import safe_open
    from safetensors.torch import save_file
    good = tmp_path / "good.safetensors"
    assert cli_main(["export", str(paper[0]), "--format", "safetensors", str(good)]) == 0
    with safe_open(str(good), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta = {k: v for k, v in {**meta, key: value}.items() if v is not None}
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    assert cli_main(["export", str(bad), "--format", "torchscript", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert f"{bad} is damaged" in err and words in err and err.count("\n") == 1, err


def test_convert_and_export_refuse_to_write_over_their_input(paper, tmp_path, capsys):
    tv = tmp_path / "tv.pth"
    torch.save(alexnet("owt", num_classes=10).state_dict(), tv)
    before = tv.read_bytes()
    ckpt = tmp_path / "copy.pt"
    ckpt.write_bytes(paper[0].read_bytes())
    for argv in (["convert", "torchvision", str(tv), str(tv)],
                 ["export", str(ckpt), "--format", "torchscript", str(ckpt)]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert "is the input too" in err and err.count("\n") == 1, err
    assert tv.read_bytes() == before and ckpt.read_bytes() == paper[0].read_bytes()


def test_export_from_a_run_directory_does_not_replace_its_files(paper, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(paper[0].read_bytes())
    before = (run / "best.pt").read_bytes()
    for fmt in ("safetensors", "onnx"):
        assert cli_main(["export", str(run), "--format", fmt, str(run / "best.pt")]) == 2
        err = capsys.readouterr().err
        assert "is the input too" in err and err.count("\n") == 1, err
    assert (run / "best.pt").read_bytes() == before
    # another file of the run is no input, the first time or when written again
    for _ in range(2):
        assert cli_main(["export", str(run), "--format", "safetensors", str(run / "m.st")]) == 0


@pytest.mark.parametrize("fmt", ["safetensors", "torchscript"])
def test_export_on_a_full_disk_is_one_line(paper, tmp_path, capsys, monkeypatch, fmt):
    """On a full disk safetensors' own writer raised a SafetensorError (a traceback), and
    torch.jit.save's aborted the process in C++, leaving its temporary file."""
    import errno
    import pathlib

    def full(self, data):
        self.open("wb").close()  # the temporary file exists, as a real partial write leaves it
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    monkeypatch.setattr(pathlib.Path, "write_bytes", full)
    out = tmp_path / f"m.{fmt}"
    assert cli_main(["export", str(paper[0]), "--format", fmt, str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out}: no space left on device" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # no temporary file left beside it


def test_safetensors_export_gets_the_usual_permissions(paper, tmp_path):
    # safetensors replaces the temporary file with its own, made 0600: fixed after it writes
    umask = os.umask(0o022)
    try:
        assert cli_main(["export", str(paper[0]), "--format", "safetensors",
                         str(tmp_path / "m.safetensors")]) == 0
    finally:
        os.umask(umask)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644


# --- exports -------------------------------------------------------------------------------------

def test_onnx_export_runs_in_onnxruntime_with_the_same_logits(paper, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path, model = paper
    out = tmp_path / "model.onnx"
    assert cli_main(["export", str(path), "--format", "onnx", str(out)]) == 0
    x = crops(3)  # batch 3, traced with 2: the batch axis is dynamic
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x)
    assert rel_err(got, expected) < 1e-4 and same_top5(got, expected)
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert json.loads(meta["alexnet.classes"]) == CLASSES and meta["alexnet.crop_size"] == "227"


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_reloads_and_matches(paper, tmp_path):
    path, model = paper
    out = tmp_path / "model.ts"
    assert cli_main(["export", str(path), "--format", "torchscript", str(out)]) == 0
    extra = {"alexnet.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    x = crops(3)
    with torch.no_grad():
        got, expected = scripted(x), model(x)
    assert rel_err(got, expected) < 1e-5 and same_top5(got, expected)
    assert json.loads(json.loads(extra["alexnet.json"])["arch"])["variant"] == "paper"


def test_export_metadata_names_the_image_size_the_data_was_prepared_at(paper):
    """The input description said 256x256 whatever `prepare --size` the model was trained at."""
    ckpt = torch.load(paper[0], weights_only=True)
    assert export._metadata(ckpt)["image_size"] == "256"
    ckpt["stats"] = {**ckpt["stats"], "mean_image": torch.zeros(240, 240, 3)}
    meta = export._metadata(ckpt)
    assert meta["image_size"] == "240" and "centre crop of a 240x240 image" in meta["input"]


def test_safetensors_export_reloads_with_alexnet_load(paper, tmp_path):
    from safetensors import safe_open

    path, model = paper
    out = tmp_path / "model.safetensors"
    assert cli_main(["export", str(path), "--format", "safetensors", str(out)]) == 0
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["classes"]) == CLASSES
        assert "stats.mean_image" in f.keys() and "features.conv1.weight" in f.keys()
    loaded, classes = load(out)
    assert classes == CLASSES and not loaded.training
    x = crops(2)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    ckpt, original = load_any(out), load_checkpoint(path)
    assert ckpt["crop_size"] == 227 and ckpt["arch"] == original["arch"]
    for key, value in original["stats"].items():
        assert torch.equal(ckpt["stats"][key], value), key


def test_a_model_file_without_its_dataset_says_which_one_is_used(paper, tmp_path, capsys):
    """eval or features of an export (no run config) without --data fell back to shapes
    silently: a model trained on one's own folder was scored on another dataset."""
    path, _ = paper
    out = tmp_path / "model.safetensors"
    assert cli_main(["export", str(path), "--format", "safetensors", str(out)]) == 0
    capsys.readouterr()
    predictor = Predictor.from_file(out, device="cpu", precision="fp32")
    assert predictor.own_data(None) == ("shapes", None)
    assert "records no dataset" in capsys.readouterr().err
    assert predictor.own_data("shapes:8:8") == ("shapes:8:8", None)  # given: nothing to say
    assert capsys.readouterr().err == ""


def test_load_reads_checkpoints_and_run_directories_and_refuses_others(paper, tmp_path):
    path, model = paper
    x = crops(1)
    for source in (path, path.parent):  # the fixture's directory holds best.pt
        loaded, classes = load(source)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x)) and classes == CLASSES
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "truncated.pt").write_bytes((tmp_path / "other.pt").read_bytes()[:100])
    for name, message in [("other.pt", "neither"), ("other.safetensors", "not an alexnet export"),
                          ("empty", "not a PyTorch"), ("truncated.pt", "cannot read"),
                          ("missing.pt", "not found")]:
        with pytest.raises(AlexNetError, match=message):
            load(tmp_path / name)


def test_export_refuses_a_missing_checkpoint(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "none.pt"), "--format", "onnx",
                     str(tmp_path / "x.onnx")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()


# --- torch.hub -----------------------------------------------------------------------------------

def test_torch_hub_loads_offline_from_the_repository(paper):
    path, model = paper
    hub = torch.hub.load(str(REPO), "alexnet", source="local", weights=str(path))
    x = crops(1)
    with torch.no_grad():
        assert torch.equal(hub(x), model(x))
    assert hub.classes == CLASSES and not hub.training
    fresh = torch.hub.load(str(REPO), "owt", source="local", num_classes=7)
    assert type(fresh).__name__ == "OWTAlexNet" and fresh(crops(1, 224)).shape == (1, 7)
    with pytest.raises(ValueError, match="holds variant 'paper'"):
        torch.hub.load(str(REPO), "owt", source="local", weights=str(path))


# --- features ------------------------------------------------------------------------------------

def test_features_api_is_the_eval_mode_activation(paper):
    path, model = paper
    predictor = Predictor.from_file(path, device="cpu", precision="fp32")
    images = torch.randint(0, 256, (2, 256, 256, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    predictor.model.train()  # dropout on: features must still be the deterministic eval activation
    got = predictor.features(images, "fc7")
    with torch.no_grad():
        expected = model.eval().extract(predictor.augment.center(images), ["fc7"])["fc7"]
    assert got.shape == (2, 4096)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    with pytest.raises(AlexNetError, match="unknown layer"):
        predictor.features(images, "fc9")


def test_features_command_writes_activations_and_labels(paper, tmp_path, capsys):
    from alexnet.data import open_dataset
    from alexnet.data.augment import Augment

    path, model = paper
    out = tmp_path / "pool5.npy"
    assert cli_main(["features", str(path), "--data", "shapes:8:6", "--split", "val",
                     "--layer", "pool5", "--limit", "5", "--batch-size", "2", "--device", "cpu",
                     "--no-progress", str(out)]) == 0
    got, labels = np.load(out), np.load(tmp_path / "pool5.labels.npy")
    data = open_dataset("shapes:8:6", "val")
    ckpt = load_checkpoint(path)
    x = Augment(ckpt["stats"], crop_size=227).center(torch.as_tensor(data.get_batch(range(5))))
    with torch.no_grad():
        expected = model.extract(x, ["pool5"])["pool5"].numpy()
    assert got.shape == (5, 256, 6, 6) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert labels.tolist() == list(np.asarray(data.labels)[:5])
    assert cli_main(["features", str(path), "--layer", "fc9", str(tmp_path / "x.npy")]) == 2
    assert "unknown layer 'fc9'" in capsys.readouterr().err


def test_features_on_a_full_disk_is_one_line(paper, tmp_path, capsys, monkeypatch):
    """The memory map was sparse: a full disk was met when a page was written back, and the
    process died of SIGBUS, leaving its temporary files. The blocks are now reserved up front."""
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    out = tmp_path / "pool5.npy"
    assert cli_main(["features", str(paper[0]), "--data", "shapes:8:6", "--split", "val",
                     "--layer", "pool5", "--limit", "3", "--device", "cpu", "--no-progress",
                     str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {out}: no space left on device" in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []  # neither the features nor the labels, nor temporaries


def test_a_torchscript_export_given_as_weights_says_what_it_is(paper, tmp_path, capsys):
    """torch.load's own words were "Cannot use weights_only=True with TorchScript archives"."""
    out = tmp_path / "m.pt"
    assert cli_main(["export", str(paper[0]), "--format", "torchscript", str(out)]) == 0
    for argv in (["eval", str(out), "--data", "shapes:8:6"],
                 ["export", str(out), "--format", "onnx", str(tmp_path / "m.onnx")]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert f"cannot read {out}: a TorchScript module (torch.jit.load" in err, err
        assert err.count("\n") == 1 and "weights_only" not in err


def test_a_torchvision_reference_script_checkpoint_converts_and_predicts(tmp_path, capsys):
    """The reference script saves {"model", "optimizer", "lr_scheduler", "epoch", "args"}, with
    args an argparse.Namespace that weights_only refused: 'Weights only load failed'."""
    import argparse
    state = lively(alexnet("owt", num_classes=10)).state_dict()
    torch.save({"model": state, "optimizer": {"state": {}, "param_groups": []}, "epoch": 89,
                "args": argparse.Namespace(model="alexnet", lr=0.01, epochs=90)},
               tmp_path / "ref.pth")
    torch.save(state, tmp_path / "plain.pth")
    converted = {}
    for name in ("ref", "plain"):
        source, out = tmp_path / f"{name}.pth", tmp_path / f"{name}.pt"
        assert cli_main(["convert", "torchvision", str(source), str(out)]) == 0, \
            capsys.readouterr().err
        converted[name] = torch.load(out, weights_only=True)["model"]
    ref, plain = converted["ref"], converted["plain"]
    assert ref.keys() == plain.keys() and all(torch.equal(ref[k], plain[k]) for k in ref)
    # what predict, eval and train --weights read it with
    assert load_any(tmp_path / "ref.pth")["arch"]["variant"] == "owt"


def test_convert_refuses_our_own_checkpoint_and_non_finite_weights(paper, tmp_path, capsys):
    """Our checkpoint was unwrapped as a torchvision reference-script file ({"model": …}) and
    written again with the std folded in a second time, ImageNet's statistics and crop, exit 0;
    NaN weights were written, and every command then blamed a run that diverged."""
    state = alexnet("owt", num_classes=10).state_dict()
    state["features.3.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    for source, words in ((paper[0], "is an alexnet checkpoint already"),
                          (tmp_path / "nan.pth", "not finite (features.3.weight holds NaN")):
        assert cli_main(["convert", "torchvision", str(source), str(tmp_path / "out.pt")]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.pt").exists()
