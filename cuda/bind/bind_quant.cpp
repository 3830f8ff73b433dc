// fastnn._cuda int8 quantize / dequantize / quantize_rows: the CPU module's
// names, arguments and checks (csrc/bind/quant_args.h) plus a trailing
// stream. The scales' values stay on the device (positive and finite is the
// caller's contract here; the CPU module checks them on the host).
#include "../../csrc/bind/quant_args.h"
#include "cuda_checks.h"
#include "fastnn_cuda/cuda_api.h"

namespace fastnn::bind {
namespace {

void quantize(nb::handle x, nb::handle scale, int axis, nb::handle out, uintptr_t stream) {
    quant_args::quantize_call(require_cuda, [stream](const QuantizeParams& p, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::quantize(p, as_stream(stream)), "quantize");
    }, x, scale, axis, out);
}

void dequantize(nb::handle q, nb::handle scale, int axis, nb::handle out, uintptr_t stream) {
    quant_args::dequantize_call(require_cuda, [stream](const DequantizeParams& p, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::dequantize(p, as_stream(stream)), "dequantize");
    }, q, scale, axis, out);
}

void quantize_rows(nb::handle x, nb::handle smooth_inv, nb::handle q, nb::handle scale, uintptr_t stream) {
    quant_args::quantize_rows_call(require_cuda, [stream](const QuantizeRowsParams& p, const ArrayArg& first) {
        DeviceGuard guard(first.device_id());
        check_cuda(cuda::quantize_rows(p, as_stream(stream)), "quantize_rows");
    }, x, smooth_inv, q, scale);
}

}  // namespace

void bind_quant(nb::module_& m) {
    m.def("quantize", &quantize, nb::arg("x"), nb::arg("scale"), nb::arg("axis"), nb::arg("out"), nb::arg("stream"),
          "out = clamp(round_half_even(x * (1 / scale)), -128, 127); axis -1: one scale, 0: per row, 1: per column.");
    m.def("dequantize", &dequantize, nb::arg("q"), nb::arg("scale"), nb::arg("axis"), nb::arg("out"),
          nb::arg("stream"), "out = float(q) * scale; axis as in quantize.");
    m.def("quantize_rows", &quantize_rows, nb::arg("x"), nb::arg("smooth_inv").none(), nb::arg("q"), nb::arg("scale"),
          nb::arg("stream"),
          "Dynamic symmetric per-row int8: scale = max|x * smooth_inv| / 127 per row; q and scale are the a and "
          "row_scale of int8_gemm.");
}

}  // namespace fastnn::bind
