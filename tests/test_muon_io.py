"""Muon orthogonalizes only hidden matrices: the input and output layers (the ``io`` leaf quantity, from
``io_paths``) take its Adam fallback, as Jordan et al. 2024 advise and as optax.contrib.muon routes them when
``muon_weight_dimension_numbers`` is None at those leaves.

* ``to_optax`` and the standalone export, with io paths, against optax.contrib.muon routed the same way
  (50 closed-loop steps on a flax-style tree: embedding, positions, hidden matrices, head, biases);
* ``metaopt.train`` hands a task's ``io_paths`` to a program factory (the embedding's update is Adam's, not
  Newton-Schulz'), and leaves optax factories and transformations alone;
* the torch export routes ``io_params`` (tensors or name prefixes) the same way, against optax (float64);
* io paths change nothing for programs whose predicates do not read ``io``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tasks
from metaopt import library, optax_factory, specs, to_optax, to_source, train
from metaopt.export_torch import class_name
from metaopt.train import takes_io_paths
from quadratic_tree import assert_matches_reference, make_problem, rel_err

STEPS, LR, TOL = 50, 2e-2, 1e-5     # TOL: tests/test_library_paper.py's (muon vs optax.contrib.muon)
SHAPES = {"Embed_0/embedding": (12, 6), "pos": (5, 6), "Block_0/Dense_0/kernel": (6, 8),
          "Block_0/Dense_0/bias": (8,), "Block_0/Dense_1/kernel": (8, 6), "Block_0/Dense_1/bias": (6,),
          "head/kernel": (6, 4), "head/bias": (4,)}
IO = ("Embed_0", "pos", "head")
IO_MATRICES = ("Embed_0/embedding", "pos", "head/kernel")
_FLAT = make_problem(SHAPES)


def nest(flat: dict) -> dict:
    """{"a/b": x} -> {"a": {"b": x}}: the nested dicts flax params are."""
    out: dict = {}
    for path, x in flat.items():
        *outer, last = path.split("/")
        d = out
        for k in outer:
            d = d.setdefault(k, {})
        d[last] = x
    return out


def unnest(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(unnest(v, f"{prefix}{k}/") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


PARAMS0 = nest(_FLAT.params0)


def grads_at(p, i):
    return nest(_FLAT.grads_at(unnest(p), i))


def run(tx):
    @jax.jit
    def go(params):
        def body(carry, i):
            p, s = carry
            u, s = tx.update(grads_at(p, i), s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(STEPS))[0][0]
    return go(PARAMS0)


def routed_dims(params, io=IO):
    """optax.contrib.muon's routing: default dimension numbers at hidden 2-D leaves, None (Adam) elsewhere."""
    flat = unnest(params)
    hidden = lambda p, x: x.ndim == 2 and not any(p == q or p.startswith(q + "/") for q in io)
    return nest({p: optax.contrib.MuonDimensionNumbers() if hidden(p, x) else None for p, x in flat.items()})


def optax_muon(wd=0.0, io=IO):
    return optax.contrib.muon(LR, weight_decay=wd, muon_weight_dimension_numbers=routed_dims(PARAMS0, io))


def test_to_optax_routes_io_layers_like_optax_contrib_muon(wd=0.1):
    want = run(optax_muon(wd))
    got = run(to_optax(library.get("muon"), LR, io_paths=IO, wd=wd))
    assert_matches_reference(f"muon io wd={wd}", got, want, PARAMS0, TOL)
    # not vacuous: Newton-Schulz on the io matrices (optax's default routing) ends elsewhere on each of them
    ns_everywhere = unnest(run(optax.contrib.muon(LR, weight_decay=wd)))
    for p in IO_MATRICES:
        assert rel_err(ns_everywhere[p], unnest(want)[p]) > 1e-3, p


def test_standalone_export_takes_io_paths():
    ns: dict = {}
    exec(compile(to_source(library.get("muon")), "<export muon>", "exec"), ns)
    assert "io_paths" in ns["muon"].__doc__
    assert_matches_reference("export muon io", run(ns["muon"](LR, io_paths=IO)), run(optax_muon()), PARAMS0, TOL)


def test_io_paths_match_whole_keys_and_bad_ones_are_refused():
    # "Block_0/Dense_0" names one hidden layer; "Dense_0" at the top level names nothing here
    one = run(to_optax(library.get("muon"), LR, io_paths=("Block_0/Dense_0",)))
    assert_matches_reference("muon one layer", one, run(optax_muon(io=("Block_0/Dense_0",))), PARAMS0, TOL)
    with pytest.raises(ValueError, match="io path 'Dense_0' matches no parameter"):
        to_optax(library.get("muon"), LR, io_paths=("Dense_0",)).init(PARAMS0)
    with pytest.raises(TypeError, match="not the string 'head'"):
        to_optax(library.get("muon"), LR, io_paths="head")


