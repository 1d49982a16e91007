// Hopper's tensor memory accelerator (TMA, cp.async.bulk.tensor, sm_90) for 2-D tiles of 2-byte
// elements, completing on a shared-memory mbarrier: the weight-tile loads of the Hopper kernels.
//
//   host:   make_map_2d(&map, base, rows, cols, row_stride, box_rows, box_cols, swizzle) describes a
//           row-major matrix and the box one copy moves (no interleave; elements outside the matrix
//           read as zero). The map is passed to the kernel by value as a `const __grid_constant__ Map`.
//   device: one thread calls bar_init(bar, 1) for each mbarrier, then bar_init_fence() and a barrier;
//           per fill, one thread calls bar_arrive_expect_tx(bar, bytes) and load_2d(...) for each box
//           (writes land row-major inside the box: box element (r, c) at dst[r * box_cols + c]; with
//           Swizzle::k128B, box_cols = 64 and dst 1024-byte aligned, the 16-byte chunk c / 8 of box row
//           r lands at chunk (c / 8) ^ (r % 8) of that row: CU_TENSOR_MAP_SWIZZLE_128B, CuTe's
//           Swizzle<3,4,3> on the byte address, wgmma.cuh's sw128_offset); the consumers call
//           bar_wait(bar, phase), phase = number of earlier completions of bar, mod 2.
//
// The SIMT emulator models both: a copy happens when it is issued (the box is read through the map's
// bounds, zero outside) and then completes its bytes on the barrier; an mbarrier is a phase with
// pending arrivals and transaction bytes. Because emulated copies complete at issue, an emulated wait
// must find its phase complete: kernels that issue a copy at least one block barrier before its wait
// (all of ours) are modelled; a wait that would have to spin for a later copy fails the launch.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "vendor.h"

#if defined(ZAYA_CUDA) || (defined(ZAYA_EMU) && ZAYA_WARP_SIZE == 32)
#define ZAYA_HAVE_TMA_SOURCE 1

#if defined(ZAYA_CUDA)
#include <cudaTypedefs.h>  // CUtensorMap, its enums and the encoder's type (the encoder comes from the runtime)
#endif

namespace zaya::tma {

// Shared-memory placement of a box: row-major, or the 128-byte swizzle (box rows of 128 bytes).
enum class Swizzle : int { kNone = 0, k128B = 1 };

#if defined(ZAYA_CUDA)
using Map = CUtensorMap;
#else
struct alignas(64) Map {
  const uint16_t* base;
  int64_t rows, cols, row_stride;
  int box_rows, box_cols;
  Swizzle swizzle;
};
#endif

// Host: the map of a row-major [rows, cols] matrix of 2-byte elements at base (16-byte aligned, row
// stride in elements, a multiple of 8), copied in boxes of box_rows (<= 256) x box_cols (a multiple of
// 8, <= 256; exactly 64, 128 bytes, with Swizzle::k128B) elements. Returns nullptr or what went wrong.
inline const char* make_map_2d(Map* map, const void* base, int64_t rows, int64_t cols, int64_t row_stride,
                               int box_rows, int box_cols, Swizzle swizzle = Swizzle::kNone) {
  if (box_cols % 8 != 0 || box_cols > 256 || box_rows > 256 || row_stride % 8 != 0 || !vendor::aligned16(base))
    return "zaya tma: unsupported tensor map (box or alignment)";
  if (swizzle == Swizzle::k128B && box_cols != 64) return "zaya tma: a 128-byte-swizzled box must be 64 elements wide";
  runtime::count(runtime::counters().tensor_map_encodes);
#if defined(ZAYA_CUDA)
  using Encode = PFN_cuTensorMapEncodeTiled_v12000;
  static Encode encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      fn = nullptr;
    return reinterpret_cast<Encode>(fn);
  }();
  if (encode == nullptr) return "zaya tma: the driver has no cuTensorMapEncodeTiled";
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};  // innermost first
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(row_stride) * 2};                     // bytes, dims 1..
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t unit[2] = {1, 1};
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, const_cast<void*>(base), dims, strides, box, unit,
                            CU_TENSOR_MAP_INTERLEAVE_NONE,
                            swizzle == Swizzle::k128B ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? nullptr : "zaya tma: cuTensorMapEncodeTiled rejected the tensor map";
#else
  *map = Map{static_cast<const uint16_t*>(base), rows, cols, row_stride, box_rows, box_cols, swizzle};
  return nullptr;
#endif
}

// Host: make_map_2d's map, encoded once per (device, base, geometry, box) and process, since encoding
// is a driver call that a launch must not repeat for the same weights. A map holds the address and the
// geometry, never the data: a cached map stays right when a tensor's values change in place, and a
// tensor at another address or of another shape gets its own map. Thread-safe; the cache is emptied
// when it reaches kMapCacheSize entries (a process that keeps making new weight tensors).
inline constexpr size_t kMapCacheSize = 256;
using MapKey = std::tuple<int, const void*, int64_t, int64_t, int64_t, int, int, int>;

struct MapCache {
  std::mutex mu;
  std::map<MapKey, Map> maps;
};

inline MapCache& map_cache() {
  static MapCache c;
  return c;
}

