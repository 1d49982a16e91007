// Hopper warpgroup matrix multiply-accumulate (wgmma.mma_async, sm_90a), bf16 or fp16 operands, fp32
// accumulators: the building block of the Hopper paths of moe_top1 and cca_attention. A warpgroup
// (128 consecutive threads starting at a multiple of 128) computes a 64 x N tile, N = 64 or 128,
// per 16-deep k-step:
//   * B (and A in the "ss" form) is read by the tensor cores straight from shared memory through a
//     64-bit matrix descriptor (make_desc); A in the "rs" form comes from registers (FragA, the
//     mma.sync m16n8k16 A layout, warp w of the warpgroup holding rows 16w..16w+15).
//   * Operations are asynchronous: fence() before the first one (and after the accumulators were
//     touched by ordinary code), commit() closes a group, wait<n>() waits until at most n groups are in
//     flight. Shared memory an operation reads must stay unchanged until its group is waited for, and
//     shared memory written by ordinary stores or cp.async must be followed by fence_async_proxy() in
//     each writing thread before the barrier that precedes the wgmma.
//
// Shared-memory layouts: the no-swizzle ("interleave") canonical layouts of the PTX ISA (section
// "Shared Memory Matrix Layout"; T = 8 elements = 16 bytes), and the K-major 128-byte swizzle:
//   K-major, ((8,m),(T,2k)):((1T,SBO),(1,LBO)): "core matrices" of 8 rows x 8 elements, 128 contiguous
//     bytes (row after row); LBO = bytes to the next core matrix along k, SBO = along the rows (m or n).
//   MN-major (kTransB), ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO)): core matrices of 8 k-rows x 8 n-elements;
//     SBO = bytes to the next core matrix along n, LBO = along k.
//   K-major 128-byte swizzle (layout type 1), Swizzle<3,4,3> o ((8,m),(T,2k)):((8T,SBO),(1,T)): rows of
//     64 elements (128 bytes), 8 rows = one 1024-byte atom, SBO = bytes between atoms along the rows;
//     the swizzle is applied to the shared-memory address: its 16-byte chunk bits [4,7) are XORed with
//     bits [7,10) (the row within the atom), so atoms must start 1024-byte aligned. The descriptor of
//     k-step kk (16 deep) points 32 kk bytes into the atom (CUTLASS's and the PTX ISA's reading);
//     LBO is unused there and set to 16 bytes as CuTe's make_gmma_desc does. TMA's
//     CU_TENSOR_MAP_SWIZZLE_128B writes this placement (tma.cuh). MN-major swizzled layouts: not used.
// Accumulator element i of warpgroup thread t (Acc::x[i]): row 16 (t / 32) + (t % 32) / 4 + 8 ((i / 2) % 2),
// column 8 (i / 4) + 2 (t % 4) + i % 2 (acc_row / acc_col).
//
// Under the SIMT emulator (32-lane warps) the instruction is emulated from those documented layouts:
// each thread computes its own accumulators by decoding the descriptors at issue. The first thread
// of the warpgroup to issue an operation hashes its operands' shared-memory bytes, and the last one
// to wait for it hashes them again: a kernel that overwrites an operand while the operation may still
// read it fails its launch (the fiber order, forward or reverse, decides which interleavings are
// seen, as for races). This checks the kernels against the layouts as documented; whether the
// hardware reads them the same way needs a Hopper GPU run.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "mma.cuh"
#include "vendor.h"

#if defined(ZAYA_CUDA) || (defined(ZAYA_EMU) && ZAYA_WARP_SIZE == 32)
#define ZAYA_HAVE_WGMMA_SOURCE 1

