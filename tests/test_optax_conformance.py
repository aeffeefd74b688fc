"""Exported rules behave like optax's own.

The properties optax's ``optax/_src/alias_test.py`` checks for each of its optimizers, run over every library
program (``library.names()``, so a new ``.opt`` file is enrolled automatically): bfloat16/float16 parameters keep
their dtype, the jitted update does not retrace on a second call, and ``optax.inject_hyperparams`` under ``jit``
(every numeric hyperparameter injected) gives the plain ``to_optax`` updates. Then the optax wrappers
(``MultiSteps``, ``chain``, ``masked``, ``partition``, ``contrib.schedule_free``, ``contrib.mechanize``) around a
program against the same wrapper around optax's own optimizer, on tests/test_library_optax.py's 100-step problem
with its metric and tolerance.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
from metaopt import library
from metaopt.compile import optax_factory, static_hyperparams
from test_library_optax import PARAMS, TOL, _trajectory, rel_err

NAMES = library.names()
LR = 1e-2
STEPS = 3
# Small trees: compilation dominates (one jit per program and tree). 1-D leaves reach every fallback, 2-D ones
# (tall and wide) the matrix and factored ops, the 3-D one adamp_conv's own branch.
F32_TREE = {"b": ((3,), jnp.float32), "W": ((4, 3), jnp.float32), "T": ((2, 2, 3), jnp.float32)}
LOW_TREE = {"b": ((3,), jnp.bfloat16), "W": ((4, 3), jnp.bfloat16), "V": ((3, 5), jnp.float16)}
# Where low precision legitimately gives non-finite updates (the dtype is still checked).
NONFINITE_LOW = {"dadapt_adamw": "eps = 1e-8 and d0 * g underflow float16: optax.contrib.dadapt_adamw gives the "
                                 "same NaN on float16 parameters",
                 "adamomentum": "its only eps (1e-8, inside v) and (1-b2)*m^2 of a small m underflow float16: "
                                "m_hat/sqrt(0)",
                 "ivon": "its default ess = 1e6 (a data-set size) overflows float16 (max 65504): sigma = 0, hhat = 0/0"}


def _tree(spec, key: int):
    keys = jax.random.split(jax.random.PRNGKey(key), len(spec))
    return {n: jax.random.normal(k, shape).astype(dtype) for (n, (shape, dtype)), k in zip(spec.items(), keys)}


def _objective(params):
    """obj_fn for rules that evaluate the objective (h, grad_at): smooth, coupling the leaves."""
    xs = [jnp.asarray(x, jnp.float32) for x in jax.tree.leaves(params)]
    return sum(jnp.sum(jnp.sin(x) + 0.5 * x * x) for x in xs) + 0.1 * sum(jnp.sum(x) for x in xs) ** 2


def _run(tx, spec, jit: bool = True):
    """``STEPS`` calls of one ``jax.jit(tx.update)`` (or of ``tx.update`` op by op) with new gradients,
    parameters, state and loss each time: the updates, the states (after init and after each step) and how
    often the update was traced."""
    traces = []

    def update(grads, state, params, value):
        traces.append(1)   # under jit this runs only while tracing
        return tx.update(grads, state, params, value=value, obj_fn=_objective)

    step = jax.jit(update) if jit else update
    params = _tree(spec, 0)
    states, updates = [tx.init(params)], []
    for i in range(STEPS):
        value = jnp.asarray(1.0 + 0.25 * i, jnp.float32)
        u, s = step(_tree(spec, i + 1), states[-1], params, value)
        params = optax.apply_updates(params, u)
        updates.append(u)
        states.append(s)
    if jit:
        assert step._cache_size() == 1
    return updates, states, len(traces)


def _dtypes(tree):
    return jax.tree.map(lambda x: jnp.asarray(x).dtype, tree)


@functools.lru_cache(maxsize=None)
def _half_precision_run(name):
    return _run(metaopt.to_optax(library.get(name), LR), LOW_TREE)


@pytest.mark.parametrize("name", NAMES)
def test_no_retrace_on_second_call(name):
    """On the bf16/f16 tree, where a weakly typed or promoted state value would change the state's dtypes."""
    _, _, traces = _half_precision_run(name)
    assert traces == 1, f"{name}: the update was traced {traces} times in {STEPS} calls"


@pytest.mark.parametrize("name", NAMES)
def test_half_precision_params_keep_their_dtype(name):
    """bf16 and f16 leaves in one tree: updates and state keep their dtypes (matrix ops, e.g. conda's and swan's
    SVD, compute in float32 and cast back)."""
    updates, states, _ = _half_precision_run(name)
    for u in updates:
        assert _dtypes(u) == {n: dtype for n, (_, dtype) in LOW_TREE.items()}
    assert all(jax.tree.structure(s) == jax.tree.structure(states[0]) for s in states)
    assert all(_dtypes(s) == _dtypes(states[0]) for s in states), f"{name}: state dtypes drift"
    if name not in NONFINITE_LOW:
        for leaf in jax.tree.leaves(updates):
            assert np.all(np.isfinite(np.asarray(leaf, np.float32))), f"{name}: non-finite update"


