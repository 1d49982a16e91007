// SIMT emulator: runs the portable CUDA/HIP kernel bodies of csrc/kernels/ on the host CPU, so that
// their indexing, barriers, warp collectives and matrix-fragment layouts are tested on machines
// without a GPU (CI has none). Included by vendor.h when ZAYA_SIMT_EMU is defined and the compiler
// is a plain host compiler; kernels need no change beyond using vendor.h's names.
//
// Model. A launch runs its blocks in parallel over OpenMP threads; inside a block, every GPU thread
// is a fiber (ucontext) on one OS thread, run round-robin until it reaches a barrier. __syncthreads
// releases when every live thread of the block waits on it; warp collectives (shuffles, the
// emulated mma/MFMA of mma.cuh) release when every lane of the warp waits. Anything a real GPU
// would hang on or leave undefined is reported as a launch error instead: a block barrier that some
// threads never reach while others wait on a warp collective (deadlock), and a warp collective with
// lanes that have already exited. `__shared__` maps to `static thread_local`: the fibers of a block
// share one OS thread, so they share it, and blocks on other OS threads get their own copy. Dynamic
// shared memory is filled with 0xFF bytes (NaN for every float type) at each block's start, so a
// read before a write shows up in the results.
//
// Hopper's asynchronous units are modelled by their headers on top of this one: wgmma.cuh (warpgroup
// MMA from shared-memory descriptors; Block::async_ops tracks each operation's operands until every
// thread of the warpgroup has waited for it) and tma.cuh (bulk tensor copies at issue; Block::mbarriers
// holds each mbarrier's phase, arrivals and transaction bytes). fail() stops a block with a message.
// launch_count() counts launches (tests hold ops to their launches per call); attribute_queries() and
// device_warp_attribute() are the emulated device's attribute queries and reported wave size. The
// 32-lane emulator also models the driver's per-kernel opt-in to more than 48 KiB of dynamic shared memory.
//
// ZAYA_EMU_WARP_SIZE (32 or 64) picks the warp the kernels see: 32 runs their CUDA paths (mma.sync
// fragment layouts), 64 their CDNA paths (MFMA layouts).
//
// Races: between two barriers the fibers run one after another, in thread order, or in reverse thread
// order when the environment has ZAYA_EMU_ORDER=reverse (read at each launch). A missing barrier
// between a write by one thread and a read by another therefore shows up as a wrong result in one of
// the two orders; the tests run emu32 in reverse order and emu64 in thread order (tests/conftest.py).
#pragma once

#include <setjmp.h>
#include <ucontext.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#ifndef ZAYA_EMU_WARP_SIZE
#define ZAYA_EMU_WARP_SIZE 32
#endif

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned x, y;
};

