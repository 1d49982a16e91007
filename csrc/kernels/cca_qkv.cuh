// Portable kernel bodies of zaya::cca_qkv, the CCA prologue (spec steps 3-7 and the KV-cache writes
// of step 8), compiled by nvcc (cuda/cca_qkv.cu), hip-clang (hip/cca_qkv.hip) and the SIMT emulator.
// The launcher at the bottom implements the contract of cca_qkv_launch.h. The grouped conv's device
// functions, which the backward (cca_qkv_backward.cuh) shares, are in cca_qkv_conv.cuh.
//
// Maths (python/zaya_ops/reference.py, same rounding points as csrc/cpu/cca_qkv.cpp): for token t of
// sequence b (index i in it) and channel group gi (query head gi < nq, else key head gi - nq),
//   A[t][2d] = u[t-1][d], A[t][2d+1] = u[t][d],  u[s][d] = round(w0 z[s-1] + w1 z[s] + b)   (depthwise)
//   Y[t][n]  = sum_k A[t][k] Wg[gi*D + n][k]                                                (grouped)
// with z[s] from qt/kt, or from the slot's conv_state for s < 0 of the sequence. A is exactly a
// 16-bit value and Wg is stored in the param dtype, so the grouped conv is an exact bf16/fp16 GEMM
// with fp32 accumulation: [tokens, 2D] x [2D, D] per group, which is what the mma runs. Then
// q/k = round(round(Y + bias) + residual), QK norm, key temperature and partial NeoX RoPE.
//
// Design: one pass per (token block, channel group); no intermediate leaves the block.
//   * Grid (ceil(T / BM), heads) per kind of group, 8 warps per block. Tokens of several sequences may share a
//     block (decode batches fill the mma rows): each row finds its sequence by binary search over
//     cu_seqlens, and its first two rows read their left context from conv_state.
//   * The K = 2D reduction runs in chunks of kKC (64 on CUDA, 32 on CDNA): the block builds the A chunk
//     [BM][kKC] (depthwise conv, rounded to the dtype) and stages the weight chunk [D][kKC] in shared
//     memory, then each warp multiplies one 16-row m-tile by up to four 16-column n-tiles (mma.cuh, fp32
//     accumulate; on CUDA the fragments come by ldmatrix.x4, the scalar loads with ZAYA_KERNELS=v1).
//     BM = 16 * (8 / ceil(D / 64)): 128 tokens for D <= 64, 64 for D <= 128, 32 for D <= 256, so
//     every warp has one (m-tile, 64 columns) job.
//   * The accumulators plus the bias, rounded to the dtype (the first rounding point of the maths), go
//     to shared memory as 16-bit [BM][D + 8] over the staging buffers; the epilogue adds the residual
//     (element-parallel), takes each row's norm (a warp per row, butterfly sum), applies scale,
//     temperature and RoPE and stores q, or k into the paged cache (v, a plain copy, has its own kernel).
//   * The new conv_state / value_state depend only on the raw inputs, but the first tokens of a
//     sequence read the old ones, possibly in another block: a second small kernel, launched after
//     the first on the same stream, writes each non-empty sequence's slot (one block per sequence).
//
// Roofline, ZAYA1 shapes (nq 8, nkv 2, D 128, bf16), per token: reads qt 2048 B + kt 512 B + vc/vd
// 256 B, writes q 2048 B + k 256 B + v 256 B: ~5.4 KB of DRAM traffic; re-reads (z three times for
// the two taps, qt/kt in the epilogue, g query heads per key block) hit L1/L2. Per call: the
// grouped-conv weights, 1280 x 256 x 2 B = 655 KB, from DRAM once and from L2 once per token block
// (ceil(T / 64) times), plus 2 x (C x 2 + nkv D / 2) x 2 B = 10.8 KB of state per sequence.
// FLOPs: 2 x C x 2D = 655 kFLOP per token on the tensor cores (4096 tokens: 2.7 GFLOP, ~3.4 us at
// 790 TFLOP/s against ~7 us for 22 MB at 3 TB/s): memory-bound at every T, decode by the weights.
//
// Launches, in stream order: the query-group kernel (grid ceil(T/BM) x nq), the key-group kernel
// (x nkv; two instantiations so that each keeps only its own arguments in scalar registers), the v
// cache copy (one block per token) and the state kernel (one block per sequence). On CUDA, a call
// whose tokens fit one token block (decode batches up to BM sequences) is one launch instead
// (cca_qkv_single_block_kernel: 119-123 registers, no spills): every sequence then lives in that
// block, so each group's block can rewrite its channels of the states after its own reads.
//
// Resources (compile checks only, no GPU run): nvcc sm_90a 114-123 registers (v1 and ldmatrix forms
// alike), 0 spills, 45056 B static shared memory (46080 with the 1 KB sm_90 reserve; 2 blocks per SM,
// register-bound); the ldmatrix form's K loop issues 16 mma per 10 ldmatrix.x4 and no scalar shared
// loads (v1: 8 mma per 20 32-bit loads).
// tools/check_hip.sh gfx940/gfx90a: 90-98 VGPRs, 88-99 SGPRs, no scratch or spills, 26624 B LDS,
// occupancy 4 waves/SIMD (two 8-wave workgroups per CU; LDS-bound); 16 v_mfma per arch (4
// instantiations x 4 unrolled n-tiles).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cca_qkv_conv.cuh"
#include "cca_qkv_launch.h"
#include "mma.cuh"
#include "vendor.h"

