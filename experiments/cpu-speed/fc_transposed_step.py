"""c's whole training step (bench model's, batch 64) with the fc layers' forward computed as
(W x^T)^T, where oneDNN reads W as it lies instead of reordering it, against the step as it is:
interleaved, medians of 10 after 2 unmeasured (BENCHMARKS.md, session 12). The backward is
unchanged: dX = g W, dW = g^T x.

    python experiments/cpu-speed/fc_transposed_step.py
"""
import argparse
import statistics
import time

import torch
from torch import nn

from alexnet.benchmarks import model as bench


class TransposedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return torch.addmm(b[:, None], w, x.t()).t()

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        return g @ w, g.t() @ x, g.sum(0)


patched = False
linear = nn.Linear.forward


def forward(self, x):
    if patched and x.dim() == 2 and not torch.is_autocast_enabled("cpu"):
        return TransposedLinear.apply(x, self.weight, self.bias)
    return linear(self, x)


if __name__ == "__main__":
    nn.Linear.forward = forward
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args([])
    steps = {name: bench.build("c", torch.device("cpu"), args) for name in ("as is", "(W x^T)^T")}
    times = {name: [] for name in steps}
    for round_ in range(12):
        for name, trainee in steps.items():
            patched = name != "as is"
            start = time.perf_counter()
            trainee.step()
            if round_ >= 2:
                times[name].append(1000 * (time.perf_counter() - start))
    for name, t in times.items():
        print(f"{name}: {statistics.median(t):.1f} ms a step")
