"""Dataset sources: shapes, Fashion-MNIST, ImageFolder trees; statistics; bad inputs."""
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet.data import open_dataset
from alexnet.data.folder import load_image
from alexnet.data.imageset import StatsAccumulator
from alexnet.errors import AlexNetError, DataError
from conftest import cli, one_line_error, write_idx

FASHION = Path("/usr/share/datasets/fashion-mnist")


# ---- shapes --------------------------------------------------------------------------------------

def test_shapes_is_a_pure_function_of_seed_split_index():
    a = open_dataset("shapes:40:10", "train", seed=0)
    batch = a.get_batch([3, 17, 25])
    assert batch.shape == (3, 256, 256, 3) and batch.dtype == torch.uint8
    assert torch.equal(a.get_batch([17])[0], batch[1])  # batch composition does not matter
    assert torch.equal(open_dataset("shapes:99:5", "train", seed=0).get_batch([25])[0], batch[2])
    assert not torch.equal(open_dataset("shapes:40:10", "train", seed=1).get_batch([3])[0],
                           batch[0])
    assert not torch.equal(open_dataset("shapes:40:10", "val", seed=0).get_batch([3])[0],
                           batch[0])


def test_shapes_classes_sizes_and_variety():
    train = open_dataset("shapes:30:20", "train")
    assert len(train) == 30 and len(open_dataset("shapes:30:20", "val")) == 20
    assert len(train.classes) >= 10 and train.channels == 3 and train.image_size == 256
    assert np.bincount(train.labels).tolist() == [3] * 10
    x = train.get_batch(range(10)).float()
    assert x.std() > 40  # not blank
    assert (x[:, :, :, 0] - x[:, :, :, 1]).abs().mean() > 5  # colour, not grey
    assert len(open_dataset("shapes", "train")) == 20000  # the defaults


@pytest.mark.parametrize("spec", ["shapes:abc", "shapes:10:0", "shapes:1:2:3"])
def test_bad_shapes_spec(spec):
    with pytest.raises(AlexNetError):
        open_dataset(spec)


# ---- Fashion-MNIST -------------------------------------------------------------------------------

def test_fashion_mnist_from_idx_files(tmp_path):
    y, x = np.mgrid[0:28, 0:28]
    images = np.stack([6 * x + 3 * y + k for k in range(6)])  # smooth: bilinear is exact on it
    for prefix, n in (("train", 6), ("t10k", 4)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images[:n])
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    train = open_dataset(f"fashion-mnist:{tmp_path}", "train")
    assert len(train) == 6 and train.channels == 1 and train.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert len(open_dataset(f"fashion-mnist:{tmp_path}", "val")) == 4
    x = train.get_batch([2])
    assert x.shape == (1, 256, 256, 1)
    # a 28→256 bilinear upscale: shrinking it back by area averaging gives the original back
    back = torch.nn.functional.adaptive_avg_pool2d(x.permute(0, 3, 1, 2).float(), 28)[0, 0]
    err = (back - torch.from_numpy(images[2]).float())[1:-1, 1:-1].abs().max()
    assert err < 1.0, err
    stats = train.stats()
    assert stats["mean_image"].shape == (256, 256, 1) and stats["eigvec"].shape == (1, 1)


def test_fashion_mnist_missing_names_the_debian_package(tmp_path):
    with pytest.raises(AlexNetError, match="dataset-fashion-mnist"):
        open_dataset(f"fashion-mnist:{tmp_path}")


def test_fashion_mnist_truncated(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(3))
    with pytest.raises(AlexNetError, match="the counts must be equal"):
        open_dataset(f"fashion-mnist:{tmp_path}")


@pytest.mark.parametrize("labels, words", [
    (np.array([0, 200, 3]), ["label 200", "0–9"]),
    (np.zeros((3, 1)), ["labels (N,)", "(3, 1)"])])
