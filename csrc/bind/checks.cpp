#include "checks.h"

#include <algorithm>
#include <cstdlib>
#include <vector>

namespace fastnn::bind {
namespace {

constexpr int kDLCPU = 1;
constexpr int kDLCUDA = 2;

bool to_dtype(nb::dlpack::dtype t, DType* out) {
    using Code = nb::dlpack::dtype_code;
    if (t.lanes != 1) return false;
    const auto code = static_cast<Code>(t.code);
    struct Entry { Code code; int bits; DType dtype; };
    static constexpr Entry table[] = {
        {Code::Float, 32, DType::f32}, {Code::Float, 64, DType::f64}, {Code::Float, 16, DType::f16},
        {Code::Bfloat, 16, DType::bf16}, {Code::Int, 8, DType::i8}, {Code::UInt, 8, DType::u8},
        {Code::Int, 32, DType::i32}, {Code::Int, 64, DType::i64}, {Code::Bool, 8, DType::boolean},
    };
    for (const Entry& e : table) {
        if (e.code == code && e.bits == t.bits) {
            *out = e.dtype;
            return true;
        }
    }
    return false;
}

std::string python_type_name(nb::handle obj) {
    return nb::cast<std::string>(nb::str(nb::handle(reinterpret_cast<PyObject*>(Py_TYPE(obj.ptr())))));
}

// [lo, hi) byte range an array can touch; empty for zero-size arrays.
struct Extent {
    uintptr_t lo = 0, hi = 0;
};

Extent byte_extent(const TensorView& v) {
    const int64_t size = static_cast<int64_t>(dtype_size(v.dtype));
    int64_t lo = 0, hi = size;
    for (int d = 0; d < v.ndim; ++d) {
        if (v.shape[d] == 0) return {};
        const int64_t span = (v.shape[d] - 1) * v.strides[d] * size;
        (span < 0 ? lo : hi) += span;
    }
    const auto base = reinterpret_cast<intptr_t>(v.data);
    return {static_cast<uintptr_t>(base + lo), static_cast<uintptr_t>(base + hi)};
}

// Sufficient condition for no two indices sharing an address: sorted by
// |stride|, each stride steps past everything the smaller dimensions span.
bool self_overlapping(const TensorView& v) {
    std::vector<std::pair<int64_t, int64_t>> dims;  // (|stride|, extent)
    for (int d = 0; d < v.ndim; ++d) {
        if (v.shape[d] == 0) return false;
        if (v.shape[d] > 1) dims.emplace_back(std::llabs(v.strides[d]), v.shape[d]);
    }
    std::sort(dims.begin(), dims.end());
    int64_t span = 0;
    for (const auto& [stride, extent] : dims) {
        if (stride <= span) return true;
        span += stride * (extent - 1);
    }
    return false;
}

// The DLPack C exchange API (DLPack >= 1.2): a framework exposes, as
// type(obj).__dlpack_c_exchange_api__, a capsule of C function pointers; one
// fills a DLTensor view of a tensor without building a capsule or calling
// Python (torch's __dlpack__ costs ~3 us per argument, this ~0.1 us). Only
// the stable prefix of the struct that fastnn reads is declared here.
struct ExchangeApi {
    struct { uint32_t major, minor; } version;
    void* prev_api;
    void* managed_tensor_allocator;
    void* managed_tensor_from_py_object_no_sync;
    void* managed_tensor_to_py_object_no_sync;
    int (*dltensor_from_py_object_no_sync)(void* py_object, nb::dlpack::dltensor* out);
    void* current_work_stream;
};

// Per Python type: its exchange API, or null when it has none. Types are few
// (torch.Tensor, nn.Parameter, ...), and lookups happen with the GIL held.
const ExchangeApi* exchange_api(PyTypeObject* type) {
    static std::vector<std::pair<PyTypeObject*, const ExchangeApi*>> cache;
    for (const auto& [t, api] : cache)
        if (t == type) return api;
    const ExchangeApi* api = nullptr;
    PyObject* capsule = PyObject_GetAttrString(reinterpret_cast<PyObject*>(type), "__dlpack_c_exchange_api__");
    if (capsule && PyCapsule_IsValid(capsule, "dlpack_exchange_api")) {
        auto* candidate = static_cast<const ExchangeApi*>(PyCapsule_GetPointer(capsule, "dlpack_exchange_api"));
        if (candidate && candidate->version.major == 1 && candidate->dltensor_from_py_object_no_sync) api = candidate;
    }
    Py_XDECREF(capsule);
    PyErr_Clear();
    Py_INCREF(type);  // the cache keeps the type (and so the capsule's owner) alive
    cache.emplace_back(type, api);
    return api;
}

bool same_layout(const TensorView& a, const TensorView& b) {
    if (a.data != b.data || a.dtype != b.dtype || a.ndim != b.ndim) return false;
    for (int d = 0; d < a.ndim; ++d)
        if (a.shape[d] != b.shape[d] || (a.shape[d] > 1 && a.strides[d] != b.strides[d])) return false;
    return true;
}

}  // namespace

void throw_type_error(const std::string& message) { throw nb::type_error(message.c_str()); }
void throw_value_error(const std::string& message) { throw nb::value_error(message.c_str()); }

ArrayArg::ArrayArg(nb::handle obj, const char* name, bool written) : name_(name) {
    if (obj.is_none()) throw_type_error(cat(name, " must be an array, got None"));
    // The caller's reference to obj keeps the viewed memory alive for the call.
    if (const ExchangeApi* api = exchange_api(Py_TYPE(obj.ptr()))) {
        nb::dlpack::dltensor t;
        if (api->dltensor_from_py_object_no_sync(obj.ptr(), &t) == 0) {
            init_view(t.data, t.byte_offset, t.dtype, t.ndim, t.shape, t.strides, t.device.device_type,
                      t.device.device_id);
            return;
        }
        PyErr_Clear();
    }
    if (written) {
        nb::ndarray<> writable;
        if (!nb::try_cast(obj, writable, false)) {
            if (nb::try_cast(obj, array_, false))
                throw_value_error(cat(name, " is read-only; it is written, so it must be writable"));
            throw_type_error(cat(name, " must be a writable array supporting DLPack (torch.Tensor, numpy.ndarray, ...), got ",
                                 python_type_name(obj)));
        }
        array_ = nb::ndarray<nb::ro>(writable);
    } else if (!nb::try_cast(obj, array_, false)) {
        std::string hint;
        if (nb::hasattr(obj, "requires_grad") && nb::cast<bool>(obj.attr("requires_grad")))
            hint = " (a tensor that requires grad must go through fastnn's autograd-aware functions or be detached)";
        throw_type_error(cat(name, " must be an array supporting DLPack (torch.Tensor, numpy.ndarray, ...), got ",
                             python_type_name(obj), hint));
    }

    init_view(array_.data_handle(), array_.byte_offset(), array_.dtype(), static_cast<int>(array_.ndim()),
              array_.shape_ptr(), array_.stride_ptr(), array_.device_type(), array_.device_id());
}

void ArrayArg::init_view(void* data, uint64_t byte_offset, nb::dlpack::dtype dl_dtype, int ndim,
                         const int64_t* shape, const int64_t* strides, int device_type, int device_id) {
    DType dtype;
    if (!to_dtype(dl_dtype, &dtype))
        throw_type_error(cat(name_, " has an unsupported dtype (DLPack code ", int(dl_dtype.code), ", ",
                             int(dl_dtype.bits), " bits)"));
    if (ndim > kMaxDims)
        throw_value_error(cat(name_, " has ", ndim, " dimensions; at most ", kMaxDims, " are supported"));

    view_.data = static_cast<char*>(data) + byte_offset;
    view_.dtype = dtype;
    view_.ndim = ndim;
    int64_t contiguous = 1;
    for (int d = ndim - 1; d >= 0; --d) {
        view_.shape[d] = shape[d];
        view_.strides[d] = strides ? strides[d] : contiguous;
        contiguous *= shape[d];
    }
    device_type_ = device_type;
    device_id_ = device_id;
    if (reinterpret_cast<uintptr_t>(view_.data) % dtype_size(dtype) != 0 && numel() > 0)
        throw_value_error(cat(name_, " is not aligned to its element size (", dtype_size(dtype),
                              " bytes); misaligned views are not supported"));
}

bool ArrayArg::is_cpu() const { return device_type_ == kDLCPU; }

std::string ArrayArg::device_str() const {
    if (device_type_ == kDLCPU) return "cpu";
    if (device_type_ == kDLCUDA) return cat("cuda:", device_id_);
    return cat("DLPack device type ", device_type_, ":", device_id_);
}

std::string ArrayArg::shape_str() const {
    std::string s = "(";
    for (int d = 0; d < view_.ndim; ++d) s += cat(d ? ", " : "", view_.shape[d]);
    return s + (view_.ndim == 1 ? ",)" : ")");
}

void require_cpu(const ArrayArg& a) {
    if (!a.is_cpu()) throw_value_error(cat(a.name(), " must be on the CPU, got ", a.device_str()));
}

void require_dtype(const ArrayArg& a, std::initializer_list<DType> allowed) {
    for (DType t : allowed)
        if (a.dtype() == t) return;
    std::string names;
    for (DType t : allowed) names += cat(names.empty() ? "" : " or ", dtype_name(t));
    throw_type_error(cat(a.name(), " must be ", names, ", got ", dtype_name(a.dtype())));
}

void require_same_dtype(const ArrayArg& a, const ArrayArg& b) {
    if (a.dtype() != b.dtype())
        throw_type_error(cat(b.name(), " must have the dtype of ", a.name(), " (", dtype_name(a.dtype()), "), got ",
                             dtype_name(b.dtype())));
}

void require_same_shape(const ArrayArg& a, const ArrayArg& b) {
    bool same = a.ndim() == b.ndim();
    for (int d = 0; same && d < a.ndim(); ++d) same = a.size(d) == b.size(d);
    if (!same)
        throw_value_error(cat(b.name(), " must have the shape of ", a.name(), " ", a.shape_str(), ", got ",
                              b.shape_str()));
}

void require_same_device(const ArrayArg& a, const ArrayArg& b) {
    if (a.device_type() != b.device_type() || a.device_id() != b.device_id())
        throw_value_error(cat(b.name(), " must be on the device of ", a.name(), " (", a.device_str(), "), got ",
                              b.device_str()));
}

void require_output(const ArrayArg& out, std::initializer_list<const ArrayArg*> inputs, Alias alias) {
    const TensorView& v = out.view();
    for (int d = 0; d < v.ndim; ++d)
        if (v.strides[d] == 0 && v.shape[d] > 1)
            throw_value_error(cat(out.name(), " is a broadcast view (stride 0 in dimension ", d,
                                  "); outputs need one element per index"));
    if (self_overlapping(v))
        throw_value_error(cat(out.name(), " has overlapping strides; outputs need one element per index"));
    const Extent o = byte_extent(v);
    for (const ArrayArg* in : inputs) {
        const Extent i = byte_extent(in->view());
        if (o.lo >= o.hi || i.lo >= i.hi || o.hi <= i.lo || i.hi <= o.lo) continue;
        if (alias == Alias::exact_allowed && same_layout(v, in->view())) continue;
        throw_value_error(cat(out.name(), " overlaps ", in->name(),
                              alias == Alias::exact_allowed ? " (only an exact in-place alias is allowed)" : ""));
    }
}

}  // namespace fastnn::bind
