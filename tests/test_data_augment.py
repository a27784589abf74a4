"""The paper's augmentation and test views against hand-computed expectations."""
import numpy as np
import pytest
import torch

from alexnet.data.augment import Augment, _crops_batched, _crops_loop


def coordinate_images(b, s=256):
    """Channel 0 = row, channel 1 = column, channel 2 = image number: a crop tells where it is."""
    y, x = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    img = torch.stack([y, x, torch.zeros_like(y)], -1).expand(b, s, s, 3).clone()
    img[..., 2] = torch.arange(b).view(b, 1, 1) % 256
    return img.to(torch.uint8)


def plain_stats(s=256, c=3, eigval=(1.0, 1.0, 1.0)):
    return {"mean_image": torch.zeros(s, s, c), "eigval": torch.tensor(eigval[:c]),
            "eigvec": torch.eye(c)}


def test_random_crops_and_flips_are_where_they_say():
    aug = Augment(plain_stats(), 227, lighting_std=0.0)
    x = coordinate_images(64)
    g = torch.Generator().manual_seed(0)
    out = aug.train(x, g)
    p = aug.sample(64, torch.Generator().manual_seed(0))  # the same draws again
    assert out.shape == (64, 3, 227, 227) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    ar = torch.arange(227).float()
    for b in range(64):
        oy, ox = p["offsets"][b].tolist()
        assert torch.equal(out[b, 0, :, 0], oy + ar)  # rows are never mirrored
        cols = ox + ar.flip(0) if p["flips"][b] else ox + ar
        assert torch.equal(out[b, 1, 0], cols)
        assert torch.all(out[b, 2] == b)
    # offsets cover 0..29 uniformly; flips are fair coins (bounds: > 5 sigma)
    p = aug.sample(2000, torch.Generator().manual_seed(1))
    offsets = p["offsets"].flatten()
    assert offsets.min() == 0 and offsets.max() == 256 - 227
    counts = torch.bincount(offsets, minlength=30).float()
    assert counts.min() > 90 and counts.max() < 180, counts  # 4000 draws: 133 expected each
    assert 880 < p["flips"].sum() < 1120


def test_flip_off_and_crop_224():
    aug = Augment(plain_stats(), 224, flip=False, lighting_std=0.0)
    p = aug.sample(200, torch.Generator().manual_seed(1))
    assert not p["flips"].any() and p["offsets"].max() <= 32
    out = aug.train(coordinate_images(3), torch.Generator().manual_seed(2))
    assert out.shape == (3, 3, 224, 224)
    assert torch.all(out[:, 1, :, 1:] - out[:, 1, :, :-1] == 1)  # columns increase: no mirror


def test_centre_crop():
    for crop, offset in ((227, 14), (224, 16)):
        out = Augment(plain_stats(), crop).center(coordinate_images(2))
        assert out[0, 0, 0, 0] == offset and out[0, 1, 0, 0] == offset
        assert out[1, 0, -1, -1] == offset + crop - 1 and out[1, 2, 0, 0] == 1


def test_ten_views_corners_centre_and_mirrors():
    out = Augment(plain_stats(), 227).ten(coordinate_images(2))
    assert out.shape == (2, 10, 3, 227, 227)
    expected = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]  # (top, left)
    for b in range(2):
        for v in range(10):
            top, left = expected[v % 5]
            view = out[b, v]
            assert view[0, 0, 0] == top and view[2, 0, 0] == b
            first_col, last_col = (left + 226, left) if v >= 5 else (left, left + 226)
            assert view[1, 0, 0] == first_col and view[1, 0, -1] == last_col
    assert out.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("crop", [227, 224])