namespace zaya::emu {

inline constexpr int kWarpSize = ZAYA_EMU_WARP_SIZE;
static_assert(kWarpSize == 32 || kWarpSize == 64, "ZAYA_EMU_WARP_SIZE must be 32 or 64");
// Bytes each lane may put into a warp collective at once (an mma fragment set fits).
inline constexpr int kLaneScratch = 128;
// Bytes of per-warp scratch for collectives that one lane computes for the whole warp.
inline constexpr int kWarpShared = 2048;
inline constexpr size_t kStackBytes = 256 * 1024;

enum class State { kRunnable, kBlockBarrier, kWarpBarrier, kDone };

// What the models of asynchronous units on top of this emulator keep per block and per thread:
// an entry of a thread's log of issued operations and commits (wgmma.cuh),
struct AsyncMark {
  uint64_t seq;  // the operation's sequence number in its thread (unused for a commit)
  bool commit;
};
// an asynchronous matrix operation in flight: its operands, their hash at issue, and how many
// threads of its warpgroup have waited for it (wgmma.cuh),
struct AsyncOp {
  uint64_t desc_a, desc_b;  // desc_a 0: A from registers
  int n;
  bool trans_b;
  uint64_t hash;
  int retired;
};
// and an mbarrier, whose phase completes when no arrival and no transaction byte is pending (tma.cuh).
struct MBarrier {
  int64_t expected, pending, tx_bytes;
  int phase;
};

// A fiber starts once through its ucontext (makecontext gives it its own stack) and from then on
// switches with _setjmp/_longjmp, which, unlike swapcontext, make no signal-mask system call.
struct Fiber {
  ucontext_t ctx;
  jmp_buf jb;
  dim3 idx;
  State state = State::kRunnable;
  bool started = false;
  // Asynchronous operations and commits this thread has issued and not yet waited for.
  std::vector<AsyncMark> async_ops;
  uint64_t async_seq = 0;
};

struct Block {
  dim3 block_idx, block_dim, grid_dim;
  std::vector<Fiber> fibers;
  std::vector<std::unique_ptr<char[]>> stacks;  // kept across blocks of one OS thread
  std::vector<unsigned char> warp_scratch;      // [warps][kWarpSize][kLaneScratch]
  std::vector<unsigned char> warp_shared;       // [warps][kWarpShared]
  std::vector<unsigned char> dynamic_smem;
  jmp_buf scheduler;
  int current = -1;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
  bool reverse = false;  // run the fibers in reverse thread order (ZAYA_EMU_ORDER=reverse)
  std::string error;     // set by fail(): the block stops and the launch reports it
  // Asynchronous operations in flight, keyed by (thread group, sequence number): the first thread
  // of the group to issue one records what it reads, the last one to wait for it checks it again.
  std::map<std::pair<int, uint64_t>, AsyncOp> async_ops;
  std::map<const void*, MBarrier> mbarriers;  // keyed by their shared-memory address
};

inline thread_local Block* tl_block = nullptr;

inline Block& block() { return *tl_block; }
inline Fiber& me() { return tl_block->fibers[tl_block->current]; }
inline int linear_tid() {
  const Fiber& f = me();
  const dim3& d = tl_block->block_dim;
  return static_cast<int>(f.idx.x + d.x * (f.idx.y + d.y * f.idx.z));
}

inline dim3 thread_idx() { return me().idx; }
inline dim3 block_idx() { return tl_block->block_idx; }
inline dim3 block_dim() { return tl_block->block_dim; }
inline dim3 grid_dim() { return tl_block->grid_dim; }
inline void* dynamic_smem() { return tl_block->dynamic_smem.data(); }

// Stops the calling thread's block with an error message (the launch returns it).
[[noreturn]] inline void fail(const std::string& what) {
  if (tl_block->error.empty()) tl_block->error = what;
  me().state = State::kDone;
  _longjmp(tl_block->scheduler, 1);
}

// Byte offset of p in the block's dynamic shared memory (the emulated shared-memory address space:
// kernels that hand shared addresses to emulated hardware units keep their tiles there).
inline uint32_t smem_offset(const void* p) {
  const auto* base = tl_block->dynamic_smem.data();
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < base || c >= base + tl_block->dynamic_smem.size()) {
    fail("a shared-memory address handed to an emulated matrix unit is not in dynamic shared memory");
  }
  return static_cast<uint32_t>(c - base);
}

inline void wait(State s) {
  Fiber& f = me();
  f.state = s;
  if (_setjmp(f.jb) == 0) _longjmp(tl_block->scheduler, 1);
}
inline void syncthreads() { wait(State::kBlockBarrier); }
inline void syncwarp() { wait(State::kWarpBarrier); }

// This lane's slot in its warp's exchange buffer, and lane `lane`'s slot of the same warp.
inline unsigned char* lane_slot(int lane) {
  const int warp = linear_tid() / kWarpSize;
  return tl_block->warp_scratch.data() + (static_cast<size_t>(warp) * kWarpSize + lane) * kLaneScratch;
}
inline int lane_id() { return linear_tid() % kWarpSize; }
inline unsigned char* warp_buffer() {
  return tl_block->warp_shared.data() + static_cast<size_t>(linear_tid() / kWarpSize) * kWarpShared;
}

// Warp-wide exchange: every lane publishes `bytes` bytes, then reads lane `src`'s.
template <typename T>
T shfl(T v, int src) {
  static_assert(sizeof(T) <= kLaneScratch);
  std::memcpy(lane_slot(lane_id()), &v, sizeof(T));
  syncwarp();
  T r;
  std::memcpy(&r, lane_slot(((src % kWarpSize) + kWarpSize) % kWarpSize), sizeof(T));
  syncwarp();
  return r;
}

template <typename T>
T atomic_add(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v, std::memory_order_relaxed);
}

[[noreturn]] inline void fiber_entry() {
  Block& b = *tl_block;
  b.body(b.body_arg);
  b.fibers[b.current].state = State::kDone;
  _longjmp(tl_block->scheduler, 1);
}

