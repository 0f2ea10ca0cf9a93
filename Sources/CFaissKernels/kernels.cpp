// CFaissKernels: scalar and AVX2+FMA distance kernels, the runtime dispatcher, the definitions that replace
// the 25 functions of libfaiss 1.7.3's archive member `distances_simd.cpp.o`, and the C API of
// include/steer_kernels.h.
//
// Numerics: element-wise kernels (madd, add, sub, the transposed-y distances, the dsub2 PQ tables) use
// separate multiply and add instructions in the same order as the scalar code, so both paths give
// bit-identical results. Reductions (L2sqr, inner product, L1, norm) run 32 lanes in parallel with FMA, so
// they differ from the scalar sum by rounding only (tests allow 1e-5 relative to the sum of |terms|).
// `#pragma clang fp contract(off)` keeps the compiler from fusing the scalar expressions into FMAs.

#include "steer_kernels.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>

#if defined(__x86_64__)
#include <immintrin.h>
#define STEER_HAVE_AVX2_CODE 1
#else
#define STEER_HAVE_AVX2_CODE 0
#endif

// MARK: - Version guard
//
// The symbol set and the semantics replaced here are those of faiss 1.7.3. For any other version (or no
// faiss headers, or a non-x86-64 target) nothing is replaced and faiss keeps its own functions;
// steer_kernels_compiled_for_faiss() reports 0 and the tests check that this matches the version. A
// different libfaiss.a whose member defines more symbols than ours fails the link with duplicate symbols.
#if __has_include(<faiss/Index.h>)
#include <faiss/Index.h>
#define STEER_FAISS_VERSION (FAISS_VERSION_MAJOR * 10000 + FAISS_VERSION_MINOR * 100 + FAISS_VERSION_PATCH)
#else
#define STEER_FAISS_VERSION 0
#endif

#if STEER_FAISS_VERSION == 10703 && STEER_HAVE_AVX2_CODE && !defined(STEER_KERNELS_NO_REPLACEMENT)
#define STEER_REPLACE_FAISS 1
#include <faiss/utils/distances.h>
#include <faiss/utils/utils.h>
#else
#define STEER_REPLACE_FAISS 0
#endif

#pragma clang fp contract(off)

namespace {

// MARK: - Scalar kernels
//
// The `_strict` loops add in index order: they are faiss 1.7.3's `_ref` semantics. The `_scalar`
// reductions are the fallback path; like faiss's own baseline build they let the compiler reorder the sum
// (so it can use SSE2 with several accumulators), which is why they too differ from `_strict` by rounding.

#define STEER_REORDERABLE_LOOP _Pragma("clang loop vectorize(enable) interleave(enable)")

float L2sqr_strict(const float* x, const float* y, size_t d) {
    float res = 0;
    for (size_t i = 0; i < d; i++) {
        const float t = x[i] - y[i];
        res += t * t;
    }
    return res;
}

float inner_product_strict(const float* x, const float* y, size_t d) {
    float res = 0;
    for (size_t i = 0; i < d; i++) res += x[i] * y[i];
    return res;
}

float L1_strict(const float* x, const float* y, size_t d) {
    float res = 0;
    for (size_t i = 0; i < d; i++) res += std::fabs(x[i] - y[i]);
    return res;
}

float Linf_scalar(const float* x, const float* y, size_t d) {
    float res = 0;
    for (size_t i = 0; i < d; i++) res = std::fmax(res, std::fabs(x[i] - y[i]));
    return res;
}

float norm_L2sqr_strict(const float* x, size_t d) {
    float res = 0;
    for (size_t i = 0; i < d; i++) res += x[i] * x[i];
    return res;
}

float L2sqr_scalar(const float* x, const float* y, size_t d) {
    float res = 0;
    STEER_REORDERABLE_LOOP
    for (size_t i = 0; i < d; i++) {
        const float t = x[i] - y[i];
        res += t * t;
    }
    return res;
}

float inner_product_scalar(const float* x, const float* y, size_t d) {
    float res = 0;
    STEER_REORDERABLE_LOOP
    for (size_t i = 0; i < d; i++) res += x[i] * y[i];
    return res;
}

float L1_scalar(const float* x, const float* y, size_t d) {
    float res = 0;
    STEER_REORDERABLE_LOOP
    for (size_t i = 0; i < d; i++) res += std::fabs(x[i] - y[i]);
    return res;
}

float norm_L2sqr_scalar(const float* x, size_t d) {
    float res = 0;
    STEER_REORDERABLE_LOOP
    for (size_t i = 0; i < d; i++) res += x[i] * x[i];
    return res;
}

/// faiss's fvec_norm_L2sqr_ref accumulates in double.
float norm_L2sqr_ref(const float* x, size_t d) {
    double res = 0;
    for (size_t i = 0; i < d; i++) res += x[i] * x[i];
    return float(res);
}

/// Index of the first smallest of v[0 ..< n]; 0 when n == 0 or nothing is below +inf.
size_t argmin_first(const float* v, size_t n) {
    size_t best = 0;
    float best_value = HUGE_VALF;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < best_value) {
            best_value = v[i];
            best = i;
        }
    }
    return best;
}

void L2sqr_ny_scalar(float* dis, const float* x, const float* y, size_t d, size_t ny) {
    for (size_t i = 0; i < ny; i++) dis[i] = L2sqr_scalar(x, y + i * d, d);
}

void inner_products_ny_scalar(float* ip, const float* x, const float* y, size_t d, size_t ny) {
    for (size_t i = 0; i < ny; i++) ip[i] = inner_product_scalar(x, y + i * d, d);
}

void L2sqr_ny_strict(float* dis, const float* x, const float* y, size_t d, size_t ny) {
    for (size_t i = 0; i < ny; i++) dis[i] = L2sqr_strict(x, y + i * d, d);
}

void inner_products_ny_strict(float* ip, const float* x, const float* y, size_t d, size_t ny) {
    for (size_t i = 0; i < ny; i++) ip[i] = inner_product_strict(x, y + i * d, d);
}