def test_ten_views_against_torchvisions_ten_crop(crop):
    """torchvision crops the mirrored image; we mirror each crop (the paper's reflections of the
    five patches). Same first five views; mirrored top-left and top-right swap places, so do the
    bottom ones; with an odd margin (227) the mirrored centres differ by one column."""
    from torchvision.transforms.functional import ten_crop

    x = torch.randint(0, 256, (1, 256, 256, 3), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    ours = Augment(plain_stats(), crop).ten(x)[0]
    theirs = ten_crop(x[0].permute(2, 0, 1).float(), crop)
    for v, t in enumerate([0, 1, 2, 3, 4, 6, 5, 8, 7]):
        assert torch.equal(ours[v], theirs[t]), v
    assert torch.equal(ours[9], ours[4].flip(-1))  # the centre crop, mirrored
    assert torch.equal(ours[9], theirs[9]) == (crop == 224)


def test_mean_image_is_cropped_and_mirrored_with_the_image():
    g = torch.Generator().manual_seed(3)
    mean = torch.rand(256, 256, 3, generator=g) * 255
    stats = dict(plain_stats(), mean_image=mean)
    aug = Augment(stats, 227, lighting_std=0.0)
    x = torch.full((24, 256, 256, 3), 100, dtype=torch.uint8)
    out = aug.train(x, torch.Generator().manual_seed(4))
    p = aug.sample(24, torch.Generator().manual_seed(4))
    assert p["flips"].any() and not p["flips"].all()
    for b in range(24):
        oy, ox = p["offsets"][b].tolist()
        m = mean[oy:oy + 227, ox:ox + 227]
        m = m.flip(1) if p["flips"][b] else m
        torch.testing.assert_close(out[b].permute(1, 2, 0), 100 - m)
    torch.testing.assert_close(aug.center(x)[0].permute(1, 2, 0), 100 - mean[14:241, 14:241])


def test_pca_lighting_statistics():
    # The paper's Σ αᵢ λᵢ pᵢ with αᵢ ~ N(0, 0.1), on [0, 1] pixels: the added colour (divided by
    # 255) has covariance 0.01 · Σ λᵢ² pᵢ pᵢᵀ, λᵢ the eigenvalues of [0, 1] pixels. λ spans five
    # decades here, so a √λ (cuda-convnet2) reading would miss by 10² on the first component.
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [1.5, 0.2, -0.7]]))
    eigval_255 = torch.tensor([40000.0, 2000.0, 50.0])  # what stats hold: 0..255 pixels
    lam = eigval_255 / 255 ** 2                          # the same covariance on [0, 1] pixels
    stats = {"mean_image": torch.zeros(16, 16, 3), "eigval": eigval_255, "eigvec": q}
    aug = Augment(stats, 14, lighting_std=0.1)
    n = 6000
    x = torch.full((n, 16, 16, 3), 128, dtype=torch.uint8)
    out = aug.train(x, torch.Generator().manual_seed(5))
    shift = out[:, :, 5, 7] - 128  # any pixel: the shift is the same across an image
    assert torch.allclose(out - 128, shift.view(n, 3, 1, 1).expand_as(out), atol=1e-3)
    expected = 0.01 * (q * lam ** 2) @ q.T                   # on [0, 1] pixels
    measured = torch.cov((shift / 255).T.double()).float()
    # project on the eigenvectors: each variance within 10% (stderr of a variance: √(2/n) = 1.8%)
    var = torch.diag(q.T @ measured @ q)
    torch.testing.assert_close(var, torch.diag(q.T @ expected @ q), rtol=0.1, atol=0)
    torch.testing.assert_close(measured, expected, rtol=0, atol=0.1 * 0.01 * lam[0].item() ** 2)
    assert (shift / 255).mean(0).abs().max() < 4 * (0.01 * lam[0].item() ** 2 / n) ** 0.5


def test_lighting_off_and_grey():
    stats = plain_stats(c=1, eigval=(9000.0,))  # a grey-level shift of std 0.1 · 9000/255 ≈ 3.5
    x = torch.full((8, 256, 256, 1), 50, dtype=torch.uint8)
    assert torch.all(Augment(stats, 227, lighting_std=0.0).train(x) == 50)
    out = Augment(stats, 227).train(x, torch.Generator().manual_seed(0))
    assert out.shape == (8, 1, 227, 227)
    per_image = out.flatten(1)
    assert torch.all(per_image.std(1) < 1e-4) and per_image[:, 0].std() > 0.5  # brightness jitter


