"""Matrix-shaped state (the major/minor kinds, metaopt/dsl/matrix_kinds.py) and the ops on it.

* the ops against numpy (float64) written from their definitions, the tall view of wide leaves included, and the
  inverse root against optax.matrix_inverse_pth_root (optax's coupled Newton iteration);
* kind errors name file, line and column; a leaf that is not 2-D reaching major/minor state is refused with the
  fallback to add; the batched interpreter refuses such programs;
* the standalone export (to_source) of every matrix-state library program equals to_optax with settings that
  cross their refresh intervals, on tall, wide and 1-D leaves.
The library programs themselves are checked against outside references in tests/test_library_matrix.py,
test_library_paper.py (optax's GaLore) and test_library_torch_ref.py (pytorch_optimizer).
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import library, parse, to_optax, to_source
from metaopt.dsl import DSLError
from metaopt.dsl import pyhelpers as H
from metaopt.interpret.encoding import EncodingError, encode

RNG = np.random.default_rng(0)
TALL, WIDE = RNG.standard_normal((5, 3)), RNG.standard_normal((3, 5))


def test_gram_and_lrmul_use_the_tall_view():
    for g in (TALL, WIDE):
        t = g if g.shape[0] >= g.shape[1] else g.T
        np.testing.assert_allclose(H.gram_major(jnp.asarray(g)), t @ t.T, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(H.gram_minor(jnp.asarray(g)), t.T @ t, rtol=1e-6, atol=1e-6)
        a, b = RNG.standard_normal((5, 5)), RNG.standard_normal((3, 3))
        want = a @ t @ b if g is TALL else (a @ t @ b).T     # a wide leaf: (a gᵀ b)ᵀ
        np.testing.assert_allclose(H.lrmul(jnp.asarray(a), jnp.asarray(g), jnp.asarray(b)), want, rtol=1e-5,
                                   atol=1e-5)
        np.testing.assert_allclose(H.lrmul(2.0, jnp.asarray(g), jnp.asarray(b)),
                                   2 * t @ b if g is TALL else (2 * t @ b).T, rtol=1e-5, atol=1e-5)


def test_low_rank_bases():
    for g in (TALL, WIDE):
        u, _, vh = np.linalg.svd(g, full_matrices=False)
        major, minor = (u, vh.T) if g is TALL else (vh.T, u)
        pm, pn = np.asarray(H.svd_major(jnp.asarray(g), 2)), np.asarray(H.svd_minor(jnp.asarray(g), 2))
        assert pm.shape == (5, 5) and pn.shape == (3, 3)
        assert not pm[:, 2:].any() and not pn[:, 2:].any()       # columns past the rank are exactly zero
        np.testing.assert_allclose(pm @ pm.T, major[:, :2] @ major[:, :2].T, atol=1e-5)   # the same subspace
        np.testing.assert_allclose(pn @ pn.T, minor[:, :2] @ minor[:, :2].T, atol=1e-5)
        for q in (pm[:, :2], pn[:, :2]):                        # the fixed sign: largest entry positive
            assert np.all(q[np.argmax(np.abs(q), axis=0), np.arange(2)] > 0)


def test_eigen_and_qr_ops():
    x = RNG.standard_normal((4, 6))
    a = x @ x.T
    lam, q = np.linalg.eigh(a)
    e = np.asarray(H.eigvecs(jnp.asarray(a)))
    np.testing.assert_allclose(np.abs(e), np.abs(q[:, ::-1]), atol=1e-5)     # descending eigenvalues
    want = (q * lam ** -0.25) @ q.T
    np.testing.assert_allclose(H.inv_root(jnp.asarray(a), 4, 0.0), want, rtol=1e-4, atol=1e-4)
    b = RNG.standard_normal((4, 4))
    perm = np.asarray(H.eig_perm(jnp.asarray(a), jnp.asarray(b)))
    est = np.diag(b.T @ a @ b)
    np.testing.assert_array_equal(perm, np.eye(4)[:, np.argsort(-est)])
    qb = np.asarray(H.qr_basis(jnp.asarray(b), 2))
    q2 = np.linalg.qr(b[:, :2])[0]
    assert not qb[:, 2:].any()
    np.testing.assert_allclose(qb[:, :2] @ qb[:, :2].T, q2 @ q2.T, atol=1e-5)


def test_inv_root_matches_optax_coupled_newton():
    """optax.matrix_inverse_pth_root adds ridge_epsilon * lambda_max; inv_root takes the absolute eps."""
    x = RNG.standard_normal((6, 9)).astype(np.float32)
    a = jnp.asarray(x @ x.T / 9)
    ridge = 1e-3
    lam_max = float(np.linalg.eigvalsh(np.asarray(a, np.float64))[-1])
    want, _ = optax.matrix_inverse_pth_root(a, 4, ridge_epsilon=ridge)   # (root, its error estimate)
    np.testing.assert_allclose(H.inv_root(a, 4, ridge * lam_max), want, rtol=2e-3, atol=2e-3)



def test_psgd_triangular_ops():
    """kron.opt's ops: eye, triu, tri_inv (reads the upper triangle only) against numpy; norm_lower_bound (JAX and
    its torch form) against pytorch_optimizer's norm_lower_bound, and below the spectral norm."""
    torch = pytest.importorskip("torch")
    psgd = pytest.importorskip("pytorch_optimizer.optimizer.utils.psgd")
    from metaopt import torch_runtime as TR
    u = np.triu(RNG.standard_normal((5, 5))) + 3 * np.eye(5)
    junk = u + np.tril(RNG.standard_normal((5, 5)), -1)            # the strictly lower part must be ignored
    with jax.enable_x64(True):
        np.testing.assert_allclose(H.tri_inv(jnp.asarray(junk)), np.linalg.inv(u), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(H.triu(jnp.asarray(junk)), u)
        np.testing.assert_array_equal(H.eye(jnp.asarray(junk)), np.eye(5))
        x = RNG.standard_normal((5, 7))
        nlb = jax.jit(H.norm_lower_bound)                             # one compile for the three 5 x 5 cases
        for a in (x @ x.T, RNG.standard_normal((5, 5)), np.zeros((5, 5))):
            want = float(psgd.norm_lower_bound(torch.tensor(a)))
            got, got_torch = float(nlb(jnp.asarray(a))), float(TR._norm_lower_bound(torch.tensor(a)))
            np.testing.assert_allclose([got, got_torch], [want, want], rtol=1e-12, atol=0)
            assert got <= np.linalg.norm(a, 2) * (1 + 1e-12)
        np.testing.assert_allclose(TR._tri_inv(torch.tensor(junk)).numpy(), np.linalg.inv(u), rtol=1e-12, atol=1e-12)

_BAD = {
    "state l: major = 0\nl = g\nreturn g": "a tensor value cannot be stored in major state 'l'",
    "state l: major = 0\nl = interp(l, gram_minor(g), 0.9)\nreturn g": "major value and a minor value do not combine",
    "state l: major = 0\nl = l + gram_major(g)\nreturn g + l": "a tensor value and a major value do not combine",
    "state r: minor = 0\nr = gram_minor(g)\nreturn lrmul(r, g, r)": "needs a major (M x M) matrix or a number",
    "state l: major = 0\nl = gram_major(l)\nreturn g": "gram_major: argument 1 must be a leaf-shaped (tensor) value",
}


@pytest.mark.parametrize("body", list(_BAD))
def test_kind_errors_point_at_the_line(body):
    with pytest.raises(DSLError, match=re.escape(_BAD[body])) as err:
        parse(f"optimizer bad(c = 1)\n{body} * c\n", filename="bad.opt")
    assert "bad.opt:" in str(err.value)


def test_non_2d_leaf_needs_a_fallback():
    p = parse("optimizer m2(c = 1)\nstate l: major = 0\nl = gram_major(g)\nreturn c * lrmul(l, g, 1)\n")
    with pytest.raises(ValueError, match=r"shape \(3,\) reaches it; add `fallback NAME\(...\) when ndim != 2`"):
        to_optax(p, 0.1).init({"w": jnp.zeros((2, 2)), "b": jnp.zeros(3)})
    with pytest.raises(EncodingError, match="major"):   # the batched interpreter skips matrix-shaped state
        encode(p, max_len=16, n_registers=24)


# settings that cross each program's intervals (Shampoo's root, SOAP's QR refresh, the projector refreshes)
EXPORT_CASES = {"shampoo": {"T": 3, "start": 5}, "soap": {"f": 3}, "galore": {"rank": 2, "T": 4},
                "fira": {"rank": 2, "T": 4}, "subspace_momentum": {"rank": 2, "T": 4}, "cosmos": {"rank": 2},
                "kron": {"wd": 0.1}}


@pytest.mark.parametrize("name", list(EXPORT_CASES))
def test_to_source_equals_to_optax(name):
    p, hp = library.get(name), EXPORT_CASES[name]
    ns: dict = {}
    exec(compile(to_source(p), f"<export {name}>", "exec"), ns)
    k = jax.random.split(jax.random.PRNGKey(1), 3)
    params0 = {"t": jax.random.normal(k[0], (5, 3)), "w": jax.random.normal(k[1], (3, 4)),
               "b": jax.random.normal(k[2], (4,))}
    out = []
    for opt in (to_optax(p, 1e-2, **hp), ns[name](1e-2, **hp)):
        params, state = params0, opt.init(params0)
        step = jax.jit(lambda pr, st, i, opt=opt: opt.update(jax.tree.map(lambda x: jnp.cos(2 * x + i), pr), st, pr))
        for i in range(12):
            u, state = step(params, state, i)
            params = optax.apply_updates(params, u)
        out.append(params)
    assert max(float(jnp.max(jnp.abs(out[0][n] - params0[n]))) for n in params0) > 1e-3
    for n in params0:
        np.testing.assert_allclose(out[0][n], out[1][n], rtol=1e-5, atol=1e-6)
