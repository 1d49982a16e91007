// CPU kernel of zaya::cca_attention_backward (FlashAttention-2 backward from the saved lse), and
// the float64 forward of zaya::cca_attention (the gradcheck mode of training; cca_attention.cpp routes
// float64 here).
//
// Maths (S = scale * q k^T over the visible keys, P = exp(S - lse), out = P v):
//   dP = dO v^T,  Delta_i = rowsum(P_i * dP_i) - dlse_i  (dlse: the gradient into lse, 0 when None),
//   dS = P * (dP - Delta),  dV = P^T dO,  dK = scale * dS^T q,  dQ = scale * dS k.
// P is recomputed from lse, never saved. FlashAttention-2 takes Delta = rowsum(dO * out) from the saved
// out; here it is rowsum(P * dP), summed in pass 2 (which visits all of a row's keys anyway: 2 more
// GEMMs per tile pair), because the forward kernel's fp32 out (fast exp2) is a few ulps off and
// dO * out carried that into dQ: 4x the reference's error at 230 keys in fp32, against 1.4x now. So
// out need not be saved: only lse is. GQA: the g query heads of KV head j are stacked as rows of one
// matrix ([rows * g, D]), so dK/dV sum over the group inside the GEMMs.
//
// Three passes (run in the order 2, 1, 3), each threaded over independent work items (at::parallel_for;
// items handed out costliest first from a shared counter), so no two threads ever add into the same
// memory and the result does not depend on the thread count:
//   1. dK, dV per (sequence b, KV head j, tile of bk keys): the item loops over the query tiles that see
//      its keys and writes its rows of a per-sequence partial buffer [sum_b L_b, nkv, D] (Acc type);
//   2. dQ per (b, j, tile of query rows): loops twice over the visible key tiles, first for the rows'
//      Delta and sum of P (see probs_and_ds: the fp32 lse's common row error is normalised away), then
//      for dS and dQ (9 GEMMs per tile pair in all instead of FA2's 5, the price of a race-free dQ
//      and of the accuracy above), and writes grad_q;
//   3. the cache gradients per cache block: a block's rows are the sum, in sequence order, of the
//      partial rows of every sequence that reads it (prefix sharing accumulates); positions no
//      sequence reads get 0.
// Acc is float for fp32/bf16/fp16 (GEMMs by the BLAS sgemm, fp32 accumulation) and double for float64.
// Memory: the partial buffers hold 2 * sum_b L_b * nkv * D Acc values (sequences with queries only).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "cca_checks.h"
#include "cca_common.h"

namespace zaya::cpu {
std::tuple<at::Tensor, at::Tensor> cca_attention_f64(const at::Tensor& q, const at::Tensor& k_cache,
                                                     const at::Tensor& v_cache, const at::Tensor& cu_seqlens_q,
                                                     const at::Tensor& seqused_k, const at::Tensor& block_table,
                                                     double scale, int64_t max_seqlen_q, int64_t max_seqlen_k);
}

namespace {

using namespace zaya::cpu;

template <typename Acc, typename T>
inline Acc widen(T x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return static_cast<Acc>(to_f(x));
  }
}

template <typename T, typename Acc>
inline T narrow(Acc x) {
  if constexpr (std::is_same_v<T, double>) {
    return x;
  } else {
    return from_f<T>(static_cast<float>(x));
  }
}

// Row-major C[M, N] = A[M, K] op(B) + beta C (op(B) = B[N, K]^T if trans_b), single-threaded.
template <typename Acc>
void gemm(bool trans_b, int64_t M, int64_t N, int64_t K, const Acc* A, int64_t lda, const Acc* B, int64_t ldb,
          Acc beta, Acc* C, int64_t ldc) {
  if constexpr (std::is_same_v<Acc, float>) {
    gemm_f32(trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
  } else {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = 0; n < N; ++n) {
        Acc s = 0;
        for (int64_t k = 0; k < K; ++k) s += A[m * lda + k] * (trans_b ? B[n * ldb + k] : B[k * ldb + n]);
        C[m * ldc + n] = (beta == Acc(0) ? Acc(0) : beta * C[m * ldc + n]) + s;
      }
    }
  }
}

