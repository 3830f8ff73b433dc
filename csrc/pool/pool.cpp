#include "fastnn/pool.h"

namespace fastnn {

void pool_forward(const PoolParams& p) { FASTNN_SELECT_KERNELS(pool_kernels).forward(p); }

void pool_backward(const PoolBackwardParams& p) { FASTNN_SELECT_KERNELS(pool_kernels).backward(p); }

}  // namespace fastnn
