// Shared by the GPU glue of residual_scale_rmsnorm's forward (norms.cpp) and backward
// (norms_backward.cpp): both launch contracts read the same inputs under the same field names.
#pragma once

#include <ATen/ATen.h>

#include "glue.h"

namespace zaya::gpu {

// The inputs of residual_scale_rmsnorm in a launch contract's fields: h and residual (rows with unit
// inner stride, as kernel_rows leaves them) and the five [H] vectors h_bias, h_scale, r_bias, r_scale,
// norm_weight (in that order, already prepared for the kernel).
template <class Args>
void set_residual_scale_inputs(Args& a, const at::Tensor& h, const at::Tensor& residual, const at::Tensor (&vecs)[5]) {
  a.h = h.const_data_ptr();
  a.h_row_stride = h.stride(0);
  a.residual = residual.const_data_ptr<float>();
  a.residual_row_stride = residual.stride(0);
  a.h_bias = vecs[0].const_data_ptr();
  a.h_scale = vecs[1].const_data_ptr();
  a.r_bias = vecs[2].const_data_ptr();
  a.r_scale = vecs[3].const_data_ptr();
  a.norm_weight = vecs[4].const_data_ptr();
  a.dtype = to_dtype(h.scalar_type());
}

}  // namespace zaya::gpu
