/* conv1's input by space-to-depth (stem.py's input_to_depth) for the CPU, in one pass.
 *
 * Why: in tensor ops the rearrangement took two copies, F.pad and a permuted clone: ~4.9 ms for
 * conv1's 20 MB of bf16 at batch 64 on a 2-core AMX CPU, where this takes ~2.4 (BENCHMARKS.md,
 * session 12). Here each output pixel's s x s block is gathered from s input rows, s * c
 * contiguous values each, with zeros where the block lies outside the image: the same values,
 * written once.
 *
 * x: (n, h, w, c) contiguous (a channels_last tensor's memory); out: (n, hb, wb, s, s, c)
 * contiguous, out[b, i, j, a, q, ch] = x[b, s*i + a - p, s*j + q - p, ch], or 0 outside x.
 * Values are copied as bytes (es bytes each), so any dtype. Built by alexnet/native.py; ctypes.
 */
#include <stdint.h>
#include <string.h>

/* len bytes, 8 at a time: the segments are short (24 bytes for the paper's conv1 in bf16), and a
 * memcpy call of a length the compiler cannot see would cost more than the copy */
static inline void copy_bytes(char *restrict dst, const char *restrict src, int64_t len) {
    int64_t k = 0;
    for (; k + 8 <= len; k += 8) {
        uint64_t v;
        memcpy(&v, src + k, 8);
        memcpy(dst + k, &v, 8);
    }
    for (; k < len; k++) dst[k] = src[k];
}

/* Returns 0, or -3 for a bad size. */
int space_to_depth(int64_t es, const char *x, char *out, int64_t n, int64_t h, int64_t w,
                   int64_t c, int64_t s, int64_t hb, int64_t wb, int64_t p, int nthreads) {
    if (es < 1 || n < 0 || h < 0 || w < 0 || c < 1 || s < 1 || hb < 0 || wb < 0 || p < 0)
        return -3;
    const int64_t px = c * es, seg = s * px; /* one pixel's bytes; one block row's */
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t t = 0; t < n * hb; t++) { /* one row of blocks of one image */
        const int64_t b = t / hb, i = t % hb;
        char *o = out + t * wb * s * seg;
        for (int64_t j = 0; j < wb; j++)
            for (int64_t a = 0; a < s; a++, o += seg) {
                const int64_t row = s * i + a - p, col0 = s * j - p;
                if (row < 0 || row >= h) {
                    memset(o, 0, seg);
                    continue;
                }
                const char *src = x + (b * h + row) * w * px;
                if (col0 >= 0 && col0 + s <= w) {
                    copy_bytes(o, src + col0 * px, seg);
                    continue;
                }
                for (int64_t q = 0; q < s; q++) { /* a block across the image's edge */
                    const int64_t col = col0 + q;
                    if (col < 0 || col >= w) memset(o + q * px, 0, px);
                    else copy_bytes(o + q * px, src + col * px, px);
                }
            }
    }
    return 0;
}
