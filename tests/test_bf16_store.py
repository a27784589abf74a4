"""csrc/bf16.h's store16 (the AVX-512 kernels' float32-to-bf16 store) against f32_to_bf16 (torch's
rounding, one value at a time) over the float32 bit patterns, with MXCSR as it is and with
denormals flushed (torch.set_flush_denormal): a C harness built here with the kernels' flags."""
import platform
import shutil
import subprocess

import pytest

from alexnet import native

HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xmmintrin.h>
#include "bf16.h"
int main(int argc, char **argv) {
#if !defined(__AVX512F__)
    return 3;
#else
    const unsigned long long stride = strtoull(argv[1], NULL, 10);
    unsigned long long bad = 0;
    const unsigned mxcsr = _mm_getcsr();
    for (int mode = 0; mode < 2; mode++) { /* MXCSR as it is; then DAZ and FTZ set */
        _mm_setcsr(mode ? mxcsr | 0x8040u : mxcsr);
        for (unsigned long long i = 0; i < (1ull << 28); i += stride) {
            unsigned u[16] __attribute__((aligned(64)));
            for (int l = 0; l < 16; l++) /* lanes 2^28 apart: every vector mixes classes */
                u[l] = (unsigned)(i + ((unsigned long long)l << 28));
            unsigned short out[16];
            store16(1, out, 0, _mm512_load_ps((const float *)u));
            for (int l = 0; l < 16; l++) {
                float f;
                memcpy(&f, &u[l], 4);
                const unsigned short want = f32_to_bf16(f);
                if (out[l] != want && bad++ < 5)
                    printf("mode %d: %08x gave %04x, not %04x\n", mode, u[l], out[l], want);
            }
        }
        _mm_setcsr(mxcsr);
    }
    printf("%llu mismatches\n", bad);
    return bad != 0;
#endif
}
"""


def _run(tmp_path, stride: int) -> None:
    if shutil.which("gcc") is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("needs gcc on x86")
    source = tmp_path / "store16.c"
    source.write_text(HARNESS)
    exe = tmp_path / "store16"
    subprocess.run(["gcc", "-O3", "-march=native", "-I", str(native.CSRC), "-o", str(exe),
                    str(source)], check=True, capture_output=True, timeout=120)
    done = subprocess.run([str(exe), str(stride)], capture_output=True, text=True, timeout=600)
    if done.returncode == 3:
        pytest.skip("the compiler does not target AVX-512 here: store16 is not built")
    assert done.returncode == 0, done.stdout


def test_store16_rounds_as_f32_to_bf16_on_a_sample(tmp_path):
    _run(tmp_path, 7)  # one pattern in 7, through every class (denormal, NaN, inf, ...)


@pytest.mark.slow
def test_store16_rounds_as_f32_to_bf16_on_every_pattern(tmp_path):
    _run(tmp_path, 1)
