"""fastnn.optim on CUDA parameters (fastnn._cuda.adam_step / sgd_step /
rmsprop_step, grad_norm, grad_scale_): lockstep with torch.optim on the same
GPU for 100 steps over mixed tensor sizes (empty, 0-dim, odd, larger than a
chunk) and more tensors than one launch's table holds, every flag, bfloat16
parameters with float32 state and master weights, GradScaler, state_dict in
both directions, clip_grad_norm_, and bad inputs."""

from __future__ import annotations

import io

import pytest
import torch

import fastnn.optim as fo
from fastnn.testing import assert_close
from test_optim import check_bfloat16_params

pytestmark = [pytest.mark.cuda, pytest.mark.single_isa]

# Empty, zero-numel, 0-dim, odd, multi-dimensional, and one tensor spanning
# several 16384-element chunks.
SHAPES = [(0,), (3, 0), (), (1,), (7,), (17,), (33, 3), (1025,), (97, 31), (70001,)]
PAIRS = {"Adam": (torch.optim.Adam, fo.Adam), "AdamW": (torch.optim.AdamW, fo.AdamW),
         "SGD": (torch.optim.SGD, fo.SGD), "RMSprop": (torch.optim.RMSprop, fo.RMSprop)}
STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg")


def kernels():
    import fastnn

    return fastnn._backend.cuda_kernels()


