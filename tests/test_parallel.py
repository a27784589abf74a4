"""Scale-out: the two-device split equals the grouped net; DDP on 2 CPU processes equals one."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from alexnet import accel, cli, parallel, train
from alexnet.config import TrainConfig
from alexnet.cli import main as cli_main
from alexnet.errors import AlexNetError, Busy, DataError, quiet_here
from alexnet.io import locked_dir
from alexnet.model import AlexNet, OWTAlexNet
from alexnet.parallel import (DistInfo, TwoDeviceAlexNet, all_reduce_sum,
                              cleanup_distributed, decided_by_rank0, init_distributed,
                              merge_state_dict, parse_devices, resolve_device,
                              unwrap, wrap_ddp)
from conftest import write_image_folder

WORKER = Path(__file__).with_name("_ddp_worker.py")


def _load_worker():
    spec = importlib.util.spec_from_file_location("_ddp_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str = "") -> None:
    # fp32 sums in another order differ by ~1e-7 relative; scale atol to the tensor's magnitude so
    # small tensors (early-layer gradients are ~1e-3) are still compared meaningfully.
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale,
                               msg=lambda m: f"{name}: {m}")


# ------------------------------------------------------------------------------------------------
# Model parallelism


def _pair(seed: int = 0, **options) -> tuple[AlexNet, TwoDeviceAlexNet]:
    torch.manual_seed(seed)
    grouped = AlexNet(**options)
    return grouped, TwoDeviceAlexNet(grouped, ("cpu", "cpu"))


@pytest.mark.parametrize("options", [
    dict(num_classes=5, dropout=0.0),                                    # paper net; odd fc8 split
    dict(num_classes=4, dropout=0.0, activation="tanh", pooling="average", lrn=False),
    dict(num_classes=5, dropout=0.0, init="kaiming", input_scale=0.02),  # the demo's options
])
def test_split_matches_grouped_outputs_and_gradients(options):
    grouped, split = _pair(**options)
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 3])
    out_grouped, out_split = grouped(x), split(x)
    assert out_split.shape == (2, options["num_classes"])
    assert out_split.device == split.output_device
    _assert_close(out_split, out_grouped, "logits")
    F.cross_entropy(out_grouped, y).backward()
    F.cross_entropy(out_split, y).backward()
    grads = merge_state_dict({name: p.grad for name, p in split.named_parameters()})
    assert grads.keys() == dict(grouped.named_parameters()).keys()
    for name, p in grouped.named_parameters():
        assert p.grad.abs().max() > 0, name  # the comparison below would be empty otherwise
        _assert_close(grads[name], p.grad, name)


def test_split_matches_grouped_in_eval_mode_with_dropout():
    grouped, split = _pair(num_classes=6)  # paper dropout 0.5: eval mode turns it off in both
    grouped.eval(), split.eval()
    x = torch.randn(3, 3, 227, 227, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _assert_close(split(x), grouped(x), "eval logits")


def test_a_wrong_exchange_is_detected():
    """Negative control: swap tower 2's halves of conv3's input (a wrong concat order) -> caught."""
    grouped, split = _pair(num_classes=5, dropout=0.0)
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w = split.tower2.features.conv3.weight  # (192, 256, 3, 3): inputs 0:128 are tower 1's
        w.copy_(torch.cat([w[:, 128:], w[:, :128]], 1))
        with pytest.raises(AssertionError):
            _assert_close(split(x), grouped(x))


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_split_layers_follow_the_source_modules():
    grouped, split = _pair(num_classes=10, activation="tanh", pooling="non-overlapping")
    t1, t2 = split.tower1, split.tower2
    assert t1.features.conv1.weight.shape == (48, 3, 11, 11)
    assert t1.features.conv2.weight.shape == (128, 48, 5, 5)      # own tower's 48 maps
    assert t1.features.conv3.weight.shape == (192, 256, 3, 3)     # both towers' 256 maps
    assert t1.classifier.fc6.weight.shape == (2048, 9216)
    assert t1.classifier.fc8.weight.shape == (5, 4096) == t2.classifier.fc8.weight.shape
    assert t1.features.norm1.groups == 1 and grouped.features.norm1.groups == 2
    assert type(t2.features.relu3) is torch.nn.Tanh
    assert t2.features.pool1.kernel_size == 2 and t2.classifier.drop6.p == 0.5
    assert _count(split) == _count(grouped)
    assert all(p.requires_grad for p in split.parameters())


def test_round_trip_preserves_the_state_dict_exactly():
    grouped, split = _pair(num_classes=7)
    merged = split.to_alexnet()
    assert type(merged) is AlexNet and merged.taps == grouped.taps
    assert merged.features.norm2.groups == 2
    want, got = grouped.state_dict(), merged.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert split.alexnet_state_dict().keys() == want.keys()
    assert not any(k.startswith("_template") for k in split.state_dict())
    # load_alexnet_state_dict is the inverse: load other weights, get them back.
    other = AlexNet(num_classes=7).state_dict()
    split.load_alexnet_state_dict(other)
    assert all(torch.equal(v, other[k]) for k, v in split.alexnet_state_dict().items())


def test_bad_model_parallel_input_is_a_user_error():
    with pytest.raises(AlexNetError, match="towers=2"):
        TwoDeviceAlexNet(AlexNet(num_classes=2, towers=1), ("cpu", "cpu"))
    with pytest.raises(AlexNetError, match="variant paper"):
        TwoDeviceAlexNet(OWTAlexNet(num_classes=2), ("cpu", "cpu"))
    with pytest.raises(AlexNetError, match="two devices"):
        TwoDeviceAlexNet(AlexNet(num_classes=2), "cpu")
    for spec in ("cpu,cpu,cpu", "", "cpu,", "gpu0,cpu", "cuda:99"):
        with pytest.raises(AlexNetError):
            parse_devices(spec)


# ------------------------------------------------------------------------------------------------
# Data parallelism


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu:0") == torch.device("cpu", 0)
    for bad in ("cuda:99", "tpu", "nonsense", "cpu:x", "cpu:1"):  # cpu:1 was taken as the CPU
        with pytest.raises(AlexNetError):
            resolve_device(bad)


def test_single_process_needs_no_process_group(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed("cpu")
    assert info == DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert not dist.is_initialized()
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, info) is model
    assert all_reduce_sum({"loss_sum": 1.5, "correct": 3}, info) == {"loss_sum": 1.5, "correct": 3}
    compiled = torch.compile(model)  # lazy: nothing compiles until it is called
    assert unwrap(compiled) is model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_with_one_process_uses_the_same_path(monkeypatch):
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        info = init_distributed("cpu")
        assert dist.is_initialized() and dist.get_backend() == "gloo"
        assert (info.rank, info.world_size, info.is_main) == (0, 1, True)
        assert all_reduce_sum([2, 0.5], info) == [2, 0.5]
        assert torch.equal(all_reduce_sum(torch.tensor([1, 2]), info), torch.tensor([1, 2]))
    finally:
        cleanup_distributed()
    assert not dist.is_initialized()


_GLOO_THREADS_AFTER_CLEANUP = """
import os, sys
from alexnet import parallel
threads = lambda: sorted(open(f"/proc/self/task/{t}/comm").read().strip()
                         for t in os.listdir("/proc/self/task"))
