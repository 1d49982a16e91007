// zaya::router on CPU (spec step 12; maths in zaya_ops.reference.router).
//
// Tokens go in blocks of kBlockRows. Per block: the four linears are ATen GEMMs with fp32
// accumulation (router_moe_common.h), and everything between them is fused per token with
// at::parallel_for: EDA add + RMSNorm_R, bias-rounding + GELU, and softmax + biased argmax + weight +
// logits. Each fused step rounds to the param dtype exactly where the reference's torch ops do
// (after every op), so the only differences from the reference are fp32 summation orders (GEMM dots,
// the norm's mean of squares) and a few fp32 ulps in exp and erf: rare one-step roundings.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "router_checks.h"
#include "router_moe_common.h"

namespace {

using zaya::router_moe::round_to;
using zaya::router_moe::row_grain;

// Tokens per block: bounds the fp32 copies of x and the intermediates (a few MiB), and keeps the
// [block, R] intermediates cache-warm from one GEMM to the next.
constexpr int64_t kBlockRows = 1024;
// Upcasting the router's small weights (R*H + 2R^2 + (E+1)*R) beats ATen's bf16 fallback from 2 tokens
// on (measured at ZAYA1 sizes, AVX2: 0.33 vs 0.27 ms at T = 2, 0.59 vs 0.39 ms at T = 4).
constexpr int64_t kUpcastMinRows = 2;

// torch.topk's order on CPU: NaN above everything, then larger first.
inline bool topk_greater(double x, double y) { return (std::isnan(x) && !std::isnan(y)) || x > y; }

// The index torch.topk(biased, 1) returns when several classes share the maximum. Its CPU kernel
// (ATen/native/TopKImpl.h) does not take the first: it runs std::nth_element (std::partial_sort from
// 64 classes on) over (value as double, index) pairs, so we run the same on the same pairs.
int64_t topk_tie_break(const std::vector<float>& biased, std::vector<std::pair<double, int64_t>>& q) {
  const int64_t n = static_cast<int64_t>(biased.size());
  for (int64_t j = 0; j < n; ++j) q[j] = {static_cast<double>(biased[j]), j};
  auto cmp = [](const std::pair<double, int64_t>& x, const std::pair<double, int64_t>& y) {
    return topk_greater(x.first, y.first);
  };
  if (n >= 64) {
    std::partial_sort(q.begin(), q.begin() + 1, q.end(), cmp);
  } else {
    std::nth_element(q.begin(), q.begin(), q.end(), cmp);
  }
  return q[0].second;
}

struct RouterArgs {
  at::Tensor x, prev, down_w, down_b, scale, norm_w, fc1_w, fc1_b, fc2_w, fc2_b, out_w, bal;
  double eps;
  bool return_logits;
};

struct RouterOut {
  at::Tensor index, weight, state, logits, counts;
};

// One call, param dtype scalar_t, GEMM operands and outputs in gemm_t (scalar_t native, float upcast).
// Native GEMMs are the reference's at::addmm (bias added and rounded by ATen); upcast ones are at::mm
// and the epilogue adds the fp32 bias before rounding, as addmm's beta = 1 would.
template <typename scalar_t, typename gemm_t>
void router_impl(const RouterArgs& a, RouterOut& o) {
  constexpr bool kUpcast = !std::is_same_v<scalar_t, gemm_t>;
  const int64_t T = a.x.size(0), H = a.x.size(1), R = a.down_w.size(0), E1 = a.out_w.size(0);
  const at::ScalarType gt = c10::CppTypeToScalarType<gemm_t>::value;
  using zaya::router_moe::as_gemm_dtype;
  const at::Tensor wd = as_gemm_dtype(a.down_w, gt), w1 = as_gemm_dtype(a.fc1_w, gt);
  const at::Tensor w2 = as_gemm_dtype(a.fc2_w, gt), w3 = as_gemm_dtype(a.out_w, gt);
  const at::Tensor bd = as_gemm_dtype(a.down_b, gt), b1 = as_gemm_dtype(a.fc1_b, gt);
  const at::Tensor b2 = as_gemm_dtype(a.fc2_b, gt);

  // Per-feature vectors read by the fused loops, contiguous.
  const at::Tensor bdc = bd.contiguous(), b1c = b1.contiguous(), b2c = b2.contiguous();
  const at::Tensor norm_w = a.norm_w.contiguous(), bal = a.bal.contiguous();
  const at::Tensor prev = a.prev.defined() ? a.prev.contiguous() : at::Tensor();
  const at::Tensor scale = a.scale.defined() ? a.scale.contiguous() : at::Tensor();
  const scalar_t* nw = norm_w.data_ptr<scalar_t>();
  const float* bb = bal.data_ptr<float>();
  const scalar_t* pv = prev.defined() ? prev.data_ptr<scalar_t>() : nullptr;
  const scalar_t* sc = scale.defined() ? scale.data_ptr<scalar_t>() : nullptr;
  const float eps = static_cast<float>(a.eps);  // the reference adds eps to an fp32 tensor

  scalar_t* state = o.state.data_ptr<scalar_t>();
  int32_t* index = o.index.data_ptr<int32_t>();
  scalar_t* weight = o.weight.data_ptr<scalar_t>();
  scalar_t* logits_out = a.return_logits ? o.logits.data_ptr<scalar_t>() : nullptr;

  const int64_t B = std::min(T, kBlockRows);
  const auto gopt = a.x.options().dtype(gt);
  const at::Tensor xbuf = kUpcast ? at::empty({B, H}, gopt) : at::Tensor();
  const at::Tensor acc = at::empty({B, R}, gopt);   // GEMM outputs
  const at::Tensor hid = at::empty({B, R}, gopt);   // GEMM inputs, already rounded to scalar_t
  const at::Tensor lgt = at::empty({B, E1}, gopt);  // logits before rounding

  // linear(in) -> acc: a native addmm, or an fp32 mm whose bias the epilogue adds.
  auto linear = [&](at::Tensor& out, const at::Tensor& in, const at::Tensor& w, const at::Tensor& b) {
    if constexpr (kUpcast) {
      at::mm_out(out, in, w.t());
    } else {
      at::addmm_out(out, b, in, w.t());
    }
  };
  // The param-dtype value of linear output element k (feature j): the reference's rounding point.
  auto lin_out = [](const gemm_t* acc_k, const gemm_t* bias, int64_t j) {
    if constexpr (kUpcast) {
      return round_to<scalar_t>(*acc_k + bias[j]);
    } else {
      return static_cast<float>(*acc_k);
    }
  };

  for (int64_t t0 = 0; t0 < T; t0 += B) {
    const int64_t n = std::min(B, T - t0);
    const at::Tensor xa = kUpcast ? xbuf.narrow(0, 0, n).copy_(a.x.narrow(0, t0, n)) : a.x.narrow(0, t0, n);
    at::Tensor acc_n = acc.narrow(0, 0, n), hid_n = hid.narrow(0, 0, n), lgt_n = lgt.narrow(0, 0, n);
    const gemm_t* ac = acc_n.data_ptr<gemm_t>();
    gemm_t* hd = hid_n.data_ptr<gemm_t>();

    // rho = down(x) (+ round(prev * scale)): the router state; then RMSNorm_R of it.
    linear(acc_n, xa, wd, bd);
    const gemm_t* bdp = bdc.data_ptr<gemm_t>();
    at::parallel_for(0, n, row_grain(R), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const gemm_t* ar = ac + i * R;
        const scalar_t* pr = pv ? pv + (t0 + i) * R : nullptr;
        scalar_t* st = state + (t0 + i) * R;
        double ss = 0.0;  // near-exact sum, so close to ATen's (differently ordered) fp32 mean
        for (int64_t j = 0; j < R; ++j) {
          float r = lin_out(ar + j, bdp, j);
          if (pr) {  // EDA: rho + round(prev * scale), each op rounded
            const float eda = round_to<scalar_t>(static_cast<float>(pr[j]) * static_cast<float>(sc[j]));
            r = round_to<scalar_t>(r + eda);
          }
          st[j] = static_cast<scalar_t>(r);
          ss += static_cast<double>(r * r);  // pow(2) rounds each square to fp32
        }
        const float rs = 1.0f / std::sqrt(static_cast<float>(ss) / static_cast<float>(R) + eps);
        gemm_t* hr = hd + i * R;
        for (int64_t j = 0; j < R; ++j) {
          const float nv = round_to<scalar_t>(static_cast<float>(st[j]) * rs);
          hr[j] = static_cast<gemm_t>(round_to<scalar_t>(static_cast<float>(nw[j]) * nv));
        }
      }
    });