namespace zaya::kernels::cca_qkv {

inline constexpr int kStateThreads = 256;

// Shared memory of one (token block, channel group) pass.
struct GroupSmem {
  uint4 raw[kSmemBytes / 16];
  // Per row, resolved once so that the epilogue keeps no cache or table strides live.
  int64_t r_cs[kMaxBM];    // offset of the token's cos_sin row
  int64_t r_kdst[kMaxBM];  // offset of its k_cache row (key groups; -1: not cached)
  int r_i[kMaxBM];         // index in its sequence; -1: no token, -2: invalid indices
  int r_slot[kMaxBM];
  float r_scale[kMaxBM];
};
#if ZAYA_WARP_SIZE == 64
// Two 8-wave workgroups per 64 KiB CDNA compute unit (the K chunk of cca_qkv_conv.cuh is sized for it).
static_assert(sizeof(GroupSmem) <= 32 * 1024, "CDNA: LDS of one workgroup must stay at or under 32 KiB");
#endif
static_assert(sizeof(GroupSmem) <= 48 * 1024, "static shared memory must stay under 48 KB");

// One (token block, channel group) pass: IsK, key head `head` (group nq + head), else query head
// `head`. Every thread of the block runs it to the end (it holds barriers). kLdsm: ldmatrix fragments
// (cca_qkv_conv.cuh).
template <class P, bool IsK, bool kLdsm>
ZAYA_DEV void group_pass(const CcaQkvArgs& a, GroupSmem& sm, int head) {
  uint4* const smem_raw = sm.raw;
  int64_t* const r_cs = sm.r_cs;
  int64_t* const r_kdst = sm.r_kdst;
  int* const r_i = sm.r_i;
  int* const r_slot = sm.r_slot;
  float* const r_scale = sm.r_scale;

  const int tid = static_cast<int>(threadIdx.x), lane = vendor::lane_id(), warp = tid / kWarpSize;
  const int D = static_cast<int>(a.in.D);
  const int bm = block_tokens(D);
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * bm;
  const int nq = static_cast<int>(a.in.nq), g = static_cast<int>(a.in.nq / a.in.nkv);
  constexpr bool is_k = IsK;
  const int gi = head + (IsK ? nq : 0);
  const int j = is_k ? gi - nq : gi / g;  // KV head of the group
  const int64_t c0 = static_cast<int64_t>(gi) * D;
  const uint16_t* qt = static_cast<const uint16_t*>(a.in.qt);
  const uint16_t* kt = static_cast<const uint16_t*>(a.in.kt);

  // --- rows: sequence, position, slot -------------------------------------------------------------
  for (int r = tid; r < bm; r += kThreads) {
    const int64_t t = t0 + r;
    int i = -1, slot = 0;
    int64_t pos = 0, sm = -1, kdst = -1;
    if (t < a.in.T) {
      const int64_t b = sequence_of(a.in.cu_seqlens, a.in.B, t);
      i = -2;
      if (b >= 0) {
        slot = a.state_indices[b];
        pos = a.in.positions[t];
        sm = a.slot_mapping[t];
        const bool ok = slot >= 0 && slot < a.S && pos >= 0 && pos < a.in.P && sm >= -1 && sm < a.cache_slots &&
                        a.in.cu_seqlens[b] >= 0;
        if (ok) i = static_cast<int>(t - a.in.cu_seqlens[b]);
        if (ok && IsK && sm >= 0) kdst = (sm / a.block_size) * a.kc0 + (sm % a.block_size) * a.kc1 + j * a.kc2;
      }
    }
    r_i[r] = i, r_slot[r] = slot, r_cs[r] = pos * a.in.cs_rs, r_kdst[r] = kdst;
  }
  __syncthreads();

  // --- grouped conv and bias: Y = round(A Wg^T + bias), 16-bit, over K chunks ----------------------
  const uint16_t* zsrc = is_k ? kt + (c0 - static_cast<int64_t>(nq) * D) : qt + c0;
  const int64_t zrs = is_k ? a.in.kt_rs : a.in.qt_rs;
  uint16_t* Y = conv_gemm_biased<P, kLdsm>(a.in, smem_raw, bm, t0, c0, zsrc, zrs, r_i, r_slot);
  const int ldy = D + 8;

  // --- residual: x = round(Y + residual), in place ---------------------------------------------------
  const int upr = D / 8;
  for (int u = tid; u < bm * upr; u += kThreads) {
    const int r = u / upr, d8 = (u % upr) * 8;
    if (r_i[r] < 0) continue;
    const int64_t t = t0 + r;
    const Raw8 kr = load8(kt + t * a.in.kt_rs + static_cast<int64_t>(j) * D + d8);
    float res[8];
    const int h_first = is_k ? j * g : gi, h_count = is_k ? g : 1;
#pragma unroll
    for (int e = 0; e < 8; ++e) res[e] = 0.f;
    for (int hh = 0; hh < h_count; ++hh) {  // rq_h = round(round(qt_h + kt_j) * 0.5), summed for keys
      const Raw8 qr = load8(qt + t * a.in.qt_rs + static_cast<int64_t>(h_first + hh) * D + d8);
#pragma unroll
      for (int e = 0; e < 8; ++e)
        res[e] = fadd(res[e], P::round(fmul(P::round(fadd(P::to_float(qr.h[e]), P::to_float(kr.h[e]))), 0.5f)));
    }
    uint16_t* y = Y + r * ldy + d8;
    const Raw8 yr = load8(y);
    Raw8 xr;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float rk = is_k ? P::round(vendor::fdiv(res[e], static_cast<float>(g))) : res[e];
      xr.h[e] = P::from_float(fadd(P::to_float(yr.h[e]), rk));
    }
    store8(y, xr);
  }
  __syncthreads();

