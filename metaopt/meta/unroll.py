"""Inner-problem state and the K-step truncated unroll every gradient estimator shares.

A particle's inner state is (params, optimizer state, data key, step t, truncation count, the task's
per-run constants: a reset draws a new instance of the task along with new parameters). One
truncation runs K inner steps with the learned optimizer ``opt(θ)`` as a ``lax.scan`` and returns
the truncation's meta-loss

    L(θ) = (1/K) Σ_{k=1..K} φ(ℓ_k),   φ = log (default) or identity,

where ℓ_k is the minibatch train loss before step k, or the validation loss after it, divided by a
per-task ``scale`` (1, or with ``normalize: init`` the task's loss at initialization, :func:`init_loss`).
Non-finite losses are replaced by a large constant so one diverging particle gives a large (not NaN) loss.
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.learned.base import LearnedOptimizer
from tasks.base import Task

BIG_LOSS = 1e6


class InnerState(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array       # data key, advanced every step
    t: jax.Array         # int32: inner steps since the last reset
    trunc: jax.Array     # int32: truncations since the last reset
    consts: Any = ()     # the inner problem's per-run task constants (Task.run_constants), kept to its reset


def fresh_state(lopt: LearnedOptimizer, task: Task, theta, key: jax.Array, trunc0=0, t0=0) -> InnerState:
    """A new inner problem; ``trunc0`` / ``t0`` start its counters part-way (staggered resets)."""
    init_key, data_key = jax.random.split(key)
    consts = task.run_constants(key)
    params = task.bind(consts).init(init_key)
    return InnerState(params, lopt.opt(theta).init(params), data_key, jnp.asarray(t0, jnp.int32),
                      jnp.asarray(trunc0, jnp.int32), consts)


def transform_loss(loss: jax.Array, log_loss: bool) -> jax.Array:
    loss = jnp.where(jnp.isfinite(loss), loss, BIG_LOSS)
    loss = jnp.clip(loss, 0.0, BIG_LOSS)
    return jnp.log(loss + 1e-8) if log_loss else loss


@functools.cache
def init_loss(task: Task, samples: int = 4) -> float:
    """The task's mean minibatch train loss at initialization over ``samples`` runs (run keys split
    from ``PRNGKey(0)``): the per-task normalizer of ``normalize: init``. A constant of the task, so
    it needs no state and a resumed run divides by the same number. Evaluated eagerly even when
    called while an estimator is being traced."""
    def one(key):
        t = task.for_run(key)
        init_key, data_key = jax.random.split(key)
        return t.loss(t.init(init_key), t.batch(data_key, "train"))

    with jax.ensure_compile_time_eval():
        value = float(jnp.mean(jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(0), samples))))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"task {task.name!r}: its loss at initialization is {value}; normalize: init "
                         f"divides by it, so it must be finite and > 0 (use normalize: none)")
    return value


def unroll(lopt: LearnedOptimizer, task: Task, theta, state: InnerState, length: int,
           meta_loss: str = "train", log_loss: bool = True, scale: float = 1.0):
    """Run one truncation; returns (new_state, meta-loss L, mean raw train loss); the meta-loss reads
    ℓ / ``scale`` (see the module docstring), the raw loss is unscaled."""
    opt = optax.with_extra_args_support(lopt.opt(theta))   # rules that ignore `value=` work too
    task = task.bind(state.consts)
    value_and_grad = jax.value_and_grad(task.loss)

    def step(carry, _):
        params, opt_state, key = carry
        key, batch_key, valid_key = jax.random.split(key, 3)
        loss, grads = value_and_grad(params, task.batch(batch_key, "train"))
        updates, opt_state = opt.update(grads, opt_state, params, value=loss)
        params = optax.apply_updates(params, updates)
        target = task.loss(params, task.batch(valid_key, "valid")) if meta_loss == "valid" else loss
        return (params, opt_state, key), (transform_loss(target / scale, log_loss), loss)

    (params, opt_state, key), (meta, raw) = jax.lax.scan(
        step, (state.params, state.opt_state, state.key), None, length=length)
    new = InnerState(params, opt_state, key, state.t + length, state.trunc + 1, state.consts)
    return new, jnp.mean(meta), jnp.mean(jnp.where(jnp.isfinite(raw), raw, BIG_LOSS))


def reset_finished(lopt: LearnedOptimizer, task: Task, theta, state: InnerState, reset_every: int,
                   key: jax.Array, horizon: int | None = None):
    """Re-initialize the inner problem of a particle that has run ``reset_every`` truncations or, with
    ``horizon``, ``horizon`` inner steps (a step count does not change meaning when a curriculum
    changes the truncation length)."""
    done = state.trunc >= reset_every if horizon is None else state.t >= horizon
    new = fresh_state(lopt, task, theta, key)
    state = jax.tree_util.tree_map(lambda n, o: jnp.where(done, n, o), new, state)
    return state, done
