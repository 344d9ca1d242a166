/* Memory-bound passes of CPU LoRA training in bf16, one pass each (see backend/native.py,
 * which builds and loads this file, and backend/cpu_kernels.py, which calls it; the
 * matmuls stay with torch/oneDNN).
 *
 * Every array is contiguous. bf16 values are passed as uint16_t bit patterns; arithmetic is
 * fp32 and results are rounded to bf16 to nearest even, as torch rounds. Loops run on the
 * OpenMP threads torch already uses (the library is loaded after torch, so its OpenMP calls
 * resolve to torch's libgomp and its one thread pool).
 *
 * Dropout: flat element i of a call is dropped when a 32-bit hash of i and the call's 64-bit
 * seed is below p * 2^32. The hash is two rounds of a full-avalanche 32-bit mixer
 * (lowbias32) keyed by both halves of the seed, so the drops are independent Bernoulli(p)
 * draws for every practical purpose; the backward pass recomputes the same mask from the
 * seed instead of keeping it.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef uint16_t bf16;

static inline float bf2f(bf16 h) {
    union { uint32_t u; float f; } v;
    v.u = (uint32_t)h << 16;
    return v.f;
}

static inline bf16 f2bf(float f) {
    union { uint32_t u; float f; } v;
    v.f = f;
    uint32_t u = v.u;
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (bf16)(nan ? ((u >> 16) | 0x40u) : rounded); /* NaN stays NaN */
}

static inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

/* nonzero where flat element `idx` (< 2^32) is kept */
static inline uint32_t kept(uint32_t idx, uint32_t seed_lo, uint32_t seed_hi, uint32_t threshold) {
    return mix32(mix32(idx ^ seed_lo) + seed_hi) >= threshold;
}

/* exp(x) for x <= 0 (softmax after subtracting the row maximum), vectorisable: 2^n * e^f
 * with n = round(x / ln 2), |f| <= ln(2) / 2 and a degree-6 Taylor polynomial for e^f
 * (relative error < 3e-7, far below bf16's 4e-3); x below -87 gives 0. */
static inline float exp_nonpositive(float x) {
    const float ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-06f;
    const float low = x < -87.0f ? -87.0f : x;
    const float n = __builtin_rintf(low * 1.44269504f);
    const float f = (low - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 720.0f;
    p = p * f + 1.0f / 120.0f;
    p = p * f + 1.0f / 24.0f;
    p = p * f + 1.0f / 6.0f;
    p = p * f + 0.5f;
    p = p * f + 1.0f;
    p = p * f + 1.0f;
    union { uint32_t u; float f; } scale;
    scale.u = (uint32_t)((int32_t)n + 127) << 23;
    return x <= -87.0f ? 0.0f : p * scale.f;
}

#define SEED_HALVES(seed) const uint32_t lo = (uint32_t)(seed), hi = (uint32_t)((seed) >> 32) * 0x9e3779b9u + 1u

/* out[i] = 1 where element i is kept, 0 where dropped (for tests and for checking) */
void tl_dropout_mask(int64_t n, uint64_t seed, uint32_t threshold, uint8_t *out) {
    SEED_HALVES(seed);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = (uint8_t)kept((uint32_t)i, lo, hi, threshold);
}

/* out = x with the dropped elements zeroed (no scaling: the caller scales at the r-wide end) */
void tl_dropout_copy(const bf16 *x, int64_t n, uint64_t seed, uint32_t threshold, bf16 *out) {
    SEED_HALVES(seed);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) out[i] = kept((uint32_t)i, lo, hi, threshold) ? x[i] : (bf16)0;
}

/* acc += lora where the element was kept (acc and lora bf16, the sum rounded once) */
void tl_add_kept(bf16 *acc, const bf16 *lora, int64_t n, uint64_t seed, uint32_t threshold) {
    SEED_HALVES(seed);
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float add = kept((uint32_t)i, lo, hi, threshold) ? bf2f(lora[i]) : 0.0f;
        acc[i] = f2bf(bf2f(acc[i]) + add);
    }
}

/* Cross-entropy of each row of logits[rows, vocab] (bf16) against targets[rows], and its
 * gradient written over the logits: softmax - onehot, rounded to bf16.
 * losses[row] = logsumexp(row) - row[target]. Rows whose target is outside [0, vocab) get
 * loss 0 and a zero gradient. One fp32 row buffer per thread (vocab floats). */
