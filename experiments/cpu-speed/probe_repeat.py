"""The CPU fast-path probe (accel._probe_cpu), run afresh N times in one process with an empty
cache, printing what each run measured and decided. Run it beside other work (a training run, the
test suite) to see what load does to the probe: session 13 saw bf16 and fp32 timed alike (47.3
and 47.2 ms, 76.0 and 84.0 ms) in 2 of 8 runs beside a training run and the test suite, against
about 9 and 36 ms in the others.

    python experiments/cpu-speed/probe_repeat.py [N]
"""
import os
import sys
import tempfile

os.environ["ALEXNET_CACHE"] = tempfile.mkdtemp()  # before alexnet reads it
from alexnet import accel  # noqa: E402

for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 8):
    accel._fast_paths.clear()
    for name in os.listdir(os.environ["ALEXNET_CACHE"]):
        if name.startswith("fastpath"):
            os.remove(os.path.join(os.environ["ALEXNET_CACHE"], name))
    print(accel.fast_path("cpu").describe(), flush=True)
