"""SVD-based library optimizers (swan, conda) against jax.numpy references of their papers' equations.

Same protocol as tests/test_library_paper.py: 100 closed-loop steps on a pytree with 0-D, 1-D, 2-D (tall, wide,
small) and 3-D leaves, noisy quadratic gradients, max relative error of the final parameters <= 1e-5 (float32).
The references below are written from the papers (and Conda's official code) independently of the DSL helpers.
Singular vectors have arbitrary signs; every compared quantity (U Vᵀ, U f(Uᵀ x) with elementwise-even
second moments) is sign-invariant.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import library, to_source
from metaopt.compile import to_optax
from quadratic_tree import assert_matches_reference, make_problem, rel_err

STEPS = 100
TOL = 1e-5
SHAPES = {"s": (), "b": (5,), "W": (6, 4), "V": (4, 7), "U": (3, 5), "Q": (4, 4), "T": (2, 3, 5)}


_PROBLEM = make_problem(SHAPES)
PARAMS0, loss_fn, grads_at = _PROBLEM.params0, _PROBLEM.loss_fn, _PROBLEM.grads_at


def run_optax(tx):
    @jax.jit
    def run(params):
        def body(carry, i):
            p, s = carry
            u, s = tx.update(grads_at(p, i), s, p)
            return (optax.apply_updates(p, u), s), None
        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(STEPS))
        return p
    return run(PARAMS0)


def run_ref(init_leaf, step_leaf, lr):
    """step_leaf(w, g, state, t, lr) -> (new w, state), applied leaf by leaf."""
    @jax.jit
    def run(params):
        def body(carry, i):
            p, s = carry
            leaves, tdef = jax.tree.flatten(p)
            t = (i + 1).astype(jnp.float32)
            out = [step_leaf(w, g, st, t, lr) for w, g, st in zip(leaves, jax.tree.leaves(grads_at(p, i)), s)]
            return (tdef.unflatten([o[0] for o in out]), [o[1] for o in out]), None
        s0 = [init_leaf(w) for w in jax.tree.leaves(params)]
        (p, _), _ = jax.lax.scan(body, (params, s0), jnp.arange(STEPS))
        return p
    return run(PARAMS0)


def adamw_leaf(w, g, s, t, lr, b1, b2, eps, wd):
    """optax.adamw (Loshchilov & Hutter, arXiv:1711.05101, with optax's eps placement)."""
    m, v = s
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    return w - lr * ((m / (1 - b1 ** t)) / (jnp.sqrt(v / (1 - b2 ** t)) + eps) + wd * w), (m, v)


# ----------------------------------------------------------------------------------------------------------
# SWAN (Ma et al., arXiv:2412.13148): GradNorm then GradWhitening, stateless; AdamW elsewhere.
# ----------------------------------------------------------------------------------------------------------

def inv_sqrt_whiten(G):
    """(G Gᵀ)^{-1/2} G from the eigendecomposition of G Gᵀ (pseudo-inverse root: eigenvalues below
    sqrt(eps)^2 * lambda_max, i.e. singular values below sqrt(eps) * s_max, are null directions)."""
    lam, Q = jnp.linalg.eigh(G @ G.T)
    keep = lam > jnp.finfo(G.dtype).eps * lam[-1]
    inv = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, lam, 1.0)), 0.0)
    return (Q * inv) @ (Q.T @ G)


def ref_swan(eps=1e-8, b1=0.9, b2=0.999, adam_eps=1e-8, wd=0.0):
    def init(w):
        return (jnp.zeros_like(w), jnp.zeros_like(w))

    def step(w, g, s, t, lr):
        if w.ndim != 2:
            return adamw_leaf(w, g, s, t, lr, b1, b2, adam_eps, wd)
        mu = jnp.mean(g, axis=1, keepdims=True)                     # gbar: mean over the n columns
        sd = jnp.sqrt(jnp.mean((g - mu) ** 2, axis=1, keepdims=True))
        return w - lr * inv_sqrt_whiten((g - mu) / (sd + eps)), s
    return init, step