void L2sqr_ny_y_transposed_scalar(float* dis, const float* x, const float* y, const float* y_sqlen, size_t d,
                                  size_t d_offset, size_t ny) {
    const float x_sqlen = norm_L2sqr_strict(x, d);
    for (size_t i = 0; i < ny; i++) {
        float dp = 0;
        for (size_t j = 0; j < d; j++) dp += x[j] * y[i + j * d_offset];
        dis[i] = x_sqlen + y_sqlen[i] - 2 * dp;
    }
}

void madd_scalar(size_t n, const float* a, float bf, const float* b, float* c) {
    for (size_t i = 0; i < n; i++) c[i] = a[i] + bf * b[i];
}

int madd_and_argmin_scalar(size_t n, const float* a, float bf, const float* b, float* c) {
    float vmin = 1e20f;
    int imin = -1;
    for (size_t i = 0; i < n; i++) {
        c[i] = a[i] + bf * b[i];
        if (c[i] < vmin) {
            vmin = c[i];
            imin = int(i);
        }
    }
    return imin;
}

void add_scalar(size_t d, const float* a, const float* b, float* c) {
    for (size_t i = 0; i < d; i++) c[i] = a[i] + b[i];
}

void add_constant_scalar(size_t d, const float* a, float b, float* c) {
    for (size_t i = 0; i < d; i++) c[i] = a[i] + b;
}

void sub_scalar(size_t d, const float* a, const float* b, float* c) {
    for (size_t i = 0; i < d; i++) c[i] = a[i] - b[i];
}

void PQ_dis_tables_dsub2_scalar(size_t d, size_t ksub, const float* centroids, size_t nx, const float* x,
                                bool is_inner_product, float* dis_tables) {
    const size_t M = d / 2;
    for (size_t i = 0; i < nx; i++) {
        for (size_t m = 0; m < M; m++) {
            const float x0 = x[i * d + 2 * m];
            const float x1 = x[i * d + 2 * m + 1];
            const float* c = centroids + m * ksub * 2;
            float* out = dis_tables + (i * M + m) * ksub;
            for (size_t k = 0; k < ksub; k++) {
                const float c0 = c[2 * k];
                const float c1 = c[2 * k + 1];
                if (is_inner_product) {
                    out[k] = x0 * c0 + x1 * c1;
                } else {
                    const float t0 = x0 - c0;
                    const float t1 = x1 - c1;
                    out[k] = t0 * t0 + t1 * t1;
                }
            }
        }
    }
}

// MARK: - AVX2+FMA kernels

#if STEER_HAVE_AVX2_CODE
#define STEER_AVX2 __attribute__((target("avx2,fma")))

/// Lanes [8 - r, 16 - r) of this table mask the first r lanes of a vector.
alignas(64) const int32_t kTailMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/// Mask selecting the first r (0 ... 8) lanes.
STEER_AVX2 inline __m256i tail_mask(size_t r) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kTailMask + 8 - r));
}

/// Loads the first r (< 8) floats of p, zeros elsewhere; never touches memory past p + r.
STEER_AVX2 inline __m256 load_tail(const float* p, __m256i mask) { return _mm256_maskload_ps(p, mask); }

STEER_AVX2 inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

STEER_AVX2 inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

STEER_AVX2 inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

// Reduction operations: step folds one vector pair into an accumulator; merge/finish combine accumulators.
struct OpL2 {
    STEER_AVX2 static __m256 step(__m256 acc, __m256 x, __m256 y) {
        const __m256 t = _mm256_sub_ps(x, y);
        return _mm256_fmadd_ps(t, t, acc);
    }
    STEER_AVX2 static __m256 merge(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
    STEER_AVX2 static float finish(__m256 v) { return hsum(v); }
};
struct OpIP {
    STEER_AVX2 static __m256 step(__m256 acc, __m256 x, __m256 y) { return _mm256_fmadd_ps(x, y, acc); }
    STEER_AVX2 static __m256 merge(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
    STEER_AVX2 static float finish(__m256 v) { return hsum(v); }
};
struct OpL1 {
    STEER_AVX2 static __m256 step(__m256 acc, __m256 x, __m256 y) {
        return _mm256_add_ps(acc, abs_ps(_mm256_sub_ps(x, y)));
    }
    STEER_AVX2 static __m256 merge(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
    STEER_AVX2 static float finish(__m256 v) { return hsum(v); }
};
struct OpLinf {
    // Accumulators start at 0 and masked-off lanes load 0, so they never raise the maximum.
    STEER_AVX2 static __m256 step(__m256 acc, __m256 x, __m256 y) {
        return _mm256_max_ps(acc, abs_ps(_mm256_sub_ps(x, y)));
    }
    STEER_AVX2 static __m256 merge(__m256 a, __m256 b) { return _mm256_max_ps(a, b); }
    STEER_AVX2 static float finish(__m256 v) { return hmax(v); }
};

/// Reduces x and y (each size d) with Op: four independent accumulators over 32 floats per iteration,
/// then 8 at a time, then a masked load for the last d % 8.
template <class Op>
STEER_AVX2 inline float reduce_avx2(const float* x, const float* y, size_t d) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= d; i += 32) {
        a0 = Op::step(a0, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i));
        a1 = Op::step(a1, _mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8));
        a2 = Op::step(a2, _mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16));
        a3 = Op::step(a3, _mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24));
    }
    for (; i + 8 <= d; i += 8) a0 = Op::step(a0, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i));
    if (i < d) {
        const __m256i mask = tail_mask(d - i);
        a1 = Op::step(a1, load_tail(x + i, mask), load_tail(y + i, mask));
    }
    return Op::finish(Op::merge(Op::merge(a0, a1), Op::merge(a2, a3)));
}

STEER_AVX2 float L2sqr_avx2(const float* x, const float* y, size_t d) { return reduce_avx2<OpL2>(x, y, d); }
STEER_AVX2 float inner_product_avx2(const float* x, const float* y, size_t d) {
    return reduce_avx2<OpIP>(x, y, d);
}
STEER_AVX2 float L1_avx2(const float* x, const float* y, size_t d) { return reduce_avx2<OpL1>(x, y, d); }
STEER_AVX2 float Linf_avx2(const float* x, const float* y, size_t d) { return reduce_avx2<OpLinf>(x, y, d); }
STEER_AVX2 float norm_L2sqr_avx2(const float* x, size_t d) { return reduce_avx2<OpIP>(x, x, d); }

