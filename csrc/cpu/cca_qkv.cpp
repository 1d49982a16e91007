// CPU kernel of zaya::cca_qkv: the CCA prologue (spec steps 3-7) and the paged KV-cache writes.
//
// Work items are (block of kTokBlock packed tokens) x (KV head j). An item owns the g query heads
// of group j and key head j, i.e. g + 1 of the grouped conv's channel groups:
//   1. depthwise conv: for each token t both taps the grouped conv reads, u[t-1] and u[t], are built
//      from z[t-2..t] (the slot's conv_state for steps before the sequence start), so a block may mix
//      tokens of several sequences (decode batches become one GEMM);
//   2. grouped conv: one fp32 GEMM per channel group, [tokens, 2D] x [2D, D] (conv_g_weight[C, D, 2]
//      is already [C, 2D] with the taps interleaved: fp32 weights are used in place, others are
//      converted once per thread and KV group);
//   3. per token: residual means, q/k, QK norm, key temperature, RoPE, q out, k and v cache writes.
// Every rounding point of zaya_ops.reference is reproduced (rnd<T> rounds to the param dtype), with
// fp32 arithmetic in between, as PyTorch's CPU kernels compute reduced-precision dtypes. The conv and
// value states are overwritten after all items ran, since the first tokens of each sequence read them.
//
// Limits: fp32, bf16 or fp16; any even head dim D, even rotary width <= D, nq a multiple of nkv.
// qt/kt/vc/vd/cos_sin rows may be strided (a fused projection's column slices are used in place;
// a non-unit column stride costs a copy); states and caches may have any strides. Each non-empty
// sequence of a call needs its own state slot.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "cca_common.h"
#include "cca_qkv_checks.h"

