// Packed small-M matrix products for SteerModel; see include/steer_model_kernels.h.
#include "steer_model_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define STEER_X86 1
#else
#define STEER_X86 0
#endif

#define P STEER_PANEL

size_t steer_packed_size(int n, int k) {
    if (n <= 0 || k <= 0) return 0;
    size_t panels = ((size_t)n + P - 1) / P;
    return panels * P * (size_t)k;
}

void steer_pack_weights(const float *w, int n, int k, float *packed) {
    int panels = (n + P - 1) / P;
    for (int p = 0; p < panels; p++) {
        float *panel = packed + (size_t)p * P * k;
        for (int c = 0; c < k; c++) {
            for (int j = 0; j < P; j++) {
                int row = p * P + j;
                panel[(size_t)c * P + j] = row < n ? w[(size_t)row * k + c] : 0.0f;
            }
        }
    }
}

static inline float activate(float v, int activation) {
    switch (activation) {
    case STEER_ACT_RELU: return v > 0 ? v : 0;
    case STEER_ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    default: return v;
    }
}

/// Writes one finished tile: `acc` holds rows × 64 sums (bias included) for panel columns [col, col+64).
static inline void store_tile(const float *acc, int rows, int col, int n, int activation, float *y, int ldy) {
    int width = n - col < P ? n - col : P;
    for (int r = 0; r < rows; r++) {
        float *out = y + (size_t)r * ldy + col;
        for (int j = 0; j < width; j++) out[j] = activate(acc[r * P + j], activation);
    }
}

// MARK: - Scalar

static void linear_scalar(const float *x, int m, int k, int ldx, const float *packed, int n, const float *bias,
                          int activation, float *y, int ldy) {
    int panels = (n + P - 1) / P;
    float acc[P];
    for (int p = 0; p < panels; p++) {
        const float *panel = packed + (size_t)p * P * k;
        for (int r = 0; r < m; r++) {
            for (int j = 0; j < P; j++) acc[j] = (bias && p * P + j < n) ? bias[p * P + j] : 0.0f;
            const float *row = x + (size_t)r * ldx;
            for (int c = 0; c < k; c++) {
                float v = row[c];
                const float *wc = panel + (size_t)c * P;
                for (int j = 0; j < P; j++) acc[j] += v * wc[j];
            }
            store_tile(acc, 1, p * P, n, activation, y + (size_t)r * ldy, ldy);
        }
    }
}

#if STEER_X86

// glibc ≥ 2.35's libmvec has vector erff (a few ulp): the exact GELU on 8 or 16 lanes at once. Elsewhere
// the scalar erff of store_tile is used.
#if defined(__GLIBC__) && defined(__GLIBC_PREREQ)
#if __GLIBC_PREREQ(2, 35)
#define STEER_HAVE_MVEC 1
__attribute__((target("avx512f"))) __m512 _ZGVeN16v_erff(__m512);
__attribute__((target("avx2,fma"))) __m256 _ZGVdN8v_erff(__m256);
#endif
#endif

// MARK: - AVX2 + FMA: 6 rows × 16 columns per step (12 accumulators)

#define STEER_AVX2_ATTR __attribute__((target("avx2,fma")))
#define MB2 6

/// One block of `rows` (1…6) rows against 16 columns of a panel (see block_avx512).
STEER_AVX2_ATTR __attribute__((always_inline))
static inline void block_avx2(const float *x, int rows, int k, int ldx, const float *panel, int q, const float *b,
                              float *tile) {
    __m256 a0[MB2], a1[MB2];
    __m256 b0 = _mm256_loadu_ps(b + q), b1 = _mm256_loadu_ps(b + q + 8);
    for (int r = 0; r < rows; r++) { a0[r] = b0; a1[r] = b1; }
    const float *wc = panel + q;
    for (int c = 0; c < k; c++, wc += P) {
        __m256 w0 = _mm256_loadu_ps(wc), w1 = _mm256_loadu_ps(wc + 8);
        for (int r = 0; r < rows; r++) {
            __m256 v = _mm256_broadcast_ss(x + (size_t)r * ldx + c);
            a0[r] = _mm256_fmadd_ps(v, w0, a0[r]);
            a1[r] = _mm256_fmadd_ps(v, w1, a1[r]);
        }
    }
    for (int r = 0; r < rows; r++) {
        _mm256_storeu_ps(tile + r * P + q, a0[r]);
        _mm256_storeu_ps(tile + r * P + q + 8, a1[r]);
    }
}

