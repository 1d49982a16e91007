// Hopper path of the moe_top1 matrix kernels (phases 2 and 3 of moe_top1.cuh, prefill T > kGemvTokens):
// the same maths, rounding points, token grouping and scatter, with the products on wgmma (sm_90a,
// wgmma.cuh) instead of mma.sync. Opt-in (ZAYA_WGMMA=1, wgmma::hopper_paths_enabled) until a Hopper
// GPU run has validated it; tested under the SIMT emulator's wgmma model (tests/test_moe_top1_gpu.py,
// target emu32-wgmma).
//
// Tile: 128 grouped tokens x 128 columns, k-steps of 64, two consumer warpgroups (256 threads), each
// multiplying its 64 rows by the shared B tile with m64n128k16 (4 per k-step). gate_up stacks 64 gate
// rows over the 64 matching up rows in B, so one accumulator holds gate in columns 0..63 and up in
// 64..127 (thread-local pairs: element i and i + 32 are the same (row, column) of gate and up); the
// block writes 64 columns of act. down: 128 output columns, scaled by the routing weight and scattered.
//
// Pipeline: kStages90 shared-memory stages of A and B (16 KiB each), both in the K-major 128-byte-swizzle
// layout (wgmma.cuh: 128-byte rows of 64 k, 1024-byte 8-row atoms, 16-byte chunk index XOR row % 8).
// A (gathered token rows, which sm_90's tiled TMA cannot gather) is filled with 16-byte cp.async by all
// threads at wgmma::sw128_offset: eight consecutive threads copy one token row's 128 bytes (coalesced
// global reads; the swizzle puts their eight chunks in eight distinct bank groups). B (weight rows) is
// filled by TMA (tma.cuh) with CU_TENSOR_MAP_SWIZZLE_128B: one thread issues 2 boxes of 64 rows x 64
// columns (8 KiB each) per stage, completing on the stage's mbarrier. Descriptors: layout type 128B,
// SBO 1024 bytes, LBO 16 (unused), the k-step's 32 bytes added to the start address (make_desc_sw128).
// At k-step kt the block waits for stage kt (cp.async group, then the mbarrier phase), issues its
// wgmmas, keeps one wgmma group in flight (wait<1>), and refills the stage of k-step kt - 2, whose
// group every warpgroup has retired by the barrier at the top of the step: copies run kStages90 - 2
// k-steps ahead, and a warpgroup's tensor-core work overlaps its next wait. runtime::kernels_v1
// (ZAYA_KERNELS=v1) selects the version-1 kernel: no-swizzle core-matrix tiles, B in 16 boxes of 64 rows
// x 16 bytes per stage, so that a GPU run times both. Not yet: warp-specialised producers, TMA multicast
// of B over a cluster (for a GPU session to weigh with timings).
//
// Roofline at ZAYA1 sizes, T = 8192: 206 GFLOP; per block 2 * 128 * 128 * K FLOPs against (128 + 128)
// * K * 2 bytes of tiles: 64 FLOP/B from shared memory, L2-resident weights.
// Resources (nvcc 13, sm_90a, cuobjdump -res-usage): 105-109 registers (bf16/fp16, both phases; the
// version-1 kernel 107-111), no spills, no ptxas wgmma serialisation warnings; 129.5 KiB of dynamic
// shared memory (version 1: 128.7): one block per SM. The SASS has 4 HGMMA.64x128x16 per kernel, all in
// the k-loop, and 6 UTMALDG.2D sites (version 1: 48).
#pragma once

#include "tma.cuh"
#include "wgmma.cuh"  // defines ZAYA_HAVE_WGMMA_SOURCE where wgmma exists (CUDA, the 32-lane emulator)

#if defined(ZAYA_HAVE_WGMMA_SOURCE)

