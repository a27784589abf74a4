"""Issue 11, data input, continued from test_adversarial_data.py: damaged prepared data and
statistics, `alexnet prepare`'s own errors, and `alexnet bench data`. Each case is the call or
command, its outcome (exit code 2 with ONE line on stderr and no traceback, or the exception), and
what must be on disk afterwards. Images are tiny and generated."""
import json

import numpy as np
import pytest
import torch

import alexnet.data.imageset as imageset
import alexnet.data.prepare as prep
from alexnet.data import Loader, open_dataset
from alexnet.errors import DataError
from alexnet.io import locked_dir
from conftest import cli, one_line_error


# ---- 6. damaged prepared data and statistics -----------------------------------------------------

@pytest.fixture
def prepared(image_folder, tmp_path):
    """The small ImageFolder prepared at 32×32, as raw and as JPEG shards of 4 images."""
    out = {}
    for fmt in ("raw", "jpeg"):
        prep.prepare(image_folder, tmp_path / fmt, size=32, shard_size=4, encoding=fmt,
                     workers=1, progress=False)
        out[fmt] = tmp_path / fmt
    return out


def test_truncated_shards_are_one_line_data_errors(prepared, tmp_path, capsys):
    raw = prepared["raw"] / "train-00001.u8"
    raw.write_bytes(raw.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated"):
        open_dataset(prepared["raw"])
    rc, _, err = cli(capsys, "prepare", prepared["raw"], tmp_path / "again", "--format", "jpeg")
    one_line_error(rc, err, "train-00001.u8", "truncated")
    jpg = prepared["jpeg"] / "train-00001.jpg"
    jpg.write_bytes(jpg.read_bytes()[:500])
    data = open_dataset(prepared["jpeg"])  # only sizes of the index are known without reading
    for workers in (0, 2):  # raised in a worker, it comes back as itself, not wrapped
        with pytest.raises(DataError, match="train-00001.jpg does not match its index") as e:
            list(Loader(data, 4, shuffle=False, workers=workers))
        assert "\n" not in str(e.value)
    garbled = prepared["jpeg"] / "train-00000.jpg"
    garbled.write_bytes(b"\0" * 8 + garbled.read_bytes()[8:])  # same size, no JPEG header
    with pytest.raises(DataError, match="image 0 does not decode") as e:
        open_dataset(prepared["jpeg"]).get_batch([0])
    assert ".cpp:" not in str(e.value)  # the decoder's reason, not where in its source it was


@pytest.mark.parametrize("fmt,name,damage", [
    ("raw", "train-00001.u8", "delete"), ("raw", "train-00001.u8", "truncate"),
    ("raw", "val-00000.u8", "delete"), ("jpeg", "train-00001.jpg", "delete"),
    ("jpeg", "train-00001.idx.npy", "delete"), ("jpeg", "train-00001.jpg", "truncate"),
    ("raw", "manifest.json", "truncate")])
def test_rerunning_prepare_redoes_a_broken_shard(prepared, image_folder, capsys, fmt, name,
                                                 damage):
    """The error sends the user to `alexnet prepare`, which took a finished directory for done
    and redid nothing: it checks the shards first now, and redoes the broken ones."""
    out = prepared[fmt]
    expected = {s: open_dataset(out, s).get_batch(range(n)) for s, n in (("train", 9), ("val", 6))}
    target = out / name
    if damage == "delete":
        target.unlink()
    else:
        target.write_bytes(target.read_bytes()[:500])
    split, index = ("val", 0) if name.startswith("val") else ("train", 4)  # in the shard
    with pytest.raises(DataError) as e:
        open_dataset(out, split).get_batch([index])
    assert "\n" not in str(e.value)
    assert name == "manifest.json" or f"rerun the `alexnet prepare` command that made {out}" in \
        str(e.value)
    rc, _, err = cli(capsys, "prepare", image_folder, out, "--size", 32, "--shard-size", 4,
                     "--format", fmt, "--workers", 1)
    assert rc == 0, err
    for split, images in expected.items():
        assert torch.equal(open_dataset(out, split).get_batch(range(len(images))), images)
    rc, stdout, err = cli(capsys, "prepare", image_folder, out, "--size", 32,
                          "--shard-size", 4, "--format", fmt)
    assert rc == 0 and "already prepared" in stdout, err  # whole again: nothing redone


def test_one_rerun_mends_a_damaged_manifest_and_a_missing_shard(prepared, image_folder, capsys):
    """The manifest could not say which shards to check, so the rerun rebuilt it from the
    sidecars and called the directory whole, with a shard file still missing: it took two."""
    out = prepared["raw"]
    expected = open_dataset(out, "train").get_batch(range(9))
    (out / "manifest.json").write_text("{")
    (out / "train-00001.u8").unlink()
    rc, stdout, err = cli(capsys, "prepare", image_folder, out, "--size", 32, "--shard-size", 4,
                          "--workers", 1)
    assert rc == 0 and "prepared 9 train, 6 val images" in stdout, err
    assert torch.equal(open_dataset(out, "train").get_batch(range(9)), expected)
    rc, stdout, err = cli(capsys, "prepare", image_folder, out, "--size", 32, "--shard-size", 4)
    assert rc == 0 and "already prepared" in stdout, err


def test_shards_that_fail_their_check_when_new_stop_the_run(image_folder, tmp_path,
                                                           monkeypatch):
    """Shards are checked again after they are written; ones that fail it twice (a bad disk)
    end the run with an error instead of a loop."""
    monkeypatch.setattr(prep, "shard_fault", lambda *args, **kw: "unreadable")
    with pytest.raises(DataError, match="fail their check"):
        prep.prepare(image_folder, tmp_path / "p", size=32, shard_size=4, workers=1,
                     progress=False)
    assert not (tmp_path / "p" / "manifest.json").exists()


def test_a_missing_shard_is_one_line_that_names_the_command(prepared, tmp_path, capsys):
    (prepared["raw"] / "train-00001.u8").unlink()
    rc, _, err = cli(capsys, "prepare", prepared["raw"], tmp_path / "again", "--format", "jpeg")
    one_line_error(rc, err, "train-00001.u8", "is missing",
                   f"rerun the `alexnet prepare` command that made {prepared['raw']}")


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04garbage", "truncate", "wrong shape",
                                    b"hello\n"])
