// CFaissKernels: AVX2+FMA and AVX-512 replacements for the scalar distance functions of Debian's libfaiss 1.7.3.
//
// Why this target exists: Debian builds libfaiss.a for baseline x86-64, so the 25 functions defined in
// its archive member `distances_simd.cpp.o` are scalar loops. This target defines every one of them
// (same C++ names and signatures, namespace faiss); because our object files define all of them, the
// linker never pulls that member, and faiss's flat, IVF and HNSW code call our runtime-dispatched kernels.
// The replacements are compiled only for faiss 1.7.3 on x86-64 (see `steer_kernels_compiled_for_faiss`).
//
// This header is plain C. Everything here is thread-safe.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Status and switches

/// 1 if the faiss symbol replacements are compiled in (faiss headers say 1.7.3 and the target is x86-64),
/// 0 if faiss's own scalar functions are used. The kernels and the test wrappers below work either way.
int steer_kernels_compiled_for_faiss(void);

/// The faiss version of the headers this target was compiled against, as major * 10000 + minor * 100 +
/// patch (10703 for 1.7.3), or 0 when no faiss headers were found.
int steer_kernels_faiss_version(void);

/// 1 when faiss's calls run the vector kernels now (AVX2+FMA or AVX-512): the replacements are compiled
/// in and the dispatcher is not on the scalar path. Benchmarks log it next to their results.
int steer_kernels_active(void);

/// 1 if this CPU supports AVX2 and FMA (and this build contains the AVX2 code), else 0.
int steer_kernels_cpu_has_avx2(void);

/// 1 if this CPU supports AVX-512F as well as AVX2 and FMA (and this build contains the code), else 0.
int steer_kernels_cpu_has_avx512(void);

/// The kernel set the dispatcher uses now: "avx512" (AVX-512 reductions — L2sqr, inner product, L1,
/// Linf, norm and their *_ny loops — with the AVX2+FMA element-wise kernels), "avx2+fma" or "scalar".
/// Static string; do not free. faiss itself only calls the dispatcher when
/// `steer_kernels_compiled_for_faiss()` is 1. The default is AVX2+FMA when the CPU has it; the
/// environment variable `STEER_FAISS_KERNELS`, read when the kernels are first used, changes it:
/// `scalar`, or `avx512` (opt-in, used only where the CPU has AVX-512F).
const char* steer_kernels_isa(void);

/// Forces the scalar kernels (on != 0) or returns to the default choice (on == 0; the environment
/// variable and the CPU still decide). Takes effect for calls that start afterwards; safe to call while
/// other threads search.
void steer_kernels_force_scalar(int on);

/// Turns call counting on (on != 0) or off. While it is on, every call of a replaced faiss function adds
/// one to a shared counter with a relaxed atomic increment. Off by default: measured on a 64-d inner
/// product it adds about 4–14 ns per call on one thread and doubles the cost per call with two threads
/// (cache-line contention). When off, the cost is one predictable branch on the mode word the dispatcher
/// loads anyway. For tests and diagnostics only.
void steer_kernels_set_counting(int on);

/// The number of calls of replaced faiss functions counted so far (see `steer_kernels_set_counting`).
unsigned long long steer_kernels_call_count(void);

/// Number of faiss functions this target replaces (25), whether or not they are compiled in.
size_t steer_kernels_replaced_count(void);

/// The mangled name of replaced function `i` (0 ..< `steer_kernels_replaced_count()`), or NULL when `i`
/// is out of range. Static string; do not free. Tests compare this list with the archive member.
const char* steer_kernels_replaced_symbol(size_t i);

// MARK: - Direct kernels

/// A distance kernel for one pair of vectors x and y, each size d.
typedef float (*steer_kernels_pair_fn)(const float* x, const float* y, size_t d);

