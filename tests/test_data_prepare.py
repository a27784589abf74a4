"""`alexnet prepare`: shards, statistics, the skipped-files report, resume, manifest-last."""
import json
import multiprocessing.pool
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

import alexnet.data.prepare as prep
from alexnet.cli import main
from alexnet.data import open_dataset
from alexnet.data.folder import load_image
from alexnet.data.imageset import StatsAccumulator
from alexnet.errors import AlexNetError


@pytest.fixture
def mixed_folder(image_folder):
    """The tiny ImageFolder plus one file of each awkward kind, and one that is not an image."""
    rgb = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    train = image_folder / "train"
    Image.fromarray(rgb).convert("L").save(train / "cat" / "grey.png")
    Image.fromarray(rgb).convert("CMYK").save(train / "dog" / "cmyk.jpg", quality=90)
    Image.fromarray(rgb).convert("P").save(train / "eel" / "palette.png")
    (train / "dog" / "truncated.jpg").write_bytes((train / "dog" / "dog_0.jpg").read_bytes()[:200])
    return image_folder


def test_prepare_folder_counts_report_and_pixels(mixed_folder, tmp_path):
    out = tmp_path / "prepared"
    manifest, done = prep.prepare(mixed_folder, out, shard_size=4, workers=1, progress=False)
    assert done == 13 + 6
    assert manifest["splits"]["train"]["count"] == 12 and manifest["splits"]["val"]["count"] == 6
    assert manifest["skipped"] == 1 and manifest["classes"] == ["cat", "dog", "eel"]
    report = (out / "report.txt").read_text().splitlines()
    assert report[0].startswith("# 1 of 19") and "truncated.jpg" in report[1]
    train, source = open_dataset(out, "train"), open_dataset(mixed_folder, "train")
    keep = [i for i, f in enumerate(source.files) if f.name != "truncated.jpg"]
    assert train.labels.tolist() == source.labels[keep].tolist()
    for j, i in enumerate(keep):  # shard boundaries every 4 source images, one image missing
        assert np.array_equal(train.get_batch([j])[0].numpy(), load_image(source.files[i]))
    acc = StatsAccumulator(256, 3)
    acc.add(train.get_batch(range(len(train))))
    for key, value in acc.result().items():
        torch.testing.assert_close(train.stats()[key], value, rtol=1e-4, atol=1e-3)


def test_interrupted_run_resumes_and_manifest_comes_last(image_folder, tmp_path, monkeypatch):
    out, calls = tmp_path / "prepared", []
    real = prep.prepare_shard

    def dies_on_the_third_shard(task):
        if len(calls) == 2:
            (out / ".train-00002.u8.k3x_9q2z.tmp").write_bytes(b"half")  # what a kill leaves
            raise KeyboardInterrupt
        calls.append(task[2:])
        return real(task)

    monkeypatch.setattr(prep, "prepare_shard", dies_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare(image_folder, out, shard_size=2, workers=1, progress=False)
    assert not (out / "manifest.json").exists() and (out / "train-00001.npz").exists()
    with pytest.raises(AlexNetError, match="unfinished"):
        open_dataset(out)
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("train-0000[01].*")}
    monkeypatch.setattr(prep, "prepare_shard", real)
    manifest, done = prep.prepare(image_folder, out, shard_size=2, workers=1, progress=False)
    assert done == 15 - 4  # the two finished shards were not redone ...
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("train-0000[01].*")} == finished
    assert not list(out.glob(".*.tmp"))  # ... and the leftovers are gone
    clean, _ = prep.prepare(image_folder, tmp_path / "clean", shard_size=2, workers=1,
                            progress=False)
    a, b = open_dataset(out), open_dataset(tmp_path / "clean")
    assert torch.equal(a.get_batch(range(9)), b.get_batch(range(9)))
    assert manifest["splits"] == clean["splits"]
    assert prep.prepare(image_folder, out, shard_size=2, workers=1, progress=False)[1] == 0