def test_damaged_stats_npz_is_a_data_error(prepared, damage):
    stats = prepared["raw"] / "stats.npz"
    if damage == "truncate":
        stats.write_bytes(stats.read_bytes()[:200])
    elif damage == "wrong shape":
        np.savez(stats, mean_image=np.zeros((8, 8, 3)), mean=np.zeros(3), std=np.zeros(3),
                 eigval=np.zeros(3), eigvec=np.eye(3))
    else:
        stats.write_bytes(damage)
    with pytest.raises(DataError, match="stats.npz") as e:
        open_dataset(prepared["raw"]).stats()
    assert "\n" not in str(e.value)
    assert "pickle" not in str(e.value)  # numpy's advice to load it unsafely, on a text file


@pytest.mark.parametrize("fmt, name", [("raw", "train-labels.npy"), ("jpeg", "train-00000.idx.npy"),
                                       ("raw", "train-00000.npz")])
def test_a_text_file_for_a_numpy_file_is_not_called_pickled(prepared, image_folder, fmt, name):
    """np.load(allow_pickle=False) of a file that is not .npy/.npz says it "contains pickled
    (object) data" and to load it unsafely: the wrong cause, and advice not to follow."""
    (prepared[fmt] / name).write_text("hello\n")
    with pytest.raises(DataError, match="not a NumPy .npy or .npz file") as e:
        if name.endswith(".npz"):  # a shard's sidecar: read when an unfinished prepare ends
            (prepared[fmt] / "manifest.json").unlink()
            prep.prepare(image_folder, prepared[fmt], size=32, shard_size=4, encoding=fmt,
                         workers=0, progress=False)
        else:
            open_dataset(prepared[fmt]).get_batch([0])
    assert "pickle" not in str(e.value) and name in str(e.value)


def test_damaged_stats_cache_is_recomputed(image_folder):
    imageset._memory_cache.clear()
    train = open_dataset(image_folder)
    first = train.stats()
    cached = imageset._cache_file(train.cache_key())
    for damage in (b"garbage", cached.read_bytes()[:300]):
        cached.write_bytes(damage)
        imageset._memory_cache.clear()
        again = open_dataset(image_folder).stats()
        for key in first:
            torch.testing.assert_close(again[key], first[key])
        assert imageset.load_stats(cached)["mean_image"].shape == (256, 256, 3)  # rewritten


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "missing splits", "bad count"])
def test_damaged_manifest_is_one_line(prepared, tmp_path, capsys, text):
    manifest = prepared["raw"] / "manifest.json"
    m = json.loads(manifest.read_text())
    if text == "missing splits":
        del m["splits"]
        text = json.dumps(m)
    elif text == "bad count":
        m["splits"]["train"]["shards"][0]["count"] = "four"
        text = json.dumps(m)
    manifest.write_text(text)
    with pytest.raises(DataError, match="manifest.json"):
        open_dataset(prepared["raw"])
    rc, _, err = cli(capsys, "prepare", prepared["raw"], tmp_path / "again")
    one_line_error(rc, err, "manifest.json")


