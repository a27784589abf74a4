"""Issue 11, data input: what an adversarial tester fed the data code, kept as regression tests.

Each case is the call or command, its outcome (exit code 2 with ONE line on stderr and no
traceback, or the exception), and what must be on disk afterwards. Images are tiny and generated.
"""
import json
import os
import shutil
import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet.data.prepare as prep
from alexnet.cli import main
from alexnet.data import Loader, open_dataset
from alexnet.data.augment import Augment
from alexnet.data.folder import load_image, to_rgb
from alexnet.data.imageset import StatsAccumulator
from alexnet.errors import AlexNetError, DataError
from alexnet.evaluate import evaluate
from conftest import cli, one_line_error, write_idx, write_image_folder


def photo(w, h, seed=0):
    """A photo-like image: a few gratings of all orientations and frequencies plus sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    img = np.zeros((h, w, 3))
    for c in range(3):
        for _ in range(6):
            f, t, p = rng.uniform(1, 25), rng.uniform(0, np.pi), rng.uniform(0, 6.3)
            wave = np.sin(2 * np.pi * f * (x * np.cos(t) + y * np.sin(t)) + p)
            img[..., c] += rng.uniform(10, 40) * wave
    return np.clip(img + 128 + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def resize_then_crop(path, size):
    """The old load_image: the whole image resized, then cropped (the reference)."""
    with Image.open(path) as img:
        if img.format == "JPEG":
            img.draft("RGB", (size * 2, size * 2))
        img.load()
        img = to_rgb(img)
    w, h = img.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new != (w, h):
        img = img.resize(new, Image.Resampling.BILINEAR)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.array(img.crop((left, top, left + size, top + size)))


def flat_val(folder):
    """Move val/<class>/* into val/ itself: ILSVRC-2012's flat validation layout."""
    flat = folder / "val"
    for c in ("cat", "dog", "eel"):
        for f in (flat / c).iterdir():
            f.rename(flat / f"{c}-{f.name}")
        (flat / c).rmdir()
    return sorted(p.name for p in flat.iterdir())


# ---- 1. opening an image -------------------------------------------------------------------------

@pytest.mark.parametrize("w,h,fmt", [(640, 427, "JPEG"), (427, 640, "PNG"), (1600, 1068, "JPEG"),
                                     (800, 600, "PNG")])
def test_crop_first_equals_resize_then_crop(tmp_path, w, h, fmt):
    path = tmp_path / f"photo.{fmt.lower()}"
    Image.fromarray(photo(w, h)).save(path, fmt, quality=90)
    for size in (256, 240, 64):
        d = np.abs(load_image(path, size).astype(int) - resize_then_crop(path, size))
        assert d.mean() < 0.5 and d.max() <= 4, (size, d.mean(), d.max())


def test_memory_does_not_grow_with_the_aspect_ratio(tmp_path, monkeypatch):
    # 20000×4: resizing it whole to a shorter side of 256 makes 1.28 M × 256 pixels (1.86 GB).
    path = tmp_path / "thin.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (4, 20000, 3), np.uint8)).save(path)
    largest = []
    for name in ("resize", "reduce", "crop", "convert", "transpose"):
        real = getattr(Image.Image, name)

        def spy(self, *a, _real=real, **kw):
            out = _real(self, *a, **kw)
            largest.append(out.width * out.height)
            return out
        monkeypatch.setattr(Image.Image, name, spy)
    assert load_image(path).shape == (256, 256, 3)
    assert max(largest) <= 20000 * 4  # never more pixels than the file has (nor than 256²)
    # the same pixels as the old way, checked at a size where the old way is affordable
    assert np.abs(load_image(path, 8).astype(int) - resize_then_crop(path, 8)).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((64, 64, 3), np.uint8)
    a[:32, :, 0] = 255  # red top half
    a[:, :16, 1] = 255  # green left quarter
    for orientation, upright in ((3, np.rot90(a, 2)), (6, np.rot90(a, -1)), (8, np.rot90(a, 1))):
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(a).save(tmp_path / f"o{orientation}.png", exif=exif)
        Image.fromarray(np.ascontiguousarray(upright)).save(tmp_path / "upright.png")
        assert np.array_equal(load_image(tmp_path / f"o{orientation}.png"),
                              load_image(tmp_path / "upright.png")), orientation


@pytest.mark.parametrize("name", ["g16.png", "g16.pgm", "g16.tif"])
def test_16_bit_grey_is_scaled_to_8_bits(tmp_path, name):
    # PNG and TIFF open as "I;16", a 16-bit PGM as "I": both used to come out white or wrong.
    levels = np.tile(np.arange(256, dtype=np.uint16), (256, 1))
    Image.fromarray(levels * 257).save(tmp_path / name)
    out = load_image(tmp_path / name)
    assert np.array_equal(out[..., 0], levels) and np.array_equal(out[..., 2], levels)


def test_a_float_image_is_refused_not_read_as_black(tmp_path):
    # A float TIFF (mode "F", here 0..1) has no fixed range; Pillow's convert("RGB") clips it to
    # 0..255, which made a [0, 1] image all black and let it into training unnoticed.
    Image.fromarray(np.linspace(0, 1, 64 * 48, dtype=np.float32).reshape(48, 64)).save(
        tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"cannot read image .*f\.tif: .*mode F") as e:
        load_image(tmp_path / "f.tif")
    assert "\n" not in str(e.value)


def test_decompression_bomb_is_one_data_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((100, 100, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 pixels: over 2×, an error
    with pytest.raises(DataError, match="too many pixels") as e:
        load_image(tmp_path / "bomb.png")
    assert "\n" not in str(e.value) and "bomb.png" in str(e.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)  # under 2×: Pillow only warns ...
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... unless warnings are errors
        with pytest.raises(DataError, match="too many pixels"):
            load_image(tmp_path / "bomb.png")
    # in a folder, it is one of the unreadable files that are skipped and listed
    folder = tmp_path / "set" / "train" / "x"
    folder.mkdir(parents=True)
    (tmp_path / "bomb.png").rename(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    images, errors = open_dataset(tmp_path / "set").read([0])
    assert [i for i, _ in errors] == [0] and "too many pixels" in errors[0][1]


# ---- 2. listing files ----------------------------------------------------------------------------

def test_fifo_named_like_an_image_is_not_listed_nor_opened(image_folder, tmp_path, capsys):
    fifo = image_folder / "train" / "cat" / "x.jpg"
    os.mkfifo(fifo)
    (image_folder / "train" / "dog" / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    assert len(open_dataset(image_folder)) == 10  # the FIFO is not listed; the dangling link is
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("opening a FIFO blocked"))
    signal.alarm(60)
    try:
        with pytest.raises(DataError, match="not a regular file"):
            load_image(fifo)
        rc, out, err = cli(capsys, "prepare", image_folder, tmp_path / "out", "--workers", "1")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert rc == 0 and "9 train, 6 val" in out, err
    report = (tmp_path / "out" / "report.txt").read_text()  # not dropped silently
    assert report.startswith("# 1 of 16") and "dangling.jpg" in report and "x.jpg" not in report


def test_symlinked_directory_loop_is_walked_once(image_folder):
    (image_folder / "train" / "cat" / "again").symlink_to(image_folder / "train" / "cat")
    (image_folder / "train" / "dog" / "up").symlink_to(image_folder / "train")
    (image_folder / "train" / "eel" / "root").symlink_to(image_folder)
    train = open_dataset(image_folder)
    assert len(train) == 9 and len(set(train.files)) == 9
    assert train.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    # a second link to a directory outside the tree is still followed, once
    (image_folder / "val" / "cat" / "more").symlink_to(image_folder / "train" / "eel",
                                                       target_is_directory=True)
    assert len(open_dataset(image_folder, "val")) == 6 + 3 + 0  # eel's own links are loops


@pytest.mark.parametrize("where", ["cat", "cat/sub"])
def test_an_unreadable_folder_is_named_not_skipped(image_folder, monkeypatch, capsys, where):
    """A class folder the user may not read (chmod 000, another owner) was "has no images", the
    permission error unsaid; one inside a class folder dropped its images in silence. (As a
    stand-in: the tests may run as root, whom chmod does not stop.)"""
    (image_folder / "train" / "cat" / "sub").mkdir()
    (image_folder / "train" / "cat" / "cat_0.jpg").rename(image_folder / "train/cat/sub/c.jpg")
    locked, real = image_folder / "train" / where, os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rc, _, err = cli(capsys, "train", "--data", image_folder, "--epochs", "1", "--out",
                     image_folder.parent / "run")
    one_line_error(rc, err, f"cannot read folder {locked}: Permission denied")


# ---- 3. unreadable files while training or evaluating straight from a folder --------------------

def _break(folder, *names):
    for name in names:
        (folder / "train" / name).write_bytes(b"not an image")
    return folder


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_drops_unreadable_files_and_lists_them_all(image_folder, workers):
    _break(image_folder, "cat/cat_1.jpg", "eel/eel_2.jpg")
    train = open_dataset(image_folder)
    bad = {i for i, f in enumerate(train.files) if f.name in ("cat_1.jpg", "eel_2.jpg")}
    loader = Loader(train, 4, shuffle=True, seed=1, workers=workers)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        got_labels, count = [], 0
        for images, labels in loader:
            assert len(images) == len(labels) and images.shape[1:] == (256, 256, 3)
            assert all(img.max() > 0 for img in images)  # no black stand-ins
            got_labels += labels.tolist()
            count += len(images)
        assert count == 7
        good = [i for i in range(9) if i not in bad]
        assert sorted(got_labels) == sorted(train.labels[good].tolist())
    assert set(loader.skipped) == bad  # every one, once, though read in both epochs
    assert all(str(train.files[i]) in why for i, why in loader.skipped.items())


def test_a_batch_of_only_unreadable_files_is_skipped(image_folder):
    train = open_dataset(_break(image_folder, "cat/cat_0.jpg", "cat/cat_1.jpg", "cat/cat_2.jpg"))
    batches = list(Loader(train, 3, shuffle=False, workers=0))
    assert [len(b[0]) for b in batches] == [3, 3]
    assert len(Loader(train, 3, shuffle=False, workers=0, world_size=2, rank=0)) == 2


def test_under_ddp_an_unreadable_batch_is_an_empty_step_in_training_and_skipped_in_eval(
        image_folder):
    """Rank 0 of 2 with a per-rank batch of 1: its first image is unreadable. The training loader
    (augmenting on the CPU, as train does) yields an empty batch, so that the rank still takes
    the step the other's all-reduce waits for; an evaluation loader (even=False, no per-batch
    collective) leaves it out."""
    train = open_dataset(_break(image_folder, "cat/cat_0.jpg"))
    augment = Augment(train.stats(), crop_size=227)
    loader = Loader(train, 1, shuffle=False, workers=0, world_size=2, rank=0,
                    transform=augment.train)
    batches = list(loader)
    assert len(batches) == len(loader) == 5  # 9 images over 2 ranks: padded to 5 each
    assert batches[0][0].shape == (0, 3, 227, 227) and len(batches[0][1]) == 0
    assert all(len(labels) == 1 for _, labels in batches[1:])
    evaluation = list(Loader(train, 1, shuffle=False, workers=0, world_size=2, rank=0,
                             even=False))
    assert len(evaluation) == 4 and all(len(labels) == 1 for _, labels in evaluation)


def test_statistics_skip_unreadable_files(image_folder, tmp_path):
    train = open_dataset(_break(image_folder, "dog/dog_0.jpg"))
    images, errors = train.read(range(9))
    keep = [i for i in range(9) if i not in {j for j, _ in errors}]
    acc = StatsAccumulator(256, 3)
    acc.add(images[keep])
    for key, value in acc.result().items():
        torch.testing.assert_close(train.stats()[key], value)
    bad = _break(write_image_folder(tmp_path / "bad", per_class=(2, 1)),
                 *(f"{c}/{c}_{i}.jpg" for c in ("cat", "dog", "eel") for i in range(2)))
    with pytest.raises(DataError, match="none of the 6 .* could be read, e.g. .*cat_0.jpg"):
        open_dataset(bad).stats()


# ---- 4. the label file of a flat validation folder ----------------------------------------------

def test_val_labels_must_list_every_image_once(image_folder, tmp_path, capsys):
    names = flat_val(image_folder)
    labels = image_folder / "val.txt"
    lines = [f"{n} {n.split('-')[0]}\n" for n in names]
    labels.write_text("".join(lines[1:]))
    with pytest.raises(DataError, match=f"1 image.* not in .*val.txt, e.g. {names[0]}"):
        open_dataset(image_folder, "val", val_labels=labels)
    labels.write_text("".join(lines + lines[2:4]))
    with pytest.raises(DataError, match=f"lists 2 image.* more than once, e.g. {names[2]} "
                                        r"\(lines 3 and 7\)"):
        open_dataset(image_folder, "val", val_labels=labels)
    labels.write_text("".join(lines[:3]) + f"{names[3]} cat extra\n" + "".join(lines[4:]))
    rc, _, err = cli(capsys, "prepare", image_folder, tmp_path / "out", "--val-labels", labels)
    one_line_error(rc, err, "line 4", "3 columns where line 1 has 2", "'<file> <label>'")
    assert not (tmp_path / "out" / "manifest.json").exists()
    labels.write_text("".join(lines))
    assert len(open_dataset(image_folder, "val", val_labels=labels)) == 6


@pytest.mark.parametrize("sep,words", [
    (" ", ["line 1: 4 columns;", "expected '<file> <label>' (2 columns) or an ILSVRC2012_ID"]),
    (",", ["line 1: 1 column, '", "separated by whitespace, not commas", "'<file> <label>'"])])
def test_val_labels_of_another_column_count_say_so(image_folder, tmp_path, capsys, sep, words):
    """Neither format: the line and the formats, not the devkit's meta.mat, which a
    comma-separated file (one column to the parser) was sent looking for."""
    names = flat_val(image_folder)
    labels = image_folder / "val.txt"
    labels.write_text("".join(sep.join([n, n.split("-")[0], "1", "2"]) + "\n" for n in names))
    rc, _, err = cli(capsys, "prepare", image_folder, tmp_path / "out", "--val-labels", labels)
    one_line_error(rc, err, "val.txt", *words)
    assert "meta.mat" not in err


def test_val_labels_that_are_missing_or_not_wanted_are_refused(tmp_path, capsys):
    """They were ignored in silence: a misspelt path, or labels for a set that has its own."""
    folder = write_image_folder(tmp_path / "tree")  # val/<class>/*: labelled by its folders
    labels = tmp_path / "labels.txt"
    labels.write_text("a.jpg 0\n")
    for data, given, words in (("shapes:8:4", tmp_path / "nonexistent.txt", "not found"),
                               ("shapes:8:4", labels, "shapes:8:4 has its own validation labels"),
                               (folder, labels, "has its own validation labels")):
        rc, _, err = cli(capsys, "train", "--data", data, "--val-labels", given, "--epochs", "1",
                         "--out", tmp_path / "run")
        one_line_error(rc, err, words, "(--val-labels)")
    assert not (tmp_path / "run").exists()


def test_malformed_label_values_name_their_line(image_folder):
    names = flat_val(image_folder)
    labels = image_folder / "val.txt"
    for bad, match in (("-1", "line 2: unknown class '-1'"), ("7", "line 2: label 7 is out of"),
                       ("1.5", "line 2: unknown class")):
        labels.write_text("".join(f"{n} {bad if i == 1 else 0}\n" for i, n in enumerate(names)))
        with pytest.raises(DataError, match=match):
            open_dataset(image_folder, "val", val_labels=labels)
    scipy_io = pytest.importorskip("scipy.io")
    synsets = np.array([(1, "cat"), (2, "dog"), (3, "eel")],
                       dtype=[("ILSVRC2012_ID", "i4"), ("WNID", "U8")])
    scipy_io.savemat(image_folder / "meta.mat", {"synsets": synsets})
    for bad in ("x1", "99"):  # devkit IDs: not a number, not an ID of meta.mat
        labels.write_text("".join(f"{bad if i == 4 else 1}\n" for i in range(len(names))))
        with pytest.raises(DataError, match=f"line 5: '{bad}' is not an ILSVRC2012_ID"):
            open_dataset(image_folder, "val", val_labels=labels)
    (image_folder / "meta.mat").write_bytes(b"not a mat file")
    with pytest.raises(DataError, match="cannot read .*meta.mat"):
        open_dataset(image_folder, "val", val_labels=labels)
    labels.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not a text file"):
        open_dataset(image_folder, "val", val_labels=labels)


# ---- 5. data prepared at another size ------------------------------------------------------------

def test_training_on_data_smaller_than_the_crop_is_one_line(image_folder, tmp_path, capsys):
    prep.prepare(image_folder, tmp_path / "p32", size=32, workers=1, progress=False)
    with pytest.raises(AlexNetError, match="crop_size 227 must be <= the image size 32") as e:
        Augment(open_dataset(tmp_path / "p32").stats(), crop_size=227)
    assert e.value.option == "data"
    rc, _, err = cli(capsys, "train", "--data", tmp_path / "p32", "--epochs", "1", "--out",
                     tmp_path / "run", "--device", "cpu", "--workers", "0")
    one_line_error(rc, err, "crop_size 227 must be <= the image size 32", "--data")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    assert load_image(_photo_file(tmp_path), 240).shape == (240, 240, 3)  # any size still works


def test_training_on_one_class_is_refused(image_folder, tmp_path, capsys):
    import shutil

    for split in ("train", "val"):
        for extra in sorted((image_folder / split).iterdir())[1:]:
            shutil.rmtree(extra)  # one class left
    rc, _, err = cli(capsys, "train", "--data", image_folder, "--epochs", "1", "--out",
                     tmp_path / "run", "--workers", "0")
    one_line_error(rc, err, "has 1 class; a classifier needs at least 2", "(--data)")


def _photo_file(tmp_path):
    Image.fromarray(photo(100, 80)).save(tmp_path / "photo.png")
    return tmp_path / "photo.png"


def test_an_unreadable_file_whose_name_is_not_utf8_is_listed_not_fatal(image_folder, tmp_path,
                                                                       capsys):
    """skipped.txt and prepare's report.txt name such a file by the bytes of its name (writing
    them as UTF-8 failed, after the epoch, and left a prepare that could never finish)."""
    name = os.fsdecode(b"dog/\xff.jpg")
    (image_folder / "train" / name).write_bytes(b"not a jpeg")
    run = tmp_path / "run"
    assert main(["train", "--data", str(image_folder), "--epochs", "1", "--batch-size", "4",
                     "--workers", "0", "--recipe", "paper", "--precision", "fp32",
                     "--no-progress", "--eval-crops", "1", "--out", str(run)]) == 0
    assert b"\xff.jpg" in (run / "skipped.txt").read_bytes()
    out = tmp_path / "prepared"
    assert main(["prepare", str(image_folder), str(out), "--workers", "1"]) == 0
    assert (out / "manifest.json").is_file() and b"\xff.jpg" in (out / "report.txt").read_bytes()
    capsys.readouterr()


def test_features_of_a_folder_with_unreadable_images_label_them_minus_one(image_folder,
                                                                          tmp_path, capsys):
    """Row i stays image i, but an unreadable image's label is -1 and the command says so (its
    row was a black image's features under the image's real label, with a bare UserWarning)."""
    from alexnet.checkpoint import save_checkpoint
    from alexnet.model import alexnet
    _break(image_folder, "dog/dog_1.jpg")
    data = open_dataset(image_folder)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", {
        "arch": {"variant": "paper", "num_classes": 3, "in_channels": 3,
                 "options": {"dropout_scaling": "paper"}},
        "classes": data.classes, "stats": data.stats(), "crop_size": 227,
        "model": alexnet("paper", num_classes=3).state_dict()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["features", str(tmp_path / "m.pt"), str(tmp_path / "f.npy"), "--data",
                     str(image_folder), "--split", "train", "--layer", "fc8",
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 unreadable image(s) have label -1" in out and "dog_1.jpg" in out
    labels = np.load(tmp_path / "f.labels.npy")
    bad = [str(f).endswith("dog_1.jpg") for f in data.files]
    assert labels.tolist() == [-1 if b else int(y) for b, y in zip(bad, data.labels)]
    assert np.load(tmp_path / "f.npy").shape == (len(data), 3)


# ---- 4. nothing left to score -------------------------------------------------------------------

def test_a_val_set_of_only_unreadable_images_is_an_error_not_a_100_percent_error(
        image_folder, tmp_path, capsys):
    """Every val image unreadable: eval printed a top-1 error of 100% over 0 images with exit 0,
    and train chose its best.pt on that 100%. Now both say there is nothing to score."""
    run = tmp_path / "run"
    small = ["--batch-size", "3", "--workers", "0", "--eval-crops", "1", "--no-progress",
             "--recipe", "paper", "--precision", "fp32", "--epochs", "1"]
    assert cli(capsys, "train", "--data", image_folder, *small, "--out", run)[0] == 0
    for f in (image_folder / "val").rglob("*.jpg"):
        f.write_bytes(b"not an image")
    rc, out, err = cli(capsys, "eval", run, "--data", image_folder, "--json")  # crops: 10
    one_line_error(rc, err, "none of the 6 validation images could be read", "/val/", "(--data)")
    assert out == ""
    rc, _, err = cli(capsys, "train", "--data", image_folder, *small, "--out", tmp_path / "r2")
    one_line_error(rc, err, "none of the 6 validation images could be read")
    assert not (tmp_path / "r2" / "best.pt").exists()


def test_an_empty_val_set_is_an_error_not_a_100_percent_error(tmp_path):
    """Fashion-MNIST files of 0 test images: eval printed a 100% error over them."""
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(0))
    val = open_dataset(f"fashion-mnist:{tmp_path}", "val")
    with pytest.raises(DataError, match="the validation set has no images: nothing to score"):
        evaluate(None, Loader(val, 2, shuffle=False, workers=0))  # no batch: no predictor needed


def test_eval_on_a_folder_of_some_classes_scores_them_by_name(image_folder, tmp_path, capsys):
    """A val folder of only dog images: refused before ("the data has 1 class"), though the
    model knows dog. Scored by name now, as `predict` on the same images scores them."""
    run = tmp_path / "run"
    assert cli(capsys, "train", "--data", image_folder, "--batch-size", "3", "--workers", "0",
               "--eval-crops", "1", "--no-progress", "--recipe", "paper", "--precision", "fp32",
               "--epochs", "1", "--out", run)[0] == 0
    dogs = tmp_path / "dogs"
    (dogs / "val" / "dog").mkdir(parents=True)
    files = sorted((image_folder / "val" / "dog").iterdir())
    for f in files:
        (dogs / "val" / "dog" / f.name).write_bytes(f.read_bytes())
    rc, out, err = cli(capsys, "eval", run, "--data", dogs, "--crops", "1", "--json")
    assert rc == 0, err
    got = json.loads(out)
    rc, out, err = cli(capsys, "predict", run, *files, "--json", "--topk", "1")
    assert rc == 0, err
    hits = sum(p["top"][0]["class"] == "dog" for p in json.loads(out)["predictions"])
    assert got["images"] == 2 and got["top1_error"] == pytest.approx(1 - hits / 2)
    (dogs / "val" / "dog").rename(dogs / "val" / "wolf")  # a class the model does not know
    rc, _, err = cli(capsys, "eval", run, "--data", dogs, "--crops", "1")
    one_line_error(rc, err, "the model has 3 classes but the data has 1", "'wolf'")
    other = tmp_path / "other"  # as many classes, none of them the model's: by position, said
    for name, new in (("cat", "ant"), ("dog", "bee"), ("eel", "cow")):
        shutil.copytree(image_folder / "val" / name, other / "val" / new)
    rc, out, err = cli(capsys, "eval", run, "--data", other, "--crops", "1", "--json")
    assert rc == 0 and "the data's classes are not the model's (e.g. 'ant')" in err, err
    assert json.loads(out)["images"] == 6


def test_a_model_trained_at_another_size_evaluates_the_folder_it_was_prepared_from(
        image_folder, tmp_path, capsys):
    """Trained on `prepare --size 300` output, eval on the source folder said "prepare with
    --size 300", though predict reads the same images at 300. The folder is read at 300 now,
    and scores as the prepared val split does (the same pixels: both decode with Pillow)."""
    prepared, run = tmp_path / "p300", tmp_path / "run"
    assert cli(capsys, "prepare", image_folder, prepared, "--size", "300", "--workers", "0")[0] == 0
    assert cli(capsys, "train", "--data", prepared, "--batch-size", "3", "--workers", "0",
               "--eval-crops", "1", "--no-progress", "--recipe", "paper", "--precision", "fp32",
               "--epochs", "1", "--out", run)[0] == 0
    results = []
    for data in (prepared, image_folder):
        rc, out, err = cli(capsys, "eval", run, "--data", data, "--crops", "1", "--json")
        assert rc == 0, err
        results.append(json.loads(out))
    assert results[0] == pytest.approx(results[1])
