"""`alexnet show …`: every picture is a valid PNG of the size its layout promises, on a tiny
checkpoint (a random paper net with real `shapes` statistics: pictures need no trained net)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.checkpoint import save_checkpoint
from alexnet.cli import main as cli_main
from alexnet.data import open_dataset
from alexnet.model import RELU_LAYERS, alexnet
from alexnet.predictor import Predictor
from alexnet.visualize import activations, curves, figure4, filters

DATA = "shapes:16:8"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A checkpoint of a random two-tower paper net, and two image files."""
    root = tmp_path_factory.mktemp("show")
    train = open_dataset(DATA, "train")
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=len(train.classes))
    save_checkpoint(root / "tiny.pt", {
        "arch": {"variant": "paper", "num_classes": 10, "in_channels": 3,
                 "options": {"dropout_scaling": "paper"}},
        "classes": train.classes, "stats": train.stats(), "crop_size": 227,
        "model": model.state_dict()})
    images = train.get_batch([0, 1]).numpy()
    Image.fromarray(images[0]).save(root / "a.png")
    Image.fromarray(images[1][:200, :120]).save(root / "b.jpg")  # not square, not 256
    return root


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()  # a truncated file fails here
        return img.size


def show(capsys, *argv) -> tuple[int, str, str]:
    code = cli_main(["show", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_filters_two_towers_apart(files, tmp_path, capsys):
    out = tmp_path / "f.png"
    code, stdout, _ = show(capsys, "filters", files / "tiny.pt", "--out", out)
    lines = stdout.strip().splitlines()
    assert code == 0 and lines[0] == str(out)
    assert lines[1].startswith("tower 1: low-frequency share") and lines[2].startswith("tower 2")
    # 2 towers × (48 kernels = 3 rows of 16 × 60 px + a 40 px title), 16 × 60 px wide
    assert png_size(out) == (960, 2 * (3 * 60 + 40))


def test_the_out_name_decides_the_format(files, tmp_path, capsys):
    from PIL import Image

    for name, kind in (("f.jpg", "JPEG"), ("f.JPEG", "JPEG"), ("f.png", "PNG")):
        assert show(capsys, "filters", files / "tiny.pt", "--out", tmp_path / name)[0] == 0
        with Image.open(tmp_path / name) as im:
            assert im.format == kind and im.size == (960, 2 * (3 * 60 + 40))
    assert show(capsys, "filters", files / "tiny.pt", "--out", tmp_path / "f.pdf")[0] == 0
    assert (tmp_path / "f.pdf").read_bytes()[:5] == b"%PDF-"
    code, _, err = show(capsys, "curves", tmp_path, "--out", tmp_path / "c.gif")
    assert code == 2 and "end it in .png" in err and "(--out)" in err  # before reading the runs
    assert not (tmp_path / "c.gif").exists()


def test_filters_one_tower_and_grey(tmp_path):
    path = filters.draw_filters(torch.randn(64, 3, 11, 11), towers=1, path=tmp_path / "owt.png")
    assert png_size(path) == (960, 4 * 60 + 40)
    path = filters.draw_filters(torch.randn(96, 1, 11, 11), towers=2, path=tmp_path / "grey.png")
    assert png_size(path) == (960, 2 * (3 * 60 + 40))


def test_each_kernel_is_stretched_to_its_own_range():
    w = torch.stack([torch.linspace(-1e-3, 1e-3, 12), torch.linspace(5, 9, 12),
                     torch.full((12,), 7.0)]).view(3, 3, 2, 2)  # 3 kernels, 3 channels, 2×2
    k = filters.normalise(w)
    assert k.shape == (3, 2, 2, 3)
    for i in (0, 1):  # tiny and large weights both span the full display range
        assert k[i].min() == 0 and k[i].max() == 1
    assert np.all(k[2] == 0.5)  # a constant kernel is mid-grey, not a division by zero
    grid = filters.mosaic(k, columns=2)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 3) and np.all(grid[0] == 1)  # white gaps


def test_predictions(files, tmp_path, capsys):
    out = tmp_path / "p.png"
    code, stdout, _ = show(capsys, "predictions", files / "tiny.pt", files / "a.png",
                           files / "b.jpg", "--out", out)
    assert code == 0 and str(out) in stdout
    assert png_size(out) == (900, 2 * 200)


@pytest.mark.parametrize("crops", [1, 10])
def test_predictions_draw_what_predict_gives(files, tmp_path, capsys, monkeypatch, crops):
    drawn = []
    monkeypatch.setattr(figure4, "draw_predictions",
                        lambda images, tops, names, path: drawn.append(tops) or path)
    code, _, err = show(capsys, "predictions", files / "tiny.pt", files / "a.png", "--crops",
                        crops, "--out", tmp_path / "p.png")
    seen = Predictor.from_file(files / "tiny.pt")
    want = seen.top(seen.probs(seen.load_images(files / "a.png"), crops), 5)
    assert code == 0 and drawn == [want], err


def test_predictions_and_neighbours_show_names_from_names_file(files, tmp_path, capsys,
                                                                monkeypatch):
    classes = Predictor.from_file(files / "tiny.pt").classes
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{c} the {c}\n" for c in classes[1:]))  # all but the first
    drawn = []
    monkeypatch.setattr(figure4, "draw_predictions",
                        lambda images, tops, names, path: drawn.append(tops) or path)
    code, _, err = show(capsys, "predictions", files / "tiny.pt", files / "a.png", "--topk", 10,
                        "--names", names, "--out", tmp_path / "p.png")
    assert code == 0, err
    want = [classes[0]] + [f"the {c}" for c in classes[1:]]
    assert sorted(c for c, _ in drawn[0][0]) == sorted(want)
    monkeypatch.setattr(figure4, "draw_neighbours", lambda *a: drawn.append(a[5]) or a[-1])
    code, out, err = show(capsys, "neighbours", files / "tiny.pt", "--data", DATA, "--queries",
                          2, "--pool", 4, "--names", names, "--out", tmp_path / "n.png")
    assert code == 0 and drawn[1] == want, err
    assert "note: 4 neighbours a query, as many as the pool holds (-k 6)" in out  # was unsaid


def test_predictions_bad_image_is_one_line_error(files, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    code, _, err = show(capsys, "predictions", files / "tiny.pt", bad, "--out", tmp_path / "x.png")
    assert code == 2 and "cannot read image" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()


def test_neighbours(files, tmp_path, capsys):
    out = tmp_path / "n.png"
    code, stdout, _ = show(capsys, "neighbours", files / "tiny.pt", "--data", DATA,
                           "--queries", 3, "--pool", 16, "-k", 4, "--out", out)
    assert code == 0 and str(out) in stdout and "share their query's class" in stdout
    assert png_size(out) == (150 * (4 + 1), (150 + 30) * 3 + 30)


def test_neighbours_bad_options(files, tmp_path, capsys):
    code, _, err = show(capsys, "neighbours", files / "tiny.pt", "--data", DATA, "--layer",
                        "conv9", "--out", tmp_path / "n.png")
    assert code == 2 and "conv9" in err and "(--layer)" in err
    code, _, err = show(capsys, "neighbours", files / "tiny.pt", "--data", DATA, "--pool", "0")
    assert code == 2 and "--pool" in err
    code, _, err = show(capsys, "neighbours", files / "tiny.pt", "--data", DATA, "--seed", "-1")
    assert code == 2 and "seed must be >= 0, got -1 (--seed)" in err and err.count("\n") == 1


def test_neighbours_come_from_the_data_the_model_trained_on(files, tmp_path, capsys,
                                                          monkeypatch):
    """shapes renders its images from the run's seed: --seed only draws queries and pool from the
    model's own data (it used to render another set, one the model never saw)."""
    ckpt = torch.load(files / "tiny.pt", weights_only=True)
    save_checkpoint(tmp_path / "seed3.pt", {**ckpt, "config": {"seed": 3}})
    seeds, real = [], figure4.open_dataset
    monkeypatch.setattr(figure4, "open_dataset",
                        lambda spec, split, seed: seeds.append(seed) or real(spec, split, seed=seed))
    code, _, err = show(capsys, "neighbours", tmp_path / "seed3.pt", "--data", DATA, "--seed", 1,
                        "--queries", 2, "--pool", 8, "-k", 2, "--out", tmp_path / "n.png")
    assert code == 0 and seeds == [3, 3], err


def test_nearest_is_exact_for_an_image_and_itself():
    """cdist's matrix-product shortcut (beyond 25 rows) put an image 2.7e-6 from itself."""
    pool = torch.randn(40, 4096, generator=torch.Generator().manual_seed(0)) * 3 + 2
    dist, idx = figure4.nearest(pool[[7, 30]], pool, k=1)
    assert idx[:, 0].tolist() == [7, 30] and dist[:, 0].tolist() == [0.0, 0.0]


def test_nearest_is_euclidean():
    pool = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 1.0], [10.0, 0.0]])
    dist, idx = figure4.nearest(torch.tensor([[3.0, 4.0], [0.9, 0.9]]), pool, k=3)
    assert idx.tolist() == [[1, 2, 0], [2, 0, 1]]
    assert dist[0].tolist() == pytest.approx([0.0, 13 ** 0.5, 5.0])


