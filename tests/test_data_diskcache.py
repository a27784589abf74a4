"""Rendered `shapes` images kept on disk (data/diskcache.py): the same bytes as rendering, each
image rendered once, a kill between image and flag harmless, and the ways to switch it off."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet.data import Loader, diskcache
from alexnet.data.shapes import Shapes


def counting(monkeypatch) -> list[int]:
    """Patch Shapes._render to count the images it renders."""
    rendered: list[int] = []
    original = Shapes._render

    def render(self, indices, out):
        rendered.extend(int(i) for i in indices)
        return original(self, indices, out)
    monkeypatch.setattr(Shapes, "_render", render)
    return rendered


def test_kept_images_are_the_rendered_ones_and_rendered_once(monkeypatch):
    rendered = counting(monkeypatch)
    data = Shapes("train", 12, seed=5, image_size=64)
    assert data._cache is not None
    first = data.get_batch([3, 7, 3, 0])  # a repeat inside the batch too
    again = Shapes("train", 12, seed=5, image_size=64).get_batch([0, 7, 3, 11])  # another "run"
    assert sorted(set(rendered)) == [0, 3, 7, 11] and rendered.count(7) == 1
    monkeypatch.setenv("ALEXNET_IMAGE_CACHE", "0")
    fresh = Shapes("train", 12, seed=5, image_size=64)
    assert fresh._cache is None
    assert torch.equal(first, fresh.get_batch([3, 7, 3, 0]))
    assert torch.equal(again, fresh.get_batch([0, 7, 3, 11]))


def test_an_unflagged_image_is_rendered_again(monkeypatch):
    data = Shapes("val", 6, seed=1, image_size=32)
    want = data.get_batch([2])
    flags, images = data._cache._open()
    images[2] = 0  # as if a kill came after a partial write, before the flag...
    flags[2] = 0
    rendered = counting(monkeypatch)
    assert torch.equal(Shapes("val", 6, seed=1, image_size=32).get_batch([2]), want)
    assert rendered == [2]


def test_workers_share_the_file(monkeypatch):
    data = Shapes("train", 16, seed=2, image_size=32)
    with_workers = [x for x, _ in Loader(data, 4, shuffle=True, seed=0, workers=2)]
    flags, _ = Shapes("train", 16, seed=2, image_size=32)._cache._open()
    assert flags.all()  # every image rendered in a worker was kept in the one file
    monkeypatch.setenv("ALEXNET_IMAGE_CACHE", "0")
    plain = [x for x, _ in Loader(Shapes("train", 16, seed=2, image_size=32), 4, shuffle=True,
                                  seed=0, workers=0)]
    assert all(torch.equal(a, b) for a, b in zip(with_workers, plain))


def test_too_large_or_unwritable_means_no_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(diskcache, "LIMIT", 1000)
    assert Shapes("train", 4, image_size=32)._cache is None  # 4 × 3 KB > 1000 bytes
    monkeypatch.setattr(diskcache, "LIMIT", 4 << 30)
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    monkeypatch.setenv("ALEXNET_CACHE", str(blocked))
    data = Shapes("train", 4, seed=9, image_size=32)
    out = data.get_batch([1, 2])  # the cache cannot be made: rendered, no error
    monkeypatch.setenv("ALEXNET_IMAGE_CACHE", "0")
    assert torch.equal(out, Shapes("train", 4, seed=9, image_size=32).get_batch([1, 2]))
    assert np.asarray(out).shape == (2, 32, 32, 3)


@pytest.mark.parametrize("value, on", [("off", False), ("FALSE", False), ("no", False),
                                       ("1", True), ("On", True), ("", True)])
def test_the_switch_takes_the_usual_spellings(monkeypatch, value, on):
    monkeypatch.setenv("ALEXNET_IMAGE_CACHE", value)
    assert (Shapes("train", 4, image_size=32)._cache is not None) is on


def test_a_misspelt_switch_is_one_line_not_a_guess(monkeypatch, tmp_path, capsys):
    from alexnet.cli import main
    monkeypatch.setenv("ALEXNET_IMAGE_CACHE", "banana")  # was silently "on"
    code = main(["train", "--data", "shapes:8:8", "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert "ALEXNET_IMAGE_CACHE='banana'" in err and "Traceback" not in err