  // --- QK norm scale per row: sqrt(D) / max(||x||, eps), a warp per row ----------------------------
  for (int r = warp; r < bm; r += kWarps) {
    if (r_i[r] < 0) continue;  // uniform over the warp
    float ss = 0.f;
    for (int d = lane; d < D; d += kWarpSize) {
      const float x = P::to_float(Y[r * ldy + d]);
      ss = fadd(ss, fmul(x, x));
    }
    for (int off = kWarpSize / 2; off > 0; off >>= 1) ss = fadd(ss, vendor::shfl_xor(ss, off));
    if (lane == 0) {
      float norm = P::round(vendor::sqrt_rn(ss));
      norm = P::round(norm < a.in.eps ? a.in.eps : norm);  // NaN stays NaN, as clamp_min
      r_scale[r] = P::round(fmul(P::round(vendor::fdiv(1.f, norm)), a.in.sqrt_d));
    }
  }
  __syncthreads();

  // --- scale, temperature, RoPE, outputs -------------------------------------------------------------
  const int half = static_cast<int>(a.in.half);
  const float tk = is_k ? P::to_float(static_cast<const uint16_t*>(a.in.temp)[j]) : 1.f;
  const uint16_t* cos_sin = static_cast<const uint16_t*>(a.in.cos_sin);
  for (int u = tid; u < bm * upr; u += kThreads) {
    const int r = u / upr, d8 = (u % upr) * 8;
    const int i = r_i[r];
    const int64_t t = t0 + r;
    if (i == -1) continue;
    uint16_t* qo = is_k ? nullptr : static_cast<uint16_t*>(a.q_out) + (t * a.in.nq + gi) * D + d8;
    if (i < 0) {  // indices out of range (unchecked call): poison q, write nothing else
      Raw8 nan;
#pragma unroll
      for (int e = 0; e < 8; ++e) nan.h[e] = P::from_float(NAN);
      if (qo != nullptr) store8(qo, nan);
      continue;
    }
    const float sc = r_scale[r];
    const uint16_t* x = Y + r * ldy;
    auto scaled = [&](int d) {
      const float v = P::round(fmul(P::to_float(x[d]), sc));
      return is_k ? P::round(fmul(v, tk)) : v;
    };
    const uint16_t* cs = cos_sin + r_cs[r];
    Raw8 o;
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int d = d8 + e;
      float v = scaled(d);
      if (d < half) {
        const float c = P::to_float(cs[d]), s = P::to_float(cs[half + d]);
        v = P::round(fadd(P::round(fmul(v, c)), P::round(fmul(-scaled(d + half), s))));
      } else if (d < 2 * half) {
        const float c = P::to_float(cs[d - half]), s = P::to_float(cs[d]);
        v = P::round(fadd(P::round(fmul(v, c)), P::round(fmul(scaled(d - half), s))));
      }
      o.h[e] = P::from_float(v);
    }
    if (!is_k) {
      store8(qo, o);
      continue;
    }
    if (r_kdst[r] < 0) continue;
    uint16_t* kd = static_cast<uint16_t*>(a.k_cache) + r_kdst[r];
#pragma unroll
    for (int e = 0; e < 8; ++e) kd[static_cast<int64_t>(d8 + e) * a.kc3] = o.h[e];
  }
}

