// CPU kernel of zaya::cca_attention: causal GQA attention over the paged KV cache (spec step 8),
// flash-style (online softmax in fp32, never materialising the [n, L] score matrix).
//
// Work items are (sequence b, KV head j, block of query rows). An item stacks the g query heads of
// group j for its queries into one [g * nq_rows, D] fp32 matrix, so every K/V tile it gathers from
// the cache (converted to fp32 once) serves all g heads. Per key tile: S = Q K^T and O += P V are
// fp32 GEMMs; the softmax runs in base 2 on 8-wide vectors (Q is pre-scaled by scale * log2(e)).
// Items are handed out longest-first from a shared counter, since causal items differ in cost.
//
// Limits: q, k_cache and v_cache in fp32, bf16 or fp16 with any strides (float64: the exact
// gradcheck-mode kernel of cca_attention_backward.cpp); any head dim D >= 1 and
// nq a multiple of nkv; the index tensors are read on the host (int32, any layout).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <numeric>

#include "cca_checks.h"
#include "cca_common.h"

namespace zaya::cpu {
// float64 (gradcheck mode), in cca_attention_backward.cpp.
std::tuple<at::Tensor, at::Tensor> cca_attention_f64(const at::Tensor& q, const at::Tensor& k_cache,
                                                     const at::Tensor& v_cache, const at::Tensor& cu_seqlens_q,
                                                     const at::Tensor& seqused_k, const at::Tensor& block_table,
                                                     double scale, int64_t max_seqlen_q, int64_t max_seqlen_k);
}  // namespace zaya::cpu

