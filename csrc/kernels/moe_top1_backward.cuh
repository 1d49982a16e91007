// zaya::moe_top1_backward on GPUs: the gradients of zaya::moe_top1 w.r.t. x, expert_weight, gate_up_proj
// and down_proj, one portable source for CUDA (mma.sync, ldmatrix) and CDNA (MFMA, wave64) through
// mma.cuh, on the forward's grouping and tile machinery (moe_top1.cuh: group_tokens, m_tile, k_pipeline,
// warp_step). The maths is the CPU kernel's (csrc/cpu/moe_top1_backward.cpp, the contract): per local
// expert e with grouped tokens S, w = expert_weight, go = grad_out[S],
//   [gate | up] = x[S] @ gate_up_proj[e]^T (recomputed), u = go @ down_proj[e],
//   act = SiLU(gate) * up, grad_expert_weight = rowsum(act * u),
//   d_act = w * u, d_gate = d_act * up * SiLU'(gate), d_up = d_act * SiLU(gate),
//   grad_down_proj[e] = go^T @ (w * act), grad_gate_up_proj[e] = [d_gate | d_up]^T @ x[S],
//   grad_x[S] = [d_gate | d_up] @ gate_up_proj[e].
// gate, up and u stay fp32 (accumulators); w * act and [d_gate | d_up] are rounded once to the operand
// dtype, as the matrix units take them (the reference's autograd rounds them, and more, too).
//
// Five launches, no host synchronisation:
//   1. group_tokens (the forward's counting sort: token order and M-tile schedule of the local experts).
//   2. gate_up: a block owns 64 grouped rows x 64 columns of I; k-loop over H for gate and up (A = x
//      rows, B = gate/up rows of gate_up_proj[e]), then a second k-loop over H for u (A = grad_out rows,
//      B = down_proj[e] read k-major); the epilogue writes w * act [rows, I] and [d_gate | d_up]
//      [rows, 2I] (scratch, grouped order) and the block's partial of rowsum(act * u) over its 64
//      columns (per row: lanes, then the two column warps, in a fixed order) to dw_partial.
//   3. dx: a block owns 64 grouped rows x 64 columns of H: A = [d_gate | d_up] rows, B = gate_up_proj[e]
//      k-major (K = 2I); writes grad_x rows. Its blocks of column 0 also sum the rows' dw_partial over
//      the gate_up blocks in order: grad_expert_weight.
//   4. dW_down, 5. dW_gate_up: one block owns one 64 x 64 tile of one local expert's weight gradient and
//      loops over all of that expert's tokens in grouped order (K = tokens; both operands k-major:
//      grad_out rows x w * act for down, [d_gate | d_up] x x rows for gate_up), fp32 accumulators
//      rounded once. No atomics anywhere: every result is the same on every run, whatever the schedule.
// Skip-class tokens and tokens of experts outside [expert_start, expert_end) are never touched (the
// caller zero-fills the outputs), nor are the weight gradients of experts without tokens.
//
// Roofline (ZAYA1: H = 2048, I = 2048, E = 16, bf16). FLOPs per computed token: gate/up recompute
// 2*H*2I, u 2*H*I, grad_x 2*2I*H, dW_down 2*H*I, dW_gate_up 2*2I*H: 16*H*I = 67 MFLOP (2x the forward's
// 6*H*I plus the 4*H*I recompute). Prefill T = 8192: 550 GFLOP, ~0.56 ms at 989 dense bf16 TFLOP/s
// (H100). Bytes (DRAM, tiles re-read from L2): per token x, grad_out, grad_x (6H), w * act written and
// read once (4I), [d_gate | d_up] written and read twice (12I): ~45 KB, 369 MB at T = 8192; weights
// read (403 MB) and their gradients written (403 MB): ~1.2 GB, ~0.35 ms at 3.35 TB/s, so prefill is
// compute-bound (~460 FLOP/B); small T is bound by the weight traffic (2 x 25 MB per hit expert).
// The dW kernels give one expert's tiles to one block each, so their parallelism is the tile count per
// expert (2048 + 1024 at ZAYA1) times the local experts with tokens. Written without a GPU: not tuned
// on hardware; two-stage cp.async pipeline on CUDA, synchronous copies on CDNA (moe_top1.cuh).
//
// Resources. CUDA (ptxas -v, sm_90a, bf16 and fp16 alike): no spills; gate_up 174 registers and
// 31,488 B shared (two stages of three operand tiles), dx 108, dW_down 108, dW_gate_up 104, each
// 21,248 B; the version-1 (scalar fragment load) variants 182, 116, 128, 128. HIP (check_hip.sh,
// gfx940 / gfx90a): see hip/moe_top1_backward.hip's header.
#pragma once

