// Host-side state the GPU launchers keep per process, so that a steady-state call (a decode step)
// makes no repeated environment reads, driver attribute calls or host reads of device values:
//
//   * counters(): how often each of those costly host actions really happened. Every such action in
//     the launchers and glue goes through one helper that counts it (vendor.h: device attributes and
//     the shared-memory opt-in; tma.cuh: tensor-map encodes; arg_checks.h host_ints: host reads of
//     tensor values; env() below). The modules expose them (zaya_ops._C._runtime_counters and the
//     emulator modules' runtime_counters), and tests hold a decode step to zero new ones.
//   * the switches (ZAYA_WGMMA=1: the Hopper paths; ZAYA_KERNELS=v1: the version-1 kernels), each read from the environment once per process at its
//     first use, or set explicitly (set_hopper_opt_in / set_kernels_v1, the modules' set_hopper_paths /
//     set_kernels_v1: what the tests and the benchmark's zaya-wgmma and v1 providers use).
//
// Plain host C++ (no CUDA/HIP), included by vendor.h and by the pybind modules; one instance per
// shared library (inline functions' statics).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace zaya::runtime {

struct Counters {
  std::atomic<int64_t> host_reads{0};              // index tensors read on the host (arg_checks.h host_ints)
  std::atomic<int64_t> device_attribute_queries{0};  // cudaDeviceGetAttribute & co (vendor.h)
  std::atomic<int64_t> func_attribute_sets{0};       // cudaFuncSetAttribute: dynamic shared memory opt-in
  std::atomic<int64_t> tensor_map_encodes{0};        // cuTensorMapEncodeTiled (tma.cuh)
  std::atomic<int64_t> env_reads{0};                 // getenv by the launchers
};

inline Counters& counters() {
  static Counters c;
  return c;
}

inline void count(std::atomic<int64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); }

// getenv, counted (launchers read each variable once per process, see hopper_opt_in).
inline const char* env(const char* name) {
  count(counters().env_reads);
  return std::getenv(name);
}

// A switch read from the environment once per process at its first use, or set explicitly:
// state -1 = not decided yet (the variable is read at the next use), 0 off, 1 on (variable == on_value).
inline bool read_switch(std::atomic<int>& s, const char* var, const char* on_value) {
  int v = s.load(std::memory_order_acquire);
  if (v < 0) {
    const char* e = env(var);
    int expected = -1;
    s.compare_exchange_strong(expected, e != nullptr && std::strcmp(e, on_value) == 0 ? 1 : 0,
                              std::memory_order_acq_rel);
    v = s.load(std::memory_order_acquire);
  }
  return v == 1;
}
// Sets a switch (1 on, 0 off, -1: read its variable again at the next use); returns the previous state.
inline int set_switch(std::atomic<int>& s, int state) {
  return s.exchange(state < 0 ? -1 : (state ? 1 : 0), std::memory_order_acq_rel);
}

// The Hopper-path opt-in (ZAYA_WGMMA=1).
inline std::atomic<int>& hopper_opt_in_state() {
  static std::atomic<int> s{-1};
  return s;
}
inline bool hopper_opt_in() { return read_switch(hopper_opt_in_state(), "ZAYA_WGMMA", "1"); }
inline int set_hopper_opt_in(int state) { return set_switch(hopper_opt_in_state(), state); }

// The version-1 kernels (ZAYA_KERNELS=v1): the mma.sync kernels (moe_top1, cca_attention, router, cca_qkv)
// load their fragments with scalar shared-memory loads instead of ldmatrix, and keep their first designs
// where a later one replaced them (see each kernel's header: e.g. moe_top1's 2-byte epilogue stores and,
// with ZAYA_WGMMA=1, its no-swizzle TMA boxes). Kept so that one GPU run times the old kernels against the
// new ones (the benchmark's "v1" and "zaya-wgmma-v1" providers); only the 32-lane (CUDA) kernels have two
// versions.
inline std::atomic<int>& kernels_v1_state() {
  static std::atomic<int> s{-1};
  return s;
}
inline bool kernels_v1() { return read_switch(kernels_v1_state(), "ZAYA_KERNELS", "v1"); }
inline int set_kernels_v1(int state) { return set_switch(kernels_v1_state(), state); }

}  // namespace zaya::runtime
