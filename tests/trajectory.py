"""Shared by the optax-reference tests: run an optax transformation over a fixed gradient sequence and
compare trajectories (tests/test_library_optax.py, test_complex_params.py, test_optax_conformance.py)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def scan_trajectory(tx: optax.GradientTransformation, params, grads, losses, with_value: bool):
    """``(parameters after every step, final state)`` of ``tx`` fed ``grads[i]`` (and ``value=losses[i]``
    for rules that read the loss) at step ``i``; one ``lax.scan``, so jit it once per comparison."""
    def step(carry, xs):
        p, s = carry
        g, loss = xs
        u, s = tx.update(g, s, p, **({"value": loss} if with_value else {}))
        p = optax.apply_updates(p, u)
        return (p, s), p
    (_, state), traj = jax.lax.scan(step, (params, tx.init(params)), (grads, losses))
    return traj, state


def rel_err(a, b, floor: float = 0.1) -> float:
    """max over leaves, steps and elements of |a - b| / max(|b|, floor); a NaN anywhere counts as inf.

    Relative where |b| >= floor, absolute (scaled by 1/floor) below it: the parameters start O(1) and the
    learning rates used move them O(0.1..1) in 100 steps, so the floor only matters for elements crossing
    zero (and for zero-initialised leaves), where a pure relative error would divide by ~0."""
    errs = jax.tree.map(lambda x, y: float(jnp.max(jnp.abs(x - y) / jnp.maximum(jnp.abs(y), floor))), a, b)
    return max(float("inf") if e != e else e for e in jax.tree.leaves(errs))
