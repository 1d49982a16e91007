// Portable kernel body of zaya::router (spec step 12), compiled by nvcc (cuda/router.cu), hip-clang
// (hip/router.hip) and the SIMT emulator; the launcher at the bottom implements router_launch.h.
// One fused kernel per call: a block owns a tile of tokens and everything from x to the routing
// decision stays on chip, so the only global traffic is x, the weights, prev_state and the outputs.
//
// Semantics and rounding points (zaya_ops.reference.router, csrc/cpu/router.cpp): every linear
// accumulates in fp32 and rounds once to the param dtype after adding its bias in fp32;
// rho = round(x down^T + b), after the first layer rho = round(rho + round(prev * scale)) (= router_state);
// h = round(w * round(rho * inv)), inv = 1 / sqrt(mean(rho^2) + eps) correctly rounded;
// two layers h = round(gelu(round(fc(h) + b))) with the exact erf GELU; logits = round(out(h));
// p = round(exp(l - max) * (1 / sum)); biased = p + balancing_biases (fp32); the choice is the
// torch.topk(biased, 1) index with the CPU kernel's tie rule (below); weight = p[e], 0 for the skip
// class E. Every fp32 add/multiply goes through vendor::fadd/fmul (never contracted into FMAs), so
// the only differences from the reference are fp32 summation orders (the MMA dot products and the
// row reductions) and the last ulp of expf/erff: rare one-step roundings, and routing differences
// only at near-ties of the top two biased probabilities.
//
// Ties: the CPU kernel returns what torch.topk's CPU kernel returns, std::nth_element (libstdc++'s
// introselect) over (value, index) pairs for fewer than 64 classes and the lowest index among the
// maxima (std::partial_sort) from 64 on. The kernel finds the maximum and the number of classes
// that share it with a warp reduction; on an exact tie with fewer than 64 classes, lane 0 runs a
// port of libstdc++'s introselect (nth_element_first below) on the row, so GPU and CPU pick the
// same class.
//
// Tiling. A block of kWarps (8) warps owns BT tokens. Warp w owns every m tile (BT / 16) and the
// n tiles w, w + 8, ... of each GEMM output, so its accumulators are BT x 16 x (W / 128) fp32 values.
//   1. down: [BT, H] x [R, H]^T on mma.cuh, K loop over H in chunks of KD columns: each chunk of x
//      and of down_weight is staged in shared memory (16-byte copies, zero-filled past the edges);
//      version 2 on CUDA double-buffers the chunks through cp.async (router_tiles.cuh block_gemm):
//      chunk k + 1 is in flight while the warps multiply chunk k.
//   2. epilogue: + bias (+ EDA with prev_state), rounded into the on-chip activation tile hs
//      [BT, W + 8] (16-bit); one warp per row then reduces the squares, writes router_state (from
//      hs, coalesced) and normalises hs in place.
//   3. fc1, fc2 and out: hs stays resident as the A operand; the weight is streamed through shared
//      memory in chunks of 16 columns of all its rows (double-buffered as in 1. on CUDA); the GELU
//      epilogues write hs again, and the rounded logits overwrite it.
//   4. softmax and biased argmax, one warp per row; logits written if asked for.
//   5. counts: the block's chosen classes in shared memory; one vendor::atomic_add per distinct
//      class present in the block (the glue zeroes counts).
// Shared memory: the down phase (x chunks + down_weight chunks) and the MLP phase (hs + weight
// chunks) reuse one array (router_tiles.cuh Cfg, Tiles), plus BT ints for the counts.
//   version 1 (ZAYA_KERNELS=v1), static:
//     Big   (BT 64, W <= 256, KD 64): 46,080 B;  used when ceil(T / 64) fills every SM.
//     Small (BT 16, W <= 512, KD 32): 42,240 B;  decode / small T (more blocks), R or E+1 > 256.
//   version 2 (default), CUDA, two buffers per streamed chunk, dynamic (one opt-in per kernel):
//     Big2   (BT 64, W <= 256, KD 32): 58,368 B;  as Big.
//     Small2 (BT 16, W <= 512, KD 32): 84,480 B;  as Small.
//   version 2, CDNA (copies are synchronous: one buffer), static, <= 32 KiB so that two 512-thread
//   workgroups share a CU:
//     Big2   (BT 32, W <= 256, KD 32): 29,184 B;  used when ceil(T / 32) fills every CU.
//     Small2 (BT 16, W <= 256, KD 32): 21,760 B;  small T.
//     R or E+1 > 256 (not ZAYA1's): version 1's Small (42,240 B, one workgroup per CU).
// W = max(R, E+1) rounded up to 16; columns past R (or E+1) are zeros in every staged tile.
//
// Roofline, ZAYA1 sizes (H = 2048, R = 256, E+1 = 17), bf16, T = 8192 tokens per call:
//   FLOPs: down 2 T H R = 8.59 G; fc1 + fc2 4 T R^2 = 2.15 G; out 2 T R (E+1) = 0.07 G; 10.8 G total.
//   HBM bytes: x T H 2 = 33.6 MB; weights 1.3 MB; prev_state and router_state T R 2 = 4.2 MB each;
//   index/weight 49 KB; logits (optional) 0.28 MB: 39-43 MB. On an H100 (~3.0 TB/s measured copy
//   rate, ~990 TFLOP/s dense bf16) both floors are ~11-14 us: the down GEMM dominates, x bytes set
//   its floor, and the 2048x256 GEMM alone costs about the same. Goal: <= 1.3x that GEMM alone.
//   NOT MEASURED: written without a GPU. Expected shortfalls a GPU run must quantify: each
//   64-token block streams all of down_weight (1 MB) from L2, 134 MB of L2 reads per call; version
//   2's two-stage cp.async pipeline hides one chunk's latency behind the MMAs of the previous one
//   (version 1 staged synchronously: the bench's v1 provider times both); on CDNA the copies stay
//   synchronous and two workgroups per CU hide each other's.
//
// Resources (written without a GPU; re-measure after changing the tiles):
//   nvcc 13.0, sm_90a (cuobjdump -res-usage), 256-thread blocks, 0 spills, 0 stack; registers fp16 /
//     bf16: version 2 Big2 115 / 122, Small2 90 / 90, shared 256 / 64 B static + 58,368 / 84,480 B
//     dynamic; SASS: 8 LDGSTS (cp.async) sites, LDSM, HMMA (80 Big2, 72 Small2). Version 1 Big 115 / 124,
//     Small 89 / 89 (as before this change), smem 46,336 (Big) / 42,304 (Small) B.
//     (Earlier, sm_80: Big 116 / 123, Small 91.)
//   tools/check_hip.sh, 512-thread blocks, no scratch or spills (bf16 / fp16):
//     version 2: Big2 (32 tokens) LDS 29,312 B, occupancy 4 waves/SIMD (two workgroups per CU), VGPRs
//       gfx940 60 / 62, gfx90a 68 / 68; Small2 (W 256) 21,824 B, occupancy 6, gfx940 48 / 52, gfx90a
//       48 / 58; wider routers: version 1's Small. (Before: Big 46,336 B and Small 42,304 B, 2 waves/SIMD.)
//     version 1: Big 46,336 B / Small 42,304 B, occupancy 2; gfx940 VGPRs Big 82 / 82, Small 70 / 70,
//       gfx90a Big 88 / 90, Small 78 / 78.
#pragma once

