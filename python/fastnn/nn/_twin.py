"""What every fastnn layer shares with its torch twin.

A twin is `class X(Twin, torch.nn.X)`: torch's constructor runs unchanged
(parameters, buffers, initialization, state_dict keys), then the twin refuses
a configuration its kernels cannot compute instead of computing something
else. `from_torch` turns a torch layer into its twin without copying: the
twin takes over the module's attributes, so its Parameters are the torch
layer's own objects (optimizers, tied weights and hooks keep working).
"""

from __future__ import annotations

import functools

import torch

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)


class Twin:
    """Base of `class X(Twin, torch.nn.X)`; X defines no __init__ of its own
    (torch's runs, then the configuration check). Subclasses of X (a user's)
    are ordinary subclasses."""

    torch_type: type  # the torch.nn class this layer subclasses

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        torch_bases = [b for b in cls.__bases__ if issubclass(b, torch.nn.Module) and not issubclass(b, Twin)]
        if not torch_bases:
            return
        torch_type = cls.torch_type = torch_bases[0]

        def __init__(self, *args, **kw):
            torch_type.__init__(self, *args, **kw)
            reason = type(self).config_reason(self)
            if reason is not None:
                raise ValueError(f"fastnn.nn.{cls.__name__}: {reason}")

        # help() and inspect.signature show torch's constructor, which is this one's.
        cls.__init__ = functools.update_wrapper(__init__, torch_type.__init__)

    @staticmethod
    def config_reason(module) -> str | None:
        """Why fastnn's kernels cannot compute this layer's configuration (the
        constructor arguments), or None; the constructor raises on it."""
        return None

    @classmethod
    def unsupported_reason(cls, module) -> str | None:
        """Why `module` (a torch layer of torch_type) cannot become this twin,
        or None: its configuration, then its parameters' device and dtype."""
        reason = cls.config_reason(module)
        if reason is not None:
            return reason
        for name, p in module.named_parameters():
            if p.device.type != "cpu":
                return f"{name} is on {p.device}; fastnn's {cls.__name__} kernels run on the CPU"
            if p.dtype not in _KERNEL_DTYPES:
                return f"{name} is {p.dtype}; fastnn's {cls.__name__} kernels run float32 and bfloat16"
        return None

    @classmethod
    def from_torch(cls, module: torch.nn.Module):
        """The twin of `module`, sharing its parameters, buffers, submodules and
        hooks; `module` itself is left unchanged."""
        if type(module) is not cls.torch_type:
            raise TypeError(f"module must be a {cls.torch_type.__module__}.{cls.torch_type.__name__}, got "
                            f"{type(module).__name__}")
        reason = cls.unsupported_reason(module)
        if reason is not None:
            raise ValueError(f"cannot convert this {cls.torch_type.__name__} to fastnn.nn.{cls.__name__}: {reason}")
        twin = cls.__new__(cls)
        # A Module's whole state is its __dict__; the registries in it
        # (_parameters, _buffers, _modules, hooks) are copied so that later
        # registrations on one module do not appear on the other.
        twin.__dict__.update({k: v.copy() if isinstance(v, dict) else v for k, v in vars(module).items()})
        return twin
