"""The one training step (step.py): a non-finite loss stops it before the update."""
from __future__ import annotations

import copy

import pytest
import torch

from alexnet import accel
from alexnet.errors import Diverged
from alexnet.masters import MasterWeights
from alexnet.model import alexnet
from alexnet.step import train_step


def _state(model, optimizer):
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b


def test_another_ranks_non_finite_loss_stops_this_rank_before_the_update_too():
    """Under DDP a rank whose own loss was finite stepped on (with the NaN gradients the
    all-reduce had given it) and then waited for the rank that had stopped: a gloo traceback,
    or an NCCL hang. With the loss summed over the ranks, every rank stops at the same step."""
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=3, dropout=0.0)
    opt = accel.make_sgd(model.parameters(), 0.1, 0.9, 5e-4, "cpu")
    scaler = accel.grad_scaler(torch.device("cpu"), "fp32")
    x, y = torch.randn(2, 3, 227, 227), torch.tensor([0, 2])
    sums = []
    loss, _ = train_step(model, opt, scaler, x, y, all_ranks=lambda v: sums.append(v) or v * 2)
    assert len(sums) == 1 and sums[0].item() == pytest.approx(loss)  # finite everywhere: a step
    before = _state(model, opt)
    with pytest.raises(Diverged, match="loss became nan on another rank"):
        train_step(model, opt, scaler, x, y, all_ranks=lambda v: v + float("nan"))
    assert _equal(_state(model, opt), before)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])  # bf16: on the weights' bf16 copies
def test_non_finite_loss_raises_before_the_update_and_leaves_no_trace(precision):
    torch.manual_seed(0)
    model = alexnet("paper", num_classes=3, dropout=0.0)  # no dropout: the twin draws no masks
    scaler = accel.grad_scaler(torch.device("cpu"), precision)
    x, y = torch.randn(2, 3, 227, 227), torch.tensor([0, 2])

    def trainee(net, state=None):
        """(net, step(images)) with its own SGD and, for bf16, its own bf16 copies."""
        opt = accel.make_sgd(net.parameters(), 0.1, 0.9, 5e-4, "cpu")
        if state is not None:
            opt.load_state_dict(copy.deepcopy(state))  # its own momentum buffers
        mw = MasterWeights.create(net, opt, "cpu", precision)
        assert (mw is not None) == (precision == "bf16")
        return opt, lambda images: train_step(net, opt, scaler, images, y, masters=mw,
                                              autocast=lambda: accel.autocast("cpu", precision))
    optimizer, step = trainee(model)
    step(x)  # momentum buffers exist from here on
    twin = copy.deepcopy(model)
    twin_opt, twin_step = trainee(twin, optimizer.state_dict())
    before = _state(model, optimizer)

    bad = x.clone()
    bad[1, 0, 100, 100] = float("nan")
    with pytest.raises(Diverged, match="loss became nan"):
        step(bad)
    assert _equal(_state(model, optimizer), before)  # weights and momentum as they were
    # the next good step is the step the bad one never preceded (its gradients are dropped)
    loss, _ = step(x)
    twin_loss, _ = twin_step(x)
    assert loss == twin_loss
    assert _equal(_state(model, optimizer)[0], _state(twin, twin_opt)[0])
