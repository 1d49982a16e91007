// CPU kernel of zaya::cca_qkv_functional_backward: the gradient of cca_qkv_functional (autograd of
// zaya_ops.reference.cca_qkv_functional) through RoPE, the QK norm (its clamp included), the key
// temperature, the q/k residual means, the two-stage causal conv with its left history, and the delayed
// value shift.
//
// Work items are (chunk of kChunk packed tokens) x (KV head j), like the forward's: an item owns the g
// query heads of group j and key head j, i.e. g + 1 of the grouped conv's channel groups, so the input
// gradients of its channels are written by it alone. It walks its chunk in blocks of kTok tokens:
//   1. recompute (nothing of the forward is saved but its inputs): the depthwise taps u[t-1], u[t] and
//      the grouped conv y (one GEMM per channel group), q and k before their norms, for the block's
//      tokens and the two after it (their conv-output gradients reach the block's inputs);
//   2. per token: RoPE, temperature and norm backward -> gy (gradient of q/k before the norm), the
//      residual paths' share of d qt, d kt;
//   3. ga = gy W (one GEMM per group): the gradient of each tap; the depthwise conv's gradient, the
//      conv_state gradient at each sequence's first token; gW += gy^T A, the biases, the temperature.
// Sequences may start and end anywhere in a block (decode batches are one item per KV head).
// Arithmetic in fp32 (double for float64) without the forward's intermediate roundings (closer to the
// exact gradient than autograd of the reference in the same dtype); inputs are read in their dtype and
// each gradient is rounded once. Parameter gradients: each item accumulates its chunk's sum into its
// own partial row (chunks are fixed, not per thread; the conv weight's through the compute-type GEMM,
// the vectors' in double), and the partials are summed over chunks in order in double: the result does
// not depend on the thread count.
// The value gradients are a reshuffle of grad_v (v copies vc, vd and value_state).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <tuple>
#include <type_traits>

#include "arg_checks.h"
#include "cca_common.h"
#include "cca_qkv_checks.h"

namespace {

using namespace zaya::cpu;
using namespace zaya::checks;

constexpr int64_t kTok = 64;     // tokens per block (the scratch of a block stays in L2)
constexpr int64_t kChunk = 256;  // tokens per item: one partial row of parameter gradients each

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <typename T>
ZAYA_INLINE acc_t<T> ld(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return to_f(x);
  }
}

template <typename T>
ZAYA_INLINE T st(acc_t<T> x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return from_f<T>(x);
  }
}

// Row-major C[M, N] = A[M, K] op(B) + beta C (see gemm_f32); float64: plain loops (gradcheck sizes).
template <typename A>
void gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const A* a, int64_t lda, const A* b, int64_t ldb, A beta,
          A* c, int64_t ldc) {
  if constexpr (std::is_same_v<A, float>) {
    gemm_f32(trans_b, M, N, K, a, lda, b, ldb, beta, c, ldc);
  } else {
    for (int64_t i = 0; i < M; ++i) {
      A* ci = c + i * ldc;
      for (int64_t n = 0; n < N; ++n) ci[n] = beta == A(0) ? A(0) : ci[n] * beta;
      for (int64_t k = 0; k < K; ++k) {
        const A aik = a[i * lda + k];
        if (trans_b) {
          for (int64_t n = 0; n < N; ++n) ci[n] += aik * b[n * ldb + k];
        } else {
          for (int64_t n = 0; n < N; ++n) ci[n] += aik * b[k * ldb + n];
        }
      }
    }
  }
}

template <typename T>
struct BwdParams {
  using A = acc_t<T>;
  int64_t T_, nq, nkv, D, g, half, rot, C;
  const T *qt, *kt;
  int64_t qt_rs, kt_rs;
  const T *gq, *gk;                          // [T, nq, D], [T, nkv, D] contiguous
  const A *dw_w, *dw_b, *gw, *gb, *temp;     // [C, 2], [C], [C, 2D], [C], [nkv] in the compute type
  const A* cs;                               // [P, rot] cos | sin
  const int64_t *pos, *cu;
  const int32_t* tok_seq;
  const T* conv_state;                       // [B, C, 2], any strides
  int64_t st0, st1, st2;
  T *g_qt, *g_kt, *g_state;                  // [T, nq*D], [T, nkv*D], [B, C, 2] contiguous (g_state zeroed)
  A* pw;                                     // partial rows per chunk: [C*2D] (GEMM sums, compute type)
  double *pgb, *pdw, *pdb, *ptemp;           // and [C], [C*2], [C], [nkv] (per-token sums, double)
  A eps, sqrt_d;
};

