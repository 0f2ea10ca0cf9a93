// CFaissShim: the C ABI over faiss 1.7.3 declared in steer_faiss.h. Every exported body runs inside
// `guarded`, so no C++ exception crosses into Swift.
#include "steer_faiss.h"
#include "steer_kernels.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexHNSW.h>
#include <faiss/IndexIDMap.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexPreTransform.h>
#include <faiss/VectorTransform.h>
#include <faiss/IndexScalarQuantizer.h>
#include <faiss/impl/DistanceComputer.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/IDSelector.h>
#include <faiss/impl/io.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <faiss/invlists/InvertedLists.h>
#include <faiss/utils/distances.h>
#include <faiss/utils/random.h>

#include <omp.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <queue>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <typeinfo>
#include <utility>
#include <vector>

#define STEER_STRINGIFY2(x) #x
#define STEER_STRINGIFY(x) STEER_STRINGIFY2(x)

using idx_t = faiss::Index::idx_t;

namespace {

// MARK: - Errors

/// A failure the shim detects itself, with its status code.
struct ShimError {
    int code;
    std::string message;
};

[[noreturn]] void fail(int code, std::string message) { throw ShimError{code, std::move(message)}; }

char* duplicate(const std::string& text) { return strdup(text.c_str()); }

void set_error(char** error, const std::string& text) {
    if (error) *error = duplicate(text);
}

/// Runs `body`, turning every exception into a status code and a message. `default_faiss_code` is the
/// status for faiss exceptions (INVALID for calls on caller data, CORRUPT while reading files).
template <class Body>
int guarded(char** error, Body&& body, int default_faiss_code = STEER_FAISS_INVALID) {
    if (error) *error = nullptr;
    try {
        body();
        return STEER_FAISS_OK;
    } catch (const ShimError& e) {
        set_error(error, e.message);
        return e.code;
    } catch (const faiss::FaissException& e) {
        set_error(error, std::string("faiss: ") + e.what());
        return default_faiss_code;
    } catch (const std::bad_alloc&) {
        set_error(error, "out of memory");
        return STEER_FAISS_INTERNAL;
    } catch (const std::exception& e) {
        set_error(error, std::string("unexpected C++ exception: ") + e.what());
        return default_faiss_code == STEER_FAISS_CORRUPT ? STEER_FAISS_CORRUPT : STEER_FAISS_INTERNAL;
    } catch (...) {
        set_error(error, "unexpected non-standard C++ exception");
        return STEER_FAISS_INTERNAL;
    }
}

// MARK: - Selectors

/// Membership in an ascending label array by binary search, or in a label bitset by one bit test.
/// faiss's IDSelectorArray is a linear scan, and IndexFlat treats an IDSelectorArray's ids as row
/// numbers without a bounds check (it reads out of bounds for ids >= ntotal), so Steer never hands
/// faiss an IDSelectorArray. Neither form allocates or throws.
struct SortedLabels {
    const int64_t* labels = nullptr;
    int64_t count = 0;
    const uint64_t* bits = nullptr;
    int64_t words = 0;
    bool active() const { return labels != nullptr || bits != nullptr; }
    bool contains(int64_t label) const {
        if (bits) {
            return label >= 0 && (label >> 6) < words && ((bits[label >> 6] >> (label & 63)) & 1) != 0;
        }
        return std::binary_search(labels, labels + count, label);
    }
    /// Calls f(label) for each allowed label, ascending.
    template <typename F> void for_each(F&& f) const {
        if (bits) {
            for (int64_t w = 0; w < words; w++) {
                uint64_t rest = bits[w];
                while (rest != 0) {
                    f((w << 6) | int64_t(__builtin_ctzll(rest)));
                    rest &= rest - 1;
                }
            }
            return;
        }
        for (int64_t i = 0; i < count; i++) f(labels[i]);
    }
};

struct SortedLabelSelector final : faiss::IDSelector {
    SortedLabels allowed;
    explicit SortedLabelSelector(SortedLabels allowed) : allowed(allowed) {}
    bool is_member(idx_t id) const override { return allowed.contains(id); }
};

/// Selects rows of IndexIDMap2's inner index whose label is allowed.
struct RowLabelSelector final : faiss::IDSelector {
    const std::vector<idx_t>* id_map;
    SortedLabels allowed;
    RowLabelSelector(const std::vector<idx_t>* id_map, SortedLabels allowed) : id_map(id_map), allowed(allowed) {}
    bool is_member(idx_t row) const override {
        return row >= 0 && size_t(row) < id_map->size() && allowed.contains((*id_map)[row]);
    }
};

// MARK: - Per-thread visited marks for the HNSW search

/// Epoch-stamped visited flags: clearing is one increment instead of an O(rows) fill, except once every
/// 255 searches. One byte per row (as faiss's VisitedTable), so the marks of a few million rows stay in L2.
struct VisitedMarks {
    std::vector<uint8_t> marks;
    uint8_t epoch = 0;
    void prepare(size_t rows) {
        if (marks.size() < rows) marks.resize(rows, 0);
        if (++epoch == 0) {
            std::fill(marks.begin(), marks.end(), 0);
            epoch = 1;
        }
    }
    /// Marks `row`; false if it was already marked in this search.
    bool visit(int64_t row) {
        if (marks[size_t(row)] == epoch) return false;
        marks[size_t(row)] = epoch;
        return true;
    }
    void prefetch(int64_t row) const { __builtin_prefetch(marks.data() + row); }
};

thread_local VisitedMarks tl_visited;

/// (distance, row) with distance "smaller is better" (inner products negated).
using Candidate = std::pair<float, int64_t>;

// MARK: - Direct distances over Flat rows

/// faiss's HNSW::neighbor_range, inline (libfaiss's is two out-of-line calls per expanded node).
inline void neighbor_range(const faiss::HNSW& hnsw, int64_t node, int level, size_t* begin, size_t* end) {
    const size_t o = hnsw.offsets[size_t(node)];
    *begin = o + size_t(hnsw.cum_nneighbor_per_level[size_t(level)]);
    *end = o + size_t(hnsw.cum_nneighbor_per_level[size_t(level) + 1]);
}

/// Prefetches the neighbour list of `node` at `level` (the next node a beam will expand).
inline void prefetch_links(const faiss::HNSW& hnsw, int64_t node, int level) {
    size_t begin, end;
    neighbor_range(hnsw, node, level, &begin, &end);
    const char* p = reinterpret_cast<const char*>(hnsw.neighbors.data() + begin);
    const size_t bytes = (end - begin) * sizeof(faiss::HNSW::storage_idx_t);
    for (size_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(p + offset);
}

/// The per-pair kernel faiss's Flat distance computers call now: inner product or squared L2.
steer_kernels_pair_fn pair_kernel(bool inner_product) {
    if (steer_kernels_compiled_for_faiss()) return steer_kernels_pair_kernel(inner_product ? 1 : 0);
    return inner_product ? &faiss::fvec_inner_product : &faiss::fvec_L2sqr;
}

/// Distances from a query to the rows of a Flat storage, "smaller is better" (inner products negated):
/// bit-identical to faiss's HNSW distance computer (the same kernel on the same operands, then the same
/// negation), without its two virtual calls and the kernel dispatch per pair.
struct RowDistance {
    steer_kernels_pair_fn kernel;
    const float* xb;
    size_t d;
    float sign;
    const float* query = nullptr;

    RowDistance(const faiss::IndexFlat& storage, bool inner_product)
        : kernel(pair_kernel(inner_product)), xb(storage.get_xb()), d(size_t(storage.d)),
          sign(inner_product ? -1.0f : 1.0f) {}

    void set_query(const float* q) { query = q; }
    float operator()(int64_t row) const { return sign * kernel(query, xb + size_t(row) * d, d); }
    /// faiss's `symmetric_dis(i, j)`: the distance between two stored rows.
    float between(int64_t i, int64_t j) const { return sign * kernel(xb + size_t(j) * d, xb + size_t(i) * d, d); }
    /// Asks for the first two cache lines of a row (the hardware streams the rest), so the rows of a
    /// batch load in parallel. More lines per row measured slower: too many misses in flight.
    void prefetch(int64_t row) const {
        const char* p = reinterpret_cast<const char*>(xb + size_t(row) * d);
        __builtin_prefetch(p);
        if (d > 16) __builtin_prefetch(p + 64);
    }
};

/// Distances from a query to the SQ8 codes of an `IndexHNSWSQ`'s storage through faiss's own
/// distance computer, "smaller is better" like `RowDistance` (faiss's SQ computer returns inner products
/// as similarities; IndexHNSW negates them the same way). The query is the float vector, the rows are
/// codes; `between` is faiss's `symmetric_dis` (code to code). One per call: faiss's distance computers
/// are not thread-safe. Built after the storage has its rows (it keeps the code pointer).
struct CodeDistance {
    std::unique_ptr<faiss::DistanceComputer> computer;
    const uint8_t* codes;
    size_t code_size;
    size_t d;
    float sign;

    CodeDistance(const faiss::IndexScalarQuantizer& storage, bool inner_product)
        : computer(storage.get_distance_computer()), codes(storage.codes.data()), code_size(storage.code_size),
          d(size_t(storage.d)), sign(inner_product ? -1.0f : 1.0f) {}

    void set_query(const float* q) { computer->set_query(q); }
    float operator()(int64_t row) const { return sign * (*computer)(row); }
    float between(int64_t i, int64_t j) const { return sign * computer->symmetric_dis(i, j); }
    void prefetch(int64_t row) const { __builtin_prefetch(codes + size_t(row) * code_size); }
};

/// A binary heap over a reusable vector, with std::priority_queue's exact push/pop order (push_back +
/// push_heap, pop_heap + pop_back): `top()` is the largest element under `Less`.
template <class T, class Less = std::less<T>>
struct ReusableHeap {
    std::vector<T> items;
    bool empty() const { return items.empty(); }
    size_t size() const { return items.size(); }
    const T& top() const { return items.front(); }
    void clear() { items.clear(); }
    template <class... Args>
    void emplace(Args&&... args) {
        items.emplace_back(std::forward<Args>(args)...);
        std::push_heap(items.begin(), items.end(), Less());
    }
    void pop() {
        std::pop_heap(items.begin(), items.end(), Less());
        items.pop_back();
    }
};

/// Per-thread buffers of the HNSW search, reused across queries.
struct SearchScratch {
    ReusableHeap<Candidate, std::greater<Candidate>> candidates; // nearest on top
    ReusableHeap<Candidate> results;                              // farthest on top
    std::vector<int64_t> ids;
    std::vector<float> distances;
    void reserve_neighbors(size_t count) {
        if (ids.size() < count) {
            ids.resize(count);
            distances.resize(count);
        }
    }
};

thread_local SearchScratch tl_search_scratch;

/// Rows inserted by `HnswInserter` since the process started (tests check that it ran).
std::atomic<uint64_t> g_steer_inserted{0};

/// Steer's HNSW insertion over faiss's graph, used for adds with one OpenMP thread. It runs faiss
/// 1.7.3's `hnsw_add_vertices` as that function runs on one thread: levels drawn by
/// `HNSW::prepare_level_tab`, points bucketed by level and shuffled with RandomGenerator(789), then per
/// point the greedy descent, `search_neighbors_to_add`, the neighbour-list pruning and `add_link` in
/// both directions, with the same heaps (std::priority_queue's order, faiss's comparators) and the same
/// floating-point operations. So it builds the same graph bit for bit (a test compares the saved indexes).
/// What differs is the cost: distances come straight from the Flat rows through the kernel pointer, each
/// neighbour list's unvisited rows are prefetched and computed as one batch before the heap updates
/// (which consume them in the original order), and there are no locks.
///
/// `Distance` is `RowDistance` (IndexHNSWFlat: the byte-identical path) or `CodeDistance`
/// (IndexHNSWSQ: the same algorithm over SQ8 codes, as faiss's add runs it over its SQ computer).
template <class Distance>
class HnswInserter {
public:
    using storage_idx_t = faiss::HNSW::storage_idx_t;
    using Closer = faiss::HNSW::NodeDistCloser;   // heap top: farthest
    using Farther = faiss::HNSW::NodeDistFarther; // heap top: nearest

    HnswInserter(faiss::HNSW& hnsw, Distance distance) : hnsw_(hnsw), distance_(std::move(distance)) {}

    /// Links rows n0 ..< n0 + n, whose vectors are x (n rows) and are already in the storage.
    /// `prepared` runs once the level table and neighbour lists are sized, before any linking.
    template <class Prepared>
    void add(size_t n0, size_t n, const float* x, bool preset_levels, Prepared&& prepared) {
        if (n == 0) return;
        hnsw_.prepare_level_tab(n, preset_levels);
        prepared();
        const size_t total = n0 + n;
        visited_.prepare(total);

        std::vector<int> hist;
        std::vector<storage_idx_t> order(n);
        for (size_t i = 0; i < n; i++) {
            const int pt_level = hnsw_.levels[n0 + i] - 1;
            while (pt_level >= int(hist.size())) hist.push_back(0);
            hist[size_t(pt_level)]++;
        }
        std::vector<size_t> offsets(hist.size() + 1, 0);
        for (size_t i = 0; i + 1 < hist.size(); i++) offsets[i + 1] = offsets[i] + size_t(hist[i]);
        for (size_t i = 0; i < n; i++) {
            const int pt_level = hnsw_.levels[n0 + i] - 1;
            order[offsets[size_t(pt_level)]++] = storage_idx_t(n0 + i);
        }

        faiss::RandomGenerator rng(789);
        size_t i1 = n;
        for (int pt_level = int(hist.size()) - 1; pt_level >= 0; pt_level--) {
            const size_t i0 = i1 - size_t(hist[size_t(pt_level)]);
            for (size_t j = i0; j < i1; j++) std::swap(order[j], order[j + size_t(rng.rand_int(int(i1 - j)))]);
            for (size_t i = i0; i < i1; i++) {
                const storage_idx_t pt_id = order[i];
                distance_.set_query(x + size_t(pt_id - storage_idx_t(n0)) * distance_.d);
                insert(pt_id, hnsw_.levels[size_t(pt_id)] - 1);
            }
            i1 = i0;
        }
        g_steer_inserted.fetch_add(n, std::memory_order_relaxed);
    }

private:
    faiss::HNSW& hnsw_;
    Distance distance_;
    VisitedMarks visited_;
    std::vector<storage_idx_t> batch_ids_;
    std::vector<float> batch_distances_;
    ReusableHeap<Farther> candidates_;
    ReusableHeap<Closer> link_targets_;
    ReusableHeap<Closer> link_heap_;
    ReusableHeap<Farther> shrink_input_;
    std::vector<Farther> shrink_output_;
    std::vector<storage_idx_t> linked_;

    /// faiss's add_with_locks on one thread.
    void insert(storage_idx_t pt_id, int pt_level) {
        storage_idx_t nearest = hnsw_.entry_point;
        if (nearest == -1) {
            hnsw_.max_level = pt_level;
            hnsw_.entry_point = pt_id;
            return;
        }
        int level = hnsw_.max_level;
        float d_nearest = distance_(nearest);
        for (; level > pt_level; level--) greedy_update_nearest(level, nearest, d_nearest);
        for (; level >= 0; level--) add_links_starting_from(pt_id, nearest, d_nearest, level);
        if (pt_level > hnsw_.max_level) {
            hnsw_.max_level = pt_level;
            hnsw_.entry_point = pt_id;
        }
    }

    /// The neighbours of `node` at `level` that `keep` accepts, into batch_ids_, prefetched; returns
    /// their count. Stops at the first -1 as faiss does.
    template <class Keep>
    size_t gather(storage_idx_t node, int level, Keep&& keep) {
        size_t begin, end;
        neighbor_range(hnsw_, node, level, &begin, &end);
        if (batch_ids_.size() < end - begin + 1) {
            batch_ids_.resize(end - begin + 1);
            batch_distances_.resize(end - begin + 1);
        }
        const storage_idx_t* links = hnsw_.neighbors.data();
        size_t count = 0;
        for (size_t j = begin; j < end; j++) {
            const storage_idx_t v = links[j];
            if (v < 0) break;
            if (!keep(v)) continue;
            batch_ids_[count++] = v;
            distance_.prefetch(v);
        }
        for (size_t i = 0; i < count; i++) batch_distances_[i] = distance_(batch_ids_[i]);
        return count;
    }

    void greedy_update_nearest(int level, storage_idx_t& nearest, float& d_nearest) {
        for (;;) {
            const storage_idx_t previous = nearest;
            const size_t count = gather(nearest, level, [](storage_idx_t) { return true; });
            for (size_t i = 0; i < count; i++) {
                if (batch_distances_[i] < d_nearest) {
                    nearest = batch_ids_[i];
                    d_nearest = batch_distances_[i];
                }
            }
            if (nearest == previous) return;
        }
    }

    /// faiss's search_neighbors_to_add: the efConstruction nearest rows found from the entry point.
    void search_neighbors_to_add(ReusableHeap<Closer>& results, storage_idx_t entry, float d_entry, int level) {
        const size_t ef = size_t(hnsw_.efConstruction);
        candidates_.clear();
        candidates_.emplace(d_entry, entry);
        results.emplace(d_entry, entry);
        visited_.prepare(0);
        visited_.visit(entry);
        while (!candidates_.empty()) {
            const Farther current = candidates_.top();
            if (current.d > results.top().d) break;
            candidates_.pop();
            const size_t count = gather(current.id, level, [&](storage_idx_t v) { return visited_.visit(v); });
            for (size_t i = 0; i < count; i++) {
                const float dis = batch_distances_[i];
                const storage_idx_t v = batch_ids_[i];
                if (results.size() < ef || results.top().d > dis) {
                    results.emplace(dis, v);
                    candidates_.emplace(dis, v);
                    if (results.size() > ef) results.pop();
                }
            }
            if (!candidates_.empty()) prefetch_links(hnsw_, candidates_.top().id, level);
        }
    }

    /// faiss's HNSW::shrink_neighbor_list: nearest first, keep a row unless a kept row is closer to it
    /// than the query is.
    void shrink_list(ReusableHeap<Farther>& input, std::vector<Farther>& output, size_t max_size) {
        while (!input.empty()) {
            const Farther v1 = input.top();
            input.pop();
            bool good = true;
            for (const Farther& v2 : output) {
                if (distance_.between(v2.id, v1.id) < v1.d) {
                    good = false;
                    break;
                }
            }
            if (good) {
                output.push_back(v1);
                if (output.size() >= max_size) return;
            }
        }
    }

    /// faiss's static shrink_neighbor_list over a farthest-on-top heap.
    void shrink_neighbor_list(ReusableHeap<Closer>& result_set, size_t max_size) {
        if (result_set.size() < max_size) return;
        shrink_input_.clear();
        shrink_output_.clear();
        while (!result_set.empty()) {
            shrink_input_.emplace(result_set.top().d, result_set.top().id);
            result_set.pop();
        }
        shrink_list(shrink_input_, shrink_output_, max_size);
        for (const Farther& kept : shrink_output_) result_set.emplace(kept.d, kept.id);
    }

    /// faiss's add_link: a free slot if there is one, else prune src's list together with dest.
    void add_link(storage_idx_t src, storage_idx_t dest, int level) {
        size_t begin, end;
        neighbor_range(hnsw_, src, level, &begin, &end);
        storage_idx_t* links = hnsw_.neighbors.data();
        if (links[end - 1] == -1) {
            size_t i = end;
            while (i > begin) {
                if (links[i - 1] != -1) break;
                i--;
            }
            links[i] = dest;
            return;
        }
        const size_t count = end - begin;
        if (batch_ids_.size() < count + 1) {
            batch_ids_.resize(count + 1);
            batch_distances_.resize(count + 1);
        }
        batch_ids_[0] = dest;
        for (size_t i = 0; i < count; i++) batch_ids_[i + 1] = links[begin + i];
        for (size_t i = 0; i <= count; i++) distance_.prefetch(batch_ids_[i]);
        for (size_t i = 0; i <= count; i++) batch_distances_[i] = distance_.between(src, batch_ids_[i]);
        link_heap_.clear();
        for (size_t i = 0; i <= count; i++) link_heap_.emplace(batch_distances_[i], batch_ids_[i]);
        shrink_neighbor_list(link_heap_, count);
        size_t i = begin;
        while (!link_heap_.empty()) {
            links[i++] = link_heap_.top().id;
            link_heap_.pop();
        }
        while (i < end) links[i++] = -1;
    }

    /// faiss's add_links_starting_from: link pt_id at `level` to its pruned efConstruction neighbours,
    /// and them back to it.
    void add_links_starting_from(storage_idx_t pt_id, storage_idx_t nearest, float d_nearest, int level) {
        link_targets_.clear();
        search_neighbors_to_add(link_targets_, nearest, d_nearest, level);
        shrink_neighbor_list(link_targets_, size_t(hnsw_.nb_neighbors(level)));
        linked_.clear();
        while (!link_targets_.empty()) {
            const storage_idx_t other = link_targets_.top().id;
            add_link(pt_id, other, level);
            linked_.push_back(other);
            link_targets_.pop();
        }
        for (storage_idx_t other : linked_) add_link(other, pt_id, level);
    }
};

void require(bool condition, const std::string& message);

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 // Linux 6.1
#endif

/// Asks the kernel to back the 2 MiB-aligned interior of [data, data + bytes) with transparent huge
/// pages, now (MADV_COLLAPSE) and for pages faulted in later (MADV_HUGEPAGE). HNSW reads a few cache
/// lines from random rows and neighbour lists spread over tens of MB: with 4 KiB pages nearly every such
/// read also misses the TLB. Best effort: errors (older kernels, THP off, no memory) are ignored, and
/// ranges already collapsed cost one page-table check per 2 MiB.
void advise_huge_pages(const void* data, size_t bytes) {
    constexpr uintptr_t huge = uintptr_t(2) << 20;
    if (bytes < 2 * huge) return;
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + huge - 1) & ~(huge - 1);
    const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(huge - 1);
    if (end <= begin) return;
    void* start = reinterpret_cast<void*>(begin);
    (void)madvise(start, end - begin, MADV_HUGEPAGE);
    (void)madvise(start, end - begin, MADV_COLLAPSE);
}

/// The large arrays an HNSW search or insertion reads at random: the Flat rows, the neighbour lists and
/// their offsets.
void advise_hnsw_huge_pages(const faiss::IndexHNSW& index) {
    if (const auto* storage = dynamic_cast<const faiss::IndexFlatCodes*>(index.storage)) {
        advise_huge_pages(storage->codes.data(), storage->codes.size());
    }
    const faiss::HNSW& graph = index.hnsw;
    advise_huge_pages(graph.neighbors.data(), graph.neighbors.size() * sizeof(graph.neighbors[0]));
    advise_huge_pages(graph.offsets.data(), graph.offsets.size() * sizeof(graph.offsets[0]));
}

/// IndexHNSWFlat/IndexHNSWSQ::add with Steer's insertion when OpenMP runs one thread in this thread
/// (the serving setting; the same graph as faiss's add would build there), else faiss's multi-threaded
/// add. SQ8 storage encodes the rows on the way in; the insertion measures float queries against codes.
void hnsw_add(faiss::IndexHNSW& index, int64_t n, const float* x) {
    if (omp_get_max_threads() != 1) {
        index.add(n, x);
        advise_hnsw_huge_pages(index);
        return;
    }
    require(index.is_trained, "the HNSW index is not trained");
    const bool inner_product = index.metric_type == faiss::METRIC_INNER_PRODUCT;
    const size_t n0 = size_t(index.ntotal);
    if (auto* storage = dynamic_cast<faiss::IndexFlat*>(index.storage)) {
        storage->add(n, x);
        index.ntotal = storage->ntotal;
        const bool preset_levels = index.hnsw.levels.size() == size_t(index.ntotal);
        HnswInserter<RowDistance> inserter(index.hnsw, RowDistance(*storage, inner_product));
        inserter.add(n0, size_t(n), x, preset_levels, [&] { advise_hnsw_huge_pages(index); });
        return;
    }
    auto* storage = dynamic_cast<faiss::IndexScalarQuantizer*>(index.storage);
    require(storage != nullptr, "HNSW storage must be Flat or SQ8");
    storage->add(n, x);
    index.ntotal = storage->ntotal;
    const bool preset_levels = index.hnsw.levels.size() == size_t(index.ntotal);
    HnswInserter<CodeDistance> inserter(index.hnsw, CodeDistance(*storage, inner_product));
    inserter.add(n0, size_t(n), x, preset_levels, [&] { advise_hnsw_huge_pages(index); });
}


/// The best `k` (distance, label) pairs, kept as a max-heap on distance.
struct BestK {
    size_t k;
    std::vector<Candidate> heap;
    explicit BestK(size_t k) : k(k) { heap.reserve(k + 1); }
    void offer(float distance, int64_t label) {
        if (k == 0) return;
        if (heap.size() < k) {
            heap.emplace_back(distance, label);
            std::push_heap(heap.begin(), heap.end());
        } else if (Candidate(distance, label) < heap.front()) {
            std::pop_heap(heap.begin(), heap.end());
            heap.back() = Candidate(distance, label);
            std::push_heap(heap.begin(), heap.end());
        }
    }
    /// Writes the kept pairs best first into one output row of k slots; score = -distance.
    void write(float* scores, int64_t* labels, size_t slots) {
        std::sort(heap.begin(), heap.end());
        for (size_t i = 0; i < slots; i++) {
            if (i < heap.size()) {
                scores[i] = -heap[i].first;
                labels[i] = heap[i].second;
            } else {
                scores[i] = -std::numeric_limits<float>::infinity();
                labels[i] = -1;
            }
        }
    }
};

faiss::MetricType faiss_metric(int metric) {
    switch (metric) {
    case STEER_METRIC_INNER_PRODUCT: return faiss::METRIC_INNER_PRODUCT;
    case STEER_METRIC_L2: return faiss::METRIC_L2;
    default: fail(STEER_FAISS_INVALID, "unknown metric code " + std::to_string(metric));
    }
}

void require(bool condition, const std::string& message) {
    if (!condition) fail(STEER_FAISS_INVALID, message);
}


// MARK: - Untrusted index files

/// Walks faiss 1.7.3's serialized bytes of the index types Steer writes before faiss reads them: Flat
/// (IxM2 around IxFI/IxF2/IxFl), HNSW (IHNf over IxFI/IxF2/IxFl) and IVF (IwFl, IwPQ, IwSQ/IwSq over a
/// Flat quantizer, with ArrayInvertedLists `ilar`), checking every declared vector length, list count,
/// list size and code size against the bytes left in the section; any other index type is refused.
/// faiss's READVECTOR resizes a vector to the length a file declares (up to 2^40 elements) before
/// reading it, and `ilar` sizes every list before reading any, so without this walk a 1 KiB file could
/// make it allocate and zero gigabytes; after it, what faiss allocates while reading is bounded by the
/// section's size (IVF-PQ's precomputed table, recomputed after the read, is capped by faiss at
/// `precomputed_table_max_bytes`, 2 GiB). Written by hand: faiss has no validating reader.
class SectionWalker {
public:
    SectionWalker(FILE* file, uint64_t offset, uint64_t length, std::string path)
        : file_(file), position_(offset), end_(offset + length), path_(std::move(path)) {}

