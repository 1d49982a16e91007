// The small portable layer under every zaya kernel body (the ggml-cuda "vendor header" idea): one
// source, compiled by nvcc for CUDA and by hip-clang for ROCm. Kernel files use only the names
// defined here for anything that differs between the two: stream type, launch-error check, warp
// shuffles, warp size, 16-bit float conversions and FP-contraction-proof arithmetic.
//
// It also compiles as plain host C++ (no CUDA/HIP compiler): then only the dtype tags and the
// conversion helpers exist, so tests can check them against torch on the CPU
// (tests/test_gpu_rounding.py). With ZAYA_SIMT_EMU defined, a host compile instead gets the SIMT
// emulator (simt_emu.h): the whole kernel bodies then run on the CPU, for tests without a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "runtime_state.h"  // counters of host-side runtime calls, the Hopper opt-in (plain C++)

#if defined(__HIPCC__) || defined(__HIP__)
#define ZAYA_HIP 1
#include <hip/hip_runtime.h>
#elif defined(__CUDACC__)
#define ZAYA_CUDA 1
#include <cuda_runtime.h>
#elif defined(ZAYA_SIMT_EMU)
#define ZAYA_EMU 1
#include "simt_emu.h"
#else
#define ZAYA_HOST_ONLY 1
#endif

#if !defined(ZAYA_HOST_ONLY)
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#endif

#if defined(ZAYA_HOST_ONLY)
#define ZAYA_HD inline
#elif defined(ZAYA_EMU)
#define ZAYA_HD inline
#define ZAYA_DEV inline
#else
#define ZAYA_HD __host__ __device__ __forceinline__
#define ZAYA_DEV __device__ __forceinline__
#endif