// z[t + k] of channel c for token t, local index i of sequence b (conv_state before the start).
template <typename T>
ZAYA_INLINE acc_t<T> z_at(const BwdParams<T>& p, int64_t t, int64_t i, int64_t b, int64_t c, int64_t k) {
  const int64_t qw = p.nq * p.D;
  if (i + k >= 0) return c < qw ? ld(p.qt[(t + k) * p.qt_rs + c]) : ld(p.kt[(t + k) * p.kt_rs + (c - qw)]);
  return ld(p.conv_state[b * p.st0 + c * p.st1 + (2 + i + k) * p.st2]);
}

// Gradient of x * (sqrt(D) / max(||x||, eps)) (then * temp when temp != 1), RoPE on the first rot
// dims, given x (the head before the norm) and go (the gradient of the rotated head). Returns in gx;
// adds d temp (sum of go' * x_hat) to *gtemp when it is not null.
template <typename A>
ZAYA_INLINE void norm_rope_backward(const A* __restrict x, const A* __restrict go, int64_t D, int64_t half,
                                    const A* __restrict cs, A eps, A sqrt_d, A temp, A* gtemp, A* __restrict gx) {
  const A* c = cs;
  const A* s = cs + half;
  for (int64_t d = 0; d < half; ++d) {
    gx[d] = go[d] * c[d] + go[d + half] * s[d];
    gx[d + half] = go[d + half] * c[d] - go[d] * s[d];
  }
  for (int64_t d = 2 * half; d < D; ++d) gx[d] = go[d];
  A ss = 0;
  for (int64_t d = 0; d < D; ++d) ss += x[d] * x[d];
  const A n = std::sqrt(ss);
  const A r = sqrt_d / std::max(n, eps);
  if (gtemp != nullptr) {
    A acc = 0;
    for (int64_t d = 0; d < D; ++d) acc += gx[d] * x[d];
    *gtemp += acc * r;
    for (int64_t d = 0; d < D; ++d) gx[d] *= temp;
  }
  // clamp_min passes the gradient for ||x|| >= eps (as torch's); the norm's own is 0 at x = 0.
  if (n >= eps && n > 0) {
    A dot = 0;
    for (int64_t d = 0; d < D; ++d) dot += x[d] * gx[d];
    const A k = dot / (n * n);
    for (int64_t d = 0; d < D; ++d) gx[d] = r * (gx[d] - x[d] * k);
  } else {
    for (int64_t d = 0; d < D; ++d) gx[d] *= r;
  }
}

struct Scratch {
  std::vector<char> buf;
  template <typename A>
  A* get(size_t n) {
    buf.resize(n * sizeof(A));
    return reinterpret_cast<A*>(buf.data());
  }
};