    /// d and ntotal of an index header.
    struct Header {
        int64_t d = 0;
        int64_t ntotal = 0;
    };

    /// Walks one index (recursively for wrappers and quantizers); depth bounds the nesting.
    Header index(int depth = 0) {
        if (depth > 2) bad("indexes nested too deeply");
        const uint32_t h = u32();
        if (h == fourcc("IxM2") && depth == 0) {
            const Header outer = header();
            index(depth + 1);
            vector(sizeof(int64_t), "id_map");
            return outer;
        }
        if (h == fourcc("IxFI") || h == fourcc("IxF2") || h == fourcc("IxFl")) {
            const Header flat = header();
            vector(sizeof(float), "flat vectors");
            return flat;
        }
        if (h == fourcc("IxSQ") && depth == 1) {
            // IndexHNSWSQ's storage: header, ScalarQuantizer (qtype, rangestat, rangestat_arg, d,
            // code_size, trained), then the codes.
            const Header sq = header();
            skip(3 * 4, "SQ header");
            if (u64("SQ d") != uint64_t(sq.d)) bad("SQ dimension differs from the storage's");
            u64("SQ code_size");
            vector(sizeof(float), "SQ trained");
            vector(1, "SQ codes");
            return sq;
        }
        if ((h == fourcc("IHNf") || h == fourcc("IHNs")) && depth == 0) {
            const Header outer = header();
            vector(sizeof(double), "HNSW assign_probas");
            vector(sizeof(int), "HNSW cum_nneighbor_per_level");
            vector(sizeof(int), "HNSW levels");
            vector(sizeof(size_t), "HNSW offsets");
            vector(sizeof(faiss::HNSW::storage_idx_t), "HNSW neighbors");
            skip(5 * sizeof(int), "HNSW scalars"); // entry_point, max_level, efConstruction, efSearch, upper_beam
            // faiss reads the storage as any index: IHNf must hold Flat rows, IHNs SQ codes.
            const uint32_t storage = u32();
            position_ -= sizeof(uint32_t);
            const bool flat = storage == fourcc("IxFI") || storage == fourcc("IxF2") || storage == fourcc("IxFl");
            if (h == fourcc("IHNf") ? !flat : storage != fourcc("IxSQ")) {
                bad("HNSW storage " + printable(storage) + " does not belong to index type " + printable(h));
            }
            const Header inner = index(depth + 1);
            if (inner.d != outer.d) bad("HNSW storage dimension differs from the index's");
            return outer;
        }
        if ((h == fourcc("IwFl") || h == fourcc("IwPQ") || h == fourcc("IwSQ") || h == fourcc("IwSq")) && depth == 0) {
            return ivf(h);
        }
        if (h == fourcc("IxPT") && depth == 0) {
            // IndexPreTransform: header, the transform count, each transform, then the index. Steer
            // writes one OPQ rotation (saved by faiss as a plain LinearTransform "LTra": have_bias, A, b,
            // d_in, d_out, is_trained) in front of IVF-PQ.
            const Header outer = header();
            int32_t count = 0;
            read(&count, sizeof(count), "transform count");
            if (count != 1) bad("transform chain of " + std::to_string(count) + " transforms (Steer writes one OPQ matrix)");
            const uint32_t transform = u32();
            if (transform != fourcc("LTra")) bad("transform " + printable(transform) + " is not an OPQ matrix");
            skip(1, "OPQ have_bias");
            vector(sizeof(float), "OPQ matrix");
            vector(sizeof(float), "OPQ bias");
            skip(2 * sizeof(int32_t) + 1, "OPQ dimensions");
            const uint32_t inner = u32();
            if (inner != fourcc("IwPQ")) bad("an OPQ matrix must precede IVF-PQ, not " + printable(inner));
            ivf(inner);
            return outer;
        }
        bad("index type " + printable(h) + " is not one Steer writes" + (depth > 0 ? " inside another index" : ""));
    }

private:
    FILE* file_;
    uint64_t position_;
    uint64_t end_;
    std::string path_;