// Runs one block to completion; returns an empty string or what went wrong.
inline std::string run_block(Block& b) {
  const int n = static_cast<int>(b.fibers.size());
  for (int i = 0; i < n; ++i) {
    Fiber& f = b.fibers[i];
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = b.stacks[i].get();
    f.ctx.uc_stack.ss_size = kStackBytes;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, fiber_entry, 0);
    f.state = State::kRunnable;
    f.started = false;
    f.async_ops.clear();
    f.async_seq = 0;
  }
  b.async_ops.clear();
  b.mbarriers.clear();
  const int warps = (n + kWarpSize - 1) / kWarpSize;
  for (;;) {
    for (int ii = 0; ii < n; ++ii) {
      const int i = b.reverse ? n - 1 - ii : ii;
      if (b.fibers[i].state != State::kRunnable) continue;
      b.current = i;
      Fiber& f = b.fibers[i];
      if (_setjmp(b.scheduler) == 0) {
        if (!f.started) {
          f.started = true;
          setcontext(&f.ctx);
        }
        _longjmp(f.jb, 1);
      }
      if (!b.error.empty()) return b.error;
    }
    int done = 0, at_block = 0;
    for (const Fiber& f : b.fibers) {
      done += f.state == State::kDone;
      at_block += f.state == State::kBlockBarrier;
    }
    if (done == n) return {};
    bool released = false;
    for (int w = 0; w < warps; ++w) {
      const int lo = w * kWarpSize, hi = std::min(n, lo + kWarpSize);
      int waiting = 0, exited = 0;
      for (int i = lo; i < hi; ++i) {
        waiting += b.fibers[i].state == State::kWarpBarrier;
        exited += b.fibers[i].state == State::kDone;
      }
      if (waiting == 0) continue;
      if (exited > 0) {
        return "warp collective (shuffle or mma) in warp " + std::to_string(w) + " after " +
               std::to_string(exited) + " of its lanes exited";
      }
      if (waiting == hi - lo) {
        for (int i = lo; i < hi; ++i) b.fibers[i].state = State::kRunnable;
        released = true;
      }
    }
    if (!released && at_block > 0 && at_block + done == n) {
      for (Fiber& f : b.fibers) {
        if (f.state == State::kBlockBarrier) f.state = State::kRunnable;
      }
      released = true;
    }
    if (!released) {
      return "deadlock: " + std::to_string(at_block) + " threads wait at __syncthreads, " +
             std::to_string(n - done - at_block) + " at a warp collective that not all lanes reach";
    }
  }
}

inline std::string& first_error() {
  static std::string e;
  return e;
}

// Kernel launches so far in this process (tests check launch counts, e.g. one per decode step).
inline std::atomic<int64_t>& launch_count() {
  static std::atomic<int64_t> n{0};
  return n;
}

// The emulated device's attributes (vendor::warp_size / sm_count): queries so far (tests check that
// the launchers cache them), and the wave size it reports, ZAYA_EMU_WARP_SIZE unless a test sets
// another to check that every launcher refuses a device its kernels were not compiled for.
inline std::atomic<int64_t>& attribute_queries() {
  static std::atomic<int64_t> n{0};
  return n;
}
inline std::atomic<int>& device_warp_attribute() {
  static std::atomic<int> n{ZAYA_EMU_WARP_SIZE};
  return n;
}

// The driver's per-kernel limit of dynamic shared memory (cudaFuncSetAttribute's
// MaxDynamicSharedMemorySize), modelled on the 32-lane (CUDA) emulator: a launch with more than
// 48 KiB fails unless the kernel's limit was raised to cover it, as on the GPU.
inline constexpr size_t kSmemDefaultLimit = 48 * 1024;

struct DriverState {
  std::mutex mu;
  std::map<const void*, size_t> smem_limit;  // kernel -> bytes granted
};

inline DriverState& driver_state() {
  static DriverState s;
  return s;
}

inline int set_max_dynamic_smem(const void* kernel, size_t bytes) {
  const std::lock_guard<std::mutex> lock(driver_state().mu);
  driver_state().smem_limit[kernel] = bytes;
  return 0;
}