namespace {

using namespace zaya::cpu;

constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <typename T>
struct AttnParams {
  int64_t nq, nkv, g, D, block_size, bq, bk;  // bq queries and bk keys per tile
  const T* q;
  int64_t q0, q1, q2;
  const T *k_cache, *v_cache;
  int64_t k0, k1, k2, k3, v0, v1, v2, v3;
  const int64_t *cu, *used, *table;  // host copies
  int64_t table_cols;
  float scale_log2;  // scale * log2(e)
  T* out;            // [T, nq * D]
  float* lse;        // [nq, T]
  int64_t T_;
};

struct Item {
  int64_t b, j, i0, rows, cost;  // queries i0 .. i0 + rows - 1 of sequence b, KV head j
};

// Per-thread scratch of one item.
struct Scratch {
  std::vector<float> Q, O, K, V, S, m, l;
  Scratch(int64_t M, int64_t bk, int64_t D)
      : Q(M * D), O(M * D), K(bk * D), V(bk * D), S(M * bk), m(M), l(M) {}
};

// Online-softmax step for M rows of scores S (ld columns, n of them, n a multiple of 8, masked
// entries -inf): P = 2^(S - m_new) in place, l = l * 2^(m - m_new) + rowsum(P), O rows rescaled.
// The running maximum propagates NaN: a NaN score makes the row's m, l and O NaN for good (row_lse).
ZAYA_CLONES void softmax_tile(float* S, int64_t M, int64_t n, int64_t ld, float* m, float* l, float* O,
                              int64_t D) {
  using namespace vec;
  for (int64_t r = 0; r < M; ++r) {
    float* row = S + r * ld;
    f8 mx = splat(kNegInf);
    for (int64_t c = 0; c < n; c += 8) mx = vmax(mx, load(row + c));
    const float m_new = max_nan(m[r], hmax(mx));
    if (m_new == kNegInf) {  // no visible key yet (cannot happen: key 0 is seen first)
      std::fill(row, row + n, 0.f);
      continue;
    }
    const f8 mv = splat(m_new);
    f8 sum = splat(0.f);
    for (int64_t c = 0; c < n; c += 8) {
      const f8 p = vec::exp2(load(row + c) - mv);
      store(row + c, p);
      sum += p;
    }
    const float alpha = vec::exp2(splat(m[r] - m_new))[0];
    l[r] = l[r] * alpha + hsum(sum);
    m[r] = m_new;
    if (alpha != 1.f) {
      float* o = O + r * D;
      for (int64_t d = 0; d < D; ++d) o[d] *= alpha;
    }
  }
}

// A row's lse in natural log from its base-2 running maximum m and sum l, with the reference's special
// values (torch.logsumexp over the visible scores): NaN when a score was NaN (m is NaN), +inf when one
// was +inf and none NaN (l is NaN then: 2^(inf - inf)), -inf when none was above -inf (l = 0). The
// row's out is NaN in all three cases, as the reference's softmax makes it.
inline float row_lse(float m, float l) {
  return m == std::numeric_limits<float>::infinity() ? m : l == 0.f ? kNegInf : (m + std::log2(l)) * kLn2;
}

template <typename T>
void attend_item(const AttnParams<T>& p, const Item& it, Scratch& s) {
  const int64_t D = p.D, g = p.g, M = it.rows * g, bk = p.bk, ld = bk;
  const int64_t n = p.cu[it.b + 1] - p.cu[it.b], L = p.used[it.b];
  const int64_t t0 = p.cu[it.b] + it.i0;  // first query token of the item
  const int64_t pos0 = L - n + it.i0;     // its position; row r is query r / g at pos0 + r / g
  const int64_t* table = p.table + it.b * p.table_cols;
  float *Q = s.Q.data(), *O = s.O.data(), *K = s.K.data(), *V = s.V.data(), *S = s.S.data();
  float *m = s.m.data(), *l = s.l.data();

  for (int64_t r = 0; r < M; ++r) {
    const int64_t t = t0 + r / g, h = it.j * g + r % g;
    row_to_f32(p.q + t * p.q0 + h * p.q1, p.q2, D, p.scale_log2, Q + r * D);
  }
  std::fill(O, O + M * D, 0.f);
  std::fill(m, m + M, kNegInf);
  std::fill(l, l + M, 0.f);

  const int64_t n_keys = pos0 + it.rows;  // keys 0 .. last query's position
  for (int64_t k0 = 0; k0 < n_keys; k0 += bk) {
    const int64_t kt = std::min(bk, n_keys - k0), kt8 = (kt + 7) / 8 * 8;
    for (int64_t kk = 0; kk < kt; ++kk) {
      const int64_t pos = k0 + kk, blk = table[pos / p.block_size], off = pos % p.block_size;
      row_to_f32(p.k_cache + blk * p.k0 + off * p.k1 + it.j * p.k2, p.k3, D, 1.f, K + kk * D);
      row_to_f32(p.v_cache + blk * p.v0 + off * p.v1 + it.j * p.v2, p.v3, D, 1.f, V + kk * D);
    }
    gemm_f32(true, M, kt, D, Q, D, K, D, 0.f, S, ld);
    // Causal mask (only tiles reaching past the first query's position) and padding to 8 columns.
    const bool diagonal = k0 + kt - 1 > pos0;
    for (int64_t r = 0; r < M; ++r) {
      const int64_t visible = diagonal ? std::clamp<int64_t>(pos0 + r / g - k0 + 1, 0, kt) : kt;
      std::fill(S + r * ld + visible, S + r * ld + kt8, kNegInf);
    }
    softmax_tile(S, M, kt8, ld, m, l, O, D);
    gemm_f32(false, M, D, kt, S, ld, V, D, 1.f, O, D);
  }

  for (int64_t r = 0; r < M; ++r) {
    const int64_t t = t0 + r / g, h = it.j * g + r % g;
    const float inv = 1.f / l[r];
    T* o = p.out + t * p.nq * D + h * D;
    const float* src = O + r * D;
    for (int64_t d = 0; d < D; ++d) o[d] = from_f<T>(src[d] * inv);
    p.lse[h * p.T_ + t] = row_lse(m[r], l[r]);
  }
}

template <typename T>
void run_attention(const AttnParams<T>& p, int64_t B) {
  // Items, costliest first (rows x keys), shared out dynamically.
  std::vector<Item> items;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = p.cu[b + 1] - p.cu[b], L = p.used[b];
    for (int64_t i0 = 0; i0 < n; i0 += p.bq) {
      const int64_t rows = std::min(p.bq, n - i0), keys = L - n + i0 + rows;
      for (int64_t j = 0; j < p.nkv; ++j) items.push_back({b, j, i0, rows, rows * (keys + p.bk)});
    }
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.cost > b.cost; });
  const int64_t n_items = static_cast<int64_t>(items.size());
  std::atomic<int64_t> next{0};
  const int64_t workers = std::min<int64_t>(at::get_num_threads(), n_items);
  at::parallel_for(0, workers, 1, [&](int64_t begin, int64_t end) {
    Scratch s(p.bq * p.g, p.bk, p.D);
    for (int64_t w = begin; w < end; ++w) {  // one worker per thread; each takes items until none is left
      for (int64_t i = next.fetch_add(1); i < n_items; i = next.fetch_add(1)) attend_item<T>(p, items[i], s);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> cca_attention_cpu(const at::Tensor& q, const at::Tensor& k_cache,
                                                     const at::Tensor& v_cache, const at::Tensor& cu_seqlens_q,
                                                     const at::Tensor& seqused_k, const at::Tensor& block_table,
                                                     double scale, int64_t max_seqlen_q, int64_t max_seqlen_k) {
  check_cpu("q", q);
  if (q.scalar_type() == at::kDouble)
    return cca_attention_f64(q, k_cache, v_cache, cu_seqlens_q, seqused_k, block_table, scale, max_seqlen_q,
                             max_seqlen_k);
  const auto d = zaya::checks::check_cca_attention_shapes(q, k_cache, v_cache, cu_seqlens_q, seqused_k, block_table);
  zaya::checks::check_cca_attention_scale(scale);
  const auto ix = zaya::checks::check_cca_attention_indices(d, cu_seqlens_q, seqused_k, block_table, max_seqlen_q,
                                                            max_seqlen_k);
  const auto dt = q.scalar_type();
  const int64_t T = d.T, nq = d.nq, D = d.D, nkv = d.nkv, block_size = d.block_size, B = d.B, cols = d.cols;
  const auto& cu = ix.cu;
  const auto& used = ix.used;
  const auto& table = ix.table;

  auto out = at::empty({T, nq * D}, q.options());
  auto lse = at::empty({nq, T}, q.options().dtype(at::kFloat));
  if (T == 0) return {out, lse};

  dispatch_float(dt, [&]<typename T_>() {
    AttnParams<T_> p{};
    p.nq = nq, p.nkv = nkv, p.g = nq / nkv, p.D = D, p.block_size = block_size;
    // Tiles: Q and O of up to 256 stacked query rows x D (128 KiB each at D = 128) and 128 keys (64 at
    // D = 256), so that Q, O, K, V and S stay in a 512 KiB L2; bk a multiple of 8 (softmax_tile).
    // Larger query tiles make the GEMMs more efficient (measured 256 > 128 > 64 rows at D = 128).
    p.bq = std::max<int64_t>(1, std::clamp<int64_t>(32768 / D, 16, 256) / p.g);
    p.bk = std::clamp<int64_t>(16384 / D, 32, 128) / 8 * 8;
    p.q = q.const_data_ptr<T_>(), p.q0 = q.stride(0), p.q1 = q.stride(1), p.q2 = q.stride(2);
    p.k_cache = k_cache.const_data_ptr<T_>(), p.v_cache = v_cache.const_data_ptr<T_>();
    p.k0 = k_cache.stride(0), p.k1 = k_cache.stride(1), p.k2 = k_cache.stride(2), p.k3 = k_cache.stride(3);
    p.v0 = v_cache.stride(0), p.v1 = v_cache.stride(1), p.v2 = v_cache.stride(2), p.v3 = v_cache.stride(3);
    p.cu = cu.data(), p.used = used.data(), p.table = table.data(), p.table_cols = cols;
    p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
    p.out = out.data_ptr<T_>(), p.lse = lse.data_ptr<float>(), p.T_ = T;
    run_attention<T_>(p, B);
  });
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("cca_attention", &cca_attention_cpu); }
