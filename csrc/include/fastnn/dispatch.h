// Run-time choice among the per-ISA builds of a kernel family. Each family
// defines one table of function pointers per ISA translation unit (named the
// same in namespaces generic/avx2/avx512); select_kernels returns the table of
// the active path. This is the only place that maps an Isa to code.
#pragma once

#include "fastnn/cpu_features.h"

// Declares the three per-ISA definitions of a kernel table.
#if FASTNN_X86_KERNELS
#define FASTNN_DECLARE_KERNEL_TABLE(Type, name)     \
    namespace generic { extern const Type name; }   \
    namespace avx2 { extern const Type name; }      \
    namespace avx512 { extern const Type name; }
#define FASTNN_SELECT_KERNELS(name) \
    ::fastnn::select_kernels(generic::name, &avx2::name, &avx512::name)
#else
#define FASTNN_DECLARE_KERNEL_TABLE(Type, name) \
    namespace generic { extern const Type name; }
#define FASTNN_SELECT_KERNELS(name) \
    ::fastnn::select_kernels(generic::name, nullptr, nullptr)
#endif

namespace fastnn {

template <class Table>
const Table& select_kernels(const Table& generic_table, const Table* avx2_table,
                            const Table* avx512_table) {
    switch (active_isa()) {
        case Isa::avx512:
            if (avx512_table) return *avx512_table;
            [[fallthrough]];
        case Isa::avx2:
            if (avx2_table) return *avx2_table;
            [[fallthrough]];
        default:
            return generic_table;
    }
}

}  // namespace fastnn