template <typename Acc>
void transpose(const Acc* src, int64_t rows, int64_t cols, int64_t ld, Acc* dst) {  // dst [cols, rows]
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = src[r * ld + c];
}

template <typename T, typename Acc>
struct Params {
  int64_t T_, nq, nkv, g, D, block_size, bq, bk, cols;
  Acc scale;
  const T *q, *k, *v;
  int64_t q0, q1, q2, k0, k1, k2, k3, v0, v1, v2, v3;
  const int64_t *cu, *used, *table;
  // backward only
  const T* go;            // [T, nq * D] contiguous
  const Acc* lse;         // [nq, T] contiguous
  const Acc* glse;        // [nq, T] contiguous or null
  Acc* delta;             // [nq, T]: rowsum(P * dP) - dlse, pass 2 -> pass 1
  Acc* rnorm;             // [nq, T]: 1 / rowsum(exp(S - lse)), pass 2 -> pass 1
  std::vector<int64_t> base;  // first partial row of each sequence
  Acc *pk, *pv;           // partials [rows, nkv, D]
  T* gq;                  // [T, nq, D] contiguous
  // forward only
  T* out;
  Acc* out_lse;
};

template <typename T, typename Acc>
void load_kv_tile(const Params<T, Acc>& p, int64_t b, int64_t j, int64_t k0, int64_t kt, Acc* K, Acc* V) {
  const int64_t* table = p.table + b * p.cols;
  for (int64_t kk = 0; kk < kt; ++kk) {
    const int64_t pos = k0 + kk, blk = table[pos / p.block_size], off = pos % p.block_size;
    const T* ks = p.k + blk * p.k0 + off * p.k1 + j * p.k2;
    const T* vs = p.v + blk * p.v0 + off * p.v1 + j * p.v2;
    for (int64_t d = 0; d < p.D; ++d) {
      K[kk * p.D + d] = widen<Acc>(ks[d * p.k3]);
      V[kk * p.D + d] = widen<Acc>(vs[d * p.v3]);
    }
  }
}

// Rows r = (i - i0) * g + hh of a query tile: q, and for the backward dO, lse and Delta.
template <typename T, typename Acc>
void load_q_tile(const Params<T, Acc>& p, int64_t t0, int64_t j, int64_t rows, bool bwd, Acc* Q, Acc* dO, Acc* lse,
                 Acc* delta, Acc* rnorm = nullptr) {
  const int64_t D = p.D, g = p.g;
  for (int64_t r = 0; r < rows * g; ++r) {
    const int64_t t = t0 + r / g, h = j * g + r % g;
    const T* qs = p.q + t * p.q0 + h * p.q1;
    for (int64_t d = 0; d < D; ++d) Q[r * D + d] = widen<Acc>(qs[d * p.q2]);
    if (!bwd) continue;
    const T* gs = p.go + (t * p.nq + h) * D;
    for (int64_t d = 0; d < D; ++d) dO[r * D + d] = widen<Acc>(gs[d]);
    lse[r] = p.lse[h * p.T_ + t];
    delta[r] = p.delta[h * p.T_ + t];
    if (rnorm != nullptr) rnorm[r] = p.rnorm[h * p.T_ + t];
  }
}

