/* Memory-bound passes of CPU LoRA training in bf16, one pass each (native.py beside this
 * file builds and loads it; lora.py, mlp.py, norm.py and head_loss.py call it; the
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


/* LoRA's rank-r products, written for AVX-512 (oneDNN runs an r = 8 wide operand far
 * below its large-matmul speed, and needs the dropout mask as a separate masked copy). Streaming passes over a bf16 matrix with fp32 LoRA weights and fp32
 * accumulation. The forward pass hashes the dropout mask once (the hash of kept() above)
 * and keeps it as bits, 16 to a uint16_t (row m, bits m * ceil(K / 16) + k / 16, bit
 * k % 16); the backward passes read those bits (a NULL mask: nothing dropped). Where the
 * compiler does not target AVX-512, tl_lora_vectorized() returns 0, the functions below
 * are absent and the caller keeps torch's products. */
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#include <immintrin.h>

int tl_lora_vectorized(void) { return 1; }

static inline __m512i mix32x16(__m512i x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x7feb352du));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

/* lanes of flat elements i0 .. i0 + 15 that are kept (same hash as kept() above) */
static inline __mmask16 kept16(uint32_t i0, uint32_t lo, uint32_t hi, uint32_t threshold) {
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)i0),
                                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    __m512i h = mix32x16(_mm512_xor_si512(idx, _mm512_set1_epi32((int)lo)));
    h = mix32x16(_mm512_add_epi32(h, _mm512_set1_epi32((int)hi)));
    return _mm512_cmpge_epu32_mask(h, _mm512_set1_epi32((int)threshold));
}

static inline __mmask16 tail16(int64_t left) { return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u); }