STEER_AVX2 void L2sqr_ny_avx2(float* dis, const float* x, const float* y, size_t d, size_t ny) {
    for (size_t i = 0; i < ny; i++) dis[i] = reduce_avx2<OpL2>(x, y + i * d, d);
}

STEER_AVX2 void inner_products_ny_avx2(float* ip, const float* x, const float* y, size_t d, size_t ny) {
    for (size_t i = 0; i < ny; i++) ip[i] = reduce_avx2<OpIP>(x, y + i * d, d);
}

/// Eight y vectors per step: component j of y_i is contiguous over i, so each step is one load per j.
/// Same operation order as the scalar code (mul, then add, over j), hence bit-identical results.
STEER_AVX2 void L2sqr_ny_y_transposed_avx2(float* dis, const float* x, const float* y, const float* y_sqlen,
                                           size_t d, size_t d_offset, size_t ny) {
    const float x_sqlen = norm_L2sqr_strict(x, d);
    const __m256 vx_sqlen = _mm256_set1_ps(x_sqlen);
    const __m256 two = _mm256_set1_ps(2.0f);
    size_t i = 0;
    for (; i + 8 <= ny; i += 8) {
        __m256 dp = _mm256_setzero_ps();
        for (size_t j = 0; j < d; j++) {
            dp = _mm256_add_ps(dp, _mm256_mul_ps(_mm256_set1_ps(x[j]), _mm256_loadu_ps(y + i + j * d_offset)));
        }
        const __m256 r = _mm256_sub_ps(_mm256_add_ps(vx_sqlen, _mm256_loadu_ps(y_sqlen + i)), _mm256_mul_ps(two, dp));
        _mm256_storeu_ps(dis + i, r);
    }
    if (i < ny) {
        const __m256i mask = tail_mask(ny - i);
        __m256 dp = _mm256_setzero_ps();
        for (size_t j = 0; j < d; j++) {
            dp = _mm256_add_ps(dp, _mm256_mul_ps(_mm256_set1_ps(x[j]), load_tail(y + i + j * d_offset, mask)));
        }
        const __m256 r =
            _mm256_sub_ps(_mm256_add_ps(vx_sqlen, load_tail(y_sqlen + i, mask)), _mm256_mul_ps(two, dp));
        _mm256_maskstore_ps(dis + i, mask, r);
    }
}

STEER_AVX2 void madd_avx2(size_t n, const float* a, float bf, const float* b, float* c) {
    const __m256 vb = _mm256_set1_ps(bf);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(c + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_mul_ps(vb, _mm256_loadu_ps(b + i))));
    }
    if (i < n) {
        const __m256i mask = tail_mask(n - i);
        _mm256_maskstore_ps(c + i, mask,
                            _mm256_add_ps(load_tail(a + i, mask), _mm256_mul_ps(vb, load_tail(b + i, mask))));
    }
}

/// Per-lane minimum and its first index, then the smallest index among lanes holding the overall minimum:
/// the same answer as the scalar strict `<` scan (values must be below 1e20; NaN never wins).
STEER_AVX2 int madd_and_argmin_avx2(size_t n, const float* a, float bf, const float* b, float* c) {
    const __m256 vb = _mm256_set1_ps(bf);
    __m256 vmin = _mm256_set1_ps(1e20f);
    __m256i imin = _mm256_set1_epi32(-1);
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i eight = _mm256_set1_epi32(8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_mul_ps(vb, _mm256_loadu_ps(b + i)));
        _mm256_storeu_ps(c + i, v);
        const __m256 lt = _mm256_cmp_ps(v, vmin, _CMP_LT_OQ);
        vmin = _mm256_blendv_ps(vmin, v, lt);
        imin = _mm256_blendv_epi8(imin, idx, _mm256_castps_si256(lt));
        idx = _mm256_add_epi32(idx, eight);
    }
    if (i < n) {
        const __m256i mask = tail_mask(n - i);
        const __m256 v = _mm256_add_ps(load_tail(a + i, mask), _mm256_mul_ps(vb, load_tail(b + i, mask)));
        _mm256_maskstore_ps(c + i, mask, v);
        const __m256 lt = _mm256_and_ps(_mm256_cmp_ps(v, vmin, _CMP_LT_OQ), _mm256_castsi256_ps(mask));
        vmin = _mm256_blendv_ps(vmin, v, lt);
        imin = _mm256_blendv_epi8(imin, idx, _mm256_castps_si256(lt));
    }
    alignas(32) float mins[8];
    alignas(32) int32_t idxs[8];
    _mm256_store_ps(mins, vmin);
    _mm256_store_si256(reinterpret_cast<__m256i*>(idxs), imin);
    float best = 1e20f;
    int best_index = -1;
    for (int l = 0; l < 8; l++) {
        if (idxs[l] < 0) continue;
        if (mins[l] < best || (mins[l] == best && idxs[l] < best_index)) {
            best = mins[l];
            best_index = idxs[l];
        }
    }
    return best_index;
}

