"""SVD-based library optimizers (swan, conda) against jax.numpy references of their papers' equations.

Same protocol as tests/test_library_paper.py: 100 closed-loop steps on a pytree with 0-D, 1-D, 2-D (tall, wide,
small) and 3-D leaves, noisy quadratic gradients, max relative error of the final parameters <= 1e-5 (float32).
The references below are written from the papers (and Conda's official code) independently of the DSL helpers.
Singular vectors have arbitrary signs; every compared quantity (U Vᵀ, U f(Uᵀ x) with elementwise-even
second moments) is sign-invariant.
"""
from __future__ import annotations

import math

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

EPS32 = float(np.finfo(np.float32).eps)


def inv_sqrt_whiten64(G) -> np.ndarray:
    """(G Gᵀ)^{+1/2} G in float64 from the eigendecomposition of G Gᵀ (not the SVD the op uses). Pseudo-inverse
    root: eigenvalues below eps32 * lambda_max, i.e. singular values below sqrt(eps32) * s_max (the op's cutoff
    for float32 input), are null directions. This must run in float64: squaring G puts a null eigenvalue at
    ~eps * lambda_max, i.e. right at that cutoff in float32, where one of them landed above it (jax 0.10.2's
    eigh: 1.38e-6 vs cutoff 1.28e-6) and 1/sqrt of it amplified rounding noise to a 2e-4 error; in float64 null
    eigenvalues sit ~1e-16 * lambda_max, nine decades below the cutoff."""
    G = np.asarray(G, np.float64)
    lam, Q = np.linalg.eigh(G @ G.T)
    keep = lam > EPS32 * lam[-1]
    inv = np.where(keep, 1.0 / np.sqrt(np.where(keep, lam, 1.0)), 0.0)
    return (Q * inv) @ (Q.T @ G)


def inv_sqrt_whiten(G):
    """``inv_sqrt_whiten64`` inside traced (jit/scan) reference code, returned in G's dtype."""
    return jax.pure_callback(lambda x: inv_sqrt_whiten64(x).astype(x.dtype), jax.ShapeDtypeStruct(G.shape, G.dtype), G)


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


# ----------------------------------------------------------------------------------------------------------
# Subspace-Momentum (arXiv:2411.07120), the authors' GenericOptim with momentum_type 'sm', second_moment_type
# 'ema' and the SVD projector (GaLore's 'std' side), the momentum restarting at each refresh.
# ----------------------------------------------------------------------------------------------------------

def sign_fixed(q):
    """Columns of q signed so that each one's largest-magnitude entry is positive: the singular vectors' sign is
    open (LAPACK builds differ) and the projected momentum outlives a refresh, so the library fixes it this way."""
    top = q[jnp.argmax(jnp.abs(q), axis=0), jnp.arange(q.shape[1])]
    return q * jnp.where(top < 0, -1.0, 1.0)


def ref_subspace_momentum(b1=0.9, b2=0.999, eps=1e-6, wd=0.0, rank=128, T=200):
    def init(w):
        z = (jnp.zeros_like(w), jnp.zeros_like(w))
        if w.ndim != 2:
            return z
        (r, c), k = w.shape, min(rank, *w.shape)
        tall = r >= c
        return (jnp.zeros((r, k) if tall else (k, c), w.dtype), z[1], jnp.zeros((k, c) if tall else (r, k), w.dtype))

    def step(w, g, s, t, lr):
        if w.ndim != 2:   # GenericOptim's plain-momentum Adam: the same step size and decay, full momentum
            m, v = b1 * s[0] + (1 - b1) * g, b2 * s[1] + (1 - b2) * g * g
            w = w - lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (jnp.sqrt(v) + eps)
            return w - lr * wd * w, (m, v)
        m, v, P = s
        tall = w.shape[0] >= w.shape[1]
        k = P.shape[0] if tall else P.shape[1]
        refresh = (t == 1) | (jnp.mod(t, T) == 0)
        U, _, Vh = jnp.linalg.svd(g, full_matrices=False)
        P = jnp.where(refresh, sign_fixed(Vh[:k].T).T if tall else sign_fixed(U[:, :k]), P)   # 'right' if tall
        proj = (lambda x: x @ P.T) if tall else (lambda x: P.T @ x)
        back = (lambda y: y @ P) if tall else (lambda y: P @ y)
        R = proj(g)
        m = b1 * jnp.where(refresh, 0.0, m) + (1 - b1) * R
        v = b2 * v + (1 - b2) * g * g
        d = (back(m) + (g - back(R))) / (jnp.sqrt(v) + eps) * (jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t))
        w = w - lr * d
        return w - lr * wd * w, (m, v, P)                                  # the code's decay after the step
    return init, step