    static uint32_t fourcc(const char* s) {
        return uint32_t(uint8_t(s[0])) | uint32_t(uint8_t(s[1])) << 8 | uint32_t(uint8_t(s[2])) << 16 |
               uint32_t(uint8_t(s[3])) << 24;
    }

    [[noreturn]] void bad(const std::string& what) {
        fail(STEER_FAISS_CORRUPT, path_ + ": faiss section: " + what);
    }

    uint64_t left() const { return end_ - position_; }

    void read(void* out, size_t bytes, const char* what) {
        if (bytes > left()) bad(std::string(what) + " runs past the end of the section");
        if (fseeko(file_, off_t(position_), SEEK_SET) != 0 || fread(out, 1, bytes, file_) != bytes) {
            bad(std::string("cannot read ") + what);
        }
        position_ += bytes;
    }

    void skip(uint64_t bytes, const char* what) {
        if (bytes > left()) bad(std::string(what) + " runs past the end of the section");
        position_ += bytes;
    }

    uint32_t u32() {
        uint32_t value = 0;
        read(&value, sizeof(value), "index type");
        return value;
    }

    static std::string printable(uint32_t h) {
        std::string text;
        for (int i = 0; i < 4; i++) {
            const char c = char((h >> (8 * i)) & 0xFF);
            text += (c >= 32 && c < 127) ? c : '?';
        }
        return "'" + text + "'";
    }

    uint64_t u64(const char* what) {
        uint64_t value = 0;
        read(&value, sizeof(value), what);
        return value;
    }

    /// IVF: faiss's IVF header (index header, nlist, nprobe, the quantizer, the direct map), the
    /// family's own fields, then ArrayInvertedLists.
    Header ivf(uint32_t h) {
        const Header outer = header();
        const uint64_t nlist = u64("IVF nlist");
        u64("IVF nprobe");
        if (nlist < 1 || nlist > (uint64_t(1) << 20)) bad("nlist " + std::to_string(nlist) + " is out of range 1...1048576");
        const Header quantizer = index(1);
        if (quantizer.d != outer.d) bad("quantizer dimension differs from the index's");
        if (quantizer.ntotal != 0 && uint64_t(quantizer.ntotal) != nlist) bad("quantizer holds another count than nlist");
        uint8_t map_type = 0;
        read(&map_type, 1, "IVF direct map");
        vector(sizeof(int64_t), "IVF direct map");
        if (map_type == 2) vector(2 * sizeof(int64_t), "IVF direct map table");
        uint64_t code_size = uint64_t(outer.d) * sizeof(float);
        if (h == fourcc("IwPQ")) {
            skip(1, "IVF-PQ by_residual");
            code_size = u64("IVF-PQ code_size");
            const uint64_t d = u64("PQ d"), m = u64("PQ M"), nbits = u64("PQ nbits");
            if (d != uint64_t(outer.d) || m < 1 || m > 4096 || d % m != 0 || nbits < 1 || nbits > 16) {
                bad("PQ parameters (d " + std::to_string(d) + ", M " + std::to_string(m) + ", nbits " + std::to_string(nbits) + ") are invalid");
            }
            vector(sizeof(float), "PQ centroids");
        } else if (h == fourcc("IwSQ") || h == fourcc("IwSq")) {
            skip(3 * 4, "SQ header"); // qtype, rangestat, rangestat_arg
            if (u64("SQ d") != uint64_t(outer.d)) bad("SQ dimension differs from the index's");
            u64("SQ code_size");
            vector(sizeof(float), "SQ trained");
            code_size = u64("IVF-SQ code_size");
            if (h == fourcc("IwSq")) skip(1, "IVF-SQ by_residual");
        }
        if (code_size < 1 || code_size > (uint64_t(1) << 20)) bad("code size " + std::to_string(code_size) + " is out of range");
        inverted_lists(nlist, code_size);
        return outer;
    }