// IsK: the key-head groups (blockIdx.y = KV head), else the query-head groups (blockIdx.y = query
// head). Two instantiations instead of one branch: each keeps only its own arguments live (the AMD
// build ran out of scalar registers with both). kLdsm: ldmatrix fragments (CUDA; false: ZAYA_KERNELS=v1
// and CDNA).
template <class P, bool IsK, bool kLdsm>
__global__ void __launch_bounds__(kThreads) cca_qkv_kernel(CcaQkvArgs a) {
  __shared__ GroupSmem sm;
  group_pass<P, IsK, kLdsm>(a, sm, static_cast<int>(blockIdx.y));
}

// v of token t into the paged cache: concat(vc[t], vd[t-1]) as nkv heads (vd[t-1] is the slot's
// value_state for a sequence's first token), by threads tid, tid + nt, ... of the caller's block.
// It must run before the value_state update of t's sequence.
ZAYA_DEV void copy_values(const CcaQkvArgs& a, int64_t t, int tid, int nt) {
  const int64_t b = sequence_of(a.in.cu_seqlens, a.in.B, t), sm = a.slot_mapping[t];
  if (b < 0 || sm < 0 || sm >= a.cache_slots || a.in.cu_seqlens[b] < 0) return;
  const int64_t i = t - a.in.cu_seqlens[b], slot = a.state_indices[b];
  if (i == 0 && !(0 <= slot && slot < a.S)) return;
  const int64_t blk = sm / a.block_size, off = sm % a.block_size, hv = a.in.nkv * a.in.D / 2;
  uint16_t* dst = static_cast<uint16_t*>(a.v_cache) + blk * a.vc0 + off * a.vc1;
  const uint16_t* vc = static_cast<const uint16_t*>(a.vc) + t * a.vc_rs;
  const uint16_t* vd = i > 0 ? static_cast<const uint16_t*>(a.vd) + (t - 1) * a.vd_rs : nullptr;
  const uint16_t* vs = static_cast<const uint16_t*>(a.value_state) + slot * a.vs0;
  for (int64_t e = tid; e < 2 * hv; e += nt) {
    const uint16_t v = e < hv ? vc[e] : (i > 0 ? vd[e - hv] : vs[(e - hv) * a.vs1]);
    dst[(e / a.in.D) * a.vc2 + (e % a.in.D) * a.vc3] = v;
  }
}