def rel_diff(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    if b.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def make_params(rng, dtype=torch.float32, shapes=SHAPES):
    return [torch.randn(s, generator=rng).to(device="cuda", dtype=dtype) for s in shapes]


def clone_all(params, dtype=None):
    return [p.detach().clone().to(dtype or p.dtype) for p in params]


def set_grads(groups, rng, scale=1.0):
    for ps in zip(*groups):
        g = (torch.randn(ps[0].shape, generator=rng) * scale).cuda()
        for p in ps:
            p.grad = g.to(p.dtype, copy=True)


def flat(tensors):
    return torch.cat([t.detach().flatten().double() for t in tensors])


def lockstep(name, kwargs, rng, steps=100, shapes=SHAPES):
    """torch.optim (float32, its single-tensor CUDA path, whose operations
    fastnn's kernels follow), fastnn.optim (float32) and torch.optim in
    float64, after `steps` identical steps."""
    torch_cls, fast_cls = PAIRS[name]
    pt = make_params(rng, shapes=shapes)
    pf, p64 = clone_all(pt), clone_all(pt, torch.float64)
    ot, of = torch_cls(pt, foreach=False, **kwargs), fast_cls(pf, **kwargs)
    o64 = torch_cls(p64, foreach=False, **kwargs)
    for _ in range(steps):
        set_grads([pt, pf, p64], rng)
        ot.step()
        of.step()
        o64.step()
    return ot, of, o64


def check_lockstep(ot, of, o64, tol=1e-6):
    """As the CPU test: max |fastnn - torch| / max |torch| over all params
    (and each state) as one vector <= tol, and fastnn's error against
    float64 torch.optim within 2x torch's."""
    triples = list(zip(ot.param_groups[0]["params"], of.param_groups[0]["params"], o64.param_groups[0]["params"]))
    for pt, pf, _ in triples:
        assert pf.dtype == pt.dtype and pf.shape == pt.shape and pf.device == pt.device
        assert set(ot.state[pt]) == set(of.state[pf]), (set(ot.state[pt]), set(of.state[pf]))
        if "step" in of.state[pf]:
            assert of.state[pf]["step"].device == pf.device
            assert float(of.state[pf]["step"]) == float(ot.state[pt]["step"])
    cols = list(zip(*triples))
    vectors = {"params": [flat(c) for c in cols]}
    for key in STATE_KEYS:
        if key in ot.state[triples[0][0]]:
            vectors[key] = [flat([o.state[p][key] for p in col]) for o, col in zip((ot, of, o64), cols)]
    for key, (vt, vf, v64) in vectors.items():
        assert rel_diff(vf, vt) <= tol, f"{key}: relative difference {rel_diff(vf, vt):.2e}"
        assert_close(vf, vt.float(), v64, key)


@pytest.mark.parametrize("name", PAIRS)
def test_lockstep_defaults(name, rng):
    check_lockstep(*lockstep(name, {"lr": 1e-2} if name == "SGD" else {}, rng))


@pytest.mark.parametrize("kw", [dict(lr=3e-2, betas=(0.3, 0.8), eps=1e-3, weight_decay=0.1),
                                dict(amsgrad=True, weight_decay=0.1), dict(maximize=True, amsgrad=True)])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_lockstep_adam_flags(name, kw, rng):
    check_lockstep(*lockstep(name, kw, rng))


@pytest.mark.parametrize("kw", [dict(lr=5e-2, momentum=0.9), dict(lr=5e-2, momentum=0.9, nesterov=True),
                                dict(lr=1e-2, momentum=0.5, dampening=0.3, weight_decay=0.01),
                                dict(lr=1e-2, weight_decay=0.01, maximize=True)])
def test_lockstep_sgd_flags(kw, rng):
    check_lockstep(*lockstep("SGD", kw, rng))


@pytest.mark.parametrize("kw", [dict(lr=1e-2, centered=True), dict(lr=1e-2, momentum=0.9),
                                dict(lr=1e-3, alpha=0.9, eps=1e-4, weight_decay=0.1, centered=True, momentum=0.9),
                                dict(lr=1e-3, maximize=True)])
def test_lockstep_rmsprop_flags(kw, rng):
    check_lockstep(*lockstep("RMSprop", kw, rng))


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_more_tensors_than_one_table(name, rng):
    # 130 tensors: three launches of up to 48, sizes 0..39, and step counts
    # that differ per tensor (grads missing on some steps).
    extra = {"momentum": 0.9} if name == "SGD" else {}
    shapes = [(int(n),) for n in torch.randint(0, 40, (130,), generator=rng)] + [(33000,)]
    torch_cls, fast_cls = PAIRS[name]
    pt = make_params(rng, shapes=shapes)
    pf = clone_all(pt)
    ot, of = torch_cls(pt, lr=1e-2, foreach=False, **extra), fast_cls(pf, lr=1e-2, **extra)
    for step in range(12):
        set_grads([pt, pf], rng)
        for ps in (pt, pf):
            for i, p in enumerate(ps):
                if (i + step) % 3 == 0:
                    p.grad = None
        ot.step()
        of.step()
    assert rel_diff(flat(pf), flat(pt)) <= 1e-6


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("master", [False, True])
def test_bfloat16_params_float32_state(name, master, rng):
    """bf16 params, fp32 state, against torch.optim in float32 whose params
    are rounded to bf16 after each step (or, with a master copy, that runs on
    the master), as the CPU test."""
    torch_cls, fast_cls = PAIRS[name]
    kw = {"lr": 1e-2, "momentum": 0.9} if name == "SGD" else {"weight_decay": 0.1}
    pb = make_params(rng, torch.bfloat16)
    p32 = clone_all(pb, torch.float32)
    of, ot = fast_cls(pb, master_weights=master, **kw), torch_cls(p32, foreach=False, **kw)
    for _ in range(30):
        set_grads([pb, p32], rng)
        for p in p32:
            p.grad = p.grad.bfloat16().float()
        of.step()
        ot.step()
        if not master:
            with torch.no_grad():
                for p in p32:
                    p.copy_(p.bfloat16().float())
    check_bfloat16_params(of, ot, pb, p32, master)


@pytest.mark.parametrize("name", PAIRS)
def test_grad_scaler_skips_inf_steps(name, rng):
    torch_cls, fast_cls = PAIRS[name]
    kw = {"lr": 1e-2, "momentum": 0.9} if name == "SGD" else {}
    models = [torch.nn.Linear(9, 5).cuda(), torch.nn.Linear(9, 5).cuda()]
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch_cls(models[0].parameters(), foreach=False, **kw), fast_cls(models[1].parameters(), **kw)]
    scalers = [torch.amp.GradScaler("cuda", init_scale=2.0**12, growth_interval=3) for _ in range(2)]
    for step in range(12):
        x = torch.randn(4, 9, generator=rng).cuda()
        before = [p.detach().clone() for p in models[1].parameters()]
        state_before = {k: v.clone() for k, v in opts[1].state[models[1].weight].items()}
        for model, opt, scaler in zip(models, opts, scalers):
            opt.zero_grad()
            scaler.scale(model(x).square().sum()).backward()
            if step in (0, 4, 9):
                model.weight.grad[1, 2] = float("inf")
            scaler.step(opt)
            scaler.update()
        assert scalers[0].get_scale() == scalers[1].get_scale()
        if step in (0, 4, 9):
            assert all(torch.equal(a, b) for a, b in zip(before, models[1].parameters()))
            for k, v in state_before.items():
                assert torch.equal(v, opts[1].state[models[1].weight][k]), k
        else:  # grads were unscaled in place, as GradScaler.unscale_ leaves them
            assert rel_diff(models[1].weight.grad, models[0].weight.grad) <= 1e-5
    assert rel_diff(flat(models[1].parameters()), flat(models[0].parameters())) <= 1e-6