    /// ArrayInvertedLists: nlist, code_size, the list sizes ("full" or "sprs"), then each list's codes and ids.
    void inverted_lists(uint64_t nlist, uint64_t code_size) {
        const uint32_t h = u32();
        if (h != fourcc("ilar")) bad("inverted lists of type " + printable(h) + " are not read");
        if (u64("inverted list count") != nlist) bad("inverted list count differs from nlist");
        if (u64("inverted list code size") != code_size) bad("inverted list code size differs from the index's");
        const uint32_t type = u32();
        uint64_t entries = 0;
        auto add = [&](uint64_t size) {
            if (size > left() || entries + size > left()) bad("inverted list sizes exceed the section");
            entries += size;
        };
        if (type == fourcc("full")) {
            if (u64("inverted list sizes") != nlist) bad("inverted list sizes do not match nlist");
            u64s(nlist, "inverted list sizes", add);
        } else if (type == fourcc("sprs")) {
            const uint64_t count = u64("inverted list sizes");
            if (count % 2 != 0 || count > left() / 8) bad("sparse inverted list sizes are malformed");
            uint64_t seen = 0;
            u64s(count, "inverted list sizes", [&](uint64_t value) {
                if (seen++ % 2 == 0) {
                    if (value >= nlist) bad("sparse inverted list size names list " + std::to_string(value));
                } else {
                    add(value);
                }
            });
        } else {
            bad("inverted list sizes of type " + printable(type) + " are not read");
        }
        if (entries > left() / (code_size + sizeof(int64_t))) bad("inverted lists declare more entries than the section holds");
        position_ += entries * (code_size + sizeof(int64_t));
    }

    /// Reads `count` u64 values in blocks (count is already bounded by the section).
    template <class Each>
    void u64s(uint64_t count, const char* what, Each&& each) {
        if (count > left() / 8) bad(std::string(what) + " run past the end of the section");
        std::vector<uint64_t> block(std::min<uint64_t>(count, 4096));
        while (count > 0) {
            const size_t n = size_t(std::min<uint64_t>(count, block.size()));
            read(block.data(), n * 8, what);
            for (size_t i = 0; i < n; i++) each(block[i]);
            count -= n;
        }
    }

    /// faiss's index header: d, ntotal, two dummies, is_trained, metric_type (+ metric_arg).
    Header header() {
        int32_t d = 0;
        int64_t ntotal = 0;
        int32_t metric = 0;
        read(&d, sizeof(d), "index header");
        read(&ntotal, sizeof(ntotal), "index header");
        skip(2 * sizeof(int64_t) + 1, "index header");
        read(&metric, sizeof(metric), "index header");
        if (d < 1 || d > (1 << 16)) bad("dimension " + std::to_string(d) + " is out of range");
        if (ntotal < 0 || uint64_t(ntotal) > left()) bad("ntotal " + std::to_string(ntotal) + " exceeds the section");
        if (metric > 1) skip(sizeof(float), "index header");
        return Header{d, ntotal};
    }

    /// A faiss vector: a size_t element count, then the elements.
    void vector(size_t element, const char* what) {
        uint64_t count = 0;
        read(&count, sizeof(count), what);
        if (count > left() / element) {
            bad(std::string(what) + " declares " + std::to_string(count) + " elements, more than the " +
                std::to_string(left()) + " bytes left");
        }
        position_ += count * element;
    }
};

/// Checks the invariants Steer's HNSW search and insertion rely on, for a graph read from a file:
/// every offset, level, neighbour id and the entry point are in range and mutually consistent, so no
/// crafted graph can make them read or write outside faiss's arrays.
void validate_hnsw(const faiss::IndexHNSW& index, const std::string& path) {
    auto bad = [&](const std::string& what) { fail(STEER_FAISS_CORRUPT, path + ": HNSW graph: " + what); };
    const faiss::HNSW& g = index.hnsw;
    const auto* storage = dynamic_cast<const faiss::IndexFlatCodes*>(index.storage);
    if (!storage) bad("storage is not Flat or SQ8");
    const int64_t n = index.ntotal;
    if (n < 0 || storage->ntotal != n || storage->d != index.d) bad("storage holds another row count or dimension");
    if (storage->metric_type != index.metric_type) bad("storage has another metric than the index");
    if (index.reconstruct_from_neighbors != nullptr) bad("reconstruct_from_neighbors is set");
    if (dynamic_cast<const faiss::IndexHNSWFlat*>(&index)) {
        if (!dynamic_cast<const faiss::IndexFlat*>(storage) || storage->code_size != size_t(index.d) * sizeof(float)) {
            bad("IndexHNSWFlat storage is not Flat rows of the index's dimension");
        }
    } else if (dynamic_cast<const faiss::IndexHNSWSQ*>(&index)) {
        // faiss's SQ8 decoder reads vmin and vdiff per component from `trained` (2·d floats) with no
        // bounds check: anything else would read out of bounds.
        const auto* sq = dynamic_cast<const faiss::IndexScalarQuantizer*>(storage);
        if (!sq || sq->sq.qtype != faiss::ScalarQuantizer::QT_8bit) bad("IndexHNSWSQ storage is not SQ8");
        if (sq->sq.d != size_t(index.d) || sq->sq.code_size != size_t(index.d) || sq->code_size != size_t(index.d)) {
            bad("SQ8 dimension or code size differs from the index's");
        }
        const bool trained = sq->sq.trained.size() == 2 * size_t(index.d);
        if (!(trained || (sq->sq.trained.empty() && n == 0))) bad("SQ8 ranges hold " + std::to_string(sq->sq.trained.size()) + " values, not 2 per component");
        if (index.is_trained != trained || sq->is_trained != trained) bad("training flags disagree with the SQ8 ranges");
        for (float value : sq->sq.trained) {
            if (!std::isfinite(value)) bad("SQ8 ranges hold a non-finite value");
        }
    } else {
        bad("HNSW index is neither IndexHNSWFlat nor IndexHNSWSQ");
    }
    if (storage->codes.size() != size_t(n) * storage->code_size) bad("storage size does not match its rows");
    const auto& cum = g.cum_nneighbor_per_level;
    if (cum.size() < 2 || cum.size() > 64) bad("cum_nneighbor_per_level has " + std::to_string(cum.size()) + " entries");
    if (cum[0] != 0) bad("cum_nneighbor_per_level does not start at 0");
    for (size_t l = 1; l < cum.size(); l++) {
        if (cum[l] < cum[l - 1] || cum[l] - cum[l - 1] > 4096) bad("cum_nneighbor_per_level is not increasing by at most 4096");
    }
    if (g.assign_probas.size() + 1 != cum.size()) bad("assign_probas and cum_nneighbor_per_level disagree");
    for (double p : g.assign_probas) {
        if (!(p >= 0.0 && p <= 1.0)) bad("assign_probas holds a value outside [0, 1]");
    }
    if (g.levels.size() != size_t(n)) bad("levels has " + std::to_string(g.levels.size()) + " entries for " + std::to_string(n) + " rows");
    if (g.offsets.size() != size_t(n) + 1 || g.offsets[0] != 0) bad("offsets has the wrong length or does not start at 0");
    const int top = int(cum.size()) - 1;
    for (int64_t i = 0; i < n; i++) {
        const int level = g.levels[size_t(i)];
        if (level < 1 || level > top) bad("row " + std::to_string(i) + " has level " + std::to_string(level));
        if (g.offsets[size_t(i) + 1] != g.offsets[size_t(i)] + size_t(cum[size_t(level)])) {
            bad("offsets of row " + std::to_string(i) + " do not match its level");
        }
    }
    if (g.offsets[size_t(n)] != g.neighbors.size()) bad("offsets do not end at the neighbour array's length");
    // Every neighbour is -1 or a row that has the level of the list it is in (a search at level l
    // reads the level-l list of each neighbour it moves to).
    for (int64_t i = 0; i < n; i++) {
        const int level = g.levels[size_t(i)];
        for (int l = 0; l < level; l++) {
            const size_t begin = g.offsets[size_t(i)] + size_t(cum[size_t(l)]);
            const size_t end = g.offsets[size_t(i)] + size_t(cum[size_t(l) + 1]);
            for (size_t j = begin; j < end; j++) {
                const int64_t v = g.neighbors[j];
                if (v == -1) continue;
                if (v < 0 || v >= n) bad("row " + std::to_string(i) + " links to row " + std::to_string(v) + " of " + std::to_string(n));
                if (g.levels[size_t(v)] <= l) bad("row " + std::to_string(i) + " links at level " + std::to_string(l) + " to row " + std::to_string(v) + ", which is not on that level");
            }
        }
    }
    if (n == 0) {
        if (g.entry_point != -1 || g.max_level != -1) bad("an empty graph has an entry point");
    } else {
        if (g.entry_point < 0 || g.entry_point >= n) bad("entry point " + std::to_string(g.entry_point) + " is not a row");
        if (g.max_level != g.levels[size_t(g.entry_point)] - 1) bad("max_level " + std::to_string(g.max_level) + " is not the entry point's level");
    }
    if (g.efConstruction < 1 || g.efConstruction > 10000) bad("efConstruction " + std::to_string(g.efConstruction) + " is out of range");
}

/// IndexIDMap2 over Flat read from a file: the id map covers every row once with non-negative labels.
void validate_flat(const faiss::IndexIDMap2& idmap, const std::string& path) {
    auto bad = [&](const std::string& what) { fail(STEER_FAISS_CORRUPT, path + ": Flat index: " + what); };
    const auto* flat = dynamic_cast<const faiss::IndexFlat*>(idmap.index);
    if (!flat || flat->d != idmap.d || flat->ntotal != idmap.ntotal) bad("inner index holds another row count or dimension");
    if (flat->codes.size() != size_t(flat->ntotal) * size_t(flat->d) * sizeof(float)) bad("storage size does not match its rows");
    if (idmap.id_map.size() != size_t(idmap.ntotal)) bad("id map has the wrong length");
    for (int64_t label : idmap.id_map) {
        if (label < 0) bad("label " + std::to_string(label) + " is negative");
    }
    if (idmap.rev_map.size() != idmap.id_map.size()) bad("a label appears twice");
}

/// IVF read from a file: the coarse quantizer has one centroid per list, of the index's dimension.
void validate_ivf(const faiss::IndexIVF& ivf, const std::string& path) {
    auto bad = [&](const std::string& what) { fail(STEER_FAISS_CORRUPT, path + ": IVF index: " + what); };
    if (!ivf.quantizer || ivf.quantizer->d != ivf.d) bad("quantizer is missing or of another dimension");
    if (ivf.is_trained && ivf.quantizer->ntotal != int64_t(ivf.nlist)) bad("quantizer has another count than nlist");
    if (!ivf.invlists || ivf.invlists->nlist != ivf.nlist) bad("inverted lists are missing or of another count");
}

} // namespace

// MARK: - The handle

