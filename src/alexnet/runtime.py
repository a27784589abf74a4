"""Where and how the network runs: device(s), precision, memory format, model parallelism.

One object so that training, evaluation and prediction put the model and its inputs in the same
place in the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import accel, parallel
from .errors import UserError


@dataclass
class Runtime:
    device: torch.device            # where inputs go (tower 1's device under model parallelism)
    output_device: torch.device     # where the logits come out
    precision: str                  # bf16 | fp16 | fp32
    channels_last: bool
    model_devices: Optional[tuple] = None  # the paper's two-device split, when asked for

    @classmethod
    def create(cls, device="auto", precision="auto", channels_last=True,
               model_parallel: Optional[str] = None) -> "Runtime":
        if model_parallel:
            devices = tuple(torch.device(d.strip()) for d in model_parallel.split(","))
            if len(devices) != 2:
                raise UserError(f"--model-parallel takes two devices, DEV0,DEV1; got "
                                f"{model_parallel!r}")
            dev = devices[0]
        else:
            devices, dev = None, accel.resolve_device(device)
        return cls(dev, dev, accel.resolve_precision(dev, precision), channels_last, devices)

    def place(self, model: torch.nn.Module, compile: bool = False) -> torch.nn.Module:
        if self.model_devices is not None:
            model = parallel.TwoDeviceAlexNet.from_alexnet(model, self.model_devices)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            return torch.compile(model) if compile else model
        return accel.prepare_model(model, self.device, channels_last=self.channels_last,
                                   compile=compile)

    def autocast(self):
        return accel.autocast(self.device, self.precision)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @staticmethod
    def unwrap(model: torch.nn.Module) -> torch.nn.Module:
        return parallel.unwrap(model)

    def state_dict(self, model: torch.nn.Module) -> dict:
        """Weights in the single-device layout, whatever the placement (so checkpoints are one
        format); on the CPU so that they load anywhere."""
        inner = parallel.unwrap(model)
        if self.model_devices is not None:
            inner = inner.to_alexnet()
        return {k: v.detach().cpu() for k, v in inner.state_dict().items()}

    def describe(self) -> str:
        where = (",".join(map(str, self.model_devices)) if self.model_devices else str(self.device))
        return f"{where}, {self.precision}{', channels_last' if self.channels_last else ''}"
