#include "activation_args.h"
#include "bindings.h"

namespace fastnn::bind {

void bind_activation(nb::module_& m) {
    using namespace activation_args;
    for (const Entry& e : kTable) {
        const Activation kind = e.kind;
        const char* saved = e.saved;
        m.def(
            e.forward,
            [kind](nb::handle x, nb::handle out) {
                forward_call(require_cpu, [](const ActivationParams& p, const ArrayArg&) {
                    nb::gil_scoped_release release;
                    activation_forward(p);
                }, kind, x, out);
            },
            nb::arg("x"), nb::arg("out"), e.forward_doc);
        m.def(
            e.backward,
            [kind, saved](nb::handle grad_out, nb::handle s, nb::handle out) {
                backward_call(require_cpu, [](const ActivationBackwardParams& p, const ArrayArg&) {
                    nb::gil_scoped_release release;
                    activation_backward(p);
                }, kind, grad_out, s, saved, out);
            },
            nb::arg("grad_out"), nb::arg(saved), nb::arg("out"), e.backward_doc);
    }
}

}  // namespace fastnn::bind
