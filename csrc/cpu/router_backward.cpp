// zaya::router_backward on CPU: autograd of zaya_ops.reference.router through expert_weight,
// router_state and (return_logits) logits. The argmax choice is not differentiable: the saved
// expert_index says which probability the weight is (none for the skip class E, whose weight is 0).
//
// Saved by the forward: its inputs and expert_index; this kernel recomputes the small MLP per block
// of tokens (rho, the norm, two GELU layers, logits, softmax) and runs the chain backwards:
//   dl   = round_p(p * (onehot_e * gw - p_e * gw)) (+ grad_logits, rounded)   softmax into one column
//   dg2  = round_p(dl @ Wo);  da2 = round_p(dg2 * GELU'(a2));  dg1 = round_p(da2 @ W2);  ...
//   dn   = round_p(da1 @ W1); dhn = round_p(dn * norm_w); drho = round_p(RMSNorm'(dhn)) (+ grad_state)
//   dprev = round_p(drho * states_scale);  dx = round_p(drho @ Wd)
// Every cast and op of the forward is a rounding point of the gradient, as autograd of the reference in
// the param dtype p rounds (round_p); everything between rounding points runs in fp32 (double for
// float64, the gradcheck mode).
//
// Matrix products are ATen GEMMs (at::mm / addmm) on fp32 operands (already rounded to p), the rest is
// hand-written and threaded with at::parallel_for: the recompute's epilogues, GELU', the softmax
// backward into one column, the RMSNorm backward. Weight gradients accumulate block by block (tokens in
// fixed blocks of kBlockRows, in order) into fp32 matrices by addmm and are rounded once; the [R] vector
// gradients are column sums in double, parallel over columns and summed over tokens in order. Neither
// depends on the thread count (tests/test_router_autograd.py checks it).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

#include "router_checks.h"

namespace {

// Tokens per block: bounds the fp32 copies and intermediates ([block, H] and a dozen [block, R]).
constexpr int64_t kBlockRows = 512;

inline int64_t grain(int64_t row_elems) {
  return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(1, row_elems));
}

template <typename scalar_t, typename C>
inline C rnd(C v) {
  return static_cast<C>(static_cast<scalar_t>(v));
}

template <typename C>
inline C gelu(C x) {
  return x * C(0.5) * (C(1) + std::erf(x * static_cast<C>(M_SQRT1_2)));
}

// ATen's GELU backward (erf form): cdf + x * pdf.
template <typename C>
inline C gelu_grad(C x) {
  const C cdf = C(0.5) * (C(1) + std::erf(x * static_cast<C>(M_SQRT1_2)));
  const C pdf = std::exp(C(-0.5) * x * x) * static_cast<C>(M_2_SQRTPI * M_SQRT1_2 * 0.5);
  return cdf + x * pdf;
}

// acc[j] += sum over rows i < n (in order) of f(i, j), j < R: parallel over columns.
template <typename F>
void column_sums(int64_t n, int64_t R, double* acc, F f) {
  at::parallel_for(0, R, 16, [&](int64_t j0, int64_t j1) {
    for (int64_t j = j0; j < j1; ++j) {
      double s = 0.0;
      for (int64_t i = 0; i < n; ++i) s += static_cast<double>(f(i, j));
      acc[j] += s;
    }
  });
}