// P = exp(scale * S - lse) (times rnorm when given) with the causal mask (query row r at position
// pos0 + r / g sees keys <= it), then dS = P * (dP - Delta) in dP; rowsum, when given, accumulates P.
//
// Why rnorm: lse is saved in fp32, so exp(scale * S - lse) carries a relative error of about
// |lse| * eps common to the whole row (a row of P then sums to 1 + d, d ~ 1e-6 at |lse| ~ 10), which
// the reference's softmax (normalised by its own sum) does not have; in fp32 that alone made dQ 5x the
// reference's error at 230 keys. Pass 2 sums each row (it visits all of the row's keys anyway), scales
// its dQ by 1 / rowsum, and pass 1 multiplies P by it: rows sum to 1 up to rounding, as the reference's.
template <typename Acc>
void probs_and_ds(Acc* S, Acc* dP, int64_t M, int64_t kt, int64_t g, int64_t pos0, int64_t k0, Acc scale,
                  const Acc* lse, const Acc* delta, const Acc* rnorm, Acc* rowsum) {
  for (int64_t r = 0; r < M; ++r) {
    const int64_t visible = std::clamp<int64_t>(pos0 + r / g - k0 + 1, 0, kt);
    Acc* s = S + r * kt;
    const Acc mul = rnorm != nullptr ? rnorm[r] : Acc(1);
    Acc sum = 0;
    for (int64_t c = 0; c < visible; ++c) sum += s[c] = std::exp(scale * s[c] - lse[r]) * mul;
    if (rowsum != nullptr) rowsum[r] += sum;
    for (int64_t c = visible; c < kt; ++c) s[c] = 0;
    if (dP == nullptr) continue;
    Acc* dp = dP + r * kt;
    for (int64_t c = 0; c < kt; ++c) dp[c] = s[c] * (dp[c] - delta[r]);
  }
}

template <typename Acc>
struct Scratch {
  std::vector<Acc> Q, dO, K, V, S, dP, tr, A, Bv, lse, delta, rn;
  Scratch(int64_t M, int64_t bk, int64_t D)
      : Q(M * D), dO(M * D), K(bk * D), V(bk * D), S(M * bk), dP(M * bk), tr(M * bk), A(std::max(M, bk) * D),
        Bv(std::max(M, bk) * D), lse(M), delta(M), rn(M) {}
};

struct Item {
  int64_t b, j, i0, rows, cost;  // pass 1: keys i0 .. i0 + rows - 1; pass 2 and forward: queries
};

template <typename Acc, typename F>
void run_items(std::vector<Item>& items, int64_t M, int64_t bk, int64_t D, F&& f) {
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  const int64_t n_items = static_cast<int64_t>(items.size());
  if (n_items == 0) return;
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n_items);
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    Scratch<Acc> s(M, bk, D);
    for (int64_t w = begin; w < end; ++w)
      for (int64_t i = next.fetch_add(1); i < n_items; i = next.fetch_add(1)) f(items[i], s);
  });
}

// Pass 1: dK and dV of keys it.i0 .. it.i0 + it.rows - 1 of sequence b, KV head j.
template <typename T, typename Acc>
void dkdv_item(const Params<T, Acc>& p, const Item& it, Scratch<Acc>& s) {
  const int64_t D = p.D, g = p.g, b = it.b, j = it.j, k0 = it.i0, kt = it.rows;
  const int64_t n = p.cu[b + 1] - p.cu[b], L = p.used[b], first = L - n;  // query i at position first + i
  load_kv_tile(p, b, j, k0, kt, s.K.data(), s.V.data());
  Acc *dK = s.A.data(), *dV = s.Bv.data();
  std::fill(dK, dK + kt * D, Acc(0));
  std::fill(dV, dV + kt * D, Acc(0));
  for (int64_t i0 = std::max<int64_t>(0, k0 - first); i0 < n; i0 += p.bq) {
    const int64_t rows = std::min(p.bq, n - i0), M = rows * g;
    load_q_tile(p, p.cu[b] + i0, j, rows, true, s.Q.data(), s.dO.data(), s.lse.data(), s.delta.data(), s.rn.data());
    gemm<Acc>(true, M, kt, D, s.Q.data(), D, s.K.data(), D, 0, s.S.data(), kt);
    gemm<Acc>(true, M, kt, D, s.dO.data(), D, s.V.data(), D, 0, s.dP.data(), kt);
    probs_and_ds(s.S.data(), s.dP.data(), M, kt, g, first + i0, k0, p.scale, s.lse.data(), s.delta.data(),
                 s.rn.data(), static_cast<Acc*>(nullptr));
    transpose(s.S.data(), M, kt, kt, s.tr.data());
    gemm<Acc>(false, kt, D, M, s.tr.data(), M, s.dO.data(), D, 1, dV, D);
    transpose(s.dP.data(), M, kt, kt, s.tr.data());
    gemm<Acc>(false, kt, D, M, s.tr.data(), M, s.Q.data(), D, 1, dK, D);
  }
  for (int64_t kk = 0; kk < kt; ++kk) {
    const int64_t row = (p.base[b] + k0 + kk) * p.nkv + j;
    for (int64_t d = 0; d < D; ++d) {
      p.pk[row * D + d] = dK[kk * D + d] * p.scale;
      p.pv[row * D + d] = dV[kk * D + d];
    }
  }
}

