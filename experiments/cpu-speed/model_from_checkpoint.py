"""model_from_checkpoint against the way it built the model before session 21 (the same work:
a traced meta copy, a real build with the paper's random init, the shape and finiteness checks,
then load_state_dict's copy, where it now builds on the meta device and assigns copies),
alternating in one process, 5 pairs after one warm-up pair.

    .venv/bin/python experiments/cpu-speed/model_from_checkpoint.py CHECKPOINT
"""
import statistics
import sys
import time

import torch

from alexnet.checkpoint import LEGACY_OPTIONS, load_checkpoint, model_from_checkpoint
from alexnet.model import alexnet
from alexnet.summary import layer_table


def before(ckpt):
    arch = ckpt["arch"]
    options = arch["options"]
    if arch["variant"] == "paper":  # as the old code: owt never had these options
        options = {**LEGACY_OPTIONS, **options}

    def build():
        return alexnet(arch["variant"], num_classes=arch["num_classes"],
                       in_channels=arch["in_channels"], **options)

    with torch.device("meta"):
        layer_table(build(), ckpt["crop_size"])
    model = build()
    own, weights = model.state_dict(), ckpt["model"]
    assert own.keys() == weights.keys()
    assert all(tuple(own[k].shape) == tuple(v.shape) for k, v in weights.items())
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    model.load_state_dict(weights)
    return model


ckpt = load_checkpoint(sys.argv[1])
times = {"before": [], "now": []}
before(ckpt), model_from_checkpoint(ckpt)  # warm-up: the first call of each pays torch's set-up
for _ in range(5):
    for name, build in (("before", before), ("now", model_from_checkpoint)):
        start = time.perf_counter()
        model = build(ckpt)
        times[name].append(time.perf_counter() - start)
        del model
ratios = [n / b for b, n in zip(times["before"], times["now"])]
for name, ts in times.items():
    print(f"{name:7s} median {statistics.median(ts):.3f} s  ({', '.join(f'{t:.3f}' for t in ts)})")
print(f"now/before per pair: median {statistics.median(ratios):.2f} "
      f"(range {min(ratios):.2f}-{max(ratios):.2f}); threads {torch.get_num_threads()}")
