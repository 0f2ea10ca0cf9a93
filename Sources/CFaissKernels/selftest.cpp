// Integration self-test: builds a real faiss index and searches it, so tests can check that faiss's own
// code reaches the replaced kernels (see steer_kernels_call_count) and still returns exact results.

#include "steer_kernels.h"

#include <cstring>
#include <exception>
#include <memory>

#if __has_include(<faiss/IndexFlat.h>)
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFFlat.h>
#define STEER_SELFTEST_HAS_FAISS 1
#else
#define STEER_SELFTEST_HAS_FAISS 0
#endif

namespace {

using Idx = int64_t;  // faiss::Index::idx_t in 1.7.3

void set_error(char** error, const char* message) {
    if (error != nullptr) *error = strdup(message);
}

}  // namespace

extern "C" int steer_kernels_selftest_faiss(steer_kernels_selftest_index index, int inner_product, size_t nlist,
                                            const float* xb, size_t nb, const float* xq, size_t nq, size_t d,
                                            size_t k, float* distances, int64_t* labels, char** error) {
#if STEER_SELFTEST_HAS_FAISS
    try {
        const faiss::MetricType metric = inner_product != 0 ? faiss::METRIC_INNER_PRODUCT : faiss::METRIC_L2;
        faiss::IndexFlat quantizer(Idx(d), metric);
        std::unique_ptr<faiss::Index> owned;
        faiss::Index* target = nullptr;
        switch (index) {
        case STEER_KERNELS_SELFTEST_FLAT:
            target = &quantizer;
            break;
        case STEER_KERNELS_SELFTEST_IVF_FLAT: {
            auto ivf = std::make_unique<faiss::IndexIVFFlat>(&quantizer, d, nlist, metric);
            ivf->train(Idx(nb), xb);
            ivf->nprobe = nlist;
            target = ivf.get();
            owned = std::move(ivf);
            break;
        }
        default:
            set_error(error, "unknown index kind");
            return -1;
        }
        target->add(Idx(nb), xb);
        // One query per call keeps faiss on its per-vector kernels (it uses BLAS from 20 queries on).
        for (size_t q = 0; q < nq; q++) {
            target->search(1, xq + q * d, Idx(k), distances + q * k, labels + q * k);
        }
        return 0;
    } catch (const std::exception& e) {
        set_error(error, e.what());
        return -1;
    } catch (...) {
        set_error(error, "unknown C++ exception");
        return -1;
    }
#else
    (void)index, (void)inner_product, (void)nlist, (void)xb, (void)nb, (void)xq, (void)nq, (void)d, (void)k;
    (void)distances, (void)labels;
    set_error(error, "faiss headers not found at build time");
    return -1;
#endif
}