/// Applies the activation to rows × 64 tile values in place; returns the activation left for store_tile.
STEER_AVX2_ATTR
static int activate_tile_avx2(float *tile, int rows, int activation) {
    if (activation == STEER_ACT_RELU) {
        __m256 zero = _mm256_setzero_ps();
        for (int i = 0; i < rows * P; i += 8) _mm256_storeu_ps(tile + i, _mm256_max_ps(_mm256_loadu_ps(tile + i), zero));
        return STEER_ACT_NONE;
    }
#ifdef STEER_HAVE_MVEC
    if (activation == STEER_ACT_GELU) {
        __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f), scale = _mm256_set1_ps(0.70710678118654752f);
        for (int i = 0; i < rows * P; i += 8) {
            __m256 v = _mm256_loadu_ps(tile + i);
            __m256 e = _ZGVdN8v_erff(_mm256_mul_ps(v, scale));
            _mm256_storeu_ps(tile + i, _mm256_mul_ps(_mm256_mul_ps(half, v), _mm256_add_ps(one, e)));
        }
        return STEER_ACT_NONE;
    }
#endif
    return activation;
}

STEER_AVX2_ATTR
static void linear_avx2(const float *x, int m, int k, int ldx, const float *packed, int n, const float *bias,
                        int activation, float *y, int ldy) {
    int panels = (n + P - 1) / P;
    float tile[MB2 * P];
    for (int p = 0; p < panels; p++) {
        const float *panel = packed + (size_t)p * P * k;
        float b[P];
        for (int j = 0; j < P; j++) b[j] = (bias && p * P + j < n) ? bias[p * P + j] : 0.0f;
        for (int r0 = 0; r0 < m; r0 += MB2) {
            int rows = m - r0 < MB2 ? m - r0 : MB2;
            const float *xr = x + (size_t)r0 * ldx;
            for (int q = 0; q < P; q += 16) {
                switch (rows) {
                case 1: block_avx2(xr, 1, k, ldx, panel, q, b, tile); break;
                case 2: block_avx2(xr, 2, k, ldx, panel, q, b, tile); break;
                case 3: block_avx2(xr, 3, k, ldx, panel, q, b, tile); break;
                case 4: block_avx2(xr, 4, k, ldx, panel, q, b, tile); break;
                case 5: block_avx2(xr, 5, k, ldx, panel, q, b, tile); break;
                default: block_avx2(xr, 6, k, ldx, panel, q, b, tile); break;
                }
            }
            int rest = activate_tile_avx2(tile, rows, activation);
            store_tile(tile, rows, p * P, n, rest, y + (size_t)r0 * ldy, ldy);
        }
    }
}

// MARK: - AVX-512F: 6 rows × 64 columns per step (24 accumulators)

#define STEER_AVX512_ATTR __attribute__((target("avx512f")))
#define MB5 6

/// One block of `rows` (1…6) rows against one panel; `rows` is a constant after inlining, so the
/// compiler keeps exactly 4 × rows accumulators in registers and issues no wasted FMAs.
STEER_AVX512_ATTR __attribute__((always_inline))
static inline void block_avx512(const float *x, int rows, int k, int ldx, const float *panel, const float *b,
                                float *tile) {
    __m512 a0[MB5], a1[MB5], a2[MB5], a3[MB5];
    __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), b2 = _mm512_loadu_ps(b + 32),
           b3 = _mm512_loadu_ps(b + 48);
    for (int r = 0; r < rows; r++) { a0[r] = b0; a1[r] = b1; a2[r] = b2; a3[r] = b3; }
    const float *wc = panel;
    for (int c = 0; c < k; c++, wc += P) {
        __m512 w0 = _mm512_loadu_ps(wc), w1 = _mm512_loadu_ps(wc + 16), w2 = _mm512_loadu_ps(wc + 32),
               w3 = _mm512_loadu_ps(wc + 48);
        for (int r = 0; r < rows; r++) {
            __m512 v = _mm512_set1_ps(x[(size_t)r * ldx + c]);
            a0[r] = _mm512_fmadd_ps(v, w0, a0[r]);
            a1[r] = _mm512_fmadd_ps(v, w1, a1[r]);
            a2[r] = _mm512_fmadd_ps(v, w2, a2[r]);
            a3[r] = _mm512_fmadd_ps(v, w3, a3[r]);
        }
    }
    for (int r = 0; r < rows; r++) {
        _mm512_storeu_ps(tile + r * P, a0[r]);
        _mm512_storeu_ps(tile + r * P + 16, a1[r]);
        _mm512_storeu_ps(tile + r * P + 32, a2[r]);
        _mm512_storeu_ps(tile + r * P + 48, a3[r]);
    }
}

