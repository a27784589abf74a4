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
 * path (lrn_avx512.h): 1.7x the general loops on an AMX CPU (BENCHMARKS.md), results within a few
 * float32 roundings of theirs. At the end, LRN and the max pooling after it in one pass (with
 * pool.h's row functions).
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
    load_floats(a->dtype, x, first * c, w->x, len);
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
        load_floats(a->dtype, g, first * c, w->g, len);
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
    store_floats(a->dtype, out, first * c, w->out, len);
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
        const int64_t off = (img * c + ch) * a->hw + p0;
        load_floats(a->dtype, x, off, w->x + ch * TILE, width);
        if (backward) load_floats(a->dtype, g, off, w->g + ch * TILE, width);
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
        store_floats(a->dtype, out, (img * c + ch) * a->hw + p0, w->out + ch * TILE,
                     width);
}

/* ---- channels_last, the paper's layer: hand-vectorised for AVX-512 (FAST_LRN), see there ---- */
#include "lrn_avx512.h"

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

/* ---- LRN then max pooling, fused (channels_last): the LRN's output never goes to memory ----
 *
 * The paper pools right after each LRN (§3.3-3.4). Apart, the LRN writes its output (conv1's:
 * 64x96x55x55) and the pooling reads it back, and in the backward the pooling writes the LRN's
 * output gradient and the LRN reads it back. Here one image band at a time, the forward computes
 * LRN rows into a ring of k rows in scratch and pools from there; the backward gathers the
 * pooling's gradient for one row into scratch and runs the LRN's backward on it. The values are
 * the separate ops' bit for bit: the same row functions, on the same rounded values. */
#include "pool.h"

static int run_fused(lrn_args *a, const pool_geom *p, int backward, const void *x,
                     const void *gy, const uint8_t *arg_in, uint8_t *arg_out, void *out,
                     int nthreads) {
    int err = check(a);
    if (err || (err = pool_check(p)) || a->n == 0) return err; /* (no images: nothing to do) */
    uint32_t *masks = (uint32_t *)malloc(sizeof(uint32_t) * 2 * a->size * a->c);
    if (!masks) return -1;
    make_mask(masks, a->c, a->groups, a->size, a->size / 2);
    make_mask(masks + a->size * a->c, a->c, a->groups, a->size, (a->size - 1) / 2);
    a->mask = masks, a->mirror = masks + a->size * a->c;
    const int64_t c = a->c, es = a->dtype == F32 ? 4 : 2, row = p->w * c;
    const int64_t per_run = c >= RUN ? 1 : RUN / c, in_img = p->h * row;
    const int64_t out_img = p->oh * p->ow * c;
    /* bands of rows per image: whole images when there are enough to share out, else more */
    const int64_t rows = backward ? p->h : p->oh, want = (2 * nthreads + a->n - 1) / a->n;
    const int64_t bands = want < rows ? want : rows, tasks = a->n * bands;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        scratch w = {0};
        float *mem = scratch_alloc(&w, per_run * c, a->size * a->groups);
        float *pmem = (float *)malloc(sizeof(float) * 2 * c);
        char *ring = (char *)malloc(es * row * (backward ? 1 : p->k));
        failed = !mem || !pmem || !ring;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; t++) {
            if (failed) continue;
            const int64_t b = t / bands, band = t % bands;
            const int64_t r0 = band * rows / bands, r1 = (band + 1) * rows / bands;
            const char *xb = (const char *)x + b * in_img * es;
            if (backward) { /* rows r0..r1 of the input: gather dL/d(LRN out), then LRN back */
                for (int64_t r = r0; r < r1; r++) {
                    pool_backward_row(p, (const char *)gy + b * out_img * es, arg_in + b * out_img,
                                      ring, r, pmem, pmem + c);
                    char *dx = (char *)out + (b * in_img + r * row) * es;
                    for (int64_t q = 0; q < p->w; q += per_run)
                        pixels(a, 1, xb + r * row * es, ring, dx, q,
                               p->w - q < per_run ? p->w - q : per_run, &w);
                }
                continue;
            }
            int64_t next = r0 * p->s; /* the next LRN row to compute into the ring */
            for (int64_t i = r0; i < r1; i++) { /* output rows */
                const void *src[16];
                for (; next <= i * p->s + p->k - 1; next++)
                    for (int64_t q = 0; q < p->w; q += per_run)
                        pixels(a, 0, xb + next * row * es, NULL, ring + (next % p->k) * row * es,
                               q, p->w - q < per_run ? p->w - q : per_run, &w);
                for (int64_t d = 0; d < p->k; d++)
                    src[d] = ring + ((i * p->s + d) % p->k) * row * es;
                pool_forward_row(p, src, (char *)out + (b * out_img + i * p->ow * c) * es,
                                 arg_out + b * out_img + i * p->ow * c, pmem, pmem + c);
            }
        }
        free(mem), free(pmem), free(ring);
    }
    free(masks);
    return failed ? -1 : 0;
}

/* y = maxpool(LRN(x)) and its argmax; dx from dL/dy and that argmax. x, y, g, dx: NHWC,
 * contiguous, x (n, h, w, c) and y (n, oh, ow, c). Returns as lrn_forward. */
int lrn_pool_forward(int dtype, const void *x, uint8_t *arg, void *y, int64_t n, int64_t c,
                     int64_t h, int64_t w, int64_t groups, int64_t size, float alpha, float beta,
                     float k, int relu, int64_t pk, int64_t ps, int nthreads) {
    lrn_args a = {dtype, n, c, h * w, groups, size, alpha, beta, k, relu, NULL, NULL};
    pool_geom p = {dtype, c, h, w, (h - pk) / ps + 1, (w - pk) / ps + 1, pk, ps};
    return run_fused(&a, &p, 0, x, NULL, NULL, arg, y, nthreads);
}

int lrn_pool_backward(int dtype, const void *x, const void *g, const uint8_t *arg, void *dx,
                      int64_t n, int64_t c, int64_t h, int64_t w, int64_t groups, int64_t size,
                      float alpha, float beta, float k, int relu, int64_t pk, int64_t ps,
                      int nthreads) {
    lrn_args a = {dtype, n, c, h * w, groups, size, alpha, beta, k, relu, NULL, NULL};
    pool_geom p = {dtype, c, h, w, (h - pk) / ps + 1, (w - pk) / ps + 1, pk, ps};
    return run_fused(&a, &p, 1, x, g, arg, NULL, dx, nthreads);
}