def write_run(path, losses):
    path.mkdir()
    rows = [{"epoch": i + 1, "train_loss": l, "val_loss": l + 0.1, "val_top1_error": l / 3,
             "val_top5_error": l / 9} for i, l in enumerate(losses)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_curves_of_several_runs(tmp_path, capsys):
    a, b = write_run(tmp_path / "a", [2.0, 1.5, 1.2]), write_run(tmp_path / "b", [2.1, 1.9])
    out = tmp_path / "c.png"
    code, stdout, _ = show(capsys, "curves", a, b, "--out", out)
    assert code == 0 and stdout.strip() == str(out)
    assert png_size(out) == (1100, 400)
    (tmp_path / "x").mkdir()
    twin = write_run(tmp_path / "x" / "a", [1.0])  # two runs named "a": their paths tell them apart
    assert curves.labels_for([str(a), str(b), str(twin)]) == [str(a), "b", str(twin)]


def test_curves_without_metrics_is_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = show(capsys, "curves", tmp_path / "empty", "--out", tmp_path / "c.png")
    assert code == 2 and "no metrics.jsonl" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value", [None, "0.5", {"a": 1}, [1], True])
def test_curves_with_a_value_not_a_number_is_one_line_error(tmp_path, capsys, value):
    run = write_run(tmp_path / "run", [2.0, 1.5])
    rows = (run / "metrics.jsonl").read_text().splitlines()
    rows[1] = json.dumps({**json.loads(rows[1]), "val_loss": value})
    (run / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    code, _, err = show(capsys, "curves", run, "--out", tmp_path / "c.png")
    assert code == 2 and "line 2: val_loss must be numbers" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c.png").exists()


def test_activations(files, tmp_path, capsys):
    out = tmp_path / "act.png"
    code, stdout, _ = show(capsys, "activations", files / "tiny.pt", files / "a.png",
                           "--channels", 4, "--out", out)
    assert code == 0 and str(out) in stdout
    assert png_size(out) == (120 * (4 + 1), 120 * (7 + 1))
    table = {line.split()[0]: line.split() for line in stdout.splitlines()[1:8]}
    assert list(table) == list(RELU_LAYERS)
    assert table["conv1"][1] == "96×55×55" and table["fc7"][1] == "4096"
    # a ReLU net: a good part of conv1's outputs are exactly 0 (zero-mean random filters)
    assert 10 < float(table["conv1"][2].rstrip("%")) < 90


def test_sparsity_counts_exact_zeros_only():
    acts = {"a": torch.tensor([0.0, 1e-30, -0.0, 2.0]), "b": torch.tanh(torch.randn(100))}
    assert activations.sparsity(acts) == {"a": 0.5, "b": 0.0}


def test_unknown_picture_exits_2(capsys):
    code = cli_main(["show", "mosaic"])  # argparse's own one-line error
    assert code == 2 and "invalid choice" in capsys.readouterr().err


def test_kernel_structure_against_hand_made_kernels():
    torch.manual_seed(0)
    noise = filters.structure(torch.randn(2000, 3, 11, 11))
    # white noise: the low-frequency share is the share of the bins (|f| <= 2.75: 20 of 120)
    assert noise["low_freq_noise"] == pytest.approx(20 / 120)
    assert noise["low_freq"] == pytest.approx(noise["low_freq_noise"], abs=0.01)
    assert noise["colour"] == pytest.approx(2 / 3, abs=0.01)  # RGB noise: 2 of 3 dimensions
    y, x = torch.meshgrid(torch.arange(11.0), torch.arange(11.0), indexing="ij")
    blob = torch.exp(-((x - 5) ** 2 + (y - 5) ** 2) / 8)  # a smooth grey blob
    grey = filters.structure(blob.expand(1, 3, 11, 11))
    assert grey["low_freq"] > 0.95 and grey["colour"] == pytest.approx(0, abs=1e-12)
    red = torch.zeros(1, 3, 11, 11)
    red[0, 0] = blob - blob.mean()  # a zero-mean pattern in the red channel only
    assert filters.structure(red)["colour"] == pytest.approx(2 / 3, abs=1e-9)


@pytest.mark.parametrize("picture", ["predictions", "activations"])
def test_a_picture_is_not_drawn_over_its_own_photo(files, tmp_path, capsys, picture):
    photo = tmp_path / "photo.png"
    photo.write_bytes((files / "a.png").read_bytes())
    before = photo.read_bytes()
    code, _, err = show(capsys, picture, files / "tiny.pt", photo, "--out", photo)
    assert code == 2 and "is the input too" in err and len(err.strip().splitlines()) == 1
    assert photo.read_bytes() == before


def test_curves_can_be_drawn_again_into_the_run_they_read(tmp_path, capsys):
    # a run directory stands for the files read from it (metrics.jsonl), not every file in it:
    # train's own curves.png may be drawn again
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps(
        {"epoch": 1, "train_loss": 2.0, "val_loss": 2.1, "val_top1_error": 0.8,
         "val_top5_error": 0.3, "lr": 0.01}) + "\n")
    for _ in range(2):
        code, _, err = show(capsys, "curves", run, "--out", run / "curves.png")
        assert code == 0, err
    code, _, err = show(capsys, "curves", run, "--out", run / "metrics.jsonl")
    assert code == 2


def test_predictions_and_neighbours_draw_names_that_are_not_utf8(files, tmp_path, capsys):
    """A file or class name that is not UTF-8 (Python holds its bytes as surrogates) made
    matplotlib fail to draw it: a traceback. Its bad bytes are now drawn as U+FFFD."""
    odd = tmp_path / os.fsdecode(b"caf\xe9.png")
    shutil.copy(files / "a.png", odd)
    out = tmp_path / "p.png"
    code, stdout, err = show(capsys, "predictions", files / "tiny.pt", odd, "--out", out)
    assert code == 0 and str(out) in stdout and out.stat().st_size > 0, err
    image = np.zeros((1, 2, 8, 8, 3), np.uint8)
    classes = [os.fsdecode(b"\xe9t\xe9"), "b"]
    path = figure4.draw_neighbours(image[:, 0], np.array([0]), image, np.array([[0, 1]]),
                                   np.ones((1, 2)), classes, "fc7", tmp_path / "n.png")
    assert path.stat().st_size > 0
    run = write_run(tmp_path / os.fsdecode(b"r\xe9sum\xe9"), [2.0, 1.5])  # curves: run names
    code, _, err = show(capsys, "curves", run, "--out", tmp_path / "c.png")
    assert code == 0, err


def test_an_unreadable_image_is_a_one_line_warning(files, tmp_path, capsys):
    """neighbours draws black in place of an unreadable image and says so: in one line, as
    `alexnet: warning: …`, not Python's form with our file, line number and source line."""
    data = tmp_path / "tree"
    for split in ("train", "val"):
        for c in open_dataset(DATA, "train").classes:
            (data / split / c).mkdir(parents=True)
            shutil.copy(files / "a.png", data / split / c / "a.png")
    (data / "train" / "circle" / "bad.png").write_text("not an image")
    code, _, err = show(capsys, "neighbours", files / "tiny.pt", "--data", data, "--queries", 2,
                        "--pool", 11, "-k", 2, "--out", tmp_path / "n.png")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1, err
    assert lines[0].startswith("alexnet: warning: unreadable image(s) replaced by black ones, "
                               f"e.g. {data / 'train' / 'circle' / 'bad.png'}"), err