def test_options_must_match_to_resume(image_folder, tmp_path):
    out = tmp_path / "prepared"
    prep.prepare(image_folder, out, shard_size=8, workers=1, progress=False)
    with pytest.raises(AlexNetError, match="other options"):
        prep.prepare(image_folder, out, shard_size=4, workers=1, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(AlexNetError, match="not an `alexnet prepare` output"):
        prep.prepare(image_folder, tmp_path / "other", workers=1, progress=False)


def test_jpeg_shards_and_worker_processes(image_folder, tmp_path):
    raw_out, jpeg_out = tmp_path / "raw", tmp_path / "jpeg"
    prep.prepare(image_folder, raw_out, shard_size=3, workers=2, progress=False)
    manifest, _ = prep.prepare(image_folder, jpeg_out, shard_size=3, workers=2, encoding="jpeg",
                               quality=95, progress=False)
    assert manifest["encoding"] == "jpeg" and (jpeg_out / "val-00001.idx.npy").exists()
    raw, jpeg = open_dataset(raw_out, "val"), open_dataset(jpeg_out, "val")
    a, b = raw.get_batch(range(6)).float(), jpeg.get_batch(range(6)).float()
    assert (a - b).abs().mean() < 6  # JPEG at quality 95 of random pixels: close, not equal
    size = lambda d, ext: sum(p.stat().st_size for p in d.glob(f"*.{ext}"))  # noqa: E731
    assert size(jpeg_out, "jpg") < size(raw_out, "u8") / 2


def test_prepare_procedural_sources_and_the_cli(tmp_path, capsys):
    assert main(["prepare", "shapes:6:3", str(tmp_path / "s"), "--shard-size", "4",
                 "--workers", "1"]) == 0
    assert "prepared 6 train, 3 val images" in capsys.readouterr().out
    prepared, source = open_dataset(tmp_path / "s", "val"), open_dataset("shapes:6:3", "val")
    assert torch.equal(prepared.get_batch([2, 0]), source.get_batch([2, 0]))
    assert json.loads((tmp_path / "s" / "manifest.json").read_text())["channels"] == 3
    assert main(["prepare", "shapes:6:3", str(tmp_path / "s"), "--shard-size", "4"]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    # a prepared directory is a source too: here raw -> JPEG
    prep.prepare(tmp_path / "s", tmp_path / "j", encoding="jpeg", workers=1, progress=False)
    assert len(open_dataset(tmp_path / "j", "val")) == 3


def test_a_prepared_source_at_another_size_names_its_size(tmp_path, capsys):
    """A source prepared at 64 gave numpy's broadcast error under the default --size 256, and
    left OUT/prepare.json behind, so the rerun with --size 64 was refused too."""
    assert main(["prepare", "shapes:6:3", str(tmp_path / "s"), "--size", "64",
                 "--workers", "0"]) == 0
    capsys.readouterr()
    argv = ["prepare", str(tmp_path / "s"), str(tmp_path / "j"), "--format", "jpeg",
            "--workers", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.endswith("is prepared at 64×64: give --size 64 to re-prepare it (--size)\n"), err
    assert not (tmp_path / "j").exists()
    assert main([*argv, "--size", "64"]) == 0
    assert open_dataset(tmp_path / "j", "val").get_batch([0]).shape == (1, 64, 64, 3)


def test_a_source_without_val(image_folder, tmp_path, capsys):
    for f in (image_folder / "val").rglob("*.jpg"):
        f.unlink()
    for d in (image_folder / "val").iterdir():
        d.rmdir()
    (image_folder / "val").rmdir()
    manifest, _ = prep.prepare(image_folder, tmp_path / "p", workers=1, progress=False)
    assert list(manifest["splits"]) == ["train"]
    with pytest.raises(AlexNetError, match="no 'val' split"):
        open_dataset(tmp_path / "p", "val")
    # the command says so when it finishes, not only when train fails later
    assert main(["prepare", str(image_folder), str(tmp_path / "q"), "--workers", "1"]) == 0
    assert "has no val split" in capsys.readouterr().out


def test_zero_copy_views_augment_like_batches(tmp_path):
    from alexnet.data import Loader
    from alexnet.data.augment import Augment

    prep.prepare("shapes:8:2", tmp_path / "p", shard_size=3, workers=1, progress=False)
    data = open_dataset(tmp_path / "p", "train")
    views = data.views([7, 0, 4])  # across three shards
    assert all(v.shape == (256, 256, 3) for v in views)
    augment = Augment(data.stats(), 227)
    a = augment.train(views, torch.Generator().manual_seed(0))
    b = augment.train(data.get_batch([7, 0, 4]), torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    with_views = list(Loader(data, 4, shuffle=True, transform=augment.train, workers=0))
    plain = list(Loader(data, 4, shuffle=True, workers=0))
    for (x, y), (images, labels) in zip(with_views, plain):
        assert torch.equal(y, labels) and x.shape == (len(images), 3, 227, 227)


def _sigterm_is_default_after(init) -> bool:
    """In a process forked while a command runs (cli's SIGTERM handler installed), whether
    `init` leaves SIGTERM to its default action."""
    from alexnet.cli import _sigterm_raises
    with _sigterm_raises():
        pid = os.fork()
        if pid == 0:  # the child: report by exit code, never return into pytest
            try:
                init()
                os._exit(0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def test_forked_workers_end_on_sigterm_at_once():
    """A worker keeping the command's Python-level SIGTERM handler acts on a SIGTERM only between
    bytecodes: one that came just before a blocking call (a pool worker waiting for its next
    task) was noted and never acted on, and its parent waited for it forever. So prepare's pool
    workers and the loader's workers put SIGTERM back to its default."""
    from alexnet.data import loader
    assert _sigterm_is_default_after(prep._worker_init)
    assert _sigterm_is_default_after(lambda: loader._worker_started(0))


def test_a_finished_prepare_lets_its_workers_exit_rather_than_terminating_them(tmp_path,
                                                                                monkeypatch):
    """`with Pool()` ends with terminate(): SIGTERM to every worker, even when all went well."""
    terminated = []
    monkeypatch.setattr(multiprocessing.pool.Pool, "terminate",
                        lambda self: terminated.append(self))
    prep.prepare("shapes:24:8", tmp_path / "p", shard_size=5, workers=2, progress=False)
    assert terminated == []
    assert len(open_dataset(tmp_path / "p", "train")) == 24


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["default-workers", "2"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "timeout"])
def test_ctrl_c_ends_a_prepare_with_workers_in_one_line_leaving_no_temporary_file(tmp_path, sig,
                                                                                  workers):
    """Ctrl-C (SIGINT to the whole process group) during a prepare with 2 workers: each worker
    printed its KeyboardInterrupt's traceback, the parent hung in pool.join() 3 times in 9, and
    terminate() killed the workers mid-write, leaving their temporary shard files (6 in 6). So
    did `timeout -s TERM` (to the group too): the workers end on SIGTERM where they stand."""
    out = tmp_path / "out"
    env = {**os.environ, "ALEXNET_IMAGE_CACHE": "0", "ALEXNET_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "alexnet", "prepare", "shapes:2000:100",
                             str(out), *workers, "--shard-size", "64", "--format", "jpeg"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group, as a shell's job
    deadline = time.monotonic() + 120
    while not list(out.glob(".train-*.tmp")) and time.monotonic() < deadline:  # mid-write
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("prepare hung after Ctrl-C")
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err, err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
