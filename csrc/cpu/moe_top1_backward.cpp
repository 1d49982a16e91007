// zaya::moe_top1_backward on CPU: the gradients of zaya::moe_top1 (csrc/cpu/moe_top1.cpp) w.r.t. x,
// expert_weight, gate_up_proj and down_proj, as autograd of zaya_ops.reference.moe_top1 defines them
// (python/zaya_ops/_autograd.py). Only the forward's inputs are saved: the gate/up GEMM is recomputed.
//
// Tokens are grouped by expert as in the forward (router_moe_common.h's counting sort). Per local
// expert e with tokens S, in chunks of kChunkRows tokens, with w = expert_weight, go = grad_out[S]:
//   [gate | up] = x[S] @ gate_up_proj[e]^T            (recomputed)
//   act = SiLU(gate) * up
//   u = go @ down_proj[e]                              ([n, I]: the down GEMM's backward, before w)
//   grad_expert_weight[S] = rowsum(act * u)            (= rowsum(go * (act @ down_proj[e]^T)), so the
//                                                       forward's down GEMM need not be recomputed)
//   d_act = w * u; d_up = d_act * SiLU(gate); d_gate = d_act * up * SiLU'(gate)
//   grad_down_proj[e] += (w * go)^T @ act; grad_gate_up_proj[e] += [d_gate | d_up]^T @ x[S]
//   grad_x[S] = [d_gate | d_up] @ gate_up_proj[e]
// Everything between the inputs and the rounded outputs is fp32 (double for float64: the gradcheck
// mode), GEMMs upcast to fp32 (MKL sgemm), so the kernel rounds once per output element where the
// reference's autograd rounds after every op: its error against float64 is at most the reference's.
// Skip-class tokens and tokens of experts outside [expert_start, expert_end) get zero grad_x and
// grad_expert_weight rows; experts outside the range (and local experts without tokens) zero weight
// gradients.
//
// Determinism: the weight gradients sum over tokens. They accumulate chunk by chunk in token order, and
// each chunk's product is computed in fixed blocks of kParamRowBlock output rows, one sequential GEMM
// per block (inside at::parallel_for: a parallel region, where MKL runs single-threaded), so the sums
// do not depend on the thread count. The per-token outputs are single rows (no cross-token sums).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>

#include "moe_checks.h"
#include "router_moe_common.h"

namespace {

using zaya::router_moe::Grouping;
using zaya::router_moe::row_grain;

constexpr const char* kOp = "moe_top1_backward";
// Tokens per chunk: bounds the per-chunk buffers whatever the routing (and fixes the summation blocks
// of the weight gradients).
constexpr int64_t kChunkRows = 256;
// Output rows of a weight gradient per sequential GEMM (the fixed reduction blocks, see the top).
constexpr int64_t kParamRowBlock = 64;

// c [M, N] += a[:, :]^T @ b, a [K, M], b [K, N]: one sequential GEMM per fixed block of c's rows.
void add_at_b(const at::Tensor& c, const at::Tensor& a, const at::Tensor& b) {
  const int64_t M = c.size(0);
  const int64_t blocks = (M + kParamRowBlock - 1) / kParamRowBlock;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t r0 = blk * kParamRowBlock, r = std::min(kParamRowBlock, M - r0);
      c.narrow(0, r0, r).addmm_(a.narrow(1, r0, r).t(), b);
    }
  });
}

// Per-call buffers in the accumulation dtype, sized for one chunk (rows) or one expert (weights).
struct Buffers {
  at::Tensor rows, go, gate_up, u, act, dx;  // [c, H], [c, H], [c, 2I], [c, I], [c, I], [c, H]
  at::Tensor gate_up_w, down_w;              // expert e's weights in acc dtype (copies or views)
  at::Tensor d_gate_up_w, d_down_w;          // e's weight gradients in acc dtype (scratch or output views)
};