// Pass 2: dQ of queries it.i0 .. it.i0 + it.rows - 1 of sequence b, query heads of KV head j.
template <typename T, typename Acc>
void dq_item(const Params<T, Acc>& p, const Item& it, Scratch<Acc>& s) {
  const int64_t D = p.D, g = p.g, b = it.b, j = it.j, M = it.rows * g;
  const int64_t n = p.cu[b + 1] - p.cu[b], L = p.used[b], pos0 = L - n + it.i0, t0 = p.cu[b] + it.i0;
  load_q_tile(p, t0, j, it.rows, true, s.Q.data(), s.dO.data(), s.lse.data(), s.delta.data());
  Acc *dQ = s.A.data(), *rowsum = s.rn.data(), *pdp = s.delta.data();
  std::fill(dQ, dQ + M * D, Acc(0));
  std::fill(rowsum, rowsum + M, Acc(0));
  std::fill(pdp, pdp + M, Acc(0));
  // Loop 1: rowsum(P) and rowsum(P * dP) -> rnorm and Delta of each row.
  for (int64_t k0 = 0; k0 < pos0 + it.rows; k0 += p.bk) {
    const int64_t kt = std::min(p.bk, pos0 + it.rows - k0);
    load_kv_tile(p, b, j, k0, kt, s.K.data(), s.V.data());
    gemm<Acc>(true, M, kt, D, s.Q.data(), D, s.K.data(), D, 0, s.S.data(), kt);
    gemm<Acc>(true, M, kt, D, s.dO.data(), D, s.V.data(), D, 0, s.dP.data(), kt);
    probs_and_ds(s.S.data(), static_cast<Acc*>(nullptr), M, kt, g, pos0, k0, p.scale, s.lse.data(),
                 static_cast<const Acc*>(nullptr), static_cast<const Acc*>(nullptr), rowsum);
    for (int64_t r = 0; r < M; ++r) {
      Acc acc = 0;
      for (int64_t c = 0; c < kt; ++c) acc += s.S[r * kt + c] * s.dP[r * kt + c];
      pdp[r] += acc;
    }
  }
  for (int64_t r = 0; r < M; ++r) {
    const int64_t t = t0 + r / g, h = j * g + r % g;
    rowsum[r] = Acc(1) / rowsum[r];  // rnorm from here on
    pdp[r] = pdp[r] * rowsum[r] - (p.glse ? p.glse[h * p.T_ + t] : Acc(0));  // Delta from here on
    p.rnorm[h * p.T_ + t] = rowsum[r];
    p.delta[h * p.T_ + t] = pdp[r];
  }
  // Loop 2: dS (P unnormalised: dQ's rows are scaled by rnorm at the end) and dQ.
  for (int64_t k0 = 0; k0 < pos0 + it.rows; k0 += p.bk) {
    const int64_t kt = std::min(p.bk, pos0 + it.rows - k0);
    load_kv_tile(p, b, j, k0, kt, s.K.data(), s.V.data());
    gemm<Acc>(true, M, kt, D, s.Q.data(), D, s.K.data(), D, 0, s.S.data(), kt);
    gemm<Acc>(true, M, kt, D, s.dO.data(), D, s.V.data(), D, 0, s.dP.data(), kt);
    probs_and_ds(s.S.data(), s.dP.data(), M, kt, g, pos0, k0, p.scale, s.lse.data(), pdp,
                 static_cast<const Acc*>(nullptr), static_cast<Acc*>(nullptr));
    gemm<Acc>(false, M, D, kt, s.dP.data(), kt, s.K.data(), D, 1, dQ, D);
  }
  for (int64_t r = 0; r < M; ++r) {
    const int64_t t = t0 + r / g, h = j * g + r % g;
    T* dst = p.gq + (t * p.nq + h) * D;
    for (int64_t d = 0; d < D; ++d) dst[d] = narrow<T>(dQ[r * D + d] * (p.scale * rowsum[r]));
  }
}