namespace {

using namespace zaya::cpu;

constexpr int64_t kTokBlock = 64;  // tokens per item: the A/Y scratch of an item stays in L2

template <typename T>
struct QkvParams {
  int64_t T_, nq, nkv, D, g, half;  // half = rotary dims / 2
  const T *qt, *kt, *vc, *vd;
  int64_t qt_rs, kt_rs, vc_rs, vd_rs;  // row strides (column stride 1)
  const float *dw_w, *dw_b;            // [C, 2], [C]
  const T* gw;                         // [C, 2D] conv_g_weight (contiguous)
  const float* gw_f32;                 // the same in fp32 when it already is, else null
  const float* gb;                     // [C]
  const float* temp;                   // [nkv]
  const T* cos_sin;
  int64_t cs_rs;
  const int64_t *positions, *slot_mapping, *cu, *slots;
  const int32_t* tok_seq;  // sequence of each token
  const T* conv_state;
  int64_t st0, st1, st2;
  const T* value_state;
  int64_t vs0, vs1;
  T *k_cache, *v_cache;
  int64_t kc0, kc1, kc2, kc3, vc0, vc1, vc2, vc3, block_size;
  T* q_out;
  float eps, sqrt_d;
};

// The two depthwise-conv taps of one channel group for one token, interleaved as the grouped conv's
// weight rows: a[2d] = u[t-1], a[2d+1] = u[t], from z[t-2] (z2), z[t-1] (z1) and z[t] (z0).
template <typename T>
ZAYA_CLONES void depthwise_taps(const T* z2, int64_t s2, const T* z1, int64_t s1, const T* z0, int64_t D,
                                const float* w, const float* b, float* a) {
  for (int64_t d = 0; d < D; ++d) {
    const float x2 = to_f(z2[d * s2]), x1 = to_f(z1[d * s1]), x0 = to_f(z0[d]);
    a[2 * d] = rnd<T>(w[2 * d] * x2 + w[2 * d + 1] * x1 + b[d]);
    a[2 * d + 1] = rnd<T>(w[2 * d] * x1 + w[2 * d + 1] * x0 + b[d]);
  }
}

// ZayaQKNorm (x * (sqrt(D) / max(||x||, eps)), with PyTorch's reciprocal-then-multiply for a scalar
// divided by a tensor), the optional key temperature, then NeoX RoPE on the first 2*half dims.
// x holds one head in fp32 (values representable in T) and is scaled in place; the result goes to o.
template <typename T>
ZAYA_INLINE void qk_norm_rope(float* __restrict x, int64_t D, float eps, float sqrt_d, const float* temp,
                              const float* __restrict cs, int64_t half, float* __restrict o) {
  // Sum of squares in 8 lanes (the order differs from PyTorch's, which the rounding to T hides).
  vec::f8 acc = vec::splat(0.f);
  int64_t d8 = 0;
  for (; d8 + 8 <= D; d8 += 8) {
    const vec::f8 v = vec::load(x + d8);
    acc += v * v;
  }
  float ss = vec::hsum(acc);
  for (; d8 < D; ++d8) ss += x[d8] * x[d8];
  const float norm = rnd<T>(std::max(rnd<T>(std::sqrt(ss)), eps));
  const float sc = rnd<T>(rnd<T>(1.f / norm) * sqrt_d);
  if (temp != nullptr) {
    const float tk = *temp;
    for (int64_t d = 0; d < D; ++d) x[d] = rnd<T>(rnd<T>(x[d] * sc) * tk);
  } else {
    for (int64_t d = 0; d < D; ++d) x[d] = rnd<T>(x[d] * sc);
  }
  const float* __restrict c = cs;
  const float* __restrict s = cs + half;
  for (int64_t d = 0; d < half; ++d) o[d] = rnd<T>(rnd<T>(x[d] * c[d]) + rnd<T>(-x[d + half] * s[d]));
  for (int64_t d = 0; d < half; ++d) o[d + half] = rnd<T>(rnd<T>(x[d + half] * c[d]) + rnd<T>(x[d] * s[d]));
  for (int64_t d = 2 * half; d < D; ++d) o[d] = x[d];
}

// q_h before its norm, y_h + (qt_h + kt_j) / 2, and the sum over the group of (qt_h + kt_j) / 2.
template <typename T>
ZAYA_INLINE void query_head_in(const T* __restrict qtr, const T* __restrict ktr, const float* __restrict y,
                               const float* __restrict bias, int64_t D, float* __restrict kres,
                               float* __restrict x) {
  for (int64_t d = 0; d < D; ++d) {
    const float rq = rnd<T>(rnd<T>(to_f(qtr[d]) + to_f(ktr[d])) * 0.5f);
    kres[d] += rq;
    x[d] = rnd<T>(rnd<T>(y[d] + bias[d]) + rq);
  }
}

// Step 3 for token t and KV group j: Y holds the token's g + 1 grouped-conv outputs (no bias).
template <typename T>
ZAYA_CLONES void finish_token(const QkvParams<T>& p, int64_t t, int64_t j, const float* Y, float* work) {
  const int64_t D = p.D, g = p.g, b = p.tok_seq[t], i = t - p.cu[b], slot = p.slots[b];
  float* __restrict kres = work;        // [D] sum of the group's query residuals
  float* __restrict x = work + D;       // [D] the head being finished
  float* __restrict o = work + 2 * D;   // [D] the head after RoPE
  float* __restrict cs = work + 3 * D;  // [2 * half] cos, sin
  row_to_f32(p.cos_sin + p.positions[t] * p.cs_rs, 1, 2 * p.half, 1.f, cs);
  const T* __restrict ktr = p.kt + t * p.kt_rs + j * D;
  const float eps = p.eps, sqrt_d = p.sqrt_d;
  const int64_t half = p.half;
  std::fill(kres, kres + D, 0.f);
  for (int64_t hh = 0; hh < g; ++hh) {
    const int64_t h = j * g + hh;
    const T* __restrict qtr = p.qt + t * p.qt_rs + h * D;
    const float* __restrict y = Y + hh * D;
    const float* __restrict bias = p.gb + h * D;
    query_head_in(qtr, ktr, y, bias, D, kres, x);
    qk_norm_rope<T>(x, D, eps, sqrt_d, nullptr, cs, half, o);
    T* __restrict qo = p.q_out + (t * p.nq + h) * D;
    for (int64_t d = 0; d < D; ++d) qo[d] = from_f<T>(o[d]);
  }
  const int64_t sm = p.slot_mapping[t];
  if (sm < 0) return;  // k and v go nowhere: skip them
  const float* __restrict y = Y + g * D;
  const float* __restrict bias = p.gb + (p.nq + j) * D;
  const float gf = static_cast<float>(g);
  for (int64_t d = 0; d < D; ++d) x[d] = rnd<T>(rnd<T>(y[d] + bias[d]) + rnd<T>(kres[d] / gf));
  qk_norm_rope<T>(x, D, eps, sqrt_d, p.temp + j, cs, half, o);
  const int64_t blk = sm / p.block_size, off = sm % p.block_size;
  T* kd = p.k_cache + blk * p.kc0 + off * p.kc1 + j * p.kc2;
  for (int64_t d = 0; d < D; ++d) kd[d * p.kc3] = from_f<T>(o[d]);
  // v = concat(vc[t], vd[t-1]) viewed as nkv heads: head j is elements j*D .. j*D+D-1 of it.
  const int64_t hv = p.nkv * D / 2;
  T* vdst = p.v_cache + blk * p.vc0 + off * p.vc1 + j * p.vc2;
  for (int64_t d = 0; d < D; ++d) {
    const int64_t e = j * D + d;
    T v;
    if (e < hv) {
      v = p.vc[t * p.vc_rs + e];
    } else if (i > 0) {
      v = p.vd[(t - 1) * p.vd_rs + (e - hv)];
    } else {
      v = p.value_state[slot * p.vs0 + (e - hv) * p.vs1];
    }
    vdst[d * p.vc3] = v;
  }
}

// The grouped-conv weights of the g + 1 channel groups of KV group j, in fp32: [G][D][2D].
template <typename T>
const float* group_weights(const QkvParams<T>& p, int64_t j, std::vector<float>& buf) {
  const int64_t D = p.D, D2 = 2 * D, g = p.g;
  buf.resize((g + 1) * D * D2);
  for (int64_t s = 0; s <= g; ++s) {
    const int64_t gi = s < g ? j * g + s : p.nq + j;
    row_to_f32(p.gw + gi * D * D2, 1, D * D2, 1.f, buf.data() + s * D * D2);
  }
  return buf.data();
}

template <typename T>
void qkv_item(const QkvParams<T>& p, int64_t t0, int64_t nt, int64_t j, const float* W, float* A, float* Y,
              float* work) {
  const int64_t D = p.D, D2 = 2 * D, g = p.g, G = g + 1, qw = p.nq * D;
  auto group_of = [&](int64_t s) { return s < g ? j * g + s : p.nq + j; };

  // 1. depthwise conv taps, A[r][s][D][2].
  for (int64_t r = 0; r < nt; ++r) {
    const int64_t t = t0 + r, b = p.tok_seq[t], i = t - p.cu[b], slot = p.slots[b];
    for (int64_t s = 0; s < G; ++s) {
      const int64_t c0 = group_of(s) * D;
      // z[t + k] of channels c0.., from the projections or (before the sequence start) conv_state.
      auto z = [&](int64_t k, int64_t& stride) -> const T* {
        if (i + k >= 0) {
          stride = 1;
          return c0 < qw ? p.qt + (t + k) * p.qt_rs + c0 : p.kt + (t + k) * p.kt_rs + (c0 - qw);
        }
        stride = p.st1;
        return p.conv_state + slot * p.st0 + c0 * p.st1 + (2 + i + k) * p.st2;
      };
      int64_t s2, s1, s0;
      const T* z2 = z(-2, s2);
      const T* z1 = z(-1, s1);
      const T* z0 = z(0, s0);
      depthwise_taps<T>(z2, s2, z1, s1, z0, D, p.dw_w + 2 * c0, p.dw_b + c0, A + (r * G + s) * D2);
    }
  }

  // 2. grouped conv (bias added in the epilogue, before its rounding); W: this group's weights.
  for (int64_t s = 0; s < G; ++s) {
    const float* w = p.gw_f32 != nullptr ? p.gw_f32 + group_of(s) * D * D2 : W + s * D * D2;
    gemm_f32(true, nt, D, D2, A + s * D2, G * D2, w, D2, 0.f, Y + s * D, G * D);
  }

  // 3. per token.
  for (int64_t r = 0; r < nt; ++r) finish_token<T>(p, t0 + r, j, Y + r * G * D, work);
}

template <typename T>
void run_qkv(const QkvParams<T>& p) {
  const int64_t n_blocks = (p.T_ + kTokBlock - 1) / kTokBlock;
  const int64_t G = p.g + 1, D = p.D;
  // Items j-major: a thread's contiguous chunk spans few KV groups, so it converts few weight groups
  // (inside this one parallel region: small decode calls pay for a single one).
  at::parallel_for(0, n_blocks * p.nkv, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> A(kTokBlock * G * 2 * D), Y(kTokBlock * G * D), work(5 * D), wbuf;
    const float* W = nullptr;
    int64_t w_group = -1;
    for (int64_t it = begin; it < end; ++it) {
      const int64_t j = it / n_blocks, t0 = (it % n_blocks) * kTokBlock;
      if (p.gw_f32 == nullptr && j != w_group) W = group_weights(p, j, wbuf), w_group = j;
      qkv_item<T>(p, t0, std::min(kTokBlock, p.T_ - t0), j, W, A.data(), Y.data(), work.data());
    }
  });
}

