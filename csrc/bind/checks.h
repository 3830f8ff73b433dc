// The validation boundary. Every public op turns each Python argument into an
// ArrayArg (which names it), checks it here, and only then fills the params
// struct a kernel reads. Checks raise TypeError (wrong kind or dtype) or
// ValueError (wrong shape, device, layout or aliasing) naming the argument;
// they are always on (never assert).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <initializer_list>
#include <sstream>
#include <string>

#include "fastnn/tensor.h"

namespace fastnn::bind {

namespace nb = nanobind;

template <class... Parts>
std::string cat(const Parts&... parts) {
    std::ostringstream s;
    (s << ... << parts);
    return s.str();
}

[[noreturn]] void throw_type_error(const std::string& message);
[[noreturn]] void throw_value_error(const std::string& message);

// One array argument, viewed zero-copy: through the DLPack C exchange API
// where the array's type offers it (torch), else imported through DLPack or
// the buffer protocol and kept alive for the call. Written arguments must be
// writable: a read-only array is refused, never silently copied.
class ArrayArg {
public:
    ArrayArg(nb::handle obj, const char* name, bool written);

    const char* name() const { return name_; }
    const TensorView& view() const { return view_; }
    DType dtype() const { return view_.dtype; }
    int ndim() const { return view_.ndim; }
    int64_t size(int dim) const { return view_.shape[dim]; }
    int64_t numel() const { return fastnn::numel(view_); }
    int device_type() const { return device_type_; }
    int device_id() const { return device_id_; }
    bool is_cpu() const;
    std::string device_str() const;
    std::string shape_str() const;

private:
    void init_view(void* data, uint64_t byte_offset, nb::dlpack::dtype dtype, int ndim, const int64_t* shape,
                   const int64_t* strides, int device_type, int device_id);

    const char* name_;
    nb::ndarray<nb::ro> array_;
    TensorView view_;
    int device_type_ = 0;
    int device_id_ = 0;
};

void require_cpu(const ArrayArg& a);
// A module's device check (require_cpu here, require_cuda in fastnn._cuda):
// the argument checks the two modules share (csrc/bind/*_args.h) take it.
using RequireDevice = void (*)(const ArrayArg&);
void require_dtype(const ArrayArg& a, std::initializer_list<DType> allowed);
void require_same_dtype(const ArrayArg& a, const ArrayArg& b);
void require_same_shape(const ArrayArg& a, const ArrayArg& b);
void require_same_device(const ArrayArg& a, const ArrayArg& b);

// An output must not broadcast (stride 0), must not overlap itself, and must
// not overlap any input, except exactly (same data, dtype, shape and strides)
// where the op allows in-place use.
enum class Alias { forbidden, exact_allowed };
void require_output(const ArrayArg& out, std::initializer_list<const ArrayArg*> inputs, Alias alias);

}  // namespace fastnn::bind