template <typename scalar_t>
void backward_expert(const at::Tensor& grad_out, const at::Tensor& x, const scalar_t* ew,
                     const at::Tensor& gate_up_e, const at::Tensor& down_e, const int64_t* tok, int64_t n,
                     Buffers& b, scalar_t* gx, scalar_t* gw, const at::Tensor& d_gate_up_e,
                     const at::Tensor& d_down_e) {
  using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
  constexpr bool direct = std::is_same_v<scalar_t, acc_t>;  // weight gradients summed in the output
  const int64_t H = x.size(1), I = down_e.size(1);
  const auto aopt = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  const int64_t chunk = std::min(n, kChunkRows);
  if (!b.rows.defined() || b.rows.size(0) < chunk) {
    b.rows = at::empty({chunk, H}, aopt);
    b.go = at::empty({chunk, H}, aopt);
    b.gate_up = at::empty({chunk, 2 * I}, aopt);
    b.u = at::empty({chunk, I}, aopt);
    b.act = at::empty({chunk, I}, aopt);
    b.dx = at::empty({chunk, H}, aopt);
  }
  if (direct) {
    b.gate_up_w = gate_up_e;  // contiguous views of the inputs and of the (zeroed) outputs
    b.down_w = down_e;
    b.d_gate_up_w = d_gate_up_e;
    b.d_down_w = d_down_e;
  } else {
    if (!b.d_gate_up_w.defined()) {
      b.gate_up_w = at::empty({2 * I, H}, aopt);
      b.down_w = at::empty({H, I}, aopt);
      b.d_gate_up_w = at::empty({2 * I, H}, aopt);
      b.d_down_w = at::empty({H, I}, aopt);
    }
    b.gate_up_w.copy_(gate_up_e);
    b.down_w.copy_(down_e);
    b.d_gate_up_w.zero_();
    b.d_down_w.zero_();
  }

  const scalar_t* xp = x.data_ptr<scalar_t>();
  const scalar_t* gop = grad_out.data_ptr<scalar_t>();
  const int64_t ldx = x.stride(0), ldg = grad_out.stride(0);
  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t m = std::min(chunk, n - c0);
    const int64_t* tk = tok + c0;
    at::Tensor rows = b.rows.narrow(0, 0, m), go = b.go.narrow(0, 0, m), gu = b.gate_up.narrow(0, 0, m),
               u = b.u.narrow(0, 0, m), act = b.act.narrow(0, 0, m), dx = b.dx.narrow(0, 0, m);
    acc_t* rp = rows.data_ptr<acc_t>();
    acc_t* gp = go.data_ptr<acc_t>();
    at::parallel_for(0, m, row_grain(2 * H), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const scalar_t* xs = xp + tk[i] * ldx;
        const scalar_t* gs = gop + tk[i] * ldg;
        for (int64_t j = 0; j < H; ++j) rp[i * H + j] = static_cast<acc_t>(xs[j]);
        for (int64_t j = 0; j < H; ++j) gp[i * H + j] = static_cast<acc_t>(gs[j]);
      }
    });

    at::mm_out(gu, rows, b.gate_up_w.t());  // [gate | up], recomputed
    at::mm_out(u, go, b.down_w);            // go @ down_proj[e]

    // act, the routing-weight gradient, [d_gate | d_up] over [gate | up], and go scaled by w.
    acc_t* gup = gu.data_ptr<acc_t>();
    const acc_t* up_ = u.data_ptr<acc_t>();
    acc_t* ap = act.data_ptr<acc_t>();
    at::parallel_for(0, m, row_grain(4 * I), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        const acc_t w = static_cast<acc_t>(ew[tk[i]]);
        acc_t* g = gup + i * 2 * I;
        const acc_t* ui = up_ + i * I;
        acc_t* a = ap + i * I;
        acc_t dw = 0;
        for (int64_t j = 0; j < I; ++j) {
          const acc_t gate = g[j], up = g[I + j];
          const acc_t sig = zaya::router_moe::sigmoid(gate);
          const acc_t silu = gate * sig;
          a[j] = silu * up;
          dw += a[j] * ui[j];
          const acc_t d_act = w * ui[j];
          g[j] = d_act * up * sig * (acc_t(1) + gate * (acc_t(1) - sig));
          g[I + j] = d_act * silu;
        }
        gw[tk[i]] = static_cast<scalar_t>(dw);
        acc_t* gi = gp + i * H;
        for (int64_t j = 0; j < H; ++j) gi[j] *= w;
      }
    });

    add_at_b(b.d_down_w, go, act);     // [H, I] += (w * go)^T @ act
    add_at_b(b.d_gate_up_w, gu, rows);  // [2I, H] += d_gate_up^T @ x[S]
    at::mm_out(dx, gu, b.gate_up_w);    // [m, H] = d_gate_up @ gate_up_proj[e]

    const acc_t* dxp = dx.data_ptr<acc_t>();
    at::parallel_for(0, m, row_grain(H), [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        scalar_t* o = gx + tk[i] * H;
        for (int64_t j = 0; j < H; ++j) o[j] = static_cast<scalar_t>(dxp[i * H + j]);
      }
    });
  }
  if (!direct) {
    d_gate_up_e.copy_(b.d_gate_up_w);
    d_down_e.copy_(b.d_down_w);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> moe_top1_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& x_in, const at::Tensor& expert_index_in,
    const at::Tensor& expert_weight_in, const at::Tensor& gate_up_proj_in, const at::Tensor& down_proj_in,
    int64_t expert_start, int64_t expert_end) {
  const zaya::checks::MoeDims dims =
      zaya::checks::check_moe_top1_args(x_in, expert_index_in, expert_weight_in, gate_up_proj_in, down_proj_in,
                                        expert_start, expert_end, kOp, /*allow_f64=*/true);
  zaya::checks::check_dtype(kOp, "grad_out", grad_out_in, x_in.scalar_type(), " (x's dtype)");
  zaya::checks::check_shape(kOp, "grad_out", grad_out_in, x_in.sizes());
  zaya::checks::check_same_device(kOp, "grad_out", grad_out_in, x_in, "x");
  const int64_t T = dims.T, E = dims.E, end = dims.end;
  const at::ScalarType dt = x_in.scalar_type();

  // Rows may be strided (gathered in place); columns must be unit-stride.
  const at::Tensor x = x_in.stride(1) == 1 ? x_in : x_in.contiguous();
  const at::Tensor grad_out = grad_out_in.stride(1) == 1 ? grad_out_in : grad_out_in.contiguous();
  const at::Tensor expert_index = expert_index_in.contiguous();
  const at::Tensor expert_weight = expert_weight_in.contiguous();
  const at::Tensor gate_up_proj = gate_up_proj_in.contiguous();
  const at::Tensor down_proj = down_proj_in.contiguous();
  const Grouping g = zaya::router_moe::group_tokens(expert_index, E, kOp);

  // Zeros everywhere no local expert writes (skip tokens, other ranks' tokens and experts).
  at::Tensor grad_x = at::zeros({T, x.size(1)}, x.options());
  at::Tensor grad_w = at::zeros({T}, expert_weight.options());
  at::Tensor grad_gate_up = at::zeros(gate_up_proj.sizes(), gate_up_proj.options());
  at::Tensor grad_down = at::zeros(down_proj.sizes(), down_proj.options());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dt, "zaya_moe_top1_backward_cpu", [&] {
    Buffers buf;
    for (int64_t e = expert_start; e < end; ++e) {
      const int64_t n = g.offset[e + 1] - g.offset[e];
      if (n == 0) continue;
      backward_expert<scalar_t>(grad_out, x, expert_weight.data_ptr<scalar_t>(), gate_up_proj.select(0, e),
                                down_proj.select(0, e), g.order.data() + g.offset[e], n, buf,
                                grad_x.data_ptr<scalar_t>(), grad_w.data_ptr<scalar_t>(),
                                grad_gate_up.select(0, e), grad_down.select(0, e));
    }
  });
  return {grad_x, grad_w, grad_gate_up, grad_down};
}

}  // namespace

TORCH_LIBRARY_IMPL(zaya, CPU, m) { m.impl("moe_top1_backward", &moe_top1_backward_cpu); }
