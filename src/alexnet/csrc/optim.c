/* SGD and AdamW steps for bf16 training with fp32 master weights (alexnet/masters.py).
 *
 * The forward and backward run on a bf16 copy of the weights (w16) and leave bf16 gradients (g).
 * One pass over each parameter reads g, updates the fp32 weights (p) and the optimizer's fp32
 * state exactly as torch.optim.SGD / AdamW do (torch's fused CPU kernels, same formulas), and
 * writes the new bf16 copy. Under torch.autocast the same step costs three passes more over all
 * 61M weights: the cast of every weight to bf16 in the forward, the cast of every bf16 gradient
 * to fp32 in the backward, and the optimizer's read of the fp32 gradient.
 *
 * All arrays hold n values in the same memory order (the caller checks the strides).
 * Built by alexnet/native.py with gcc -O3 -march=native -fopenmp; loaded with ctypes.
 */
#include <stdint.h>
#include <math.h>

#include "bf16.h"

/* Denormals flushed to zero (FTZ) and read as zero (DAZ) while a kernel runs, on each of its
 * threads, and the threads' previous mode restored after (they are torch's OpenMP threads too).
 * Why: late in a schedule lr * m and the moments of weights whose gradient is zero fall below
 * float32's normal range (~1e-38), which x86 computes far more slowly: AdamW's pass
 * over fc6 took 171 ms instead of 25, and the demo's last epoch ran 18% slower than its second.
 * What it changes: values below 1e-38 in the optimizer's state become 0; a weight near 1e-2
 * moves by them not at all, so the weights are the same. */
#if defined(__SSE__)
#include <xmmintrin.h>
#define FLUSH_DENORMALS 0x8040u /* MXCSR's FTZ (bit 15) and DAZ (bit 6) */
static inline unsigned flush_denormals(void) {
    unsigned old = _mm_getcsr();
    _mm_setcsr(old | FLUSH_DENORMALS);
    return old;
}
static inline void restore_denormals(unsigned old) { _mm_setcsr(old); }
#else
static inline unsigned flush_denormals(void) { return 0; }
static inline void restore_denormals(unsigned old) { (void)old; }
#endif

/* Rounding as torch's fused CPU kernels: built with -ffp-contract=off (masters.py), so that
 * a*b + c is two roundings unless written as fmaf(), as torch fuses only the weight update; the
 * constants (1 - beta, 1 - lr wd) come from the caller, computed in double as torch does. */

/* torch.optim.SGD, dampening 0, no Nesterov:
 *   d = g + wd p;   buf = d (first step) or momentum buf + d;   p -= lr buf
 * With momentum 0 there is no buffer (buf is NULL) and p -= lr d. */
int sgd_bf16(float *restrict p, float *restrict buf, const uint16_t *restrict g,
             uint16_t *restrict w16, int64_t n, float lr, float momentum, float wd, int first,
             int threads) {
#pragma omp parallel num_threads(threads)
    {
    unsigned mode = flush_denormals();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float d = bf16_to_f32(g[i]) + p[i] * wd;
        if (buf) {
            d = first ? d : buf[i] * momentum + d;
            buf[i] = d;
        }
        float w = fmaf(d, -lr, p[i]);
        p[i] = w;
        w16[i] = f32_to_bf16(w);
    }
    restore_denormals(mode);
    }
    return 0;
}

/* torch.optim.AdamW (no amsgrad), with the step's scalars from the caller:
 *   p *= decay;   m += one_minus_beta1 (g - m);   v = beta2 v + one_minus_beta2 g^2
 *   p -= step_size m / (sqrt(v) / bc2_sqrt + eps),
 * decay = 1 - lr wd, step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t), t the step
 * count after this one. */
int adamw_bf16(float *restrict p, float *restrict m, float *restrict v, const uint16_t *restrict g,
               uint16_t *restrict w16, int64_t n, float decay, float one_minus_beta1, float beta2,
               float one_minus_beta2, float eps, float step_size, float bc2_sqrt, int threads) {
#pragma omp parallel num_threads(threads)
    {
    unsigned mode = flush_denormals();
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float gi = bf16_to_f32(g[i]);
        float w = p[i] * decay;
        float mi = m[i] + one_minus_beta1 * (gi - m[i]);
        float vi = v[i] * beta2 + gi * gi * one_minus_beta2;
        m[i] = mi;
        v[i] = vi;
        w -= step_size * mi / (sqrtf(vi) / bc2_sqrt + eps);
        p[i] = w;
        w16[i] = f32_to_bf16(w);
    }
    restore_denormals(mode);
    }
    return 0;
}
