// The one description of an array that kernels see: a data pointer, a dtype,
// and a shape with strides in elements. No framework type crosses this line;
// the binding layer fills these from DLPack and has already validated them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastnn {

// DLPack allows any rank; fastnn's elementwise machinery handles up to this
// many dimensions after coalescing, and the binding layer refuses more.
inline constexpr int kMaxDims = 8;

enum class DType : uint8_t { f32, f64, f16, bf16, i8, u8, i32, i64, boolean };

constexpr std::size_t dtype_size(DType t) {
    switch (t) {
        case DType::f64: case DType::i64: return 8;
        case DType::f32: case DType::i32: return 4;
        case DType::f16: case DType::bf16: return 2;
        default: return 1;
    }
}

constexpr const char* dtype_name(DType t) {
    switch (t) {
        case DType::f32: return "float32";
        case DType::f64: return "float64";
        case DType::f16: return "float16";
        case DType::bf16: return "bfloat16";
        case DType::i8: return "int8";
        case DType::u8: return "uint8";
        case DType::i32: return "int32";
        case DType::i64: return "int64";
        case DType::boolean: return "bool";
    }
    return "?";
}

struct TensorView {
    void* data = nullptr;
    DType dtype = DType::f32;
    int ndim = 0;
    int64_t shape[kMaxDims] = {};
    int64_t strides[kMaxDims] = {};  // in elements; may be negative or zero
};

// Out of line on purpose: shared headers define no inline code that the
// per-ISA translation units could compile differently (see simd.h).
int64_t numel(const TensorView& t);

// bfloat16 storage. Kernels convert to float for arithmetic.
struct bf16 {
    uint16_t bits;
};

}  // namespace fastnn