// float64 forward item: exact two-pass softmax (row maxima over all visible keys, then P, l and O).
template <typename T, typename Acc>
void forward_item(const Params<T, Acc>& p, const Item& it, Scratch<Acc>& s) {
  const int64_t D = p.D, g = p.g, b = it.b, j = it.j, M = it.rows * g;
  const int64_t n = p.cu[b + 1] - p.cu[b], L = p.used[b], pos0 = L - n + it.i0, t0 = p.cu[b] + it.i0;
  const int64_t n_keys = pos0 + it.rows;
  load_q_tile<T, Acc>(p, t0, j, it.rows, false, s.Q.data(), nullptr, nullptr, nullptr);
  Acc *m = s.lse.data(), *l = s.delta.data(), *O = s.A.data();
  std::fill(m, m + M, -std::numeric_limits<Acc>::infinity());
  std::fill(l, l + M, Acc(0));
  std::fill(O, O + M * D, Acc(0));
  for (int pass = 0; pass < 2; ++pass) {
    for (int64_t k0 = 0; k0 < n_keys; k0 += p.bk) {
      const int64_t kt = std::min(p.bk, n_keys - k0);
      load_kv_tile(p, b, j, k0, kt, s.K.data(), s.V.data());
      gemm<Acc>(true, M, kt, D, s.Q.data(), D, s.K.data(), D, 0, s.S.data(), kt);
      for (int64_t r = 0; r < M; ++r) {
        const int64_t visible = std::clamp<int64_t>(pos0 + r / g - k0 + 1, 0, kt);
        Acc* row = s.S.data() + r * kt;
        for (int64_t c = 0; c < kt; ++c) {
          const Acc x = c < visible ? p.scale * row[c] : -std::numeric_limits<Acc>::infinity();
          if (pass == 0) {
            m[r] = std::isnan(x) || std::isnan(m[r]) ? std::numeric_limits<Acc>::quiet_NaN() : std::max(m[r], x);
          } else {
            row[c] = c < visible ? std::exp(x - m[r]) : Acc(0);
            l[r] += row[c];
          }
        }
      }
      if (pass == 1) gemm<Acc>(false, M, D, kt, s.S.data(), kt, s.V.data(), D, 1, O, D);
    }
  }
  for (int64_t r = 0; r < M; ++r) {
    const int64_t t = t0 + r / g, h = j * g + r % g;
    T* dst = p.out + t * p.nq * D + h * D;
    for (int64_t d = 0; d < D; ++d) dst[d] = narrow<T>(O[r * D + d] / l[r]);
    p.out_lse[h * p.T_ + t] = std::isinf(m[r]) ? m[r] : m[r] + std::log(l[r]);
  }
}

template <typename T, typename Acc>
Params<T, Acc> make_params(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                           const zaya::checks::CcaAttentionDims& d, const zaya::checks::CcaAttentionIndices& ix,
                           double scale) {
  Params<T, Acc> p{};
  p.T_ = d.T, p.nq = d.nq, p.nkv = d.nkv, p.g = d.nq / d.nkv, p.D = d.D, p.block_size = d.block_size;
  p.cols = d.cols;
  p.bq = std::max<int64_t>(1, 128 / p.g);
  p.bk = 64;
  p.scale = static_cast<Acc>(scale);
  p.q = q.const_data_ptr<T>(), p.q0 = q.stride(0), p.q1 = q.stride(1), p.q2 = q.stride(2);
  p.k = k_cache.const_data_ptr<T>(), p.v = v_cache.const_data_ptr<T>();
  p.k0 = k_cache.stride(0), p.k1 = k_cache.stride(1), p.k2 = k_cache.stride(2), p.k3 = k_cache.stride(3);
  p.v0 = v_cache.stride(0), p.v1 = v_cache.stride(1), p.v2 = v_cache.stride(2), p.v3 = v_cache.stride(3);
  p.cu = ix.cu.data(), p.used = ix.used.data(), p.table = ix.table.data();
  return p;
}