parallel.init_distributed("cpu")
import torchvision  # what `alexnet eval` imports once the group exists; it imports torch._dynamo
print(threads(), "torch.distributed.nn" in sys.modules)
parallel.cleanup_distributed()
print(threads())
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="lists threads through /proc")
def test_cleanup_ends_gloos_threads_whatever_was_imported_after_init():
    """cleanup_distributed must end the group, not just forget it. torch.distributed.nn, imported
    by torch._dynamo after the group existed, held it in default arguments: gloo's threads lived
    on into the interpreter's exit, where one aborted the process after `alexnet eval` under
    torchrun had printed its result (about 1 run in 12 on 2 busy cores). A fresh interpreter,
    because in this one torch._dynamo is long imported."""
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    proc = subprocess.run([sys.executable, "-c", _GLOO_THREADS_AFTER_CLEANUP], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    during, after = proc.stdout.strip().splitlines()[-2:]
    # The controls: this torch names gloo's threads, and torchvision still brings the module in.
    assert "gloo" in during and during.endswith("True"), during
    assert "gloo" not in after, after


def test_incomplete_torchrun_environment_is_a_user_error(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(AlexNetError, match="WORLD_SIZE"):
        init_distributed("cpu")


def test_under_torchrun_a_usage_error_is_said_once_a_machine(monkeypatch, capsys, tmp_path):
    """Every torchrun process reads the same command line and the checkpoint it names: a wrong
    option or a missing checkpoint was printed once per process. Local rank 0 alone says it now.
    An error that may be one process's own (here the torchrun environment, incomplete) is still
    said by each. The quiet ones wait for torchrun to end them (see the next test); here the wait
    ends as a signal from torchrun would end it. One that is not ended in QUIET_WAIT_S says the
    error after all: local rank 0 did not fail, so the error was this process's own."""
    waits = []

    def ended_by_torchrun(seconds):
        waits.append(seconds)
        raise KeyboardInterrupt
    monkeypatch.setattr(cli.time, "sleep", ended_by_torchrun)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
    monkeypatch.setenv("WORLD_SIZE", "2")
    missing = str(tmp_path / "missing.pt")
    wrong = (["train", "--lr", "-1"], ["train", "--epocs", "1"],  # ours, argparse's
             ["train", "--resume", missing], ["eval", "--batch-size", "0", missing],
             ["eval", missing])
    for local, says in (("1", False), ("0", True)):
        monkeypatch.setenv("LOCAL_RANK", local)
        for argv in wrong:
            assert cli_main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == int(says) and ("error" in err) == says, (local, err)
    assert waits == [cli.QUIET_WAIT_S] * len(wrong)  # local rank 1's, each
    monkeypatch.setattr(cli.time, "sleep", lambda seconds: None)  # not ended: it says it
    monkeypatch.setenv("LOCAL_RANK", "1")
    for argv in wrong[:2] + wrong[-1:]:
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err, (argv, err)
    assert cli_main(["train", "--data", "shapes:8:8", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "incomplete torch.distributed environment" in err, err


def test_torchrun_prints_a_wrong_option_once(tmp_path):
    """The default launch, two processes: one line from us (torchrun adds its own report). The
    quiet rank waits to be ended: had it failed first, torchrun would have ended local rank 0
    before it printed (a review found the race)."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "--monitor-interval=0.1", "-m", "alexnet",
                           "train", "--lr", "-1"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert proc.stderr.count("alexnet: error: lr must be > 0.0") == 1, proc.stderr[-3000:]
    root_cause = proc.stderr.split("Root Cause")[-1]
    assert "local_rank: 0" in root_cause and "exitcode  : 2" in root_cause, root_cause


def test_ddp_on_two_processes_equals_one_process_on_the_combined_batches(tmp_path):
    """2 CPU ranks (gloo, launched by torchrun), each on its half of every batch, with different
    initial weights (DDP must broadcast rank 0's) -> the same weights as one process on the whole
    batches, and the reduced metrics equal the whole-batch sums."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "--monitor-interval=0.1", str(WORKER), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["hashes"] == ranks[1]["hashes"]  # the replicas are bitwise identical

    worker = _load_worker()
    init = worker.make_model(worker.INIT_SEED).state_dict()
    reference, sums = worker.train_reference()
    for name, want in reference.state_dict().items():
        got, moved = ranks[0]["state"][name], (want - init[name]).abs().max().item()
        assert moved > 0, f"{name} did not train: the comparison would be empty"
        # fp64 (see make_model): rounding differs by ~1e-13 of the update; a missing sync, a sum
        # instead of a mean or an unbroadcast initialisation differs by ~100% of it or more.
        assert (got - want).abs().max().item() <= 1e-8 * moved, name

    for result in ranks:
        assert result["totals"]["n"] == sums["n"] == worker.GLOBAL_BATCH
        assert result["totals"]["correct"] == sums["correct"]
        assert result["totals"]["loss_sum"] == pytest.approx(sums["loss_sum"], rel=1e-5)
        assert result["rank_sum"] == 1 + 2
        assert result["gathered"] == [{"rank": 0}, {"rank": 1}]  # every rank's, in rank order


def test_alexnet_train_and_eval_under_torchrun_with_unreadable_images(tmp_path):
    """`torchrun --nproc_per_node=2 -m alexnet train` on a folder with one unreadable training and
    one unreadable val image, a per-rank batch of 1: the rank that meets one takes an empty
    training step (it used to crash in the augmentation), leaves the val image out (it used to
    stop the run), and skipped.txt lists both, whichever rank met them (it listed rank 0's).

    Each rank has its own cache, in which the CPU probe chose another stem layout, as two ranks
    probing at once on a fresh machine did: every rank must take rank 0's (DDP refused the
    strides of conv1's weight)."""
    folder = write_image_folder(tmp_path / "folder", classes=("cat", "dog"), per_class=(3, 3),
                                size=(32, 32))
    for split in ("train", "val"):
        (folder / split / "cat" / "cat_1.jpg").write_bytes(b"not an image")
    run = tmp_path / "run"
    key = accel._probe_key(1)  # OMP_NUM_THREADS=1: one torch thread per rank
    for rank in (0, 1):
        (tmp_path / f"cache{rank}").mkdir()
        (tmp_path / f"cache{rank}" / f"fastpath-{key}.json").write_text(json.dumps(
            {"precision": "fp32", "stem": "nchw" if rank == 1 else "nhwc", "source": "probe",
             "timings_ms": {}}))
    launcher = tmp_path / "launch.py"  # ALEXNET_CACHE per rank, then `python -m alexnet`
    launcher.write_text("import os, runpy, sys\n"
                        f"os.environ['ALEXNET_CACHE'] = {str(tmp_path)!r} + '/cache' + "
                        "os.environ['RANK']\nsys.argv[0] = 'alexnet'\n"
                        "runpy.run_module('alexnet', run_name='__main__')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "--monitor-interval=0.1", str(launcher)]
    proc = subprocess.run([*torchrun, "train", "--data", str(folder), "--batch-size", "2",
                           "--epochs", "1", "--device", "cpu", "--eval-crops", "1", "--recipe",
                           "paper", "--no-progress", "--out", str(run)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    row = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 <= row["wait_share"] <= 1  # the largest of the two ranks'
    listed = (run / "skipped.txt").read_text().splitlines()
    assert len(listed) == 2 and all("cat_1.jpg" in line for line in listed), listed
    assert "/train/" in listed[0] and "/val/" in listed[1]  # train first, then val
    results = json.loads((run / "results.json").read_text())
    assert results["1-crop"]["images"] == 5  # 6 val images, one unreadable, none counted twice

    # `alexnet eval` under torchrun: each rank evaluates its share, rank 0 alone prints the whole
    # set's result (it used to be every rank, each on every image). One epoch: best.pt is the
    # final model, so the result is the run's own 1-crop result.
    proc = subprocess.run([*torchrun, "eval", str(run), "--data", str(folder), "--crops", "1",
                           "--batch-size", "1", "--device", "cpu", "--json"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and "cat_1.jpg" in proc.stderr, proc.stdout + proc.stderr
    got, want = json.loads(lines[0]), results["1-crop"]
    assert got["images"] == 5
    for key in ("top1_error", "top5_error"):
        assert got[key] == pytest.approx(want[key], abs=1e-9)


class _FakeWire:
    """Two ranks of one process group, played one after the other in this process: rank 0's
    broadcast is pickled onto the wire (as gloo does), and rank 1's reads it from there."""

    def __init__(self, monkeypatch):
        self.sent = []
        monkeypatch.setattr(parallel, "_active", lambda info: info.world_size > 1)
        monkeypatch.setattr(parallel.dist, "broadcast_object_list", self.broadcast)

    def broadcast(self, box, src):
        assert src == 0
        if not self.sent:
            self.sent.append(pickle.dumps(box[0]))
        else:
            box[0] = pickle.loads(self.sent[0])


RANK0, RANK1 = (DistInfo(rank=r, world_size=2, local_rank=r, is_main=r == 0) for r in (0, 1))


def _must_not_run():
    raise AssertionError("only rank 0 decides")


def test_rank0_decides_for_every_rank_and_its_error_stops_them_all(monkeypatch):
    _FakeWire(monkeypatch)
    assert decided_by_rank0(lambda: Path("runs/demo-2"), RANK0) == Path("runs/demo-2")
    assert decided_by_rank0(_must_not_run, RANK1) == Path("runs/demo-2")

    def refuse():
        raise DataError("runs/x holds files that are not a run's", option="out")
    _FakeWire(monkeypatch)
    for info, decide in ((RANK0, refuse), (RANK1, _must_not_run)):
        with pytest.raises(DataError, match="not a run's") as raised:
            decided_by_rank0(decide, info)
        assert raised.value.option == "out"  # the CLI names --out on every rank
        # rank 0 prints it, the others do not print it again under torchrun (errors.quiet_here)
        assert not quiet_here(raised.value)
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "test")
        assert quiet_here(raised.value) == (info is RANK1)
        monkeypatch.delenv("TORCHELASTIC_RUN_ID")

    def unreadable():  # what Path.iterdir raises for a directory the user may not read
        raise PermissionError(13, "Permission denied", "runs/x")
    _FakeWire(monkeypatch)
    with pytest.raises(PermissionError):  # rank 0: its own, traceback and all
        decided_by_rank0(unreadable, RANK0)
    with pytest.raises(AlexNetError, match=r"Permission denied: 'runs/x'"):  # not a hang
        decided_by_rank0(_must_not_run, RANK1)


def _train_as(monkeypatch, info: DistInfo) -> list:
    """train.main as `info`'s rank, up to where it would train; returns where it trains."""
    monkeypatch.setattr(train.parallel, "init_distributed", lambda device: info)
    monkeypatch.setattr(train.parallel, "cleanup_distributed", lambda: None)
    monkeypatch.setattr(train, "setup", lambda cfg, ckpt, info: cfg)
    trained_in = []
    monkeypatch.setattr(train, "_train", lambda cfg, run, ckpt: trained_in.append((cfg.out, run)))
    return trained_in


def test_every_rank_trains_in_the_run_directory_rank0_chose(monkeypatch, tmp_path):
    """The default run directory is numbered by looking at the disk (runs/demo, runs/demo-2, ...).
    Ranks look at different moments, and on other nodes through a network file system whose view
    lags: here rank 1 sees a checkpoint in runs/demo that rank 0 did not, and chose runs/demo-2
    on its own, or failed as "already holds a run". Every rank must take rank 0's choice, and
    that check is rank 0's, made within its lock."""
    wire = _FakeWire(monkeypatch)
    chosen = tmp_path / "demo"
    wire.sent.append(pickle.dumps(chosen))  # rank 0 saw runs/demo free
    chosen.mkdir()
    (chosen / "checkpoint.pt").write_bytes(b"")  # rank 1 sees a run there
    trained_in = _train_as(monkeypatch, RANK1)
    train.main(TrainConfig(out=str(chosen)), number_if_taken=True)
    assert trained_in == [(str(chosen), chosen)]


def test_a_run_directory_in_use_stops_every_rank(monkeypatch, tmp_path):
    """Rank 0 alone takes the run directory's lock; when another run holds it, every rank stops
    with rank 0's one line (the others used to go on into setup's collectives and wait there)."""
    _FakeWire(monkeypatch)
    run = tmp_path / "run"
    with locked_dir(run):  # another run, training there
        for info in (RANK0, RANK1):
            trained_in = _train_as(monkeypatch, info)
            with pytest.raises(Busy, match="in use by another process"):
                train.main(TrainConfig(out=str(run)))
            assert trained_in == []


_NO_CUDA = [] if torch.cuda.is_available() else [(["--model-parallel", "cpu,cuda"], "model-parallel")]


@pytest.mark.parametrize("flags, option", [
    (["--model-parallel", "cpu"], "model-parallel"),
    (["--model-parallel", "cpu,cpu,cpu"], "model-parallel"),
    (["--model-parallel", "0"], "model-parallel"),
    (["--model-parallel", "0,1"], "model-parallel"),
    (["--model-parallel", "cpu,cuda:99"], "model-parallel"),
    (["--towers", "1", "--model-parallel", "cpu,cpu"], "towers"),
    *_NO_CUDA])
def test_bad_model_parallel_flags_are_one_line_errors_naming_the_flag(tmp_path, capsys, flags,
                                                                      option):
    from alexnet.cli import main
    from conftest import one_line_error

    rc = main(["train", "--data", "shapes:16:8", "--epochs", "1", "--batch-size", "8",
               "--workers", "0", "--no-progress", "--out", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    one_line_error(rc, err, f"(--{option})")
    assert "one or two" not in err  # one device is refused: it takes exactly two
    if len(flags[flags.index("--model-parallel") + 1].split(",")) != 2:
        assert "exactly two devices" in err, err


def test_parse_devices_takes_exactly_two():
    for spec in ("cpu", ["cpu"], "cpu,cpu,cpu"):
        with pytest.raises(AlexNetError, match="exactly two devices") as e:
            parse_devices(spec)
        assert e.value.option == "model_parallel"
    assert parse_devices("cpu,cpu") == (torch.device("cpu"), torch.device("cpu"))