inline bool smem_allowed(const void* kernel, size_t bytes) {
  if (ZAYA_EMU_WARP_SIZE != 32 || bytes <= kSmemDefaultLimit) return true;
  const std::lock_guard<std::mutex> lock(driver_state().mu);
  const auto it = driver_state().smem_limit.find(kernel);
  return it != driver_state().smem_limit.end() && it->second >= bytes;
}

// Forgets every kernel's raised limit (tests: a cold start).
inline void reset_driver_state() {
  const std::lock_guard<std::mutex> lock(driver_state().mu);
  driver_state().smem_limit.clear();
}

// Runs body(arg) as every thread of every block of the grid; `kernel` identifies the kernel function
// (its shared-memory limit). Returns nullptr or an error message (static storage, valid until the
// next failing launch).
inline const char* launch(dim3 grid, dim3 blk, size_t smem_bytes, void (*body)(void*), void* arg,
                          const void* kernel) {
  launch_count().fetch_add(1, std::memory_order_relaxed);
  if (!smem_allowed(kernel, smem_bytes)) {
    return "emulated launch: more than 48 KiB of dynamic shared memory without the kernel's opt-in "
           "(cudaFuncSetAttribute MaxDynamicSharedMemorySize)";
  }
  const int64_t nblocks = static_cast<int64_t>(grid.x) * grid.y * grid.z;
  const int nthreads = static_cast<int>(blk.x * blk.y * blk.z);
  if (nthreads <= 0 || nthreads > 1024) return "emulated launch: block size must be 1..1024 threads";
  const char* order = std::getenv("ZAYA_EMU_ORDER");  // once per launch, not per block
  const bool reverse = order != nullptr && std::strcmp(order, "reverse") == 0;
  std::mutex mu;
  std::string err;
#pragma omp parallel
  {
    thread_local Block tb;
    if (static_cast<int>(tb.stacks.size()) < nthreads) {
      while (static_cast<int>(tb.stacks.size()) < nthreads) tb.stacks.emplace_back(new char[kStackBytes]);
    }
    tb.fibers.assign(nthreads, Fiber{});
    tb.warp_scratch.assign(static_cast<size_t>((nthreads + kWarpSize - 1) / kWarpSize) * kWarpSize * kLaneScratch, 0);
    tb.warp_shared.assign(static_cast<size_t>((nthreads + kWarpSize - 1) / kWarpSize) * kWarpShared, 0);
    tb.dynamic_smem.resize(smem_bytes);
    tb.block_dim = blk;
    tb.grid_dim = grid;
    tb.body = body;
    tb.body_arg = arg;
    tb.reverse = reverse;
    tb.error.clear();
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < nblocks; ++i) {
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!err.empty()) continue;
      }
      tb.block_idx = dim3(static_cast<unsigned>(i % grid.x), static_cast<unsigned>((i / grid.x) % grid.y),
                          static_cast<unsigned>(i / (static_cast<int64_t>(grid.x) * grid.y)));
      for (int t = 0; t < nthreads; ++t) {
        tb.fibers[t].idx = dim3(t % blk.x, (t / blk.x) % blk.y, t / (blk.x * blk.y));
      }
      std::memset(tb.dynamic_smem.data(), 0xFF, smem_bytes);
      tb.error.clear();
      Block* saved = tl_block;
      tl_block = &tb;
      std::string e = run_block(tb);
      tl_block = saved;
      if (!e.empty()) {
#if defined(__SANITIZE_ADDRESS__)
        // Fibers left mid-call keep their frames' redzones poisoned; the next block reuses the stacks.
        for (auto& st : tb.stacks) ASAN_UNPOISON_MEMORY_REGION(st.get(), kStackBytes);
#endif
        std::lock_guard<std::mutex> lock(mu);
        if (err.empty()) {
          err = "block (" + std::to_string(tb.block_idx.x) + "," + std::to_string(tb.block_idx.y) + "," +
                std::to_string(tb.block_idx.z) + "): " + e;
        }
      }
    }
  }
  if (err.empty()) return nullptr;
  first_error() = "emulated kernel: " + err;
  return first_error().c_str();
}

}  // namespace zaya::emu

// The CUDA names kernel bodies use, mapped onto the emulator.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __grid_constant__
#define __shared__ static thread_local
#define threadIdx (::zaya::emu::thread_idx())
#define blockIdx (::zaya::emu::block_idx())
#define blockDim (::zaya::emu::block_dim())
#define gridDim (::zaya::emu::grid_dim())
#define __syncthreads() ::zaya::emu::syncthreads()