namespace zaya::kernels::moe {

inline constexpr int kBM90 = 128, kBN90 = 128, kBK90 = 64, kStages90 = 4;
inline constexpr int kThreads90 = 2 * wgmma::kThreads;
inline constexpr int kTileElems90 = kBM90 * kBK90;  // per operand and stage (kBN90 == kBM90)
// TMA box of B: 64 weight rows x 64 columns (128 bytes), 128-byte swizzle (kSw128); the version-1
// kernel's: 64 rows x 8 columns (16 bytes), no swizzle.
inline constexpr int kBoxRows90 = 64;
ZAYA_HD constexpr int box_cols90(bool sw128) { return sw128 ? kBK90 : 8; }
inline constexpr uint32_t kStageBytesB90 = kBN90 * kBK90 * 2;
// Tiles (aligned for TMA: 128 bytes, 1024 with the swizzle, whose pattern follows the address), then
// the token list and one mbarrier per stage.
inline constexpr size_t kTilesBytes90 = size_t{2} * kStages90 * kTileElems90 * sizeof(uint16_t);
ZAYA_HD constexpr size_t smem_align90(bool sw128) { return sw128 ? 1024 : 128; }
ZAYA_HD constexpr size_t smem90(bool sw128) {
  return smem_align90(sw128) + kTilesBytes90 + kBM90 * sizeof(int32_t) + kStages90 * sizeof(uint64_t);
}

// kSw128: A and B tiles in the K-major 128-byte-swizzle layout (A by cp.async at wgmma::sw128_offset,
// B by two 64 x 64 TMA boxes per stage); otherwise (the version-1 kernel, runtime::kernels_v1) the
// no-swizzle core-matrix layout (B by 16 boxes of 64 x 8).
template <class D, bool kGateUp, bool kSw128>
__global__ void __launch_bounds__(kThreads90, 1) expert_gemm_sm90(MoeTop1Args a, const __grid_constant__ tma::Map map_b) {
  constexpr uint32_t kAlign = static_cast<uint32_t>(smem_align90(kSw128));
  unsigned char* const raw = vendor::dynamic_smem<unsigned char>();
  uint16_t* const smem = reinterpret_cast<uint16_t*>(raw + ((kAlign - vendor::smem_u32(raw) % kAlign) % kAlign));
  int32_t* const tok = reinterpret_cast<int32_t*>(reinterpret_cast<unsigned char*>(smem) + kTilesBytes90);
  uint64_t* const full = reinterpret_cast<uint64_t*>(tok + kBM90);  // B tile of stage s has landed
  auto tile_a = [&](int st) { return smem + (2 * st) * kTileElems90; };
  auto tile_b = [&](int st) { return smem + (2 * st + 1) * kTileElems90; };

  const Workspace ws = workspace(a);
  const MTile tile = m_tile<kBM90>(a, ws, static_cast<int>(blockIdx.x));
  if (tile.expert < 0) return;  // the whole block: past the schedule's end
  const int e = tile.expert, row0 = tile.row0, rows = tile.rows;
  const int64_t H = a.H, I = a.I;
  const int64_t N = kGateUp ? I : H, K = kGateUp ? H : I;
  // Output columns of this block: gate_up 64 of act (B = 64 gate rows + 64 up rows), down 128 of out.
  const int64_t n0 = static_cast<int64_t>(blockIdx.y) * (kGateUp ? kBN90 / 2 : kBN90);

  const int tid = static_cast<int>(threadIdx.x);
  for (int r = tid; r < kBM90; r += kThreads90) tok[r] = r < rows ? ws.order[row0 + r] : -1;
  if (tid == 0) {
    for (int st = 0; st < kStages90; ++st) tma::bar_init(&full[st], 1);
    tma::bar_init_fence();
  }
  __syncthreads();

  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  uint16_t* act = static_cast<uint16_t*>(a.act);
  // First row in map_b's matrix ([E * 2I, H] or [E * H, I]) of B's two 64-row halves: gate and up rows
  // n0.. of expert e, or down rows n0.. and n0 + 64... Rows past the expert's (columns >= N) are read
  // but never stored; rows past the matrix read as zero.
  const int64_t b_base = kGateUp ? static_cast<int64_t>(e) * 2 * I + n0 : static_cast<int64_t>(e) * H + n0;
  const int64_t b_half = kGateUp ? I : 64;

  constexpr int kChunks = kBM90 * kBK90 / 8;  // 16-byte chunks per operand tile
  const int64_t ksteps = (K + kBK90 - 1) / kBK90;
  auto issue = [&](int64_t kt) {
    const int st = static_cast<int>(kt % kStages90);
    uint16_t* sa = tile_a(st);
    uint16_t* sb = tile_b(st);
    for (int c = tid; c < kChunks; c += kThreads90) {
      // kSw128: eight consecutive threads fill one row's 128 bytes (a coalesced read of the token row;
      // the swizzle spreads their writes over the 8 chunk positions). Otherwise: one core matrix (8 rows
      // x 16 bytes) at a time. Both free of shared-memory bank conflicts.
      const int r = kSw128 ? c >> 3 : (c >> 6) * 8 + (c & 7), kc = kSw128 ? (c & 7) * 8 : ((c >> 3) & 7) * 8;
      const int64_t k = kt * kBK90 + kc;
      const int off = kSw128 ? wgmma::sw128_offset(r, kc) : wgmma::kmajor_offset(r, kc, kBK90);
      const int t = tok[r];
      const uint16_t* arow = kGateUp ? x + static_cast<int64_t>(t < 0 ? 0 : t) * a.x_row_stride
                                     : act + static_cast<int64_t>(row0 + (t < 0 ? 0 : r)) * I;
      vendor::copy_async16(sa + off, arow + (k < K ? k : 0), t >= 0 && k < K);
    }
    if (tid == 0) {
      tma::bar_arrive_expect_tx(&full[st], kStageBytesB90);
      if constexpr (kSw128) {  // B: 2 boxes of 64 rows x 64 columns, swizzled rows 0..63 and 64..127
        for (int h = 0; h < 2; ++h)
          tma::load_2d(sb + h * (kBoxRows90 * kBK90), &map_b, &full[st], static_cast<int>(b_base + h * b_half),
                       static_cast<int>(kt * kBK90));
      } else {  // B: 16 boxes of 64 rows x 8 columns, into core-matrix order (see kLboB)
        for (int h = 0; h < 2; ++h)
          for (int kc = 0; kc < kBK90 / 8; ++kc) {
            tma::load_2d(sb + kc * (kBN90 * 8) + h * (kBoxRows90 * 8), &map_b, &full[st],
                         static_cast<int>(b_base + h * b_half), static_cast<int>(kt * kBK90 + kc * 8));
          }
      }
    }
  };

  const int wg = tid / wgmma::kThreads, wt = tid % wgmma::kThreads;
  wgmma::Acc<kBN90> acc;
#pragma unroll
  for (int i = 0; i < kBN90 / 2; ++i) acc.x[i] = 0.f;

#pragma unroll
  for (int s = 0; s < kStages90 - 2; ++s) {
    if (s < ksteps) issue(s);
    vendor::copy_async_commit();  // one group per stage, empty or not, so the wait count stays fixed
  }
  // Descriptors. kSw128: both operands [128][64] swizzled, 1024 bytes per 8-row atom (SBO), k-step kk
  // 32 kk bytes into the rows. Otherwise (bytes to the next core matrix along k / along rows): A as
  // written by cp.async (kmajor_offset), B as the TMA boxes land (element (r, k) at (k / 8) * 1024 +
  // r * 8 + k % 8).
  constexpr uint32_t kLboA = 128, kSboA = (kBK90 / 8) * 128, kLboB = kBN90 * 16, kSboB = 128, kSboSw = 8 * 128;
  for (int64_t kt = 0; kt < ksteps; ++kt) {
    vendor::copy_async_wait<kStages90 - 3>();  // this thread's copies of stage kt have landed
    wgmma::fence_async_proxy();                 // ... are visible to the tensor cores
    __syncthreads();  // ... and everyone's; every warpgroup has retired the wgmmas of k-step kt - 2
    if (kt + kStages90 - 2 < ksteps) issue(kt + kStages90 - 2);
    vendor::copy_async_commit();
    const int st = static_cast<int>(kt % kStages90);
    tma::bar_wait(&full[st], static_cast<uint32_t>(kt / kStages90));  // B of stage kt has landed
    const uint16_t* sa = tile_a(st) + (kSw128 ? 64 * wg * kBK90 : wgmma::kmajor_offset(64 * wg, 0, kBK90));
    const uint16_t* sb = tile_b(st);
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kBK90 / 16; ++kk) {
      if constexpr (kSw128) {
        wgmma::mma_ss<D, false>(acc, wgmma::make_desc_sw128(sa + kk * 16, kSboSw),
                                wgmma::make_desc_sw128(sb + kk * 16, kSboSw), true);
      } else {
        const uint64_t da = wgmma::make_desc(sa + kk * 128, kLboA, kSboA);  // 2 core matrices per k16
        const uint64_t db = wgmma::make_desc(sb + kk * 2 * (kBN90 * 8), kLboB, kSboB);
        wgmma::mma_ss<D, false>(acc, da, db, true);
      }
    }
    wgmma::commit();
    wgmma::wait<1>();
  }
  wgmma::wait<0>();
  wgmma::fence_acc(acc);

