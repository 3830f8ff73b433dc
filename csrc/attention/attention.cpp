#include "fastnn/attention.h"

namespace fastnn {

void attention_forward(const AttentionParams& p) { FASTNN_SELECT_KERNELS(attention_kernels).forward(p); }

void attention_backward(const AttentionBackwardParams& p) { FASTNN_SELECT_KERNELS(attention_kernels).backward(p); }

}  // namespace fastnn