# ----------------------------------------------------------------------------------------------------------
# COSMOS (arXiv:2502.17410), the authors' COSMOS_for_llama: a rank-r eigenbasis of EMA(G Gᵀ) by one power
# iteration per step, SOAP-like Adam in it, Newton-Schulz (optax.contrib.muon's) on the residual, a normalized
# step. Written for the rows of a tall matrix; a wide leaf runs on its transpose (the program's longer side).
# ----------------------------------------------------------------------------------------------------------

NS_COEFFS = jnp.array([3.4445, -4.7750, 2.0315])


def adam_leaf(w, g, s, t, lr, b1, b2, eps):
    return adamw_leaf(w, g, s, t, lr, b1, b2, eps, 0.0)


def ref_cosmos(b1=0.9, b2=0.96, b3=0.96, eps=1e-8, rank=64, ratio=0.1):
    def init(w):
        z = (jnp.zeros_like(w), jnp.zeros_like(w))
        if w.ndim != 2:
            return z
        big, small = max(w.shape), min(w.shape)
        k = min(rank, small)
        return (jnp.zeros((big, small), w.dtype), jnp.zeros((k, small), w.dtype), jnp.zeros((big, k), w.dtype),
                jnp.zeros((k, k), w.dtype))

    def tall_step(w, g, s, t, lr):
        m, v, P, S = s
        k = P.shape[1]
        W = g @ g.T
        U = jnp.linalg.svd(W)[0][:, :k]                                   # the code: SVD of G Gᵀ at step 1
        Pn = jnp.linalg.qr(b3 * P @ S + (1 - b3) * g @ (g.T @ P))[0]      # mode 'reduced'
        tt = P.T @ Pn
        gp = g.T @ Pn
        first = t == 1
        S = jnp.where(first, (U.T @ W @ U) * (1 - b3), b3 * tt.T @ S @ tt + (1 - b3) * gp.T @ gp)
        P = jnp.where(first, U, Pn)
        m = b1 * m + (1 - b1) * g
        low = P.T @ g
        v = b2 * v + (1 - b2) * low * low
        pm = P.T @ m
        t1 = (lr / (1 - b1 ** t)) * P @ (pm / (jnp.sqrt(v) / jnp.sqrt(1 - b2 ** t) + eps))
        o = optax.contrib._muon.orthogonalize_via_newton_schulz(m - P @ pm, NS_COEFFS)
        c = ratio * math.sqrt(w.size)
        t1 = t1 + c * lr * o / (jnp.linalg.norm(o) + eps)
        return w - c * lr * t1 / (jnp.linalg.norm(t1) + eps), (m, v, P, S)

    def step(w, g, s, t, lr):
        if w.ndim != 2:
            return adam_leaf(w, g, s, t, lr, b1, b2, eps)
        if w.shape[0] >= w.shape[1]:
            return tall_step(w, g, s, t, lr)
        w, s = tall_step(w.T, g.T, s, t, lr)
        return w.T, s
    return init, step