def _perturbed(name) -> dict[str, float]:
    """Every hyperparameter 5% below its default (signs, zeros and on/off flags kept), so an injected value that
    were ignored in favour of the default would show."""
    return {n: 0.95 * v for n, v in library.get(name).hyperparams}


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_under_jit_matches_plain(name):
    """optax's alias_test bar (updates rtol 1e-3, states rtol 1e-4), over 3 steps instead of 1. The difference
    is not zero: injected hyperparameters are float32 arrays (optax casts them to the parameters' dtype), so
    ``1 - b`` rounds as ``1 - f32(b)`` rather than ``f32(1 - b)``, a relative change of up to eps32 / (1 - b)
    (1.2e-4 for b = 0.999); measured at most 8.3e-5 (came) on the updates."""
    program = library.get(name)
    static = static_hyperparams(program)
    hp = _perturbed(name)
    tx = optax.inject_hyperparams(optax_factory(program), static_args=static)(learning_rate=LR, **hp)
    injected = set(tx.init(_tree(F32_TREE, 0)).hyperparams)
    assert injected == {"learning_rate", *program.defaults} - set(static)
    updates, states, traces = _run(tx, F32_TREE)
    assert traces == 1
    # the reference: plain to_optax with Python-float hyperparameters, op by op (a compile per program saved)
    want_updates, want_states, _ = _run(metaopt.to_optax(program, LR, **hp), F32_TREE, jit=False)
    for leaf in jax.tree.leaves(want_updates):
        assert np.all(np.isfinite(np.asarray(leaf))), f"{name}: non-finite reference"
    for got, want in zip(updates, want_updates):
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-9)
    for got, want in zip(states[1:], want_states[1:]):
        for a, b in zip(jax.tree.leaves(got.inner_state), jax.tree.leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-9)


def test_structural_hyperparameters_are_declared():
    """Only a hyperparameter that decides which leaves a fallback takes must stay a Python number; under jit an
    injected (traced) one is refused with its name, unless it is declared static."""
    found = {n: static_hyperparams(library.get(n)) for n in NAMES if static_hyperparams(library.get(n))}
    assert found == {"adafactor": ("min_dim_size_to_factor",)}
    tx = optax.inject_hyperparams(optax_factory(library.get("adafactor")))(learning_rate=LR)
    tx.init(_tree(F32_TREE, 0))   # outside jit the injected array is concrete, which is fine
    with pytest.raises(TypeError, match="min_dim_size_to_factor.*static_args"):
        jax.jit(tx.init)(_tree(F32_TREE, 0))


# --- optax wrappers around a program vs around optax's own optimizer -----------------------------------------------
LABELS = {"scalar": "sgd", "vec": "adam", "mat": "adam", "cube": "momentum", "dead": "adam", "zero": "sgd"}
MASK = {n: label == "adam" for n, label in LABELS.items()}


def _base(kind: str, name: str, **hp):
    """Library program ``name`` (kind "metaopt") or optax's own equivalent (kind "optax"), learning rate 0.03."""
    if kind == "metaopt":
        return metaopt.to_optax(library.get(name), 0.03, **hp)
    if name == "momentum":
        return optax.sgd(0.03, momentum=hp.get("mu", 0.9))
    return {"adam": optax.adam, "sgd": optax.sgd}[name](0.03, **hp)


WRAPPERS = {
    "MultiSteps": lambda kind: optax.MultiSteps(_base(kind, "adam"), every_k_schedule=3),
    "chain": lambda kind: optax.chain(optax.clip_by_global_norm(1.0), _base(kind, "adam"),
                                      optax.add_decayed_weights(1e-3)),
    "masked": lambda kind: optax.masked(_base(kind, "adam"), MASK),
    "partition": lambda kind: optax.partition({lab: _base(kind, lab) for lab in set(LABELS.values())}, LABELS),
    # schedule-free AdamW's recipe: the base is Adam without momentum (b1 moves into the averaging)
    "schedule_free": lambda kind: optax.contrib.schedule_free(_base(kind, "adam", b1=0.0), 0.03, b1=0.9),
    "mechanize": lambda kind: optax.contrib.mechanize(_base(kind, "adam")),
}


# Mechanic amplifies any change of its base updates ~1000-fold on this problem: a 1e-6 relative change of
# optax.adam's own learning rate moves optax's mechanize result by 1.1e-3 (rel_err). The base updates agree to
# 5e-7 (adam vs optax.adam, as in test_library_optax), so its bar is 2e-3, which a base that differs in one
# detail (b2 0.99 instead of 0.999) must miss.
WRAPPER_TOL = {"mechanize": 2e-3}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_wrapper_matches_optax(wrapper):
    wrap = WRAPPERS[wrapper]
    txs = [wrap("metaopt"), wrap("optax")]
    if wrapper == "mechanize":
        txs.append(optax.contrib.mechanize(optax.adam(0.03, b2=0.99)))
    ours, theirs, *missed = jax.jit(lambda: [_trajectory(tx, False) for tx in txs])()
    moved = max(float(jnp.max(jnp.abs(theirs[n][-1] - PARAMS[n]))) for n in PARAMS)
    assert moved > 1e-3, f"{wrapper}: the reference did not move"
    tol = WRAPPER_TOL.get(wrapper, TOL)
    err = rel_err(ours, theirs)
    assert err <= tol, f"{wrapper}: max relative error {err:.3g} > {tol}"
    for near_miss in missed:
        assert rel_err(near_miss, theirs) > 10 * tol, f"{wrapper}: the bar does not tell b2 = 0.99 from 0.999"