@pytest.mark.parametrize("command", ["train", "prepare"])
def test_fashion_mnist_labels_out_of_range_are_one_line_errors(tmp_path, capsys, labels, words,
                                                               command):
    """A label of 200 or labels of shape (N, 1): train was an IndexError in cross_entropy (and
    left a run directory), eval and `show neighbours` a traceback too, and prepare wrote a dataset
    that every later command refused. Now opening the data says so, before anything is written."""
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((3, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    out = tmp_path / "out"
    argv = {"train": ["train", "--data", f"fashion-mnist:{tmp_path}", "--epochs", "1",
                      "--batch-size", "2", "--device", "cpu", "--no-progress", "--out", out],
            "prepare": ["prepare", f"fashion-mnist:{tmp_path}", out, "--size", "32"]}[command]
    rc, _, err = cli(capsys, *argv)
    one_line_error(rc, err, "train-labels-idx1-ubyte.gz", *words)
    assert not out.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda raw: (gz := gzip.compress(raw))[:10] + b"\xff" + gz[11:], "invalid block type"),
    (lambda raw: gzip.compress(raw[:6]), "header names 3 dimensions"),
])
def test_fashion_mnist_damaged_file_is_a_data_error(tmp_path, damage, message):
    """A damaged .gz (zlib.error) or a header cut short (numpy's ValueError) was a traceback."""
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((2, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(2))
    images = tmp_path / "train-images-idx3-ubyte.gz"
    images.write_bytes(damage(gzip.decompress(images.read_bytes())))
    with pytest.raises(DataError, match=message):
        open_dataset(f"fashion-mnist:{tmp_path}")


@pytest.mark.skipif(not (FASHION / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    train, val = open_dataset("fashion-mnist", "train"), open_dataset("fashion-mnist", "val")
    assert (len(train), len(val)) == (60000, 10000)
    assert train.classes[9] == "Ankle boot" and train.labels[0] == 9  # the known first label
    assert np.bincount(train.labels).tolist() == [6000] * 10
    x = train.get_batch([0, 59999])
    assert x.shape == (2, 256, 256, 1) and x.float().mean() > 20


# ---- ImageFolder ---------------------------------------------------------------------------------

def test_image_folder_layout_and_labels(image_folder):
    train = open_dataset(image_folder, "train")
    assert train.classes == ["cat", "dog", "eel"]
    assert train.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    val = open_dataset(str(image_folder), "val")
    assert len(val) == 6 and val.channels == 3
    x = val.get_batch([0, 5])
    assert x.shape == (2, 256, 256, 3) and x.dtype == torch.uint8


def test_resize_shorter_side_then_centre_crop(tmp_path):
    # 300×100: black | white | black thirds. Shorter side → 256 makes it 768×256; the centre
    # 256 columns are exactly the white third.
    a = np.zeros((100, 300, 3), np.uint8)
    a[:, 100:200] = 255
    Image.fromarray(a).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png")
    assert out.shape == (256, 256, 3)
    assert out[:, 3:-3].min() == 255 and out[:, 0].max() < 200  # edges straddle the boundary
    tall = load_image(_save(tmp_path / "tall.png", a.transpose(1, 0, 2)))
    assert tall[3:-3].min() == 255


def _save(path, array, mode=None, **kw):
    img = Image.fromarray(array)
    (img.convert(mode) if mode else img).save(path, **kw)
    return path


def test_every_mode_becomes_rgb(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200
    grey = load_image(_save(tmp_path / "g.png", rgb, "L"))
    assert grey.shape == (256, 256, 3) and (grey[..., 0] == grey[..., 2]).all()
    cmyk = load_image(_save(tmp_path / "c.jpg", rgb, "CMYK", quality=95))
    assert cmyk.shape == (256, 256, 3) and abs(int(cmyk[..., 0].mean()) - 200) < 8
    assert cmyk[..., 1].mean() < 8
    palette = Image.fromarray(rgb).convert("P")
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    assert load_image(tmp_path / "p.png").shape == (256, 256, 3)
    deep = Image.fromarray((np.ones((32, 32)) * 40000).astype(np.uint16))
    deep.save(tmp_path / "d.png")
    assert abs(int(load_image(tmp_path / "d.png")[0, 0, 0]) - 40000 // 257) <= 1


def test_flat_validation_folder_with_label_file(image_folder):
    flat = image_folder / "val"
    for c in ("cat", "dog", "eel"):
        for f in (flat / c).iterdir():
            f.rename(flat / f"{c}-{f.name}")
        (flat / c).rmdir()
    with pytest.raises(AlexNetError, match="label file") as e:
        open_dataset(image_folder, "val")
    assert e.value.option == "val_labels"
    labels = image_folder / "val.txt"
    names = sorted(p.name for p in flat.iterdir())
    labels.write_text("".join(f"{n} {n.split('-')[0] if i % 2 else 'xx'}\n"
                              for i, n in enumerate(names)))
    with pytest.raises(AlexNetError, match="unknown class"):
        open_dataset(image_folder, "val", val_labels=labels)
    # wnids (class names) or indices into the sorted training classes, as Caffe's val.txt
    idx = {"cat": 0, "dog": 1, "eel": 2}
    labels.write_text("".join(f"{n} {n.split('-')[0] if i % 2 else idx[n.split('-')[0]]}\n"
                              for i, n in enumerate(names)))
    val = open_dataset(image_folder, "val", val_labels=labels)
    assert [val.classes[k] for k in val.labels] == [n.split("-")[0] for n in names]
    labels.write_text("".join("1\n" for _ in names))  # devkit IDs without the devkit's meta.mat
    with pytest.raises(AlexNetError, match="meta.mat"):
        open_dataset(image_folder, "val", val_labels=labels)


def test_a_label_file_from_a_windows_editor_with_file_names_holding_spaces(image_folder):
    """A UTF-8 byte-order mark made a valid file fail ("line 1: \\ufeffcat 0.jpg is not in
    val"); a tab between the columns lets a file name hold spaces."""
    flat = image_folder / "val"
    for c in ("cat", "dog", "eel"):
        for f in (flat / c).iterdir():
            f.rename(flat / f"my {c} {f.name}")
        (flat / c).rmdir()
    names = sorted(p.name for p in flat.iterdir())
    labels = image_folder / "val.txt"
    labels.write_bytes(("\ufeff" + "".join(f"{n}\t{n.split()[1]}\r\n" for n in names)).encode())
    val = open_dataset(image_folder, "val", val_labels=labels)
    assert [val.classes[k] for k in val.labels] == [n.split()[1] for n in names]


def test_bad_folders(tmp_path, image_folder):
    with pytest.raises(AlexNetError, match="not found"):
        open_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AlexNetError):
        open_dataset(tmp_path / "empty")
    (tmp_path / "empty" / "train").mkdir()
    with pytest.raises(AlexNetError, match="no images"):
        open_dataset(tmp_path / "empty")
    (image_folder / "train" / "fox").mkdir()
    with pytest.raises(AlexNetError, match="fox"):
        open_dataset(image_folder)
    with pytest.raises(AlexNetError, match="split"):
        open_dataset("shapes", "test")


def test_unreadable_file_is_reported_by_read(image_folder):
    (image_folder / "train" / "dog" / "dog_1.jpg").write_bytes(b"not a jpeg")
    train = open_dataset(image_folder, "train")
    images, errors = train.read(np.arange(len(train)))
    assert [i for i, _ in errors] == [4] and images[4].max() == 0
    with pytest.warns(UserWarning, match="dog_1"):
        train.get_batch([4])


# ---- statistics ----------------------------------------------------------------------------------

def test_statistics_match_a_direct_computation():
    rng = np.random.default_rng(0)
    base = rng.normal(120, 40, (50, 8, 8, 1))
    x = np.clip(base + rng.normal(0, [5, 15, 30], (50, 8, 8, 3)), 0, 255).astype(np.uint8)
    acc, half = StatsAccumulator(8, 3), StatsAccumulator(8, 3)
    acc.add(x[:20])
    half.add(x[20:])
    acc.merge(half)
    s = acc.result()
    pixels = x.reshape(-1, 3).astype(np.float64)
    cov = np.cov(pixels.T, bias=True)
    np.testing.assert_allclose(s["mean_image"], x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(s["mean"], pixels.mean(0), rtol=1e-5)
    np.testing.assert_allclose(s["std"], pixels.std(0), rtol=1e-4)
    assert torch.all(s["eigval"][:-1] >= s["eigval"][1:])  # descending, like the paper's λ1..λ3
    v, lam = s["eigvec"].double(), s["eigval"].double()
    np.testing.assert_allclose((v * lam) @ v.T, cov, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-5)


def test_devkit_ground_truth_with_meta_mat(image_folder):
    scipy_io = pytest.importorskip("scipy.io")
    flat = image_folder / "val"
    for c in ("cat", "dog", "eel"):
        for f in (flat / c).iterdir():
            f.rename(flat / f"{c}-{f.name}")
        (flat / c).rmdir()
    devkit = image_folder / "devkit"
    devkit.mkdir()
    # The devkit's IDs are not in sorted-wnid order: here ID 1 = eel, 2 = cat, 3 = dog.
    synsets = np.array([(1, "eel"), (2, "cat"), (3, "dog")],
                       dtype=[("ILSVRC2012_ID", "i4"), ("WNID", "U8")])
    scipy_io.savemat(devkit / "meta.mat", {"synsets": synsets})
    names = sorted(p.name for p in flat.iterdir())
    ids = {"eel": 1, "cat": 2, "dog": 3}
    truth = devkit / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("".join(f"{ids[n.split('-')[0]]}\n" for n in names))
    val = open_dataset(image_folder, "val", val_labels=truth)
    assert [val.classes[k] for k in val.labels] == [n.split("-")[0] for n in names]


def test_statistics_show_a_bar_on_a_terminal_only(monkeypatch, tmp_path):
    """The first run on `shapes` renders its images while computing the statistics: about 100 s
    that printed nothing. On a terminal a bar shows it; in logs and tests nothing changes."""
    import alexnet.data.imageset as imageset
    bars = []

    class Recorded:
        def __init__(self, total, desc, enabled=True):
            bars.append({"total": total, "enabled": enabled, "updates": 0})

        def update(self, **fields):
            bars[-1]["updates"] += 1

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass
    monkeypatch.setattr(imageset, "Progress", Recorded)
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path))
    for tty in (False, True):
        monkeypatch.setattr(imageset, "_memory_cache", {})
        for f in tmp_path.rglob("*"):
            if f.is_file():
                f.unlink()
        monkeypatch.setattr(imageset.sys.stderr, "isatty", lambda: tty, raising=False)
        open_dataset("shapes:200:8").stats()
        assert bars[-1] == {"total": 2, "enabled": tty, "updates": 2}  # 200 images, 128 a batch


def test_images_written_again_under_the_same_names_get_new_statistics(image_folder, tmp_path,
                                                                      monkeypatch):
    """The statistics' cache key named the folder, its image count and its first and last file:
    a dataset made again under the same names (other pictures) got the old mean image, mean, std
    and PCA in every later run, unsaid. The key holds the sampled files' sizes and times now."""
    import alexnet.data.imageset as imageset
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(imageset, "_memory_cache", {})
    assert open_dataset(image_folder).stats()["mean"].tolist() != [10.0] * 3
    for f in (image_folder / "train").rglob("*.jpg"):
        Image.new("RGB", (40, 30), (10, 10, 10)).save(f, "JPEG")
    for emptied in (False, True):  # the memory cache's key, then the disk cache's
        if emptied:
            monkeypatch.setattr(imageset, "_memory_cache", {})
        mean = open_dataset(image_folder).stats()["mean"]
        assert torch.allclose(mean, torch.tensor([10.0] * 3), atol=1.5), mean