#include <cmath>
#include <type_traits>

#include "moe_top1.cuh"
#include "moe_top1_backward_launch.h"

namespace zaya::kernels::moe {

static_assert(kBN == kMoeBwdPartialCols, "dw_partial holds one sum per gate_up block column");

enum class BwdPhase { kGateUp, kDx, kDwDown, kDwGateUp };

// Stages one operand tile with 16-byte copies: m/n-major (kKn false: kBM rows x kBK, k contiguous) or
// k-major (kKn: kBK k-rows x kBN, m/n contiguous). row(r) is the address of row r's element 0, or
// nullptr for a row of zeros; the row's elements c0 .. c0 + width are staged, zeros at c >= lim.
// `base`: any valid address (the source of the zero-filling copies).
template <bool kKn, class RowPtr>
ZAYA_DEV void stage_tile(uint16_t* dst, const uint16_t* base, RowPtr&& row, int64_t c0, int64_t lim, int tid) {
  constexpr int kRowChunks = (kKn ? kBN : kBK) / 8, kRows = kKn ? kBK : kBM, pitch = kKn ? kPitchKn : kPitch;
  for (int c = tid; c < kRows * kRowChunks; c += kThreads) {
    const int r = c / kRowChunks, cc = (c % kRowChunks) * 8;
    const int64_t col = c0 + cc;
    const uint16_t* p = row(r);
    const bool ok = p != nullptr && col < lim;
    vendor::copy_async16(dst + r * pitch + cc, ok ? p + col : base, ok);
  }
}

ZAYA_DEV void zero_acc(mma::FragC (&acc)[2][2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) mma::zero(acc[i][jj]);
}

// Calls f(r, c, i, jj, q) for accumulator q of this lane's fragment (i, jj): tile row r, tile column c.
template <class F>
ZAYA_DEV void for_acc(int wm, int wn, int lane, F&& f) {
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int jj = 0; jj < 2; ++jj)
#pragma unroll
      for (int q = 0; q < mma::kAccum; ++q)
        f(wm + 16 * i + mma::c_row(lane, q), wn + 16 * jj + mma::c_col(lane, q), i, jj, q);
}