/// Applies the activation to rows × 64 tile values in place; returns the activation left for store_tile.
STEER_AVX512_ATTR
static int activate_tile_avx512(float *tile, int rows, int activation) {
    if (activation == STEER_ACT_RELU) {
        __m512 zero = _mm512_setzero_ps();
        for (int i = 0; i < rows * P; i += 16) _mm512_storeu_ps(tile + i, _mm512_max_ps(_mm512_loadu_ps(tile + i), zero));
        return STEER_ACT_NONE;
    }
#ifdef STEER_HAVE_MVEC
    if (activation == STEER_ACT_GELU) {
        __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f), scale = _mm512_set1_ps(0.70710678118654752f);
        for (int i = 0; i < rows * P; i += 16) {
            __m512 v = _mm512_loadu_ps(tile + i);
            __m512 e = _ZGVeN16v_erff(_mm512_mul_ps(v, scale));
            _mm512_storeu_ps(tile + i, _mm512_mul_ps(_mm512_mul_ps(half, v), _mm512_add_ps(one, e)));
        }
        return STEER_ACT_NONE;
    }
#endif
    return activation;
}

STEER_AVX512_ATTR
static void linear_avx512(const float *x, int m, int k, int ldx, const float *packed, int n, const float *bias,
                          int activation, float *y, int ldy) {
    int panels = (n + P - 1) / P;
    float tile[MB5 * P];
    for (int p = 0; p < panels; p++) {
        const float *panel = packed + (size_t)p * P * k;
        float b[P];
        for (int j = 0; j < P; j++) b[j] = (bias && p * P + j < n) ? bias[p * P + j] : 0.0f;
        for (int r0 = 0; r0 < m; r0 += MB5) {
            int rows = m - r0 < MB5 ? m - r0 : MB5;
            const float *xr = x + (size_t)r0 * ldx;
            switch (rows) {
            case 1: block_avx512(xr, 1, k, ldx, panel, b, tile); break;
            case 2: block_avx512(xr, 2, k, ldx, panel, b, tile); break;
            case 3: block_avx512(xr, 3, k, ldx, panel, b, tile); break;
            case 4: block_avx512(xr, 4, k, ldx, panel, b, tile); break;
            case 5: block_avx512(xr, 5, k, ldx, panel, b, tile); break;
            default: block_avx512(xr, 6, k, ldx, panel, b, tile); break;
            }
            int rest = activate_tile_avx512(tile, rows, activation);
            store_tile(tile, rows, p * P, n, rest, y + (size_t)r0 * ldy, ldy);
        }
    }
}

static int detect_isa(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return STEER_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return STEER_ISA_AVX2;
    return STEER_ISA_SCALAR;
}

#else

static int detect_isa(void) { return STEER_ISA_SCALAR; }

#endif

/// What this CPU and build support (cached; every thread computes the same value, relaxed atomics keep
/// it race-free).
static int cpu_isa(void) {
    static int cached = -1;
    int isa = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = detect_isa();
        __atomic_store_n(&cached, isa, __ATOMIC_RELAXED);
    }
    return isa;
}

int steer_linear_best_isa(void) {
    static int cached = -1;
    int isa = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (isa < 0) {
        isa = cpu_isa();
        // STEER_MODEL_ISA=avx2|scalar lowers the choice (benchmarks compare the paths; tests never set it)
        const char *forced = getenv("STEER_MODEL_ISA");
        if (forced && strcmp(forced, "scalar") == 0) isa = STEER_ISA_SCALAR;
        if (forced && strcmp(forced, "avx2") == 0 && isa > STEER_ISA_AVX2) isa = STEER_ISA_AVX2;
        __atomic_store_n(&cached, isa, __ATOMIC_RELAXED);
    }
    return isa;
}

const char *steer_linear_isa_name(void) {
    switch (steer_linear_best_isa()) {
    case STEER_ISA_AVX512: return "avx512";
    case STEER_ISA_AVX2: return "avx2";
    default: return "scalar";
    }
}

int steer_linear_isa(int isa, const float *x, int m, int k, int ldx, const float *packed, int n,
                     const float *bias, int activation, float *y, int ldy) {
    if (m <= 0 || n <= 0) return 0;
    if (isa > cpu_isa() || isa < 0) return -1;
    switch (isa) {
#if STEER_X86
    case STEER_ISA_AVX512: linear_avx512(x, m, k, ldx, packed, n, bias, activation, y, ldy); return 0;
    case STEER_ISA_AVX2: linear_avx2(x, m, k, ldx, packed, n, bias, activation, y, ldy); return 0;
#endif
    default: linear_scalar(x, m, k, ldx, packed, n, bias, activation, y, ldy); return 0;
    }
}

void steer_linear(const float *x, int m, int k, int ldx, const float *packed, int n, const float *bias,
                  int activation, float *y, int ldy) {
    steer_linear_isa(steer_linear_best_isa(), x, m, k, ldx, packed, n, bias, activation, y, ldy);
}
