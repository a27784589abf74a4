/* Max pooling (the paper's overlapping 3x3, stride 2, §3.4) for the CPU in channels_last (NHWC).
 *
 * Why a kernel: torch's CPU max pooling stores the argmax of every output as an int64 index and
 * its backward zero-fills the input gradient, then scatters into it; the paper net's three pools
 * took 26 ms of a ~300 ms bf16 step at batch 64 (BENCHMARKS.md). Here the argmax is one byte (its
 * position in the k x k window) and the backward gathers: each input pixel sums the gradients of
 * the outputs whose window chose it, and is written once.
 *
 * torch's numbers: the window is scanned row by row, an element wins if it is greater than the
 * best so far or NaN (so the first maximum wins ties, and NaN propagates), and the backward adds
 * each input pixel's contributions in torch's order (outputs row by row) in float32: bit for bit
 * torch's in float32; in bfloat16 the sum is rounded once, at the end.
 * Storage is float32 (dtype 0) or bfloat16 (dtype 1, as uint16); arithmetic is float32.
 * Built by alexnet/native.py with gcc -O3 -march=native -fopenmp; loaded with ctypes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bf16.h"

enum { F32 = 0, BF16 = 1 };

typedef struct {
    int dtype;
    int64_t n, c, h, w;  /* the input, NHWC */
    int64_t oh, ow;      /* the output: (h - k) / s + 1 */
    int64_t k, s;        /* window and stride; k * k <= 256, so a byte holds the position */
} pool_args;

static void load(int dtype, const void *src, int64_t off, float *restrict dst, int64_t len) {
    if (dtype == F32) {
        const float *p = (const float *)src + off;
        for (int64_t i = 0; i < len; i++) dst[i] = p[i];
    } else {
        const uint16_t *p = (const uint16_t *)src + off;
        for (int64_t i = 0; i < len; i++) dst[i] = bf16_to_f32(p[i]);
    }
}

static void store(int dtype, void *dst, int64_t off, const float *restrict src, int64_t len) {
    if (dtype == F32) {
        float *p = (float *)dst + off;
        for (int64_t i = 0; i < len; i++) p[i] = src[i];
    } else {
        uint16_t *p = (uint16_t *)dst + off;
        for (int64_t i = 0; i < len; i++) p[i] = f32_to_bf16(src[i]);
    }
}

/* Output row i of image b: y[b, i, :, :] and arg[b, i, :, :]. best, cur: c floats of scratch. */
static void forward_row(const pool_args *a, const void *x, void *y, uint8_t *arg, int64_t b,
                        int64_t i, float *restrict best, float *restrict cur) {
    const int64_t c = a->c;
    for (int64_t j = 0; j < a->ow; j++) {
        uint8_t *restrict where = arg + ((b * a->oh + i) * a->ow + j) * c;
        for (int64_t p = 0; p < a->k * a->k; p++) {
            const int64_t r = i * a->s + p / a->k, col = j * a->s + p % a->k;
            const int64_t off = ((b * a->h + r) * a->w + col) * c;
            if (p == 0) {
                load(a->dtype, x, off, best, c);
                memset(where, 0, c);
                continue;
            }
            load(a->dtype, x, off, cur, c);
            for (int64_t ch = 0; ch < c; ch++) {
                const int win = cur[ch] > best[ch] || cur[ch] != cur[ch]; /* as torch: NaN wins */
                best[ch] = win ? cur[ch] : best[ch];
                where[ch] = win ? (uint8_t)p : where[ch];
            }
        }
        store(a->dtype, y, ((b * a->oh + i) * a->ow + j) * c, best, c);
    }
}

/* Input row r of image b: dx[b, r, :, :] = the sum of g over the outputs that chose each pixel. */
static void backward_row(const pool_args *a, const void *g, const uint8_t *arg, void *dx,
                         int64_t b, int64_t r, float *restrict acc, float *restrict cur) {
    const int64_t c = a->c, k = a->k, s = a->s;
    /* the output rows whose window covers r: i*s <= r <= i*s + k - 1 */
    const int64_t i0 = r >= k ? (r - k) / s + 1 : 0, i1 = r / s < a->oh ? r / s : a->oh - 1;
    for (int64_t col = 0; col < a->w; col++) {
        const int64_t j0 = col >= k ? (col - k) / s + 1 : 0;
        const int64_t j1 = col / s < a->ow ? col / s : a->ow - 1;
        for (int64_t ch = 0; ch < c; ch++) acc[ch] = 0.0f;
        for (int64_t i = i0; i <= i1; i++) {
            for (int64_t j = j0; j <= j1; j++) {
                const uint8_t p = (uint8_t)((r - i * s) * k + (col - j * s));
                const int64_t off = ((b * a->oh + i) * a->ow + j) * c;
                const uint8_t *restrict where = arg + off;
                load(a->dtype, g, off, cur, c);
                for (int64_t ch = 0; ch < c; ch++) acc[ch] += where[ch] == p ? cur[ch] : 0.0f;
            }
        }
        store(a->dtype, dx, ((b * a->h + r) * a->w + col) * c, acc, c);
    }
}

static int run(const pool_args *a, int backward, const void *in, const uint8_t *arg_in,
               void *out, uint8_t *arg_out, int nthreads) {
    if (a->dtype != F32 && a->dtype != BF16) return -2;
    if (a->k < 1 || a->s < 1 || a->k * a->k > 256 || a->h < a->k || a->w < a->k
        || a->oh != (a->h - a->k) / a->s + 1 || a->ow != (a->w - a->k) / a->s + 1) return -3;
    const int64_t rows = a->n * (backward ? a->h : a->oh);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *mem = (float *)malloc(sizeof(float) * 2 * a->c);
        failed = mem == NULL;
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < rows; t++) {
            if (!mem) continue;
            if (backward) {
                backward_row(a, in, arg_in, out, t / a->h, t % a->h, mem, mem + a->c);
            } else {
                forward_row(a, in, out, arg_out, t / a->oh, t % a->oh, mem, mem + a->c);
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
    pool_args a = {dtype, n, c, h, w, oh, ow, k, s};
    return run(&a, 0, x, NULL, y, arg, nthreads);
}

int maxpool_backward(int dtype, const void *g, const uint8_t *arg, void *dx, int64_t n, int64_t c,
                     int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t k, int64_t s,
                     int nthreads) {
    pool_args a = {dtype, n, c, h, w, oh, ow, k, s};
    return run(&a, 1, g, arg, dx, NULL, nthreads);
}
