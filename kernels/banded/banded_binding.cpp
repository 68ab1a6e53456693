// Torch binding of banded.cu: unpacks tensors into the extern "C" launcher's raw pointers and sizes.
//
// No CUDA header is included (the stream arrives from Python as an integer, cudaStream_t is declared opaquely
// below), so this file compiles against a CPU build of torch too: the build test checks it there with the
// host compiler. Of torch/extension.h only the two headers a binding needs are included (the tensor, and
// pybind11 with torch's tensor caster): about 5 s to compile instead of 15-30 s. kernels/banded/cuda.py checks
// the arguments first, with messages for users; the checks here only guard this entry point against misuse
// from elsewhere.

#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>

#include <cstdint>
#include <limits>
#include <optional>

struct CUstream_st;  // cudaStream_t is CUstream_st*

extern "C" const char* sparsity_lab_banded_forward(int dtype, const void* x, const void* w, const void* bias,
                                                   const int* lo, const int* hi, void* y, int m, int n, int k,
                                                   int64_t ldx, int64_t ldw, int64_t ldy, CUstream_st* stream);

namespace {

int dtype_code(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return 0;
    case at::kHalf:
      return 1;
    case at::kBFloat16:
      return 2;
    default:
      TORCH_CHECK(false, "banded forward: dtype must be float32, float16 or bfloat16, got ", dtype);
  }
}

void check_matrix(const at::Tensor& t, const char* name, const at::Tensor& x) {
  TORCH_CHECK(t.dim() == 2 && t.stride(1) == 1, "banded forward: ", name, " must be 2-D with unit column stride");
  TORCH_CHECK(t.device() == x.device() && t.scalar_type() == x.scalar_type(), "banded forward: ", name,
              " must be on x's device with x's dtype");
  TORCH_CHECK(t.size(0) <= std::numeric_limits<int>::max() && t.size(1) <= std::numeric_limits<int>::max(),
              "banded forward: ", name, " is too large for int32 sizes");
}

// y (M, N) = x (M, K) · (W ⊙ M)ᵀ + bias, written into `y`; row n of the mask keeps columns [lo[n], hi[n]).
void forward(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
             const at::Tensor& lo, const at::Tensor& hi, at::Tensor& y, int64_t stream) {
  TORCH_CHECK(x.is_cuda(), "banded forward: tensors must be on a CUDA device");
  check_matrix(x, "x", x);
  check_matrix(weight, "weight", x);
  check_matrix(y, "y", x);
  const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
  TORCH_CHECK(weight.size(1) == k && y.size(0) == m && y.size(1) == n, "banded forward: shapes x ", x.sizes(),
              ", weight ", weight.sizes(), ", y ", y.sizes(), " do not match");
  for (const at::Tensor* range : {&lo, &hi}) {
    TORCH_CHECK(range->device() == x.device() && range->scalar_type() == at::kInt && range->is_contiguous() &&
                    range->numel() == n,
                "banded forward: lo and hi must be contiguous int32 tensors of length out_features on x's device");
  }
  if (bias.has_value()) {
    TORCH_CHECK(bias->device() == x.device() && bias->scalar_type() == x.scalar_type() && bias->is_contiguous() &&
                    bias->numel() == n,
                "banded forward: bias must be contiguous, of length out_features, on x's device with x's dtype");
  }
  const char* error = sparsity_lab_banded_forward(
      dtype_code(x.scalar_type()), x.data_ptr(), weight.data_ptr(), bias.has_value() ? bias->data_ptr() : nullptr,
      lo.data_ptr<int>(), hi.data_ptr<int>(), y.data_ptr(), static_cast<int>(m), static_cast<int>(n),
      static_cast<int>(k), x.stride(0), weight.stride(0), y.stride(0), reinterpret_cast<CUstream_st*>(stream));
  TORCH_CHECK(error == nullptr, "banded forward: CUDA error: ", error);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("forward", &forward, "y = x (W ⊙ M)ᵀ + bias over the band's K tiles (writes y)", pybind11::arg("x"),
             pybind11::arg("weight"), pybind11::arg("bias"), pybind11::arg("lo"), pybind11::arg("hi"),
             pybind11::arg("y"), pybind11::arg("stream"));
}