# ----------------------------------------------------------------------------------------------------------
# APOLLO-Mini (arXiv:2412.05270): rank-1 Gaussian projection of the rows, Adam on R = p^T G, one tensor scale
# ||R_t||/||R|| on the full G, the 1.01 norm-growth limiter; AdamW elsewhere. The projection is the program's draw
# (see apollo_mini.opt): p = sqrt(n) * the row means of leaf k's normal at the refresh step (test_library_noise.draw).
# ----------------------------------------------------------------------------------------------------------
def ref_apollo_mini(b1=0.9, b2=0.999, eps=1e-6, wd=0.0, alpha=math.sqrt(128), gamma=1.01, T=200, seed=0):
    from test_library_noise import draw
    index = iter(range(len(SHAPES)))   # init_leaf runs over the leaves in flattened order: leaf k's draws

    def init(w):
        k = jnp.asarray(next(index), jnp.int32)
        if w.ndim != 2:
            return (k, jnp.zeros_like(w), jnp.zeros_like(w))
        n = w.shape[1]
        return (k, jnp.zeros((w.shape[0], 1)), jnp.zeros((1, n)), jnp.zeros((1, n)), jnp.zeros(()))

    def step(w, g, s, t, lr):
        if w.ndim != 2:
            w, ms = adamw_leaf(w, g, s[1:], t, lr, b1, b2, eps, wd)
            return w, (s[0], *ms)
        k, pv, m, v, prev = s
        fresh = jnp.mean(draw(seed, (t - 1).astype(jnp.int32), k, w), axis=1, keepdims=True) * math.sqrt(w.shape[1])
        pv = jnp.where(jnp.mod(t - 1, T) <= 0, fresh, pv)
        r = jnp.sum(pv * g, axis=0, keepdims=True)
        m = b1 * m + (1 - b1) * r
        v = b2 * v + (1 - b2) * r * r
        gt = jnp.linalg.norm(m / (jnp.sqrt(v) + eps)) / (jnp.linalg.norm(r) + 1e-8) * g
        lim = jnp.where(t <= 1, 1.0, jnp.maximum(jnp.linalg.norm(gt) / (prev + 1e-8), gamma) / gamma)
        gt = gt / lim
        d = alpha * gt * (jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t))
        return w - lr * (d + wd * w), (k, pv, m, v, jnp.linalg.norm(gt))
    return init, step


