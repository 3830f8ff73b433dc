#include "fastnn/dropout.h"

namespace fastnn {

void dropout_apply(const DropoutParams& p) { FASTNN_SELECT_KERNELS(dropout_kernels).apply(p); }

}  // namespace fastnn