struct steer_index {
    int family = STEER_FAMILY_FLAT;
    int64_t dimension = 0;
    int metric = STEER_METRIC_INNER_PRODUCT;
    /// Owns the faiss index (for Flat: the IndexIDMap2, which owns its IndexFlat).
    std::unique_ptr<faiss::Index> index;
    faiss::IndexIDMap2* idmap = nullptr;   // Flat
    faiss::IndexHNSW* hnsw = nullptr;      // HNSW (IndexHNSWFlat, or IndexHNSWSQ over SQ8 codes)
    faiss::IndexIVF* ivf = nullptr;        // IVF* (for OPQ: the IVF-PQ inside the pre-transform)
    /// OPQ: the IndexPreTransform (owned by `index`) whose one LinearTransform rotates vectors and
    /// queries before the IVF-PQ sees them; nullptr otherwise.
    faiss::IndexPreTransform* pretransform = nullptr;

    // HNSW: faiss row → label (-1 = tombstone) and live label → row.
    std::vector<int64_t> row_labels;
    std::unordered_map<int64_t, int64_t> label_rows;
    int64_t tombstones = 0;

    // IVF: live labels (faiss keeps them only inside the inverted lists).
    std::unordered_set<int64_t> ivf_live;
    bool mapped = false;

    // HNSW compaction aside (steer_compaction_*): while one runs, every label a mutation touches is
    // recorded, so the finish step can bring the graph built from the snapshot up to date. A reset
    // during a compaction makes its result stale (`compaction_stale`).
    bool compaction_logging = false;
    bool compaction_stale = false;
    std::unordered_set<int64_t> compaction_touched;

    /// Distances are "smaller is better": L2 squared distances, negated inner products.
    float sign() const { return metric == STEER_METRIC_INNER_PRODUCT ? -1.0f : 1.0f; }

    /// The row storage of Flat and HNSW-Flat (an IndexFlat with rows in insertion order); nullptr for
    /// IVF and for HNSW over SQ8 codes.
    const faiss::IndexFlat* flat_storage() const {
        if (idmap) return dynamic_cast<const faiss::IndexFlat*>(idmap->index);
        if (hnsw) return dynamic_cast<const faiss::IndexFlat*>(hnsw->storage);
        return nullptr;
    }

    /// The SQ8 storage of an IndexHNSWSQ, else nullptr.
    const faiss::IndexScalarQuantizer* sq_storage() const {
        return hnsw ? dynamic_cast<const faiss::IndexScalarQuantizer*>(hnsw->storage) : nullptr;
    }

    /// The vector stored in an HNSW row: exact for Flat rows, decoded from the code for SQ8.
    void row_vector(int64_t row, float* out) const { hnsw->storage->reconstruct(row, out); }

    bool is_live(int64_t label) const {
        switch (family) {
        case STEER_FAMILY_FLAT: return idmap->rev_map.count(label) != 0;
        case STEER_FAMILY_HNSW: return label_rows.count(label) != 0;
        default: return ivf_live.count(label) != 0;
        }
    }

    int64_t live_count() const {
        switch (family) {
        case STEER_FAMILY_FLAT: return idmap->ntotal;
        case STEER_FAMILY_HNSW: return int64_t(label_rows.size());
        default: return int64_t(ivf_live.size());
        }
    }

    /// Memory-mapped IVF lists are read-only: copy them into memory before the first mutation.
    void make_writable() {
        if (!ivf || !mapped) return;
        auto lists = std::make_unique<faiss::ArrayInvertedLists>(ivf->nlist, ivf->code_size);
        for (size_t list = 0; list < ivf->nlist; list++) {
            size_t size = ivf->invlists->list_size(list);
            if (size == 0) continue;
            faiss::InvertedLists::ScopedCodes codes(ivf->invlists, list);
            faiss::InvertedLists::ScopedIds ids(ivf->invlists, list);
            lists->add_entries(list, size, ids.get(), codes.get());
        }
        ivf->replace_invlists(lists.release(), true);
        mapped = false;
    }

    void rebuild_ivf_live() {
        ivf_live.clear();
        for (size_t list = 0; list < ivf->nlist; list++) {
            size_t size = ivf->invlists->list_size(list);
            if (size == 0) continue;
            faiss::InvertedLists::ScopedIds ids(ivf->invlists, list);
            for (size_t j = 0; j < size; j++) {
                if (!ivf_live.insert(ids[j]).second) {
                    fail(STEER_FAISS_CORRUPT, "IVF lists hold label " + std::to_string(ids[j]) + " twice");
                }
            }
        }
    }

    void bind(faiss::Index* raw) {
        index.reset(raw);
        dimension = raw->d;
        if ((idmap = dynamic_cast<faiss::IndexIDMap2*>(raw))) {
            require(dynamic_cast<faiss::IndexFlat*>(idmap->index) != nullptr, "IndexIDMap2 must wrap a Flat index");
            family = STEER_FAMILY_FLAT;
        } else if ((hnsw = dynamic_cast<faiss::IndexHNSW*>(raw))) {
            const bool flat = dynamic_cast<faiss::IndexHNSWFlat*>(raw) && dynamic_cast<faiss::IndexFlat*>(hnsw->storage);
            const auto* sq = dynamic_cast<faiss::IndexScalarQuantizer*>(hnsw->storage);
            const bool sq8 = dynamic_cast<faiss::IndexHNSWSQ*>(raw) && sq && sq->sq.qtype == faiss::ScalarQuantizer::QT_8bit;
            require(flat || sq8, "HNSW storage must be Flat or SQ8");
            family = STEER_FAMILY_HNSW;
        } else if ((ivf = dynamic_cast<faiss::IndexIVF*>(raw))) {
            family = STEER_FAMILY_IVF;
        } else if ((pretransform = dynamic_cast<faiss::IndexPreTransform*>(raw))) {
            // OPQ in front of IVF-PQ: one linear transform (an OPQMatrix when made here, a plain
            // LinearTransform when read back) without bias, whose matrix has d_out × d_in entries once
            // trained (faiss's reader checks its size before it has read the dimensions).
            require(pretransform->chain.size() == 1, "a pre-transform must hold exactly one OPQ matrix");
            const auto* transform = pretransform->chain[0];
            const auto* linear = dynamic_cast<const faiss::LinearTransform*>(transform);
            require(linear && (dynamic_cast<const faiss::OPQMatrix*>(transform) || typeid(*transform) == typeid(faiss::LinearTransform)),
                    "the pre-transform is not an OPQ matrix");
            ivf = dynamic_cast<faiss::IndexIVFPQ*>(pretransform->index);
            require(ivf != nullptr, "an OPQ matrix must precede IVF-PQ");
            require(!linear->have_bias && linear->d_in == raw->d && linear->d_out == ivf->d && linear->d_out >= 1,
                    "OPQ matrix dimensions do not match the index");
            require(!linear->is_trained || linear->A.size() == size_t(linear->d_in) * size_t(linear->d_out),
                    "OPQ matrix has " + std::to_string(linear->A.size()) + " entries, not d_out × d_in");
            require(!ivf->is_trained || linear->is_trained, "IVF-PQ is trained but its OPQ matrix is not");
            family = STEER_FAMILY_IVF;
        } else {
            fail(STEER_FAISS_INVALID, "unsupported faiss index type");
        }
        switch (raw->metric_type) {
        case faiss::METRIC_INNER_PRODUCT: metric = STEER_METRIC_INNER_PRODUCT; break;
        case faiss::METRIC_L2: metric = STEER_METRIC_L2; break;
        default: fail(STEER_FAISS_INVALID, "unsupported faiss metric");
        }
    }

    // MARK: HNSW search (faiss 1.7.3 bug 2: SearchParametersHNSW::efSearch is ignored)

    /// One query over faiss's HNSW graph: greedy descent on the upper levels, then a beam of width
    /// `ef` on level 0. Tombstoned and disallowed rows are traversed but never returned; the beam
    /// keeps exploring until it holds `ef` acceptable rows, so k live results come back whenever the
    /// graph reaches k of them. Falls back to an exact scan when it does not.
    template <class Distance>
    void hnsw_search_one(Distance& distance, const float* query, size_t k, size_t ef,
                         const SortedLabels& allowed, float* scores, int64_t* labels) const {
        const faiss::HNSW& graph = hnsw->hnsw;
        const int64_t rows = hnsw->ntotal;
        BestK best(k);
        if (rows == 0 || graph.entry_point < 0) {
            best.write(scores, labels, k);
            return;
        }
        distance.set_query(query);
        auto acceptable = [&](int64_t row) {
            int64_t label = row_labels[size_t(row)];
            return label >= 0 && (!allowed.active() || allowed.contains(label));
        };
        SearchScratch& scratch = tl_search_scratch;
        VisitedMarks& visited = tl_visited;
        const faiss::HNSW::storage_idx_t* links = graph.neighbors.data();
        // The neighbours of `node` at `level` that `keep` accepts, prefetched, then their distances as
        // one batch (the heap updates below consume them in list order, as a one-by-one loop would).
        auto gather = [&](int64_t node, int level, auto&& keep) {
            size_t begin, end;
            neighbor_range(graph, node, level, &begin, &end);
            scratch.reserve_neighbors(end - begin);
            size_t count = 0;
            for (size_t j = begin; j < end; j++) {
                const int64_t next = links[j];
                if (next < 0) break;
                if (!keep(next)) continue;
                scratch.ids[count++] = next;
                distance.prefetch(next);
            }
            for (size_t i = 0; i < count; i++) scratch.distances[i] = distance(scratch.ids[i]);
            return count;
        };

        int64_t current = graph.entry_point;
        float current_distance = distance(current);
        for (int level = graph.max_level; level >= 1; level--) {
            bool improved = true;
            while (improved) {
                improved = false;
                const size_t count = gather(current, level, [](int64_t) { return true; });
                for (size_t i = 0; i < count; i++) {
                    if (scratch.distances[i] < current_distance) {
                        current_distance = scratch.distances[i];
                        current = scratch.ids[i];
                        improved = true;
                    }
                }
            }
        }

        visited.prepare(size_t(rows));
        int64_t visited_count = 1;
        auto& candidates = scratch.candidates;
        auto& results = scratch.results; // acceptable rows, at most ef
        candidates.clear();
        results.clear();
        visited.visit(current);
        candidates.emplace(current_distance, current);
        if (acceptable(current)) results.emplace(current_distance, current);
        while (!candidates.empty()) {
            Candidate top = candidates.top();
            if (results.size() >= ef && top.first > results.top().first) break;
            candidates.pop();
            size_t begin, end;
            neighbor_range(graph, top.second, 0, &begin, &end);
            for (size_t j = begin; j < end && links[j] >= 0; j++) visited.prefetch(links[j]);
            const size_t count = gather(top.second, 0, [&](int64_t row) { return visited.visit(row); });
            visited_count += int64_t(count);
            for (size_t i = 0; i < count; i++) {
                const float d = scratch.distances[i];
                const int64_t next = scratch.ids[i];
                if (results.size() < ef || d < results.top().first) {
                    candidates.emplace(d, next);
                    if (acceptable(next)) {
                        results.emplace(d, next);
                        if (results.size() > ef) results.pop();
                    }
                }
            }
            if (!candidates.empty()) prefetch_links(graph, candidates.top().second, 0);
        }

        if (results.size() < k && visited_count < rows) {
            // The beam ran dry before reaching k acceptable rows (rows the graph does not reach):
            // answer exactly instead.
            for (int64_t row = 0; row < rows; row++) {
                if (acceptable(row)) best.offer(distance(row), row_labels[size_t(row)]);
            }
        } else {
            while (!results.empty()) {
                best.offer(results.top().first, row_labels[size_t(results.top().second)]);
                results.pop();
            }
        }
        best.write(scores, labels, k);
    }

