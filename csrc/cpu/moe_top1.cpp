// zaya::moe_top1 on CPU (spec step 13; maths in zaya_ops.reference.moe_top1).
//
// A counting sort groups the tokens by expert (ascending token order within an expert). Each local
// expert then runs over its tokens in chunks of kChunkRows: gather the rows, gate_up GEMM against the
// expert's [2I, H] slice of the checkpoint tensor, SiLU(gate) * up fused in place, down GEMM, and the
// routing-weight scale fused with the scatter to each token's output row. Skip-class tokens and tokens
// of experts outside [expert_start, expert_end) only get their row zeroed. GEMMs accumulate in fp32
// (router_moe_common.h); the fused steps round to the param dtype where the reference's ops do.
// float64 (every float argument float64: the gradcheck mode of training) runs in double throughout.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "moe_checks.h"
#include "gemv.h"
#include "router_moe_common.h"

namespace {

using zaya::router_moe::Grouping;
using zaya::router_moe::round_to;
using zaya::router_moe::row_grain;
using zaya::router_moe::shape_str;

// Rows per GEMM: bounds the per-chunk buffers (x rows, [rows, 2I] and [rows, H] products) whatever the
// routing, while keeping the GEMMs large enough to run near peak.
constexpr int64_t kChunkRows = 512;
// An expert's fp32 weight copy (3*I*H values) beats ATen's bf16 fallback from about 16 tokens on
// (measured at ZAYA1 sizes, AVX2: 53 vs 57 ms at 16 tokens, 108 vs 75 ms at 32).
constexpr int64_t kUpcastMinRows = 16;

// ZAYA_CPU_GEMM=native: ATen's own GEMM in the param dtype for every expert (tests, benchmarks).
inline bool native_forced() {
  const char* mode = std::getenv("ZAYA_CPU_GEMM");
  return mode && std::strcmp(mode, "native") == 0;
}

// Per-call scratch in one GEMM dtype, allocated on first use and reused by every expert and chunk.
struct Scratch {
  at::Tensor rows, gate_up, down;  // [chunk, H], [chunk, 2I], [chunk, H]
  at::Tensor gate_up_w, down_w;    // fp32 copies of one expert's weights (upcast only)
};

// Expert e's tokens `tok[0..n)`: out[tok] = w * down(round(round(SiLU(gate)) * up)), param dtype
// scalar_t, GEMMs in gemm_t (scalar_t native, float upcast).
template <typename scalar_t, typename gemm_t>
void run_expert(const at::Tensor& x, const scalar_t* ew, const at::Tensor& gate_up_e,
                const at::Tensor& down_e, const int64_t* tok, int64_t n, Scratch& s, at::Tensor& out) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;  // elementwise maths
  const int64_t H = x.size(1), I = down_e.size(1);
  const at::ScalarType gt = c10::CppTypeToScalarType<gemm_t>::value;
  const bool upcast = gt != x.scalar_type();
  const int64_t chunk = std::min(n, kChunkRows);
  const auto gopt = x.options().dtype(gt);
  if (!s.rows.defined() || s.rows.size(0) < chunk) {
    s.rows = at::empty({chunk, H}, gopt);
    s.gate_up = at::empty({chunk, 2 * I}, gopt);
    s.down = at::empty({chunk, H}, gopt);
  }
  at::Tensor wgu = gate_up_e, wdn = down_e;  // native: views of the checkpoint tensors, no copies
  if (upcast) {
    if (!s.gate_up_w.defined()) {
      s.gate_up_w = at::empty({2 * I, H}, gopt);
      s.down_w = at::empty({H, I}, gopt);
    }
    wgu = s.gate_up_w.copy_(gate_up_e);
    wdn = s.down_w.copy_(down_e);
  }

  const scalar_t* xp = x.data_ptr<scalar_t>();
  const int64_t ldx = x.stride(0);
  scalar_t* op = out.data_ptr<scalar_t>();
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t m = std::min(chunk, n - c0);
    const int64_t* tk = tok + c0;
    at::Tensor rows = s.rows.narrow(0, 0, m), gu = s.gate_up.narrow(0, 0, m), dn = s.down.narrow(0, 0, m);
    gemm_t* rp = rows.data_ptr<gemm_t>();
    gemm_t* gp = gu.data_ptr<gemm_t>();
    const gemm_t* dp = dn.data_ptr<gemm_t>();