namespace zaya::vendor {

// ------------------------------------------------------------------------------------------------
// Runtime names
// ------------------------------------------------------------------------------------------------
#if defined(ZAYA_CUDA)
using stream_t = cudaStream_t;
using error_t = cudaError_t;
inline constexpr error_t kSuccess = cudaSuccess;
inline error_t get_last_error() { return cudaGetLastError(); }
inline const char* error_string(error_t e) { return cudaGetErrorString(e); }
inline error_t get_device(int* d) { return cudaGetDevice(d); }
inline error_t query_sm_count(int* n, int dev) {
  return cudaDeviceGetAttribute(n, cudaDevAttrMultiProcessorCount, dev);
}
inline error_t query_cc_major(int* n, int dev) {
  return cudaDeviceGetAttribute(n, cudaDevAttrComputeCapabilityMajor, dev);
}
inline error_t query_warp_size(int* n, int dev) { return cudaDeviceGetAttribute(n, cudaDevAttrWarpSize, dev); }
#elif defined(ZAYA_HIP)
using stream_t = hipStream_t;
using error_t = hipError_t;
inline constexpr error_t kSuccess = hipSuccess;
inline error_t get_last_error() { return hipGetLastError(); }
inline const char* error_string(error_t e) { return hipGetErrorString(e); }
inline error_t get_device(int* d) { return hipGetDevice(d); }
inline error_t query_sm_count(int* n, int dev) {
  return hipDeviceGetAttribute(n, hipDeviceAttributeMultiprocessorCount, dev);
}
inline error_t query_warp_size(int* n, int dev) { return hipDeviceGetAttribute(n, hipDeviceAttributeWarpSize, dev); }
#elif defined(ZAYA_EMU)
using stream_t = void*;
using error_t = int;
inline constexpr error_t kSuccess = 0;
inline error_t get_last_error() { return 0; }  // emulated launches report through launch()
inline const char* error_string(error_t) { return "no error"; }
inline error_t get_device(int* d) { *d = 0; return 0; }
inline error_t query_sm_count(int* n, int) {  // small, so grid-shape logic gets exercised
  emu::attribute_queries().fetch_add(1, std::memory_order_relaxed);
  *n = 4;
  return 0;
}
inline error_t query_cc_major(int* n, int) {  // the 32-lane emulator models Hopper's units
  emu::attribute_queries().fetch_add(1, std::memory_order_relaxed);
  *n = 9;
  return 0;
}
inline error_t query_warp_size(int* n, int) {  // ZAYA_EMU_WARP_SIZE unless a test made the device report another
  emu::attribute_queries().fetch_add(1, std::memory_order_relaxed);
  *n = emu::device_warp_attribute().load(std::memory_order_relaxed);
  return 0;
}
#endif

// ------------------------------------------------------------------------------------------------
// Per-device attributes, asked of the runtime once per device and process: a launch must not pay a
// driver call for a constant (runtime::counters().device_attribute_queries counts the real queries).
// Devices numbered kMaxDevices or more are asked every time.
// ------------------------------------------------------------------------------------------------
#if !defined(ZAYA_HOST_ONLY)
inline constexpr int kMaxDevices = 64;
enum DeviceAttribute : int { kAttrSmCount = 0, kAttrCcMajor = 1, kAttrWarpSize = 2, kNumDeviceAttributes = 3 };

inline std::atomic<int>* attribute_cache(int attr) {  // value + 1, 0 = not asked yet
  static std::atomic<int> cache[kNumDeviceAttributes][kMaxDevices];
  return cache[attr];
}

inline error_t cached_attribute(int attr, int dev, int* out, error_t (*query)(int*, int)) {
  const bool cacheable = dev >= 0 && dev < kMaxDevices;
  if (cacheable) {
    const int v = attribute_cache(attr)[dev].load(std::memory_order_relaxed);
    if (v > 0) {
      *out = v - 1;
      return kSuccess;
    }
  }
  runtime::count(runtime::counters().device_attribute_queries);
  const error_t e = query(out, dev);
  if (e == kSuccess && cacheable) attribute_cache(attr)[dev].store(*out + 1, std::memory_order_relaxed);
  return e;
}

// Streaming multiprocessors (compute units) of device `dev`.
inline error_t sm_count(int* n, int dev) { return cached_attribute(kAttrSmCount, dev, n, &query_sm_count); }
// Lanes per warp / wavefront that device `dev` reports (its attribute).
inline error_t warp_size(int* n, int dev) { return cached_attribute(kAttrWarpSize, dev, n, &query_warp_size); }

// The same as plain values for the launchers: the count, or 0 when the runtime could not say.
inline int device_sm_count(int dev) {
  int n = 0;
  return sm_count(&n, dev) == kSuccess && n > 0 ? n : 0;
}
inline int device_warp_size(int dev) {
  int n = 0;
  return warp_size(&n, dev) == kSuccess && n > 0 ? n : 0;
}
#if defined(ZAYA_CUDA) || defined(ZAYA_EMU)
// Compute capability major of device `dev` (the Hopper paths' check, wgmma.cuh).
inline error_t cc_major(int* n, int dev) { return cached_attribute(kAttrCcMajor, dev, n, &query_cc_major); }
#endif

// ------------------------------------------------------------------------------------------------
// Dynamic shared memory above 48 KiB needs the kernel's opt-in on CUDA (cudaFuncSetAttribute, a
// driver call): made once per kernel, device and size (the largest size granted so far covers
// smaller launches), thread-safe. The 32-lane emulator models the rule (simt_emu.h: a launch above
// 48 KiB fails without the opt-in), so a cache that skipped a needed opt-in would fail its tests.
// CDNA has no such opt-in (64 KiB of LDS per workgroup).
// ------------------------------------------------------------------------------------------------
#if defined(ZAYA_CUDA) || (defined(ZAYA_EMU) && ZAYA_EMU_WARP_SIZE == 32)
#define ZAYA_SMEM_OPT_IN 1
inline constexpr size_t kSmemWithoutOptIn = 48 * 1024;

struct SmemOptIns {
  std::mutex mu;
  std::map<std::pair<int, const void*>, size_t> granted;  // (device, kernel) -> bytes
};

inline SmemOptIns& smem_opt_ins() {
  static SmemOptIns s;
  return s;
}

inline error_t smem_opt_in(const void* kernel, size_t smem) {
  if (smem <= kSmemWithoutOptIn) return kSuccess;
  int dev = 0;
  if (const error_t e = get_device(&dev); e != kSuccess) return e;
  SmemOptIns& s = smem_opt_ins();
  const std::lock_guard<std::mutex> lock(s.mu);
  size_t& granted = s.granted[{dev, kernel}];
  if (granted >= smem) return kSuccess;
  runtime::count(runtime::counters().func_attribute_sets);
#if defined(ZAYA_CUDA)
  const error_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
#else
  const error_t e = emu::set_max_dynamic_smem(kernel, smem);
#endif
  if (e == kSuccess) granted = smem;
  return e;
}
#endif

// Forgets the cached attributes and opt-ins (the emulator's tests: a cold start, then steady state).
inline void reset_launch_caches() {
  for (int a = 0; a < kNumDeviceAttributes; ++a)
    for (int d = 0; d < kMaxDevices; ++d) attribute_cache(a)[d].store(0, std::memory_order_relaxed);
#if defined(ZAYA_SMEM_OPT_IN)
  const std::lock_guard<std::mutex> lock(smem_opt_ins().mu);
  smem_opt_ins().granted.clear();
#endif
}

#endif  // !ZAYA_HOST_ONLY

// ------------------------------------------------------------------------------------------------
// Kernel launch: kernel<<<grid, block, smem, stream>>>(args...), written once for both vendors and
// the emulator. Returns nullptr or the launch error's message (static storage).
// ------------------------------------------------------------------------------------------------
#if !defined(ZAYA_HOST_ONLY)
template <typename... KArgs, typename... Args>
inline const char* launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, stream_t stream,
                          Args... args) {
  const void* const id = reinterpret_cast<const void*>(kernel);
#if defined(ZAYA_SMEM_OPT_IN)
  // Above 48 KiB of dynamic shared memory a kernel must opt in (Hopper kernels use up to ~200 KiB).
  if (const error_t e = smem_opt_in(id, smem); e != kSuccess) return error_string(e);
#endif
#if defined(ZAYA_EMU)
  (void)stream;
  auto call = [&] { kernel(static_cast<KArgs>(args)...); };
  using Call = decltype(call);
  return emu::launch(grid, block, smem, [](void* c) { (*static_cast<Call*>(c))(); }, &call, id);
#else
  (void)id;
  kernel<<<grid, block, smem, stream>>>(static_cast<KArgs>(args)...);
  const error_t e = get_last_error();
  return e == kSuccess ? nullptr : error_string(e);
#endif
}
#endif