// Query-tile items (b, j, i0), cost rows x keys.
template <typename P>
std::vector<Item> query_items(const P& p, int64_t B) {
  std::vector<Item> items;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = p.cu[b + 1] - p.cu[b], L = p.used[b];
    for (int64_t i0 = 0; i0 < n; i0 += p.bq) {
      const int64_t rows = std::min(p.bq, n - i0), keys = L - n + i0 + rows;
      for (int64_t j = 0; j < p.nkv; ++j) items.push_back({b, j, i0, rows, rows * (keys + p.bk)});
    }
  }
  return items;
}

template <typename T, typename Acc>
void backward(Params<T, Acc>& p, int64_t B, int64_t num_blocks, T* gk, T* gv) {
  const int64_t D = p.D;
  // Partial rows: sequences with queries only (the others read nothing).
  p.base.assign(B, 0);
  int64_t rows = 0;
  for (int64_t b = 0; b < B; ++b) {
    p.base[b] = rows;
    if (p.cu[b + 1] > p.cu[b]) rows += p.used[b];
  }
  std::vector<Acc> pk(rows * p.nkv * D), pv(rows * p.nkv * D);
  p.pk = pk.data(), p.pv = pv.data();
  const int64_t M = p.bq * p.g;

  std::vector<Item> items;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = p.cu[b + 1] - p.cu[b], L = p.used[b];
    if (n == 0) continue;
    for (int64_t k0 = 0; k0 < L; k0 += p.bk) {
      const int64_t kt = std::min(p.bk, L - k0), queries = n - std::max<int64_t>(0, k0 - (L - n));
      for (int64_t j = 0; j < p.nkv; ++j) items.push_back({b, j, k0, kt, kt * (queries + p.bq)});
    }
  }
  auto qitems = query_items(p, B);  // pass 2 first: it computes rnorm, which pass 1 uses
  run_items<Acc>(qitems, M, p.bk, D, [&](const Item& it, Scratch<Acc>& s) { dq_item(p, it, s); });
  run_items<Acc>(items, M, p.bk, D, [&](const Item& it, Scratch<Acc>& s) { dkdv_item(p, it, s); });

  // Cache gradients: readers of each cache block in sequence order, (b, block index within b).
  std::vector<std::vector<std::pair<int64_t, int64_t>>> readers(num_blocks);
  for (int64_t b = 0; b < B; ++b) {
    if (p.cu[b + 1] == p.cu[b]) continue;
    for (int64_t kb = 0; kb < (p.used[b] + p.block_size - 1) / p.block_size; ++kb)
      readers[p.table[b * p.cols + kb]].push_back({b, kb});
  }
  const int64_t nkv = p.nkv, bs = p.block_size;
  at::parallel_for(0, num_blocks, 1, [&](int64_t e0, int64_t e1) {
    std::vector<Acc> ak(D), av(D);
    for (int64_t e = e0; e < e1; ++e)
      for (int64_t off = 0; off < bs; ++off)
        for (int64_t j = 0; j < nkv; ++j) {
          std::fill(ak.begin(), ak.end(), Acc(0));
          std::fill(av.begin(), av.end(), Acc(0));
          for (const auto& [b, kb] : readers[e]) {
            const int64_t pos = kb * bs + off;
            if (pos >= p.used[b]) continue;
            const Acc *sk = p.pk + ((p.base[b] + pos) * nkv + j) * D, *sv = p.pv + ((p.base[b] + pos) * nkv + j) * D;
            for (int64_t d = 0; d < D; ++d) ak[d] += sk[d], av[d] += sv[d];
          }
          T *dk = gk + ((e * bs + off) * nkv + j) * D, *dv = gv + ((e * bs + off) * nkv + j) * D;
          for (int64_t d = 0; d < D; ++d) dk[d] = narrow<T>(ak[d]), dv[d] = narrow<T>(av[d]);
        }
  });
}