/// Element-wise binary operation over d floats; Op::apply(a, b) on vectors.
template <class Op>
STEER_AVX2 inline void elementwise_avx2(size_t d, const float* a, const float* b, float* c) {
    size_t i = 0;
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(c + i, Op::apply(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    if (i < d) {
        const __m256i mask = tail_mask(d - i);
        _mm256_maskstore_ps(c + i, mask, Op::apply(load_tail(a + i, mask), load_tail(b + i, mask)));
    }
}
struct OpAdd {
    STEER_AVX2 static __m256 apply(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
};
struct OpSub {
    STEER_AVX2 static __m256 apply(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
};

STEER_AVX2 void add_avx2(size_t d, const float* a, const float* b, float* c) { elementwise_avx2<OpAdd>(d, a, b, c); }
STEER_AVX2 void sub_avx2(size_t d, const float* a, const float* b, float* c) { elementwise_avx2<OpSub>(d, a, b, c); }

STEER_AVX2 void add_constant_avx2(size_t d, const float* a, float b, float* c) {
    const __m256 vb = _mm256_set1_ps(b);
    size_t i = 0;
    for (; i + 8 <= d; i += 8) _mm256_storeu_ps(c + i, _mm256_add_ps(_mm256_loadu_ps(a + i), vb));
    if (i < d) {
        const __m256i mask = tail_mask(d - i);
        _mm256_maskstore_ps(c + i, mask, _mm256_add_ps(load_tail(a + i, mask), vb));
    }
}

/// Eight centroids per step: two loads of four interleaved (c0, c1) pairs, the per-pair terms, a
/// horizontal add of adjacent lanes and a 64-bit lane permute to restore centroid order. Each output is
/// t0 + t1 of the same products as the scalar code, hence bit-identical.
STEER_AVX2 void PQ_dis_tables_dsub2_avx2(size_t d, size_t ksub, const float* centroids, size_t nx, const float* x,
                                         bool is_inner_product, float* dis_tables) {
    const size_t M = d / 2;
    for (size_t i = 0; i < nx; i++) {
        for (size_t m = 0; m < M; m++) {
            const float x0 = x[i * d + 2 * m];
            const float x1 = x[i * d + 2 * m + 1];
            const __m256 vx = _mm256_setr_ps(x0, x1, x0, x1, x0, x1, x0, x1);
            const float* c = centroids + m * ksub * 2;
            float* out = dis_tables + (i * M + m) * ksub;
            size_t k = 0;
            for (; k + 8 <= ksub; k += 8) {
                const __m256 ca = _mm256_loadu_ps(c + 2 * k);
                const __m256 cb = _mm256_loadu_ps(c + 2 * k + 8);
                __m256 ta, tb;
                if (is_inner_product) {
                    ta = _mm256_mul_ps(vx, ca);
                    tb = _mm256_mul_ps(vx, cb);
                } else {
                    const __m256 da = _mm256_sub_ps(vx, ca);
                    const __m256 db = _mm256_sub_ps(vx, cb);
                    ta = _mm256_mul_ps(da, da);
                    tb = _mm256_mul_ps(db, db);
                }
                // hadd lanes: [a0 a1 b0 b1 | a2 a3 b2 b3] (in centroid units); permute to [a0..a3 b0..b3].
                const __m256 h = _mm256_hadd_ps(ta, tb);
                const __m256 r = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(h), 0xD8));
                _mm256_storeu_ps(out + k, r);
            }
            for (; k < ksub; k++) {
                const float c0 = c[2 * k];
                const float c1 = c[2 * k + 1];
                if (is_inner_product) {
                    out[k] = x0 * c0 + x1 * c1;
                } else {
                    const float t0 = x0 - c0;
                    const float t1 = x1 - c1;
                    out[k] = t0 * t0 + t1 * t1;
                }
            }
        }
    }
}
#endif  // STEER_HAVE_AVX2_CODE

// MARK: - AVX-512 reductions
//
// An opt-in tier (STEER_FAISS_KERNELS=avx512): the five reductions (and the *_ny loops built on them)
// with 16-lane registers, four accumulators over 64 floats per iteration, then 16 at a time, then one
// masked load for the last d % 16 (masked-off lanes read nothing and count as 0). The element-wise
// kernels stay AVX2 on this tier. Results differ from the other paths by rounding only. Not the default:
// on this machine's CPU it measured the same as AVX2 for HNSW at 64-d, 4-10% slower for a 64-d Flat scan
// (bandwidth-bound), and 7% faster for a cache-resident 768-d Flat scan (docs/benchmarks.md).

#if STEER_HAVE_AVX2_CODE
#define STEER_AVX512 __attribute__((target("avx512f,avx2,fma")))

struct Op512L2 {
    STEER_AVX512 static __m512 step(__m512 acc, __m512 x, __m512 y) {
        const __m512 t = _mm512_sub_ps(x, y);
        return _mm512_fmadd_ps(t, t, acc);
    }
    STEER_AVX512 static __m512 merge(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
    STEER_AVX512 static float finish(__m512 v) { return _mm512_reduce_add_ps(v); }
};
struct Op512IP {
    STEER_AVX512 static __m512 step(__m512 acc, __m512 x, __m512 y) { return _mm512_fmadd_ps(x, y, acc); }
    STEER_AVX512 static __m512 merge(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
    STEER_AVX512 static float finish(__m512 v) { return _mm512_reduce_add_ps(v); }
};
struct Op512L1 {
    STEER_AVX512 static __m512 step(__m512 acc, __m512 x, __m512 y) {
        return _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(x, y)));
    }
    STEER_AVX512 static __m512 merge(__m512 a, __m512 b) { return _mm512_add_ps(a, b); }
    STEER_AVX512 static float finish(__m512 v) { return _mm512_reduce_add_ps(v); }
};
struct Op512Linf {
    // Accumulators start at 0 and masked-off lanes load 0, so they never raise the maximum.
    STEER_AVX512 static __m512 step(__m512 acc, __m512 x, __m512 y) {
        return _mm512_max_ps(acc, _mm512_abs_ps(_mm512_sub_ps(x, y)));
    }
    STEER_AVX512 static __m512 merge(__m512 a, __m512 b) { return _mm512_max_ps(a, b); }
    STEER_AVX512 static float finish(__m512 v) { return _mm512_reduce_max_ps(v); }
};

template <class Op>
STEER_AVX512 inline float reduce_avx512(const float* x, const float* y, size_t d) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= d; i += 64) {
        a0 = Op::step(a0, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i));
        a1 = Op::step(a1, _mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16));
        a2 = Op::step(a2, _mm512_loadu_ps(x + i + 32), _mm512_loadu_ps(y + i + 32));
        a3 = Op::step(a3, _mm512_loadu_ps(x + i + 48), _mm512_loadu_ps(y + i + 48));
    }
    for (; i + 16 <= d; i += 16) a0 = Op::step(a0, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i));
    if (i < d) {
        const __mmask16 mask = __mmask16((1u << (d - i)) - 1);
        a1 = Op::step(a1, _mm512_maskz_loadu_ps(mask, x + i), _mm512_maskz_loadu_ps(mask, y + i));
    }
    return Op::finish(Op::merge(Op::merge(a0, a1), Op::merge(a2, a3)));
}