// Tokens [t0, t1) (one block of a chunk) of KV group j; `chunk` picks the partial rows.
template <typename T>
void bwd_block(const BwdParams<T>& p, int64_t t0, int64_t t1, int64_t j, int64_t chunk, acc_t<T>* S) {
  using A = acc_t<T>;
  const int64_t D = p.D, D2 = 2 * D, g = p.g, G = g + 1, nt = t1 - t0;
  const int64_t m = std::min(t1 + 2, p.T_) - t0;  // rows recomputed: the block and two after it
  auto chan0 = [&](int64_t s) { return (s < g ? j * g + s : p.nq + j) * D; };
  A* Ab = S;                      // [m][G][2D] taps
  A* Y = Ab + (kTok + 2) * G * D2;  // [m][G][D] grouped conv (no bias)
  A* GY = Y + (kTok + 2) * G * D;   // [m][G][D] gradient of the conv output
  A* GA = GY + (kTok + 2) * G * D;  // [m][G][2D] gradient of the taps
  A* GYt = GA + (kTok + 2) * G * D2;  // [G][D][kTok] GY of the block's rows, transposed
  A* GZ = GYt + G * D * kTok;         // [nt][G][D] gradient of qt/kt of the block
  A* x = GZ + kTok * G * D;           // [D]
  A* go = x + D;                      // [D]
  A* kres = go + D;                   // [D]
  A* pw = p.pw + chunk * p.C * D2;
  double* pgb = p.pgb + chunk * p.C;
  double* pdw = p.pdw + chunk * p.C * 2;
  double* pdb = p.pdb + chunk * p.C;
  double& ptemp = p.ptemp[chunk * p.nkv + j];

  // 1. taps and grouped conv.
  for (int64_t r = 0; r < m; ++r) {
    const int64_t t = t0 + r, b = p.tok_seq[t], i = t - p.cu[b];
    for (int64_t s = 0; s < G; ++s) {
      const int64_t c0 = chan0(s);
      A* a = Ab + (r * G + s) * D2;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = c0 + d;
        const A z2 = z_at(p, t, i, b, c, -2), z1 = z_at(p, t, i, b, c, -1), z0 = z_at(p, t, i, b, c, 0);
        const A w0 = p.dw_w[2 * c], w1 = p.dw_w[2 * c + 1], bb = p.dw_b[c];
        a[2 * d] = w0 * z2 + w1 * z1 + bb;
        a[2 * d + 1] = w0 * z1 + w1 * z0 + bb;
      }
    }
  }
  for (int64_t s = 0; s < G; ++s)
    gemm<A>(true, m, D, D2, Ab + s * D2, G * D2, p.gw + chan0(s) * D2, D2, A(0), Y + s * D, G * D);

  // 2. per token: norm/RoPE backward, residual paths.
  const A inv_g = A(1) / static_cast<A>(g);
  for (int64_t r = 0; r < m; ++r) {
    const int64_t t = t0 + r;
    const bool own = r < nt;
    const A* cs = p.cs + p.pos[t] * p.rot;
    const T* ktr = p.kt + t * p.kt_rs + j * D;
    std::fill(kres, kres + D, A(0));
    for (int64_t hh = 0; hh < g; ++hh) {
      const int64_t h = j * g + hh;
      const T* qtr = p.qt + t * p.qt_rs + h * D;
      const A* y = Y + (r * G + hh) * D;
      const A* bias = p.gb + h * D;
      for (int64_t d = 0; d < D; ++d) {
        const A rq = (ld(qtr[d]) + ld(ktr[d])) * A(0.5);
        kres[d] += rq;
        x[d] = y[d] + bias[d] + rq;
      }
      const T* gqr = p.gq + (t * p.nq + h) * D;
      for (int64_t d = 0; d < D; ++d) go[d] = ld(gqr[d]);
      norm_rope_backward<A>(x, go, D, p.half, cs, p.eps, p.sqrt_d, A(1), nullptr, GY + (r * G + hh) * D);
    }
    {
      const A* y = Y + (r * G + g) * D;
      const A* bias = p.gb + (p.nq + j) * D;
      for (int64_t d = 0; d < D; ++d) x[d] = y[d] + bias[d] + kres[d] * inv_g;
      const T* gkr = p.gk + (t * p.nkv + j) * D;
      for (int64_t d = 0; d < D; ++d) go[d] = ld(gkr[d]);
      A gt = 0;
      norm_rope_backward<A>(x, go, D, p.half, cs, p.eps, p.sqrt_d, p.temp[j], &gt, GY + (r * G + g) * D);
      if (own) ptemp += gt;
    }
    if (!own) continue;
    // residual paths: rq_h = (qt_h + kt_j) / 2 reaches q_h and, through the group mean, k_j.
    const A* gyk = GY + (r * G + g) * D;
    A* gzk = GZ + (r * G + g) * D;
    std::fill(gzk, gzk + D, A(0));
    for (int64_t hh = 0; hh < g; ++hh) {
      const A* gyq = GY + (r * G + hh) * D;
      A* gzq = GZ + (r * G + hh) * D;
      for (int64_t d = 0; d < D; ++d) {
        const A grq = (gyq[d] + gyk[d] * inv_g) * A(0.5);
        gzq[d] = grq;
        gzk[d] += grq;
      }
    }
    for (int64_t s = 0; s < G; ++s) {
      const A* gy = GY + (r * G + s) * D;
      double* gb = pgb + chan0(s);
      A* gyt = GYt + s * D * kTok + r;
      for (int64_t d = 0; d < D; ++d) {
        gb[d] += gy[d];
        gyt[d * kTok] = gy[d];
      }
    }
  }

  // 3. tap gradients, depthwise conv, conv_state, grouped-conv weights.
  for (int64_t s = 0; s < G; ++s)
    gemm<A>(false, m, D2, D, GY + s * D, G * D, p.gw + chan0(s) * D2, D2, A(0), GA + s * D2, G * D2);
  for (int64_t r = 0; r < nt; ++r) {
    const int64_t t = t0 + r, b = p.tok_seq[t], i = t - p.cu[b], n = p.cu[b + 1] - p.cu[b];
    for (int64_t s = 0; s < G; ++s) {
      const int64_t c0 = chan0(s);
      const A* ga0 = GA + (r * G + s) * D2;
      const A* ga1 = GA + ((r + 1) * G + s) * D2;  // read only when token t+1 is in the sequence
      const A* ga2 = GA + ((r + 2) * G + s) * D2;  // and t+2
      A* gz = GZ + (r * G + s) * D;
      for (int64_t d = 0; d < D; ++d) {
        const int64_t c = c0 + d;
        const A w0 = p.dw_w[2 * c], w1 = p.dw_w[2 * c + 1];
        // gu[i] (the tap u at this token: y[t] reads it as u[t], y[t+1] as u[t]) and gu[i+1].
        const A gu = ga0[2 * d + 1] + (i + 1 < n ? ga1[2 * d] : A(0));
        const A gu_next = i + 1 < n ? ga1[2 * d + 1] + (i + 2 < n ? ga2[2 * d] : A(0)) : A(0);
        gz[d] += w1 * gu + w0 * gu_next;
        pdb[c] += gu;
        pdw[2 * c] += gu * z_at(p, t, i, b, c, -1);
        pdw[2 * c + 1] += gu * z_at(p, t, i, b, c, 0);
        if (i == 0) {  // u[-1] from the history: y[start] reads it as u[t-1]
          const A gm = ga0[2 * d];
          pdb[c] += gm;
          pdw[2 * c] += gm * z_at(p, t, i, b, c, -2);
          pdw[2 * c + 1] += gm * z_at(p, t, i, b, c, -1);
          T* hs = p.g_state + (b * p.C + c) * 2;
          hs[0] = st<T>(w0 * gm);
          hs[1] = st<T>(w1 * gm + w0 * gu);
        }
      }
    }
    for (int64_t hh = 0; hh < g; ++hh) {
      const A* gz = GZ + (r * G + hh) * D;
      T* o = p.g_qt + t * p.nq * D + (j * g + hh) * D;
      for (int64_t d = 0; d < D; ++d) o[d] = st<T>(gz[d]);
    }
    const A* gz = GZ + (r * G + g) * D;
    T* o = p.g_kt + t * p.nkv * D + j * D;
    for (int64_t d = 0; d < D; ++d) o[d] = st<T>(gz[d]);
  }
  for (int64_t s = 0; s < G; ++s)
    gemm<A>(false, D, D2, nt, GYt + s * D * kTok, kTok, Ab + s * D2, G * D2, A(1), pw + chan0(s) * D2, D2);
}