def test_garbage_prepare_json_is_one_line(image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "prepare.json").write_bytes(b"\x00\xffgarbage")
    rc, _, err = cli(capsys, "prepare", image_folder, out)
    one_line_error(rc, err, "prepare.json", "damaged")
    assert (out / "prepare.json").read_bytes() == b"\x00\xffgarbage"  # left for the user to see


# ---- 7. `alexnet prepare`: one run per output, every error in one line --------------------------

def test_second_prepare_into_the_same_output_stops(image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    with locked_dir(out, "output directory"):  # the first run, still working
        live = out / ".train-00000.u8.ab12cd34.tmp"
        live.write_bytes(b"being written")
        rc, _, err = cli(capsys, "prepare", image_folder, out, "--workers", "1")
        one_line_error(rc, err, "in use")
        assert live.read_bytes() == b"being written"  # the second run deleted nothing
    rc, _, err = cli(capsys, "prepare", image_folder, out, "--workers", "1")
    assert rc == 0, err
    assert not live.exists() and (out / "manifest.json").exists()  # swept once the lock was free


def test_no_readable_training_image_writes_the_report_it_names(tmp_path, capsys):
    src = tmp_path / "src"
    for c in ("cat", "dog"):
        (src / "train" / c).mkdir(parents=True)
        (src / "train" / c / f"{c}.jpg").write_bytes(b"\xff\xd8 truncated")
    rc, _, err = cli(capsys, "prepare", src, tmp_path / "out", "--workers", "1")
    one_line_error(rc, err, "no readable training images", "report.txt")
    report = (tmp_path / "out" / "report.txt").read_text().splitlines()
    assert report[0].startswith("# 2 of 2") and len(report) == 3 and "cat.jpg" in report[1]
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_an_output_directory_that_cannot_be_made_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    rc, _, err = cli(capsys, "prepare", "shapes:4:2", tmp_path / "file" / "out")
    one_line_error(rc, err, "as an output directory: Not a directory")  # it said "a output"


def test_no_readable_val_image_is_said_at_once(image_folder, tmp_path, capsys):
    """It was "prepared ... 0 val images" alone, and train or eval failed on it later."""
    for f in (image_folder / "val").rglob("*.jpg"):
        f.write_bytes(b"not an image")
    rc, out, err = cli(capsys, "prepare", image_folder, tmp_path / "out", "--workers", "0",
                       "--size", "32")
    assert rc == 0, err
    assert "note: no image of" in out and "val split could be read" in out, out
    assert len((tmp_path / "out" / "report.txt").read_text().splitlines()) == 1 + 6


@pytest.mark.parametrize("flag,value,message", [
    ("--size", "2", "size must be >= 8, got 2 (--size)"),
    ("--size", "100000", "size must be <= 4096, got 100000 (--size)"),
    ("--shard-size", "0", "shard_size must be >= 1, got 0 (--shard-size)"),
    ("--workers", "-1", "workers must be >= 0, got -1 (--workers)"),
    ("--workers", "99999", "workers must be in 0.."),
    ("--quality", "0", "quality must be in 1..100, got 0 (--quality)")])
def test_bad_prepare_options_name_the_option(tmp_path, capsys, flag, value, message):
    rc, _, err = cli(capsys, "prepare", "shapes:4:2", tmp_path / "out", flag, value)
    one_line_error(rc, err, message)
    assert not (tmp_path / "out").exists()


# ---- 8. `alexnet bench data` ---------------------------------------------------------------------

def test_bench_data_skips_unreadable_files_and_needs_two_batches(image_folder, capsys):
    (image_folder / "train" / "cat" / "broken.jpg").write_bytes(b"not an image")
    rc, out, err = cli(capsys, "bench", "data", image_folder, "--images", "10", "--batch-size",
                       "4", "--rounds", "1", "--workers", "0", "--model-steps", "0", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["images"] == 10 and r["unreadable"] == 1 and r["baseline_img_s"] > 0
    rc, _, err = cli(capsys, "bench", "data", image_folder, "--images", "40", "--batch-size",
                     "8", "--workers", "0", "--model-steps", "0")
    one_line_error(rc, err, "needs at least 16 images", "it has 10")


def test_a_prepare_that_fails_at_once_leaves_no_output_directory(tmp_path, capsys):
    rc, _, err = cli(capsys, "prepare", "shapes:16:8", tmp_path / "new", "--seed", "-1",
                     "--workers", "0")
    one_line_error(rc, err, "seed must be >= 0", "(--seed)")
    assert not (tmp_path / "new").exists()  # not an empty folder holding only the lock file
    (tmp_path / "mine").mkdir()  # a directory the user made is left as it was
    rc, _, err = cli(capsys, "prepare", "shapes:16:8", tmp_path / "mine", "--seed", "-1",
                     "--workers", "0")
    assert rc == 2 and (tmp_path / "mine").is_dir()
