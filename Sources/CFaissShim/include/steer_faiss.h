// CFaissShim: a plain C ABI over Debian's libfaiss 1.7.3 (C++ only, no compiled c_api) for SteerIndex.
//
// Why this target exists: Swift cannot catch C++ exceptions, and libfaiss.a exports only C++ symbols.
// Every function here runs its C++ body in try/catch; failures come back as a status code plus a
// message the caller frees with `steer_faiss_free`. Handles are opaque.
//
// Beyond a thin wrapper, the shim holds the parts of Steer's index that must run inside the scan:
// label mapping for HNSW (faiss's IndexHNSWFlat only has sequential rows), tombstones, allowed-label
// filters, and Steer's own HNSW search (faiss 1.7.3 ignores SearchParametersHNSW::efSearch). See
// docs/index.md for the three faiss 1.7.3 bugs this avoids.
//
// Threading: `steer_index_search` and the read-only getters may run concurrently on one handle; every
// mutating call (train, add, remove, compact, reset) needs exclusive access (SteerIndex holds a
// reader-writer lock). Scores are always "higher is better": inner product, or negated squared L2.
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// MARK: - Status codes

/// Success.
#define STEER_FAISS_OK 0
/// A bad argument or a state that does not allow the call (untrained, wrong factory string, ...).
#define STEER_FAISS_INVALID 1
/// Bytes or a file that faiss or the shim could not parse.
#define STEER_FAISS_CORRUPT 2
/// The operating system refused a file operation.
#define STEER_FAISS_IO 3
/// Out of memory or an unexpected exception.
#define STEER_FAISS_INTERNAL 4

/// Metric codes (cosine is inner product over normalised vectors; SteerIndex normalises).
#define STEER_METRIC_INNER_PRODUCT 0
#define STEER_METRIC_L2 1

/// Family codes returned by `steer_index_family`.
#define STEER_FAMILY_FLAT 0
#define STEER_FAMILY_HNSW 1
#define STEER_FAMILY_IVF 2

/// An index: a faiss index plus Steer's label map, tombstones and defaults. Opaque.
typedef struct steer_index steer_index;

/// Frees a message or buffer returned by this shim (NULL is fine).
void steer_faiss_free(void* pointer);

// MARK: - Library information

/// faiss's version from its headers, "1.7.3". Static string.
const char* steer_faiss_version(void);
/// omp_get_max_threads() of the calling thread.
int steer_faiss_omp_max_threads(void);
/// omp_set_num_threads(n) for the calling thread only (libgomp keeps it per thread); n >= 1.
void steer_faiss_set_omp_threads(int n);

/// CRC-32 (IEEE 802.3, as zlib's crc32) of `length` bytes, continuing from `crc` (start with 0).
uint32_t steer_crc32(uint32_t crc, const void* bytes, size_t length);
/// CRC-32 of the byte range [offset, offset + length) of a file. Returns a status; on IO errors
/// *error names the file.
int steer_file_crc32(const char* path, uint64_t offset, uint64_t length, uint32_t* crc_out, char** error);

// MARK: - Lifetime

/// Creates an empty index.
/// - factory: a faiss factory string limited to "Flat", "HNSW<M>", "HNSW<M>_SQ8", "IVF<n>,Flat",
///   "IVF<n>,PQ<m>[x<b>]", "IVF<n>,SQ8", "OPQ<M>[_<D>],IVF<n>,PQ<m>[x<b>]" (IndexPreTransform with one
///   OPQMatrix in front of IndexIVFPQ; the shim rotates vectors and queries itself). Flat is wrapped in IndexIDMap2; HNSW is IndexHNSWFlat (or
///   IndexHNSWSQ over SQ8 codes, which needs training) with Steer's label map; IVF takes labels natively
///   (never IndexIDMap: faiss 1.7.3 bug 1).
/// - ef_construction: HNSW build beam width (ignored for other families), >= 1.
int steer_index_create(const char* factory, int64_t dimension, int metric, int64_t ef_construction,
                       steer_index** out, char** error);
void steer_index_free(steer_index* index);

