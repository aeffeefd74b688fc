"""The exported torch optimizers against PyTorch's own implementations, and the torch.optim behaviours.

References: torch.optim (SGD with momentum / Nesterov, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad) and
pytorch_optimizer (Lion, AdaBelief, Adan, LAMB): same trajectory within 1e-5 (float64) over 100 steps. Where a
convention differs the hyperparameters are set so the two rules coincide; each such line says why. The exported
classes count steps in float32 like metaopt's ``t``; against torch they count in float64 (``step_dtype``), as
torch.optim does, so the float64 trajectories agree to rounding.
"""
from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")   # the `torch` extra

from metaopt import library
from tests.test_torch_export import load_class

po = pytest.importorskip("pytorch_optimizer")

# name -> (library program, its hyperparameters, the reference optimizer over params at lr)
REFERENCES = {
    "sgd": ("sgd", {}, lambda ps, lr: torch.optim.SGD(ps, lr=lr)),
    "sgd_momentum": ("momentum", {"mu": 0.9}, lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9)),
    "sgd_nesterov": ("nesterov", {"mu": 0.9},
                     lambda ps, lr: torch.optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True)),
    "adam": ("adam", {}, lambda ps, lr: torch.optim.Adam(ps, lr=lr)),
    "adamw": ("adamw", {"wd": 0.05}, lambda ps, lr: torch.optim.AdamW(ps, lr=lr, weight_decay=0.05)),
    "adamax": ("adamax", {}, lambda ps, lr: torch.optim.Adamax(ps, lr=lr)),
    # torch's NAdam decays its momentum (mu_t = b1 (1 - 0.5 * 0.96^(t psi))); psi = 1e4 makes mu_t = b1, optax's nadam
    "nadam": ("nadam", {}, lambda ps, lr: torch.optim.NAdam(ps, lr=lr, momentum_decay=1e4)),
    # eps placement: metaopt (optax) adds eps to sqrt(v / bc2), torch to sqrt(v) then scales; eps = 0 in both
    "radam": ("radam", {"eps": 0.0}, lambda ps, lr: torch.optim.RAdam(ps, lr=lr, eps=0.0)),
    # eps placement: metaopt (optax) g / sqrt(v + eps), torch g / (sqrt(v) + eps); eps = 0 in both; alpha = decay
    "rmsprop": ("rmsprop", {"decay": 0.9, "eps": 0.0},
                lambda ps, lr: torch.optim.RMSprop(ps, lr=lr, alpha=0.9, eps=0.0)),
    # optax's adagrad starts its accumulator at 0.1 and puts eps under the root; torch: set the same start, eps 0
    "adagrad": ("adagrad", {"eps": 0.0},
                lambda ps, lr: torch.optim.Adagrad(ps, lr=lr, initial_accumulator_value=0.1, eps=0.0)),
    "lion": ("lion", {"wd": 0.01}, lambda ps, lr: po.Lion(ps, lr=lr, betas=(0.9, 0.99), weight_decay=0.01)),
    "adabelief": ("adabelief", {}, lambda ps, lr: po.AdaBelief(ps, lr=lr, eps=1e-16)),
    # pytorch_optimizer's Adan weights the gradient difference by b2 where optax uses (1 - b2), and has no
    # eps_root: b2 = 0.5 makes the two conventions coincide; decoupled weight decay is metaopt's wd * w
    "adan": ("adan", {"b2": 0.5, "eps_root": 0.0, "wd": 0.02},
             lambda ps, lr: po.Adan(ps, lr=lr, betas=(0.98, 0.5, 0.99), weight_decay=0.02, weight_decouple=True)),
    # pytorch_optimizer's LAMB does not bias-correct v and puts eps in the trust ratio: b2 = 0 (v = g^2, no
    # correction needed), eps = 0, and adam_debias so its step is lr (metaopt's trust ratio cancels 1/bc1)
    "lamb": ("lamb", {"b2": 0.0, "eps": 0.0},
             lambda ps, lr: po.Lamb(ps, lr=lr, betas=(0.9, 0.0), eps=0.0, adam_debias=True)),
}


def _params():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in [(), (5,), (4, 3), (2, 3, 4)]]


def _grad(w, i):
    return torch.cos(2 * w + 0.1 * i) * (1 + 0.5 * torch.sin(w))


def _run(make, steps=100, lr=1e-2):
    ps = [p.clone().requires_grad_() for p in _params()]
    opt = make(ps, lr)
    for i in range(steps):
        for p in ps:
            p.grad = _grad(p.detach(), i)
        opt.step()
    return [p.detach() for p in ps]


def _rel(a, b):
    return max(float((x - y).abs().max() / y.abs().max().clamp(min=1e-8)) for x, y in zip(a, b))


@pytest.mark.parametrize("ref", list(REFERENCES))
def test_matches_pytorch_implementation(ref):
    name, hp, make_ref = REFERENCES[ref]
    cls = load_class(library.get(name))
    cls.step_dtype = torch.float64
    ours, theirs = _run(lambda ps, lr: cls(ps, lr=lr, **hp)), _run(make_ref)
    assert _rel(theirs, _params()) > 1e-3   # it moved
    assert _rel(ours, theirs) <= 1e-5, f"{ref}: {_rel(ours, theirs):.2e}"
    print(f"\n{ref}: worst relative error vs the PyTorch implementation = {_rel(ours, theirs):.1e}")


def test_reference_comparison_sees_a_convention_change():
    # near-miss control: Adam with eps moved inside the root is detected
    cls = load_class(library.get("adam"))
    ours = _run(lambda ps, lr: cls(ps, lr=lr, eps=1e-3))
    assert _rel(ours, _run(lambda ps, lr: torch.optim.Adam(ps, lr=lr, eps=1e-8))) > 1e-5


