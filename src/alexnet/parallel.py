"""Scale-out: data parallelism over processes (DDP) and the paper's two-device model parallelism.

Data parallel (not in the paper; how AlexNet is trained on many GPUs today). Launch with torchrun;
every process holds a full replica, sees its own share of each batch, and DDP averages the gradients
so all replicas take the same step. One code path serves every case:

    info = init_distributed(args.device)        # single process: no process group, rank 0 of 1
    model = wrap_ddp(model.to(info.device), info)
    ...                                          # rank-sharded data, info.is_main writes and prints
    totals = all_reduce_sum({"loss_sum": s, "correct": c, "n": n}, info)   # exact global metrics
    torch.save(unwrap(model).state_dict(), ...)
    cleanup_distributed()

Model parallel (the paper, §3.2): the net was too big for one 3 GB GTX 580, so half of the
kernels of every layer lived on each of two GPUs ("towers"). A tower reads only its own maps, except
at conv3 and the fully connected layers, where it reads both towers' outputs; those are the only
places activations cross devices. `TwoDeviceAlexNet` does exactly that with two torch devices; on
one device the same net is `AlexNet(towers=2)`, whose grouped convolutions are the towers side by
side.
"""
from __future__ import annotations

import copy
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import accel
from .errors import AlexNetError, first_line
from .model import AlexNet

# ------------------------------------------------------------------------------------------------
# Devices


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | 'mps' -> a torch.device that exists on this machine.

    'auto' is CUDA when there is one, else the CPU; a bare 'cuda' means this process's GPU
    (cuda:LOCAL_RANK under torchrun). Anything else raises AlexNetError with what is available.
    """
    name = str(name)  # a torch.device works too
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise AlexNetError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AlexNetError(f"device {name!r}: CUDA is not available on this machine")
        index = local_rank if device.index is None else device.index
        count = torch.cuda.device_count()
        if index >= count:
            raise AlexNetError(f"device cuda:{index} does not exist: this machine has {count} GPU(s)")
        return torch.device("cuda", index)
    if device.type == "cpu" and device.index not in (None, 0):  # torch would take it as the CPU
        raise AlexNetError(f"device {name!r}: the CPU has no index; use cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise AlexNetError(f"device {name!r}: MPS is not available on this machine")
    if device.type not in ("cpu", "cuda", "mps"):
        raise AlexNetError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


# ------------------------------------------------------------------------------------------------
# Data parallelism (torch.distributed)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands. The defaults are a plain single process."""

    rank: int = 0                 # global rank, 0 .. world_size-1
    world_size: int = 1           # number of processes over all nodes
    local_rank: int = 0           # rank on this node: which GPU to use
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    is_main: bool = True          # rank 0: the one process that writes files and prints


_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group if torchrun launched us; otherwise describe a single process.

    Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment)
    each process takes GPU LOCAL_RANK and talks over NCCL; on CPUs it talks over gloo. A torchrun
    job with one process also gets a process group, so that path is the same as with many.
    """
    env = os.environ
    if "RANK" not in env and "WORLD_SIZE" not in env:
        return DistInfo(device=resolve_device(device))
    missing = [name for name in _TORCHRUN_VARS if name not in env]
    if missing:
        raise AlexNetError(f"incomplete torch.distributed environment: {', '.join(missing)} not set "
                        "(launch with torchrun, which sets them all)")
    try:
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    except ValueError:
        raise AlexNetError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if world > 1 and ":" in str(device):
        # Every rank would pick the same GPU. Pin GPUs with CUDA_VISIBLE_DEVICES instead.
        raise AlexNetError(f"--device {device!r} names one device, but this is one of {world} "
                        "processes; use --device cuda (each process takes cuda:LOCAL_RANK)")
    dev = resolve_device(device, local)
    if dev.type == "mps" and world > 1:
        raise AlexNetError("data parallel training over several processes needs CUDA or the CPU")
    if not dist.is_initialized():
        # torch.distributed.nn binds group.WORLD as default arguments when it is first imported
        # (torch._dynamo and torchvision import it). Imported after the group exists, it holds the
        # group past destroy_process_group: gloo's threads then live on into the interpreter's exit,
        # where one, freeing a finished all_gather's tensors, needed the GIL and aborted the process
        # ("terminate called without an active exception", after `alexnet eval` under torchrun had
        # printed its result; seen in gdb). Imported now, its defaults are None and
        # cleanup_distributed really ends the group.
        import torch.distributed.nn  # noqa: F401
        if dev.type == "cuda":
            torch.cuda.set_device(dev)  # NCCL and cuda.* calls without an index use this GPU
            dist.init_process_group("nccl", rank=rank, world_size=world, device_id=dev)
        else:
            dist.init_process_group("gloo", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, is_main=rank == 0)


def cleanup_distributed() -> None:
    """Leave the process group (if any), so the process exits cleanly."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _active(info: DistInfo) -> bool:
    return info.world_size > 1 and dist.is_available() and dist.is_initialized()


