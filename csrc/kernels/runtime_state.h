// Host-side state the GPU launchers keep per process, so that a steady-state call (a decode step)
// makes no repeated environment reads, driver attribute calls or host reads of device values:
//
//   * counters(): how often each of those costly host actions really happened. Every such action in
//     the launchers and glue goes through one helper that counts it (vendor.h: device attributes and
//     the shared-memory opt-in; tma.cuh: tensor-map encodes; arg_checks.h host_ints: host reads of
//     tensor values; env() below). The modules expose them (zaya_ops._C._runtime_counters and the
//     emulator modules' runtime_counters), and tests hold a decode step to zero new ones.
//   * the Hopper-path opt-in (ZAYA_WGMMA=1), read from the environment once per process at its
//     first use, or set explicitly (set_hopper_opt_in, the modules' set_hopper_paths: what the tests
//     and the benchmark's zaya-wgmma provider use).
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

// The Hopper-path opt-in: -1 = not decided yet (ZAYA_WGMMA is read at the next use), 0 off, 1 on.
inline std::atomic<int>& hopper_opt_in_state() {
  static std::atomic<int> s{-1};
  return s;
}

inline bool hopper_opt_in() {
  std::atomic<int>& s = hopper_opt_in_state();
  int v = s.load(std::memory_order_acquire);
  if (v < 0) {
    const char* e = env("ZAYA_WGMMA");
    int expected = -1;
    s.compare_exchange_strong(expected, e != nullptr && std::strcmp(e, "1") == 0 ? 1 : 0,
                              std::memory_order_acq_rel);
    v = s.load(std::memory_order_acquire);
  }
  return v == 1;
}

// Sets the opt-in (1 on, 0 off, -1: read ZAYA_WGMMA again at the next use); returns the previous state.
inline int set_hopper_opt_in(int state) {
  return hopper_opt_in_state().exchange(state < 0 ? -1 : (state ? 1 : 0), std::memory_order_acq_rel);
}

}  // namespace zaya::runtime