def test_parameter_groups_with_their_own_hyperparameters():
    cls = load_class(library.get("adam"))

    def groups(ps):
        return [{"params": ps[:2], "lr": 1e-2, "b1": 0.8}, {"params": ps[2:], "lr": 3e-3}]
    ours = _run(lambda ps, lr: cls(groups(ps), lr=lr))
    ref = _run(lambda ps, lr: torch.optim.Adam(
        [{"params": ps[:2], "lr": 1e-2, "betas": (0.8, 0.999)}, {"params": ps[2:], "lr": 3e-3}], lr=lr))
    assert _rel(ours, ref) <= 1e-5   # float32 t (metaopt) vs float64 step counts (torch)


def test_optimizer_wide_values_refuse_disagreeing_groups():
    cls = load_class(library.get("dadapt_adamw"))
    ps = [p.clone().requires_grad_() for p in _params()]
    opt = cls([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.5}], lr=1.0)
    for p in ps:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match="parameter groups disagree on 'lr'"):
        opt.step()


def test_step_returns_the_closure_loss_and_loss_rules_require_it():
    cls = load_class(library.get("polyak_sgd"))
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    opt = cls([w], lr=1.0)

    def closure():
        opt.zero_grad()
        loss = (w ** 2).sum()
        loss.backward()
        return loss
    loss = opt.step(closure)
    assert loss.item() == 5.0
    assert torch.equal(w.detach(), torch.tensor([0.5, -1.0]))   # Polyak: step (f - 0) / |g|^2 = 1/4 halves w
    with pytest.raises(ValueError, match="reads the loss: call step\\(closure\\)"):
        opt.step()


@pytest.mark.parametrize("name", ["adam", "dadapt_adamw", "muon", "adafactor"])
def test_state_dict_round_trip_mid_training(name):
    cls = load_class(library.get(name))
    hp = {"min_dim_size_to_factor": 2} if name == "adafactor" else {}
    ps = [p.clone().requires_grad_() for p in _params()]
    opt = cls(ps, lr=1e-2, **hp)

    def steps(opt, ps, a, b):
        for i in range(a, b):
            for p in ps:
                p.grad = _grad(p.detach(), i)
            opt.step()
    steps(opt, ps, 0, 5)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    saved = [p.detach().clone() for p in ps]
    steps(opt, ps, 5, 10)
    ps2 = [p.clone().requires_grad_() for p in saved]
    opt2 = cls(ps2, lr=1e-2, **hp)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    steps(opt2, ps2, 5, 10)
    assert all(torch.equal(a.detach(), b.detach()) for a, b in zip(ps, ps2))
    assert opt2.state_dict()["state"]["global"]["step"] == 10


def test_parameters_without_gradient_are_skipped():
    cls = load_class(library.get("adam"))
    ps = [p.clone().requires_grad_() for p in _params()]
    frozen = ps[1].detach().clone()
    opt = cls(ps, lr=1e-2)
    ref_ps = [p.clone().detach().requires_grad_() for p in ps]
    ref = torch.optim.Adam(ref_ps, lr=1e-2)
    for i in range(5):
        for k, (p, q) in enumerate(zip(ps, ref_ps)):
            p.grad = None if k == 1 else _grad(p.detach(), i)
            q.grad = None if k == 1 else _grad(q.detach(), i)
        opt.step()
        ref.step()
    assert torch.equal(ps[1].detach(), frozen) and len(opt.state[ps[1]]) == 0
    assert _rel([p.detach() for p in ps], [q.detach() for q in ref_ps]) <= 1e-5
    opt.zero_grad()
    assert all(p.grad is None for p in ps)


def test_maximize_flips_the_gradient_as_torch_does():
    cls = load_class(library.get("adam"))
    ours = _run(lambda ps, lr: cls(ps, lr=lr, maximize=True), steps=20)
    ref = _run(lambda ps, lr: torch.optim.Adam(ps, lr=lr, maximize=True), steps=20)
    assert _rel(ours, ref) <= 1e-5 and _rel(ours, _run(lambda ps, lr: cls(ps, lr=lr), steps=20)) > 1e-3


def test_updates_in_place_without_autograd_history():
    cls = load_class(library.get("lion"))
    w = torch.randn(3, 2, requires_grad=True)
    ptr = w.data_ptr()
    opt = cls([w], lr=0.1)
    w.grad = torch.ones_like(w)
    opt.step()
    assert w.data_ptr() == ptr and w.grad_fn is None and w.requires_grad and w.is_leaf


def test_lr_scheduler_drives_the_group_lr():
    cls = load_class(library.get("sgd"))
    w = torch.zeros(1, requires_grad=True)
    opt = cls([w], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        w.grad = torch.ones(1)
        opt.step()
        sched.step()
    assert w.item() == pytest.approx(-(1 + 0.5 + 0.25))


def test_complex_parameters_are_refused_with_a_clear_error():
    cls = load_class(library.get("adam"))
    w = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
    opt = cls([w])
    w.grad = torch.ones_like(w)
    with pytest.raises(TypeError, match="complex parameter"):
        opt.step()


def test_matrix_rule_without_fallback_names_the_problem():
    from metaopt import parse
    cls = load_class(parse("optimizer ortho()\nreturn orthogonalize(g)\n"))
    w = torch.zeros(3, requires_grad=True)
    opt = cls([w])
    w.grad = torch.ones(3)
    with pytest.raises(ValueError, match="ortho uses matrix/factored ops"):
        opt.step()
