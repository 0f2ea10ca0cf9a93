// Collections as RocksDB layouts (Benchmarks/collections/results.md): N empty collections of 7 column
// families each (the families of one Steer item store), kept either as N separate databases (what
// Steer does: DIR/collections/<name>/store) or as N*7 column families of one database. Measures the
// first open (creation), a reopen, resident memory after the reopen, open file descriptors, and the
// cost of synced single-key writes and point reads in one collection. Options as SteerStore's
// RocksDatabase: create_missing_column_families, wal_recovery_mode 2, keep_log_file_num 4,
// db_write_buffer_size 64 MiB. Hand-written because it is the measurement itself.
//
//   cc -O2 -o /tmp/cf_vs_stores Benchmarks/collections/cf_vs_stores.c -lrocksdb
//   /tmp/cf_vs_stores stores|families N DIR
#include <dirent.h>
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { FAMILIES = 7, WRITES = 2000 };
static const char *family_names[FAMILIES] = {"default", "meta", "ids", "items", "vectors", "postings", "changelog"};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, "VmRSS:", 6) == 0) kb = atol(line + 6);
    }
    if (f) fclose(f);
    return kb;
}

static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d)) n++;
    if (d) closedir(d);
    return n - 2;
}

static void check(char *err, const char *what) {
    if (err) {
        fprintf(stderr, "%s: %s\n", what, err);
        exit(1);
    }
}

static rocksdb_options_t *make_options(void) {
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_create_missing_column_families(o, 1);
    rocksdb_options_set_wal_recovery_mode(o, 2);
    rocksdb_options_set_keep_log_file_num(o, 4);
    rocksdb_options_set_db_write_buffer_size(o, 64 << 20);
    return o;
}

// Opens `count` databases (stores) or one database with `count` collections' families.
typedef struct {
    rocksdb_t **dbs;
    rocksdb_column_family_handle_t **handles;
    int db_count, handle_count;
} layout_t;

static layout_t open_layout(int stores, int count, const char *dir, rocksdb_options_t *o) {
    layout_t l = {0};
    l.db_count = stores ? count : 1;
    l.handle_count = count * FAMILIES;
    l.dbs = calloc(l.db_count, sizeof *l.dbs);
    l.handles = calloc(l.handle_count, sizeof *l.handles);
    int per_db = stores ? FAMILIES : count * FAMILIES;
    char **names = calloc(per_db, sizeof *names);
    const rocksdb_options_t **opts = calloc(per_db, sizeof *opts);
    for (int i = 0; i < per_db; i++) {
        names[i] = malloc(64);
        if (stores || i < FAMILIES) snprintf(names[i], 64, "%s", family_names[i % FAMILIES]);
        else snprintf(names[i], 64, "c%d-%s", i / FAMILIES, family_names[i % FAMILIES]);
        opts[i] = o;
    }
    for (int d = 0; d < l.db_count; d++) {
        char path[4096];
        snprintf(path, sizeof path, stores ? "%s/c%d" : "%s/one", dir, d);
        char *err = NULL;
        l.dbs[d] = rocksdb_open_column_families(o, path, per_db, (const char *const *)names, opts, l.handles + d * per_db, &err);
        check(err, "open");
    }
    for (int i = 0; i < per_db; i++) free(names[i]);
    free(names);
    free(opts);
    return l;
}

static void close_layout(layout_t *l) {
    for (int i = 0; i < l->handle_count; i++) rocksdb_column_family_handle_destroy(l->handles[i]);
    for (int d = 0; d < l->db_count; d++) rocksdb_close(l->dbs[d]);
    free(l->handles);
    free(l->dbs);
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "stores") && strcmp(argv[1], "families"))) {
        fprintf(stderr, "usage: %s stores|families N DIR\n", argv[0]);
        return 2;
    }
    int stores = strcmp(argv[1], "stores") == 0;
    int count = atoi(argv[2]);
    rocksdb_options_t *o = make_options();
    long rss0 = rss_kb();
    double t0 = now();
    layout_t l = open_layout(stores, count, argv[3], o);
    double created = now() - t0;
    close_layout(&l);
    t0 = now();
    l = open_layout(stores, count, argv[3], o);
    double reopened = now() - t0;
    long rss1 = rss_kb();
    int fds = open_fds();

    // One collection's "items" family (index 3 of its seven): synced puts, then point reads.
    rocksdb_t *db = l.dbs[stores ? 0 : 0];
    rocksdb_column_family_handle_t *items = l.handles[3];
    rocksdb_writeoptions_t *w = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(w, 1);
    rocksdb_readoptions_t *r = rocksdb_readoptions_create();
    char key[32], value[200];
    memset(value, 'v', sizeof value);
    t0 = now();
    for (int i = 0; i < WRITES; i++) {
        snprintf(key, sizeof key, "k%08d", i);
        char *err = NULL;
        rocksdb_put_cf(db, w, items, key, strlen(key), value, sizeof value, &err);
        check(err, "put");
    }
    double put_us = (now() - t0) / WRITES * 1e6;
    t0 = now();
    for (int i = 0; i < WRITES * 10; i++) {
        snprintf(key, sizeof key, "k%08d", (i * 7919) % WRITES);
        size_t length = 0;
        char *err = NULL;
        char *got = rocksdb_get_cf(db, r, items, key, strlen(key), &length, &err);
        check(err, "get");
        free(got);
    }
    double get_us = (now() - t0) / (WRITES * 10) * 1e6;
    printf("{\"layout\":\"%s\",\"collections\":%d,\"databases\":%d,\"column_families\":%d,\"create_s\":%.3f,\"reopen_s\":%.3f,"
           "\"rss_after_reopen_kb\":%ld,\"rss_delta_kb\":%ld,\"open_fds\":%d,\"synced_put_us\":%.1f,\"get_us\":%.2f}\n",
           stores ? "stores" : "families", count, l.db_count, l.handle_count, created, reopened, rss1, rss1 - rss0, fds, put_us, get_us);
    rocksdb_writeoptions_destroy(w);
    rocksdb_readoptions_destroy(r);
    close_layout(&l);
    rocksdb_options_destroy(o);
    return 0;
}