template <class D, BwdPhase kPhase, bool kLdsm>
__global__ void __launch_bounds__(kThreads, 1) expert_bwd_gemm(MoeTop1BackwardArgs b) {
  constexpr bool kRowTiles = kPhase == BwdPhase::kGateUp || kPhase == BwdPhase::kDx;
  constexpr int kTiles = kPhase == BwdPhase::kGateUp ? 3 : 2;  // operand tiles per stage
  struct alignas(16) Smem {
    uint16_t t[kStages][kTiles][kTileElems];
    int32_t tok[kBM];
    float rsum[2][kBM];  // gate_up: row sums of act * u per column warp
  };
  __shared__ Smem sm;

  const MoeTop1Args& a = b.fwd;
  const Workspace ws = workspace(a);
  const int tid = static_cast<int>(threadIdx.x);
  const int warp = tid / kWarpSize, lane = vendor::lane_id();
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;
  const int64_t H = a.H, I = a.I, T = a.T;
  using S = typename D::storage;
  const uint16_t* x = static_cast<const uint16_t*>(a.x);
  const uint16_t* go = static_cast<const uint16_t*>(b.grad_out);
  const uint16_t* gate_up = static_cast<const uint16_t*>(a.gate_up);
  uint16_t* act_w = static_cast<uint16_t*>(b.act_w);
  uint16_t* dgu = static_cast<uint16_t*>(b.d_gate_up);
  const auto* ew = static_cast<const S*>(a.expert_weight);
  auto kstage = [](int64_t kt) { return static_cast<int>(kt % kStages); };

  if constexpr (kRowTiles) {
    const MTile tile = m_tile<kBM>(a, ws, static_cast<int>(blockIdx.x));
    if (tile.expert < 0) return;  // the whole block: past the schedule's end
    const int e = tile.expert, row0 = tile.row0, rows = tile.rows;
    const int64_t n0 = static_cast<int64_t>(blockIdx.y) * kBN;
    for (int r = tid; r < kBM; r += kThreads) sm.tok[r] = r < rows ? ws.order[row0 + r] : -1;
    __syncthreads();
    const uint16_t* gue = gate_up + static_cast<int64_t>(e) * 2 * I * H;  // gate_up_proj[e]: [2I, H]
    auto token_rows = [&](const uint16_t* base, int64_t stride) {
      return [base, stride](int r) -> const uint16_t* {  // sm: static storage, not captured
        const int t = sm.tok[r];
        return t < 0 ? nullptr : base + static_cast<int64_t>(t) * stride;
      };
    };

    if constexpr (kPhase == BwdPhase::kGateUp) {
      // gate, up = x rows @ gate / up rows^T (K = H), then u = grad_out rows @ down_proj[e] (K = H).
      mma::FragC gu[2][2][2], uu[1][2][2];
      zero_acc(gu[0]);
      zero_acc(gu[1]);
      zero_acc(uu[0]);
      const uint16_t* wu = gue + I * H;
      auto weight_rows = [&](const uint16_t* w) {
        return [w, n0, I, H](int r) -> const uint16_t* { return n0 + r < I ? w + (n0 + r) * H : nullptr; };
      };
      const int64_t ksteps = (H + kBK - 1) / kBK;
      k_pipeline<kStages>(
          ksteps,
          [&](int64_t kt) {
            uint16_t(&t)[kTiles][kTileElems] = sm.t[kstage(kt)];
            stage_tile<false>(t[0], x, token_rows(x, a.x_row_stride), kt * kBK, H, tid);
            stage_tile<false>(t[1], gue, weight_rows(gue), kt * kBK, H, tid);
            stage_tile<false>(t[2], wu, weight_rows(wu), kt * kBK, H, tid);
          },
          [&](int st) { warp_step<D, false, false, kLdsm, 2>(gu, sm.t[st][0], sm.t[st][1], sm.t[st][2], wm, wn, lane); });
      __syncthreads();  // every warp is done with the last stage before the second loop refills it
      const uint16_t* dne = static_cast<const uint16_t*>(a.down) + static_cast<int64_t>(e) * H * I;  // [H, I]
      k_pipeline<kStages>(
          ksteps,
          [&](int64_t kt) {
            uint16_t(&t)[kTiles][kTileElems] = sm.t[kstage(kt)];
            stage_tile<false>(t[0], go, token_rows(go, b.grad_out_row_stride), kt * kBK, H, tid);
            stage_tile<true>(t[1], dne, [&](int kr) -> const uint16_t* {
              const int64_t h = kt * kBK + kr;
              return h < H ? dne + h * I : nullptr;
            }, n0, I, tid);
          },
          [&](int st) { warp_step<D, false, true, kLdsm, 1>(uu, sm.t[st][0], sm.t[st][1], sm.t[st][1], wm, wn, lane); });

      // Epilogue: w * act and [d_gate | d_up] per element, row sums of act * u.
      float rs[2][mma::kRowsPerLane];
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int s = 0; s < mma::kRowsPerLane; ++s) rs[i][s] = 0.f;
      for_acc(wm, wn, lane, [&](int r, int c, int i, int jj, int q) {
        const int64_t n = n0 + c;
        if (r >= rows || n >= I) return;
        const float gate = gu[0][i][jj].x[q], up = gu[1][i][jj].x[q], u = uu[0][i][jj].x[q];
        const float w = D::to_float(ew[sm.tok[r]]);
        const float sig = vendor::fdiv(1.f, 1.f + expf(-gate));
        const float sl = gate * sig, act = sl * up;
        rs[i][mma::c_slot(q)] += act * u;
        const float d_act = w * u;
        const int64_t p = row0 + r;
        act_w[p * I + n] = D::from_float(w * act);
        dgu[p * 2 * I + n] = D::from_float(d_act * up * sig * (1.f + gate * (1.f - sig)));
        dgu[p * 2 * I + I + n] = D::from_float(d_act * sl);
      });
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int s = 0; s < mma::kRowsPerLane; ++s) {
          float v = rs[i][s];
          for (int off = 1; off < mma::kRowLanes; off <<= 1) v += vendor::shfl_xor(v, off);  // a fixed butterfly
          if (lane % mma::kRowLanes == 0) sm.rsum[wn / 32][wm + 16 * i + mma::slot_row(lane, s)] = v;
        }
      __syncthreads();
      for (int r = tid; r < rows; r += kThreads)
        b.dw_partial[static_cast<int64_t>(blockIdx.y) * T + row0 + r] = sm.rsum[0][r] + sm.rsum[1][r];
    } else {
      // grad_x rows = [d_gate | d_up] rows @ gate_up_proj[e] (K = 2I, B k-major).
      mma::FragC acc[1][2][2];
      zero_acc(acc[0]);
      const int64_t K = 2 * I;
      k_pipeline<kStages>(
          (K + kBK - 1) / kBK,
          [&](int64_t kt) {
            uint16_t(&t)[kTiles][kTileElems] = sm.t[kstage(kt)];
            stage_tile<false>(t[0], dgu, [&](int r) -> const uint16_t* {
              return r < rows ? dgu + (row0 + r) * K : nullptr;
            }, kt * kBK, K, tid);
            stage_tile<true>(t[1], gue, [&](int kr) -> const uint16_t* {
              const int64_t j = kt * kBK + kr;
              return j < K ? gue + j * H : nullptr;
            }, n0, H, tid);
          },
          [&](int st) { warp_step<D, false, true, kLdsm, 1>(acc, sm.t[st][0], sm.t[st][1], sm.t[st][1], wm, wn, lane); });
      auto* gx = static_cast<S*>(b.grad_x);
      for_acc(wm, wn, lane, [&](int r, int c, int i, int jj, int q) {
        const int64_t n = n0 + c;
        if (r < rows && n < H) gx[static_cast<int64_t>(sm.tok[r]) * H + n] = D::from_float(acc[0][i][jj].x[q]);
      });
      if (blockIdx.y == 0) {  // grad_expert_weight: the gate_up blocks' partials, in block order
        const int64_t parts = (I + kBN - 1) / kBN;
        auto* gw = static_cast<S*>(b.grad_expert_weight);
        for (int r = tid; r < rows; r += kThreads) {
          float s = 0.f;
          for (int64_t j = 0; j < parts; ++j) s += b.dw_partial[j * T + row0 + r];
          gw[sm.tok[r]] = D::from_float(s);
        }
      }
    }
  } else {
    // Weight gradients: one 64 x 64 tile of local expert e's gradient per block, K = e's tokens in
    // grouped order. dW_down [H, I] = grad_out rows^T @ (w * act); dW_gate_up [2I, H] = [d_gate | d_up]^T @ x rows.
    const int e = static_cast<int>(a.expert_start) + static_cast<int>(blockIdx.y);
    const int off = ws.offsets[e], n_e = ws.offsets[e + 1] - off;
    if (n_e == 0) return;  // the whole block: its gradient stays zero
    constexpr bool kDown = kPhase == BwdPhase::kDwDown;
    const int64_t M = kDown ? H : 2 * I, N = kDown ? I : H;
    const int64_t ntn = (N + kBN - 1) / kBN;
    const int64_t m0 = static_cast<int64_t>(blockIdx.x) / ntn * kBM, n0 = static_cast<int64_t>(blockIdx.x) % ntn * kBN;
    mma::FragC acc[1][2][2];
    zero_acc(acc[0]);
    k_pipeline<kStages>(
        (n_e + kBK - 1) / kBK,
        [&](int64_t kt) {
          uint16_t(&t)[kTiles][kTileElems] = sm.t[kstage(kt)];
          const int64_t g0 = kt * kBK;  // the k-step's first token of e, in grouped order
          auto token = [&](const uint16_t* base, int64_t stride) {
            return [&ws, base, stride, g0, n_e, off](int kr) -> const uint16_t* {
              return g0 + kr < n_e ? base + static_cast<int64_t>(ws.order[off + g0 + kr]) * stride : nullptr;
            };
          };
          auto grouped = [&](const uint16_t* base, int64_t width) {
            return [base, width, g0, n_e, off](int kr) -> const uint16_t* {
              return g0 + kr < n_e ? base + (off + g0 + kr) * width : nullptr;
            };
          };
          if constexpr (kDown) {
            stage_tile<true>(t[0], go, token(go, b.grad_out_row_stride), m0, M, tid);
            stage_tile<true>(t[1], act_w, grouped(act_w, I), n0, N, tid);
          } else {
            stage_tile<true>(t[0], dgu, grouped(dgu, 2 * I), m0, M, tid);
            stage_tile<true>(t[1], x, token(x, a.x_row_stride), n0, N, tid);
          }
        },
        [&](int st) { warp_step<D, true, true, kLdsm, 1>(acc, sm.t[st][0], sm.t[st][1], sm.t[st][1], wm, wn, lane); });
    auto* dw = static_cast<S*>(kDown ? b.grad_down : b.grad_gate_up) + static_cast<int64_t>(e) * M * N;
    for_acc(wm, wn, lane, [&](int r, int c, int i, int jj, int q) {
      const int64_t m = m0 + r, n = n0 + c;
      if (m < M && n < N) dw[m * N + n] = D::from_float(acc[0][i][jj].x[q]);
    });
  }
}