// MARK: - Properties (read-only; safe concurrently with searches)

int steer_index_family(const steer_index* index);
int64_t steer_index_dimension(const steer_index* index);
int steer_index_metric(const steer_index* index);
int steer_index_is_trained(const steer_index* index);
/// Live vectors (excludes tombstones).
int64_t steer_index_count(const steer_index* index);
/// HNSW rows marked deleted but still in the graph; 0 for other families.
int64_t steer_index_tombstones(const steer_index* index);
/// Rows in faiss's storage (HNSW: live + tombstones).
int64_t steer_index_rows(const steer_index* index);
/// 1 when `label` is live.
int steer_index_contains(const steer_index* index, int64_t label);
/// IVF list count, 0 otherwise.
int64_t steer_index_lists(const steer_index* index);
/// OPQ: the rotated dimension the IVF-PQ works in (the OPQ matrix's d_out); 0 without OPQ.
int64_t steer_index_opq_dimension(const steer_index* index);
/// HNSW construction beam (hnsw.efConstruction), 0 for other families.
int64_t steer_index_ef_construction(const steer_index* index);
/// HNSW links per node on the upper levels (M), 0 for other families.
int64_t steer_index_hnsw_m(const steer_index* index);
/// 1 for HNSW over SQ8 codes (IndexHNSWSQ), 0 otherwise.
int steer_index_hnsw_sq8(const steer_index* index);
/// 1 when the IVF lists are memory-mapped from a file (read-only until the first mutation copies them).
int steer_index_is_mapped(const steer_index* index);

// MARK: - Mutation (exclusive access)

/// Trains an IVF index, or the SQ8 ranges of HNSW over SQ8 codes, on n vectors (n * dimension floats).
/// Other families: no-op.
int steer_index_train(steer_index* index, int64_t n, const float* vectors, char** error);
/// Adds n vectors with labels (n * dimension floats, n labels >= 0, no duplicates). A label that is
/// already live is replaced (IVF: removed first; HNSW: old row tombstoned; Flat: removed first).
int steer_index_add(steer_index* index, int64_t n, const float* vectors, const int64_t* labels, char** error);
/// Removes labels; *removed_out receives how many of them were live. HNSW rows become tombstones.
int steer_index_remove(steer_index* index, int64_t n, const int64_t* labels, int64_t* removed_out, char** error);
/// HNSW: rebuilds the graph from the live vectors (reconstructed from storage), dropping tombstones,
/// with exclusive access throughout (SteerIndex compacts aside instead: steer_compaction_*).
/// Other families: no-op.
int steer_index_compact(steer_index* index, char** error);
/// Removes every vector; training (IVF centroids, PQ codebooks) is kept.
int steer_index_reset(steer_index* index, char** error);

// MARK: - HNSW compaction aside (searches keep running)

/// A graph being rebuilt without the tombstones of an HNSW index. Opaque.
typedef struct steer_compaction steer_compaction;

/// Step 1, with shared access (searches may run, no mutation): copies the live rows and starts
/// recording the labels that later mutations touch. *out is NULL when there is nothing to compact (not
/// HNSW, or no tombstones). INVALID when a compaction is already running.
int steer_compaction_begin(steer_index* index, steer_compaction** out, char** error);
/// Step 2, with no access to the index needed: builds the new graph from the copied rows (the long part).
int steer_compaction_build(steer_compaction* job, char** error);
/// Step 3, with exclusive access: replays the touched labels (each ends live with its current vector,
/// or removed), installs the new graph and frees `job`. *replayed_out receives how many labels were
/// replayed. A reset since step 1 discards the job. Always frees `job` and stops the recording.
int steer_compaction_finish(steer_index* index, steer_compaction* job, int64_t* replayed_out, char** error);
/// Instead of step 3 after a failure, with exclusive access: frees `job` and stops the recording.
void steer_compaction_abort(steer_index* index, steer_compaction* job);

// MARK: - Search (concurrent)

