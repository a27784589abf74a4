/* The paper's local response normalisation, forward and backward, fused for the CPU.
 *
 *   s[i] = k + alpha * sum_{j in win(i)} a[j]^2,   win(i) = [i - size/2, i + (size-1)/2], clipped
 *                                                  to i's group
 *   b[i] = a[i] * s[i]^-beta
 *   da[m] = g[m] s[m]^-beta - 2 alpha beta a[m] sum_{i : m in win(i)} g[i] a[i] s[i]^(-beta-1)
 *
 * Why a kernel: written as tensor ops, LRN is a dozen passes over a large activation (conv1's is
 * 64x96x55x55) and autograd keeps their intermediates; here each element is read once and written
 * once, the work happens on a small block in cache, and the backward recomputes s from the input
 * instead of storing it.
 *
 * Storage is float32 (dtype 0) or bfloat16 (dtype 1, as uint16); arithmetic is always float32.
 * With relu set, the layer takes the ReLU's input: a = max(x, 0) on load, and the backward's result
 * is zeroed where a <= 0, as ReLU's backward does. That saves the ReLU's own pass over
 * the activation in each direction (the paper puts LRN right after ReLU, §3.3).
 * Two layouts: channels_last (NHWC: a pixel's channels are contiguous, vectorised over channels)
 * and channels_first (NCHW: a channel's pixels are contiguous, vectorised over a block of pixels).
 * Where the compiler targets AVX-512, the paper's layer in channels_last has a hand-vectorised
 * path (below): 1.7x the general loops on an AMX CPU (BENCHMARKS.md), results within a few float32
 * roundings of theirs.
 * Built by alexnet/native.py with gcc -O3 -march=native -fopenmp; loaded with ctypes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>

#include "bf16.h"

enum { F32 = 0, BF16 = 1 };
#define TILE 64    /* channels_first: pixels per tile (longer rows help the prefetcher) */
#define RUN 2048   /* channels_last: about this many values per run of whole pixels */

typedef struct {
    int dtype;            /* F32 or BF16 */
    int64_t n, c, hw;     /* batch, channels, pixels per image */
    int64_t groups, size; /* the window never crosses a group (the paper's GPU towers) */
    float alpha, beta, k;
    int relu;             /* x is the ReLU's input (see the top) */
    /* mask[d*c + ch] = all bits set if channel ch + d - size/2 is in ch's group, else 0: the
     * window, clipped at group edges. mirror is the same for the backward's mirrored window. */
    const uint32_t *mask, *mirror;
} lrn_args;

/* dst[i] = src[off + i] as float32 */
static void load(const lrn_args *a, const void *src, int64_t off, float *restrict dst,
                 int64_t len) {
    if (a->dtype == F32) { /* a loop, not memcpy: a tile's rows are short, a call costs */
        const float *s = (const float *)src + off;
        for (int64_t i = 0; i < len; i++) dst[i] = s[i];
    } else {
        const uint16_t *s = (const uint16_t *)src + off;
        for (int64_t i = 0; i < len; i++) dst[i] = bf16_to_f32(s[i]);
    }
}

static void store(const lrn_args *a, void *dst, int64_t off, const float *restrict src,
                  int64_t len) {
    if (a->dtype == F32) {
        float *d = (float *)dst + off;
        for (int64_t i = 0; i < len; i++) d[i] = src[i];
    } else {
        uint16_t *d = (uint16_t *)dst + off;
        for (int64_t i = 0; i < len; i++) d[i] = f32_to_bf16(src[i]);
    }
}

/* ReLU on load: NaN stays NaN, as torch's relu keeps it */
static void relu_in(float *restrict x, int64_t len) {
    for (int64_t i = 0; i < len; i++) x[i] = x[i] < 0.0f ? 0.0f : x[i];
}

/* ReLU's backward on the result: zero where the ReLU's output a is <= 0 (a NaN passes, as in
 * torch's threshold_backward) */