namespace zaya::wgmma {

inline constexpr int kThreads = 128;  // one warpgroup

template <int N>
struct Acc {
  static_assert(N == 64 || N == 128, "wgmma tiles are 64 x 64 or 64 x 128 here");
  float x[N / 2];
};

// The register A operand: mma.sync m16n8k16's A fragment, warp w of the warpgroup holding rows
// 16w .. 16w + 15 (mma.cuh).
using FragA = mma::FragA;
static_assert(sizeof(FragA) == 16, "wgmma's register A operand is four 32-bit registers per thread");

// Row and column in the 64 x N tile of accumulator i of warpgroup thread t (0..127).
ZAYA_HD int acc_row(int t, int i) { return 16 * (t >> 5) + ((t & 31) >> 2) + 8 * ((i >> 1) & 1); }
ZAYA_HD int acc_col(int t, int i) { return 8 * (i >> 2) + 2 * (t & 3) + (i & 1); }

// Element offset of (row r, column k) in a K-major no-swizzle tile of `cols` columns stored as
// [rows / 8][cols / 8] core matrices; its descriptor has LBO = 128 and SBO = cols / 8 * 128 bytes.
ZAYA_HD int kmajor_offset(int r, int k, int cols) {
  return ((r >> 3) * (cols >> 3) + (k >> 3)) * 64 + (r & 7) * 8 + (k & 7);
}

// Element offset of (row r, column k) in a K-major 128-byte-swizzled tile of 64 columns ([rows][64],
// 128-byte rows) whose start is 1024-byte aligned: the 16-byte chunk k / 8 lands at chunk
// (k / 8) ^ (r % 8) of its row (Swizzle<3,4,3> on the byte address). Its descriptor: make_desc_sw128.
ZAYA_HD int sw128_offset(int r, int k) { return r * 64 + ((((k >> 3) ^ r) & 7) << 3) + (k & 7); }

// Matrix descriptor of a no-swizzle operand at shared-memory pointer p (16-byte aligned).
ZAYA_DEV uint64_t make_desc(const void* p, uint32_t lbo_bytes, uint32_t sbo_bytes) {
  const uint32_t addr = vendor::smem_u32(p);
  return static_cast<uint64_t>((addr & 0x3FFFFu) >> 4) | (static_cast<uint64_t>((lbo_bytes & 0x3FFFFu) >> 4) << 16) |
         (static_cast<uint64_t>((sbo_bytes & 0x3FFFFu) >> 4) << 32);
}

// Matrix descriptor of a K-major 128-byte-swizzled operand (layout type 1 in bits 62-63, base offset
// 0, LBO 16 bytes as make_gmma_desc sets it) at p: an atom's start plus 32 bytes per 16-deep k-step;
// sbo_bytes between 8-row atoms (1024 for [rows][64] tiles).
ZAYA_DEV uint64_t make_desc_sw128(const void* p, uint32_t sbo_bytes) {
  return make_desc(p, 16, sbo_bytes) | (uint64_t{1} << 62);
}

// The descriptors of the two ways the kernels read a kmajor_offset tile (rows x cols, cols a multiple
// of 16), for its 16-deep k-step ks (tests/test_layouts.py checks both against CUTLASS's make_gmma_desc):
//   K-major operand (rows = m or n, k along cols): LBO = 128 B (next core matrix along k),
//     SBO = cols / 8 * 128 B (next 8 rows).
ZAYA_DEV uint64_t kmajor_desc(const uint16_t* tile, int ks, int cols) {
  return make_desc(tile + ks * 128, 128, static_cast<uint32_t>(cols / 8 * 128));
}
//   MN-major operand B (rows = k, n along cols; the attention values V): a core matrix is 8 k-rows x
//     8 n-elements, LBO = cols / 8 * 128 B (next core matrix along k), SBO = 128 B (next along n).
//     This is the no-swizzle ("interleave") reading of CUTLASS's make_gmma_desc<Major::MN> and of
//     the PTX ISA's stride table; the swizzled MN-major modes swap the roles of LBO and SBO.
ZAYA_DEV uint64_t mn_major_desc(const uint16_t* tile, int ks, int cols) {
  return make_desc(tile + ks * 16 * cols, static_cast<uint32_t>(cols / 8 * 128), 128);
}

#if defined(ZAYA_EMU)
namespace emu_detail {

struct Operand {
  const unsigned char* base;
  uint32_t offset, lbo, sbo;
  bool sw128;  // layout type 1: K-major 128-byte swizzle
};

// Layout types modelled: 0 (no swizzle) and 1 (128-byte swizzle, K-major, base offset 0, LBO 16 bytes
// as CuTe sets it); 64- and 32-byte swizzles and non-zero base offsets fail the launch.
inline Operand decode(uint64_t d) {
  const int type = static_cast<int>(d >> 62);
  if (type != 0 && type != 1) emu::fail("emulated wgmma: only the no-swizzle and 128-byte-swizzle layouts are modelled");
  if (((d >> 49) & 7u) != 0) emu::fail("emulated wgmma: a non-zero matrix base offset is not modelled");
  const uint32_t off = static_cast<uint32_t>(d & 0x3FFFu) << 4;
  const uint32_t lbo = static_cast<uint32_t>((d >> 16) & 0x3FFFu) << 4;
  if (type == 1 && lbo != 16) emu::fail("emulated wgmma: a 128-byte-swizzle descriptor needs LBO = 16 bytes (CuTe's)");
  return {static_cast<const unsigned char*>(emu::dynamic_smem()), off, lbo,
          static_cast<uint32_t>((d >> 32) & 0x3FFFu) << 4, type == 1};
}

// The 128-byte swizzle of a shared-memory byte address: 16-byte chunk bits [4,7) ^= bits [7,10).
inline uint32_t swizzle128(uint32_t addr) { return addr ^ (((addr >> 7) & 7u) << 4); }

// Byte offset of element (mn, k) of an operand (mn: row of A or column of B; k: 0..15).
inline uint32_t at(const Operand& o, int mn, int k, bool mn_major) {
  if (o.sw128) {
    if (mn_major) emu::fail("emulated wgmma: only the K-major 128-byte swizzle is modelled");
    // Swizzle<3,4,3> o ((8,m),(T,2)):((8T,SBO),(1,T)): rows 128 bytes apart, then the address swizzle
    return swizzle128(o.offset + (mn >> 3) * o.sbo + (mn & 7) * 128 + (k >> 3) * 16 + (k & 7) * 2);
  }
  return mn_major ? o.offset + (mn >> 3) * o.sbo + (mn & 7) * 2 + (k >> 3) * o.lbo + (k & 7) * 16
                  : o.offset + (mn >> 3) * o.sbo + (mn & 7) * 16 + (k >> 3) * o.lbo + (k & 7) * 2;
}

inline uint16_t load(const Operand& o, int mn, int k, bool mn_major) {
  const uint32_t b = at(o, mn, k, mn_major);
  if (b + 2 > emu::block().dynamic_smem.size()) {
    emu::fail("emulated wgmma: a descriptor reaches past the block's dynamic shared memory");
  }
  uint16_t v;
  std::memcpy(&v, o.base + b, 2);
  return v;
}

// FNV-1a over the operand's elements (rows x 16), the fingerprint checked at wait time.
inline uint64_t fingerprint(const Operand& o, int rows, bool mn_major) {
  uint64_t h = 1469598103934665603ull;
  for (int r = 0; r < rows; ++r)
    for (int k = 0; k < 16; ++k) h = (h ^ load(o, r, k, mn_major)) * 1099511628211ull;
  return h;
}

inline int wg_thread() { return emu::linear_tid() % kThreads; }

// The hash of an operation's shared-memory operands.
inline uint64_t operand_hash(const emu::AsyncOp& op) {
  uint64_t h = fingerprint(decode(op.desc_b), op.n, op.trans_b);
  if (op.desc_a != 0) h ^= fingerprint(decode(op.desc_a), 64, false) * 31;
  return h;
}

// Issue: the warpgroup's first thread to issue its next operation hashes the operands; every thread
// remembers the operation's sequence number until it waits for it.
inline void log_op(uint64_t da, uint64_t db, int n, bool trans_b) {
  emu::Fiber& f = emu::me();
  const uint64_t seq = f.async_seq++;
  auto& table = emu::block().async_ops;
  const std::pair<int, uint64_t> key{emu::linear_tid() / kThreads, seq};
  emu::AsyncOp op{da, db, n, trans_b, 0, 0};
  const auto it = table.find(key);
  if (it == table.end()) {
    op.hash = operand_hash(op);
    table.emplace(key, op);
  } else if (it->second.desc_a != da || it->second.desc_b != db || it->second.n != n || it->second.trans_b != trans_b) {
    // .sync.aligned: the warpgroup issues one operation, so every thread must give the same operands.
    emu::fail("emulated wgmma: threads of one warpgroup issued different descriptors or shapes");
  }
  f.async_ops.push_back({seq, false});
}

// Retires one operation for this thread; the warpgroup's last thread to do so checks the hash.
inline void retire(uint64_t seq) {
  auto& table = emu::block().async_ops;
  const auto it = table.find({emu::linear_tid() / kThreads, seq});
  if (it == table.end()) return;
  const int group_threads = std::min<int>(kThreads, static_cast<int>(emu::block().fibers.size()) -
                                                        (emu::linear_tid() / kThreads) * kThreads);
  if (++it->second.retired < group_threads) return;
  if (operand_hash(it->second) != it->second.hash) {
    emu::fail("emulated wgmma: an operand's shared memory changed before every thread waited for its group");
  }
  table.erase(it);
}

// c[r][col] for this thread's accumulators: sum over k of A(r, k) * B(k, col), A given per row.
template <class D, int N, class ARow>
void accumulate(Acc<N>& d, ARow a_of, uint64_t db, bool trans_b, bool acc) {
  const Operand b = decode(db);
  const int t = wg_thread();
  for (int i = 0; i < N / 2; ++i) {
    const int r = acc_row(t, i), c = acc_col(t, i);
    float s = 0.f;
    for (int k = 0; k < 16; ++k) s += a_of(r, k) * D::to_float(load(b, c, k, trans_b));
    d.x[i] = acc ? d.x[i] + s : s;
  }
}

}  // namespace emu_detail
#endif

ZAYA_DEV void fence() {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

ZAYA_DEV void commit() {
#if defined(ZAYA_EMU)
  emu::me().async_ops.push_back({0, true});
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int kInFlight>
ZAYA_DEV void wait() {
#if defined(ZAYA_EMU)
  auto& log = emu::me().async_ops;
  // The kInFlight newest committed groups stay in flight: everything up to the commit that closed
  // the group before them retires now (operations not yet committed stay, as on the hardware).
  size_t end = log.size();
  int seen = 0;
  while (end > 0) {
    --end;
    if (log[end].commit && ++seen == kInFlight + 1) break;
  }
  if (seen < kInFlight + 1) return;  // no more groups than may stay in flight
  ++end;
  for (size_t i = 0; i < end; ++i) {
    if (!log[i].commit) emu_detail::retire(log[i].seq);
  }
  log.erase(log.begin(), log.begin() + static_cast<std::ptrdiff_t>(end));
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kInFlight) : "memory");
#endif
}

// Orders this thread's earlier ordinary / cp.async writes to shared memory before later reads by the
// tensor cores (the "async proxy"); then a barrier makes them visible to the whole warpgroup.
ZAYA_DEV void fence_async_proxy() {
#if defined(ZAYA_CUDA) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Keeps the compiler from moving reads or writes of the accumulators across wgmma's asynchrony.
template <int N>
ZAYA_DEV void fence_acc(Acc<N>& d) {
#if defined(ZAYA_CUDA)
#pragma unroll
  for (int i = 0; i < N / 2; ++i) asm volatile("" : "+f"(d.x[i])::"memory");
#else
  (void)d;
#endif
}

#define ZAYA_WGMMA_REGS32 \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define ZAYA_WGMMA_REGS64                                                                                        \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29," \
  "%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,"   \
  "%57,%58,%59,%60,%61,%62,%63}"
#define ZAYA_WGMMA_OPS8(i)                                                                                  \
  "+f"(d.x[i]), "+f"(d.x[i + 1]), "+f"(d.x[i + 2]), "+f"(d.x[i + 3]), "+f"(d.x[i + 4]), "+f"(d.x[i + 5]), \
      "+f"(d.x[i + 6]), "+f"(d.x[i + 7])
#define ZAYA_WGMMA_OPS32 ZAYA_WGMMA_OPS8(0), ZAYA_WGMMA_OPS8(8), ZAYA_WGMMA_OPS8(16), ZAYA_WGMMA_OPS8(24)
#define ZAYA_WGMMA_OPS64 ZAYA_WGMMA_OPS32, ZAYA_WGMMA_OPS8(32), ZAYA_WGMMA_OPS8(40), ZAYA_WGMMA_OPS8(48), ZAYA_WGMMA_OPS8(56)

// "ss": A (64 x 16, K-major) and B (16 x N: K-major, or MN-major when kTransB) in shared memory.
// d = A B + (accumulate ? d : 0).
#define ZAYA_WGMMA_SS(NN, DT, REGS, OPS, PA, PB, PP, PT)                                                      \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " PP ", 0;\nwgmma.mma_async.sync.aligned.m64n" #NN "k16.f32." DT \
               "." DT " " REGS ", " PA ", " PB ", p, 1, 1, 0, " PT ";\n}\n"                                       \
               : OPS                                                                                            \
               : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransB ? 1 : 0))
