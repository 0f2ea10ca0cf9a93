// Why this exists: OpenBLAS ships cblas.h without a module map; Swift imports it through this header.
// cblas.h also declares openblas_get_corename/openblas_get_config, which report the kernel set chosen
// when the library loaded (see docs/dependencies.md: OPENBLAS_CORETYPE must be set before the process starts).
#include <cblas.h>
