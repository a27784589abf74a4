"""The one way in for a trained model (alexnet.predictor): eval, predict, show and features run on
the inference path that `alexnet bench model` measures (weights cast once, no autocast), and give
what the plain fp32 network gives, within bf16 rounding."""
from __future__ import annotations

import json

import pytest
import torch

from alexnet import accel
from alexnet.checkpoint import save_checkpoint
from alexnet.cli import main as cli_main
from alexnet.errors import AlexNetError
from alexnet.model import alexnet
from alexnet.predictor import Predictor, read_names

CLASSES = [f"c{i}" for i in range(5)]


def write_checkpoint(path, size: int, num_classes: int = 5, options: dict | None = None):
    """A checkpoint as `alexnet train` writes it (options {}: as one from before dropout_scaling)."""
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=num_classes, init="kaiming")  # lively, well-apart logits
    g = torch.Generator().manual_seed(1)
    stats = {"mean_image": torch.rand(size, size, 3, generator=g) * 255,
             "mean": torch.full((3,), 127.0), "std": torch.full((3,), 60.0),
             "eigval": torch.tensor([900.0, 90.0, 9.0]), "eigvec": torch.eye(3)}
    classes = CLASSES if num_classes == 5 else [str(i) for i in range(num_classes)]
    save_checkpoint(path, {"model": model.state_dict(), "classes": classes, "stats": stats,
                           "crop_size": 227, "arch": {"variant": "paper",
                                                      "num_classes": num_classes,
                                                      "in_channels": 3, "options":
                                                      {"dropout_scaling": "paper"}
                                                      if options is None else options}})
    return path


@pytest.fixture(scope="module")
def ckpt_path(tmp_path_factory):
    """Trained on 240×240 data (prepare --size 240), not 256: predict must follow the stats."""
    return write_checkpoint(tmp_path_factory.mktemp("p") / "best.pt", 240)


def images(n=3, size=240):
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(2))


def test_bf16_predictor_casts_weights_once_and_runs_without_autocast(ckpt_path, monkeypatch):
    p = Predictor.from_file(ckpt_path, device="cpu", precision="bf16")
    assert p.model.classifier.fc6.weight.dtype == torch.bfloat16  # cast once, kept
    assert p.model._alexnet_inference_dtype == "bf16"  # accel.prepare_inference's model

    def no_autocast(*args, **kwargs):
        raise AssertionError("the inference path must not autocast")

    monkeypatch.setattr(accel, "autocast", no_autocast)
    x = images()
    got = p.probs(x, crops=10)
    plain = p.network()
    with torch.no_grad():
        expected = plain(p.augment.ten(x).flatten(0, 1)).softmax(1).view(3, 10, -1).mean(1)
    torch.testing.assert_close(got, expected, rtol=0, atol=2e-2)  # bf16 rounding only
    assert got.argmax(1).tolist() == expected.argmax(1).tolist()


def test_fp32_predictor_equals_the_plain_network(ckpt_path):
    p = Predictor.from_file(ckpt_path, device="cpu", precision="fp32")
    assert p.image_size == 240 and p.crop_size == 227 and p.classes == CLASSES
    x = images(2)
    with torch.no_grad():
        expected = p.network()(p.augment.center(x)).softmax(1)
    torch.testing.assert_close(p.probs(x), expected, rtol=1e-4, atol=1e-6)
    top = p.top(p.probs(x), k=2)
    assert len(top) == 2 and all(len(t) == 2 and t[0][0] in CLASSES for t in top)