template <typename F>
void dispatch_float_or_double(at::ScalarType dt, F&& f) {
  if (dt == at::kDouble) {
    f.template operator()<double, double>();
  } else {
    dispatch_float(dt, [&]<typename T_>() { f.template operator()<T_, float>(); });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cca_attention_backward_cpu(
    const at::Tensor& grad_out_in, const std::optional<at::Tensor>& grad_lse_in, const at::Tensor& q,
    const at::Tensor& k_cache, const at::Tensor& v_cache, const at::Tensor& lse_in,
    const at::Tensor& cu_seqlens_q, const at::Tensor& seqused_k, const at::Tensor& block_table, double scale,
    int64_t max_seqlen_q, int64_t max_seqlen_k) {
  using namespace zaya::checks;
  check_cpu("q", q);
  const auto d = check_cca_attention_shapes(q, k_cache, v_cache, cu_seqlens_q, seqused_k, block_table, true);
  check_cca_attention_scale(scale);
  const auto dt = q.scalar_type();
  check_cca_attention_backward_grads(d, q, grad_out_in, grad_lse_in, lse_in);
  const auto ix = check_cca_attention_indices(d, cu_seqlens_q, seqused_k, block_table, max_seqlen_q, max_seqlen_k);

  auto grad_q = at::empty({d.T, d.nq, d.D}, q.options());
  auto grad_k = at::empty(k_cache.sizes(), k_cache.options().memory_format(at::MemoryFormat::Contiguous));
  auto grad_v = at::empty(v_cache.sizes(), v_cache.options().memory_format(at::MemoryFormat::Contiguous));
  const auto go = grad_out_in.contiguous(), lse = lse_in.contiguous();
  at::Tensor glse;
  if (grad_lse_in.has_value()) glse = grad_lse_in->contiguous();
  auto delta = at::empty({d.nq, d.T}, lse.options()), rnorm = at::empty({d.nq, d.T}, lse.options());
  dispatch_float_or_double(dt, [&]<typename T_, typename Acc>() {
    auto p = make_params<T_, Acc>(q, k_cache, v_cache, d, ix, scale);
    p.go = go.const_data_ptr<T_>();
    p.lse = lse.const_data_ptr<Acc>(), p.glse = glse.defined() ? glse.const_data_ptr<Acc>() : nullptr;
    p.delta = delta.data_ptr<Acc>(), p.rnorm = rnorm.data_ptr<Acc>(), p.gq = grad_q.data_ptr<T_>();
    backward(p, d.B, d.num_blocks, grad_k.data_ptr<T_>(), grad_v.data_ptr<T_>());
  });
  return {grad_q, grad_k, grad_v};
}

}  // namespace

namespace zaya::cpu {

std::tuple<at::Tensor, at::Tensor> cca_attention_f64(const at::Tensor& q, const at::Tensor& k_cache,
                                                     const at::Tensor& v_cache, const at::Tensor& cu_seqlens_q,
                                                     const at::Tensor& seqused_k, const at::Tensor& block_table,
                                                     double scale, int64_t max_seqlen_q, int64_t max_seqlen_k) {
  const auto d = zaya::checks::check_cca_attention_shapes(q, k_cache, v_cache, cu_seqlens_q, seqused_k, block_table,
                                                          true);
  zaya::checks::check_cca_attention_scale(scale);
  const auto ix = zaya::checks::check_cca_attention_indices(d, cu_seqlens_q, seqused_k, block_table, max_seqlen_q,
                                                            max_seqlen_k);
  auto out = at::empty({d.T, d.nq * d.D}, q.options());
  auto lse = at::empty({d.nq, d.T}, q.options());
  auto p = make_params<double, double>(q, k_cache, v_cache, d, ix, scale);
  p.out = out.data_ptr<double>(), p.out_lse = lse.data_ptr<double>();
  auto items = query_items(p, d.B);
  run_items<double>(items, p.bq * p.g, p.bk, d.D,
                    [&](const Item& it, Scratch<double>& s) { forward_item(p, it, s); });
  return {out, lse};
}

}  // namespace zaya::cpu

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("cca_attention_backward", &cca_attention_backward_cpu); }