inline const char* cached_map_2d(Map* map, const void* base, int64_t rows, int64_t cols, int64_t row_stride,
                                 int box_rows, int box_cols, Swizzle swizzle = Swizzle::kNone) {
  int dev = 0;
  if (vendor::get_device(&dev) != vendor::kSuccess) return "zaya tma: cannot get the current device";
  const MapKey key{dev, base, rows, cols, row_stride, box_rows, box_cols, static_cast<int>(swizzle)};
  MapCache& c = map_cache();
  const std::lock_guard<std::mutex> lock(c.mu);
  if (const auto it = c.maps.find(key); it != c.maps.end()) {
    *map = it->second;
    return nullptr;
  }
  if (const char* err = make_map_2d(map, base, rows, cols, row_stride, box_rows, box_cols, swizzle)) return err;
  if (c.maps.size() >= kMapCacheSize) c.maps.clear();
  c.maps.emplace(key, *map);
  return nullptr;
}

// Forgets every cached map (the emulator's tests: a cold start).
inline void reset_map_cache() {
  const std::lock_guard<std::mutex> lock(map_cache().mu);
  map_cache().maps.clear();
}

#if defined(ZAYA_EMU)
namespace emu_detail {
inline emu::MBarrier& bar(const uint64_t* b) {
  auto& bars = emu::block().mbarriers;
  const auto it = bars.find(b);
  if (it == bars.end()) emu::fail("emulated mbarrier used before bar_init");
  return it->second;
}
// Completes the phase once no arrival and no transaction byte is pending.
inline void settle(emu::MBarrier& s) {
  if (s.pending == 0 && s.tx_bytes == 0) {
    s.phase ^= 1;
    s.pending = s.expected;
  }
}
}  // namespace emu_detail
#endif

ZAYA_DEV void bar_init(uint64_t* bar, int count) {
#if defined(ZAYA_EMU)
  emu::block().mbarriers[bar] = {count, count, 0, 0};
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(vendor::smem_u32(bar)), "r"(count) : "memory");
#else
  (void)bar, (void)count;
#endif
}

// Makes initialised mbarriers visible to the copy engine; follow with a block barrier.
ZAYA_DEV void bar_init_fence() {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// One arrival that also announces `bytes` of copies that will complete on this phase.
ZAYA_DEV void bar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#if defined(ZAYA_EMU)
  auto& s = emu_detail::bar(bar);
  s.tx_bytes += bytes;
  s.pending -= 1;
  emu_detail::settle(s);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(vendor::smem_u32(bar)), "r"(bytes)
               : "memory");
#else
  (void)bar, (void)bytes;
#endif
}

ZAYA_DEV void bar_wait(uint64_t* bar, uint32_t phase) {
#if defined(ZAYA_EMU)
  if (emu_detail::bar(bar).phase == static_cast<int>(phase & 1)) {
    emu::fail("emulated mbarrier wait before its copies were issued (see tma.cuh: the emulator cannot spin)");
  }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const uint32_t addr = vendor::smem_u32(bar);
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(phase & 1)
        : "memory");
  }
#else
  (void)bar, (void)phase;
#endif
}

// Box at (row, col) of the map's matrix into shared memory dst (128-byte aligned; 1024-byte aligned
// with the 128-byte swizzle), completing its box_rows * box_cols * 2 bytes on bar.
ZAYA_DEV void load_2d(void* dst, const Map* map, uint64_t* bar, int row, int col) {
#if defined(ZAYA_EMU)
  const uint32_t d0 = vendor::smem_u32(dst);  // the emulated shared-memory address (dynamic shared memory)
  const bool sw = map->swizzle == Swizzle::k128B;
  if (d0 % (sw ? 1024u : 128u) != 0) emu::fail("emulated TMA: destination not aligned (128 B, swizzled 1024 B)");
  auto* smem = static_cast<unsigned char*>(emu::dynamic_smem());
  const uint32_t bytes = static_cast<uint32_t>(map->box_rows) * static_cast<uint32_t>(map->box_cols) * 2;
  if (d0 + bytes > emu::block().dynamic_smem.size()) emu::fail("emulated TMA: box past the dynamic shared memory");
  for (int r = 0; r < map->box_rows; ++r)
    for (int c = 0; c < map->box_cols; ++c) {
      const int64_t gr = static_cast<int64_t>(row) + r, gc = static_cast<int64_t>(col) + c;
      const bool in = gr >= 0 && gr < map->rows && gc >= 0 && gc < map->cols;
      const uint16_t v = in ? map->base[gr * map->row_stride + gc] : uint16_t{0};
      uint32_t a = d0 + static_cast<uint32_t>(r * map->box_cols + c) * 2;
      if (sw) a ^= ((a >> 7) & 7u) << 4;  // 16-byte chunk bits [4,7) ^= the row in the 1024-byte atom
      std::memcpy(smem + a, &v, 2);
    }
  auto& s = emu_detail::bar(bar);
  s.tx_bytes -= static_cast<int64_t>(map->box_rows) * map->box_cols * 2;
  emu_detail::settle(s);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          vendor::smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(col), "r"(row), "r"(vendor::smem_u32(bar))
      : "memory");
#else
  (void)dst, (void)map, (void)bar, (void)row, (void)col;
  __trap();
#endif
}

}  // namespace zaya::tma

#endif