def _comm_device(info: DistInfo) -> torch.device:
    # NCCL moves only CUDA tensors; gloo only CPU ones.
    return info.device if dist.get_backend() == "nccl" else torch.device("cpu")


def wrap_ddp(model: nn.Module, info: DistInfo, **ddp_options) -> nn.Module:
    """DistributedDataParallel when there are several processes, else the model itself.

    Put the model on info.device first. A model that spans several devices (TwoDeviceAlexNet
    inside each rank) is wrapped with device_ids=None, as DDP requires for multi-device modules.
    Wrap before torch.compile (torch.compile(wrap_ddp(model, info))): compile then splits the graph
    at DDP's bucket boundaries, so the all-reduce of one bucket overlaps the backward of the next.
    """
    if not _active(info):
        return model
    devices = {p.device for p in model.parameters()}
    if len(devices) == 1 and info.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[info.device.index],
                                       output_device=info.device.index, **ddp_options)
    return DistributedDataParallel(model, **ddp_options)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP and torch.compile wrappers (in any nesting): the one to checkpoint."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def all_reduce_sum(values, info: DistInfo):
    """Sum over all ranks: a tensor, a sequence of numbers, or a {name: number} mapping.

    Metrics are reduced as sums (loss sum, correct counts, sample counts) and divided only at the
    end, so they are exact over the whole dataset even when ranks see different numbers of samples.
    Numbers travel as float64, so integer counts stay exact (up to 2**53) and come back as ints.
    Returns a new object of the same kind; the input is left as it was.
    """
    if isinstance(values, torch.Tensor):
        if not _active(info):
            return values.detach().clone()
        total = values.detach().to(_comm_device(info), copy=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(values.device)
    if isinstance(values, Mapping):
        names = list(values)
        return dict(zip(names, all_reduce_sum([values[k] for k in names], info)))
    numbers = list(values)
    summed = all_reduce_sum(torch.tensor([float(v) for v in numbers], dtype=torch.float64), info)
    return [round(s) if isinstance(v, int) else s for v, s in zip(numbers, summed.tolist())]


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every rank (what the other ranks pass is ignored)."""
    if not _active(info):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass(frozen=True)
class _Refused:
    error: AlexNetError  # what rank 0's decision raised, as the other ranks raise it


def decided_by_rank0(decide, info: DistInfo):
    """`decide()` run on rank 0 alone, and its result on every rank. For choices that read the
    file system or measure: each rank deciding on its own may decide differently. What it raises
    is raised on every rank (the others' copy an AlexNetError of the same first line, unless it
    was one), so that none waits for rank 0 in a later collective after rank 0 has stopped."""
    if not _active(info):
        return decide()
    if not info.is_main:
        outcome = broadcast_object(None, info)
        if isinstance(outcome, _Refused):
            outcome.error.said_by_rank0 = True  # rank 0 prints it; the CLI here stays quiet
            raise outcome.error
        return outcome
    try:
        outcome = decide()
    except Exception as e:
        # An AlexNetError pickles with its class, message and .option; anything else (an OSError
        # from the file system, a bug) might not pickle, and the other ranks need its line only.
        copy = e if isinstance(e, AlexNetError) else AlexNetError(first_line(e))
        broadcast_object(_Refused(copy), info)
        raise
    return broadcast_object(outcome, info)


def agree_on_fast_path(info: DistInfo) -> None:
    """On CPUs under DDP every rank takes rank 0's fast path (accel.fast_path). Each rank's probe
    measures on its own, under the others' load, and two ranks of one run chose different stem
    layouts: DDP then refused the parameters' strides. Precision must agree as well."""
    if _active(info) and info.device.type == "cpu":
        accel.use_fast_path(info.device,
                            decided_by_rank0(lambda: accel.fast_path(info.device), info))


def gather_objects(obj, info: DistInfo) -> list:
    """[rank 0's obj, rank 1's, ...] on every rank (picklable objects, e.g. the unreadable images
    each rank met); [obj] in a single process."""
    if not _active(info):
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


# ------------------------------------------------------------------------------------------------
# Model parallelism: the paper's two towers on two devices


def parse_devices(spec: str | Sequence[str]) -> tuple[torch.device, ...]:
    """'cuda:0,cuda:1' (or a sequence) -> two existing devices, else AlexNetError naming
    --model-parallel.

    The same device may appear twice ('cpu,cpu'): the split then runs on one device (as in tests).
    """
    if isinstance(spec, str):
        names = [s.strip() for s in spec.split(",")]
    else:
        names = [str(s) for s in spec]
    if len(names) != 2 or not all(names):
        raise AlexNetError("model parallelism takes exactly two devices, DEV0,DEV1 like "
                           f"cuda:0,cuda:1; got {spec!r}", option="model_parallel")
    try:
        return tuple(resolve_device(name) for name in names)
    except AlexNetError as e:
        raise AlexNetError(str(e), option="model_parallel") from None


def _halves(n: int) -> list[int]:
    """Tower 1 takes the first ceil(n/2) kernels, tower 2 the rest (num_classes may be odd)."""
    return [(n + 1) // 2, n // 2]


def split_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AlexNet(towers=2) tensors -> TwoDeviceAlexNet tensors: 'x' -> 'tower1.x', 'tower2.x'.

    Every parameter splits along its first (output) dimension: tower t owns its layers' output
    kernels. Which *inputs* a tower's layer reads (its own maps or both towers') is fixed by the
    layer's shape and the exchanges in forward, not by how the weights are cut: a grouped conv's
    weight (out, in/groups, k, k) already holds per-tower inputs, and the others read everything.
    Works for any per-parameter tensors (weights, gradients, momentum buffers).
    """
    out = {}
    for name, tensor in state.items():
        out[f"tower1.{name}"], out[f"tower2.{name}"] = torch.split(tensor, _halves(len(tensor)))
    return out


def merge_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TwoDeviceAlexNet tensors -> AlexNet(towers=2) tensors, on tower 1's device (the inverse)."""
    names = [key.removeprefix("tower1.") for key in state if key.startswith("tower1.")]
    out = {}
    for name in names:
        first, second = state[f"tower1.{name}"], state[f"tower2.{name}"]
        out[name] = torch.cat([first, second.to(first.device)])
    return out


def _half_layer(layer: nn.Module, device: torch.device, tower: int) -> nn.Module:
    """A conv or linear layer with tower t's share of the output kernels (weights set later)."""
    out = _halves(layer.weight.shape[0])[tower]
    like = dict(bias=layer.bias is not None, device=device, dtype=layer.weight.dtype)
    if isinstance(layer, nn.Conv2d):
        if layer.groups not in (1, 2):
            raise AlexNetError(f"cannot split a convolution with groups={layer.groups} into 2 towers")
        # groups=2: a tower's half reads only its own in_channels/2 maps; groups=1: all of them.
        return nn.utils.skip_init(nn.Conv2d, layer.in_channels // layer.groups, out,
                                  layer.kernel_size, stride=layer.stride, padding=layer.padding,
                                  dilation=layer.dilation, padding_mode=layer.padding_mode, **like)
    return nn.utils.skip_init(nn.Linear, layer.in_features, out, **like)


def _per_tower(module: nn.Module) -> nn.Module:
    """A copy of a weightless layer (activation, LRN, pooling, dropout) for one tower: same type
    and options. An LRN over both towers' maps with groups=2 becomes groups=1 over one tower's."""
    module = copy.deepcopy(module)
    groups = getattr(module, "groups", None)
    if groups is not None:
        if groups % 2:
            raise AlexNetError(f"{type(module).__name__} with groups={groups} mixes the two towers' "
                            "maps and cannot be split")
        module.groups = groups // 2
    return module


def _half_sequential(seq: nn.Sequential, device: torch.device, tower: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        (name, _half_layer(m, device, tower) if isinstance(m, (nn.Conv2d, nn.Linear))
         else _per_tower(m))
        for name, m in seq.named_children()))