/// Per-call search parameters; zero fields mean "the caller's default" (SteerIndex always fills them).
typedef struct steer_search_params {
    /// IVF lists to probe (clamped to the list count), >= 1.
    int64_t nprobe;
    /// HNSW beam width on level 0, >= 1; raised to k when smaller.
    int64_t ef_search;
    /// Allowed labels, ascending without duplicates, or NULL for no filter.
    const int64_t* allowed;
    /// Number of allowed labels (with `allowed_bits`: the number of bits set).
    int64_t allowed_count;
    /// Instead of `allowed` (which is then NULL): allowed labels as a bitset, label l allowed when bit
    /// l % 64 of word l / 64 is set (labels at or past allowed_bits_words * 64 are not), or NULL.
    const uint64_t* allowed_bits;
    int64_t allowed_bits_words;
    /// Allowed sets of at most this many labels are searched exactly (by label lookup, or for IVF by
    /// probing every list with the filter).
    int64_t exact_filter_threshold;
} steer_search_params;

/// Searches n queries (n * dimension floats); writes n * k scores (higher is better) and labels.
/// Each row holds the best live, allowed results first; unused slots have label -1 and score -inf.
int steer_index_search(const steer_index* index, int64_t n, const float* queries, int64_t k,
                       const steer_search_params* params, float* scores, int64_t* labels, char** error);

// MARK: - Serialization

/// faiss's serialized bytes of the index (write_index into memory). Free *bytes_out with steer_faiss_free.
int steer_index_serialize(const steer_index* index, uint8_t** bytes_out, uint64_t* length_out, char** error);
/// HNSW row labels (rows entries; -1 marks a tombstone). Other families: rows is 0.
int steer_index_row_labels(const steer_index* index, int64_t* labels_out, int64_t rows, char** error);
/// Reads an index from `path` at byte `offset`, whose faiss section is `length` bytes. With mapped != 0
/// the IVF lists are memory-mapped (faiss IO_FLAG_MMAP; IVF only). For HNSW, `row_labels` (rows
/// entries, -1 = tombstone) restores the label map and must match faiss's row count.
int steer_index_read(const char* path, uint64_t offset, uint64_t length, int mapped,
                     const int64_t* row_labels, int64_t rows, steer_index** out, char** error);

// MARK: - Test-only entry points (the naive faiss paths that Steer avoids; for regression tests)

/// Bug 1: IndexIDMap2 around an IVF index (factory string, inner product), add n vectors with labels,
/// remove the labels in `removed`, then search each remaining vector for itself (nprobe = list count).
/// *self_matches_out: how many of the remaining vectors find their own label first.
int steer_test_idmap_ivf_remove(const char* factory, int64_t dimension, int64_t n, const float* vectors,
                                const int64_t* labels, int64_t removed_count, const int64_t* removed,
                                int64_t* self_matches_out, char** error);
/// Bug 2: faiss's own IndexHNSW::search with SearchParametersHNSW{efSearch = ef_search}
/// (hnsw.efSearch left as is). Same output layout as steer_index_search, labels mapped.
int steer_test_faiss_hnsw_search(const steer_index* index, int64_t n, const float* queries, int64_t k,
                                 int64_t ef_search, float* scores, int64_t* labels, char** error);
/// Reference for Steer's HNSW insertion: adds n vectors with labels (new, distinct) through faiss's own
/// IndexHNSW::add on one OpenMP thread, the path `steer_index_add` replaces when OpenMP runs one thread.
int steer_test_hnsw_add_with_faiss(steer_index* index, int64_t n, const float* vectors, const int64_t* labels,
                                   char** error);
/// Rows linked by Steer's HNSW insertion in this process so far (tests check that it ran).
uint64_t steer_test_hnsw_steer_inserted(void);
/// Bug 3: IndexIDMap2::search of a Flat index with a SearchParameters carrying an allowed-label
/// selector. Returns faiss's status (INVALID with its message in 1.7.3).
int steer_test_idmap2_search_with_params(const steer_index* index, const float* query, int64_t k,
                                         const int64_t* allowed, int64_t allowed_count, char** error);

#ifdef __cplusplus
}
#endif