static void relu_out(float *restrict out, const float *restrict a, int64_t len) {
    for (int64_t i = 0; i < len; i++) out[i] = a[i] <= 0.0f ? 0.0f : out[i];
}

/* s^-beta. The paper's beta = 0.75 as 1/sqrt(s sqrt(s)), which vectorises where powf does not;
 * `paper` is a compile-time constant where this is inlined, so the loops have no branch. */
static inline float neg_pow(float s, float beta, int paper) {
    return paper ? 1.0f / sqrtf(s * sqrtf(s)) : powf(s, -beta);
}

/* The window sum of channel ch at q, where q holds squares (or gradient terms) with consecutive
 * channels `stride` floats apart and q[d*stride] is the d-th value of ch's window. */
static inline float window(const lrn_args *a, const uint32_t *mask, const float *restrict q,
                           int64_t ch, int64_t stride, int64_t size) {
    float sum = 0.0f;
    /* q AND the mask's bits: outside the window +0, even where q is NaN or inf (a product with
     * a 0 weight gave NaN there, across a group edge) */
    for (int64_t d = 0; d < size; d++) {
        uint32_t bits;
        memcpy(&bits, &q[d * stride], 4);
        bits &= mask[d * a->c + ch];
        float v;
        memcpy(&v, &bits, 4);
        sum += v;
    }
    return sum;
}

/* Per-thread scratch, each `len` floats: x, g (= dL/dy), q (squares), t (gradient terms),
 * p (s^-beta), out. q and t have `margin` more, for zeros at both ends. */
typedef struct { float *x, *g, *q, *t, *p, *out; } scratch;

static float *scratch_alloc(scratch *w, int64_t len, int64_t margin) {
    float *mem = (float *)malloc(sizeof(float) * (6 * len + 2 * margin));
    if (mem) {
        w->x = mem; w->g = w->x + len; w->p = w->g + len; w->out = w->p + len;
        w->q = w->out + len; w->t = w->q + len + margin;
    }
    return mem;
}

/* ---- channels_last: a run of whole pixels, vectorised over each pixel's channels ---- */

/* size is a->size and paper is (size == 5 && beta == 0.75): as constants (see the callers) the
 * window unrolls and s^-beta takes no branch. */
static inline __attribute__((always_inline)) void
pixels_sized(const lrn_args *a, int backward, const void *x, const void *g, void *out,
             int64_t first, int64_t count, scratch *w, int64_t size, int paper) {
    const int64_t c = a->c, lo = size / 2, hi = (size - 1) / 2, len = count * c;
    const float k = a->k, alpha = a->alpha, c2ab = 2.0f * a->alpha * a->beta;
    load(a, x, first * c, w->x, len);
    if (a->relu) relu_in(w->x, len);
    /* squares, with zeros for the window to read past the run's ends; inside it the mask clips */
    memset(w->q, 0, sizeof(float) * lo);
    memset(w->q + lo + len, 0, sizeof(float) * hi);
    for (int64_t i = 0; i < len; i++) w->q[lo + i] = w->x[i] * w->x[i];
    if (!backward) {
        for (int64_t pix = 0; pix < count; pix++)
            for (int64_t ch = 0, i = pix * c; ch < c; ch++, i++)
                w->out[i] = w->x[i] * neg_pow(k + alpha * window(a, a->mask, w->q + i, ch, 1,
                                                                 size), a->beta, paper);
    } else {
        /* t = g a s^(-beta-1); dx[m] = g[m] p[m] - 2 alpha beta a[m] * (t summed over the i
         * whose window holds m: the mirrored window, so t is padded hi before and lo after) */
        load(a, g, first * c, w->g, len);
        memset(w->t, 0, sizeof(float) * hi);
        memset(w->t + hi + len, 0, sizeof(float) * lo);
        for (int64_t pix = 0; pix < count; pix++)
            for (int64_t ch = 0, i = pix * c; ch < c; ch++, i++) {
                float s = k + alpha * window(a, a->mask, w->q + i, ch, 1, size);
                float p = neg_pow(s, a->beta, paper);
                w->p[i] = p;
                w->t[hi + i] = w->g[i] * w->x[i] * p / s;
            }
        for (int64_t pix = 0; pix < count; pix++)
            for (int64_t ch = 0, i = pix * c; ch < c; ch++, i++)
                w->out[i] = w->g[i] * w->p[i] -
                            c2ab * w->x[i] * window(a, a->mirror, w->t + i, ch, 1, size);
    }
    if (backward && a->relu) relu_out(w->out, w->x, len);
    store(a, out, first * c, w->out, len);
}