STEER_AVX512 float L2sqr_avx512(const float* x, const float* y, size_t d) { return reduce_avx512<Op512L2>(x, y, d); }
STEER_AVX512 float inner_product_avx512(const float* x, const float* y, size_t d) {
    return reduce_avx512<Op512IP>(x, y, d);
}
STEER_AVX512 float L1_avx512(const float* x, const float* y, size_t d) { return reduce_avx512<Op512L1>(x, y, d); }
STEER_AVX512 float Linf_avx512(const float* x, const float* y, size_t d) {
    return reduce_avx512<Op512Linf>(x, y, d);
}
STEER_AVX512 float norm_L2sqr_avx512(const float* x, size_t d) { return reduce_avx512<Op512IP>(x, x, d); }

STEER_AVX512 void L2sqr_ny_avx512(float* dis, const float* x, const float* y, size_t d, size_t ny) {
    for (size_t i = 0; i < ny; i++) dis[i] = reduce_avx512<Op512L2>(x, y + i * d, d);
}

STEER_AVX512 void inner_products_ny_avx512(float* ip, const float* x, const float* y, size_t d, size_t ny) {
    for (size_t i = 0; i < ny; i++) ip[i] = reduce_avx512<Op512IP>(x, y + i * d, d);
}
#endif  // STEER_HAVE_AVX2_CODE

// MARK: - Dispatcher state
//
// One atomic word, read with a relaxed load on every call, holds all dispatcher state: whether it has been
// resolved, whether the scalar kernels are in force, whether calls are counted, and the two facts found
// at resolution (CPU has AVX2+FMA; scalar is the default). Resolution (CPU check, environment variable)
// runs once under std::call_once and publishes everything with one fetch_or, so no reader can see a
// resolved word without those facts.

constexpr unsigned kResolved = 1;
constexpr unsigned kScalar = 2;
constexpr unsigned kCounting = 4;
constexpr unsigned kCpuHasAvx2 = 8;
constexpr unsigned kDefaultScalar = 16;
constexpr unsigned kCpuHasAvx512 = 32;
constexpr unsigned kWantAvx512 = 64;

/// Kernel tiers: scalar, AVX2+FMA, and AVX-512 reductions (with the AVX2 element-wise kernels).
constexpr int kTierScalar = 0;
constexpr int kTierAvx2 = 1;
constexpr int kTierAvx512 = 2;

std::atomic<unsigned> g_mode{0};
std::atomic<unsigned long long> g_calls{0};
std::once_flag g_resolve_once;

