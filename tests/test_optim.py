"""fastnn.optim against torch.optim in lockstep (100 steps, mixed tensor
sizes, every flag), bfloat16 and master weights, GradScaler, state_dict in
both directions, schedulers, param groups, bad inputs, clip_grad_norm_, and a
small model trained 200 steps. Every test runs on every ISA path."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
import fastnn.optim as fo
from fastnn import _C
from fastnn.testing import assert_close

# Empty, zero-numel, 0-dim, odd and multi-dimensional parameters in one group.
SHAPES = [(0,), (3, 0), (), (1,), (7,), (17,), (33, 3), (1025,), (97, 31)]
FEW_SHAPES = [(0,), (), (17,), (33, 3), (1025,)]  # for the many-example flag sweeps
PAIRS = {"Adam": (torch.optim.Adam, fo.Adam), "AdamW": (torch.optim.AdamW, fo.AdamW),
         "SGD": (torch.optim.SGD, fo.SGD), "RMSprop": (torch.optim.RMSprop, fo.RMSprop)}
STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer", "square_avg", "grad_avg")


def rel_diff(a, b) -> float:
    """max |a - b| / max |b| (the issue's relative error, per tensor)."""
    a, b = a.detach().double(), b.detach().double()
    if b.numel() == 0:
        return 0.0
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def make_params(rng, dtype=torch.float32, shapes=SHAPES):
    return [torch.randn(s, generator=rng).to(dtype) for s in shapes]


def clone_all(params, dtype=None):
    return [p.detach().clone().to(dtype or p.dtype) for p in params]


def set_grads(groups, rng, scale=1.0):
    """The same random gradient (in each param's dtype) for every list."""
    for ps in zip(*groups):
        g = torch.randn(ps[0].shape, generator=rng) * scale
        for p in ps:
            p.grad = g.to(p.dtype, copy=True)


def lockstep(name, kwargs, rng, steps=100, shapes=SHAPES):
    """torch.optim (float32), fastnn.optim (float32) and torch.optim in float64
    after `steps` identical steps: returns the three optimizers."""
    torch_cls, fast_cls = PAIRS[name]
    pt = make_params(rng, shapes=shapes)
    pf, p64 = clone_all(pt), clone_all(pt, torch.float64)
    ot, of, o64 = torch_cls(pt, **kwargs), fast_cls(pf, **kwargs), torch_cls(p64, **kwargs)
    for _ in range(steps):
        set_grads([pt, pf, p64], rng)
        ot.step()
        of.step()
        o64.step()
    return ot, of, o64


def flat(tensors):
    return torch.cat([t.detach().flatten().double() for t in tensors])


def check_lockstep(ot, of, o64, tol=1e-6):
    """The issue's criterion: the relative difference to torch.optim, max
    |fastnn - torch| / max |torch| over all params (and over each state) as
    one vector, is <= tol. Per tensor it is not a usable measure: a one-element
    momentum buffer that cancels to near zero magnifies torch's own rounding
    (its float32 sqrt is not correctly rounded, ours is). And the project's
    rule on the same vectors: fastnn's error against torch.optim in float64 is
    <= 2x torch's + floor."""
    triples = list(zip(ot.param_groups[0]["params"], of.param_groups[0]["params"], o64.param_groups[0]["params"]))
    for pt, pf, _ in triples:
        assert pf.dtype == pt.dtype and pf.shape == pt.shape
        assert set(ot.state[pt]) == set(of.state[pf]), (set(ot.state[pt]), set(of.state[pf]))
        if "step" in ot.state[pt]:
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


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_lockstep_adam_flags(data):
    kw = dict(lr=data.draw(st.sampled_from([1e-3, 3e-2])), betas=data.draw(st.sampled_from([(0.9, 0.999), (0.3, 0.8)])),
              eps=data.draw(st.sampled_from([1e-8, 1e-3])), weight_decay=data.draw(st.sampled_from([0.0, 0.1])),
              amsgrad=data.draw(st.booleans()), maximize=data.draw(st.booleans()))
    name = data.draw(st.sampled_from(["Adam", "AdamW"]))
    check_lockstep(*lockstep(name, kw, torch.Generator().manual_seed(data.draw(st.integers(0, 2**31))),
                             shapes=FEW_SHAPES))


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_lockstep_sgd_flags(data):
    momentum = data.draw(st.sampled_from([0.0, 0.5, 0.9]))
    nesterov = momentum > 0 and data.draw(st.booleans())
    kw = dict(lr=data.draw(st.sampled_from([1e-3, 5e-2])), momentum=momentum,
              dampening=0.0 if nesterov else data.draw(st.sampled_from([0.0, 0.3])),
              weight_decay=data.draw(st.sampled_from([0.0, 0.01])), nesterov=nesterov,
              maximize=data.draw(st.booleans()))
    check_lockstep(*lockstep("SGD", kw, torch.Generator().manual_seed(data.draw(st.integers(0, 2**31))),
                             shapes=FEW_SHAPES))


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_lockstep_rmsprop_flags(data):
    kw = dict(lr=data.draw(st.sampled_from([1e-3, 1e-2])), alpha=data.draw(st.sampled_from([0.99, 0.9])),
              eps=data.draw(st.sampled_from([1e-8, 1e-4])), weight_decay=data.draw(st.sampled_from([0.0, 0.1])),
              momentum=data.draw(st.sampled_from([0.0, 0.9])), centered=data.draw(st.booleans()),
              maximize=data.draw(st.booleans()))
    check_lockstep(*lockstep("RMSprop", kw, torch.Generator().manual_seed(data.draw(st.integers(0, 2**31))),
                             shapes=FEW_SHAPES))


def check_bfloat16_params(of, ot, pb, p32, master):
    """fastnn's bf16 params pb (float32 state) after the same steps as
    torch.optim's float32 params p32. Relative differences over all tensors
    as one vector, as check_lockstep measures them: per tensor, a small one (a
    1-element param near 0.005) magnifies torch's own float32 rounding past
    1e-6."""
    for b in pb:
        assert all(of.state[b][key].dtype == torch.float32 and of.state[b][key].device == b.device
                   for key in STATE_KEYS if key in of.state[b])
    for key in STATE_KEYS:
        if key in of.state[pb[0]]:
            # Without a master copy, a one-ulp float32 difference can round a
            # bf16 param the other way; weight decay feeds that into the
            # state, hence 1e-4 there.
            diff = rel_diff(flat([of.state[b][key] for b in pb]), flat([ot.state[r][key] for r in p32]))
            assert diff <= (1e-6 if master else 1e-4), key
    if master:
        assert rel_diff(flat([of.state[b]["master_param"] for b in pb]), flat(p32)) <= 1e-6
        assert all(torch.equal(b, of.state[b]["master_param"].bfloat16()) for b in pb)
    else:
        assert all(rel_diff(b, r) <= 2.0**-8 for b, r in zip(pb, p32))


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("master", [False, True])
def test_bfloat16_params_float32_state(name, master, rng):
    """bf16 params, fp32 state: the reference is torch.optim in float32 on the
    same values whose params are rounded to bf16 after each step (or, with a
    master copy, torch.optim in float32 on the master)."""
    torch_cls, fast_cls = PAIRS[name]
    kw = {"lr": 1e-2, "momentum": 0.9} if name == "SGD" else {"weight_decay": 0.1}
    pb = make_params(rng, torch.bfloat16)
    p32 = clone_all(pb, torch.float32)
    of, ot = fast_cls(pb, master_weights=master, **kw), torch_cls(p32, **kw)
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
    for b in pb:
        assert b.dtype == torch.bfloat16
    check_bfloat16_params(of, ot, pb, p32, master)


@pytest.mark.parametrize("name", PAIRS)
def test_grad_scaler_skips_inf_steps(name, rng):
    torch_cls, fast_cls = PAIRS[name]
    kw = {"lr": 1e-2, "momentum": 0.9} if name == "SGD" else {}
    models = [torch.nn.Linear(9, 5), None]
    models[1] = torch.nn.Linear(9, 5)
    models[1].load_state_dict(models[0].state_dict())
    opts = [torch_cls(models[0].parameters(), **kw), fast_cls(models[1].parameters(), **kw)]
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=3) for _ in range(2)]
    for step in range(12):
        x = torch.randn(4, 9, generator=rng)
        before = [p.detach().clone() for p in models[1].parameters()]
        state_before = {k: v.clone() for k, v in opts[1].state[models[1].weight].items()}
        for model, opt, scaler in zip(models, opts, scalers):
            opt.zero_grad()
            scaler.scale(model(x).square().sum()).backward()
            if step in (4, 9):
                model.weight.grad[1, 2] = float("inf")
            scaler.step(opt)
            scaler.update()
        assert scalers[0].get_scale() == scalers[1].get_scale()
        if step in (4, 9):
            assert all(torch.equal(a, b) for a, b in zip(before, models[1].parameters()))
            for k, v in state_before.items():
                assert torch.equal(v, opts[1].state[models[1].weight][k]), k
        else:  # grads were unscaled in place, as GradScaler.unscale_ leaves them
            assert rel_diff(models[1].weight.grad, models[0].weight.grad) <= 1e-5
    assert rel_diff(flat(models[1].parameters()), flat(models[0].parameters())) <= 1e-6