struct BwdArgs {
  at::Tensor gw, gs, gl;  // undefined when None
  at::Tensor x, prev, down_w, down_b, scale, norm_w, fc1_w, fc1_b, fc2_w, fc2_b, out_w, index;
  double eps;
};

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <typename scalar_t>
Grads router_backward_impl(const BwdArgs& a) {
  using C = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  const at::ScalarType ct = c10::CppTypeToScalarType<C>::value;
  const int64_t T = a.x.size(0), H = a.x.size(1), R = a.down_w.size(0), E1 = a.out_w.size(0);
  const bool has_prev = a.prev.defined();
  const auto copt = a.x.options().dtype(ct);
  const auto as_c = [&](const at::Tensor& t) { return t.to(ct).contiguous(); };
  const at::Tensor Wd = as_c(a.down_w), W1 = as_c(a.fc1_w), W2 = as_c(a.fc2_w), Wo = as_c(a.out_w);
  const at::Tensor vec = at::stack({a.down_b, a.fc1_b, a.fc2_b, a.norm_w}).to(ct).contiguous();
  const C* bd = vec.data_ptr<C>();
  const C* b1 = bd + R;
  const C* b2 = bd + 2 * R;
  const C* nw = bd + 3 * R;
  const at::Tensor scale = has_prev ? as_c(a.scale) : at::Tensor();
  const C* sc = has_prev ? scale.data_ptr<C>() : nullptr;
  const at::Tensor prev = has_prev ? a.prev.contiguous() : at::Tensor();
  const scalar_t* pv = has_prev ? prev.data_ptr<scalar_t>() : nullptr;
  const at::Tensor gw_t = a.gw.defined() ? a.gw.contiguous() : at::Tensor();
  const at::Tensor gs_t = a.gs.defined() ? a.gs.contiguous() : at::Tensor();
  const at::Tensor gl_t = a.gl.defined() ? a.gl.contiguous() : at::Tensor();
  const scalar_t* gw = gw_t.defined() ? gw_t.data_ptr<scalar_t>() : nullptr;
  const scalar_t* gs = gs_t.defined() ? gs_t.data_ptr<scalar_t>() : nullptr;
  const scalar_t* gl = gl_t.defined() ? gl_t.data_ptr<scalar_t>() : nullptr;
  const at::Tensor index_t = a.index.contiguous();
  const int32_t* index = index_t.data_ptr<int32_t>();
  const C eps = static_cast<C>(a.eps);

  at::Tensor gx = at::empty({T, H}, a.x.options());
  at::Tensor gprev = at::empty({has_prev ? T : 0, R}, a.x.options());
  scalar_t* gpv = gprev.data_ptr<scalar_t>();
  // Weight gradients in C, rounded once at the end; vector gradients in double.
  at::Tensor dWd = at::zeros({R, H}, copt), dW1 = at::zeros({R, R}, copt), dW2 = at::zeros({R, R}, copt);
  at::Tensor dWo = at::zeros({E1, R}, copt);
  std::vector<double> dvec(5 * R, 0.0);  // down_bias, fc1_bias, fc2_bias, norm_weight, states_scale
  double* dbd = dvec.data();
  double* db1 = dbd + R;
  double* db2 = dbd + 2 * R;
  double* dnw = dbd + 3 * R;
  double* dsc = dbd + 4 * R;

  const int64_t B = std::max<int64_t>(1, std::min(T, kBlockRows));
  auto buf = [&](int64_t cols) { return at::empty({B, cols}, copt); };
  at::Tensor rho = buf(R), hn = buf(R), nrm = buf(R), a1 = buf(R), g1 = buf(R), a2 = buf(R), g2 = buf(R);
  at::Tensor tmp = buf(R), d = buf(R), prob = buf(E1), dl = buf(E1), tmph = buf(H);
  std::vector<C> rstd(B);

  for (int64_t t0 = 0; t0 < T; t0 += B) {
    const int64_t n = std::min(B, T - t0);
    auto rows = [&](at::Tensor& t) { return t.narrow(0, 0, n); };
    const at::Tensor xa = a.x.narrow(0, t0, n).to(ct);
    at::Tensor rho_n = rows(rho), hn_n = rows(hn), nrm_n = rows(nrm), a1_n = rows(a1), g1_n = rows(g1);
    at::Tensor a2_n = rows(a2), g2_n = rows(g2), tmp_n = rows(tmp), d_n = rows(d), prob_n = rows(prob);
    at::Tensor dl_n = rows(dl), tmph_n = rows(tmph);
    C* rh = rho_n.data_ptr<C>();
    C* hp = hn_n.data_ptr<C>();
    C* np = nrm_n.data_ptr<C>();
    C* tp = tmp_n.data_ptr<C>();
    C* dp = d_n.data_ptr<C>();

    // ---- recompute: rho (+ EDA), RMSNorm, two GELU layers, logits, softmax ----
    at::mm_out(tmp_n, xa, Wd.t());
    at::parallel_for(0, n, grain(R), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        double ss = 0.0;
        for (int64_t j = 0; j < R; ++j) {
          C r = rnd<scalar_t>(tp[i * R + j] + bd[j]);
          if (has_prev) {
            const C pj = static_cast<C>(pv[(t0 + i) * R + j]);
            r = rnd<scalar_t>(r + rnd<scalar_t>(pj * sc[j]));
          }
          rh[i * R + j] = r;
          ss += static_cast<double>(r * r);
        }
        const C rs = C(1) / std::sqrt(static_cast<C>(ss) / static_cast<C>(R) + eps);
        rstd[i] = rs;
        for (int64_t j = 0; j < R; ++j) {
          const C h = rnd<scalar_t>(rh[i * R + j] * rs);
          hp[i * R + j] = h;
          np[i * R + j] = rnd<scalar_t>(nw[j] * h);
        }
      }
    });
    auto layer = [&](const at::Tensor& in, const at::Tensor& W, const C* b, at::Tensor& pre, at::Tensor& act) {
      at::mm_out(tmp_n, in, W.t());
      C* pr = pre.data_ptr<C>();
      C* ac = act.data_ptr<C>();
      at::parallel_for(0, n * R, grain(1), [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          pr[k] = rnd<scalar_t>(tp[k] + b[k % R]);
          ac[k] = rnd<scalar_t>(gelu(pr[k]));
        }
      });
    };
    layer(nrm_n, W1, b1, a1_n, g1_n);
    layer(g1_n, W2, b2, a2_n, g2_n);
    at::mm_out(prob_n, g2_n, Wo.t());

    // ---- softmax (rounded logits and probabilities), then its backward into the picked column ----
    C* pb = prob_n.data_ptr<C>();
    C* dlp = dl_n.data_ptr<C>();
    at::parallel_for(0, n, grain(E1 * 4), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t t = t0 + i;
        C* p = pb + i * E1;
        C mx = -INFINITY;
        for (int64_t j = 0; j < E1; ++j) mx = std::max(mx, p[j] = rnd<scalar_t>(p[j]));
        C sum = 0;
        for (int64_t j = 0; j < E1; ++j) sum += (p[j] = std::exp(p[j] - mx));
        const C inv = C(1) / sum;
        for (int64_t j = 0; j < E1; ++j) p[j] = rnd<scalar_t>(p[j] * inv);
        const int64_t e = index[t];
        const C g = (gw && e != E1 - 1) ? static_cast<C>(gw[t]) : C(0);
        const C s = e != E1 - 1 ? p[e] * g : C(0);
        for (int64_t j = 0; j < E1; ++j) {
          C v = g == C(0) ? C(0) : rnd<scalar_t>(p[j] * ((j == e ? g : C(0)) - s));
          if (gl) v = rnd<scalar_t>(v + static_cast<C>(gl[t * E1 + j]));
          dlp[i * E1 + j] = v;
        }
      }
    });

    // ---- the MLP backwards ----
    dWo.addmm_(dl_n.t(), g2_n);
    auto gelu_back = [&](const at::Tensor& dout, const at::Tensor& W, const at::Tensor& pre, const at::Tensor& in,
                         at::Tensor& dW, double* db) {
      at::mm_out(tmp_n, dout, W);  // d(activation) = round_p(dout @ W)
      const C* pr = pre.data_ptr<C>();
      at::parallel_for(0, n * R, grain(1), [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) dp[k] = rnd<scalar_t>(rnd<scalar_t>(tp[k]) * gelu_grad(pr[k]));
      });
      dW.addmm_(d_n.t(), in);
      column_sums(n, R, db, [&](int64_t i, int64_t j) { return dp[i * R + j]; });
    };
    gelu_back(dl_n, Wo, a2_n, g1_n, dW2, db2);   // d = da2
    gelu_back(d_n, W2, a1_n, nrm_n, dW1, db1);   // d = da1 (the product reads da2 before it is overwritten)
    at::mm_out(tmp_n, d_n, W1);                  // dn (unrounded)

    // ---- norm_weight, the RMSNorm, router_state's gradient, EDA ----
    column_sums(n, R, dnw, [&](int64_t i, int64_t j) {
      return rnd<scalar_t>(rnd<scalar_t>(tp[i * R + j]) * hp[i * R + j]);
    });
    at::parallel_for(0, n, grain(R), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t t = t0 + i;
        const C rs = rstd[i];
        double dot = 0.0;
        for (int64_t j = 0; j < R; ++j) {
          const C dh = rnd<scalar_t>(rnd<scalar_t>(tp[i * R + j]) * nw[j]);
          tp[i * R + j] = dh;
          dot += static_cast<double>(dh) * static_cast<double>(rh[i * R + j]);
        }
        const C coef = -(static_cast<C>(dot) / static_cast<C>(R)) * (rs * rs * rs);
        for (int64_t j = 0; j < R; ++j) {
          C g = rnd<scalar_t>(tp[i * R + j] * rs + rh[i * R + j] * coef);
          if (gs) g = rnd<scalar_t>(g + static_cast<C>(gs[t * R + j]));
          dp[i * R + j] = g;
          if (has_prev) gpv[t * R + j] = static_cast<scalar_t>(g * sc[j]);
        }
      }
    });
    if (has_prev) {
      column_sums(n, R, dsc, [&](int64_t i, int64_t j) {
        return rnd<scalar_t>(dp[i * R + j] * static_cast<C>(pv[(t0 + i) * R + j]));
      });
    }
    column_sums(n, R, dbd, [&](int64_t i, int64_t j) { return dp[i * R + j]; });
    at::mm_out(tmph_n, d_n, Wd);
    gx.narrow(0, t0, n).copy_(tmph_n);
    dWd.addmm_(d_n.t(), xa);
  }

  const auto out_vec = [&](int k) {
    at::Tensor v = at::empty({R}, a.x.options());
    scalar_t* o = v.data_ptr<scalar_t>();
    for (int64_t j = 0; j < R; ++j) o[j] = static_cast<scalar_t>(static_cast<C>(dvec[k * R + j]));
    return v;
  };
  const at::ScalarType dt = a.x.scalar_type();
  at::Tensor gscale = has_prev ? out_vec(4) : at::empty({0}, a.x.options());
  return {gx, gprev, dWd.to(dt), out_vec(0), gscale, out_vec(3), dW1.to(dt), out_vec(1),
          dW2.to(dt), out_vec(2), dWo.to(dt)};
}