// ------------------------------------------------------------------------------------------------
// Warp size: a compile-time constant of every pass, the wave size the kernels are written and
// compiled for. CUDA: 32. Emulator: ZAYA_EMU_WARP_SIZE.
// AMD: derived from the target's architecture macros, never from __AMDGCN_WAVEFRONT_SIZE (LLVM 22,
// the compiler of current ROCm, removed it; ROCm 6.3 deprecated it and made `warpSize` a run-time
// value). The HIP kernels are written for CDNA: 64-lane wavefronts and the MFMA instructions of
// gfx90a and newer (mma.cuh). Every gfx9 target runs wave64 only, so __GFX9__ means 64. RDNA
// (gfx10/11/12) defaults to wave32 and has no MFMA: it is refused with an #error rather than compiled
// into kernels whose lane maps would be wrong. Because every device pass is therefore wave64, the
// host pass of a HIP compile (which knows no target) uses 64 too, and the launchers compare it with
// the device's reported wave size (current_device below) before every launch.
// ------------------------------------------------------------------------------------------------
#if defined(ZAYA_CUDA)
#define ZAYA_WARP_SIZE 32
#elif defined(ZAYA_EMU)
#define ZAYA_WARP_SIZE ZAYA_EMU_WARP_SIZE
#elif defined(ZAYA_HIP)
#if !defined(__HIP_DEVICE_COMPILE__)
#define ZAYA_WARP_SIZE 64  // host pass: the wave size of every device pass, see above
#elif defined(__GFX9__)
#define ZAYA_WARP_SIZE 64  // GCN/CDNA: wave64 only
#if !defined(__gfx90a__) && !defined(__gfx940__) && !defined(__gfx941__) && !defined(__gfx942__) && \
    !defined(__gfx950__)
#error "zaya vendor.h: this gfx9 target lacks the MFMA instructions the HIP kernels use (bf16 _1k forms of gfx90a and newer); build for gfx90a, gfx940, gfx941, gfx942 or gfx950"
#endif
#elif defined(__GFX10__) || defined(__GFX11__) || defined(__GFX12__)
#error "zaya vendor.h: RDNA targets (gfx10, gfx11, gfx12) are not supported: the HIP kernels assume 64-lane wavefronts and CDNA's MFMA; build for gfx90a or gfx942 (CMAKE_HIP_ARCHITECTURES)"
#else
#error "zaya vendor.h: unknown AMD target (none of __GFX9__, __GFX10__, __GFX11__, __GFX12__): the HIP kernels support gfx90a, gfx940, gfx941, gfx942 and gfx950"
#endif
#endif