def test_eval_and_predict_commands_use_the_predictor_path(ckpt_path, tmp_path, capsys,
                                                        monkeypatch):
    from PIL import Image
    made = []
    real = accel.prepare_inference
    monkeypatch.setattr(accel, "prepare_inference",
                        lambda *a, **k: made.append(k.get("compile")) or real(*a, **k))
    image = tmp_path / "x.png"
    Image.new("RGB", (300, 250), (20, 120, 200)).save(image)
    assert cli_main(["predict", str(ckpt_path), str(image), "--json", "--precision", "bf16",
                     "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["top"][0]["class"] in CLASSES
    assert len(made) == 1
    shapes_ckpt = write_checkpoint(tmp_path / "s.pt", 256, num_classes=10)  # shapes: 10 classes
    assert cli_main(["eval", str(shapes_ckpt), "--data", "shapes:8:6", "--workers", "0",
                     "--json", "--device", "cpu", "--crops", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 6
    assert len(made) == 2


def test_predict_names_classes_from_a_synset_mapping_file(ckpt_path, tmp_path, capsys):
    """A model trained on ImageNet's folders names its classes by WordNet ID; --names adds the
    words from a LOC_synset_mapping.txt-style file (classes the model lacks are skipped)."""
    from PIL import Image
    image = tmp_path / "x.png"
    Image.new("RGB", (300, 250), (20, 120, 200)).save(image)
    names = tmp_path / "names.txt"
    names.write_text("c0 zero, nought\n\nn01440764 tench, Tinca tinca\nc1\tone\nc2 two\n"
                     "c3 three\nc4 four\n".replace("c1\tone", "c1 \t one  "))
    argv = ["predict", str(ckpt_path), str(image), "--device", "cpu", "--topk", "5"]
    assert cli_main([*argv, "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    assert all("name" not in t for t in plain)
    assert cli_main([*argv, "--json", "--names", str(names)]) == 0
    named = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    words = {"c0": "zero, nought", "c1": "one", "c2": "two", "c3": "three", "c4": "four"}
    assert [(t["class"], t["name"]) for t in named] == [(t["class"], words[t["class"]])
                                                          for t in plain]
    names.write_text("c0 zero\n")  # a partial file: the other classes keep their labels
    assert cli_main([*argv, "--names", str(names)]) == 0
    text = capsys.readouterr().out
    assert "  c0  zero\n" in text and "  c1\n" in text


def test_a_names_file_from_a_windows_editor_and_class_names_with_spaces(tmp_path):
    """A UTF-8 byte-order mark glued itself to the first class ("\\ufeffplain"), which then named
    nothing, unsaid; a class folder named with spaces could not be named (split at the first)."""
    names = tmp_path / "names.txt"
    names.write_bytes("\ufeffplain Plain thing\r\ncafé au lait\tcoffee, milk\r\n".encode())
    assert read_names(names, ["café au lait", "plain"]) == {"plain": "Plain thing",
                                                            "café au lait": "coffee, milk"}


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the names file"),
    (b"c0 zero\nc1\n", "line 2: expected '<class> <name>'"),
    (b"n01440764 tench\n", "names none of the model's classes (e.g. 'c0')"),
    (b"c0 z\xe9ro\n", "not UTF-8 text"),
])
def test_predict_bad_names_file_is_one_line_error(ckpt_path, tmp_path, capsys, content, message):
    from PIL import Image
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(image)
    names = tmp_path / "names.txt"
    if content is not None:
        names.write_bytes(content)
    assert cli_main(["predict", str(ckpt_path), str(image), "--device", "cpu",
                     "--names", str(names)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


def test_predict_goes_through_many_images_in_batches(ckpt_path, tmp_path, capsys, monkeypatch):
    """All the images in one forward pass needed memory in proportion to their number (with 10
    crops, 0.6 MB of input per view): 5 images in batches of 2 give what one batch of 5 gives."""
    from PIL import Image

    import alexnet.predict as predict_module
    paths = []
    for k in range(5):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(images(1, 240 + 10 * k)[0].numpy()).save(paths[-1])
    argv = ["predict", str(ckpt_path), *paths, "--crops", "10", "--device", "cpu"]
    sizes = []
    real = Predictor.probs
    monkeypatch.setattr(Predictor, "probs",
                        lambda self, x, crops=1: sizes.append(len(x)) or real(self, x, crops))
    outs = []
    for batch in (100, 2):
        monkeypatch.setattr(predict_module, "BATCH", batch)
        assert cli_main([*argv, "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out)["predictions"])
    assert sizes == [5, 2, 2, 1]
    assert [p["image"] for p in outs[1]] == paths
    for one, two in zip(*outs):  # within rounding: a kernel may block another batch size apart
        assert [t["class"] for t in one["top"]] == [t["class"] for t in two["top"]]
        assert all(abs(a["probability"] - b["probability"]) < 2e-3
                   for a, b in zip(one["top"], two["top"]))
    assert cli_main(argv) == 0  # the text output, batch by batch, in the order given
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if not line.startswith(" ")] == paths


def test_snapshot_of_a_training_model_leaves_its_weights_alone(ckpt_path):
    p = Predictor.from_file(ckpt_path, device="cpu", precision="fp32")
    net = p.network()
    rt = p.rt
    before = net.classifier.fc6.weight.clone()
    snap = Predictor.snapshot(net, p.ckpt, type(rt)(rt.device, rt.device, "bf16", True))
    assert snap.model is not net and snap.model.classifier.fc6.weight.dtype == torch.bfloat16
    assert net.classifier.fc6.weight.dtype == torch.float32
    assert torch.equal(net.classifier.fc6.weight, before)
    same = Predictor.snapshot(net, p.ckpt, rt)  # fp32: nothing to cast, the live model itself
    assert same.model is net
    net.train()  # as between two epochs: evaluating must leave the training mode on
    same.probs(images(1)), same.features(images(1), "fc7")
    assert net.training and all(m.training for m in net.modules())


def test_a_training_checkpoint_is_loaded_without_its_training_state(tmp_path):
    from alexnet.checkpoint import load_checkpoint
    path = write_checkpoint(tmp_path / "c.pt", 256)
    ckpt = load_checkpoint(path)
    save_checkpoint(path, {**ckpt, "optimizer": {"state": {}, "param_groups": []},
                           "rng": {}, "config": {"seed": 3}})
    p = Predictor.from_file(path, device="cpu", precision="fp32")
    assert "optimizer" not in p.ckpt and "rng" not in p.ckpt and p.ckpt["config"]["seed"] == 3


def test_one_path_an_empty_list_and_an_empty_batch(ckpt_path, tmp_path):
    from PIL import Image
    p = Predictor.from_file(ckpt_path, device="cpu", precision="fp32")
    Image.new("RGB", (300, 250), (20, 120, 200)).save(tmp_path / "x.png")
    one = p.load_images(str(tmp_path / "x.png"))  # was read as a list of its characters
    assert one.shape == (1, 240, 240, 3)
    assert torch.equal(p.load_images(tmp_path / "x.png"), one)
    for call in (lambda: p.load_images([]), lambda: p.probs(one[:0]),
                 lambda: p.features(one[:0], "fc7")):
        with pytest.raises(AlexNetError, match="no images|no paths"):
            call()


def test_bf16_inference_scales_the_pixels_in_float32(tmp_path):
    """A mean-std model's Scale (before conv1) must multiply float32 pixels, as in training:
    the predictor used to hand the network bf16 crops, rounding each pixel before the scale."""
    path = write_checkpoint(tmp_path / "m.pt", 256, options={"dropout_scaling": "paper",
                                                             "input_scale": 0.02})
    p = Predictor.from_file(path, device="cpu", precision="bf16")
    seen = []
    p.model.features.scale.register_forward_hook(lambda m, i, o: seen.append(i[0].dtype))
    p.probs(images(1, 256))
    assert seen == [torch.float32]


def test_checkpoints_from_before_the_dropout_option_keep_torchs_dropout(tmp_path):
    """A checkpoint whose arch lacks dropout_scaling was trained with torch's inverted dropout
    (×1 at test); rebuilt with the paper's (×0.5 at test) its logits would change."""
    from alexnet.checkpoint import load_checkpoint, model_from_checkpoint
    old = load_checkpoint(write_checkpoint(tmp_path / "old.pt", 256, options={}))
    new = {**old, "arch": {**old["arch"], "options": {"dropout_scaling": "paper"}}}
    old_model, new_model = model_from_checkpoint(old).eval(), model_from_checkpoint(new).eval()
    assert isinstance(old_model.classifier.drop6, torch.nn.Dropout)
    assert type(old_model.classifier.drop6).__name__ == "Dropout"
    assert type(new_model.classifier.drop6).__name__ == "PaperDropout"
    torch.manual_seed(0)
    reference = alexnet("paper", num_classes=5, init="kaiming", dropout_scaling="inverted").eval()
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        assert torch.equal(old_model(x), reference(x))
        assert not torch.allclose(new_model(x), reference(x))


def test_a_rebuilt_model_owns_float32_copies_of_the_checkpoints_weights(ckpt_path):
    """model_from_checkpoint builds on the meta device and assigns the weights: each parameter
    must still be a real, contiguous float32 tensor of its own (weights stored as bf16 or as a
    strided view come back as load_state_dict's copy made them), with the checkpoint untouched."""
    from alexnet.checkpoint import load_checkpoint, model_from_checkpoint
    ckpt = load_checkpoint(ckpt_path)
    weights = dict(ckpt["model"])
    weights["classifier.fc8.weight"] = weights["classifier.fc8.weight"].bfloat16()
    weights["classifier.fc7.weight"] = weights["classifier.fc7.weight"].t().contiguous().t()
    kept = {k: weights[k].clone() for k in ("classifier.fc8.weight", "classifier.fc7.weight",
                                            "features.conv1.weight")}
    model = model_from_checkpoint({**ckpt, "model": weights})
    for name, param in model.state_dict().items():
        assert param.device.type == "cpu" and param.dtype == torch.float32, name
        assert param.is_contiguous(), name
        assert param.untyped_storage().data_ptr() != weights[name].untyped_storage().data_ptr()
        assert torch.equal(param, weights[name].float()), name
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    assert all(torch.equal(weights[k], kept[k]) for k in kept)  # the checkpoint is untouched


def test_the_two_device_split_predicts_but_names_no_layers(ckpt_path):
    # The activation study reached Predictor.extract with the split net: an AttributeError.
    from alexnet.checkpoint import load_checkpoint, model_from_checkpoint
    from alexnet.errors import AlexNetError
    from alexnet.runtime import Runtime
    ckpt = load_checkpoint(ckpt_path)
    rt = Runtime.create(precision="fp32", model_parallel="cpu,cpu")
    p = Predictor(ckpt, rt, rt.place(model_from_checkpoint(ckpt)), autocast=True)
    one = Predictor.from_file(ckpt_path, device="cpu", precision="fp32")
    torch.testing.assert_close(p.probs(images()), one.probs(images()), rtol=1e-4, atol=1e-5)
    for call in (lambda: p.extract(images(), ["conv1"]), lambda: p.check_layer("conv1")):
        with pytest.raises(AlexNetError, match="not the two-device split"):
            call()


def test_predict_prints_a_name_that_is_not_utf8_as_its_bytes(ckpt_path, tmp_path, monkeypatch):
    """Under a UTF-8 locale other than C, Python's stdout refuses the surrogates that stand for a
    file name's non-UTF-8 bytes: predict stopped after its first lines with an encoding error.
    The name now goes out as its own bytes, as `ls` prints it."""
    import io
    import os
    from PIL import Image
    image = tmp_path / os.fsdecode(b"caf\xe9.png")
    Image.new("RGB", (300, 250), (20, 120, 200)).save(image)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # errors="strict", as in en_US.UTF-8
    monkeypatch.setattr("sys.stdout", stdout)
    assert cli_main(["predict", str(ckpt_path), str(image), "--device", "cpu"]) == 0
    stdout.flush()
    assert stdout.buffer.getvalue().startswith(os.fsencode(image) + b"\n")
    assert stdout.errors == "strict"  # put back after the command


def test_predict_keeps_a_class_name_with_a_newline_on_its_row(ckpt_path, tmp_path, capsys):
    """Class names come from folder names, which may hold a tab or newline: printed as they
    were, a name broke its row of the table in two."""
    from PIL import Image
    ckpt = torch.load(ckpt_path, weights_only=True)
    odd = ["a\nb", "tab\tc", "c2", "c3", "c4"]
    save_checkpoint(tmp_path / "odd.pt", {**ckpt, "classes": odd})
    image = tmp_path / "x.png"
    Image.new("RGB", (300, 250), (20, 120, 200)).save(image)
    assert cli_main(["predict", str(tmp_path / "odd.pt"), str(image), "--topk", "5"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 6 and {r.split("%  ", 1)[1] for r in rows[1:]} == {
        "a\\nb", "tab\\tc", "c2", "c3", "c4"}
    assert cli_main(["predict", str(tmp_path / "odd.pt"), str(image), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)["predictions"][0]["top"]
    assert {t["class"] for t in top} <= set(odd)  # JSON keeps the names as they are
