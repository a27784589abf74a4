/* Max pooling's row functions (see pool.c), shared by pool.c and by lrn.c's LRN-then-pooling.
 *
 * The window is scanned row by row; an element wins if it is greater than the best so far or NaN
 * (so the first maximum wins ties, and NaN propagates), as in torch. The argmax is one byte: the
 * winner's position in its k x k window. The backward gathers: each input pixel sums, in float32
 * and in torch's order (outputs row by row), the gradients of the outputs whose window chose it.
 */
#ifndef ALEXNET_POOL_H
#define ALEXNET_POOL_H
#include <stdint.h>
#include <string.h>

#include "bf16.h"

typedef struct {
    int dtype;           /* 0 float32, 1 bfloat16 (as uint16) */
    int64_t c, h, w;     /* one image's input, NHWC */
    int64_t oh, ow;      /* its output: (h - k) / s + 1 */
    int64_t k, s;        /* window and stride; k * k <= 256, so a byte holds the position */
} pool_geom;

static inline int pool_check(const pool_geom *p) {
    if (p->dtype != 0 && p->dtype != 1) return -2;
    if (p->k < 1 || p->s < 1 || p->k > 16 || p->h < p->k || p->w < p->k
        || p->oh != (p->h - p->k) / p->s + 1 || p->ow != (p->w - p->k) / p->s + 1) return -3;
    return 0;
}

/* ---- 16 channels at a time (AVX-512 with its byte and 128-bit forms), where c is a multiple of
 * 16 (the paper's 96 and 256) ----
 * Why: the general loops below go through float scratch rows for every window position (a load,
 * a conversion, a store and a reload per value): pool1's forward and backward took 12.1-12.8 ms
 * at batch 64 in bf16 on a 2-core AMX CPU, 8.9-9.2 ms this way (BENCHMARKS.md, session 12). Here the window's values, the argmax byte and the gradient sum stay in
 * registers. The same comparisons and the same float32 sums in the same order: the same bits. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define FAST_POOL 1
static void pool_forward_row16(const pool_geom *a, const void *const *rows, void *y_row,
                               uint8_t *arg_row) {
    const int64_t c = a->c, k = a->k;
    for (int64_t j = 0; j < a->ow; j++)
        for (int64_t ch = 0; ch < c; ch += 16) {
            __m512 best = load16(a->dtype, rows[0], j * a->s * c + ch);
            __m128i where = _mm_setzero_si128();
            for (int64_t p = 1; p < k * k; p++) {
                const __m512 cur = load16(a->dtype, rows[p / k], (j * a->s + p % k) * c + ch);
                const __mmask16 win = _mm512_cmp_ps_mask(cur, best, _CMP_GT_OQ)
                                      | _mm512_cmp_ps_mask(cur, cur, _CMP_UNORD_Q); /* NaN */
                best = _mm512_mask_mov_ps(best, win, cur);
                where = _mm_mask_mov_epi8(where, win, _mm_set1_epi8((char)p));
            }
            store16(a->dtype, y_row, j * c + ch, best);
            _mm_storeu_si128((__m128i *)(arg_row + j * c + ch), where);
        }
}

static void pool_backward_row16(const pool_geom *a, const void *g_img, const uint8_t *arg_img,
                                void *dx_row, int64_t r) {
    const int64_t c = a->c, k = a->k, s = a->s;
    const int64_t i0 = r >= k ? (r - k) / s + 1 : 0, i1 = r / s < a->oh ? r / s : a->oh - 1;
    for (int64_t col = 0; col < a->w; col++) {
        const int64_t j0 = col >= k ? (col - k) / s + 1 : 0;
        const int64_t j1 = col / s < a->ow ? col / s : a->ow - 1;
        for (int64_t ch = 0; ch < c; ch += 16) {
            __m512 acc = _mm512_setzero_ps(); /* += 0.0f where not chosen leaves it as it is */
            for (int64_t i = i0; i <= i1; i++)
                for (int64_t j = j0; j <= j1; j++) {
                    const int64_t off = (i * a->ow + j) * c + ch;
                    const __m128i p = _mm_set1_epi8((char)((r - i * s) * k + (col - j * s)));
                    const __mmask16 chosen = _mm_cmpeq_epi8_mask(
                        _mm_loadu_si128((const __m128i *)(arg_img + off)), p);
                    acc = _mm512_mask_add_ps(acc, chosen, acc, load16(a->dtype, g_img, off));
                }
            store16(a->dtype, dx_row, col * c + ch, acc);
        }
    }
}
#else
#define FAST_POOL 0
#endif

/* One output row: y_row and arg_row (ow x c) from the k input rows rows[0..k-1] (w x c each).
 * best, cur: c floats of scratch. */
static void pool_forward_row(const pool_geom *a, const void *const *rows, void *y_row,
                             uint8_t *arg_row, float *restrict best, float *restrict cur) {
    const int64_t c = a->c;
#if FAST_POOL
    if (c % 16 == 0) {
        pool_forward_row16(a, rows, y_row, arg_row);
        return;
    }
#endif
    for (int64_t j = 0; j < a->ow; j++) {
        uint8_t *restrict where = arg_row + j * c;
        for (int64_t p = 0; p < a->k * a->k; p++) {
            const int64_t off = (j * a->s + p % a->k) * c;
            if (p == 0) {
                load_floats(a->dtype, rows[0], off, best, c);
                memset(where, 0, c);
                continue;
            }
            load_floats(a->dtype, rows[p / a->k], off, cur, c);
            for (int64_t ch = 0; ch < c; ch++) {
                const int win = cur[ch] > best[ch] || cur[ch] != cur[ch]; /* as torch: NaN wins */
                best[ch] = win ? cur[ch] : best[ch];
                where[ch] = win ? (uint8_t)p : where[ch];
            }
        }
        store_floats(a->dtype, y_row, j * c, best, c);
    }
}

/* Input row r's gradient, dx_row (w x c), from one image's output gradient g_img and argmax
 * arg_img (oh x ow x c each). acc, cur: c floats of scratch. */
static void pool_backward_row(const pool_geom *a, const void *g_img, const uint8_t *arg_img,
                              void *dx_row, int64_t r, float *restrict acc, float *restrict cur) {
#if FAST_POOL
    if (a->c % 16 == 0) {
        pool_backward_row16(a, g_img, arg_img, dx_row, r);
        return;
    }
#endif
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
                const int64_t off = (i * a->ow + j) * c;
                const uint8_t *restrict where = arg_img + off;
                load_floats(a->dtype, g_img, off, cur, c);
                for (int64_t ch = 0; ch < c; ch++) acc[ch] += where[ch] == p ? cur[ch] : 0.0f;
            }
        }
        store_floats(a->dtype, dx_row, col * c, acc, c);
    }
}
#endif