inline const char* launch_moe_top1_backward_impl(const MoeTop1BackwardArgs& b, vendor::stream_t stream) {
  const MoeTop1Args& a = b.fwd;
  if (a.T == 0 || a.expert_start == a.expert_end) return nullptr;
  if (a.dtype != DType::BF16 && a.dtype != DType::F16) return "zaya moe_top1_backward: GPU kernels take bf16 or fp16";
  if (a.H % 8 != 0 || a.I % 8 != 0) return "zaya moe_top1_backward: H and I must be multiples of 8";
  if (a.E < 1 || a.E > kMoeMaxExperts) return "zaya moe_top1_backward: unsupported number of experts";
  if (a.T > int64_t{0x7fffffff} - kBM * (a.E + 1)) return "zaya moe_top1_backward: too many tokens for one call";
  const int64_t tiles_dd = (a.H + kBM - 1) / kBM * ((a.I + kBN - 1) / kBN);
  const int64_t tiles_dg = (2 * a.I + kBM - 1) / kBM * ((a.H + kBN - 1) / kBN);
  if (tiles_dg > int64_t{0x7fffffff}) return "zaya moe_top1_backward: weights too large for one launch";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("moe_top1_backward", &dev, &warp)) return err;

  const int64_t m_tiles = (a.T + kBM - 1) / kBM + (a.expert_end - a.expert_start);
  const unsigned local = static_cast<unsigned>(a.expert_end - a.expert_start);
  const dim3 block(static_cast<unsigned>(kWarps * warp));  // = kThreads, from the device's wave size
  const dim3 grid_gu(static_cast<unsigned>(m_tiles), static_cast<unsigned>((a.I + kBN - 1) / kBN));
  const dim3 grid_dx(static_cast<unsigned>(m_tiles), static_cast<unsigned>((a.H + kBN - 1) / kBN));
  const dim3 grid_dd(static_cast<unsigned>(tiles_dd), local);
  const dim3 grid_dg(static_cast<unsigned>(tiles_dg), local);
  if (const char* err = vendor::launch(&group_tokens<kBM>, dim3(1), dim3(kGroupThreads), 0, stream, a)) return err;
  auto run = [&](auto tag) -> const char* {
    using D = decltype(tag);
    auto gemms = [&](auto ldsm) -> const char* {
      constexpr bool kLdsm = decltype(ldsm)::value;
      if (const char* err = vendor::launch(&expert_bwd_gemm<D, BwdPhase::kGateUp, kLdsm>, grid_gu, block, 0, stream, b))
        return err;
      if (const char* err = vendor::launch(&expert_bwd_gemm<D, BwdPhase::kDx, kLdsm>, grid_dx, block, 0, stream, b))
        return err;
      if (const char* err = vendor::launch(&expert_bwd_gemm<D, BwdPhase::kDwDown, kLdsm>, grid_dd, block, 0, stream, b))
        return err;
      return vendor::launch(&expert_bwd_gemm<D, BwdPhase::kDwGateUp, kLdsm>, grid_dg, block, 0, stream, b);
    };
#if ZAYA_WARP_SIZE == 32
    if (!runtime::kernels_v1()) return gemms(std::true_type{});  // ldmatrix fragments, as the forward's
#endif
    return gemms(std::false_type{});  // scalar fragment loads: CDNA, and ZAYA_KERNELS=v1 on 32-lane warps
  };
  return a.dtype == DType::BF16 ? run(dtype::BF16{}) : run(dtype::F16{});
}

}  // namespace zaya::kernels::moe