  // Epilogue: the reference's rounding points, in D (as expert_gemm's). Accumulators i and i + 1 are
  // columns n and n + 1 of one row (n even; N, I and H are multiples of 8): one 4-byte store per pair.
  const auto* ew = static_cast<const typename D::storage*>(a.expert_weight);
  auto* out = static_cast<typename D::storage*>(a.out);
  auto store2 = [](uint16_t* p, uint16_t lo, uint16_t hi) { *reinterpret_cast<uint32_t*>(p) = mma::pack(lo, hi); };
  if constexpr (kGateUp) {
    auto h = [&](int i) {  // columns 0..63: gate at x[i], up at x[i + 32]
      const float gate = D::round(acc.x[i]), up = D::round(acc.x[i + kBN90 / 4]);
      return D::from_float(vendor::fmul(D::round(silu(gate)), up));
    };
#pragma unroll
    for (int i = 0; i < kBN90 / 4; i += 2) {
      const int r = 64 * wg + wgmma::acc_row(wt, i);
      const int64_t n = n0 + wgmma::acc_col(wt, i);
      if (r >= rows || n >= N) continue;
      store2(act + static_cast<int64_t>(row0 + r) * I + n, h(i), h(i + 1));
    }
  } else {
#pragma unroll
    for (int i = 0; i < kBN90 / 2; i += 2) {
      const int r = 64 * wg + wgmma::acc_row(wt, i);
      const int64_t n = n0 + wgmma::acc_col(wt, i);
      if (r >= rows || n >= N) continue;
      const int64_t t = tok[r];
      const float w = D::to_float(ew[t]);
      store2(out + t * H + n, D::from_float(vendor::fmul(D::round(acc.x[i]), w)),
             D::from_float(vendor::fmul(D::round(acc.x[i + 1]), w)));
    }
  }
}