#define ZAYA_WGMMA_RS(NN, DT, REGS, OPS, PA, PB, PP, PT)                                                      \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " PP ", 0;\nwgmma.mma_async.sync.aligned.m64n" #NN "k16.f32." DT \
               "." DT " " REGS ", " PA ", " PB ", p, 1, 1, " PT ";\n}\n"                                          \
               : OPS                                                                                            \
               : "r"(a.x[0]), "r"(a.x[1]), "r"(a.x[2]), "r"(a.x[3]), "l"(b), "r"(static_cast<int>(accumulate)), \
                 "n"(kTransB ? 1 : 0))

template <class D, bool kTransB, int N>
ZAYA_DEV void mma_ss(Acc<N>& d, uint64_t a, uint64_t b, bool accumulate) {
#if defined(ZAYA_EMU)
  const emu_detail::Operand oa = emu_detail::decode(a);
  emu_detail::accumulate<D>(d, [&](int r, int k) { return D::to_float(emu_detail::load(oa, r, k, false)); }, b,
                            kTransB, accumulate);
  emu_detail::log_op(a, b, N, kTransB);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool bf = std::is_same_v<D, dtype::BF16>;
  if constexpr (N == 64 && bf) ZAYA_WGMMA_SS(64, "bf16", ZAYA_WGMMA_REGS32, ZAYA_WGMMA_OPS32, "%32", "%33", "%34", "%35");
  if constexpr (N == 64 && !bf) ZAYA_WGMMA_SS(64, "f16", ZAYA_WGMMA_REGS32, ZAYA_WGMMA_OPS32, "%32", "%33", "%34", "%35");
  if constexpr (N == 128 && bf) ZAYA_WGMMA_SS(128, "bf16", ZAYA_WGMMA_REGS64, ZAYA_WGMMA_OPS64, "%64", "%65", "%66", "%67");
  if constexpr (N == 128 && !bf) ZAYA_WGMMA_SS(128, "f16", ZAYA_WGMMA_REGS64, ZAYA_WGMMA_OPS64, "%64", "%65", "%66", "%67");
#elif defined(__CUDA_ARCH__)
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();  // built without sm_90a; the launchers never select these kernels then
#endif
}