# ----------------------------------------------------------------------------------------------------------
# Conda (arXiv:2509.24218), official code with proj_type 'std'; the basis is held at its own shape here.
# ----------------------------------------------------------------------------------------------------------

def ref_conda(b1=0.9, b2=0.999, eps=1e-8, wd=0.0, T=2000, scale=1.0):
    def init(w):
        z = (jnp.zeros_like(w), jnp.zeros_like(w))
        if w.ndim != 2:
            return z
        k = min(w.shape)
        return z + (jnp.zeros((k, k), w.dtype),)

    def step(w, g, s, t, lr):
        if w.ndim != 2:
            return adamw_leaf(w, g, s, t, lr, b1, b2, eps, wd)
        m, v, P = s
        tall = w.shape[0] >= w.shape[1]
        m = b1 * m + (1 - b1) * g
        U, _, Vh = jnp.linalg.svd(m, full_matrices=False)
        P = jnp.where(jnp.mod(t - 1, T) == 0, Vh if tall else U, P)     # step % update_proj_gap == 0
        proj = (lambda x: x @ P.T) if tall else (lambda x: P.T @ x)
        back = (lambda y: y @ P) if tall else (lambda y: P @ y)
        gp, mp = proj(g), proj(m)
        v = b2 * v + (1 - b2) * gp * gp
        step_size = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - step_size * scale * back(mp / (jnp.sqrt(v) + eps))
        w = w - lr * wd * w                                          # p.add_(p, alpha=-lr*wd) after the step
        return w, (m, v, P)
    return init, step


CASES = {
    "swan": ("swan", 1e-2, ref_swan, {}),
    "swan_wd": ("swan", 1e-2, lambda **k: ref_swan(wd=0.1), {"wd": 0.1}),
    "conda": ("conda", 1e-2, ref_conda, {}),
    "conda_T10": ("conda", 1e-2, lambda **k: ref_conda(T=10, wd=0.1, scale=0.5),
                  {"T": 10, "wd": 0.1, "scale": 0.5}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_library_matches_reference(case):
    name, lr, ref, hp = CASES[case]
    want = run_ref(*ref(**hp), lr)
    got = run_optax(to_optax(library.get(name), learning_rate=lr, **hp))
    assert_matches_reference(case, got, want, PARAMS0, TOL)


def test_conda_refresh_matters():
    """T=10 refreshes the basis 10 times in 100 steps; the result must differ from a single basis (T=2000)."""
    assert rel_err(run_ref(*ref_conda(T=10), 1e-2), run_ref(*ref_conda(), 1e-2)) > 1e-4


def test_whiten_op_is_the_pseudo_inverse_root():
    from metaopt.dsl import pyhelpers as H
    k = jax.random.split(jax.random.PRNGKey(5), 3)
    for G in (jax.random.normal(k[0], (5, 9)), jax.random.normal(k[1], (9, 5)), jax.random.normal(k[2], (6, 6))):
        W = H.whiten(G)
        np.testing.assert_allclose(W, inv_sqrt_whiten(G), atol=2e-5)
        np.testing.assert_allclose(W @ W.T if G.shape[0] <= G.shape[1] else W.T @ W,
                                   np.eye(min(G.shape)), atol=1e-5)
    G = jax.random.normal(k[0], (6, 4))
    G = G - G.mean(axis=1, keepdims=True)              # rank 3: one null direction, mapped to 0
    np.testing.assert_allclose(H.whiten(G), inv_sqrt_whiten(G), atol=2e-5)
    assert np.linalg.matrix_rank(np.asarray(H.whiten(G))) == 3


@pytest.mark.parametrize("name", ["swan", "conda"])
def test_exported_source_matches_to_optax(name):
    p = library.get(name)
    ns: dict = {}
    exec(compile(to_source(p), f"<export {name}>", "exec"), ns)
    hp = {"T": 3} if name == "conda" else {}
    a = run_optax(to_optax(p, learning_rate=1e-2, **hp))
    b = run_optax(ns[name](1e-2, **hp))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


def test_new_ops_are_not_searchable():
    from metaopt.dsl import ops
    names = {op.name for op in ops.searchable()}
    assert not names & {"whiten", "svd_basis", "project", "unproject", "mod"}
