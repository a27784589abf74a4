"""Where and how the network runs: device(s), precision, memory format, model parallelism.

One object so that training, evaluation and prediction put the model and its inputs in the same
place in the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import accel, parallel


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
            # Exactly two devices that exist, else an error naming --model-parallel.
            devices = parallel.parse_devices(model_parallel)
            dev = devices[0]
        else:
            devices = None
            dev = device if isinstance(device, torch.device) else parallel.resolve_device(device)
        return cls(dev, dev, accel.resolve_precision(dev, precision), channels_last, devices)

    def place(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move the model where it runs (split over two devices for the paper's parallelism).
        Compile after DDP wrapping, if at all, so compile can overlap the all-reduce."""
        if self.model_devices is not None:
            model = parallel.TwoDeviceAlexNet(model, self.model_devices)
            return model.to(memory_format=torch.channels_last) if self.channels_last else model
        return accel.prepare_model(model, self.device, channels_last=self.channels_last)

    def prepare_inference(self, model: torch.nn.Module, compile: bool = False) -> torch.nn.Module:
        """The model for evaluation and prediction: eval mode, on the device, weights cast once
        to the precision (accel.prepare_inference); use no autocast around it."""
        return accel.prepare_inference(model, self.device, self.precision,
                                       channels_last=self.channels_last, compile=compile)

    def autocast(self):
        return accel.autocast(self.device, self.precision)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        return accel.to_input(x, self.device, self.channels_last)

    @staticmethod
    def unwrap(model: torch.nn.Module) -> torch.nn.Module:
        return parallel.unwrap(model)

    def state_dict(self, model: torch.nn.Module) -> dict:
        """Weights in the single-device layout, whatever the placement (so checkpoints are one
        format); on the CPU so that they load anywhere."""
        inner = parallel.unwrap(model)
        state = (inner.alexnet_state_dict() if self.model_devices is not None
                 else inner.state_dict())
        return {k: v.detach().cpu() for k, v in state.items()}

    def load_state_dict(self, model: torch.nn.Module, state: dict) -> None:
        inner = parallel.unwrap(model)
        if self.model_devices is not None:
            inner.load_alexnet_state_dict(state)
        else:
            inner.load_state_dict(state)

    def describe(self) -> str:
        where = (",".join(map(str, self.model_devices)) if self.model_devices else str(self.device))
        return f"{where}, {self.precision}{', channels_last' if self.channels_last else ''}"