/* ---- channels_first: a tile of TILE pixels by all channels, vectorised over the pixels ---- */

static inline __attribute__((always_inline)) void
tile_sized(const lrn_args *a, int backward, const void *x, const void *g, void *out, int64_t task,
           scratch *w, int64_t size, int paper) {
    const int64_t c = a->c, lo = size / 2, hi = (size - 1) / 2, len = c * TILE;
    const int64_t ntiles = (a->hw + TILE - 1) / TILE, img = task / ntiles;
    const int64_t p0 = (task % ntiles) * TILE, width = a->hw - p0 < TILE ? a->hw - p0 : TILE;
    const float k = a->k, alpha = a->alpha, c2ab = 2.0f * a->alpha * a->beta;
    if (width < TILE) { /* the image's last, partial tile: keep the unused lanes finite */
        memset(w->x, 0, sizeof(float) * len);
        memset(w->g, 0, sizeof(float) * len);
    }
    for (int64_t ch = 0; ch < c; ch++) {
        load(a, x, (img * c + ch) * a->hw + p0, w->x + ch * TILE, width);
        if (backward) load(a, g, (img * c + ch) * a->hw + p0, w->g + ch * TILE, width);
    }
    if (a->relu) relu_in(w->x, len);
    memset(w->q, 0, sizeof(float) * lo * TILE);
    memset(w->q + lo * TILE + len, 0, sizeof(float) * hi * TILE);
    for (int64_t i = 0; i < len; i++) w->q[lo * TILE + i] = w->x[i] * w->x[i];
    if (!backward) {
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t j = 0, i = ch * TILE; j < TILE; j++, i++)
                w->out[i] = w->x[i] * neg_pow(k + alpha * window(a, a->mask, w->q + i, ch, TILE,
                                                                 size), a->beta, paper);
    } else { /* as in pixels() */
        memset(w->t, 0, sizeof(float) * hi * TILE);
        memset(w->t + hi * TILE + len, 0, sizeof(float) * lo * TILE);
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t j = 0, i = ch * TILE; j < TILE; j++, i++) {
                float s = k + alpha * window(a, a->mask, w->q + i, ch, TILE, size);
                float p = neg_pow(s, a->beta, paper);
                w->p[i] = p;
                w->t[hi * TILE + i] = w->g[i] * w->x[i] * p / s;
            }
        for (int64_t ch = 0; ch < c; ch++)
            for (int64_t j = 0, i = ch * TILE; j < TILE; j++, i++)
                w->out[i] = w->g[i] * w->p[i] -
                            c2ab * w->x[i] * window(a, a->mirror, w->t + i, ch, TILE, size);
    }
    if (backward && a->relu) relu_out(w->out, w->x, len);
    for (int64_t ch = 0; ch < c; ch++)
        store(a, out, (img * c + ch) * a->hw + p0, w->out + ch * TILE, width);
}