/* 16 bf16 values (lanes outside `lanes` read as 0) as fp32 */
static inline __m512 load_bf16x16(const bf16 *p, __mmask16 lanes) {
    const __m256i h = _mm256_maskz_loadu_epi16(lanes, p);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* fp32 to bf16, round to nearest even, NaN kept a NaN (as f2bf above) */
static inline void store_bf16x16(bf16 *p, __m512 v, __mmask16 lanes) {
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    _mm256_mask_storeu_epi16(p, lanes, _mm512_cvtepi32_epi16(r));
}

/* out[m, j] = coef * sum_k w[j, k] * x[m, k] * kept(m * K + k), for j < r:
 * x [M, K] bf16, w [r, K] fp32, out [M, r] fp32 (the LoRA down-projection, and with
 * x = the output gradient and w = B^T the gradient of that projection's output).
 * threshold 0: nothing dropped; else the kept bits go to `bits` (when not NULL).
 * Rows m0 and m1 at a time (m1 == m0 for an odd last row), so each load of w serves both. */
static inline __attribute__((always_inline)) void rows_block(const bf16 *restrict x, int64_t m0, int64_t m1, int64_t K,
                                                             const float *restrict w, const int nj, uint32_t lo,
                                                             uint32_t hi, uint32_t threshold, float coef,
                                                             float *restrict out0, float *restrict out1,
                                                             uint16_t *restrict bits0, uint16_t *restrict bits1) {
    __m512 acc0[8], acc1[8];
    for (int j = 0; j < nj; j++) acc0[j] = acc1[j] = _mm512_setzero_ps();
    const bf16 *x0 = x + m0 * K, *x1 = x + m1 * K;
    for (int64_t k = 0; k < K; k += 16) {
        const __mmask16 tail = tail16(K - k);
        __mmask16 l0 = tail, l1 = tail;
        if (threshold) {
            l0 &= kept16((uint32_t)(m0 * K + k), lo, hi, threshold);
            l1 &= kept16((uint32_t)(m1 * K + k), lo, hi, threshold);
            if (bits0) {
                bits0[k / 16] = (uint16_t)l0;
                bits1[k / 16] = (uint16_t)l1;
            }
        }
        const __m512 v0 = load_bf16x16(x0 + k, l0), v1 = load_bf16x16(x1 + k, l1);
        for (int j = 0; j < nj; j++) {
            const __m512 wv = _mm512_maskz_loadu_ps(tail, w + j * K + k);
            acc0[j] = _mm512_fmadd_ps(wv, v0, acc0[j]);
            acc1[j] = _mm512_fmadd_ps(wv, v1, acc1[j]);
        }
    }
    for (int j = 0; j < nj; j++) {
        out0[j] = coef * _mm512_reduce_add_ps(acc0[j]);
        out1[j] = coef * _mm512_reduce_add_ps(acc1[j]);
    }
}

void tl_lora_rows(const bf16 *x, int64_t M, int64_t K, const float *w, int64_t r, uint64_t seed, uint32_t threshold,
                  float coef, float *out, uint16_t *bits) {
    SEED_HALVES(seed);
    const int64_t chunks = (K + 15) / 16, pairs = (M + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t m0 = 2 * p, m1 = m0 + 1 < M ? m0 + 1 : m0;
        for (int64_t j0 = 0; j0 < r; j0 += 8) {
            const int nj = r - j0 < 8 ? (int)(r - j0) : 8;
            float *o0 = out + m0 * r + j0, *o1 = out + m1 * r + j0;
            const float *wj = w + j0 * K;
            uint16_t *b0 = bits != NULL && j0 == 0 ? bits + m0 * chunks : NULL;
            uint16_t *b1 = b0 != NULL ? bits + m1 * chunks : NULL;
            switch (nj) { /* a constant nj keeps the accumulators in registers */
            case 8: rows_block(x, m0, m1, K, wj, 8, lo, hi, threshold, coef, o0, o1, b0, b1); break;
            case 4: rows_block(x, m0, m1, K, wj, 4, lo, hi, threshold, coef, o0, o1, b0, b1); break;
            default: rows_block(x, m0, m1, K, wj, nj, lo, hi, threshold, coef, o0, o1, b0, b1); break;
            }
        }
    }
}

/* out[j, f] = sum_m n[m, j] * y[m, f] * kept[m, f]: n [M, r] fp32, y [M, F] bf16, out [r, F]
 * fp32, kept = `bits` or everything (the LoRA weight gradients: B^T from the
 * down-projection and the output gradient, A from the gradient of the down-projection and
 * the dropped-out input). Columns are taken 32 at a time (a 64-byte line of each row). */
static inline __attribute__((always_inline)) void cols_block(const float *restrict n, const bf16 *restrict y, int64_t M,
                                                             int64_t F, int64_t r, int64_t f0, int64_t j0, const int nj,
                                                             const uint16_t *restrict bits, float *restrict out) {
    const int64_t chunks = (F + 15) / 16;
    const __mmask16 tail0 = tail16(F - f0), tail1 = F - f0 > 16 ? tail16(F - f0 - 16) : 0;
    __m512 acc0[8], acc1[8];
    for (int j = 0; j < nj; j++) acc0[j] = acc1[j] = _mm512_setzero_ps();
    for (int64_t m = 0; m < M; m++) {
        __mmask16 l0 = tail0, l1 = tail1;
        if (bits) {
            const uint16_t *bm = bits + m * chunks + f0 / 16;
            l0 &= bm[0];
            if (l1) l1 &= bm[1];
        }
        const __m512 y0 = load_bf16x16(y + m * F + f0, l0), y1 = load_bf16x16(y + m * F + f0 + 16, l1);
        const float *nm = n + m * r + j0;
        for (int j = 0; j < nj; j++) {
            const __m512 s = _mm512_set1_ps(nm[j]);
            acc0[j] = _mm512_fmadd_ps(s, y0, acc0[j]);
            acc1[j] = _mm512_fmadd_ps(s, y1, acc1[j]);
        }
    }
    for (int j = 0; j < nj; j++) {
        _mm512_mask_storeu_ps(out + (j0 + j) * F + f0, tail0, acc0[j]);
        if (tail1) _mm512_mask_storeu_ps(out + (j0 + j) * F + f0 + 16, tail1, acc1[j]);
    }
}

void tl_lora_cols(const float *n, const bf16 *y, int64_t M, int64_t F, int64_t r, const uint16_t *bits, float *out) {
    const int64_t blocks = (F + 31) / 32;
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < blocks; b++) {
        for (int64_t j0 = 0; j0 < r; j0 += 8) {
            const int nj = r - j0 < 8 ? (int)(r - j0) : 8;
            switch (nj) {
            case 8: cols_block(n, y, M, F, r, b * 32, j0, 8, bits, out); break;
            case 4: cols_block(n, y, M, F, r, b * 32, j0, 4, bits, out); break;
            default: cols_block(n, y, M, F, r, b * 32, j0, nj, bits, out); break;
            }
        }
    }
}