inline const char* launch_sm90(const MoeTop1Args& a, vendor::stream_t stream) {
  const int64_t m_tiles = (a.T + kBM90 - 1) / kBM90 + (a.expert_end - a.expert_start);
  if (const char* err = vendor::launch(&group_tokens<kBM90>, dim3(1), dim3(kGroupThreads), 0, stream, a)) return err;
  const dim3 block(kThreads90);
  const dim3 grid_gu(static_cast<unsigned>(m_tiles), static_cast<unsigned>((a.I + kBN90 / 2 - 1) / (kBN90 / 2)));
  const dim3 grid_dn(static_cast<unsigned>(m_tiles), static_cast<unsigned>((a.H + kBN90 - 1) / kBN90));
  tma::Map map_gu, map_dn;
  // Version 2: 128-byte-swizzled 64 x 64 boxes; runtime::kernels_v1 (ZAYA_KERNELS=v1) keeps the
  // no-swizzle 64 x 8 boxes, so that a GPU run times both.
  const bool sw = !runtime::kernels_v1();
  const tma::Swizzle swz = sw ? tma::Swizzle::k128B : tma::Swizzle::kNone;
  const int box_cols = box_cols90(sw);
  // Encoded once per weight tensor (address, shape and box), not per launch: tma::cached_map_2d.
  if (const char* err = tma::cached_map_2d(&map_gu, a.gate_up, a.E * 2 * a.I, a.H, a.H, kBoxRows90, box_cols, swz))
    return err;
  if (const char* err = tma::cached_map_2d(&map_dn, a.down, a.E * a.H, a.I, a.I, kBoxRows90, box_cols, swz))
    return err;
  auto run = [&](auto tag, auto sw128) -> const char* {
    using D = decltype(tag);
    constexpr bool kSw = decltype(sw128)::value;
    constexpr size_t smem = smem90(kSw);
    if (const char* err = vendor::launch(&expert_gemm_sm90<D, true, kSw>, grid_gu, block, smem, stream, a, map_gu))
      return err;
    return vendor::launch(&expert_gemm_sm90<D, false, kSw>, grid_dn, block, smem, stream, a, map_dn);
  };
  auto run_dtype = [&](auto tag) -> const char* {
    return sw ? run(tag, std::true_type{}) : run(tag, std::false_type{});
  };
  return a.dtype == DType::BF16 ? run_dtype(dtype::BF16{}) : run_dtype(dtype::F16{});
}

}  // namespace zaya::kernels::moe

#endif
