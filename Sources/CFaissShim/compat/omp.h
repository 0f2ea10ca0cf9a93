// Minimal <omp.h> for compiling against faiss headers with Swift's clang, which ships no OpenMP header.
//
// Why it exists: faiss/impl/HNSW.h includes <omp.h> for `omp_lock_t`. The shim never uses OpenMP
// pragmas (it is compiled without -fopenmp); it only needs the lock types with libgomp's exact sizes
// (faiss's std::vector<omp_lock_t> must have libgomp's layout) and a few runtime functions, which
// resolve against libgomp at link time.
#pragma once

#ifdef __cplusplus
extern "C" {
#endif

/// libgomp's simple lock: 4 bytes, 4-aligned.
typedef struct { unsigned char _opaque[4] __attribute__((__aligned__(4))); } omp_lock_t;
/// libgomp's nestable lock: 16 bytes, 8-aligned.
typedef struct { unsigned char _opaque[16] __attribute__((__aligned__(8))); } omp_nest_lock_t;

#ifdef __cplusplus
static_assert(sizeof(omp_lock_t) == 4, "libgomp omp_lock_t is 4 bytes");
static_assert(sizeof(omp_nest_lock_t) == 16, "libgomp omp_nest_lock_t is 16 bytes");
#endif

void omp_init_lock(omp_lock_t*);
void omp_destroy_lock(omp_lock_t*);
void omp_set_lock(omp_lock_t*);
void omp_unset_lock(omp_lock_t*);
int omp_get_max_threads(void);
int omp_get_num_threads(void);
int omp_get_thread_num(void);
void omp_set_num_threads(int);

#ifdef __cplusplus
}
#endif
