/* bfloat16 <-> float32 for the kernels, bit for bit as torch converts (c10::BFloat16), and
 * rows of either loaded as / stored from float32. */
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
#endif