    /// Exact search over a small allowed set by label lookup (Flat and HNSW).
    void exact_allowed_one(faiss::DistanceComputer& dc, const float* query, size_t k, const SortedLabels& allowed,
                           float* scores, int64_t* labels) const {
        BestK best(k);
        const float s = sign();
        dc.set_query(query);
        allowed.for_each([&](int64_t label) {
            int64_t row = -1;
            if (idmap) {
                auto found = idmap->rev_map.find(label);
                if (found != idmap->rev_map.end()) row = found->second;
            } else {
                auto found = label_rows.find(label);
                if (found != label_rows.end()) row = found->second;
            }
            if (row >= 0) best.offer(s * dc(row), label);
        });
        best.write(scores, labels, k);
    }

    void search(int64_t n, const float* queries, int64_t k, const steer_search_params& params, float* scores,
                int64_t* labels) const {
        require(k > 0, "k must be at least 1");
        SortedLabels allowed;
        if (params.allowed_bits) {
            allowed.bits = params.allowed_bits;
            allowed.words = std::max<int64_t>(params.allowed_bits_words, 0);
            allowed.count = params.allowed_count;
        } else if (params.allowed) {
            allowed.labels = params.allowed;
            allowed.count = params.allowed_count;
        }
        const bool small_filter = allowed.active() && allowed.count <= params.exact_filter_threshold;
        const size_t uk = size_t(k);

        if (family == STEER_FAMILY_IVF) {
            search_ivf(n, queries, k, params, allowed, small_filter, scores, labels);
            return;
        }
        if (family == STEER_FAMILY_FLAT && !small_filter) {
            // faiss 1.7.3 bug 3: IndexIDMap2::search rejects SearchParameters, so search the inner
            // IndexFlat with a row selector and map rows to labels here.
            RowLabelSelector selector(&idmap->id_map, allowed);
            faiss::SearchParameters search_params;
            if (allowed.active()) search_params.sel = &selector;
            std::vector<float> distances(size_t(n) * uk);
            std::vector<idx_t> rows(size_t(n) * uk);
            idmap->index->search(n, queries, k, distances.data(), rows.data(), &search_params);
            const bool ip = metric == STEER_METRIC_INNER_PRODUCT;
            for (size_t i = 0; i < size_t(n) * uk; i++) {
                idx_t row = rows[i];
                if (row < 0 || size_t(row) >= idmap->id_map.size()) {
                    labels[i] = -1;
                    scores[i] = -std::numeric_limits<float>::infinity();
                } else {
                    labels[i] = idmap->id_map[size_t(row)];
                    scores[i] = ip ? distances[i] : -distances[i];
                }
            }
            return;
        }
        // HNSW, or a small allowed set on Flat: one distance computer per call (they are not
        // thread-safe), queries one after another (concurrency comes from concurrent calls).
        // HNSW over SQ8 scores codes (approximate; the engine rescores with the float vectors).
        const faiss::Index* storage = idmap ? idmap->index : hnsw->storage;
        std::unique_ptr<faiss::DistanceComputer> dc(storage->get_distance_computer());
        const size_t ef = std::max(size_t(std::max<int64_t>(params.ef_search, 1)), uk);
        auto each_query = [&](auto& distance) {
            for (int64_t q = 0; q < n; q++) {
                const float* query = queries + size_t(q) * size_t(dimension);
                float* row_scores = scores + size_t(q) * uk;
                int64_t* row_labels_out = labels + size_t(q) * uk;
                if (small_filter) {
                    exact_allowed_one(*dc, query, uk, allowed, row_scores, row_labels_out);
                } else {
                    hnsw_search_one(distance, query, uk, ef, allowed, row_scores, row_labels_out);
                }
            }
        };
        const bool inner_product = metric == STEER_METRIC_INNER_PRODUCT;
        if (const auto* sq = sq_storage()) {
            CodeDistance distance(*sq, inner_product);
            each_query(distance);
        } else {
            RowDistance distance(*flat_storage(), inner_product);
            each_query(distance);
        }
    }

    /// IVF: per-call nprobe through SearchParametersIVF (thread-safe in 1.7.3), the filter as an
    /// IDSelector inside the list scan. A small allowed set probes every list; a larger one scales
    /// nprobe by (live items / allowed labels). A query that comes back
    /// with fewer than k results is retried with twice the probes until all lists are probed, so k
    /// results come back whenever k live allowed items exist.
    void search_ivf(int64_t n, const float* queries, int64_t k, const steer_search_params& params,
                    const SortedLabels& allowed, bool small_filter, float* scores, int64_t* labels) const {
        require(ivf->is_trained, "the IVF index is not trained");
        const size_t uk = size_t(k);
        const size_t nlist = ivf->nlist;
        SortedLabelSelector selector(allowed);
        size_t nprobe = std::min(size_t(std::max<int64_t>(params.nprobe, 1)), nlist);
        const int64_t live = int64_t(ivf_live.size());
        if (small_filter) {
            nprobe = nlist;
        } else if (allowed.active() && allowed.count < live) {
            // A filter keeping a share s of the items leaves about s of each probed list: probe 1/s
            // times as many lists so the filtered scan sees as many candidates as an unfiltered one.
            double scaled = double(nprobe) * double(live) / double(std::max<int64_t>(allowed.count, 1));
            nprobe = size_t(std::min(double(nlist), std::ceil(scaled)));
        }
        // OPQ: rotate the queries once; the IVF-PQ searches in the rotated space (ivf->d components).
        std::unique_ptr<const float[]> rotated;
        if (pretransform) {
            const float* x = pretransform->apply_chain(n, queries);
            if (x != queries) rotated.reset(x);
            queries = x;
        }
        const size_t query_dimension = size_t(ivf->d);
        std::vector<float> distances(size_t(n) * uk);
        std::vector<idx_t> found(size_t(n) * uk);
        auto run = [&](int64_t count, const float* x, size_t probes, float* d, idx_t* l) {
            faiss::SearchParametersIVF search_params;
            search_params.nprobe = probes;
            if (allowed.active()) search_params.sel = &selector;
            ivf->search(count, x, k, d, l, &search_params);
        };
        run(n, queries, nprobe, distances.data(), found.data());
        for (int64_t q = 0; q < n; q++) {
            size_t probes = nprobe;
            float* d = distances.data() + size_t(q) * uk;
            idx_t* l = found.data() + size_t(q) * uk;
            auto filled = [&] { return int64_t(std::count_if(l, l + uk, [](idx_t x) { return x >= 0; })); };
            while (probes < nlist && filled() < std::min<int64_t>(k, live)) {
                probes = std::min(nlist, probes * 2);
                run(1, queries + size_t(q) * query_dimension, probes, d, l);
            }
        }
        const bool ip = metric == STEER_METRIC_INNER_PRODUCT;
        for (size_t i = 0; i < size_t(n) * uk; i++) {
            labels[i] = found[i];
            scores[i] = found[i] < 0 ? -std::numeric_limits<float>::infinity() : (ip ? distances[i] : -distances[i]);
        }
    }

    // MARK: Mutation

    void add(int64_t n, const float* vectors, const int64_t* labels) {
        require(n >= 0, "negative vector count");
        if (n == 0) return;
        {
            std::unordered_set<int64_t> seen;
            seen.reserve(size_t(n));
            for (int64_t i = 0; i < n; i++) {
                require(labels[i] >= 0, "label " + std::to_string(labels[i]) + " is negative");
                require(seen.insert(labels[i]).second, "label " + std::to_string(labels[i]) + " appears twice");
            }
        }
        std::vector<int64_t> replaced;
        for (int64_t i = 0; i < n; i++) {
            if (is_live(labels[i])) replaced.push_back(labels[i]);
        }
        switch (family) {
        case STEER_FAMILY_FLAT: {
            if (!replaced.empty()) {
                faiss::IDSelectorBatch selector(replaced.size(), replaced.data());
                idmap->remove_ids(selector);
            }
            idmap->add_with_ids(n, vectors, labels);
            break;
        }
        case STEER_FAMILY_HNSW: {
            for (int64_t label : replaced) tombstone(label);
            if (compaction_logging) compaction_touched.insert(labels, labels + n);
            int64_t first = hnsw->ntotal;
            row_labels.reserve(size_t(first + n));
            hnsw_add(*hnsw, n, vectors);
            for (int64_t i = 0; i < n; i++) {
                row_labels.push_back(labels[i]);
                label_rows[labels[i]] = first + i;
            }
            break;
        }
        default: {
            require(ivf->is_trained, "the IVF index is not trained");
            make_writable();
            if (!replaced.empty()) {
                faiss::IDSelectorBatch selector(replaced.size(), replaced.data());
                index->remove_ids(selector);
                for (int64_t label : replaced) ivf_live.erase(label);
            }
            index->add_with_ids(n, vectors, labels); // OPQ: IndexPreTransform rotates, then adds
            for (int64_t i = 0; i < n; i++) ivf_live.insert(labels[i]);
            break;
        }
        }
    }

    void tombstone(int64_t label) {
        auto found = label_rows.find(label);
        if (found == label_rows.end()) return;
        if (compaction_logging) compaction_touched.insert(label);
        row_labels[size_t(found->second)] = -1;
        label_rows.erase(found);
        tombstones++;
    }

    int64_t remove(int64_t n, const int64_t* labels) {
        std::vector<int64_t> live;
        {
            std::unordered_set<int64_t> seen;
            for (int64_t i = 0; i < n; i++) {
                if (is_live(labels[i]) && seen.insert(labels[i]).second) live.push_back(labels[i]);
            }
        }
        if (live.empty()) return 0;
        switch (family) {
        case STEER_FAMILY_FLAT: {
            faiss::IDSelectorBatch selector(live.size(), live.data());
            idmap->remove_ids(selector);
            break;
        }
        case STEER_FAMILY_HNSW:
            for (int64_t label : live) tombstone(label);
            break;
        default: {
            make_writable();
            faiss::IDSelectorBatch selector(live.size(), live.data());
            index->remove_ids(selector);
            for (int64_t label : live) ivf_live.erase(label);
            break;
        }
        }
        return int64_t(live.size());
    }

    /// The live rows (vectors and labels) in row order: the input of a rebuild.
    /// SQ8 rows come back decoded; re-encoding a decoded SQ8 vector gives its code back (the decoded
    /// value is the centre of the code's bucket), so a rebuild keeps the codes.
    void live_rows(std::vector<float>& vectors, std::vector<int64_t>& labels) const {
        vectors.reserve(label_rows.size() * size_t(dimension));
        labels.reserve(label_rows.size());
        for (size_t row = 0; row < row_labels.size(); row++) {
            if (row_labels[row] < 0) continue;
            vectors.resize(vectors.size() + size_t(dimension));
            row_vector(int64_t(row), vectors.data() + vectors.size() - size_t(dimension));
            labels.push_back(row_labels[row]);
        }
    }

    /// An empty HNSW graph with this one's parameters (and, over SQ8, its trained ranges).
    std::unique_ptr<faiss::IndexHNSW> empty_hnsw() const {
        std::unique_ptr<faiss::IndexHNSW> rebuilt;
        if (const auto* sq = sq_storage()) {
            auto made = std::make_unique<faiss::IndexHNSWSQ>(int(dimension), sq->sq.qtype, hnsw->hnsw.nb_neighbors(1), index->metric_type);
            auto* storage = static_cast<faiss::IndexScalarQuantizer*>(made->storage);
            storage->sq = sq->sq;
            storage->is_trained = sq->is_trained;
            made->is_trained = hnsw->is_trained;
            rebuilt = std::move(made);
        } else {
            rebuilt = std::make_unique<faiss::IndexHNSWFlat>(int(dimension), hnsw->hnsw.nb_neighbors(1), index->metric_type);
        }
        rebuilt->hnsw.efConstruction = hnsw->hnsw.efConstruction;
        rebuilt->hnsw.efSearch = hnsw->hnsw.efSearch;
        return rebuilt;
    }

