"""The test problem shared by the library-reference tests: a pytree of leaves of the given shapes (0-D to
3-D), a non-negative separable quadratic loss over it (MoMo's lower bound 0 holds), and noisy gradients
that are the same for every optimizer at step i."""
from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np


def make_problem(shapes: dict[str, tuple[int, ...]]) -> SimpleNamespace:
    def tree(key, scale=1.0):
        ks = jax.random.split(key, len(shapes))
        return {n: scale * jax.random.normal(k, s, jnp.float32) for (n, s), k in zip(sorted(shapes.items()), ks)}

    params0 = tree(jax.random.PRNGKey(0))
    target = tree(jax.random.PRNGKey(1))
    curv = jax.tree.map(lambda x: 0.5 + jnp.abs(x), tree(jax.random.PRNGKey(2)))
    noise_key = jax.random.PRNGKey(3)

    def loss_fn(p):
        return sum(0.5 * jnp.sum(h * (x - c) ** 2) for x, c, h in zip(
            jax.tree.leaves(p), jax.tree.leaves(target), jax.tree.leaves(curv)))

    def grads_at(p, i):
        noise = tree(jax.random.fold_in(noise_key, i), scale=0.1)
        return jax.tree.map(jnp.add, jax.grad(loss_fn)(p), noise)

    def objective(i):
        """Step i's minibatch loss, ``obj_fn`` of rules that evaluate the objective: its gradient is
        ``grads_at(p, i)`` and its Hessian the diagonal ``curv`` (so Hutchinson's z * (H z) is exactly curv)."""
        noise = tree(jax.random.fold_in(noise_key, i), scale=0.1)
        return lambda p: loss_fn(p) + sum(jnp.sum(n * x) for n, x in zip(jax.tree.leaves(noise), jax.tree.leaves(p)))

    return SimpleNamespace(tree=tree, params0=params0, loss_fn=loss_fn, grads_at=grads_at, objective=objective,
                           curv=curv)


def rel_err(a, b) -> float:
    """Largest per-leaf max |a − b| ÷ max |b| (b floored at 1e-6)."""
    return max(float(jnp.max(jnp.abs(x - y)) / jnp.maximum(jnp.max(jnp.abs(y)), 1e-6))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def assert_matches_reference(case: str, got, want, params0, tol: float) -> None:
    """The reference moved away from params0 (else the comparison is vacuous), ours is finite,
    and ours equals the reference within ``tol`` relative error."""
    moved = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(params0)))
    assert moved > 1e-3, f"{case}: the reference barely moved ({moved})"
    for leaf in jax.tree.leaves(got):
        assert np.all(np.isfinite(np.asarray(leaf)))
    err = rel_err(got, want)
    print(f"{case}: max rel err {err:.2e}")
    assert err <= tol, f"{case}: max relative error {err:.3e} > {tol}"