// New slot history of each non-empty sequence: the last two raw z steps and the last vd row.
template <typename T>
void update_states(const QkvParams<T>& p, int64_t B, T* conv_state, T* value_state) {
  const int64_t C = (p.nq + p.nkv) * p.D, qw = p.nq * p.D, hv = p.nkv * p.D / 2;
  at::parallel_for(0, B, 64, [&](int64_t begin, int64_t end) {  // ~C copies per sequence: cheap
    for (int64_t b = begin; b < end; ++b) {
      const int64_t n = p.cu[b + 1] - p.cu[b], last = p.cu[b + 1] - 1, slot = p.slots[b];
      if (n <= 0) continue;  // an empty sequence leaves its slot untouched
      for (int64_t c = 0; c < C; ++c) {
        auto z = [&](int64_t t) { return c < qw ? p.qt[t * p.qt_rs + c] : p.kt[t * p.kt_rs + (c - qw)]; };
        T* h = conv_state + slot * p.st0 + c * p.st1;
        const T prev = n >= 2 ? z(last - 1) : h[p.st2];  // one new token: the old newest step moves down
        h[0] = prev;
        h[p.st2] = z(last);
      }
      for (int64_t e = 0; e < hv; ++e) value_state[slot * p.vs0 + e * p.vs1] = p.vd[last * p.vd_rs + e];
    }
  });
}