#if !defined(ZAYA_HOST_ONLY)
inline constexpr int kWarpSize = ZAYA_WARP_SIZE;
static_assert(kWarpSize == 32 || kWarpSize == 64, "unexpected warp size");

// The launchers' first step: the current device and its real wave size (cached, see
// device_warp_size), refusing a device whose wave size is not the one the kernels were compiled for
// (their lane maps, shuffles and block shapes all assume kWarpSize). Host geometry is then computed
// from *warp. Returns nullptr, or an error naming op and both sizes (thread-local storage, valid
// until this thread's next call).
inline const char* current_device(const char* op, int* dev, int* warp) {
  thread_local std::string msg;
  if (get_device(dev) != kSuccess) {
    msg = std::string("zaya ") + op + ": cannot get the current device";
    return msg.c_str();
  }
  *warp = device_warp_size(*dev);
  if (*warp == kWarpSize) return nullptr;
  if (*warp <= 0) {
    msg = std::string("zaya ") + op + ": cannot query the wave size of device " + std::to_string(*dev);
  } else {
    msg = std::string("zaya ") + op + ": device " + std::to_string(*dev) + " runs " + std::to_string(*warp) +
          "-lane warps/wavefronts but these kernels were compiled for " + std::to_string(kWarpSize) +
          " (CUDA: 32; HIP: CDNA wave64, gfx90a/gfx94x); build zaya_ops for this GPU's architecture";
  }
  return msg.c_str();
}

// Butterfly shuffle across the whole warp. Every lane of the warp must take part (kernels never
// let a lane leave early); CUDA needs the full member mask, HIP has no mask argument.
ZAYA_DEV float shfl_xor(float v, int lane_mask) {
#if defined(ZAYA_CUDA)
  return __shfl_xor_sync(0xffffffffu, v, lane_mask, kWarpSize);
#elif defined(ZAYA_EMU)
  return emu::shfl(v, emu::lane_id() ^ lane_mask);
#else
  return __shfl_xor(v, lane_mask, kWarpSize);
#endif
}

// Lane `src`'s value of v (every lane must take part, as for shfl_xor).
template <typename T>
ZAYA_DEV T shfl(T v, int src) {
#if defined(ZAYA_CUDA)
  return __shfl_sync(0xffffffffu, v, src, kWarpSize);
#elif defined(ZAYA_EMU)
  return emu::shfl(v, src);
#else
  return __shfl(v, src, kWarpSize);
#endif
}

ZAYA_DEV int lane_id() {
#if defined(ZAYA_EMU)
  return emu::lane_id();
#else
  return static_cast<int>(threadIdx.x) % kWarpSize;  // kernels use 1-D blocks
#endif
}

// Device-wide relaxed atomic add (counters of the token grouping).
ZAYA_DEV int atomic_add(int* p, int v) {
#if defined(ZAYA_EMU)
  return emu::atomic_add(p, v);
#else
  return atomicAdd(p, v);
#endif
}

// Shared-memory address of p, as cp.async and Hopper's matrix units take it (CUDA and the emulator
// only). Emulator: the offset in the block's dynamic shared memory, which is where such tiles must live.
#if defined(ZAYA_CUDA) || defined(ZAYA_EMU)
ZAYA_DEV uint32_t smem_u32(const void* p) {
#if defined(ZAYA_CUDA)
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#else
  return emu::smem_offset(p);
#endif
}
#endif

// Asynchronous 16-byte global -> shared copy (zero-fill when !valid; `src` is then not read), the
// building block of multi-stage tile pipelines. CUDA sm_80+: cp.async.cg, completed in commit groups
// (copy_async_commit / copy_async_wait<N>: wait until at most N groups are in flight; then
// __syncthreads before other threads read). Elsewhere (CDNA, the emulator) a plain synchronous copy,
// so the same pipeline code is correct everywhere, only without the overlap.
ZAYA_DEV void copy_async16(void* dst_smem, const void* src, bool valid) {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst_smem)), "l"(src),
               "r"(valid ? 16 : 0));