CASES = {
    "swan": ("swan", 1e-2, ref_swan, {}),
    "swan_wd": ("swan", 1e-2, lambda **k: ref_swan(wd=0.1), {"wd": 0.1}),
    "conda": ("conda", 1e-2, ref_conda, {}),
    "conda_T10": ("conda", 1e-2, lambda **k: ref_conda(T=10, wd=0.1, scale=0.5),
                  {"T": 10, "wd": 0.1, "scale": 0.5}),
    # rank < min(m, n) on every matrix leaf; T = 7 refreshes the projector (and restarts the momentum) 14 times
    "subspace_momentum": ("subspace_momentum", 1e-2, ref_subspace_momentum, {"rank": 3, "T": 7, "wd": 0.1,
                                                                           "b1": 0.8}),
    # rank 2 < min(m, n): at rank = min(m, n) the residual is rounding noise, which the normalization amplifies
    "cosmos": ("cosmos", 1e-2, ref_cosmos, {"rank": 2, "b1": 0.8, "b2": 0.99, "b3": 0.9}),
    # T = 7: the projection is redrawn 15 times in 100 steps (the default 200 would draw it once)
    "apollo_mini": ("apollo_mini", 1e-3, ref_apollo_mini, {"T": 7}),
    "apollo_mini_hp": ("apollo_mini", 1e-3, ref_apollo_mini, {"T": 10, "wd": 0.1, "b1": 0.8, "b2": 0.99,
                                                              "alpha": 4.0, "gamma": 1.05, "seed": 2}),
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


def test_apollo_mini_reference_sees_the_draws_and_refreshes():
    """Near misses: another seed's projections, or one projection for the whole run (T = 200), are told apart."""
    got = run_optax(to_optax(library.get("apollo_mini"), learning_rate=1e-3, T=7))
    assert rel_err(got, run_ref(*ref_apollo_mini(T=7, seed=1), 1e-3)) > 1e-3
    assert rel_err(got, run_ref(*ref_apollo_mini(T=200), 1e-3)) > 1e-3


def whiten_tolerance(G) -> float:
    """What float32 can promise for U Vᵀ over the kept singular values s_1 >= ... >= s_r: the SVD is backward
    stable, ‖ΔG‖ <= p(n) eps ‖G‖ with p(n) ~ n = max(shape), and the unitary polar factor moves by at most
    2 ‖ΔG‖ / (s_r + s_r') (R.-C. Li 1995), so ‖ΔW‖ <~ 2 n eps s_1 / s_r. Measured on 21 random row-centred
    matrices up to 12x7: 0.13-0.96 eps s_1 / s_r, so this bound has 2n-15n headroom but is 10-100x below the
    error of a kept null direction (2e-4 above, O(1) in general)."""
    s = np.linalg.svd(np.asarray(G, np.float64), compute_uv=False)
    kept = s[s > np.sqrt(EPS32) * s[0]]
    return 2 * max(G.shape) * EPS32 * kept[0] / kept[-1]


def test_whiten_op_is_the_pseudo_inverse_root():
    from metaopt.dsl import pyhelpers as H
    k = jax.random.split(jax.random.PRNGKey(5), 3)
    for G in (jax.random.normal(k[0], (5, 9)), jax.random.normal(k[1], (9, 5)), jax.random.normal(k[2], (6, 6))):
        W = H.whiten(G)
        np.testing.assert_allclose(W, inv_sqrt_whiten64(G), atol=whiten_tolerance(G))
        np.testing.assert_allclose(W @ W.T if G.shape[0] <= G.shape[1] else W.T @ W,
                                   np.eye(min(G.shape)), atol=1e-5)
    G = jax.random.normal(k[0], (6, 4))
    G = G - G.mean(axis=1, keepdims=True)              # rank 3: one null direction, mapped to 0
    np.testing.assert_allclose(H.whiten(G), inv_sqrt_whiten64(G), atol=whiten_tolerance(G))
    assert np.linalg.matrix_rank(np.asarray(H.whiten(G))) == 3


@pytest.mark.parametrize("shape,rank", [((6, 4), 3), ((4, 6), 2), ((9, 5), 1), ((7, 7), 4)])
def test_whiten_rank_deficient(shape, rank):
    """A product of random factors has exactly ``rank`` nonzero singular values; the float32 SVD returns the
    others at ~eps * s_max, far below the cutoff sqrt(eps) * s_max, so W has exactly ``rank`` unit singular values."""
    from metaopt.dsl import pyhelpers as H
    ka, kb = jax.random.split(jax.random.PRNGKey(sum(shape) + rank))
    G = jax.random.normal(ka, (shape[0], rank)) @ jax.random.normal(kb, (rank, shape[1]))
    W = H.whiten(G)
    np.testing.assert_allclose(W, inv_sqrt_whiten64(G), atol=whiten_tolerance(G))
    s = np.linalg.svd(np.asarray(W, np.float64), compute_uv=False)
    np.testing.assert_allclose(s[:rank], 1.0, atol=1e-5)
    np.testing.assert_allclose(s[rank:], 0.0, atol=1e-5)


def test_matrix_ops_compute_in_float32_for_half_precision():
    """CPU LAPACK has no bf16/f16 SVD: every matrix op runs in float32 and returns the input dtype, equal to the
    float32 op on the same (already rounded) values up to the output's rounding. whiten drops singular values
    below sqrt(eps) * s_max of the *input* dtype, so the null direction a bf16 row-centring leaves (~1e-3 s_max,
    far above float32's cutoff 3.5e-4) maps to ~0 rather than to a unit singular value."""
    from metaopt.dsl import pyhelpers as H
    k = jax.random.split(jax.random.PRNGKey(7), 2)
    tall, wide = jax.random.normal(k[0], (6, 4)), jax.random.normal(k[1], (3, 5))
    for dtype in (jnp.bfloat16, jnp.float16):
        res = float(jnp.finfo(dtype).eps)
        for x in (tall, wide):
            xl = x.astype(dtype)
            x32 = xl.astype(jnp.float32)
            p = H.svd_basis(xl)
            cases = {"orthogonalize": (H.orthogonalize(xl), H.orthogonalize(x32)),
                     "row_normalize": (H.row_normalize(xl), H.row_normalize(x32)),
                     "col_normalize": (H.col_normalize(xl), H.col_normalize(x32)),
                     # the basis itself has arbitrary signs; a projection round trip does not
                     "svd_basis": (H.unproject(p, H.project(p, xl)), x32),
                     "project": (H.project(p, xl), H.project(p.astype(jnp.float32), x32))}
            for op, (low, ref) in cases.items():
                assert low.dtype == dtype, (op, low.dtype)
                np.testing.assert_allclose(np.asarray(low, np.float32), ref, rtol=4 * res, atol=4 * res, err_msg=op)
        g = tall.astype(dtype)
        g = g - g.mean(axis=1, keepdims=True)
        s = np.linalg.svd(np.asarray(H.whiten(g), np.float64), compute_uv=False)
        assert H.whiten(g).dtype == dtype
        np.testing.assert_allclose(s[:3], 1.0, atol=4 * res)
        assert s[3] < 4 * res, s


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