    // Gather the tokens' rows (converted to fp32 on the way when upcasting).
    at::parallel_for(0, m, row_grain(H), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* src = xp + tk[i] * ldx;
        gemm_t* dst = rp + i * H;
        for (int64_t j = 0; j < H; ++j) dst[j] = static_cast<gemm_t>(src[j]);
      }
    });

    // [gate | up] = rows @ gate_up_e^T; h = round(round(SiLU(round(gate))) * round(up)) written over
    // the gate half, which the down GEMM then reads with a row stride of 2I.
    // Few rows in a reduced dtype without ATen's fast path (decode): gemv.h's streaming kernel, which
    // reads the expert's weights once at memory speed (ATen's fallback: a third of it); same contract.
    constexpr bool reduced = std::is_same_v<gemm_t, c10::BFloat16> || std::is_same_v<gemm_t, c10::Half>;
    const bool skinny = reduced && m <= zaya::cpu_gemv::kMaxRows && wgu.stride(1) == 1 && wdn.stride(1) == 1 &&
                        !zaya::router_moe::aten_has_fast_gemm(x.scalar_type()) && !native_forced();
    if (skinny) {
      zaya::cpu_gemv::gemv<gemm_t>(rp, H, m, wgu.data_ptr<gemm_t>(), wgu.stride(0), 2 * I, H, nullptr, gp, 2 * I);
    } else {
      at::mm_out(gu, rows, wgu.t());
    }
    at::parallel_for(0, m, row_grain(2 * I), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        gemm_t* g = gp + i * 2 * I;
        for (int64_t j = 0; j < I; ++j) {
          const acc_t gv = round_to<scalar_t>(static_cast<acc_t>(g[j]));
          const acc_t uv = round_to<scalar_t>(static_cast<acc_t>(g[I + j]));
          const acc_t silu = round_to<scalar_t>(zaya::router_moe::silu(gv));
          g[j] = static_cast<gemm_t>(round_to<scalar_t>(silu * uv));
        }
      }
    });
    if (skinny) {
      zaya::cpu_gemv::gemv<gemm_t>(gp, 2 * I, m, wdn.data_ptr<gemm_t>(), wdn.stride(0), H, I, nullptr,
                                   dn.data_ptr<gemm_t>(), H);
    } else {
      at::mm_out(dn, gu.narrow(1, 0, I), wdn.t());
    }

    // out[tok] = round(round(down) * w[tok]); each token of this expert owns its row alone.
    at::parallel_for(0, m, row_grain(H), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t w = static_cast<acc_t>(ew[tk[i]]);
        const gemm_t* d = dp + i * H;
        scalar_t* o = op + tk[i] * H;
        for (int64_t j = 0; j < H; ++j) {
          o[j] = static_cast<scalar_t>(round_to<scalar_t>(static_cast<acc_t>(d[j])) * w);
        }
      }
    });
  }
}

at::Tensor moe_top1_cpu(const at::Tensor& x_in, const at::Tensor& expert_index_in,
                        const at::Tensor& expert_weight, const at::Tensor& gate_up_proj,
                        const at::Tensor& down_proj, int64_t expert_start, int64_t expert_end) {
  const zaya::checks::MoeDims dims = zaya::checks::check_moe_top1_args(
      x_in, expert_index_in, expert_weight, gate_up_proj, down_proj, expert_start, expert_end, "moe_top1",
      /*allow_f64=*/true);
  const int64_t T = dims.T, H = dims.H, E = dims.E, end = dims.end;
  const at::ScalarType dt = x_in.scalar_type();

  // Rows may be strided (a row-strided view is read in place); the gather needs unit column stride.
  const at::Tensor x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
  const at::Tensor expert_index = expert_index_in.contiguous();
  const Grouping g = zaya::router_moe::group_tokens(expert_index, E, "moe_top1");
  at::Tensor out = at::empty({T, H}, x.options());

  // Tokens that no local expert computes (classes before the range, after it, and skip): zero rows.
  const int64_t lo = g.offset[expert_start], hi = g.offset[end];
  const int64_t bytes = H * static_cast<int64_t>(out.element_size());
  char* ob = static_cast<char*>(out.data_ptr());
  at::parallel_for(0, T - (hi - lo), row_grain(H), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t t = g.order[k < lo ? k : k - lo + hi];
      std::memset(ob + t * bytes, 0, bytes);
    }
  });

  const at::Tensor ew = expert_weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "zaya_moe_top1_cpu", [&] {
    Scratch native, upcast;  // an expert's GEMM dtype depends on its token count
    for (int64_t e = expert_start; e < end; ++e) {
      const int64_t n = g.offset[e + 1] - g.offset[e];
      if (n == 0) continue;
      const int64_t* tok = g.order.data() + g.offset[e];
      const at::Tensor gu_e = gate_up_proj.select(0, e), dn_e = down_proj.select(0, e);
      if (dt != at::kDouble && zaya::router_moe::upcast_gemm(dt, std::min(n, kChunkRows), kUpcastMinRows)) {
        run_expert<scalar_t, float>(x, ew.data_ptr<scalar_t>(), gu_e, dn_e, tok, n, upcast, out);
      } else {
        run_expert<scalar_t, scalar_t>(x, ew.data_ptr<scalar_t>(), gu_e, dn_e, tok, n, native, out);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("moe_top1", &moe_top1_cpu); }