#else
  uint4 v{0u, 0u, 0u, 0u};
  if (valid) v = *static_cast<const uint4*>(src);
  *static_cast<uint4*>(dst_smem) = v;
#endif
}

ZAYA_DEV void copy_async_commit() {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

template <int N>
ZAYA_DEV void copy_async_wait() {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// The block's dynamic shared memory (the launch's smem bytes), 16-byte aligned.
template <typename T>
ZAYA_DEV T* dynamic_smem() {
#if defined(ZAYA_EMU)
  return static_cast<T*>(emu::dynamic_smem());
#else
  extern __shared__ __align__(16) unsigned char zaya_dynamic_smem[];
  return reinterpret_cast<T*>(zaya_dynamic_smem);
#endif
}

#endif  // !ZAYA_HOST_ONLY

// Whether p may be read or written 16 bytes at a time (the launchers' alignment rule).
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ------------------------------------------------------------------------------------------------
// Bit casts
// ------------------------------------------------------------------------------------------------
ZAYA_HD uint32_t f2u(float f) {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#elif defined(ZAYA_HIP) || defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 11)
  return __builtin_bit_cast(uint32_t, f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

ZAYA_HD float u2f(uint32_t u) {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#elif defined(ZAYA_HIP) || defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 11)
  return __builtin_bit_cast(float, u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// ------------------------------------------------------------------------------------------------
// fp32 add / multiply that are never fused into an FMA. The kernels must reproduce PyTorch's
// rounding points (e.g. (r + rb) * rs rounded, then added), and both nvcc (--fmad=true) and
// hip-clang (-ffp-contract=fast by default) would otherwise contract a*b+c. nvcc: the _rn
// intrinsics are documented never to be contracted. clang: the pragma removes the `contract` flag
// from the instruction, and the backend fuses only instructions that carry it.
// ------------------------------------------------------------------------------------------------
ZAYA_HD float fadd(float a, float b) {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  return a + b;
#endif
}

ZAYA_HD float fmul(float a, float b) {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
#if defined(__clang__)
#pragma clang fp contract(off)
#endif
  return a * b;
#endif
}

// IEEE fp32 division, also under --use_fast_math / -prec-div=false on CUDA (on HIP it is
// correctly rounded unless -ffast-math or -fno-hip-fp32-correctly-rounded-divide-sqrt is given:
// never build the kernels with those; fp32 denormals must not be flushed either, bf16 has them too).
ZAYA_HD float fdiv(float a, float b) {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

// Correctly rounded fp32 square root (device code). CUDA: the _rn intrinsic. AMD: v_sqrt_f32 is
// only faithful (1 ulp) and ROCm 5.2's __fsqrt_rn is that same native sqrt, so we apply the
// correction LLVM >= 17 uses for llvm.sqrt.f32: test both neighbours of the estimate with an exact
// FMA residual. Tiny inputs are scaled by 2^32 first (exact) so that no denormal is involved.
#if !defined(ZAYA_HOST_ONLY)
ZAYA_DEV float sqrt_rn(float x) {
#if defined(ZAYA_CUDA)
  return __fsqrt_rn(x);
#elif defined(ZAYA_EMU)
  return __builtin_sqrtf(x);  // IEEE sqrt on the host
#else
  if (!(x > 0.f) || !(x < __builtin_huge_valf())) return __builtin_sqrtf(x);  // 0, <0, inf, NaN
  const bool tiny = x < 0x1p-96f;
  const float xs = tiny ? x * 0x1p+32f : x;
  const float s = __builtin_sqrtf(xs);
  const float down = u2f(f2u(s) - 1u), up = u2f(f2u(s) + 1u);
  const float r_down = __builtin_fmaf(-down, s, xs), r_up = __builtin_fmaf(-up, s, xs);
  float t = r_down <= 0.f ? down : s;
  t = r_up > 0.f ? up : t;
  return tiny ? t * 0x1p-16f : t;
#endif
}
#endif

// ------------------------------------------------------------------------------------------------
// 16-bit floats carried as raw uint16_t (the ROCm 5.2 headers used for compile checks have no
// hip_bf16.h, and one set of conversions on both vendors guarantees they agree bit for bit).
// All conversions round to nearest even, like torch's CPU and CUDA casts. NaN payloads are not
// preserved (any NaN becomes a quiet NaN of the same sign); everything else is exact.
// ------------------------------------------------------------------------------------------------

ZAYA_HD float bf16_to_float(uint16_t b) { return u2f(static_cast<uint32_t>(b) << 16); }

ZAYA_HD uint16_t float_to_bf16(float f) {
  const uint32_t u = f2u(f);
  // Round to nearest even on the 16 dropped bits; overflow carries into the exponent (max -> inf).
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x0040u;
  // A select, not an early return: hip-clang turned the branch into divergent control flow.
  return static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

// IEEE binary16. Branch-light scheme of the FP16 library (also used by c10::Half on the CPU):
// the subnormal case lets one fp32 add do the rounding, so it relies only on fp32 adds rounding
// to nearest even, which holds on both vendors; flushing fp32 denormals does not change results
// (an fp32 denormal is far below half the smallest fp16 subnormal, and the adds' other operands
// and results are normal).
ZAYA_HD float half_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;  // drops the sign
  // Normal and inf/NaN: shift the exponent and mantissa into place and rescale by 2^-112 so that
  // the fp16 exponent bias (15) becomes fp32's (127); inf/NaN come out with exponent 255.
  const uint32_t exp_offset = 0xE0u << 23;
  const float normalized = fmul(u2f((two_w >> 4) + exp_offset), u2f(0x7800000u));  // * 2^-112
  // Subnormal: put the mantissa under the exponent of 0.5 and subtract 0.5: exact.
  const uint32_t magic_mask = 126u << 23;
  const float denormalized = fadd(u2f((two_w >> 17) | magic_mask), -0.5f);
  const uint32_t denormalized_cutoff = 1u << 27;
  const uint32_t result = sign | (two_w < denormalized_cutoff ? f2u(denormalized) : f2u(normalized));
  return u2f(result);
}

ZAYA_HD uint16_t float_to_half(float f) {
  uint32_t u = f2u(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;  // |f|
  uint32_t o;
  if (u >= 0x47800000u) {  // |f| >= 65536 (rounds to inf at any rate), inf or NaN
    o = u > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (u < 0x38800000u) {  // |f| < 2^-14: fp16 subnormal or zero
    // Adding 0.5 aligns the 10 fp16 mantissa bits at the bottom of the fp32 mantissa; the fp32 add
    // rounds to nearest even, exactly the fp16 rounding we want. Subtracting the magic's bits
    // leaves the fp16 bit pattern (a carry into bit 10 correctly gives the smallest normal).
    const float magic = u2f(126u << 23);  // 0.5
    o = f2u(fadd(u2f(u), magic)) - (126u << 23);
  } else {
    // Normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even; a
    // mantissa carry bumps the exponent, up to 0x7c00 (inf) for |f| >= 65520.
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu + mant_odd;
    o = u >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

}  // namespace zaya::vendor

// ------------------------------------------------------------------------------------------------
// dtype tags: a kernel template takes a tag, the tag says how elements are stored in memory and how
// they convert to/from fp32 (the compute type of every kernel).
// ------------------------------------------------------------------------------------------------
namespace zaya::dtype {

struct F32 {
  using storage = float;
  static constexpr const char* name = "float32";
  static ZAYA_HD float to_float(float v) { return v; }
  static ZAYA_HD float from_float(float v) { return v; }
  // round(v) as a float: the value v takes once stored in this dtype.
  static ZAYA_HD float round(float v) { return v; }
};

struct BF16 {
  using storage = uint16_t;
  static constexpr const char* name = "bfloat16";
  static ZAYA_HD float to_float(uint16_t v) { return vendor::bf16_to_float(v); }
  static ZAYA_HD uint16_t from_float(float v) { return vendor::float_to_bf16(v); }
  static ZAYA_HD float round(float v) { return to_float(from_float(v)); }
};

struct F16 {
  using storage = uint16_t;
  static constexpr const char* name = "float16";
  static ZAYA_HD float to_float(uint16_t v) { return vendor::half_to_float(v); }
  static ZAYA_HD uint16_t from_float(float v) { return vendor::float_to_half(v); }
  static ZAYA_HD float round(float v) { return to_float(from_float(v)); }
};

}  // namespace zaya::dtype