/* ---- channels_last, the paper's layer, AVX-512: one pixel at a time, 16 channels a vector ----
 *
 * Why: on an AMX/AVX-512 CPU the general loops' forward took 2.4x a kernel that only streams the
 * same values (BENCHMARKS.md): s^-0.75's square roots and division were 4 ms of its 9 ms extra,
 * the mask's loads and four passes over the scratch the rest. Here each group's squares sit in
 * a buffer with two zeros at each end, so the window needs no mask (a neighbour across a group
 * edge reads a zero), and loads, conversions, window and s^-beta stay in registers. The window
 * sums in the general loops' order and bf16 is rounded to nearest even as there; s^-0.75 comes
 * from rsqrt estimates (rsqrt16), so results are within a few float32 roundings of the general
 * loops'.
 * Used where every group's channel count is a multiple of 16 (the paper's 48 and 128). */
#if defined(__AVX512F__)
#include <immintrin.h>
#define FAST_LRN 1
#define PAD 2 /* size / 2 zeros at each end of a group's buffer (size 5) */

static inline __attribute__((always_inline)) __m512 load16(int dtype, const void *p, int64_t off) {
    if (dtype == F32) return _mm512_loadu_ps((const float *)p + off);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + off));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) void store16(int dtype, void *p, int64_t off,
                                                          __m512 v) {
    if (dtype == F32) { _mm512_storeu_ps((float *)p + off, v); return; }
    const __m512i u = _mm512_castps_si512(v), hi = _mm512_srli_epi32(u, 16);
    /* f32_to_bf16, 16 lanes: u + 0x7fff + lsb, quiet NaNs kept as NaNs */
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                 _mm512_and_si512(hi, _mm512_set1_epi32(1))));
    r = _mm512_srli_epi32(r, 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256((__m256i *)((uint16_t *)p + off), _mm512_cvtepi32_epi16(r));
}

/* the window sum at b (b[0..4] = channels ch-2 .. ch+2), in the general loops' order */
static inline __m512 window16(const float *b) {
    __m512 sum = _mm512_loadu_ps(b);
    for (int d = 1; d < 5; d++) sum = _mm512_add_ps(sum, _mm512_loadu_ps(b + d));
    return sum;
}

/* 1/sqrt(v): the CPU's 14-bit estimate and one Newton step, y (1.5 - 0.5 v y^2): about 2^-23
 * relative, a few float32 roundings from the exact value, at a fraction of sqrt's and div's cost
 * (those two cost the general loops' forward 4 of its 16 ms on an AMX CPU, BENCHMARKS.md). */
static inline __m512 rsqrt16(__m512 v) {
    const __m512 y = _mm512_rsqrt14_ps(v);
    const __m512 h = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), v), y);
    return _mm512_mul_ps(y, _mm512_fnmadd_ps(h, y, _mm512_set1_ps(1.5f)));
}