// "rs": A (64 x 16) from registers, B as for mma_ss.
template <class D, bool kTransB, int N>
ZAYA_DEV void mma_rs(Acc<N>& d, const FragA& a, uint64_t b, bool accumulate) {
#if defined(ZAYA_EMU)
  // The warp's 16 rows of A come from its lanes' registers (mma.sync's A layout): gather them.
  const int lane = emu::lane_id();
  std::memcpy(emu::lane_slot(lane), &a, sizeof a);
  emu::syncwarp();
  float A[16][16];
  for (int l = 0; l < 32; ++l) {
    uint16_t v[8];
    std::memcpy(v, emu::lane_slot(l), sizeof v);
    for (int e = 0; e < 8; ++e) {
      const mma::emu_detail::Coord pos = mma::emu_detail::a_elem(l, e);
      A[pos.r][pos.c] = D::to_float(v[e]);
    }
  }
  emu::syncwarp();
  emu_detail::accumulate<D>(d, [&](int r, int k) { return A[r & 15][k]; }, b, kTransB, accumulate);
  emu_detail::log_op(0, b, N, kTransB);
#elif defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr bool bf = std::is_same_v<D, dtype::BF16>;
  if constexpr (N == 64 && bf)
    ZAYA_WGMMA_RS(64, "bf16", ZAYA_WGMMA_REGS32, ZAYA_WGMMA_OPS32, "{%32,%33,%34,%35}", "%36", "%37", "%38");
  if constexpr (N == 64 && !bf)
    ZAYA_WGMMA_RS(64, "f16", ZAYA_WGMMA_REGS32, ZAYA_WGMMA_OPS32, "{%32,%33,%34,%35}", "%36", "%37", "%38");
  if constexpr (N == 128 && bf)
    ZAYA_WGMMA_RS(128, "bf16", ZAYA_WGMMA_REGS64, ZAYA_WGMMA_OPS64, "{%64,%65,%66,%67}", "%68", "%69", "%70");
  if constexpr (N == 128 && !bf)
    ZAYA_WGMMA_RS(128, "f16", ZAYA_WGMMA_REGS64, ZAYA_WGMMA_OPS64, "{%64,%65,%66,%67}", "%68", "%69", "%70");
#elif defined(__CUDA_ARCH__)
  (void)d, (void)a, (void)b, (void)accumulate;
  __trap();
#endif
}