@pytest.mark.parametrize("name", ["adam", "adafactor", "normuon"])   # no fallback, shape-only, ndim-only
def test_io_paths_change_nothing_for_programs_that_do_not_read_io(name):
    p = library.get(name)
    hp = {"min_dim_size_to_factor": 4} if name == "adafactor" else {}
    base, routed = run(to_optax(p, 1e-2, **hp)), run(to_optax(p, 1e-2, io_paths=IO, **hp))
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(routed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_train_passes_the_tasks_io_paths():
    task = tasks.get("smoke_char_lm")
    assert "Embed_0" in task.io_paths
    factory = specs.resolve("muon").factory
    assert takes_io_paths(factory) and takes_io_paths(optax_factory(library.get("muon")))
    assert not takes_io_paths(optax.adam) and not takes_io_paths(lambda lr: optax.adam(lr))
    key = jax.random.PRNGKey(0)
    init = task.init(jax.random.split(key, 3)[0])          # what train starts from (no per-run constants)
    ref = optax.contrib.muon(LR, muon_weight_dimension_numbers=routed_dims(init, task.io_paths))   # used as is
    params0 = unnest(init)
    # one step, and without the attention key bias: its gradient is zero in exact arithmetic (it shifts every
    # logit of a query alike), so its update is Newton-Schulz of rounding noise, O(lr) in size and in a direction
    # any two implementations (or two XLA emitters for one of them) draw differently
    got, want, no_io = (unnest(train(task, opt, key, 1, 1, learning_rate=LR).params) for opt in
                        (factory, ref, lambda lr: to_optax(library.get("muon"), lr)))
    noise_only = [k for k in want if k.endswith("key/bias")]
    assert noise_only == ["Block_0/SelfAttention_0/key/bias"]
    drop = lambda tree: {k: v for k, v in tree.items() if k not in noise_only}
    # 1e-4, not TOL: the bias leaves start at 0, so their error is that of the update itself, five float32
    # Newton-Schulz iterations of a 2 x 8 matrix (measured 1.6e-5 on the query bias when the two sides are
    # compiled with different fusions); the io routing this test is about moves the embedding by > 1e-3 (below)
    assert_matches_reference("train muon io", drop(got), drop(want), drop(params0), 1e-4)
    emb = "Embed_0/embedding"
    assert rel_err(no_io[emb], want[emb]) > 1e-3     # without the task's io paths: Newton-Schulz on it


# ---------------------------------------------------------------- torch export
def _grad(w, i, lib):
    return lib.cos(2 * w + 0.1 * i) * (1 + 0.5 * lib.sin(w))


def _jax_ref(w0: dict) -> dict:
    with jax.enable_x64(True):
        params = nest({k: jnp.asarray(v) for k, v in w0.items()})
        tx = optax.contrib.muon(LR, muon_weight_dimension_numbers=routed_dims(params))

        def body(carry, i):
            p, s = carry
            u, s = tx.update(jax.tree.map(lambda w: _grad(w, i, jnp), p), s, p)
            return (optax.apply_updates(p, u), s), None

        out = jax.jit(lambda c: jax.lax.scan(body, c, jnp.arange(STEPS, dtype=jnp.float64))[0][0])(
            (params, tx.init(params)))
        return {k: np.asarray(v) for k, v in unnest(out).items()}


def _torch_run(torch, make_opt, w0: dict) -> dict:
    ps = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in w0.items()}
    opt = make_opt(ps)
    for i in range(STEPS):
        for w in ps.values():
            w.grad = _grad(w.detach(), float(i), torch)
        opt.step()
    return {k: v.detach().numpy() for k, v in ps.items()}


def test_torch_export_routes_io_params_like_optax():
    torch = pytest.importorskip("torch")
    from metaopt import to_torch_source
    ns: dict = {}
    program = library.get("muon")
    exec(compile(to_torch_source(program), "<torch muon>", "exec"), ns)
    Muon = ns[class_name(program)]
    assert "io_params" in Muon.__doc__
    rng = np.random.default_rng(0)
    w0 = {k: rng.standard_normal(s) for k, s in SHAPES.items()}
    want = _jax_ref(w0)
    io_leaf = lambda k: any(k == q or k.startswith(q + "/") for q in IO)
    by_tensor = _torch_run(torch, lambda ps: Muon(list(ps.values()), lr=LR,
                                                  io_params=[v for k, v in ps.items() if io_leaf(k)]), w0)
    # by name: torch's named parameters use '.' where the JAX paths use '/'
    by_name = _torch_run(torch, lambda ps: Muon([(k.replace("/", "."), v) for k, v in ps.items()], lr=LR,
                                                io_params=list(IO)), w0)
    plain = _torch_run(torch, lambda ps: Muon(list(ps.values()), lr=LR), w0)
    for case, got in (("tensors", by_tensor), ("names", by_name)):
        err = max(rel_err(got[k], want[k]) for k in want)
        assert err <= TOL, f"torch io_params by {case}: {err:.2e}"
    assert max(rel_err(plain[k], want[k]) for k in IO_MATRICES) > 1e-3    # not vacuous
    with pytest.raises(ValueError, match="matches no parameter name"):
        Muon([("a.w", torch.zeros(2, 2, requires_grad=True))], io_params=["b"])
    with pytest.raises(ValueError, match="not among the optimizer's parameters"):
        Muon([torch.zeros(2, 2, requires_grad=True)], io_params=[torch.zeros(2, 2)])
    with pytest.raises(TypeError, match="not a single one"):
        Muon([torch.zeros(2, 2, requires_grad=True)], io_params="head")
