// Shared by the GPU glue of zaya::router (router.cpp) and zaya::router_backward (router_backward.cpp):
// both launch contracts (RouterArgs, RouterBackwardArgs) read the same inputs under the same field names.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "glue.h"

namespace zaya::gpu {

// The router's inputs in the layouts its kernels take (kernel_rows: x and prev_state with unit inner
// stride; kernel_dense: everything else contiguous). Holds the prepared tensors, so the pointers that
// set() writes stay valid while this object lives (through the launch).
struct RouterInputs {
  at::Tensor x, prev, scale, down_w, down_b, norm_w, fc1_w, fc1_b, fc2_w, fc2_b, out_w;

  RouterInputs(const at::Tensor& x_in, const std::optional<at::Tensor>& prev_state,
               const std::optional<at::Tensor>& states_scale, const at::Tensor& down_weight,
               const at::Tensor& down_bias, const at::Tensor& norm_weight, const at::Tensor& fc1_weight,
               const at::Tensor& fc1_bias, const at::Tensor& fc2_weight, const at::Tensor& fc2_bias,
               const at::Tensor& out_weight)
      : x(kernel_rows(x_in)),
        prev(prev_state ? kernel_rows(*prev_state) : at::Tensor()),
        scale(prev_state && states_scale ? kernel_dense(*states_scale) : at::Tensor()),
        down_w(kernel_dense(down_weight)),
        down_b(kernel_dense(down_bias)),
        norm_w(kernel_dense(norm_weight)),
        fc1_w(kernel_dense(fc1_weight)),
        fc1_b(kernel_dense(fc1_bias)),
        fc2_w(kernel_dense(fc2_weight)),
        fc2_b(kernel_dense(fc2_bias)),
        out_w(kernel_dense(out_weight)) {}

  // x (and its row stride), prev_state (row stride) and states_scale when there is a previous state,
  // the MLP's weights and biases, and the dtype (x's).
  template <class Args>
  void set(Args& a) const {
    a.x = x.const_data_ptr();
    a.x_row_stride = x.stride(0);
    if (prev.defined()) {
      a.prev_state = prev.const_data_ptr();
      a.prev_row_stride = prev.stride(0);
      a.states_scale = scale.const_data_ptr();
    }
    a.down_weight = down_w.const_data_ptr();
    a.down_bias = down_b.const_data_ptr();
    a.norm_weight = norm_w.const_data_ptr();
    a.fc1_weight = fc1_w.const_data_ptr();
    a.fc1_bias = fc1_b.const_data_ptr();
    a.fc2_weight = fc2_w.const_data_ptr();
    a.fc2_bias = fc2_b.const_data_ptr();
    a.out_weight = out_w.const_data_ptr();
    a.dtype = to_dtype(x.scalar_type());
  }
};

}  // namespace zaya::gpu
