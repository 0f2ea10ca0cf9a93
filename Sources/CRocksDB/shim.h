// Why this exists: RocksDB ships a C API (rocksdb/c.h) but no module map; Swift imports it through this header.
#include <rocksdb/c.h>
