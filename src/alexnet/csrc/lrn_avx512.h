/* The paper's LRN in channels_last, hand-vectorised for AVX-512: part of lrn.c, which includes
 * it where its own types (lrn_args, scratch, F32, BF16) are defined; not a header to use alone.
 */

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
#define FAST_LRN 1
#define PAD 2 /* size / 2 zeros at each end of a group's buffer (size 5) */

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
