"""bf16 training that casts the weights once, not on every step: fp32 master weights with bf16
copies kept in step by the optimizer (mixed precision as in Micikevicius et al., 2018, "Mixed
Precision Training"; not in the AlexNet paper, which trained in fp32).

Why. Under torch.autocast each bf16 step casts all of AlexNet's 61M fp32 weights to bf16 in the
forward and every bf16 weight gradient back to fp32 in the backward, and the optimizer then reads
the fp32 gradients: `aten::copy_` was 23% of the step on a 2-core CPU with AMX (issue 12).
Here the network runs on bf16 copies of its weights (torch.func.functional_call, the module
itself untouched) and one pass of a C kernel per parameter (csrc/optim.c) reads the bf16
gradient, updates the fp32 weight and the optimizer's state with torch's own formulas (rounded as
torch's fused kernels round), and writes the new bf16 copy.

    masters = MasterWeights.create(model, optimizer, device, "bf16")   # None where it does not apply
    loss, logits = train_step(model, optimizer, scaler, x, y, masters=masters)

What stays as it was: the module's parameters are the fp32 masters, and the optimizer is torch's
SGD or AdamW object, its param_groups (the schedule sets lr there) and its state (momentum, Adam's
moments and step) in torch's format, so checkpoints, resume, evaluation and the finite check see
no difference. The numbers are autocast's: the same bf16 weights (round to nearest even), the
same bf16 forward and gradients, and torch's update to within rounding (tests/test_masters.py).
"""
from __future__ import annotations

import ctypes

import torch
from torch import nn

from . import native
from .accel import cast_inputs_at_layers
from .machine import env_flag
from .model import AlexNet, OWTAlexNet

_LOW = torch.bfloat16
_P = ctypes.c_void_p
_PARALLEL_MIN = 1 << 16  # smaller tensors are updated on one thread (waking others costs more)


def _declare(lib) -> None:
    f, i64, i = ctypes.c_float, ctypes.c_int64, ctypes.c_int
    lib.sgd_bf16.argtypes = [_P, _P, _P, _P, i64, f, f, f, i, i]
    lib.adamw_bf16.argtypes = [_P, _P, _P, _P, _P, i64, *[f] * 7, i]
    lib.sgd_bf16.restype = lib.adamw_bf16.restype = i


# No contraction of a*b + c into one rounding: the kernel rounds as torch's optimizers do.
_library = native.Library("optim", _declare, extra_flags=("-ffp-contract=off",))


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr() if t is not None else None)


def _supported_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """Plain SGD (no dampening, no Nesterov) or AdamW (no amsgrad), nothing maximised: what the
    kernel computes."""
    for g in optimizer.param_groups:
        if g.get("maximize") or g.get("differentiable"):
            return False
        if type(optimizer) is torch.optim.SGD and (g["dampening"] or g["nesterov"]):
            return False
        if type(optimizer) is torch.optim.AdamW and g["amsgrad"]:
            return False
    return type(optimizer) in (torch.optim.SGD, torch.optim.AdamW)