static inline __attribute__((always_inline)) void
pixels_avx512_typed(const lrn_args *a, int dtype, int backward, const void *x, const void *g,
                    void *out, int64_t first, int64_t count, scratch *w) {
    const int64_t c = a->c, cg = c / a->groups, stride = cg + 2 * PAD;
    const __m512 k = _mm512_set1_ps(a->k), alpha = _mm512_set1_ps(a->alpha);
    const __m512 c2ab = _mm512_set1_ps(2.0f * a->alpha * a->beta);
    float *q = w->q, *t = w->t; /* per group: PAD zeros, cg values, PAD zeros */
    for (int64_t gi = 0; gi < a->groups; gi++)
        for (int d = 0; d < PAD; d++) {
            q[gi * stride + d] = q[gi * stride + PAD + cg + d] = 0.0f;
            t[gi * stride + d] = t[gi * stride + PAD + cg + d] = 0.0f;
        }
    for (int64_t pix = first; pix < first + count; pix++) {
        const int64_t base = pix * c;
        for (int64_t gi = 0; gi < a->groups; gi++)
            for (int64_t j = 0; j < cg; j += 16) {
                __m512 v = load16(dtype, x, base + gi * cg + j);
                if (a->relu) v = _mm512_max_ps(_mm512_setzero_ps(), v); /* NaN: v, as relu_in */
                _mm512_storeu_ps(w->x + gi * cg + j, v);
                _mm512_storeu_ps(q + gi * stride + PAD + j, _mm512_mul_ps(v, v));
            }
        for (int64_t gi = 0; gi < a->groups; gi++)
            for (int64_t j = 0; j < cg; j += 16) {
                const int64_t i = gi * cg + j;
                __m512 s = _mm512_fmadd_ps(alpha, window16(q + gi * stride + j), k);
                /* r = s^-1/2, s^-3/4 = r^2 r^-1/2, and s^-1 = r^2: no sqrt, no division */
                __m512 r = rsqrt16(s), r2 = _mm512_mul_ps(r, r);
                __m512 p = _mm512_mul_ps(r2, rsqrt16(r)), xv = _mm512_loadu_ps(w->x + i);
                /* an overflowed window (|a| > ~1e19): s = inf, where s^-0.75 and s^-1 are 0 as
                 * the general loops compute them (the Newton step gives NaN there) */
                const __mmask16 inf = _mm512_cmp_ps_mask(s, _mm512_set1_ps(INFINITY),
                                                         _CMP_EQ_OQ);
                p = _mm512_mask_mov_ps(p, inf, _mm512_setzero_ps());
                r2 = _mm512_mask_mov_ps(r2, inf, _mm512_setzero_ps());
                if (!backward) {
                    store16(dtype, out, base + i, _mm512_mul_ps(xv, p));
                    continue;
                }
                __m512 gv = load16(dtype, g, base + i); /* t = g a s^(-beta-1), as above */
                _mm512_storeu_ps(w->g + i, gv);
                _mm512_storeu_ps(w->p + i, p);
                _mm512_storeu_ps(t + gi * stride + PAD + j,
                                 _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(gv, xv), p), r2));
            }
        if (!backward) continue;
        for (int64_t gi = 0; gi < a->groups; gi++) /* size 5: the mirrored window is the window */
            for (int64_t j = 0; j < cg; j += 16) {
                const int64_t i = gi * cg + j;
                __m512 u = window16(t + gi * stride + j);
                __m512 gp = _mm512_mul_ps(_mm512_loadu_ps(w->g + i), _mm512_loadu_ps(w->p + i));
                __m512 cx = _mm512_mul_ps(c2ab, _mm512_loadu_ps(w->x + i));
                __m512 dx = _mm512_fnmadd_ps(cx, u, gp);
                if (a->relu) /* as relu_out */
                    dx = _mm512_mask_mov_ps(dx, _mm512_cmp_ps_mask(_mm512_loadu_ps(w->x + i),
                                            _mm512_setzero_ps(), _CMP_LE_OQ), _mm512_setzero_ps());
                store16(dtype, out, base + i, dx);
            }
    }
}

static void pixels_avx512(const lrn_args *a, int backward, const void *x, const void *g,
                          void *out, int64_t first, int64_t count, scratch *w) {
    if (a->dtype == F32) pixels_avx512_typed(a, F32, backward, x, g, out, first, count, w);
    else pixels_avx512_typed(a, BF16, backward, x, g, out, first, count, w);
}
#else
#define FAST_LRN 0
#endif

/* The paper's layer (size 5, beta 0.75) gets its own copy of each loop nest, fully vectorised;
 * other settings take the general one. */
static void pixels(const lrn_args *a, int backward, const void *x, const void *g, void *out,
                   int64_t first, int64_t count, scratch *w) {
#if FAST_LRN
    if (a->size == 5 && a->beta == 0.75f && (a->c / a->groups) % 16 == 0) {
        pixels_avx512(a, backward, x, g, out, first, count, w);
        return;
    }
#endif
    if (a->size == 5 && a->beta == 0.75f)
        pixels_sized(a, backward, x, g, out, first, count, w, 5, 1);
    else
        pixels_sized(a, backward, x, g, out, first, count, w, a->size, 0);
}