@pytest.mark.parametrize("name", PAIRS)
@pytest.mark.parametrize("direction", ["torch_to_fastnn", "fastnn_to_torch"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_state_dict_round_trip(name, direction, dtype, rng):
    torch_cls, fast_cls = PAIRS[name]
    kw = {"lr": 1e-2, "momentum": 0.9, "nesterov": True} if name == "SGD" else \
        {"centered": True, "momentum": 0.5} if name == "RMSprop" else {"amsgrad": True}
    first, second = (torch_cls, fast_cls) if direction == "torch_to_fastnn" else (fast_cls, torch_cls)
    pa = make_params(rng, dtype)
    oa = first(pa, **kw)
    for _ in range(5):
        set_grads([pa], rng)
        oa.step()
    pb = clone_all(pa)
    ob = second(pb, **kw)
    buffer = io.BytesIO()  # through torch.save, as a checkpoint goes (and no aliasing of oa's state)
    torch.save(oa.state_dict(), buffer)
    buffer.seek(0)
    ob.load_state_dict(torch.load(buffer))
    assert set(ob.state_dict()["state"]) == set(oa.state_dict()["state"])
    expect_state = torch.float32 if second is fast_cls else dtype
    for a, b in zip(pa, pb):
        for key, v in oa.state[a].items():
            if key in STATE_KEYS:
                assert ob.state[b][key].dtype == expect_state
                assert torch.equal(ob.state[b][key], v.to(expect_state)), key
    for _ in range(5):
        set_grads([pa, pb], rng)
        oa.step()
        ob.step()
    # torch.optim keeps bf16 state and rounds every op to bf16; fastnn keeps
    # float32 state, so with bf16 params the trajectories differ by design.
    if dtype == torch.float32:
        assert rel_diff(flat(pb), flat(pa)) <= 1e-6
    else:
        assert all(torch.isfinite(b).all() for b in pb)


@pytest.mark.parametrize("name", PAIRS)
def test_lr_scheduler_and_tensor_lr(name, rng):
    torch_cls, fast_cls = PAIRS[name]
    pt = make_params(rng)
    pf, p64 = clone_all(pt), clone_all(pt, torch.float64)
    lr = torch.tensor(0.05)
    ot, of, o64 = torch_cls(pt, lr=lr.clone()), fast_cls(pf, lr=lr.clone()), torch_cls(p64, lr=lr.double())
    sched = [torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5) for o in (ot, of, o64)]
    for _ in range(10):
        set_grads([pt, pf, p64], rng)
        for o, s in zip((ot, of, o64), sched):
            o.step()
            s.step()
    assert float(of.param_groups[0]["lr"]) == float(ot.param_groups[0]["lr"]) == float(lr * 0.5**3)
    check_lockstep(ot, of, o64)


@pytest.mark.parametrize("name", ["Adam", "SGD", "RMSprop"])
def test_param_groups_none_grads_and_many_tensors(name, rng):
    """Two groups with their own hyperparameters, a group added mid-training,
    params whose grad is None on some steps (so per-param step counts differ,
    and one call covers several step counts), and 2000 tensors in one group."""
    torch_cls, fast_cls = PAIRS[name]
    extra = {"momentum": 0.9, "dampening": 0.2} if name == "SGD" else {}
    shapes = [(int(n),) for n in torch.randint(0, 40, (2000,), generator=rng)] + [(70001,)]
    pt = [make_params(rng), make_params(rng, shapes=shapes), make_params(rng)]
    pf = [clone_all(ps) for ps in pt]
    opts = []
    for ps in (pt, pf):
        cls = torch_cls if ps is pt else fast_cls
        opts.append(cls([{"params": ps[0]}, {"params": ps[1], "lr": 3e-3, "weight_decay": 0.1}], lr=1e-2, **extra))
    for step in range(12):
        if step == 4:
            for o, ps in zip(opts, (pt, pf)):
                o.add_param_group({"params": ps[2], "lr": 2e-2})
        set_grads([sum(pt, []), sum(pf, [])], rng)
        for ps in (pt, pf):
            for i, p in enumerate(ps[0]):
                if (i + step) % 3 == 0:
                    p.grad = None
        for o in opts:
            o.step()
    assert rel_diff(flat(sum(pf, [])), flat(sum(pt, []))) <= 1e-6
    assert fo.Adam([torch.zeros(3)]).step() is None  # no grads: nothing to do


def test_closure_and_zero_grad(rng):
    p = torch.nn.Parameter(torch.randn(5, generator=rng))
    opt = fo.AdamW([p])
    loss = opt.step(lambda: (p.square().sum().backward(), torch.tensor(3.0))[1])
    assert float(loss) == 3.0 and p.grad is not None
    opt.zero_grad()
    assert p.grad is None


def test_bad_inputs():
    with pytest.raises(RuntimeError, match="sparse"):
        p = torch.zeros(4, 3, requires_grad=True)
        p.grad = torch.zeros(4, 3).to_sparse()
        fo.Adam([p]).step()
    with pytest.raises(TypeError, match="float32 and bfloat16"):
        p = torch.zeros(3, dtype=torch.float64)
        p.grad = torch.zeros_like(p)
        fo.SGD([p]).step()
    with pytest.raises(RuntimeError, match="runs on the CPU or CUDA"):
        p = torch.zeros(3, device="meta")
        p.grad = torch.zeros_like(p)
        fo.RMSprop([p]).step()
    with pytest.raises(ValueError, match="differentiable"):
        fo.Adam([torch.zeros(2)], differentiable=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        fo.AdamW([torch.zeros(2)], lr=-1.0)
    with pytest.raises(ValueError, match="Nesterov"):
        fo.SGD([torch.zeros(2)], nesterov=True)
    p, g, m, v = (torch.zeros(8) for _ in range(4))
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, decoupled_weight_decay=False, grad_scale=None, found_inf=None)
    cases = [
        ((TypeError, "grads\\[0\\] must have the dtype"), ([p], [g.double()], [m], [v])),
        ((ValueError, "grads\\[0\\] must have the shape"), ([p], [torch.zeros(9)], [m], [v])),
        ((ValueError, "exp_avgs must have one tensor per parameter"), ([p], [g], [], [v])),
        ((TypeError, "exp_avg_sqs\\[0\\] must be float32"), ([p], [g], [m], [v.double()])),
        ((ValueError, "params\\[0\\] must be dense"), ([torch.zeros(16)[::2]], [g], [m], [v])),
        ((ValueError, "exp_avgs\\[0\\] overlaps params\\[0\\]"), ([p], [g], [p], [v])),
        ((ValueError, "exp_avg_sqs\\[0\\] is read-only"), ([p], [g], [m], [np.zeros(8, np.float32)[::1].copy()])),
        ((ValueError, "exp_avg_sqs\\[0\\] must have the memory layout"),
         ([torch.zeros(4, 2)], [torch.zeros(4, 2)], [torch.zeros(4, 2)], [torch.zeros(2, 4).t()])),
    ]
    ro = cases[6][1][3][0]
    ro.flags.writeable = False
    for (exc, match), lists in cases:
        with pytest.raises(exc, match=match):
            _C.adam_step(*lists, None, [torch.zeros(()) for _ in lists[0]], None, **hyper)
    steps2 = [torch.zeros(()), torch.zeros(())]
    with pytest.raises(ValueError, match="overlaps"):  # rows run concurrently: no shared memory
        _C.adam_step([p[:4], torch.zeros(4)], [g[:4], g[:4]], [m[:4], p[2:6]], [v[:4], v[4:]], None, steps2, None,
                     **hyper)
    with pytest.raises(ValueError, match="params\\[1\\] overlaps params\\[0\\]"):
        _C.adam_step([p, p], [g, g], [m, torch.zeros(8)], [v, torch.zeros(8)], None, steps2, None, **hyper)
    with pytest.raises(ValueError, match="steps\\[1\\] overlaps steps\\[0\\]"):
        step = torch.zeros(())
        _C.adam_step([p, torch.zeros(8)], [g, g], [m, torch.zeros(8)], [v, torch.zeros(8)], None, [step, step],
                     None, **hyper)
    with pytest.raises(TypeError, match="steps\\[0\\] must be float32"):
        _C.adam_step([p], [g], [m], [v], None, [torch.zeros((), dtype=torch.float64)], None, **hyper)
    with pytest.raises(ValueError, match="max_exp_avg_sqs must be a list exactly when amsgrad"):
        _C.adam_step([p], [g], [m], [v], None, [torch.zeros(())], None, **{**hyper, "amsgrad": True})
    with pytest.raises(ValueError, match="grad_scale must hold one element"):
        _C.adam_step([p], [g], [m], [v], None, [torch.zeros(())], None, **{**hyper, "grad_scale": torch.ones(2)})
    with pytest.raises(ValueError, match="masters must be None for float32"):
        _C.adam_step([p], [g], [m], [v], None, [torch.zeros(())], [torch.zeros(8)], **hyper)
    with pytest.raises(ValueError, match="norm_type must be > 0"):
        _C.grad_norm_reduce([g], 0.0)


def test_found_inf_and_grad_scale_in_kernel(rng):
    p, g = torch.randn(100, generator=rng), torch.randn(100, generator=rng)
    m, v, step = torch.zeros(100), torch.zeros(100), torch.tensor(3.0)
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False,
                 decoupled_weight_decay=False, grad_scale=torch.tensor(4.0))
    p0, g0 = p.clone(), g.clone()
    _C.adam_step([p], [g], [m], [v], None, [step], None, found_inf=torch.tensor(1.0), **hyper)
    assert torch.equal(p, p0) and torch.equal(g, g0) and not m.any() and float(step) == 3.0
    _C.adam_step([p], [g], [m], [v], None, [step], None, found_inf=torch.tensor(0.0), **hyper)
    assert torch.equal(g, g0 / 4) and not torch.equal(p, p0) and float(step) == 4.0