Grads router_backward_cpu(const std::optional<at::Tensor>& grad_weight, const std::optional<at::Tensor>& grad_state,
                          const std::optional<at::Tensor>& grad_logits, const at::Tensor& x,
                          const std::optional<at::Tensor>& prev_state, const at::Tensor& down_weight,
                          const at::Tensor& down_bias, const std::optional<at::Tensor>& states_scale,
                          const at::Tensor& norm_weight, const at::Tensor& fc1_weight, const at::Tensor& fc1_bias,
                          const at::Tensor& fc2_weight, const at::Tensor& fc2_bias, const at::Tensor& out_weight,
                          const at::Tensor& expert_index, double eps) {
  constexpr const char* op = "zaya::router_backward";
  zaya::checks::check_cpu(op, "x", x);
  zaya::checks::check_router_backward_args(op, grad_weight, grad_state, grad_logits, x, prev_state, down_weight,
                                           down_bias, states_scale, norm_weight, fc1_weight, fc1_bias, fc2_weight,
                                           fc2_bias, out_weight, expert_index, eps, /*allow_f64=*/true);
  const at::ScalarType dt = x.scalar_type();
  const int64_t T = x.size(0), E1 = out_weight.size(0);
  BwdArgs a;
  a.gw = grad_weight.value_or(at::Tensor());
  a.gs = grad_state.value_or(at::Tensor());
  a.gl = grad_logits.value_or(at::Tensor());
  a.index = expert_index.contiguous();
  const int32_t* idx = a.index.data_ptr<int32_t>();
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK_VALUE(idx[t] >= 0 && idx[t] < E1, op, ": expert_index entries must lie in 0..", E1 - 1,
                      " (E = skip class), got ", idx[t], " at token ", t);
  a.x = x;
  a.prev = prev_state.value_or(at::Tensor());
  a.scale = states_scale.value_or(at::Tensor());
  a.down_w = down_weight;
  a.down_b = down_bias;
  a.norm_w = norm_weight;
  a.fc1_w = fc1_weight;
  a.fc1_b = fc1_bias;
  a.fc2_w = fc2_weight;
  a.fc2_b = fc2_bias;
  a.out_w = out_weight;
  a.eps = eps;
  Grads out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "zaya_router_backward_cpu",
                                  [&] { out = router_backward_impl<scalar_t>(a); });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("router_backward", &router_backward_cpu); }