static void tile(const lrn_args *a, int backward, const void *x, const void *g, void *out,
                 int64_t task, scratch *w) {
    if (a->size == 5 && a->beta == 0.75f) tile_sized(a, backward, x, g, out, task, w, 5, 1);
    else tile_sized(a, backward, x, g, out, task, w, a->size, 0);
}

/* mask[d*c + ch] for the window [ch - before, ch + after] (see lrn_args). */
static void make_mask(uint32_t *mask, int64_t c, int64_t groups, int64_t size, int64_t before) {
    const int64_t cg = c / groups;
    for (int64_t d = 0; d < size; d++)
        for (int64_t ch = 0; ch < c; ch++) {
            int64_t other = ch + d - before;
            mask[d * c + ch] = other >= 0 && other < c && other / cg == ch / cg ? ~0u : 0u;
        }
}

static int run(lrn_args *a, int channels_last, int backward, const void *x, const void *g,
               void *out, int nthreads) {
    uint32_t *masks = (uint32_t *)malloc(sizeof(uint32_t) * 2 * a->size * a->c);
    if (!masks) return -1;
    make_mask(masks, a->c, a->groups, a->size, a->size / 2);
    make_mask(masks + a->size * a->c, a->c, a->groups, a->size, (a->size - 1) / 2);
    a->mask = masks, a->mirror = masks + a->size * a->c;
    /* channels_last: runs of per_run whole pixels; channels_first: one tile per task */
    const int64_t per_run = a->c >= RUN ? 1 : RUN / a->c, npix = a->n * a->hw;
    const int64_t tasks = channels_last ? (npix + per_run - 1) / per_run
                                        : a->n * ((a->hw + TILE - 1) / TILE);
    const int64_t len = channels_last ? per_run * a->c : a->c * TILE;
    /* channels_last's fast path pads each group's squares with size - 1 zeros */
    const int64_t margin = channels_last ? a->size * a->groups : a->size * TILE;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        scratch w = {0};
        float *mem = scratch_alloc(&w, len, margin);
        failed = mem == NULL;
        /* dynamic: on a shared machine one thread is often descheduled; the other carries on */
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < tasks; t++) {
            if (!mem) continue;
            if (channels_last) {
                int64_t first = t * per_run, rest = npix - first;
                pixels(a, backward, x, g, out, first, rest < per_run ? rest : per_run, &w);
            } else {
                tile(a, backward, x, g, out, t, &w);
            }
        }
        free(mem);
    }
    free(masks);
    return failed ? -1 : 0;
}

static int check(const lrn_args *a) {
    if (a->dtype != F32 && a->dtype != BF16) return -2;
    if (a->groups < 1 || a->size < 1 || a->c % a->groups || a->n < 0 || a->hw < 0) return -3;
    return 0;
}

/* The two entry points. x, g (dL/dy) and out are contiguous in the layout given by channels_last.
 * Returns 0, or a negative code: -1 out of memory, -2 bad dtype, -3 bad shape. */
int lrn_forward(int dtype, int channels_last, const void *x, void *y, int64_t n, int64_t c,
                int64_t hw, int64_t groups, int64_t size, float alpha, float beta, float k,
                int relu, int nthreads) {
    lrn_args a = {dtype, n, c, hw, groups, size, alpha, beta, k, relu, NULL, NULL};
    int err = check(&a);
    return err ? err : run(&a, channels_last, 0, x, NULL, y, nthreads);
}

int lrn_backward(int dtype, int channels_last, const void *x, const void *g, void *dx, int64_t n,
                 int64_t c, int64_t hw, int64_t groups, int64_t size, float alpha, float beta,
                 float k, int relu, int nthreads) {
    lrn_args a = {dtype, n, c, hw, groups, size, alpha, beta, k, relu, NULL, NULL};
    int err = check(&a);
    return err ? err : run(&a, channels_last, 1, x, g, dx, nthreads);
}