def test_same_generator_same_augmentation():
    x = torch.randint(0, 256, (4, 256, 256, 3), dtype=torch.uint8)
    aug = Augment(plain_stats(eigval=(100.0, 10.0, 1.0)), 227)
    a = aug.train(x, torch.Generator().manual_seed(9))
    b = aug.train(x, torch.Generator().manual_seed(9))
    c = aug.train(x, torch.Generator().manual_seed(10))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gather_path_matches_cpu_loop():
    # The accelerator path (the crops' parameters packed into one copy, one gather) computed on
    # the CPU gives the same crops as the CPU loop.
    g = torch.Generator().manual_seed(6)
    x = torch.randint(0, 256, (6, 64, 64, 3), dtype=torch.uint8, generator=g)
    mean = torch.rand(64, 64, 3, generator=g) * 255
    offsets = torch.randint(0, 9, (6, 2), generator=g)
    flips = torch.tensor([True, False, True, True, False, False])
    index = torch.tensor([0, 5, 2, 2, 1, 3])
    shift = torch.randn(6, 3, generator=g) * 10
    loop = _crops_loop(x, mean, mean.flip(1), offsets, flips, index, 56, shift)
    gather = _crops_batched(x, mean, offsets, flips, index, 56, shift)
    torch.testing.assert_close(gather, loop.permute(0, 2, 3, 1))


def test_accelerator_path_takes_cpu_draws_to_another_device():
    # Images on a device other than the CPU ("meta": shapes only, no GPU needed) with the CPU
    # generator training passes: every piece (mean image, parameters, shift) must reach that
    # device. (This path worked; the bug was training's generator on the GPU, which sent a CUDA
    # offset tensor into a torch.cat with a CPU index: every CUDA run failed on its first batch.
    # sample() now refuses such a generator, tested below; test_cuda.py's trainings cover the loop.)
    aug = Augment(plain_stats(), 227)
    x = torch.zeros(3, 256, 256, 3, dtype=torch.uint8, device="meta")
    out = aug.train(x, generator=torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (3, 3, 227, 227)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert aug.center(x).shape == (3, 3, 227, 227) and aug.ten(x).shape == (3, 10, 3, 227, 227)
    # The same seed draws the same parameters whatever the images' device.
    cpu = Augment(plain_stats(), 227).sample(3, torch.Generator().manual_seed(0))
    again = aug.sample(3, torch.Generator().manual_seed(0))
    assert all(torch.equal(cpu[k], again[k]) for k in cpu)


def test_a_generator_on_another_device_is_refused_at_once():
    # What every CUDA training run passed before session 17: refused here with a clear message,
    # not a device mismatch deep in the crops. (No GPU here: a stand-in with a CUDA .device.)
    from types import SimpleNamespace
    aug = Augment(plain_stats(), 227)
    with pytest.raises(ValueError, match="draws on the CPU: pass torch.Generator"):
        aug.sample(2, SimpleNamespace(device=torch.device("cuda")))
    x = torch.zeros(2, 256, 256, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="draws on the CPU"):
        aug.train(x, generator=SimpleNamespace(device=torch.device("cuda", 0)))


def test_bad_inputs():
    aug = Augment(plain_stats(), 227)
    with pytest.raises(ValueError):
        aug.train(torch.zeros(2, 256, 256, 3))  # float, not uint8
    with pytest.raises(ValueError):
        aug.center(torch.zeros(2, 3, 256, 256, dtype=torch.uint8))  # NCHW, not NHWC
    with pytest.raises(ValueError):
        Augment(plain_stats(), 300)
    assert np.isclose(Augment(plain_stats(), 227).crop_size, 227)
