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
// Pipeline: kStages90 shared-memory stages of A and B (16 KiB each). A (gathered token rows, which
// sm_90's tiled TMA cannot gather) is filled with 16-byte cp.async by all threads straight into the
// no-swizzle core-matrix layout (wgmma::kmajor_offset; a warp's 8-thread phases write one 128-byte core
// matrix each, so the copies are free of bank conflicts). B (weight rows) is filled by TMA (tma.cuh):
// one thread issues 16 boxes of 64 rows x 16 bytes, which land as core matrices (box (half, k-chunk)
// at element kc * 1024 + half * 512), completing on the stage's mbarrier. At k-step kt the block waits
// for stage kt (cp.async group, then the mbarrier phase), issues its wgmmas, keeps one wgmma group in
// flight (wait<1>), and refills the stage of k-step kt - 2, whose group every warpgroup has retired by
// the barrier at the top of the step: copies run kStages90 - 2 k-steps ahead, and a warpgroup's
// tensor-core work overlaps its next wait. Not yet: warp-specialised producers, TMA multicast of B
// over a cluster, 128-byte swizzle (all for a GPU session to weigh with timings).
//
// Roofline at ZAYA1 sizes, T = 8192: 206 GFLOP; per block 2 * 128 * 128 * K FLOPs against (128 + 128)
// * K * 2 bytes of tiles: 64 FLOP/B from shared memory, L2-resident weights.
// Resources (nvcc 13, sm_90a, -Xptxas -v): 107-111 registers (bf16/fp16, both phases), no spills, no ptxas wgmma
// serialisation warnings; 128.7 KiB of dynamic shared memory: one block per SM.
// The PTX has 4 wgmma.mma_async (m64n128k16) per kernel, all in the k-loop.
#pragma once

#include "tma.cuh"
#include "wgmma.cuh"  // defines ZAYA_HAVE_WGMMA_SOURCE where wgmma exists (CUDA, the 32-lane emulator)

#if defined(ZAYA_HAVE_WGMMA_SOURCE)

namespace zaya::kernels::moe {

inline constexpr int kBM90 = 128, kBN90 = 128, kBK90 = 64, kStages90 = 4;
inline constexpr int kThreads90 = 2 * wgmma::kThreads;
inline constexpr int kTileElems90 = kBM90 * kBK90;  // per operand and stage (kBN90 == kBM90)
inline constexpr int kBoxRows90 = 64, kBoxCols90 = 8;  // TMA box of B: 64 weight rows x 16 bytes
inline constexpr uint32_t kStageBytesB90 = kBN90 * kBK90 * 2;
// Tiles (128-byte aligned for TMA), then the token list and one mbarrier per stage.
inline constexpr size_t kTilesBytes90 = size_t{2} * kStages90 * kTileElems90 * sizeof(uint16_t);
inline constexpr size_t kSmem90 = 128 + kTilesBytes90 + kBM90 * sizeof(int32_t) + kStages90 * sizeof(uint64_t);

template <class D, bool kGateUp>
__global__ void __launch_bounds__(kThreads90, 1) expert_gemm_sm90(MoeTop1Args a, const __grid_constant__ tma::Map map_b) {
  unsigned char* const raw = vendor::dynamic_smem<unsigned char>();
  uint16_t* const smem = reinterpret_cast<uint16_t*>(raw + ((128 - vendor::smem_u32(raw) % 128) % 128));
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
      // Consecutive threads fill one core matrix (8 rows x 16 bytes) at a time.
      const int r = (c >> 6) * 8 + (c & 7), kc = ((c >> 3) & 7) * 8;
      const int64_t k = kt * kBK90 + kc;
      const int off = wgmma::kmajor_offset(r, kc, kBK90);
      const int t = tok[r];
      const uint16_t* arow = kGateUp ? x + static_cast<int64_t>(t < 0 ? 0 : t) * a.x_row_stride
                                     : act + static_cast<int64_t>(row0 + (t < 0 ? 0 : r)) * I;
      vendor::copy_async16(sa + off, arow + (k < K ? k : 0), t >= 0 && k < K);
    }
    if (tid == 0) {  // B: 16 TMA boxes, 64 rows x 8 columns each, into core-matrix order (see kLboB)
      tma::bar_arrive_expect_tx(&full[st], kStageBytesB90);
      for (int h = 0; h < 2; ++h)
        for (int kc = 0; kc < kBK90 / kBoxCols90; ++kc) {
          tma::load_2d(sb + kc * (kBN90 * 8) + h * (kBoxRows90 * 8), &map_b, &full[st],
                       static_cast<int>(b_base + h * b_half), static_cast<int>(kt * kBK90 + kc * 8));
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
  // Descriptors (bytes to the next core matrix along k / along rows): A as written by cp.async
  // (kmajor_offset), B as the TMA boxes land (element (r, k) at (k / 8) * 1024 + r * 8 + k % 8).
  constexpr uint32_t kLboA = 128, kSboA = (kBK90 / 8) * 128, kLboB = kBN90 * 16, kSboB = 128;
  for (int64_t kt = 0; kt < ksteps; ++kt) {
    vendor::copy_async_wait<kStages90 - 3>();  // this thread's copies of stage kt have landed
    wgmma::fence_async_proxy();                 // ... are visible to the tensor cores
    __syncthreads();  // ... and everyone's; every warpgroup has retired the wgmmas of k-step kt - 2
    if (kt + kStages90 - 2 < ksteps) issue(kt + kStages90 - 2);
    vendor::copy_async_commit();
    const int st = static_cast<int>(kt % kStages90);
    tma::bar_wait(&full[st], static_cast<uint32_t>(kt / kStages90));  // B of stage kt has landed
    const uint16_t* sa = tile_a(st) + wgmma::kmajor_offset(64 * wg, 0, kBK90);
    const uint16_t* sb = tile_b(st);
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kBK90 / 16; ++kk) {
      const uint64_t da = wgmma::make_desc(sa + kk * 128, kLboA, kSboA);  // 2 core matrices per k16
      const uint64_t db = wgmma::make_desc(sb + kk * 2 * (kBN90 * 8), kLboB, kSboB);
      wgmma::mma_ss<D, false>(acc, da, db, true);
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
  // Encoded once per weight tensor (address and shape), not per launch: tma::cached_map_2d.
  if (const char* err = tma::cached_map_2d(&map_gu, a.gate_up, a.E * 2 * a.I, a.H, a.H, kBoxRows90, kBoxCols90))
    return err;
  if (const char* err = tma::cached_map_2d(&map_dn, a.down, a.E * a.H, a.I, a.I, kBoxRows90, kBoxCols90)) return err;
  auto run = [&](auto tag) -> const char* {
    using D = decltype(tag);
    if (const char* err = vendor::launch(&expert_gemm_sm90<D, true>, grid_gu, block, kSmem90, stream, a, map_gu))
      return err;
    return vendor::launch(&expert_gemm_sm90<D, false>, grid_dn, block, kSmem90, stream, a, map_dn);
  };
  return a.dtype == DType::BF16 ? run(dtype::BF16{}) : run(dtype::F16{});
}

}  // namespace zaya::kernels::moe

#endif