class MasterWeights:
    """The model's bf16 copies, and the optimizer step that keeps them in step (module doc).
    train_step calls it as the network (`masters(x)`) and as the optimizer (`zero_grad`, `step`)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.lib = _library.load()
        if self.lib is None:
            raise RuntimeError(f"the optimizer kernel is not available: {_library.error}")
        with torch.no_grad():  # .to keeps each weight's layout (channels_last stays)
            self.copies = {name: p.detach().to(_LOW).requires_grad_()
                           for name, p in model.named_parameters()}
        self.copy_of = {p: self.copies[name] for name, p in model.named_parameters()}
        for p, copy in self.copy_of.items():  # the kernel walks both in one memory order
            if copy.stride() != p.stride() or not _dense(p):
                raise ValueError(f"a weight of shape {tuple(p.shape)} is not dense, or its bf16 "
                                 f"copy has another memory order")
        # The input is cast where the first conv or fc layer takes it, as autocast does: a Scale
        # before conv1 (--input-norm) multiplies in fp32 first, under autocast and here alike.
        cast_inputs_at_layers(model)

    @classmethod
    def create(cls, model: nn.Module, optimizer: torch.optim.Optimizer, device,
               precision: str) -> "MasterWeights | None":
        """MasterWeights where they apply, else None (then autocast casts every step): bf16 on
        the CPU, one of this package's networks as a plain module (not DDP-wrapped, split over
        two devices or compiled: those keep autocast), fp32 parameters, SGD or AdamW as the
        kernel computes them, and the kernel built. ALEXNET_MASTERS=0 turns them off."""
        if (precision != "bf16" or torch.device(device).type != "cpu"
                or not env_flag("ALEXNET_MASTERS")
                or not isinstance(model, (AlexNet, OWTAlexNet))
                or not _supported_optimizer(optimizer)
                or not {id(p) for g in optimizer.param_groups for p in g["params"]}
                <= {id(p) for p in model.parameters()}
                or any(p.dtype != torch.float32 or p.device.type != "cpu" or not _dense(p)
                       for p in model.parameters())
                or _library.load() is None):
            return None
        return cls(model, optimizer)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The network's forward on the bf16 copies (the module's train/eval mode applies)."""
        return torch.func.functional_call(self.model, self.copies, (x,))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for copy in self.copies.values():
            copy.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """The optimizer's step from the copies' bf16 gradients, refreshing the copies."""
        adamw = type(self.optimizer) is torch.optim.AdamW
        with torch.profiler.record_function("alexnet::bf16_copies_step"):  # a row in profiles
            self._step(adamw)

    def _step(self, adamw: bool) -> None:
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                copy = self.copy_of[p]
                if copy.grad is None:  # as torch: a parameter without a gradient is not updated
                    continue
                grad = _like(p, copy.grad)
                threads = torch.get_num_threads() if p.numel() >= _PARALLEL_MIN else 1
                if adamw:
                    self._adamw(group, p, grad, copy, threads)
                else:
                    self._sgd(group, p, grad, copy, threads)

    def _sgd(self, group: dict, p, grad, copy, threads: int) -> None:
        buf, first = None, False
        if group["momentum"]:  # as torch: without momentum no state at all
            state = self.optimizer.state[p]
            first = state.get("momentum_buffer") is None
            buf = state["momentum_buffer"] = (torch.empty_like(p) if first
                                              else _like(p, state["momentum_buffer"]))
        self.lib.sgd_bf16(_ptr(p), _ptr(buf), _ptr(grad), _ptr(copy), p.numel(),
                          float(group["lr"]), group["momentum"], group["weight_decay"],
                          int(first), threads)

    def _adamw(self, group: dict, p, grad, copy, threads: int) -> None:
        state = self.optimizer.state[p]
        if not state:  # as torch initialises it (fused: the step count is a float32 tensor)
            state["step"] = torch.tensor(0.0, dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        m = state["exp_avg"] = _like(p, state["exp_avg"])
        v = state["exp_avg_sq"] = _like(p, state["exp_avg_sq"])
        state["step"] += 1
        t, (beta1, beta2), lr = state["step"].item(), group["betas"], float(group["lr"])
        # In double, then rounded once, as torch computes them (1 - 0.999 in float32 is 1e-5 off)
        step_size, bc2_sqrt = lr / (1 - beta1 ** t), (1 - beta2 ** t) ** 0.5
        self.lib.adamw_bf16(_ptr(p), _ptr(m), _ptr(v), _ptr(grad), _ptr(copy), p.numel(),
                            1 - lr * group["weight_decay"], 1 - beta1, beta2, 1 - beta2,
                            group["eps"], step_size, bc2_sqrt, threads)


def _dense(t: torch.Tensor) -> bool:
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def _like(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """t in p's memory order (the kernel walks all its arrays in one order); t itself if it is."""
    if t.stride() == p.stride():
        return t
    return torch.empty_like(p, dtype=t.dtype).copy_(t)