    /// Makes `rebuilt` the graph: its rows carry `labels` (-1 = tombstone), `rows` maps each live label
    /// to its row and `dead` counts the tombstones. Constant time.
    void install(std::unique_ptr<faiss::IndexHNSW> rebuilt, std::vector<int64_t> labels,
                 std::unordered_map<int64_t, int64_t> rows, int64_t dead) {
        hnsw = rebuilt.get();
        index = std::move(rebuilt);
        row_labels = std::move(labels);
        label_rows = std::move(rows);
        tombstones = dead;
    }

    static std::unordered_map<int64_t, int64_t> rows_of(const std::vector<int64_t>& labels) {
        std::unordered_map<int64_t, int64_t> rows;
        rows.reserve(labels.size());
        for (size_t row = 0; row < labels.size(); row++) rows[labels[row]] = int64_t(row);
        return rows;
    }

    /// Rebuilds in place (the caller holds exclusive access throughout).
    void compact() {
        if (family != STEER_FAMILY_HNSW || tombstones == 0) return;
        std::vector<float> vectors;
        std::vector<int64_t> labels;
        live_rows(vectors, labels);
        auto rebuilt = empty_hnsw();
        if (!labels.empty()) hnsw_add(*rebuilt, idx_t(labels.size()), vectors.data());
        auto rows = rows_of(labels);
        install(std::move(rebuilt), std::move(labels), std::move(rows), 0);
    }

    void reset() {
        if (compaction_logging) compaction_stale = true;
        if (ivf && mapped) {
            // Nothing to copy: swap the mapped lists for empty in-memory ones.
            ivf->replace_invlists(new faiss::ArrayInvertedLists(ivf->nlist, ivf->code_size), true);
            mapped = false;
        }
        index->reset();
        row_labels.clear();
        label_rows.clear();
        tombstones = 0;
        ivf_live.clear();
    }
};

/// A compaction built aside: the live rows at `steer_compaction_begin` and the graph built from them.
struct steer_compaction {
    std::vector<float> vectors;
    std::vector<int64_t> labels;
    std::unique_ptr<faiss::IndexHNSW> rebuilt;
    /// Live label → row of `rebuilt` (made in the build step, so the finish step stays short).
    std::unordered_map<int64_t, int64_t> rows;
};

// MARK: - Exported functions

namespace {
/// Slicing-by-8 CRC-32 tables (reflected polynomial 0xEDB88320), built once.
struct Crc32Tables {
    uint32_t table[8][256];
    Crc32Tables() {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
            table[0][i] = c;
        }
        for (uint32_t i = 0; i < 256; i++) {
            for (int t = 1; t < 8; t++) table[t][i] = (table[t - 1][i] >> 8) ^ table[0][table[t - 1][i] & 0xFF];
        }
    }
};
const Crc32Tables& crc_tables() {
    static const Crc32Tables tables;
    return tables;
}
} // namespace


extern "C" {

void steer_faiss_free(void* pointer) { free(pointer); }

const char* steer_faiss_version(void) {
    return STEER_STRINGIFY(FAISS_VERSION_MAJOR) "." STEER_STRINGIFY(FAISS_VERSION_MINOR) "." STEER_STRINGIFY(
            FAISS_VERSION_PATCH);
}

int steer_faiss_omp_max_threads(void) { return omp_get_max_threads(); }

void steer_faiss_set_omp_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }


uint32_t steer_crc32(uint32_t crc, const void* bytes, size_t length) {
    const auto& t = crc_tables().table;
    const uint8_t* p = static_cast<const uint8_t*>(bytes);
    uint32_t c = ~crc;
    while (length >= 8) {
        uint32_t lo, hi;
        memcpy(&lo, p, 4);
        memcpy(&hi, p + 4, 4);
        lo ^= c;
        c = t[7][lo & 0xFF] ^ t[6][(lo >> 8) & 0xFF] ^ t[5][(lo >> 16) & 0xFF] ^ t[4][lo >> 24] ^ t[3][hi & 0xFF] ^
            t[2][(hi >> 8) & 0xFF] ^ t[1][(hi >> 16) & 0xFF] ^ t[0][hi >> 24];
        p += 8;
        length -= 8;
    }
    while (length--) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xFF];
    return ~c;
}

int steer_file_crc32(const char* path, uint64_t offset, uint64_t length, uint32_t* crc_out, char** error) {
    return guarded(error, [&] {
        FILE* file = fopen(path, "rb");
        if (!file) fail(STEER_FAISS_IO, std::string(path) + ": " + strerror(errno));
        std::unique_ptr<FILE, int (*)(FILE*)> closer(file, fclose);
        if (fseeko(file, off_t(offset), SEEK_SET) != 0) fail(STEER_FAISS_IO, std::string(path) + ": seek failed");
        std::vector<uint8_t> buffer(1 << 20);
        uint32_t crc = 0;
        uint64_t left = length;
        while (left > 0) {
            size_t want = size_t(std::min<uint64_t>(left, buffer.size()));
            size_t got = fread(buffer.data(), 1, want, file);
            if (got != want) fail(STEER_FAISS_CORRUPT, std::string(path) + ": file is shorter than its header says");
            crc = steer_crc32(crc, buffer.data(), got);
            left -= got;
        }
        *crc_out = crc;
    });
}

int steer_index_create(const char* factory, int64_t dimension, int metric, int64_t ef_construction,
                       steer_index** out, char** error) {
    *out = nullptr;
    return guarded(error, [&] {
        require(factory != nullptr, "factory string is NULL");
        require(dimension > 0 && dimension <= (1 << 16), "dimension must be in 1...65536");
        faiss::MetricType fm = faiss_metric(metric);
        std::string spec(factory);
        auto handle = std::make_unique<steer_index>();
        if (spec == "Flat") {
            auto wrapped = std::make_unique<faiss::IndexIDMap2>(new faiss::IndexFlat(faiss::Index::idx_t(dimension), fm));
            wrapped->own_fields = true;
            handle->bind(wrapped.release());
        } else {
            std::unique_ptr<faiss::Index> made(faiss::index_factory(int(dimension), factory, fm));
            const bool hnsw_flat = dynamic_cast<faiss::IndexHNSWFlat*>(made.get()) != nullptr;
            const auto* hnsw_sq = dynamic_cast<faiss::IndexHNSWSQ*>(made.get());
            if (hnsw_flat || hnsw_sq) {
                require(spec.rfind("HNSW", 0) == 0 && spec.find(',') == std::string::npos,
                        "unsupported HNSW factory string '" + spec + "'");
                if (hnsw_sq) {
                    const auto* sq = dynamic_cast<const faiss::IndexScalarQuantizer*>(hnsw_sq->storage);
                    require(sq && sq->sq.qtype == faiss::ScalarQuantizer::QT_8bit && sq->metric_type == fm,
                            "HNSW over SQ codes must be SQ8 with the index's metric ('" + spec + "')");
                }
                auto* h = static_cast<faiss::IndexHNSW*>(made.get());
                require(h->metric_type == fm, "faiss made '" + spec + "' with another metric");
                h->hnsw.efConstruction = int(std::max<int64_t>(ef_construction, 1));
            } else {
                // IVF, or OPQ in front of IVF-PQ: the IVF must have a Flat coarse quantizer.
                faiss::Index* inner = made.get();
                if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(inner)) {
                    require(spec.rfind("OPQ", 0) == 0 && pt->chain.size() == 1 &&
                                    dynamic_cast<faiss::OPQMatrix*>(pt->chain[0]) != nullptr &&
                                    dynamic_cast<faiss::IndexIVFPQ*>(pt->index) != nullptr,
                            "unsupported factory string '" + spec + "'");
                    inner = pt->index;
                }
                auto* ivf = dynamic_cast<faiss::IndexIVF*>(inner);
                if (ivf == nullptr || ivf->quantizer == nullptr || dynamic_cast<faiss::IndexFlat*>(ivf->quantizer) == nullptr) {
                    fail(STEER_FAISS_INVALID, "unsupported factory string '" + spec + "'");
                }
                require(ivf->metric_type == fm, "faiss made '" + spec + "' with another metric");
            }
            faiss::Index* coded = made.get();
            if (auto* pt = dynamic_cast<faiss::IndexPreTransform*>(coded)) coded = pt->index;
            if (auto* pq = dynamic_cast<faiss::IndexIVFPQ*>(coded)) {
                // faiss turns on polysemous training for IVF-PQ by default: it only helps polysemous
                // (Hamming-filtered) search, which Steer does not use, and it dominated training time
                // (60% of a whole test run).
                pq->do_polysemous_training = false;
            }
            handle->bind(made.release());
        }
        handle->metric = metric;
        *out = handle.release();
    });
}

void steer_index_free(steer_index* index) {
    try {
        delete index;
    } catch (...) {
    }
}

int steer_index_family(const steer_index* index) { return index->family; }
int64_t steer_index_dimension(const steer_index* index) { return index->dimension; }
int steer_index_metric(const steer_index* index) { return index->metric; }
int steer_index_is_trained(const steer_index* index) { return index->index->is_trained ? 1 : 0; }
int64_t steer_index_count(const steer_index* index) { return index->live_count(); }
int64_t steer_index_tombstones(const steer_index* index) { return index->tombstones; }
int64_t steer_index_rows(const steer_index* index) { return index->index->ntotal; }
int steer_index_contains(const steer_index* index, int64_t label) {
    try {
        return index->is_live(label) ? 1 : 0;
    } catch (...) {
        return 0;
    }
}
int64_t steer_index_lists(const steer_index* index) { return index->ivf ? int64_t(index->ivf->nlist) : 0; }
int64_t steer_index_opq_dimension(const steer_index* index) {
    return index->pretransform ? int64_t(index->pretransform->chain[0]->d_out) : 0;
}
int64_t steer_index_ef_construction(const steer_index* index) { return index->hnsw ? index->hnsw->hnsw.efConstruction : 0; }
int64_t steer_index_hnsw_m(const steer_index* index) { return index->hnsw ? index->hnsw->hnsw.nb_neighbors(1) : 0; }
int steer_index_hnsw_sq8(const steer_index* index) { return index->sq_storage() != nullptr ? 1 : 0; }
int steer_index_is_mapped(const steer_index* index) { return index->mapped ? 1 : 0; }

int steer_index_train(steer_index* index, int64_t n, const float* vectors, char** error) {
    return guarded(error, [&] {
        if (index->family == STEER_FAMILY_HNSW) {
            // IndexHNSWSQ trains its SQ8 ranges (IndexHNSW::train trains the storage); Flat rows need none.
            if (index->sq_storage() == nullptr) return;
            require(n > 0, "training needs at least one vector");
            require(index->hnsw->ntotal == 0, "the HNSW index holds vectors; reset it before training");
            index->hnsw->train(n, vectors);
            return;
        }
        if (index->family != STEER_FAMILY_IVF) return;
        require(n > 0, "training needs at least one vector");
        index->make_writable();
        // OPQ: IndexPreTransform trains the rotation, then the IVF-PQ on rotated vectors.
        index->index->train(n, vectors);
    });
}

int steer_index_add(steer_index* index, int64_t n, const float* vectors, const int64_t* labels, char** error) {
    return guarded(error, [&] { index->add(n, vectors, labels); });
}