template <typename T>
size_t scratch_elems(const BwdParams<T>& p) {
  const int64_t D = p.D, G = p.g + 1;
  return (kTok + 2) * G * (2 * D + D + D + 2 * D) + G * D * kTok + kTok * G * D + 3 * D;
}

// Sums the partial rows [chunks][n] in chunk order (double) into out (n elements of T).
template <typename T, typename P>
void reduce_chunks(const P* partial, int64_t chunks, int64_t n, T* out) {
  at::parallel_for(0, n, 4096, [&](int64_t e0, int64_t e1) {
    for (int64_t e = e0; e < e1; ++e) {
      double acc = 0;
      for (int64_t k = 0; k < chunks; ++k) acc += static_cast<double>(partial[k * n + e]);
      out[e] = st<T>(static_cast<acc_t<T>>(acc));
    }
  });
}

using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                         at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grads cca_qkv_functional_backward_cpu(const at::Tensor& grad_q, const at::Tensor& grad_k, const at::Tensor& grad_v,
                                      const at::Tensor& qt, const at::Tensor& kt, const at::Tensor& conv_dw_weight,
                                      const at::Tensor& conv_dw_bias, const at::Tensor& conv_g_weight,
                                      const at::Tensor& conv_g_bias, const at::Tensor& qk_temp,
                                      const at::Tensor& cos_sin, const at::Tensor& positions,
                                      const at::Tensor& cu_seqlens, const at::Tensor& conv_state, double qk_norm_eps) {
  constexpr const char* op = "zaya::cca_qkv_functional_backward";
  check_cpu(op, "qt", qt);
  const auto dims = check_cca_qkv_functional_backward_args(grad_q, grad_k, grad_v, qt, kt, conv_dw_weight,
                                                           conv_dw_bias, conv_g_weight, conv_g_bias, qk_temp,
                                                           cos_sin, positions, cu_seqlens, conv_state, qk_norm_eps);
  const int64_t T = dims.T, D = dims.D, nq = dims.nq, nkv = dims.nkv, C = dims.C, hv = dims.hv, B = dims.B;
  const int64_t P = dims.P, rot = dims.rot;
  const auto dt = qt.scalar_type();
  const std::vector<int64_t> cu = host_ints(cu_seqlens);
  check_cu_seqlens_values("cu_seqlens", cu, T);
  const std::vector<int64_t> pos = host_ints(positions);
  for (int64_t t = 0; t < T; ++t)
    TORCH_CHECK_VALUE(pos[t] >= 0 && pos[t] < P, op, ": positions[", t, "] = ", pos[t], " is outside the ", P,
                      " rows of cos_sin");

  auto opts = qt.options();
  at::Tensor g_qt = at::empty({T, nq * D}, opts), g_kt = at::empty({T, nkv * D}, opts);
  at::Tensor g_state = at::zeros({B, C, 2}, opts);
  at::Tensor g_dw_w = at::empty({C, 1, 2}, opts), g_dw_b = at::empty({C}, opts);
  at::Tensor g_gw = at::empty({C, D, 2}, opts), g_gb = at::empty({C}, opts), g_temp = at::empty({nkv}, opts);

  // Values: v[t] = [vc[t], vd[t-1] (value_state[b] at a sequence's first token)].
  at::Tensor gv = grad_v.reshape({T, 2 * hv});
  at::Tensor g_vc = gv.narrow(1, 0, hv).contiguous();
  at::Tensor g_vd = at::zeros({T, hv}, opts), g_vs = at::zeros({B, hv}, opts);
  {
    std::vector<int64_t> src_vd, dst_vd, src_vs, dst_vs;
    for (int64_t b = 0; b < B; ++b) {
      if (cu[b + 1] == cu[b]) continue;
      src_vs.push_back(cu[b]), dst_vs.push_back(b);
      for (int64_t t = cu[b]; t + 1 < cu[b + 1]; ++t) src_vd.push_back(t + 1), dst_vd.push_back(t);
    }
    auto idx = [](const std::vector<int64_t>& v) { return at::tensor(v, at::TensorOptions().dtype(at::kLong)); };
    const at::Tensor delayed = gv.narrow(1, hv, hv);
    if (!src_vd.empty()) g_vd.index_copy_(0, idx(dst_vd), delayed.index_select(0, idx(src_vd)));
    if (!src_vs.empty()) g_vs.index_copy_(0, idx(dst_vs), delayed.index_select(0, idx(src_vs)));
  }

  if (T == 0) {
    for (auto* t : {&g_dw_w, &g_dw_b, &g_gw, &g_gb, &g_temp}) t->zero_();
    return {g_qt, g_kt, g_vc, g_vd, g_dw_w, g_dw_b, g_gw, g_gb, g_temp, g_state, g_vs};
  }

  std::vector<int32_t> tok_seq(T);
  for (int64_t b = 0; b < B; ++b) std::fill(tok_seq.begin() + cu[b], tok_seq.begin() + cu[b + 1], int32_t(b));
  const auto cdt = dt == at::kDouble ? at::kDouble : at::kFloat;
  auto wide = [&](const at::Tensor& t) { return t.to(cdt).contiguous(); };
  const at::Tensor dw_w = wide(conv_dw_weight), dw_b = wide(conv_dw_bias), gw = wide(conv_g_weight);
  const at::Tensor gb = wide(conv_g_bias), temp = wide(qk_temp), cs = wide(cos_sin);
  auto unit_cols = [](const at::Tensor& t) { return t.stride(1) == 1 ? t : t.contiguous(); };
  const at::Tensor qt_ = unit_cols(qt), kt_ = unit_cols(kt);
  const at::Tensor gq = grad_q.contiguous(), gk = grad_k.contiguous();
  const int64_t chunks = (T + kChunk - 1) / kChunk;
  at::Tensor partial_w = at::zeros({chunks * C * 2 * D}, opts.dtype(cdt));
  at::Tensor partial = at::zeros({chunks * (C + 2 * C + C + nkv)}, opts.dtype(at::kDouble));

  auto run = [&]<typename T_>() {
    using A = acc_t<T_>;
    BwdParams<T_> p{};
    p.T_ = T, p.nq = nq, p.nkv = nkv, p.D = D, p.g = nq / nkv, p.half = rot / 2, p.rot = rot, p.C = C;
    p.qt = qt_.const_data_ptr<T_>(), p.kt = kt_.const_data_ptr<T_>();
    p.qt_rs = qt_.stride(0), p.kt_rs = kt_.stride(0);
    p.gq = gq.const_data_ptr<T_>(), p.gk = gk.const_data_ptr<T_>();
    p.dw_w = dw_w.const_data_ptr<A>(), p.dw_b = dw_b.const_data_ptr<A>(), p.gw = gw.const_data_ptr<A>();
    p.gb = gb.const_data_ptr<A>(), p.temp = temp.const_data_ptr<A>(), p.cs = cs.const_data_ptr<A>();
    p.pos = pos.data(), p.cu = cu.data(), p.tok_seq = tok_seq.data();
    p.conv_state = conv_state.const_data_ptr<T_>();
    p.st0 = conv_state.stride(0), p.st1 = conv_state.stride(1), p.st2 = conv_state.stride(2);
    p.g_qt = g_qt.mutable_data_ptr<T_>(), p.g_kt = g_kt.mutable_data_ptr<T_>();
    p.g_state = g_state.mutable_data_ptr<T_>();
    // The partials, each [chunks][n]: w [C*2D], gb [C], dw [2C], db [C], temp [nkv].
    p.pw = partial_w.mutable_data_ptr<A>();
    p.pgb = partial.mutable_data_ptr<double>();
    p.pdw = p.pgb + chunks * C;
    p.pdb = p.pdw + chunks * 2 * C;
    p.ptemp = p.pdb + chunks * C;
    p.eps = static_cast<A>(qk_norm_eps), p.sqrt_d = static_cast<A>(std::sqrt(static_cast<double>(D)));
    const size_t scratch = scratch_elems(p);
    at::parallel_for(0, chunks * nkv, 1, [&](int64_t begin, int64_t end) {
      std::vector<A> S(scratch);
      for (int64_t it = begin; it < end; ++it) {
        const int64_t j = it / chunks, chunk = it % chunks;
        const int64_t c1 = std::min(T, (chunk + 1) * kChunk);
        for (int64_t t0 = chunk * kChunk; t0 < c1; t0 += kTok)
          bwd_block<T_>(p, t0, std::min(c1, t0 + kTok), j, chunk, S.data());
      }
    });
    reduce_chunks<T_>(p.pw, chunks, C * 2 * D, g_gw.mutable_data_ptr<T_>());
    reduce_chunks<T_>(p.pgb, chunks, C, g_gb.mutable_data_ptr<T_>());
    reduce_chunks<T_>(p.pdw, chunks, 2 * C, g_dw_w.mutable_data_ptr<T_>());
    reduce_chunks<T_>(p.pdb, chunks, C, g_dw_b.mutable_data_ptr<T_>());
    reduce_chunks<T_>(p.ptemp, chunks, nkv, g_temp.mutable_data_ptr<T_>());
  };
  if (dt == at::kDouble) {
    run.template operator()<double>();
  } else {
    dispatch_float(dt, run);
  }
  return {g_qt, g_kt, g_vc, g_vd, g_dw_w, g_dw_b, g_gw, g_gb, g_temp, g_state, g_vs};
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("cca_qkv_functional_backward", &cca_qkv_functional_backward_cpu); }
