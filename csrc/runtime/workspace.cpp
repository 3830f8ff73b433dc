#include "fastnn/workspace.h"

#include <algorithm>
#include <cstdlib>
#include <memory>

namespace fastnn {
namespace {

struct FreeDeleter {
    void operator()(void* p) const { std::free(p); }
};

struct Buffer {
    std::unique_ptr<void, FreeDeleter> data;
    std::size_t capacity = 0;
};

}  // namespace

void* thread_workspace(WorkspaceSlot slot, std::size_t bytes) noexcept {
    thread_local Buffer buffers[static_cast<int>(WorkspaceSlot::count)];
    Buffer& b = buffers[static_cast<int>(slot)];
    if (bytes > b.capacity || !b.data) {
        // Grown geometrically, so a slowly rising size does not reallocate per call.
        const std::size_t want = std::max({bytes, b.capacity + b.capacity / 2, std::size_t(1)});
        const std::size_t rounded = (want + 4095) / 4096 * 4096;
        b.data.reset(std::aligned_alloc(4096, rounded));
        b.capacity = b.data ? rounded : 0;
    }
    return b.data.get();
}

}  // namespace fastnn