class _Tower(nn.Module):
    """One device's half of the paper net, with the same layer names as AlexNet."""

    def __init__(self, model: AlexNet, device: torch.device, tower: int):
        super().__init__()
        self.features = _half_sequential(model.features, device, tower)
        self.flatten = copy.deepcopy(model.flatten)
        self.classifier = _half_sequential(model.classifier, device, tower)
        self.to(device)

    def stages(self):
        yield from self.features.named_children()
        yield "flatten", self.flatten
        yield from self.classifier.named_children()


def _weightless_copy(model: nn.Module) -> nn.Module:
    """A copy of the model whose tensors are on the "meta" device: its structure and options for
    to_alexnet(), without a second copy of the 61M weights (deepcopy takes the memo's stand-ins)."""
    memo = {}
    for t in model.parameters():
        memo[id(t)] = nn.Parameter(torch.empty_like(t, device="meta"), t.requires_grad)
    for t in model.buffers():
        memo[id(t)] = torch.empty_like(t, device="meta")
    return copy.deepcopy(model, memo)


class TwoDeviceAlexNet(nn.Module):
    """The paper's AlexNet with tower 1 on devices[0] and tower 2 on devices[1] (§3.2, Figure 2).

    Same function as the grouped AlexNet it came from (same weights, same outputs and gradients).
    Per tower (N = batch):

        input              (N, 3, 227, 227)  the whole batch on both devices, as each GPU had it
        conv1 relu norm    (N, 48, 55, 55)   norm over this tower's 48 maps (LRN groups=1)
        pool1 conv2 ...    (N, 128, 27, 27)  conv2 reads only its own tower's 48 maps
        pool2              (N, 128, 13, 13)
        exchange -> conv3  (N, 256, 13, 13) -> (N, 192, 13, 13)   reads both towers
        conv4              (N, 192, 13, 13)  own tower only
        conv5 pool5        (N, 128, 6, 6) -> flatten (N, 4608)
        exchange -> fc6    (N, 9216) -> (N, 2048)   tower 1's maps first: channel-major flatten
        exchange -> fc7    (N, 4096) -> (N, 2048)
        exchange -> fc8    (N, 4096) -> (N, ceil(C/2)) and (N, floor(C/2))
        logits             (N, C) on devices[0]

    Our choice where the paper is silent: Figure 2 draws the 1000-way fc8 once; here each tower
    computes half of its outputs from the full fc7 (the same function, the work shared) and the
    logits are gathered on devices[0]. Dropout draws its masks per tower, so in training mode they
    differ from the grouped model's masks (as the paper's GPUs also drew their own).

    Put inputs anywhere (they are copied to both devices) and labels on `output_device`.
    """

    def __init__(self, model: AlexNet, devices: str | Sequence[str] = ("cuda:0", "cuda:1")):
        super().__init__()
        if not isinstance(model, AlexNet):
            raise AlexNetError(f"model parallelism splits the paper's two towers; "
                            f"{type(model).__name__} has none (use variant paper)",
                            option="variant")
        if model.towers != 2:
            raise AlexNetError(f"--model-parallel splits the paper network's two towers; it needs "
                            f"towers=2, got towers={model.towers}", option="towers")
        devs = parse_devices(devices)  # exactly two
        self.devices = devs
        self.tower1 = _Tower(model, devs[0], 0)
        self.tower2 = _Tower(model, devs[1], 1)
        self.load_alexnet_state_dict(model.state_dict())
        self.train(model.training)
        # Kept outside the module tree (no parameters, not in state_dict, untouched by .to()).
        object.__setattr__(self, "_template", _weightless_copy(model))
        self.num_classes, self.in_channels = model.num_classes, model.in_channels
        self.towers, self.input_size = model.towers, model.input_size

    @property
    def output_device(self) -> torch.device:
        """Where the logits are, so where the labels and the loss go."""
        return self.devices[0]

    # Layers whose input comes from both towers: the only places activations cross devices.
    EXCHANGES = ("conv3", "fc6", "fc7", "fc8")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1, d2 = self.devices
        h1, h2 = x.to(d1), x.to(d2)
        # Stage by stage, alternating towers: CUDA launches are asynchronous, so both GPUs compute
        # at once and meet only at the exchanges.
        for (name, layer1), (_, layer2) in zip(self.tower1.stages(), self.tower2.stages()):
            if name in self.EXCHANGES:  # each tower reads tower 1's maps, then tower 2's
                h1, h2 = torch.cat([h1, h2.to(d1)], 1), torch.cat([h1.to(d2), h2], 1)
            h1, h2 = layer1(h1), layer2(h2)
        return torch.cat([h1, h2.to(d1)], 1)  # (N, num_classes) logits on devices[0]

    def alexnet_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under AlexNet's names and shapes (on devices[0]): what checkpoints store."""
        return merge_state_dict(self.state_dict())

    def load_alexnet_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load an AlexNet(towers=2) state_dict (strict: a mismatch raises RuntimeError)."""
        self.load_state_dict(split_state_dict(state))

    def to_alexnet(self, device: str | torch.device | None = None) -> AlexNet:
        """A one-device AlexNet (towers as groups) with these weights, on `device` or devices[0]."""
        dtype = self.tower1.features.conv1.weight.dtype
        model = copy.deepcopy(self._template).to(dtype=dtype)
        model.to_empty(device=device or self.devices[0])
        model.load_state_dict(self.alexnet_state_dict())
        return model.train(self.training)
