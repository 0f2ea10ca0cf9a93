// CModelKernels: the dense layers of SteerModel (MiniLM, the backbones, the DPR head) for few rows.
//
// Why this target exists: a prompt is a handful of tokens, so every MiniLM layer is a matrix product with
// M ≈ 4–16 rows against a large weight matrix. OpenBLAS's sgemm packs the whole weight matrix on every
// call for that shape, and on this CPU it also picks its slow "Prescott" kernels unless
// OPENBLAS_CORETYPE is set before the process starts (docs/dependencies.md). Here the weights are packed once at
// load time into column panels, and one pass over them serves all rows: AVX-512F or AVX2+FMA chosen at
// run time, with a scalar fallback. Compiled -O3 in every configuration (like CFaissKernels), so debug
// builds and tests are fast too.
//
// Plain C, no global state except the read-only ISA choice; every function is thread-safe.
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Width of a packed column panel, in floats.
#define STEER_PANEL 64

/// Activations fused into `steer_linear`.
enum {
    STEER_ACT_NONE = 0,
    STEER_ACT_RELU = 1,
    /// Exact GELU: 0.5 x (1 + erf(x / sqrt(2))).
    STEER_ACT_GELU = 2,
};

/// Instruction sets of the kernels.
enum {
    STEER_ISA_SCALAR = 0,
    STEER_ISA_AVX2 = 1,
    STEER_ISA_AVX512 = 2,
};

/// Floats needed to pack an [n, k] weight matrix: ceil(n / STEER_PANEL) * STEER_PANEL * k.
size_t steer_packed_size(int n, int k);

/// Packs the row-major weight W [n, k] (PyTorch's [out, in]) into `packed` (size `steer_packed_size`):
/// panel p holds, for every input column c, the 64 weights W[p*64 + j, c] (j = 0…63; zeros past n).
void steer_pack_weights(const float *w, int n, int k, float *packed);

/// y[r, j] = act(sum_c x[r, c] * W[j, c] + bias[j]) for r < m, j < n.
/// x: m rows of k floats, row stride `ldx`; y: m rows, row stride `ldy` (at least n). `bias` may be NULL.
/// Uses the best instruction set of this CPU.
void steer_linear(const float *x, int m, int k, int ldx, const float *packed, int n, const float *bias,
                  int activation, float *y, int ldy);

/// The same with a given instruction set; returns 0, or -1 (and writes nothing) if this CPU or build lacks it.
/// Ignores `STEER_MODEL_ISA`.
int steer_linear_isa(int isa, const float *x, int m, int k, int ldx, const float *packed, int n,
                     const float *bias, int activation, float *y, int ldy);

/// The instruction set `steer_linear` uses: the best this CPU has, lowered by the environment variable
/// `STEER_MODEL_ISA=avx2|scalar` if set when first used (for benchmarks; `steer_linear_isa` ignores it).
int steer_linear_best_isa(void);

/// Its name: "avx512", "avx2" or "scalar" (static string).
const char *steer_linear_isa_name(void);

#ifdef __cplusplus
}
#endif