bool detect_avx2() {
#if STEER_HAVE_AVX2_CODE
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

bool detect_avx512() {
#if STEER_HAVE_AVX2_CODE
    __builtin_cpu_init();
    return detect_avx2() && __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

__attribute__((noinline)) unsigned resolve_mode() {
    std::call_once(g_resolve_once, [] {
        const bool cpu_has_avx2 = detect_avx2();
        const bool cpu_has_avx512 = detect_avx512();
        const char* env = std::getenv("STEER_FAISS_KERNELS");
        const bool env_scalar = env != nullptr && std::strcmp(env, "scalar") == 0;
        const bool env_avx512 = env != nullptr && std::strcmp(env, "avx512") == 0;
        const bool default_scalar = !cpu_has_avx2 || env_scalar;
        g_mode.fetch_or(kResolved | (cpu_has_avx2 ? kCpuHasAvx2 : 0) | (cpu_has_avx512 ? kCpuHasAvx512 : 0) |
                            (env_avx512 ? kWantAvx512 : 0) | (default_scalar ? kScalar | kDefaultScalar : 0),
                        std::memory_order_acq_rel);
    });
    return g_mode.load(std::memory_order_acquire);
}

inline unsigned current_mode() {
    const unsigned m = g_mode.load(std::memory_order_relaxed);
    return __builtin_expect(m & kResolved, 1) ? m : resolve_mode();
}

/// The tier the dispatcher runs for mode word m.
inline int mode_tier(unsigned m) {
    if (m & kScalar) return kTierScalar;
    return (m & kCpuHasAvx512) && (m & kWantAvx512) ? kTierAvx512 : kTierAvx2;
}

/// The dispatcher's choice for one faiss call; counts it when counting is on.
[[maybe_unused]] inline int entry_tier() {
    const unsigned m = current_mode();
    if (__builtin_expect(m & kCounting, 0)) g_calls.fetch_add(1, std::memory_order_relaxed);
    return mode_tier(m);
}

/// Counts a call of a faiss entry point that does not dispatch (the `_ref` variants).
[[maybe_unused]] inline void entry_note() {
    if (__builtin_expect(current_mode() & kCounting, 0)) g_calls.fetch_add(1, std::memory_order_relaxed);
}

/// The choice for a test wrapper (never counted): the asked tier, or the best one below it the CPU has.
inline int path_tier(steer_kernels_path path) {
    const unsigned m = current_mode();
    switch (path) {
    case STEER_KERNELS_PATH_SCALAR: return kTierScalar;
    case STEER_KERNELS_PATH_AVX2: return (m & kCpuHasAvx2) ? kTierAvx2 : kTierScalar;
    case STEER_KERNELS_PATH_AVX512:
        return (m & kCpuHasAvx512) ? kTierAvx512 : (m & kCpuHasAvx2) ? kTierAvx2 : kTierScalar;
    case STEER_KERNELS_PATH_DISPATCH: break;
    }
    return mode_tier(m);
}

// STEER_PICK runs the AVX2 kernel on the AVX2 and AVX-512 tiers; STEER_PICK_WIDE (the reductions) runs
// the AVX-512 kernel on the AVX-512 tier.
#if STEER_HAVE_AVX2_CODE
#define STEER_PICK(tier, name, ...) ((tier) >= kTierAvx2 ? name##_avx2(__VA_ARGS__) : name##_scalar(__VA_ARGS__))
#define STEER_PICK_WIDE(tier, name, ...)                                                                     \
    ({                                                                                                       \
        const int steer_tier_ = (tier);                                                                      \
        steer_tier_ >= kTierAvx512 ? name##_avx512(__VA_ARGS__) : STEER_PICK(steer_tier_, name, __VA_ARGS__); \
    })
#else
#define STEER_PICK(tier, name, ...) ((void)(tier), name##_scalar(__VA_ARGS__))
#define STEER_PICK_WIDE(tier, name, ...) STEER_PICK(tier, name, __VA_ARGS__)
#endif

size_t L2sqr_ny_nearest_any(int tier, float* tmp, const float* x, const float* y, size_t d, size_t ny) {
    STEER_PICK_WIDE(tier, L2sqr_ny, tmp, x, y, d, ny);
    return argmin_first(tmp, ny);
}

size_t L2sqr_ny_nearest_strict(float* tmp, const float* x, const float* y, size_t d, size_t ny) {
    L2sqr_ny_strict(tmp, x, y, d, ny);
    return argmin_first(tmp, ny);
}

size_t L2sqr_ny_nearest_y_transposed_any(int tier, float* tmp, const float* x, const float* y,
                                         const float* y_sqlen, size_t d, size_t d_offset, size_t ny) {
    STEER_PICK(tier, L2sqr_ny_y_transposed, tmp, x, y, y_sqlen, d, d_offset, ny);
    return argmin_first(tmp, ny);
}

// Mangled names of the replaced functions, as `nm` prints them for the archive member.
const char* const kReplacedSymbols[] = {
    "_ZN5faiss10fvec_L2sqrEPKfS1_m",
    "_ZN5faiss11fvec_L1_refEPKfS1_m",
    "_ZN5faiss13fvec_L2sqr_nyEPfPKfS2_mm",
    "_ZN5faiss13fvec_Linf_refEPKfS1_m",
    "_ZN5faiss14fvec_L2sqr_refEPKfS1_m",
    "_ZN5faiss15fvec_norm_L2sqrEPKfm",
    "_ZN5faiss17fvec_L2sqr_ny_refEPfPKfS2_mm",
    "_ZN5faiss18fvec_inner_productEPKfS1_m",
    "_ZN5faiss19fvec_norm_L2sqr_refEPKfm",
    "_ZN5faiss20fvec_madd_and_argminEmPKffS1_Pf",
    "_ZN5faiss21fvec_L2sqr_ny_nearestEPfPKfS2_mm",
    "_ZN5faiss22fvec_inner_product_refEPKfS1_m",
    "_ZN5faiss22fvec_inner_products_nyEPfPKfS2_mm",
    "_ZN5faiss25fvec_L2sqr_ny_nearest_refEPfPKfS2_mm",
    "_ZN5faiss26fvec_inner_products_ny_refEPfPKfS2_mm",
    "_ZN5faiss27compute_PQ_dis_tables_dsub2EmmPKfmS1_bPf",
    "_ZN5faiss30fvec_L2sqr_ny_y_transposed_refEPfPKfS2_S2_mmm",
    "_ZN5faiss34fvec_L2sqr_ny_nearest_y_transposedEPfPKfS2_S2_mmm",
    "_ZN5faiss38fvec_L2sqr_ny_nearest_y_transposed_refEPfPKfS2_S2_mmm",
    "_ZN5faiss7fvec_L1EPKfS1_m",
    "_ZN5faiss8fvec_addEmPKfS1_Pf",
    "_ZN5faiss8fvec_addEmPKffPf",
    "_ZN5faiss8fvec_subEmPKfS1_Pf",
    "_ZN5faiss9fvec_LinfEPKfS1_m",
    "_ZN5faiss9fvec_maddEmPKffS1_Pf",
};

}  // namespace

// MARK: - faiss replacements
//
// Functions declared in faiss's headers are defined with qualified names: a qualified definition must
// match an earlier declaration, so a changed signature is a compile error rather than a new overload. The
// `_ref` functions are not in the installed headers; they are declared here with the signatures the
// archive's mangled names spell, and the test suite compares the mangled names with the archive member.

#if STEER_REPLACE_FAISS
namespace faiss {
float fvec_L2sqr_ref(const float* x, const float* y, size_t d);
float fvec_inner_product_ref(const float* x, const float* y, size_t d);
float fvec_L1_ref(const float* x, const float* y, size_t d);
float fvec_Linf_ref(const float* x, const float* y, size_t d);
float fvec_norm_L2sqr_ref(const float* x, size_t d);
void fvec_L2sqr_ny_ref(float* dis, const float* x, const float* y, size_t d, size_t ny);
void fvec_inner_products_ny_ref(float* ip, const float* x, const float* y, size_t d, size_t ny);
size_t fvec_L2sqr_ny_nearest_ref(float* tmp, const float* x, const float* y, size_t d, size_t ny);
void fvec_L2sqr_ny_y_transposed_ref(float* dis, const float* x, const float* y, const float* y_sqlen, size_t d,
                                    size_t d_offset, size_t ny);
size_t fvec_L2sqr_ny_nearest_y_transposed_ref(float* tmp, const float* x, const float* y, const float* y_sqlen,
                                              size_t d, size_t d_offset, size_t ny);
}  // namespace faiss

float faiss::fvec_L2sqr(const float* x, const float* y, size_t d) {
    return STEER_PICK_WIDE(entry_tier(), L2sqr, x, y, d);
}
float faiss::fvec_inner_product(const float* x, const float* y, size_t d) {
    return STEER_PICK_WIDE(entry_tier(), inner_product, x, y, d);
}
float faiss::fvec_L1(const float* x, const float* y, size_t d) { return STEER_PICK_WIDE(entry_tier(), L1, x, y, d); }
float faiss::fvec_Linf(const float* x, const float* y, size_t d) {
    return STEER_PICK_WIDE(entry_tier(), Linf, x, y, d);
}
float faiss::fvec_norm_L2sqr(const float* x, size_t d) { return STEER_PICK_WIDE(entry_tier(), norm_L2sqr, x, d); }
void faiss::fvec_L2sqr_ny(float* dis, const float* x, const float* y, size_t d, size_t ny) {
    STEER_PICK_WIDE(entry_tier(), L2sqr_ny, dis, x, y, d, ny);
}
void faiss::fvec_inner_products_ny(float* ip, const float* x, const float* y, size_t d, size_t ny) {
    STEER_PICK_WIDE(entry_tier(), inner_products_ny, ip, x, y, d, ny);
}
size_t faiss::fvec_L2sqr_ny_nearest(float* tmp, const float* x, const float* y, size_t d, size_t ny) {
    return L2sqr_ny_nearest_any(entry_tier(), tmp, x, y, d, ny);
}
size_t faiss::fvec_L2sqr_ny_nearest_y_transposed(float* tmp, const float* x, const float* y, const float* y_sqlen,
                                                 size_t d, size_t d_offset, size_t ny) {
    return L2sqr_ny_nearest_y_transposed_any(entry_tier(), tmp, x, y, y_sqlen, d, d_offset, ny);
}
void faiss::fvec_madd(size_t n, const float* a, float bf, const float* b, float* c) {
    STEER_PICK(entry_tier(), madd, n, a, bf, b, c);
}
int faiss::fvec_madd_and_argmin(size_t n, const float* a, float bf, const float* b, float* c) {
    return STEER_PICK(entry_tier(), madd_and_argmin, n, a, bf, b, c);
}
void faiss::fvec_add(size_t d, const float* a, const float* b, float* c) {
    STEER_PICK(entry_tier(), add, d, a, b, c);
}
void faiss::fvec_add(size_t d, const float* a, float b, float* c) {
    STEER_PICK(entry_tier(), add_constant, d, a, b, c);
}
void faiss::fvec_sub(size_t d, const float* a, const float* b, float* c) {
    STEER_PICK(entry_tier(), sub, d, a, b, c);
}
void faiss::compute_PQ_dis_tables_dsub2(size_t d, size_t ksub, const float* centroids, size_t nx, const float* x,
                                        bool is_inner_product, float* dis_tables) {
    STEER_PICK(entry_tier(), PQ_dis_tables_dsub2, d, ksub, centroids, nx, x, is_inner_product, dis_tables);
}

float faiss::fvec_L2sqr_ref(const float* x, const float* y, size_t d) {
    entry_note();
    return L2sqr_strict(x, y, d);
}
float faiss::fvec_inner_product_ref(const float* x, const float* y, size_t d) {
    entry_note();
    return inner_product_strict(x, y, d);
}
float faiss::fvec_L1_ref(const float* x, const float* y, size_t d) {
    entry_note();
    return L1_strict(x, y, d);
}
float faiss::fvec_Linf_ref(const float* x, const float* y, size_t d) {
    entry_note();
    return Linf_scalar(x, y, d);
}
float faiss::fvec_norm_L2sqr_ref(const float* x, size_t d) {
    entry_note();
    return norm_L2sqr_ref(x, d);
}
void faiss::fvec_L2sqr_ny_ref(float* dis, const float* x, const float* y, size_t d, size_t ny) {
    entry_note();
    L2sqr_ny_strict(dis, x, y, d, ny);
}
void faiss::fvec_inner_products_ny_ref(float* ip, const float* x, const float* y, size_t d, size_t ny) {
    entry_note();
    inner_products_ny_strict(ip, x, y, d, ny);
}
size_t faiss::fvec_L2sqr_ny_nearest_ref(float* tmp, const float* x, const float* y, size_t d, size_t ny) {
    entry_note();
    return L2sqr_ny_nearest_strict(tmp, x, y, d, ny);
}
void faiss::fvec_L2sqr_ny_y_transposed_ref(float* dis, const float* x, const float* y, const float* y_sqlen,
                                           size_t d, size_t d_offset, size_t ny) {
    entry_note();
    L2sqr_ny_y_transposed_scalar(dis, x, y, y_sqlen, d, d_offset, ny);
}
size_t faiss::fvec_L2sqr_ny_nearest_y_transposed_ref(float* tmp, const float* x, const float* y,
                                                     const float* y_sqlen, size_t d, size_t d_offset, size_t ny) {
    entry_note();
    return L2sqr_ny_nearest_y_transposed_any(kTierScalar, tmp, x, y, y_sqlen, d, d_offset, ny);
}
#endif  // STEER_REPLACE_FAISS

// MARK: - C API: status and switches

extern "C" {

int steer_kernels_compiled_for_faiss(void) { return STEER_REPLACE_FAISS; }

int steer_kernels_faiss_version(void) { return STEER_FAISS_VERSION; }

int steer_kernels_active(void) { return STEER_REPLACE_FAISS && !(current_mode() & kScalar) ? 1 : 0; }

int steer_kernels_cpu_has_avx2(void) {
    return (current_mode() & kCpuHasAvx2) ? 1 : 0;
}

int steer_kernels_cpu_has_avx512(void) { return (current_mode() & kCpuHasAvx512) ? 1 : 0; }

const char* steer_kernels_isa(void) {
    switch (mode_tier(current_mode())) {
    case kTierAvx512: return "avx512";
    case kTierAvx2: return "avx2+fma";
    default: return "scalar";
    }
}

void steer_kernels_force_scalar(int on) {
    const unsigned m = resolve_mode();
    if (on != 0 || (m & kDefaultScalar)) {
        g_mode.fetch_or(kScalar, std::memory_order_acq_rel);
    } else {
        g_mode.fetch_and(~kScalar, std::memory_order_acq_rel);
    }
}

void steer_kernels_set_counting(int on) {
    (void)resolve_mode();
    if (on != 0) {
        g_mode.fetch_or(kCounting, std::memory_order_acq_rel);
    } else {
        g_mode.fetch_and(~kCounting, std::memory_order_acq_rel);
    }
}

unsigned long long steer_kernels_call_count(void) { return g_calls.load(std::memory_order_relaxed); }

size_t steer_kernels_replaced_count(void) { return sizeof(kReplacedSymbols) / sizeof(kReplacedSymbols[0]); }

const char* steer_kernels_replaced_symbol(size_t i) {
    return i < steer_kernels_replaced_count() ? kReplacedSymbols[i] : nullptr;
}

// MARK: - C API: direct kernels

steer_kernels_pair_fn steer_kernels_pair_kernel(int inner_product) {
#if STEER_HAVE_AVX2_CODE
    switch (mode_tier(current_mode())) {
    case kTierAvx512: return inner_product ? inner_product_avx512 : L2sqr_avx512;
    case kTierAvx2: return inner_product ? inner_product_avx2 : L2sqr_avx2;
    default: break;
    }
#endif
    return inner_product ? inner_product_scalar : L2sqr_scalar;
}

// MARK: - C API: test wrappers

float steer_kernels_fvec_L2sqr(steer_kernels_path path, const float* x, const float* y, size_t d) {
    return STEER_PICK_WIDE(path_tier(path), L2sqr, x, y, d);
}
float steer_kernels_fvec_inner_product(steer_kernels_path path, const float* x, const float* y, size_t d) {
    return STEER_PICK_WIDE(path_tier(path), inner_product, x, y, d);
}
float steer_kernels_fvec_L1(steer_kernels_path path, const float* x, const float* y, size_t d) {
    return STEER_PICK_WIDE(path_tier(path), L1, x, y, d);
}
float steer_kernels_fvec_Linf(steer_kernels_path path, const float* x, const float* y, size_t d) {
    return STEER_PICK_WIDE(path_tier(path), Linf, x, y, d);
}
float steer_kernels_fvec_norm_L2sqr(steer_kernels_path path, const float* x, size_t d) {
    return STEER_PICK_WIDE(path_tier(path), norm_L2sqr, x, d);
}
void steer_kernels_fvec_L2sqr_ny(steer_kernels_path path, float* dis, const float* x, const float* y, size_t d,
                                 size_t ny) {
    STEER_PICK_WIDE(path_tier(path), L2sqr_ny, dis, x, y, d, ny);
}
void steer_kernels_fvec_inner_products_ny(steer_kernels_path path, float* ip, const float* x, const float* y,
                                          size_t d, size_t ny) {
    STEER_PICK_WIDE(path_tier(path), inner_products_ny, ip, x, y, d, ny);
}
size_t steer_kernels_fvec_L2sqr_ny_nearest(steer_kernels_path path, float* tmp, const float* x, const float* y,
                                           size_t d, size_t ny) {
    return L2sqr_ny_nearest_any(path_tier(path), tmp, x, y, d, ny);
}
size_t steer_kernels_fvec_L2sqr_ny_nearest_y_transposed(steer_kernels_path path, float* tmp, const float* x,
                                                        const float* y, const float* y_sqlen, size_t d,
                                                        size_t d_offset, size_t ny) {
    return L2sqr_ny_nearest_y_transposed_any(path_tier(path), tmp, x, y, y_sqlen, d, d_offset, ny);
}
void steer_kernels_fvec_madd(steer_kernels_path path, size_t n, const float* a, float bf, const float* b, float* c) {
    STEER_PICK(path_tier(path), madd, n, a, bf, b, c);
}
int steer_kernels_fvec_madd_and_argmin(steer_kernels_path path, size_t n, const float* a, float bf, const float* b,
                                       float* c) {
    return STEER_PICK(path_tier(path), madd_and_argmin, n, a, bf, b, c);
}
void steer_kernels_fvec_add(steer_kernels_path path, size_t d, const float* a, const float* b, float* c) {
    STEER_PICK(path_tier(path), add, d, a, b, c);
}
void steer_kernels_fvec_add_scalar(steer_kernels_path path, size_t d, const float* a, float b, float* c) {
    STEER_PICK(path_tier(path), add_constant, d, a, b, c);
}
void steer_kernels_fvec_sub(steer_kernels_path path, size_t d, const float* a, const float* b, float* c) {
    STEER_PICK(path_tier(path), sub, d, a, b, c);
}
void steer_kernels_compute_PQ_dis_tables_dsub2(steer_kernels_path path, size_t d, size_t ksub,
                                               const float* centroids, size_t nx, const float* x,
                                               int is_inner_product, float* dis_tables) {
    STEER_PICK(path_tier(path), PQ_dis_tables_dsub2, d, ksub, centroids, nx, x, is_inner_product != 0,
               dis_tables);
}

float steer_kernels_fvec_L2sqr_ref(const float* x, const float* y, size_t d) { return L2sqr_strict(x, y, d); }
float steer_kernels_fvec_inner_product_ref(const float* x, const float* y, size_t d) {
    return inner_product_strict(x, y, d);
}
float steer_kernels_fvec_L1_ref(const float* x, const float* y, size_t d) { return L1_strict(x, y, d); }
float steer_kernels_fvec_Linf_ref(const float* x, const float* y, size_t d) { return Linf_scalar(x, y, d); }
float steer_kernels_fvec_norm_L2sqr_ref(const float* x, size_t d) { return norm_L2sqr_ref(x, d); }
void steer_kernels_fvec_L2sqr_ny_ref(float* dis, const float* x, const float* y, size_t d, size_t ny) {
    L2sqr_ny_strict(dis, x, y, d, ny);
}
void steer_kernels_fvec_inner_products_ny_ref(float* ip, const float* x, const float* y, size_t d, size_t ny) {
    inner_products_ny_strict(ip, x, y, d, ny);
}
size_t steer_kernels_fvec_L2sqr_ny_nearest_ref(float* tmp, const float* x, const float* y, size_t d, size_t ny) {
    return L2sqr_ny_nearest_strict(tmp, x, y, d, ny);
}
void steer_kernels_fvec_L2sqr_ny_y_transposed_ref(float* dis, const float* x, const float* y, const float* y_sqlen,
                                                  size_t d, size_t d_offset, size_t ny) {
    L2sqr_ny_y_transposed_scalar(dis, x, y, y_sqlen, d, d_offset, ny);
}
size_t steer_kernels_fvec_L2sqr_ny_nearest_y_transposed_ref(float* tmp, const float* x, const float* y,
                                                            const float* y_sqlen, size_t d, size_t d_offset,
                                                            size_t ny) {
    return L2sqr_ny_nearest_y_transposed_any(kTierScalar, tmp, x, y, y_sqlen, d, d_offset, ny);
}

}  // extern "C"
