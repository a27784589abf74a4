/* Max pooling (the paper's overlapping 3x3, stride 2, §3.4) for the CPU in channels_last (NHWC).
 *
 * Why a kernel: torch's CPU max pooling stores the argmax of every output as an int64 index and
 * its backward zero-fills the input gradient, then scatters into it; the paper net's three pools
 * took 26 ms of a ~300 ms bf16 step at batch 64 (BENCHMARKS.md). Here the argmax is one byte (its
 * position in the k x k window) and the backward gathers: each input pixel sums the gradients of
 * the outputs whose window chose it, and is written once (the row functions are in pool.h).
 *
 * torch's numbers: bit for bit torch's in float32; in bfloat16 the same outputs, and each input's
 * gradient summed in float32 and rounded once, at the end. (Where NaN gradients meet, the sum is
 * NaN, with the bits of whichever NaN the compiled addition keeps, in torch as here.)
 * Storage is float32 (dtype 0) or bfloat16 (dtype 1, as uint16); arithmetic is float32.
 * Built by alexnet/native.py with gcc -O3 -march=native -fopenmp; loaded with ctypes.
 */
#include <stdint.h>
#include <stdlib.h>

#include "pool.h"

static int run(const pool_geom *a, int64_t n, int backward, const void *in, const uint8_t *arg_in,
               void *out, uint8_t *arg_out, int nthreads) {
    int err = pool_check(a);
    if (err) return err;
    const int64_t es = a->dtype == 0 ? 4 : 2, c = a->c, w = a->w;
    const int64_t in_img = a->h * w * c, out_img = a->oh * a->ow * c;
    const int64_t rows = n * (backward ? a->h : a->oh);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *mem = (float *)malloc(sizeof(float) * 2 * c);
        failed = mem == NULL;
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < rows; t++) {
            if (!mem) continue;
            if (backward) { /* in: dL/dy; out: dL/dx, one input row of image b */
                const int64_t b = t / a->h, r = t % a->h;
                pool_backward_row(a, (const char *)in + b * out_img * es, arg_in + b * out_img,
                                  (char *)out + (b * in_img + r * w * c) * es, r, mem, mem + c);
            } else { /* in: x; out: y, one output row i of image b */
                const int64_t b = t / a->oh, i = t % a->oh;
                const void *src[16];
                for (int64_t d = 0; d < a->k; d++)
                    src[d] = (const char *)in + (b * in_img + (i * a->s + d) * w * c) * es;
                pool_forward_row(a, src, (char *)out + (b * out_img + i * a->ow * c) * es,
                                 arg_out + b * out_img + i * a->ow * c, mem, mem + c);
            }
        }
        free(mem);
    }
    return failed ? -1 : 0;
}

/* The two entry points, each (its input, the argmax, its output); every array NHWC and
 * contiguous. Returns 0, or a negative code: -1 out of memory, -2 bad dtype, -3 bad shape. */
int maxpool_forward(int dtype, const void *x, uint8_t *arg, void *y, int64_t n, int64_t c,
                    int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t k, int64_t s,
                    int nthreads) {
    pool_geom a = {dtype, c, h, w, oh, ow, k, s};
    return run(&a, n, 0, x, NULL, y, arg, nthreads);
}

int maxpool_backward(int dtype, const void *g, const uint8_t *arg, void *dx, int64_t n, int64_t c,
                     int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t k, int64_t s,
                     int nthreads) {
    pool_geom a = {dtype, c, h, w, oh, ow, k, s};
    return run(&a, n, 1, g, arg, dx, NULL, nthreads);
}