// Column stride 1 is what the kernel reads; strided rows are used in place.
at::Tensor rows_unit_stride(const at::Tensor& t) { return t.stride(1) == 1 ? t : t.contiguous(); }

at::Tensor cca_qkv_cpu(const at::Tensor& qt, const at::Tensor& kt, const at::Tensor& vc, const at::Tensor& vd,
                       const at::Tensor& conv_dw_weight, const at::Tensor& conv_dw_bias,
                       const at::Tensor& conv_g_weight, const at::Tensor& conv_g_bias, const at::Tensor& qk_temp,
                       const at::Tensor& cos_sin, const at::Tensor& positions, const at::Tensor& cu_seqlens,
                       const at::Tensor& conv_state, const at::Tensor& value_state,
                       const at::Tensor& state_indices, const at::Tensor& k_cache, const at::Tensor& v_cache,
                       const at::Tensor& slot_mapping, double qk_norm_eps) {
  // --- shapes, dtypes and index values (csrc/cca_qkv_checks.h, shared with the GPU glue) ---
  check_cpu("qt", qt);
  const auto dims = zaya::checks::check_cca_qkv_args(qt, kt, vc, vd, conv_dw_weight, conv_dw_bias, conv_g_weight,
                                                     conv_g_bias, qk_temp, cos_sin, positions, cu_seqlens, conv_state,
                                                     value_state, state_indices, k_cache, v_cache, slot_mapping,
                                                     qk_norm_eps);
  const auto ix = zaya::checks::check_cca_qkv_indices(dims, cu_seqlens, state_indices, positions, slot_mapping);
  const auto dt = qt.scalar_type();
  const int64_t T = dims.T, nq = dims.nq, nkv = dims.nkv, D = dims.D, rot = dims.rot, B = dims.B;
  const int64_t block_size = dims.block_size;
  const auto& cu = ix.cu;
  const auto& slots = ix.slots;
  const int64_t* pos = ix.positions.data();
  const int64_t* sm = ix.slot_mapping.data();
  std::vector<int32_t> tok_seq(T);
  for (int64_t b = 0; b < B; ++b) std::fill(tok_seq.begin() + cu[b], tok_seq.begin() + cu[b + 1], int32_t(b));

  auto q_out = at::empty({T, nq, D}, qt.options());
  if (T == 0) return q_out;

  // fp32 copies of the small parameters (no-ops for contiguous fp32).
  auto f32 = [](const at::Tensor& t) { return t.to(at::kFloat).contiguous(); };
  const auto dw_w = f32(conv_dw_weight), dw_b = f32(conv_dw_bias), gw = conv_g_weight.contiguous();
  const auto gb = f32(conv_g_bias), temp = f32(qk_temp);
  const auto qt_ = rows_unit_stride(qt), kt_ = rows_unit_stride(kt), vc_ = rows_unit_stride(vc);
  const auto vd_ = rows_unit_stride(vd), cs_ = rows_unit_stride(cos_sin);

  dispatch_float(dt, [&]<typename T_>() {
    QkvParams<T_> p{};
    p.T_ = T, p.nq = nq, p.nkv = nkv, p.D = D, p.g = nq / nkv, p.half = rot / 2;
    p.qt = qt_.const_data_ptr<T_>(), p.kt = kt_.const_data_ptr<T_>();
    p.vc = vc_.const_data_ptr<T_>(), p.vd = vd_.const_data_ptr<T_>();
    p.qt_rs = qt_.stride(0), p.kt_rs = kt_.stride(0), p.vc_rs = vc_.stride(0), p.vd_rs = vd_.stride(0);
    p.dw_w = dw_w.const_data_ptr<float>(), p.dw_b = dw_b.const_data_ptr<float>();
    p.gw = gw.const_data_ptr<T_>(), p.gb = gb.const_data_ptr<float>(), p.temp = temp.const_data_ptr<float>();
    if constexpr (std::is_same_v<T_, float>) p.gw_f32 = p.gw;
    p.cos_sin = cs_.const_data_ptr<T_>(), p.cs_rs = cs_.stride(0);
    p.positions = pos, p.slot_mapping = sm, p.cu = cu.data(), p.slots = slots.data(), p.tok_seq = tok_seq.data();
    p.conv_state = conv_state.const_data_ptr<T_>();
    p.st0 = conv_state.stride(0), p.st1 = conv_state.stride(1), p.st2 = conv_state.stride(2);
    p.value_state = value_state.const_data_ptr<T_>(), p.vs0 = value_state.stride(0), p.vs1 = value_state.stride(1);
    p.k_cache = k_cache.data_ptr<T_>(), p.v_cache = v_cache.data_ptr<T_>();
    p.kc0 = k_cache.stride(0), p.kc1 = k_cache.stride(1), p.kc2 = k_cache.stride(2), p.kc3 = k_cache.stride(3);
    p.vc0 = v_cache.stride(0), p.vc1 = v_cache.stride(1), p.vc2 = v_cache.stride(2), p.vc3 = v_cache.stride(3);
    p.block_size = block_size;
    p.q_out = q_out.data_ptr<T_>();
    p.eps = static_cast<float>(qk_norm_eps), p.sqrt_d = static_cast<float>(std::sqrt(static_cast<double>(D)));
    run_qkv<T_>(p);
    update_states<T_>(p, B, conv_state.data_ptr<T_>(), value_state.data_ptr<T_>());
  });
  return q_out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("cca_qkv", &cca_qkv_cpu); }