#undef ZAYA_WGMMA_SS
#undef ZAYA_WGMMA_RS
#undef ZAYA_WGMMA_OPS64
#undef ZAYA_WGMMA_OPS32
#undef ZAYA_WGMMA_OPS8
#undef ZAYA_WGMMA_REGS64
#undef ZAYA_WGMMA_REGS32

// Host side: whether the launchers may select the Hopper kernels on device `dev`. They are opt-in
// (ZAYA_WGMMA=1, read once per process at the first launch, or runtime::set_hopper_opt_in) until a
// Hopper GPU run has validated them, and need a compute capability 9.x device (asked once per device:
// vendor::cc_major; the 32-lane emulator reports 9) and a build that includes sm_90a
// (TORCH_CUDA_ARCH_LIST with "9.0a", the default). No environment read or driver call per launch.
inline bool hopper_paths_enabled(int dev) {
  if (!runtime::hopper_opt_in()) return false;
  int major = 0;
  if (vendor::cc_major(&major, dev) != vendor::kSuccess || major != 9) return false;
#if defined(ZAYA_CUDA) && defined(ZAYA_CUDA_ARCHS)
  static const bool built_for_sm90a = std::strstr(ZAYA_CUDA_ARCHS, "9.0a") != nullptr;
  return built_for_sm90a;
#else
  return true;
#endif
}

}  // namespace zaya::wgmma

#endif
