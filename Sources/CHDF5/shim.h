// Why this exists: Debian's libhdf5-dev ships the HDF5 C API (hdf5.h, under /usr/include/hdf5/serial via
// pkg-config `hdf5`) but no module map; Swift imports it through this header. steer-bench reads
// ann-benchmarks files with it (Benchmarks/steer-bench, docs/benchmarks.md).
#include <hdf5.h>

// H5T_NATIVE_* and H5P_DEFAULT are macros over library globals that Swift cannot import; these return them.
static inline hid_t steer_h5t_native_float(void) { return H5T_NATIVE_FLOAT; }
static inline hid_t steer_h5t_native_int64(void) { return H5T_NATIVE_INT64; }
static inline hid_t steer_h5t_c_s1(void) { return H5T_C_S1; }
static inline hid_t steer_h5p_default(void) { return H5P_DEFAULT; }
static inline hid_t steer_h5s_all(void) { return H5S_ALL; }
static inline hid_t steer_h5e_default(void) { return H5E_DEFAULT; }
static inline size_t steer_h5t_variable(void) { return H5T_VARIABLE; }
static inline unsigned steer_h5f_acc_rdonly(void) { return H5F_ACC_RDONLY; }
static inline unsigned steer_h5f_acc_trunc(void) { return H5F_ACC_TRUNC; }
static inline hid_t steer_h5t_ieee_f32le(void) { return H5T_IEEE_F32LE; }
static inline hid_t steer_h5t_std_i32le(void) { return H5T_STD_I32LE; }
static inline hid_t steer_h5t_std_i64le(void) { return H5T_STD_I64LE; }
