/* bfloat16 <-> float32 for the kernels, bit for bit as torch converts (c10::BFloat16), and
 * rows of either loaded as / stored from float32. NaNs are the exception: a NaN keeps its sign
 * and payload with the quiet bit set (as the CPU's vcvtneps2bf16 does), where torch's own
 * conversions give a fixed NaN (its vectorised .to(bfloat16) gave 0xFFFF here). */
#ifndef ALEXNET_BF16_H
#define ALEXNET_BF16_H
#include <stdint.h>
#include <string.h>

static inline float bf16_to_f32(uint16_t h) { /* exact: bf16 is float32's upper half */
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* dst[i] = src[off + i] as float32, from float32 (dtype 0) or bfloat16 (dtype 1) storage. A loop,
 * not memcpy: the kernels' rows are short, and a call costs. */
static inline void load_floats(int dtype, const void *src, int64_t off, float *restrict dst,
                               int64_t len) {
    if (dtype == 0) {
        const float *s = (const float *)src + off;
        for (int64_t i = 0; i < len; i++) dst[i] = s[i];
    } else {
        const uint16_t *s = (const uint16_t *)src + off;
        for (int64_t i = 0; i < len; i++) dst[i] = bf16_to_f32(s[i]);
    }
}

/* dst[off + i] = src[i], stored as float32 (dtype 0) or bfloat16 (dtype 1, rounded as above) */
static inline void store_floats(int dtype, void *dst, int64_t off, const float *restrict src,
                                int64_t len) {
    if (dtype == 0) {
        float *d = (float *)dst + off;
        for (int64_t i = 0; i < len; i++) d[i] = src[i];
    } else {
        uint16_t *d = (uint16_t *)dst + off;
        for (int64_t i = 0; i < len; i++) d[i] = f32_to_bf16(src[i]);
    }
}

#if defined(__AVX512F__)
/* 16 lanes at a time, the same conversions (load16, store16): float32 (dtype 0) or bfloat16
 * (dtype 1) storage, float32 registers. For the kernels' AVX-512 paths. */
#include <immintrin.h>

static inline __attribute__((always_inline)) __m512 load16(int dtype, const void *p, int64_t off) {
    if (dtype == 0) return _mm512_loadu_ps((const float *)p + off);
    __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)p + off));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) void store16(int dtype, void *p, int64_t off,
                                                          __m512 v) {
    if (dtype == 0) { _mm512_storeu_ps((float *)p + off, v); return; }
    const __m512i u = _mm512_castps_si512(v), hi = _mm512_srli_epi32(u, 16);
#if defined(__AVX512BF16__)
    /* The CPU's own conversion rounds to nearest even and quiets NaNs as f32_to_bf16 does, in one
     * instruction, but reads denormal inputs as zero: vectors with one (exponent bits 0, mantissa
     * not) take the integer way. Tested with integer ops: vfpclassps sees no denormal while
     * MXCSR says denormals are zero (torch.set_flush_denormal). */
    const __mmask16 denormal = _mm512_mask_test_epi32_mask(
        _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7f800000)), u, _mm512_set1_epi32(0x7fffff));
    if (!denormal) {
        _mm256_storeu_si256((__m256i *)((uint16_t *)p + off), (__m256i)_mm512_cvtneps_pbh(v));
        return;
    }
#endif
    /* f32_to_bf16, 16 lanes: u + 0x7fff + lsb, quiet NaNs kept as NaNs */
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                                 _mm512_and_si512(hi, _mm512_set1_epi32(1))));
    r = _mm512_srli_epi32(r, 16);
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256((__m256i *)((uint16_t *)p + off), _mm512_cvtepi32_epi16(r));
}
#endif
#endif
