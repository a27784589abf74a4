"""`alexnet bench data`: runs end to end on tiny inputs (the speed itself is not tested here)."""
import gc
import multiprocessing
import json

import pytest

from alexnet.cli import main


def test_bench_data_json_on_generated_photos(capsys):
    assert main(["bench", "data", "--images", "24", "--batch-size", "8", "--rounds", "1",
                 "--workers", "0", "--model-steps", "0", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 24 and r["workers"] == 0 and 20 < r["mean_file_kb"] < 200
    for key in ("baseline_img_s", "raw_img_s", "jpeg_img_s", "raw_ratio", "prepare_raw_img_s"):
        assert r[key] > 0
    assert r["raw_ratio"] == r["raw_img_s"] / r["baseline_img_s"]


def test_bench_data_table_on_a_folder(image_folder, capsys):
    assert main(["bench", "data", str(image_folder), "--images", "8", "--batch-size", "4",
                 "--rounds", "1", "--workers", "0", "--model-steps", "0"]) == 0
    out = capsys.readouterr().out
    assert "8 of the 9 training images" in out and "× baseline" in out
    assert main(["bench", "data", "--images", "4", "--batch-size", "4"]) == 2


@pytest.mark.parametrize("bad, words", [(["--crop", "300"], "at most the prepared size 256"),
                                        (["--crop", "0"], "crop must be >= 1"),
                                        (["--model-steps", "-1"], "model_steps must be >= 0"),
                                        (["--device", "tpu"], "tpu")])
def test_bench_data_refuses_bad_options_before_any_work(bad, words, capsys):
    assert main(["bench", "data", *bad]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_bench_data_device_mode_on_the_cpu(capsys):
    """--device: batches delivered augmented on the device, and JPEG decoded there too (on the
    CPU here, with torchvision's decoder; nvJPEG on a GPU)."""
    assert main(["bench", "data", "--images", "24", "--batch-size", "8", "--rounds", "1",
                 "--workers", "0", "--model-steps", "0", "--device", "cpu", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["device"] == "cpu"
    for key in ("baseline_img_s", "raw_img_s", "jpeg_img_s", "jpeg-device_img_s",
                "jpeg-device_ratio"):
        assert r[key] > 0
    assert main(["bench", "data", "--images", "16", "--batch-size", "8", "--rounds", "1",
                 "--workers", "0", "--model-steps", "0", "--device", "cpu"]) == 0
    assert "decoded on the device" in capsys.readouterr().out


def test_bench_data_device_mode_leaves_no_workers_behind(capsys):
    """With the default workers, each loader's workers stop when `bench data --device` is done,
    not when the garbage collector gets to them: its shutdown then waits 5 s a worker, and on
    the H200 (4 loaders × 14 workers) the command printed its table and did not exit in 70 s.
    The collector is off here, so that only reference counting can free the loaders."""
    gc.disable()
    try:
        assert main(["bench", "data", "--images", "24", "--batch-size", "8", "--rounds", "1",
                     "--model-steps", "0", "--device", "cpu"]) == 0
        left = multiprocessing.active_children()
    finally:
        gc.enable()
        gc.collect()
    assert "decoded on the device" in capsys.readouterr().out
    assert left == []


def test_bench_data_refuses_what_cannot_fit_on_the_disk_before_writing(capsys, tmp_path,
                                                                        monkeypatch):
    """--images 1e23 wrote photos until the disk was full."""
    import shutil
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=10**7))
    assert main(["bench", "data", "--images", "64", "--batch-size", "8", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "64 images need more than 0.0126 GB" in err and "(--images)" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert main(["bench", "data", "--images", "99999999999999999999999"]) == 2
    assert "(--images)" in capsys.readouterr().err