def test_found_inf_and_grad_scale_in_kernel(rng):
    p, g = torch.randn(100, generator=rng).cuda(), torch.randn(100, generator=rng).cuda()
    m, v, step = torch.zeros(100, device="cuda"), torch.zeros(100, device="cuda"), torch.tensor(3.0, device="cuda")
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                 decoupled_weight_decay=False, grad_scale=torch.tensor(4.0, device="cuda"),
                 stream=torch.cuda.current_stream().cuda_stream)
    p0, g0 = p.clone(), g.clone()
    kernels().adam_step([p], [g], [m], [v], None, [step], None, found_inf=torch.tensor(1.0, device="cuda"), **hyper)
    assert torch.equal(p, p0) and torch.equal(g, g0) and not m.any() and float(step) == 3.0
    kernels().adam_step([p], [g], [m], [v], None, [step], None, found_inf=torch.tensor(0.0, device="cuda"), **hyper)
    assert torch.equal(g, g0 / 4) and not torch.equal(p, p0) and float(step) == 4.0


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("direction", ["torch_to_fastnn", "fastnn_to_torch"])
def test_state_dict_round_trip(name, direction, rng):
    torch_cls, fast_cls = PAIRS[name]
    kw = {"lr": 1e-2, "momentum": 0.9, "nesterov": True} if name == "SGD" else \
        {"centered": True, "momentum": 0.5} if name == "RMSprop" else {"amsgrad": True}
    first, second = (torch_cls, fast_cls) if direction == "torch_to_fastnn" else (fast_cls, torch_cls)
    extra = lambda cls: {"foreach": False} if cls is torch_cls else {}  # noqa: E731
    pa = make_params(rng)
    oa = first(pa, **kw, **extra(first))
    for _ in range(5):
        set_grads([pa], rng)
        oa.step()
    pb = clone_all(pa)
    ob = second(pb, **kw, **extra(second))
    buffer = io.BytesIO()
    torch.save(oa.state_dict(), buffer)
    buffer.seek(0)
    ob.load_state_dict(torch.load(buffer))
    for _ in range(5):
        set_grads([pa, pb], rng)
        oa.step()
        ob.step()
    assert rel_diff(flat(pb), flat(pa)) <= 1e-6


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_clip_grad_norm(norm_type, dtype, rng):
    # torch's inf norm refuses an empty tensor; fastnn takes it as nothing.
    shapes = [(), (7,), (1025,), (33, 65), (100003,)] + ([] if norm_type == float("inf") else [(0,)])
    for max_norm in (0.5, 1e9):
        pt = [torch.zeros(s, dtype=dtype, device="cuda") for s in shapes]
        pf = [torch.zeros(s, dtype=dtype, device="cuda") for s in shapes]
        set_grads([pt, pf], rng)
        grads64 = [p.grad.double() for p in pt]
        n_t = torch.nn.utils.clip_grad_norm_(pt, max_norm, norm_type)
        n_f = fo.clip_grad_norm_(pf, max_norm, norm_type)
        ref = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads64]), norm_type)
        assert n_f.dtype == n_t.dtype and n_f.shape == n_t.shape and n_f.device == n_t.device
        assert_close(n_f, n_t, ref, "norm")
        for a, b, g64 in zip(pt, pf, grads64):
            coef = min(max_norm / (float(ref) + 1e-6), 1.0)
            assert_close(b.grad, a.grad, g64 * coef, "clipped grad")
            if max_norm == 1e9:
                assert torch.equal(b.grad, a.grad)