// New slot history of sequence b for channels [c_begin, c_end) (the last two raw z steps; one new
// token: the old newest step moves down) and, with values, its value_state (the last vd row), by
// threads tid, tid + nt, ... Runs after every read of the old history.
ZAYA_DEV void update_state(const CcaQkvArgs& a, int64_t b, int64_t c_begin, int64_t c_end, bool values, int tid,
                           int nt) {
  const int64_t s = a.in.cu_seqlens[b], e = a.in.cu_seqlens[b + 1], slot = a.state_indices[b];
  if (!(0 <= s && s < e && e <= a.in.T && 0 <= slot && slot < a.S)) return;  // empty (or invalid): untouched
  const int64_t last = e - 1, n = e - s, qw = a.in.nq * a.in.D, hv = a.in.nkv * a.in.D / 2;
  const uint16_t* qt = static_cast<const uint16_t*>(a.in.qt);
  const uint16_t* kt = static_cast<const uint16_t*>(a.in.kt);
  // The forward's glue passes conv_state's mutable pointer (cca_qkv_inputs.h).
  uint16_t* conv = const_cast<uint16_t*>(static_cast<const uint16_t*>(a.in.conv_state)) + slot * a.in.st0;
  for (int64_t c = c_begin + tid; c < c_end; c += nt) {
    const uint16_t* z = c < qw ? qt + c : kt + (c - qw);
    const int64_t zrs = c < qw ? a.in.qt_rs : a.in.kt_rs;
    uint16_t* h = conv + c * a.in.st1;
    const uint16_t prev = n >= 2 ? z[(last - 1) * zrs] : h[a.in.st2];
    h[0] = prev;
    h[a.in.st2] = z[last * zrs];
  }
  if (!values) return;
  uint16_t* vs = static_cast<uint16_t*>(a.value_state) + slot * a.vs0;
  const uint16_t* vd = static_cast<const uint16_t*>(a.vd) + last * a.vd_rs;
  for (int64_t k = tid; k < hv; k += nt) vs[k * a.vs1] = vd[k];
}

// v of token blockIdx.x (one block per token); launched after the conv kernels, before the state kernel.
__global__ void __launch_bounds__(kStateThreads) cca_qkv_values_kernel(CcaQkvArgs a) {
  copy_values(a, blockIdx.x, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x));
}

// New state of sequence blockIdx.x; launched after the conv kernels, which read the old one.
__global__ void __launch_bounds__(kStateThreads) cca_qkv_state_kernel(CcaQkvArgs a) {
  update_state(a, blockIdx.x, 0, (a.in.nq + a.in.nkv) * a.in.D, true, static_cast<int>(threadIdx.x),
               static_cast<int>(blockDim.x));
}

// Decode and short calls (T <= one token block): everything in one launch. Every token is in token
// block 0, so the only reader of a sequence's old conv history for group gi's channels is block gi,
// which rewrites them after its pass; block nq (key head 0) also copies every token's v and then
// rewrites the value states (each sequence's first-token copy reads the old value state first).
// CUDA only: with both passes in one kernel, hip-clang spills scalar registers (93-115 SGPRs to
// VGPR lanes on gfx90a), so CDNA keeps the four launches below at every T.
#if ZAYA_WARP_SIZE == 32
#define ZAYA_CCA_QKV_SINGLE_LAUNCH 1
template <class P, bool kLdsm>
__global__ void __launch_bounds__(kThreads) cca_qkv_single_block_kernel(CcaQkvArgs a) {
  __shared__ GroupSmem sm;
  const int y = static_cast<int>(blockIdx.y), nq = static_cast<int>(a.in.nq);
  if (y < nq) {
    group_pass<P, false, kLdsm>(a, sm, y);
  } else {
    group_pass<P, true, kLdsm>(a, sm, y - nq);
  }
  __syncthreads();  // the pass has read the old histories
  const int tid = static_cast<int>(threadIdx.x);
  const bool values = y == nq;
  if (values) {
    for (int64_t t = 0; t < a.in.T; ++t) copy_values(a, t, tid, kThreads);
    __syncthreads();  // first-token copies read the old value state
  }
  for (int64_t b = 0; b < a.in.B; ++b)
    update_state(a, b, static_cast<int64_t>(y) * a.in.D, (y + 1) * a.in.D, values, tid, kThreads);
}
#endif

