// CUDA/HIP torch glue of zaya::cca_attention: argument checks (csrc/cca_checks.h, shared with the CPU
// kernel), device guard, current stream, output and split scratch allocation, and the launch through
// the plain contract of csrc/kernels/cca_attention_launch.h (kernels in csrc/kernels/cca_attention.cuh).
//
// Index values (cu_seqlens_q, seqused_k, block_table) are not read here (no device-to-host sync, see
// glue.h): the Python wrapper or the model's metadata validates them, and the kernels' own guards keep
// every read inside the cache (a bad block-table entry makes its rows NaN). The split scratch depends
// on shapes only, never on index values: the kernels read them on the device.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <tuple>

#include "cca_checks.h"
#include "cca_attention_args.h"
#include "glue.h"
#include "kernels/cca_attention_launch.h"

namespace {

using namespace zaya::checks;  // NOLINT: the shared argument checks
using namespace zaya::gpu;     // NOLINT: the shared GPU glue

std::tuple<at::Tensor, at::Tensor> cca_attention_gpu(const at::Tensor& q_in, const at::Tensor& k_cache_in,
                                                     const at::Tensor& v_cache_in, const at::Tensor& cu_seqlens_q,
                                                     const at::Tensor& seqused_k, const at::Tensor& block_table,
                                                     double scale, int64_t max_seqlen_q, int64_t max_seqlen_k) {
  constexpr const char* op = "zaya::cca_attention";
  check_device(op, "q", q_in);
  const CcaAttentionDims d =
      check_cca_attention_shapes(q_in, k_cache_in, v_cache_in, cu_seqlens_q, seqused_k, block_table);
  check_cca_attention_scale(scale);
  // Valid inputs outside the kernel's coverage: NotImplementedError, so callers can fall back.
  TORCH_CHECK_NOT_IMPLEMENTED(q_in.scalar_type() != at::kFloat, op,
                              ": q is float32; the CUDA/HIP kernel takes bfloat16 or float16 (float32 runs on "
                              "the CPU kernel or zaya_ops.reference)");
  TORCH_CHECK_NOT_IMPLEMENTED(d.D == 64 || d.D == 128 || d.D == 256, op, ": head dim (q.shape[2]) ", d.D,
                              " is not supported on CUDA/HIP (64, 128 or 256; other head dims run on the CPU "
                              "kernel or zaya_ops.reference)");
  TORCH_CHECK_VALUE(max_seqlen_q >= 0 && max_seqlen_k >= 0, op, ": max_seqlen_q and max_seqlen_k must be >= 0");

  const DeviceGuard guard(q_in.device());
  at::Tensor out = at::empty({d.T, d.nq * d.D}, q_in.options());
  at::Tensor lse = at::empty({d.nq, d.T}, q_in.options().dtype(at::kFloat));
  if (d.T == 0 || max_seqlen_q == 0) return {out, lse};
  const CcaAttentionInputs in =
      cca_attention_inputs(q_in, k_cache_in, v_cache_in, cu_seqlens_q, seqused_k, block_table, d, scale,
                           max_seqlen_q, max_seqlen_k);
  zaya::kernels::CcaAttentionArgs a = in.args;
  a.out = out.mutable_data_ptr();
  a.lse = lse.mutable_data_ptr<float>();
  a.splits = zaya::kernels::cca_attention_splits(a);
  at::Tensor part_out, part_lse;
  if (a.splits > 1) {
    part_out = at::empty({a.splits, d.T, d.nq, d.D}, lse.options());
    part_lse = at::empty({a.splits, d.nq, d.T}, lse.options());
    a.part_out = part_out.mutable_data_ptr<float>();
    a.part_lse = part_lse.mutable_data_ptr<float>();
  }
  check_launch(op, zaya::kernels::launch_cca_attention(a, current_stream()));
  return {out, lse};
}

}  // namespace

TORCH_LIBRARY_IMPL(ZAYA_GPU_LIB, ZAYA_GPU_KEY, m) { m.impl("cca_attention", &cca_attention_gpu); }