#include <cmath>
#include <cstdint>

#include "router_tiles.cuh"

namespace zaya::kernels::router {

// torch.topk's order on the CPU: NaN above everything, then larger first.
ZAYA_DEV bool topk_greater(float x, float y) { return (x != x && !(y != y)) || x > y; }

ZAYA_DEV void swap_pair(float* v, int* id, int a, int b) {
  const float tv = v[a];
  v[a] = v[b];
  v[b] = tv;
  const int ti = id[a];
  id[a] = id[b];
  id[b] = ti;
}

// The index that std::nth_element(q, q, q + n, topk_greater) leaves in q[0] for the pairs
// q[i] = (v[i], id[i]): libstdc++'s __introselect with nth = first (so first never moves), its
// median-of-three pivot, unguarded partition, heap-select fallback and final insertion sort, step
// for step. v and id are permuted (scratch).
ZAYA_DEV int nth_element_first(float* v, int* id, int n) {
  int lg = 0;
  for (int m = n; m > 1; m >>= 1) ++lg;
  int depth = 2 * lg, last = n;
  while (last > 3) {
    if (depth == 0) {  // __heap_select(first, first + 1, last)
      for (int i = 1; i < last; ++i)
        if (topk_greater(v[i], v[0])) swap_pair(v, id, 0, i);
      return id[0];
    }
    --depth;
    const int a = 1, b = last / 2, c = last - 1;  // __move_median_to_first(first, a, b, c)
    int m;
    if (topk_greater(v[a], v[b])) {
      m = topk_greater(v[b], v[c]) ? b : topk_greater(v[a], v[c]) ? c : a;
    } else {
      m = topk_greater(v[a], v[c]) ? a : topk_greater(v[b], v[c]) ? c : b;
    }
    swap_pair(v, id, 0, m);
    int lo = 1, hi = last;  // __unguarded_partition(first + 1, last, first)
    for (;;) {
      while (topk_greater(v[lo], v[0])) ++lo;
      --hi;
      while (topk_greater(v[0], v[hi])) --hi;
      if (!(lo < hi)) break;
      swap_pair(v, id, lo, hi);
      ++lo;
    }
    last = lo;  // the cut is past nth = 0
  }
  for (int i = 1; i < last; ++i) {  // __insertion_sort(first, last)
    const float val = v[i];
    const int vid = id[i];
    int k = i;
    if (topk_greater(val, v[0])) {
      for (; k > 0; --k) v[k] = v[k - 1], id[k] = id[k - 1];
    } else {
      for (; topk_greater(val, v[k - 1]); --k) v[k] = v[k - 1], id[k] = id[k - 1];
    }
    v[k] = val;
    id[k] = vid;
  }
  return id[0];
}

// The running biased maximum of a row: value, lowest index holding it, how many classes hold it,
// and that class's probability. Merging is commutative, so a butterfly leaves it in every lane.
struct Best {
  float v;
  int i;
  int c;
  float p;
};

// Merges (v, i, c, p) into b, field by field (a struct-valued select put Best in scratch on AMD).
ZAYA_DEV void merge(Best& b, float v, int i, int c, float p) {
  const bool take = topk_greater(v, b.v), tie = !take && !topk_greater(b.v, v);
  const bool replace = take || (tie && i < b.i);
  b.v = replace ? v : b.v;
  b.i = replace ? i : b.i;
  b.p = replace ? p : b.p;
  b.c = take ? c : tie ? b.c + c : b.c;
}

// kLdsm: fragments through ldmatrix (mma.cuh load_*_v; CUDA), else scalar loads (ZAYA_KERNELS=v1, CDNA).
template <class D, class C, bool kLdsm>
__global__ void __launch_bounds__(kWarps * kWarpSize, 1) router_kernel(RouterArgs a) {
  constexpr int BT = C::kTokens, HLD = C::kHld;
  __shared__ uint4 smem_raw[C::kDynamic ? 1 : (C::kElems * 2 + 15) / 16];  // the tiles (static configurations)
  __shared__ int cls[BT];
  const Tiles<C> tiles(C::kDynamic ? vendor::dynamic_smem<uint16_t>() : reinterpret_cast<uint16_t*>(smem_raw));
  uint16_t* const hs = tiles.hs;  // MLP phase: activations [BT, W]
  uint16_t* const ws = tiles.ws;  // MLP phase: weight chunk buffers [W, kMlpK]

  using S = uint16_t;
  const int tid = static_cast<int>(threadIdx.x), warp = tid / kWarpSize, lane = vendor::lane_id();
  const int64_t t0 = static_cast<int64_t>(blockIdx.x) * BT;
  const int rows = a.tokens - t0 < BT ? static_cast<int>(a.tokens - t0) : BT;
  const int R = a.router_dim, E1 = a.classes;
  const int r_tiles = (R + 15) / 16, e_tiles = (E1 + 15) / 16;
  const int H = static_cast<int>(a.hidden);
  const auto f = [](S v) { return D::to_float(v); };

  Acc<C> acc;

  // 1-2. rho = down(x) + b (+ round(prev * scale)): router_state; then RMSNorm in place.
  const Mat x{static_cast<const S*>(a.x) + t0 * a.x_row_stride, a.x_row_stride, rows};
  rho_tile<D, C, kLdsm>(acc, x, static_cast<const S*>(a.down_weight), H, R, static_cast<const S*>(a.down_bias),
                        static_cast<const S*>(a.prev_state), a.prev_row_stride, static_cast<const S*>(a.states_scale),
                        t0, rows, tiles);
  __syncthreads();
  {
    const S* nw = static_cast<const S*>(a.norm_weight);
    S* state = static_cast<S*>(a.router_state);
    for (int row = warp; row < BT; row += kWarps) {
      S* hr = hs + row * HLD;
      float ss = 0.f;
      for (int j = lane; j < R; j += kWarpSize) ss = fadd(ss, fmul(f(hr[j]), f(hr[j])));
      for (int off = kWarpSize / 2; off > 0; off >>= 1) ss = fadd(ss, vendor::shfl_xor(ss, off));
      const float inv = vendor::fdiv(1.0f, vendor::sqrt_rn(fadd(vendor::fdiv(ss, static_cast<float>(R)), a.eps)));
      for (int j = lane; j < R; j += kWarpSize) {
        const S s = hr[j];
        if (row < rows) state[(t0 + row) * R + j] = s;
        hr[j] = D::from_float(fmul(f(nw[j]), D::round(fmul(f(s), inv))));
      }
    }
  }
  __syncthreads();

  // 3. Two hidden layers round(gelu(round(fc(h) + b))), then the logits round(out(h)).
  for (int layer = 0; layer < 2; ++layer) {
    const S* w = static_cast<const S*>(layer == 0 ? a.fc1_weight : a.fc2_weight);
    const S* bias = static_cast<const S*>(layer == 0 ? a.fc1_bias : a.fc2_bias);
    zero<C>(acc);
    block_gemm<D, C, kMlpK, false, kLdsm>(acc, Mat{w, R, R}, r_tiles, R, Mat{}, hs, HLD, ws);
    for_each_acc<C>(acc, r_tiles, [&](int row, int col, float v) {
      hs[row * HLD + col] = D::from_float(col < R ? gelu(D::round(fadd(v, f(bias[col])))) : 0.f);
    });
    __syncthreads();
  }
  zero<C>(acc);
  block_gemm<D, C, kMlpK, false, kLdsm>(acc, Mat{static_cast<const S*>(a.out_weight), R, E1}, e_tiles, R, Mat{}, hs,
                                 HLD, ws);
  for_each_acc<C>(acc, e_tiles, [&](int row, int col, float v) {
    if (col < E1) hs[row * HLD + col] = D::from_float(v);
  });
  __syncthreads();

  // 4. Softmax, biased argmax with the CPU tie rule, weight; one warp per row.
  {
    S* logits = static_cast<S*>(a.logits);
    const float* bal = a.balancing_biases;
    float* tie_v = reinterpret_cast<float*>(ws) + warp * 2 * kTieScratch;  // free since the out GEMM
    int* tie_i = reinterpret_cast<int*>(tie_v + kTieScratch);
    for (int row = warp; row < BT; row += kWarps) {
      const S* lr = hs + row * HLD;
      const bool valid = row < rows;
      float mx = -INFINITY;
      for (int j = lane; j < E1; j += kWarpSize) {
        mx = fmaxf(mx, f(lr[j]));
        if (valid && logits != nullptr) logits[(t0 + row) * E1 + j] = lr[j];
      }
      for (int off = kWarpSize / 2; off > 0; off >>= 1) mx = fmaxf(mx, vendor::shfl_xor(mx, off));
      float sum = 0.f;
      for (int j = lane; j < E1; j += kWarpSize) sum = fadd(sum, expf(fadd(f(lr[j]), -mx)));
      for (int off = kWarpSize / 2; off > 0; off >>= 1) sum = fadd(sum, vendor::shfl_xor(sum, off));
      const float inv = vendor::fdiv(1.0f, sum);  // ATen's softmax multiplies by the reciprocal
      Best best{-INFINITY, 0x7fffffff, 0, 0.f};
      for (int j = lane; j < E1; j += kWarpSize) {
        const float p = prob<D>(lr[j], mx, inv);
        merge(best, fadd(p, bal[j]), j, 1, p);
      }
      for (int off = kWarpSize / 2; off > 0; off >>= 1) {
        const int src = lane ^ off;
        const float ov = vendor::shfl_xor(best.v, off), op = vendor::shfl_xor(best.p, off);
        const int oi = vendor::shfl(best.i, src), oc = vendor::shfl(best.c, src);
        merge(best, ov, oi, oc, op);
      }
      if (lane == 0 && valid) {
        int e = best.i;
        float p = best.p;
        if (best.c > 1 && E1 < kTieScratch) {  // an exact tie: the CPU kernel's nth_element
          for (int j = 0; j < E1; ++j) {
            tie_v[j] = fadd(prob<D>(lr[j], mx, inv), bal[j]);
            tie_i[j] = j;
          }
          e = nth_element_first(tie_v, tie_i, E1);
          p = prob<D>(lr[e], mx, inv);
        }
        a.expert_index[t0 + row] = e;
        static_cast<S*>(a.expert_weight)[t0 + row] = D::from_float(e == E1 - 1 ? 0.f : p);
        cls[row] = e;
      }
    }
  }
  __syncthreads();

  // 5. counts: the first token of each class in the block adds the block's count of that class.
  if (tid < rows) {
    const int e = cls[tid];
    bool first = true;
    for (int r = 0; r < tid; ++r) first = first && cls[r] != e;
    if (first) {
      int n = 0;
      for (int r = tid; r < rows; ++r) n += cls[r] == e;
      vendor::atomic_add(a.counts + e, n);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Launcher
// ------------------------------------------------------------------------------------------------

template <class D, class C, bool kLdsm>
const char* launch_cfg(const RouterArgs& a, int warp, vendor::stream_t stream) {
  const int64_t blocks = (a.tokens + C::kTokens - 1) / C::kTokens;
  const dim3 grid(static_cast<unsigned>(blocks)), block(static_cast<unsigned>(kWarps * warp));
  return vendor::launch(&router_kernel<D, C, kLdsm>, grid, block, C::kDynamic ? C::kBytes : 0, stream, a);
}

// Big tiles (each block streams down_weight once per BT tokens) when they still fill every SM; else
// 16-token tiles (decode, small batches: more blocks).
template <class D, class BigC, class SmallC, class WideC, bool kLdsm>
const char* launch_version(const RouterArgs& a, int64_t width, int sms, int warp, vendor::stream_t stream) {
  if (width <= BigC::kWidth && (a.tokens + BigC::kTokens - 1) / BigC::kTokens >= sms)
    return launch_cfg<D, BigC, kLdsm>(a, warp, stream);
  if (width <= SmallC::kWidth) return launch_cfg<D, SmallC, kLdsm>(a, warp, stream);
  return launch_cfg<D, WideC, kLdsm>(a, warp, stream);
}

// Version 2 (Big2 / Small2 / Wide2: cp.async double buffering on CUDA, <= 32 KiB of LDS on CDNA up to
// a width of 256) by default; ZAYA_KERNELS=v1 (runtime::kernels_v1) launches version 1 as it was (Big /
// Small, synchronous staging, scalar fragment loads), so one run times both.
template <class D>
const char* launch_dtype(const RouterArgs& a, int64_t width, int sms, int warp, vendor::stream_t stream) {
  if (runtime::kernels_v1()) return launch_version<D, Big, Small, Small, false>(a, width, sms, warp, stream);
  return launch_version<D, Big2, Small2, Wide2, ZAYA_WARP_SIZE == 32>(a, width, sms, warp, stream);
}

inline const char* launch_router_impl(const RouterArgs& a, vendor::stream_t stream) {
  int64_t width = 0;
  if (const char* err = check_args(a, ArgMessages{"zaya router: the GPU kernel takes bfloat16 or float16 (fp32 runs on the CPU)",
                                                  "zaya router: need router_dim >= 1, classes >= 2, hidden >= 0, tokens >= 0",
                                                  "zaya router: max(router_dim, classes) exceeds kRouterMaxWidth",
                                                  "zaya router: hidden exceeds the kernel's 32-bit column index"},
                                   &width))
    return err;
  if (a.tokens == 0) return nullptr;
  int dev = 0, warp = 0;
  if (const char* err = vendor::current_device("router", &dev, &warp)) return err;
  const int sms = vendor::device_sm_count(dev);
  if (sms <= 0) return "zaya router: cannot query the device's multiprocessor count";
  if (a.dtype == DType::BF16) return launch_dtype<dtype::BF16>(a, width, sms, warp, stream);
  return launch_dtype<dtype::F16>(a, width, sms, warp, stream);
}

}  // namespace zaya::kernels::router