// --------------------------------------------------------------------------------------------
// Host side
// --------------------------------------------------------------------------------------------
using vendor::aligned16;

inline const char* launch_cca_qkv_impl(const CcaQkvArgs& a, vendor::stream_t stream) {
  const CcaQkvInputs& in = a.in;
  if (in.dtype != DType::BF16 && in.dtype != DType::F16) return "zaya cca_qkv: dtype must be bfloat16 or float16";
  if (in.D % 16 != 0 || in.D < 16 || in.D > kMaxD)
    return "zaya cca_qkv: head dim must be a multiple of 16 in [16, 256]";
  if (in.nkv <= 0 || in.nq % in.nkv != 0 || 2 * in.half > in.D) return "zaya cca_qkv: bad head counts or rotary width";
  if (!aligned16(in.qt) || !aligned16(in.kt) || !aligned16(in.gw) || !aligned16(in.dw_w) || !aligned16(in.dw_b) ||
      !aligned16(in.gb) || !aligned16(a.q_out) || (in.T > 1 && ((in.qt_rs * 2) % 16 != 0 || (in.kt_rs * 2) % 16 != 0)))
    return "zaya cca_qkv: qt, kt, the weights and q_out must be 16-byte aligned (rows too)";
  if (in.T == 0 || in.B == 0) return nullptr;
  const int bm = block_tokens(static_cast<int>(in.D));
  const int64_t blocks = (in.T + bm - 1) / bm;
  if (in.T > int64_t{0x7fffffff} || in.nq + in.nkv > 65535 || in.B > int64_t{0x7fffffff})
    return "zaya cca_qkv: too many tokens, heads or sequences for one launch";
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("cca_qkv", &dev, &warp)) return err;
  const dim3 block(static_cast<unsigned>(kWarps * warp));  // = kThreads, from the device's wave size
  auto run = [&](auto pt, auto ldsm) -> const char* {
    using P = decltype(pt);
    constexpr bool kLdsm = decltype(ldsm)::value;
#if defined(ZAYA_CCA_QKV_SINGLE_LAUNCH)
    if (blocks == 1)  // decode batches up to one token block: one launch
      return vendor::launch(&cca_qkv_single_block_kernel<P, kLdsm>, dim3(1, static_cast<unsigned>(in.nq + in.nkv)),
                            block, 0, stream, a);
#endif
    const dim3 qgrid(static_cast<unsigned>(blocks), static_cast<unsigned>(in.nq));
    const dim3 kgrid(static_cast<unsigned>(blocks), static_cast<unsigned>(in.nkv));
    if (const char* err = vendor::launch(&cca_qkv_kernel<P, false, kLdsm>, qgrid, block, 0, stream, a)) return err;
    if (const char* err = vendor::launch(&cca_qkv_kernel<P, true, kLdsm>, kgrid, block, 0, stream, a)) return err;
    if (const char* err = vendor::launch(&cca_qkv_values_kernel, dim3(static_cast<unsigned>(in.T)),
                                         dim3(kStateThreads), 0, stream, a))
      return err;
    return vendor::launch(&cca_qkv_state_kernel, dim3(static_cast<unsigned>(in.B)), dim3(kStateThreads), 0, stream, a);
  };
  auto run_dtype = [&](auto ldsm) {
    return in.dtype == DType::BF16 ? run(dtype::BF16{}, ldsm) : run(dtype::F16{}, ldsm);
  };
#if ZAYA_WARP_SIZE == 32
  // ldmatrix fragments (version 2); ZAYA_KERNELS=v1 (runtime::kernels_v1, the bench's "v1" provider): the
  // scalar fragment loads of version 1.
  if (!runtime::kernels_v1()) return run_dtype(std::true_type{});
#endif
  return run_dtype(std::false_type{});
}

}  // namespace zaya::kernels::cca_qkv