@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf"), 3.5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_clip_grad_norm(norm_type, dtype, rng):
    # torch's inf norm refuses an empty tensor (no identity for max); fastnn
    # takes it as contributing nothing.
    shapes = [(), (7,), (1025,), (33, 65), (100003,)] + ([] if norm_type == float("inf") else [(0,)])
    for max_norm in (0.5, 1e9):
        pt = [torch.zeros(s, dtype=dtype) for s in shapes]
        pf = [torch.zeros(s, dtype=dtype) for s in shapes]
        set_grads([pt, pf], rng)
        grads64 = [p.grad.double() for p in pt]
        n_t = torch.nn.utils.clip_grad_norm_(pt, max_norm, norm_type)
        n_f = fo.clip_grad_norm_(pf, max_norm, norm_type)
        ref = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads64]), norm_type)
        assert n_f.dtype == n_t.dtype and n_f.shape == n_t.shape
        assert_close(n_f, n_t, ref, "norm")
        for a, b, g64 in zip(pt, pf, grads64):
            coef = min(max_norm / (float(ref) + 1e-6), 1.0)
            assert_close(b.grad, a.grad, g64 * coef, "clipped grad")
            if max_norm == 1e9:
                assert torch.equal(b.grad, a.grad)


def test_clip_grad_norm_nonfinite_and_determinism(rng):
    p = torch.zeros(50000)
    p.grad = torch.randn(50000, generator=rng)
    before = fastnn.get_num_threads()
    norms = []
    for threads in (1, 2, 3):
        fastnn.set_num_threads(threads)
        norms.append(_C.grad_norm_reduce([p.grad, p.grad[:777]], 2.0))
    fastnn.set_num_threads(before)
    assert norms[0] == norms[1] == norms[2]
    assert fo.clip_grad_norm_([torch.zeros(3)], 1.0).item() == 0.0  # no grads
    for bad, expect in ((float("nan"), "nan"), (float("inf"), "inf")):
        p.grad[123] = bad
        for norm_type in (2.0, float("inf")):
            q = torch.zeros(50000)
            q.grad = p.grad.clone()
            n_t = torch.nn.utils.clip_grad_norm_([q], 1.0, norm_type)
            q.grad = p.grad.clone()
            n_f = fo.clip_grad_norm_([q], 1.0, norm_type)
            assert str(float(n_f)) == str(float(n_t)) == expect
            with pytest.raises(RuntimeError, match="non-finite"):
                fo.clip_grad_norm_([q], 1.0, norm_type, error_if_nonfinite=True)


def test_small_model_adamw_200_steps_matches_torch():
    """The issue's done-criterion: same seed, same data, 200 AdamW steps. The
    loss curves match torch.optim.AdamW's (default, for-loop) as closely as
    torch's own fused AdamW does: its float32 sqrt differs from the for-loop's
    in the last bit, and so does ours, and training amplifies such bits."""
    def train(cls, **kwargs):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.GELU(), torch.nn.Linear(64, 64),
                                    torch.nn.GELU(), torch.nn.Linear(64, 1))
        x, y = torch.randn(256, 16), torch.randn(256, 1)
        opt = cls(model.parameters(), lr=3e-3, weight_decay=0.05, **kwargs)
        out = []
        for _ in range(200):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    ref, fused, fast = train(torch.optim.AdamW), train(torch.optim.AdamW, fused=True), train(fo.AdamW)
    assert fast[-1] < 0.1 * fast[0]  # it trained
    for r, t, f in zip(ref, fused, fast):
        assert abs(f - r) <= 2 * abs(t - r) + 1e-5 * abs(r)