/// The kernel that faiss's `fvec_inner_product` (inner_product != 0) or `fvec_L2sqr` (0) runs now, for
/// code that computes many distances in a row (Steer's HNSW search and insertion): fetch it once per
/// call and invoke it directly. Its results are bit-identical to faiss's per-pair calls made at the same
/// time, without the dispatch (and call counting) per pair. A fetch made after
/// `steer_kernels_force_scalar` follows the new choice; a pointer fetched earlier keeps the old kernel.
steer_kernels_pair_fn steer_kernels_pair_kernel(int inner_product);

// MARK: - Test wrappers
//
// Each wrapper runs one kernel on the chosen path. They do not count calls and do not depend on the faiss
// version; they exist so tests can compare both paths in one process without touching global state.

/// Which kernel set a wrapper runs.
typedef enum {
    /// Whatever the dispatcher would choose now (the path faiss's calls take).
    STEER_KERNELS_PATH_DISPATCH = 0,
    /// The scalar fallback.
    STEER_KERNELS_PATH_SCALAR = 1,
    /// The AVX2+FMA kernels; falls back to scalar when `steer_kernels_cpu_has_avx2()` is 0.
    STEER_KERNELS_PATH_AVX2 = 2,
    /// The AVX-512 set (AVX-512 reductions, AVX2 element-wise kernels; opt-in for faiss's calls, see
    /// `steer_kernels_isa`); falls back to AVX2 when
    /// `steer_kernels_cpu_has_avx512()` is 0 (and to scalar without AVX2).
    STEER_KERNELS_PATH_AVX512 = 3,
} steer_kernels_path;

/// Squared L2 distance of x and y (each size d).
float steer_kernels_fvec_L2sqr(steer_kernels_path path, const float* x, const float* y, size_t d);
/// Inner product of x and y (each size d).
float steer_kernels_fvec_inner_product(steer_kernels_path path, const float* x, const float* y, size_t d);
/// L1 distance of x and y (each size d).
float steer_kernels_fvec_L1(steer_kernels_path path, const float* x, const float* y, size_t d);
/// L-infinity distance of x and y (each size d); 0 when d == 0.
float steer_kernels_fvec_Linf(steer_kernels_path path, const float* x, const float* y, size_t d);
/// Squared L2 norm of x (size d).
float steer_kernels_fvec_norm_L2sqr(steer_kernels_path path, const float* x, size_t d);
/// dis[i] = squared L2 distance of x (size d) and y + i * d, for i < ny (y size ny * d, dis size ny).
void steer_kernels_fvec_L2sqr_ny(steer_kernels_path path, float* dis, const float* x, const float* y, size_t d, size_t ny);
/// ip[i] = inner product of x (size d) and y + i * d, for i < ny (y size ny * d, ip size ny).
void steer_kernels_fvec_inner_products_ny(steer_kernels_path path, float* ip, const float* x, const float* y, size_t d, size_t ny);
/// Like `steer_kernels_fvec_L2sqr_ny` into tmp (size ny); returns the index of the first smallest
/// distance, 0 when ny == 0.
size_t steer_kernels_fvec_L2sqr_ny_nearest(steer_kernels_path path, float* tmp, const float* x, const float* y, size_t d, size_t ny);
/// tmp[i] = |x|² + y_sqlen[i] - 2 <x, y_i>, where component j of y_i is y[i + j * d_offset]
/// (x size d, y_sqlen and tmp size ny); returns the index of the first smallest, 0 when ny == 0.
size_t steer_kernels_fvec_L2sqr_ny_nearest_y_transposed(steer_kernels_path path, float* tmp, const float* x, const float* y, const float* y_sqlen, size_t d, size_t d_offset, size_t ny);
/// c[i] = a[i] + bf * b[i] (each size n; c may alias a or b). Bit-identical on both paths.
void steer_kernels_fvec_madd(steer_kernels_path path, size_t n, const float* a, float bf, const float* b, float* c);
/// Like `steer_kernels_fvec_madd`; returns the index of the first c[i] below 1e20 that is smallest, or -1.
int steer_kernels_fvec_madd_and_argmin(steer_kernels_path path, size_t n, const float* a, float bf, const float* b, float* c);
/// c[i] = a[i] + b[i] (each size d; c may alias a or b).
void steer_kernels_fvec_add(steer_kernels_path path, size_t d, const float* a, const float* b, float* c);
/// c[i] = a[i] + b (a and c size d; c may alias a).
void steer_kernels_fvec_add_scalar(steer_kernels_path path, size_t d, const float* a, float b, float* c);
/// c[i] = a[i] - b[i] (each size d; c may alias a or b).
void steer_kernels_fvec_sub(steer_kernels_path path, size_t d, const float* a, const float* b, float* c);
/// PQ distance tables for 2-dimensional sub-vectors: with M = d / 2, for each query i < nx, sub-quantizer
/// m < M and centroid k < ksub, dis_tables[(i * M + m) * ksub + k] is the inner product (is_inner_product
/// != 0) or squared L2 distance of x[i * d + 2m ..< 2m + 2] and centroids[(m * ksub + k) * 2 ..< +2].
/// Sizes: centroids M * ksub * 2, x nx * d, dis_tables nx * M * ksub. Any ksub (faiss's own AVX2 version
/// requires ksub % 8 == 0 and throws otherwise).
void steer_kernels_compute_PQ_dis_tables_dsub2(steer_kernels_path path, size_t d, size_t ksub, const float* centroids, size_t nx, const float* x, int is_inner_product, float* dis_tables);