void tl_softmax_xent(bf16 *logits, const int64_t *targets, int64_t rows, int64_t vocab, float *losses) {
#pragma omp parallel
    {
        float *restrict e = (float *)malloc((size_t)vocab * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            bf16 *restrict row = logits + r * vocab;
            const int64_t t = targets[r];
            if (t < 0 || t >= vocab) {
                for (int64_t j = 0; j < vocab; j++) row[j] = 0;
                losses[r] = 0.0f;
                continue;
            }
            float top = -INFINITY;
#pragma omp simd reduction(max : top)
            for (int64_t j = 0; j < vocab; j++) {
                const float v = bf2f(row[j]);
                top = v > top ? v : top;
            }
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t j = 0; j < vocab; j++) {
                const float v = exp_nonpositive(bf2f(row[j]) - top);
                e[j] = v;
                sum += v;
            }
            losses[r] = top + logf(sum) - bf2f(row[t]);
            const float inv = 1.0f / sum;
            e[t] -= sum; /* (e_t - sum) / sum = p_t - 1 */
#pragma omp simd
            for (int64_t j = 0; j < vocab; j++) row[j] = f2bf(e[j] * inv);
        }
        free(e);
    }
}

/* sigmoid(v) through exp of a non-positive argument only (no overflow for any v) */
static inline float sigmoid(float v) {
    const float e = exp_nonpositive(v < 0.0f ? v : -v);
    const float inv = 1.0f / (1.0f + e);
    return v < 0.0f ? e * inv : inv;
}

/* out = silu(gate) * up, the gated MLP's activation, rounded once */
void tl_silu_mul(const bf16 *restrict gate, const bf16 *restrict up, int64_t n, bf16 *restrict out) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float g = bf2f(gate[i]);
        out[i] = f2bf(g * sigmoid(g) * bf2f(up[i]));
    }
}

/* Gradients of silu(gate) * up: grad_up = grad * silu(gate),
 * grad_gate = grad * up * sigmoid(gate) * (1 + gate * (1 - sigmoid(gate))) */
void tl_silu_mul_backward(const bf16 *restrict grad, const bf16 *restrict gate, const bf16 *restrict up, int64_t n,
                          bf16 *restrict grad_gate, bf16 *restrict grad_up) {
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float d = bf2f(grad[i]), g = bf2f(gate[i]), s = sigmoid(g);
        grad_up[i] = f2bf(d * g * s);
        grad_gate[i] = f2bf(d * bf2f(up[i]) * s * (1.0f + g * (1.0f - s)));
    }
}

/* Llama RMSNorm over the last dimension (width n) of rows x n:
 * out = weight * bf16(x * rstd), rstd[row] = 1 / sqrt(mean(x^2) + eps) (kept for the backward) */
void tl_rms_norm(const bf16 *restrict x, const bf16 *restrict weight, int64_t rows, int64_t n, float eps,
                 bf16 *restrict out, float *restrict rstd) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const bf16 *restrict xr = x + r * n;
        bf16 *restrict o = out + r * n;
        float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
        for (int64_t j = 0; j < n; j++) squares += bf2f(xr[j]) * bf2f(xr[j]);
        const float s = 1.0f / sqrtf(squares / (float)n + eps);
        rstd[r] = s;
#pragma omp simd
        for (int64_t j = 0; j < n; j++) o[j] = f2bf(bf2f(weight[j]) * bf2f(f2bf(bf2f(xr[j]) * s)));
    }
}

/* Its input gradient for a frozen weight: with g = grad * weight,
 * grad_x = rstd * g - x * rstd^3 * sum(g * x) / n */
void tl_rms_norm_backward(const bf16 *restrict grad, const bf16 *restrict x, const bf16 *restrict weight,
                          const float *restrict rstd, int64_t rows, int64_t n, bf16 *restrict grad_x) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const bf16 *restrict gr = grad + r * n, *restrict xr = x + r * n;
        bf16 *restrict o = grad_x + r * n;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < n; j++) dot += bf2f(gr[j]) * bf2f(weight[j]) * bf2f(xr[j]);
        const float s = rstd[r], c = -s * s * s * dot / (float)n;
#pragma omp simd
        for (int64_t j = 0; j < n; j++) o[j] = f2bf(s * bf2f(gr[j]) * bf2f(weight[j]) + bf2f(xr[j]) * c);
    }
}

