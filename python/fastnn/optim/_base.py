"""What every fastnn optimizer shares: gathering a group's parameters and state
into the lists one fused kernel call takes, step counting, GradScaler support,
bfloat16 parameters with float32 state (optionally a float32 master copy), and
state_dict compatibility with torch.optim. CPU parameters run on fastnn._C,
CUDA parameters on fastnn._cuda (one multi-tensor launch per table of
tensors, on the current stream); there is no per-tensor fallback."""

from __future__ import annotations

from itertools import chain

import torch
from torch.utils.dlpack import to_dlpack

from .. import _backend, _C

try:
    from torch.distributed.tensor import DTensor
except ImportError:  # a torch built without torch.distributed
    DTensor = None

_PARAM_DTYPES = (torch.float32, torch.bfloat16)
# State that is float32 whatever the parameter dtype; torch.optim's
# load_state_dict casts it to the parameter's dtype, so it is restored after.
_MASTER_KEY = "master_param"


def _device_error(what: str, device) -> str:
    if device.type == "cuda":
        return (f"{what}: a tensor is on {device}, and fastnn's CUDA optimizer kernels are not available "
                f"({_backend._cuda_import_error}); use torch.optim for parameters on the GPU")
    return f"{what} runs on the CPU or CUDA, got a tensor on {device}"


def _supported(device) -> bool:
    return device.type == "cpu" or (device.type == "cuda" and _backend._cuda is not None)


def _kernels(device):
    """The kernel module for tensors on `device` and the extra keyword
    arguments of its calls: the current CUDA stream for fastnn._cuda."""
    if device.type == "cpu":
        return _C, {}
    return _backend.cuda_kernels(), {"stream": torch.cuda.current_stream(device).cuda_stream}


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (FSDP2 keeps parameters, gradients and
    the state made from them sharded so): the elementwise update of a shard
    is the shard of the update. Other tensors as they are."""
    return t.to_local() if DTensor is not None and isinstance(t, DTensor) else t


def _dl(tensors) -> list:
    """DLPack capsules of torch tensors (of their local shards), for the
    kernels' tensor lists. The binding validates a capsule exactly as it
    validates a tensor; making the capsule here costs a fifth of
    Tensor.__dlpack__ (Python-level checks, and an exception for every
    parameter that requires grad), which over hundreds of tensors per step is
    most of the launch cost."""
    return [to_dlpack(_local(t)) for t in tensors]


def _scalar(x) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


class FusedOptimizerMixin:
    """Mixed into a torch.optim optimizer class. Subclasses define
    _STATE_KEYS (the float32 per-element state names) and _group_step."""

    # torch.amp.GradScaler then hands grad_scale / found_inf to step() through
    # the optimizer's attributes instead of unscaling and checking by itself.
    _step_supports_amp_scaling = True
    _STATE_KEYS: tuple[str, ...] = ()

    def _fastnn_init(self, master_weights: bool, differentiable: bool, capturable: bool = False) -> None:
        name = type(self).__name__
        if differentiable:
            raise ValueError(f"fastnn.optim.{name} does not support differentiable=True; use torch.optim.{name}")
        if capturable:
            raise ValueError(f"fastnn.optim.{name} does not support capturable=True (CUDA graphs)")
        self.master_weights = bool(master_weights)

    @torch.no_grad()
    def step(self, closure=None):
        """Perform a single optimization step (one fused kernel call per
        parameter dtype and step count in each group)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grad_scale = getattr(self, "grad_scale", None)
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            self._group_step(group, grad_scale, found_inf)
        return loss

    def _params_with_grad(self, group) -> list:
        name = type(self).__name__
        out = []
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(f"fastnn.optim.{name} does not support sparse gradients")
            if not _supported(p.device):
                raise RuntimeError(_device_error(f"fastnn.optim.{name}", p.device))
            if p.dtype not in _PARAM_DTYPES:
                raise TypeError(f"fastnn.optim.{name} supports float32 and bfloat16 parameters, got {p.dtype}")
            out.append(p)
        return out

    def _new_state(self, p) -> torch.Tensor:
        return torch.zeros_like(p, dtype=torch.float32, memory_format=torch.preserve_format)

    def _masters(self, params: list) -> list | None:
        """Capsules of the float32 master copies of bfloat16 params, created on
        first use; None without master weights."""
        if not self.master_weights or params[0].dtype != torch.bfloat16:
            return None
        out = []
        for p in params:
            state = self.state[p]
            m = state.get(_MASTER_KEY)
            if m is None:
                m = state[_MASTER_KEY] = p.detach().to(torch.float32, memory_format=torch.preserve_format)
            out.append(m)
        return _dl(out)

    @staticmethod
    def _partition(params: list, key) -> list:
        """[(indices, key)] of params grouped by key(i) (dtype, ...): almost
        always one group, so one kernel call."""
        first = key(0)
        if all(key(i) == first for i in range(1, len(params))):
            return [(range(len(params)), first)]
        parts: dict = {}
        for i in range(len(params)):
            parts.setdefault(key(i), []).append(i)
        return [(idx, k) for k, idx in parts.items()]

    @staticmethod
    def _new_step(p) -> torch.Tensor:
        # A float32 scalar on the parameter's device (torch.optim's CPU step
        # counter; on CUDA, as torch's fused optimizers keep it), incremented
        # and read for the bias corrections by the kernel call itself.
        return torch.zeros((), dtype=torch.float32, device=p.device)

    def load_state_dict(self, state_dict) -> None:
        """torch.optim's load_state_dict (so state saved by torch.optim loads
        here and ours loads there), keeping float32 state for bfloat16 params."""
        saved_ids = chain.from_iterable(g["params"] for g in state_dict["param_groups"])
        saved_state = state_dict["state"]
        originals = {}
        for pid, p in zip(saved_ids, chain.from_iterable(g["params"] for g in self.param_groups)):
            if pid in saved_state:
                originals[p] = {k: v for k, v in saved_state[pid].items() if isinstance(v, torch.Tensor)}
        super().load_state_dict(state_dict)
        for p, values in originals.items():
            if p.dtype == torch.float32:
                continue
            state = self.state[p]
            for key in self._STATE_KEYS + (_MASTER_KEY,):
                if key in values:
                    state[key] = values[key].to(device=p.device, dtype=torch.float32, copy=True)
        # A float64 default dtype makes float64 steps, and torch.optim keeps
        # CPU steps for CUDA parameters: the kernels want float32 on the
        # parameter's device.
        for p, state in self.state.items():
            step = state.get("step")
            if isinstance(step, torch.Tensor) and (step.dtype != torch.float32 or step.device != p.device):
                state["step"] = step.to(dtype=torch.float32, device=p.device)