def test_clip_grad_norm_deterministic_and_nonfinite(rng):
    g = torch.randn(3_000_001, generator=rng).cuda()
    norms = []
    for _ in range(3):
        out = torch.empty((), device="cuda")
        kernels().grad_norm([g, g[:777]], 2.0, out, torch.cuda.current_stream().cuda_stream)
        norms.append(out.item())
    assert norms[0] == norms[1] == norms[2]
    for bad, expect in ((float("nan"), "nan"), (float("inf"), "inf")):
        for norm_type in (2.0, float("inf")):
            p = torch.zeros(50000, device="cuda")
            p.grad = g[:50000].clone()
            p.grad[123] = bad
            q = torch.zeros(50000, device="cuda")
            q.grad = p.grad.clone()
            n_t = torch.nn.utils.clip_grad_norm_([q], 1.0, norm_type)
            n_f = fo.clip_grad_norm_([p], 1.0, norm_type)
            assert str(float(n_f)) == str(float(n_t)) == expect
            with pytest.raises(RuntimeError, match="non-finite"):
                fo.clip_grad_norm_([p], 1.0, norm_type, error_if_nonfinite=True)


def test_bad_inputs():
    s = torch.cuda.current_stream().cuda_stream
    p, g, m, v = (torch.zeros(8, device="cuda") for _ in range(4))
    step = [torch.zeros((), device="cuda")]
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                 decoupled_weight_decay=False, grad_scale=None, found_inf=None, stream=s)
    k = kernels()
    cases = [
        ((ValueError, "grads\\[0\\] must be on the device of params\\[0\\]"), ([p], [g.cpu()], [m], [v], step)),
        ((ValueError, "exp_avgs\\[0\\] must be on the device of params\\[0\\]"), ([p], [g], [m.cpu()], [v], step)),
        ((ValueError, "steps\\[0\\] must be on a CUDA device"), ([p], [g], [m], [v], [torch.zeros(())])),
        ((ValueError, "params\\[1\\] must be on a CUDA device"),
         ([p, torch.zeros(8)], [g, g.clone()], [m, m.clone()], [v, v.clone()], step * 2)),
        ((TypeError, "grads\\[0\\] must have the dtype"), ([p], [g.double()], [m], [v], step)),
        ((ValueError, "exp_avgs\\[0\\] overlaps params\\[0\\]"), ([p], [g], [p], [v], step)),
        ((ValueError, "params\\[0\\] must be dense"), ([torch.zeros(16, device="cuda")[::2]], [g], [m], [v], step)),
    ]
    for (exc, match), (ps, gs, ms, vs, steps) in cases:
        with pytest.raises(exc, match=match):
            k.adam_step(ps, gs, ms, vs, None, steps, None, **hyper)
    with pytest.raises(ValueError, match="grad_scale must be on a CUDA device"):
        k.adam_step([p], [g], [m], [v], None, step, None, **{**hyper, "grad_scale": torch.ones(())})
    with pytest.raises(ValueError, match="out must be on a CUDA device"):
        k.grad_norm([g], 2.0, torch.empty(()), s)
    with pytest.raises(ValueError, match="norm_type must be > 0"):
        k.grad_norm([g], 0.0, torch.empty((), device="cuda"), s)
    with pytest.raises(RuntimeError, match="one device"):
        a, b = torch.zeros(3, device="cuda"), torch.zeros(3)
        a.grad, b.grad = torch.ones(3, device="cuda"), torch.ones(3)
        fo.clip_grad_norm_([a, b], 1.0)