// The `_ref` variants are faiss's plain reference loops; ours are the scalar code (no dispatch).

float steer_kernels_fvec_L2sqr_ref(const float* x, const float* y, size_t d);
float steer_kernels_fvec_inner_product_ref(const float* x, const float* y, size_t d);
float steer_kernels_fvec_L1_ref(const float* x, const float* y, size_t d);
float steer_kernels_fvec_Linf_ref(const float* x, const float* y, size_t d);
/// Accumulates in double, as faiss's reference does.
float steer_kernels_fvec_norm_L2sqr_ref(const float* x, size_t d);
void steer_kernels_fvec_L2sqr_ny_ref(float* dis, const float* x, const float* y, size_t d, size_t ny);
void steer_kernels_fvec_inner_products_ny_ref(float* ip, const float* x, const float* y, size_t d, size_t ny);
size_t steer_kernels_fvec_L2sqr_ny_nearest_ref(float* tmp, const float* x, const float* y, size_t d, size_t ny);
void steer_kernels_fvec_L2sqr_ny_y_transposed_ref(float* dis, const float* x, const float* y, const float* y_sqlen, size_t d, size_t d_offset, size_t ny);
size_t steer_kernels_fvec_L2sqr_ny_nearest_y_transposed_ref(float* tmp, const float* x, const float* y, const float* y_sqlen, size_t d, size_t d_offset, size_t ny);

// MARK: - Integration self-test through real faiss

/// Which faiss index `steer_kernels_selftest_faiss` builds.
typedef enum {
    /// IndexFlat.
    STEER_KERNELS_SELFTEST_FLAT = 0,
    /// IndexIVFFlat with `nlist` lists, searched with nprobe = nlist (exhaustive, so exact).
    STEER_KERNELS_SELFTEST_IVF_FLAT = 1,
} steer_kernels_selftest_index;

/// Builds a faiss index over xb (size nb * d), searches xq (size nq * d) for k neighbours one query at a
/// time (so faiss takes its per-vector kernel paths, not BLAS) and writes distances and labels (each size
/// nq * k). `inner_product` != 0 selects METRIC_INNER_PRODUCT, else METRIC_L2. `nlist` is used by IVF only.
/// - Returns: 0 on success; -1 on a faiss error, with a strdup'd message in *error (free it) when error
///   is not NULL.
int steer_kernels_selftest_faiss(steer_kernels_selftest_index index, int inner_product, size_t nlist,
                                 const float* xb, size_t nb, const float* xq, size_t nq, size_t d, size_t k,
                                 float* distances, int64_t* labels, char** error);

#ifdef __cplusplus
}
#endif