int steer_index_remove(steer_index* index, int64_t n, const int64_t* labels, int64_t* removed_out, char** error) {
    *removed_out = 0;
    return guarded(error, [&] { *removed_out = index->remove(n, labels); });
}

int steer_index_compact(steer_index* index, char** error) {
    return guarded(error, [&] { index->compact(); });
}

int steer_compaction_begin(steer_index* index, steer_compaction** out, char** error) {
    *out = nullptr;
    return guarded(error, [&] {
        if (index->family != STEER_FAMILY_HNSW || index->tombstones == 0) return;
        require(!index->compaction_logging, "a compaction is already running");
        auto job = std::make_unique<steer_compaction>();
        index->live_rows(job->vectors, job->labels);
        job->rebuilt = index->empty_hnsw();
        index->compaction_touched.clear();
        index->compaction_stale = false;
        index->compaction_logging = true;
        *out = job.release();
    });
}

int steer_compaction_build(steer_compaction* job, char** error) {
    return guarded(error, [&] {
        if (!job->labels.empty()) hnsw_add(*job->rebuilt, idx_t(job->labels.size()), job->vectors.data());
        std::vector<float>().swap(job->vectors);
        job->rows = steer_index::rows_of(job->labels);
    });
}

int steer_compaction_finish(steer_index* index, steer_compaction* job, int64_t* replayed_out, char** error) {
    *replayed_out = 0;
    std::unique_ptr<steer_compaction> owned(job);
    return guarded(error, [&] {
        struct StopLogging {
            steer_index* index;
            ~StopLogging() {
                index->compaction_logging = false;
                index->compaction_touched.clear();
            }
        } stop{index};
        if (index->compaction_stale || index->family != STEER_FAMILY_HNSW) return;
        // Bring the snapshot's graph up to date: every label touched meanwhile ends as it is now in the
        // serving graph (live with its current vector, or gone).
        std::vector<int64_t>& labels = owned->labels;
        std::unordered_map<int64_t, int64_t>& rows = owned->rows;
        int64_t dead = 0;
        std::vector<float> vectors;
        std::vector<int64_t> added;
        for (int64_t label : index->compaction_touched) {
            auto old = rows.find(label);
            if (old != rows.end()) {
                labels[size_t(old->second)] = -1;
                rows.erase(old);
                dead++;
            }
            auto live = index->label_rows.find(label);
            if (live == index->label_rows.end()) continue;
            vectors.resize(vectors.size() + size_t(index->dimension));
            index->row_vector(live->second, vectors.data() + vectors.size() - size_t(index->dimension));
            added.push_back(label);
        }
        if (!added.empty()) hnsw_add(*owned->rebuilt, idx_t(added.size()), vectors.data());
        for (int64_t label : added) {
            rows[label] = int64_t(labels.size());
            labels.push_back(label);
        }
        *replayed_out = int64_t(index->compaction_touched.size());
        index->install(std::move(owned->rebuilt), std::move(labels), std::move(rows), dead);
    });
}

void steer_compaction_abort(steer_index* index, steer_compaction* job) {
    delete job;
    index->compaction_logging = false;
    index->compaction_touched.clear();
}

int steer_index_reset(steer_index* index, char** error) {
    return guarded(error, [&] { index->reset(); });
}

int steer_index_search(const steer_index* index, int64_t n, const float* queries, int64_t k,
                       const steer_search_params* params, float* scores, int64_t* labels, char** error) {
    return guarded(error, [&] {
        require(n >= 0, "negative query count");
        require(params != nullptr, "search parameters are NULL");
        if (n == 0) return;
        index->search(n, queries, k, *params, scores, labels);
    });
}

int steer_index_serialize(const steer_index* index, uint8_t** bytes_out, uint64_t* length_out, char** error) {
    *bytes_out = nullptr;
    *length_out = 0;
    return guarded(error, [&] {
        faiss::VectorIOWriter writer;
        faiss::write_index(index->index.get(), &writer);
        uint8_t* bytes = static_cast<uint8_t*>(malloc(std::max<size_t>(writer.data.size(), 1)));
        if (!bytes) throw std::bad_alloc();
        memcpy(bytes, writer.data.data(), writer.data.size());
        *bytes_out = bytes;
        *length_out = writer.data.size();
    });
}

int steer_index_row_labels(const steer_index* index, int64_t* labels_out, int64_t rows, char** error) {
    return guarded(error, [&] {
        if (index->family != STEER_FAMILY_HNSW) {
            require(rows == 0, "only HNSW indexes have row labels");
            return;
        }
        require(rows == int64_t(index->row_labels.size()), "row count mismatch");
        std::copy(index->row_labels.begin(), index->row_labels.end(), labels_out);
    });
}

int steer_index_read(const char* path, uint64_t offset, uint64_t length, int mapped, const int64_t* row_labels,
                     int64_t rows, steer_index** out, char** error) {
    *out = nullptr;
    return guarded(
            error,
            [&] {
                FILE* file = fopen(path, "rb");
                if (!file) fail(STEER_FAISS_IO, std::string(path) + ": " + strerror(errno));
                std::unique_ptr<FILE, int (*)(FILE*)> closer(file, fclose);
                if (fseeko(file, off_t(offset), SEEK_SET) != 0) fail(STEER_FAISS_IO, std::string(path) + ": seek failed");
                SectionWalker(file, offset, length, path).index();
                if (fseeko(file, off_t(offset), SEEK_SET) != 0) fail(STEER_FAISS_IO, std::string(path) + ": seek failed");
                faiss::FileIOReader reader(file);
                // IO_FLAG_MMAP only changes how IVF lists are read (OnDiskInvertedLists over the file);
                // for Flat and HNSW it is not used.
                std::unique_ptr<faiss::Index> raw(faiss::read_index(&reader, mapped ? faiss::IO_FLAG_MMAP : 0));
                off_t end = ftello(file);
                if (end < 0 || uint64_t(end) != offset + length) {
                    fail(STEER_FAISS_CORRUPT, std::string(path) + ": faiss section length does not match its header");
                }
                auto handle = std::make_unique<steer_index>();
                try {
                    handle->bind(raw.release());
                } catch (const ShimError& e) {
                    fail(STEER_FAISS_CORRUPT, std::string(path) + ": " + e.message);
                }
                switch (handle->family) {
                case STEER_FAMILY_HNSW: validate_hnsw(*handle->hnsw, path); break;
                case STEER_FAMILY_FLAT: validate_flat(*handle->idmap, path); break;
                default: validate_ivf(*handle->ivf, path); break;
                }
                if (handle->family == STEER_FAMILY_HNSW) {
                    if (rows != handle->hnsw->ntotal) {
                        fail(STEER_FAISS_CORRUPT, std::string(path) + ": label map has " + std::to_string(rows) +
                                                          " rows, HNSW graph has " + std::to_string(handle->hnsw->ntotal));
                    }
                    advise_hnsw_huge_pages(*handle->hnsw);
                    handle->row_labels.assign(row_labels, row_labels + rows);
                    for (int64_t row = 0; row < rows; row++) {
                        int64_t label = row_labels[row];
                        if (label < 0) {
                            handle->tombstones++;
                        } else if (!handle->label_rows.emplace(label, row).second) {
                            fail(STEER_FAISS_CORRUPT, std::string(path) + ": label " + std::to_string(label) + " is live twice");
                        }
                    }
                } else {
                    if (rows != 0) fail(STEER_FAISS_CORRUPT, std::string(path) + ": label map on a non-HNSW index");
                }
                if (handle->family == STEER_FAMILY_IVF) {
                    handle->mapped = mapped && dynamic_cast<faiss::ArrayInvertedLists*>(handle->ivf->invlists) == nullptr;
                    handle->rebuild_ivf_live();
                }
                *out = handle.release();
            },
            STEER_FAISS_CORRUPT);
}

// MARK: - Test-only entry points

int steer_test_idmap_ivf_remove(const char* factory, int64_t dimension, int64_t n, const float* vectors,
                                const int64_t* labels, int64_t removed_count, const int64_t* removed,
                                int64_t* self_matches_out, char** error) {
    *self_matches_out = 0;
    return guarded(error, [&] {
        faiss::Index* inner = faiss::index_factory(int(dimension), factory, faiss::METRIC_INNER_PRODUCT);
        faiss::IndexIDMap2 naive(inner);
        naive.own_fields = true;
        auto* ivf = dynamic_cast<faiss::IndexIVF*>(inner);
        require(ivf != nullptr, "factory string must make an IVF index");
        naive.train(n, vectors);
        naive.add_with_ids(n, vectors, labels);
        faiss::IDSelectorBatch selector(size_t(removed_count), removed);
        naive.remove_ids(selector);
        ivf->nprobe = ivf->nlist;
        int64_t matches = 0;
        for (int64_t i = 0; i < n; i++) {
            if (selector.is_member(labels[i])) continue;
            float distance;
            idx_t found;
            inner->search(1, vectors + size_t(i) * size_t(dimension), 1, &distance, &found);
            idx_t label = found >= 0 && size_t(found) < naive.id_map.size() ? naive.id_map[size_t(found)] : -1;
            // What IndexIDMap2::search reports: the inner row mapped through the (compacted) id_map.
            if (label == labels[i]) matches++;
        }
        *self_matches_out = matches;
    });
}

int steer_test_faiss_hnsw_search(const steer_index* index, int64_t n, const float* queries, int64_t k,
                                 int64_t ef_search, float* scores, int64_t* labels, char** error) {
    return guarded(error, [&] {
        require(index->family == STEER_FAMILY_HNSW, "not an HNSW index");
        faiss::SearchParametersHNSW params;
        params.efSearch = int(ef_search);
        std::vector<float> distances(size_t(n * k));
        std::vector<idx_t> rows(size_t(n * k));
        index->hnsw->search(n, queries, k, distances.data(), rows.data(), &params);
        for (size_t i = 0; i < size_t(n * k); i++) {
            bool valid = rows[i] >= 0 && size_t(rows[i]) < index->row_labels.size();
            labels[i] = valid ? index->row_labels[size_t(rows[i])] : -1;
            scores[i] = index->metric == STEER_METRIC_INNER_PRODUCT ? distances[i] : -distances[i];
        }
    });
}

int steer_test_hnsw_add_with_faiss(steer_index* index, int64_t n, const float* vectors, const int64_t* labels,
                                   char** error) {
    return guarded(error, [&] {
        require(index->family == STEER_FAMILY_HNSW, "not an HNSW index");
        require(n >= 0, "negative vector count");
        struct RestoreThreads {
            int threads;
            ~RestoreThreads() { omp_set_num_threads(threads); }
        } restore{omp_get_max_threads()};
        omp_set_num_threads(1);
        const int64_t first = index->hnsw->ntotal;
        index->hnsw->add(n, vectors);
        for (int64_t i = 0; i < n; i++) {
            index->row_labels.push_back(labels[i]);
            index->label_rows[labels[i]] = first + i;
        }
    });
}

uint64_t steer_test_hnsw_steer_inserted(void) { return g_steer_inserted.load(std::memory_order_relaxed); }

int steer_test_idmap2_search_with_params(const steer_index* index, const float* query, int64_t k,
                                         const int64_t* allowed, int64_t allowed_count, char** error) {
    return guarded(error, [&] {
        require(index->family == STEER_FAMILY_FLAT, "not a Flat index");
        SortedLabelSelector selector(SortedLabels{allowed, allowed_count});
        faiss::SearchParameters params;
        params.sel = &selector;
        std::vector<float> distances(static_cast<size_t>(k));
        std::vector<idx_t> found(static_cast<size_t>(k));
        index->idmap->search(1, query, k, distances.data(), found.data(), &params);
    });
}

} // extern "C"