/* acc[m, f] += kept[m, f] * sum_j n[m, j] * w[j, f], rounded once to bf16: acc [M, F] bf16,
 * n [M, r] fp32, w [r, F] fp32, kept = `bits` or everything (the LoRA up-projection added
 * to the frozen layer's output, and its part of the input gradient). Two rows at a time,
 * so each load of w serves both; for r <= 8 their n values stay in registers. */
static inline __attribute__((always_inline)) void add_rows(bf16 *restrict acc, int64_t m0, int64_t m1, int64_t F,
                                                           const float *restrict n, const float *restrict w,
                                                           const int r, const uint16_t *restrict bits) {
    const int64_t chunks = (F + 15) / 16;
    __m512 c0[8], c1[8]; /* the first 8 n values of each row, broadcast once */
    for (int j = 0; j < r && j < 8; j++) {
        c0[j] = _mm512_set1_ps(n[m0 * r + j]);
        c1[j] = _mm512_set1_ps(n[m1 * r + j]);
    }
    bf16 *row0 = acc + m0 * F, *row1 = acc + m1 * F;
    for (int64_t f = 0; f < F; f += 16) {
        const __mmask16 tail = tail16(F - f);
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        for (int j = 0; j < r; j++) {
            const __m512 wv = _mm512_maskz_loadu_ps(tail, w + j * F + f);
            s0 = _mm512_fmadd_ps(j < 8 ? c0[j] : _mm512_set1_ps(n[m0 * r + j]), wv, s0);
            s1 = _mm512_fmadd_ps(j < 8 ? c1[j] : _mm512_set1_ps(n[m1 * r + j]), wv, s1);
        }
        if (bits) {
            s0 = _mm512_maskz_mov_ps(bits[m0 * chunks + f / 16], s0);
            s1 = _mm512_maskz_mov_ps(bits[m1 * chunks + f / 16], s1);
        }
        store_bf16x16(row0 + f, _mm512_add_ps(load_bf16x16(row0 + f, tail), s0), tail);
        if (m1 != m0) store_bf16x16(row1 + f, _mm512_add_ps(load_bf16x16(row1 + f, tail), s1), tail);
    }
}

void tl_lora_add(bf16 *acc, int64_t M, int64_t F, const float *n, const float *w, int64_t r, const uint16_t *bits) {
    const int64_t pairs = (M + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < pairs; p++) {
        const int64_t m0 = 2 * p, m1 = m0 + 1 < M ? m0 + 1 : m0; /* an odd last row pairs with itself */
        switch (r) { /* a constant r keeps the sums in registers */
        case 8: add_rows(acc, m0, m1, F, n, w, 8, bits); break;
        case 4: add_rows(acc, m0, m1, F, n, w, 4, bits); break;
        default: add_rows(acc, m0, m1, F, n, w, (int)r, bits); break;
        }
    }
}
#else
int tl_lora_vectorized(void) { return 0; }
#endif
