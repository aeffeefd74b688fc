"""to_torch_source: the generated torch.optim.Optimizer follows metaopt.to_optax (the JAX reference) step for step.

* every library program (and a few non-default settings that reach other code paths), 100 steps on a tree of
  0-D, 1-D, 2-D and 3-D parameters, float64 on both sides (jax x64 only inside the test): worst relative
  error <= 1e-6; the worst case per program is printed (``pytest -s``) and tabled in docs/torch.md;
* the shipped discovered programs (checkpoints/programs/**/*.opt) and learned optimizers (checkpoints/lopt/*,
  exported with ``--format torch``: module + safetensors) training a small MLP, torch vs JAX;
* the exported module imports only torch and math; an op without a torch form is refused by name.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")   # the `torch` extra

from metaopt import library, parse, to_optax, to_torch_source
from metaopt.cli import main as cli
from metaopt.dsl import ops
from metaopt.export_torch import class_name
from source_imports import imported_modules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {"a": (), "b": (5,), "c": (4, 3), "d": (2, 3, 4)}
STEPS, LR, TOL = 100, 1e-2, 1e-6
LR_OF = {"dadapt_adamw": 1.0, "dog": 1.0,   # parameter-free: they start from 1e-6-sized steps
         "dadapt_sgd": 1.0, "dadapt_lion": 1.0, "prodigy": 1.0, "ldog": 1.0,
         "delta_sgd": 1e-3,   # its min(...) step-size switch amplifies rounding chaotically at lr 1e-2
         "oasis": 1e-5}   # g / max(|D|, 1e-5): the test loss's Hessian crosses 0, steps of lr/1e-5 go chaotic
# non-default settings that reach other code paths (factored Adafactor, AdEMAMix warm-ups, Conda's refresh)
VARIANTS = {"adafactor[factored]": ("adafactor", {"min_dim_size_to_factor": 2}),
            "ademamix[warmup]": ("ademamix", {"t_alpha": 50, "t_b3": 50}),
            "conda[T=7]": ("conda", {"T": 7}),
            "adamw[wd=0.1]": ("adamw", {"wd": 0.1}),
            # matrix preconditioners past their defaults' intervals: Shampoo's root, low-rank projector refreshes
            "shampoo[T=3]": ("shampoo", {"T": 3, "start": 10}),
            "galore[rank=2,T=10]": ("galore", {"rank": 2, "T": 10}),
            "fira[rank=2,T=10]": ("fira", {"rank": 2, "T": 10})}
CASES = {**{n: (n, {}) for n in library.names()}, **VARIANTS}
WORST: dict[str, float] = {}   # case -> worst relative error (printed)


def load_class(program):
    ns: dict = {}
    exec(compile(to_torch_source(program), f"<torch export {program.name}>", "exec"), ns)
    return ns[class_name(program)]


def _grad(w, i, lib):
    return lib.cos(2 * w + 0.1 * i) * (1 + 0.5 * lib.sin(w))


def _objective(ws, i, lib):
    """For programs that evaluate the objective (h, grad_at): a real loss on both sides (its gradient is the step's
    g), smooth, with a Hessian coupling all leaves."""
    return sum((lib.sin(2 * w + 0.1 * i) / 2 + w * w / 4).sum() for w in ws) + sum(w.sum() for w in ws) ** 2 / 20


def _evaluates_objective(program) -> bool:
    from metaopt.dsl import inputs
    from metaopt.export import program_chain
    return any(inputs.objective_uses(q) for q in program_chain(program))


def _jax_run(program, hp, w0):
    with jax.enable_x64(True):
        opt = to_optax(program, LR_OF.get(program.name, LR), **hp)
        params = {k: jnp.asarray(v) for k, v in w0.items()}
        objective = _evaluates_objective(program)

        def body(carry, i):
            params, state = carry
            g = jax.tree.map(lambda w: _grad(w, i, jnp), params)
            loss = 1 + sum(jnp.sum(w * w) for w in jax.tree.leaves(params)) / 2
            if objective:
                obj_fn = lambda p: _objective(jax.tree.leaves(p), i, jnp)
                loss, g = jax.value_and_grad(obj_fn)(params)
                u, state = opt.update(g, state, params, value=loss, obj_fn=obj_fn)
                return (optax.apply_updates(params, u), state), None
            u, state = opt.update(g, state, params, value=loss)
            return (optax.apply_updates(params, u), state), None

        run = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(STEPS, dtype=jnp.float64))[0][0])
        return {k: np.asarray(v) for k, v in run((params, opt.init(params))).items()}


def _torch_run(program, hp, w0):
    ps = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w0.items()}
    opt = load_class(program)(list(ps.values()), lr=LR_OF.get(program.name, LR), **hp)
    if _evaluates_objective(program):   # the closure recomputes the gradients, with a graph for h
        def closure():
            opt.zero_grad()
            loss = _objective(list(ps.values()), float(i), torch)
            loss.backward(create_graph=True)
            return loss
        for i in range(STEPS):
            opt.step(closure)
        return {k: v.detach().numpy() for k, v in ps.items()}
    for i in range(STEPS):
        for w in ps.values():
            w.grad = _grad(w.detach(), float(i), torch)
        opt.step(lambda: 1 + sum((w.detach() ** 2).sum() for w in ps.values()) / 2)
    return {k: v.detach().numpy() for k, v in ps.items()}


def rel_err(a: dict, b: dict) -> float:
    return max(float(np.max(np.abs(a[k] - b[k])) / max(np.max(np.abs(b[k])), 1e-8)) for k in b)


@pytest.mark.parametrize("case", list(CASES))
def test_library_program_matches_to_optax_float64(case):
    name, hp = CASES[case]
    rng = np.random.default_rng(0)
    w0 = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    program = library.get(name)
    ref, got = _jax_run(program, hp, w0), _torch_run(program, hp, w0)
    assert rel_err(got, w0) > 1e-4, "the parameters did not move"
    err = rel_err(got, ref)
    WORST[case] = err
    print(f"\n{case}: worst relative error over {STEPS} steps = {err:.2e}")
    assert err <= TOL, f"{case}: torch export differs from to_optax by {err:.2e} (relative)"


def test_torch_export_differs_when_a_hyperparameter_differs():
    # near-miss control: the comparison above can fail (a 0.1% change of b2 is seen)
    rng = np.random.default_rng(0)
    w0 = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    p = library.get("adam")
    assert rel_err(_torch_run(p, {"b2": 0.998}, w0), _jax_run(p, {}, w0)) > 1e-4


# ---------------------------------------------------------------- a small MLP, torch vs JAX
def _mlp_data(dtype):
    rng = np.random.default_rng(1)
    init = {"w1": rng.standard_normal((4, 8)) / 2, "b1": np.zeros(8), "w2": rng.standard_normal((8, 3)) / 3,
            "b2": np.zeros(3)}
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 3))
    return {k: v.astype(dtype) for k, v in init.items()}, x.astype(dtype), y.astype(dtype)


def _mlp_loss(p, x, y, lib):
    h = lib.tanh(x @ p["w1"] + p["b1"])
    return ((h @ p["w2"] + p["b2"] - y) ** 2).mean()


def _train_jax(opt, init, x, y, steps):
    params = {k: jnp.asarray(v) for k, v in init.items()}
    state = opt.init(params)

    @jax.jit
    def step(params, state):
        loss, g = jax.value_and_grad(lambda q: _mlp_loss(q, x, y, jnp))(params)
        u, state = opt.update(g, state, params, value=loss)
        return optax.apply_updates(params, u), state

    for _ in range(steps):
        params, state = step(params, state)
    return {k: np.asarray(v) for k, v in params.items()}


def _train_torch(make_opt, init, x, y, steps):
    ps = {k: torch.tensor(v, requires_grad=True) for k, v in init.items()}
    opt = make_opt(list(ps.values()))
    xt, yt = torch.tensor(x), torch.tensor(y)

    def closure():
        opt.zero_grad()
        loss = _mlp_loss(ps, xt, yt, torch)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return {k: v.detach().numpy() for k, v in ps.items()}


@pytest.mark.parametrize("path", sorted(p for p in glob.glob(os.path.join(ROOT, "checkpoints", "programs", "**", "*.opt"),
                                                            recursive=True) if os.path.isfile(p)),
                         ids=lambda p: os.path.relpath(p, os.path.join(ROOT, "checkpoints", "programs")))
def test_discovered_program_trains_an_mlp_like_jax(path):
    program = parse(open(path).read(), filename=path)
    init, x, y = _mlp_data(np.float64)
    with jax.enable_x64(True):
        ref = _train_jax(to_optax(program, 0.1), init, x, y, 50)
    got = _train_torch(lambda ps: load_class(program)(ps, lr=0.1), init, x, y, 50)
    assert rel_err(got, ref) <= TOL
    assert rel_err(got, init) > 1e-3   # it trained


def _import(path):
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("ckpt", sorted(d for d in os.listdir(os.path.join(ROOT, "checkpoints", "lopt"))
                                        if os.path.isdir(os.path.join(ROOT, "checkpoints", "lopt", d))))
def test_learned_optimizer_torch_export_matches_jax(ckpt, tmp_path, capsys):
    from metaopt.learned import load
    path = os.path.join(ROOT, "checkpoints", "lopt", ckpt)
    out = tmp_path / "lopt_torch.py"
    assert cli(["export", f"lopt:{path}", "--format", "torch", "-o", str(out)]) == 0
    weights = tmp_path / "lopt_torch.safetensors"
    assert weights.exists() and weights.read_bytes()[8:9] == b"{"   # safetensors: JSON header, no pickle
    mod = _import(str(out))
    init, x, y = _mlp_data(np.float32)
    ref = _train_jax(load(path), init, x, y, 20)
    got = _train_torch(lambda ps: mod.optimizer(ps), init, x, y, 20)
    moved = rel_err(ref, init)
    assert moved > 1e-4, "the learned optimizer did not move the parameters"
    print(f"\n{ckpt}: moved {moved:.2e}, torch vs jax {rel_err(got, ref):.2e}")
    assert rel_err(got, ref) <= 2e-5, (ckpt, rel_err(got, ref))   # float32: weights, features and the MLP


# ---------------------------------------------------------------- the module itself
_imports = imported_modules


@pytest.mark.parametrize("name", ["adam", "muon", "dadapt_adamw", "conda", "adafactor"])
def test_module_imports_only_torch_and_math(name):
    src = to_torch_source(library.get(name))
    assert _imports(src) <= {"torch", "math"}
    assert f"class {class_name(library.get(name))}(torch.optim.Optimizer)" in src


def test_signature_uses_the_programs_hyperparameters():
    import inspect
    sig = inspect.signature(load_class(library.get("adamw")).__init__)
    assert {k: v.default for k, v in sig.parameters.items() if k not in ("self", "params")} == \
        {"lr": 1e-3, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "wd": 1e-4, "maximize": False, "io_params": ()}


def test_an_op_without_torch_form_is_refused_by_name(monkeypatch):
    monkeypatch.setitem(ops._BY_NAME, "sign", dataclasses.replace(ops.get("sign"), torch=""))
    with pytest.raises(NotImplementedError, match="op 'sign' has no PyTorch form"):
        to_torch_source(library.get("lion"))


def test_cli_exports_a_torch_module(tmp_path, capsys):
    out = tmp_path / "lion_torch.py"
    assert cli(["export", "lion", "--format", "torch", "-o", str(out)]) == 0
    assert "class Lion(torch.optim.Optimizer)" in capsys.readouterr().out
    lion = _import(str(out)).Lion
    model = torch.nn.Linear(3, 1)
    opt = lion(model.parameters(), lr=1e-2, wd=0.0)
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first