    // Two hidden layers: round(linear), then round(GELU).
    for (int layer = 0; layer < 2; ++layer) {
      linear(acc_n, hid_n, layer == 0 ? w1 : w2, layer == 0 ? b1 : b2);
      const gemm_t* bp = (layer == 0 ? b1c : b2c).data_ptr<gemm_t>();
      at::parallel_for(0, n, row_grain(R), [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          for (int64_t j = 0; j < R; ++j) {
            const float v = lin_out(ac + i * R + j, bp, j);
            hd[i * R + j] = static_cast<gemm_t>(round_to<scalar_t>(zaya::router_moe::gelu_erf(v)));
          }
        }
      });
    }

    // Logits, softmax (rounded to scalar_t), biased argmax (as torch.topk, ties included), the
    // weight p[e] (0 for the skip class).
    at::mm_out(lgt_n, hid_n, w3.t());
    const gemm_t* lg = lgt_n.data_ptr<gemm_t>();
    at::parallel_for(0, n, row_grain(E1 * 8), [&](int64_t i0, int64_t i1) {
      std::vector<float> l(E1), b(E1);  // logits, then p; biased p
      std::vector<std::pair<double, int64_t>> q(E1);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t t = t0 + i;
        float mx = -INFINITY;
        for (int64_t j = 0; j < E1; ++j) {
          l[j] = round_to<scalar_t>(static_cast<float>(lg[i * E1 + j]));
          mx = std::max(mx, l[j]);
          if (logits_out) logits_out[t * E1 + j] = static_cast<scalar_t>(l[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < E1; ++j) sum += (l[j] = std::exp(l[j] - mx));
        const float inv = 1.0f / sum;  // ATen's softmax multiplies by the reciprocal of the sum
        int64_t best = 0, ties = 1;
        for (int64_t j = 0; j < E1; ++j) {
          l[j] = round_to<scalar_t>(l[j] * inv);  // p_j, as the reference's softmax output
          b[j] = l[j] + bb[j];
          if (j > 0 && topk_greater(b[j], b[best])) {
            best = j;
            ties = 1;
          } else if (j > 0 && !topk_greater(b[best], b[j])) {
            ++ties;
          }
        }
        if (ties > 1) best = topk_tie_break(b, q);
        index[t] = static_cast<int32_t>(best);
        weight[t] = static_cast<scalar_t>(best == E1 - 1 ? 0.0f : l[best]);
      }
    });
  }

  int32_t* counts = o.counts.data_ptr<int32_t>();
  for (int64_t t = 0; t < T; ++t) ++counts[index[t]];
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> router_cpu(
    const at::Tensor& x, const std::optional<at::Tensor>& prev_state, const at::Tensor& down_weight,
    const at::Tensor& down_bias, const std::optional<at::Tensor>& states_scale, const at::Tensor& norm_weight,
    const at::Tensor& fc1_weight, const at::Tensor& fc1_bias, const at::Tensor& fc2_weight,
    const at::Tensor& fc2_bias, const at::Tensor& out_weight, const at::Tensor& balancing_biases, double eps,
    bool return_logits) {
  zaya::checks::check_router_args(x, prev_state, down_weight, down_bias, states_scale, norm_weight, fc1_weight,
                                  fc1_bias, fc2_weight, fc2_bias, out_weight, balancing_biases, eps);
  const at::ScalarType dt = x.scalar_type();
  const int64_t T = x.size(0), R = down_weight.size(0), E1 = out_weight.size(0);

  RouterArgs a{x, prev_state.value_or(at::Tensor()), down_weight, down_bias,
               states_scale.value_or(at::Tensor()), norm_weight, fc1_weight, fc1_bias,
               fc2_weight, fc2_bias, out_weight, balancing_biases, eps, return_logits};
  RouterOut o{at::empty({T}, x.options().dtype(at::kInt)), at::empty({T}, x.options()),
              at::empty({T, R}, x.options()), at::empty({return_logits ? T : 0, E1}, x.options()),
              at::zeros({E1}, x.options().dtype(at::kInt))};
  if (T == 0) return {o.index, o.weight, o.state, o.logits, o.counts};

  const bool upcast = zaya::router_moe::upcast_gemm(dt, std::min(T, kBlockRows), kUpcastMinRows);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "zaya_router_cpu", [&] {
    if (upcast) {
      router_impl<scalar_t, float>(a, o);
    } else {
      router_impl<scalar_t, scalar_t>(a, o);
    }
  });
  return {o.index, o.weight, o.state, o.logits, o.counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("router", &router_cpu); }
