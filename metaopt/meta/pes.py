"""Persistent evolution strategies (PES; Vicol, Metz & Sohl-Dickstein 2021, "Unbiased gradient
estimation in unrolled computation graphs with persistent evolution strategies").

Each of N antithetic pairs keeps two inner problems, one trained with θ + ε and one with θ − ε,
where a *fresh* ε_τ ~ N(0, σ²I) is drawn every truncation τ. The pair also keeps the accumulated
perturbation ξ = Σ_{τ'≤τ} ε_τ' since its inner problem was last reset. The estimate for
truncation τ is

    ĝ = 1/(2σ²N) Σ_i ξ_i · (L_τ(θ + ε_i) − L_τ(θ − ε_i))

which is unbiased for the gradient of the Gaussian-smoothed meta-loss *including* θ's influence
through all earlier truncations of the same inner run (truncated ES drops that term; see es.py).
Both members of a pair share their data keys (common random numbers), which cancels minibatch
noise in L₊ − L₋. ξ is reset to 0 together with the inner problem.

**Across workers** (metaopt.meta.distributed). Worker w draws every ε from its own key stream,
``fold_in(PRNGKey(seed), 10_000 + w)`` split per meta-step and per slot, so no two workers or slots
reuse a perturbation (independent draws; tests/test_meta_curriculum.py checks they differ), and both
signs of a pair always run on the same worker, from the same inner state. Each of the W workers
returns the mean over its S slots of ĝ above (N pairs each), and the learner takes the plain mean,
so with every slot holding N pairs the result is exactly the antithetic estimator over all WSN pairs:

    (1/WS) Σ_{w,s} 1/(2σ²N) Σ_i ξ_wsi (L₊ − L₋)_wsi  =  1/(2σ²WSN) Σ_{w,s,i} ξ_wsi (L₊ − L₋)_wsi
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.meta.estimator import GradientEstimator, register_estimator
from metaopt.meta.unroll import InnerState


class PESState(NamedTuple):
    pos: InnerState     # [N] inner problems trained with θ + ε
    neg: InnerState     # [N] inner problems trained with θ − ε
    accum: Any          # [N] θ-shaped: ξ, the perturbations accumulated since the last reset


def sample_perturbation(theta, key: jax.Array, n: int, sigma: float):
    """[n]-batched ε ~ N(0, σ²I) shaped like θ."""
    leaves, treedef = jax.tree_util.tree_flatten(theta)
    keys = jax.random.split(key, len(leaves))
    eps = [sigma * jax.random.normal(k, (n, *x.shape), x.dtype) for k, x in zip(keys, leaves)]
    return jax.tree_util.tree_unflatten(treedef, eps)


def antithetic_unrolls(est: GradientEstimator, task, theta, eps, pos: InnerState, neg: InnerState):
    """Unroll every pair: particle i with θ + ε_i from pos[i] and θ − ε_i from neg[i].

    Both signs run as *one* ``vmap`` over 2N (θ + ε stacked on θ − ε): a single ``lax.scan`` of
    batch 2N instead of two scans of batch N halves the sequential step loops per truncation, which
    is what bounds PES throughput on the small tasks meta-training uses (per-step dispatch, not
    FLOPs, dominates there; benchmarks/meta_throughput.py).
    """
    n = jax.tree_util.tree_leaves(eps)[0].shape[0]
    both = jax.tree_util.tree_map(lambda e: jnp.concatenate([e, -e]), eps)
    states = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), pos, neg)

    def run(e, s):
        return est.truncation(task, jax.tree_util.tree_map(jnp.add, theta, e), s)
    new, loss, raw = jax.vmap(run)(both, states)
    pos, neg = (jax.tree_util.tree_map(lambda x: x[:n], new), jax.tree_util.tree_map(lambda x: x[n:], new))
    return pos, neg, loss[:n], loss[n:], 0.5 * (raw[:n] + raw[n:])


def es_combine(directions, l_pos: jax.Array, l_neg: jax.Array, sigma: float):
    """ĝ = 1/(2σ²N) Σ_i d_i (L₊ᵢ − L₋ᵢ) for [N]-batched directions d."""
    w = (l_pos - l_neg) / (2.0 * sigma ** 2 * l_pos.shape[0])
    return jax.tree_util.tree_map(lambda d: jnp.tensordot(w, d, axes=1), directions)


def _along(done: jax.Array, x: jax.Array) -> jax.Array:
    """The [N] mask ``done`` shaped to broadcast against an [N, ...] particle-batched array."""
    return done.reshape((-1,) + (1,) * (x.ndim - 1))


@register_estimator
class PES(GradientEstimator):
    kind = "pes"

    def init(self, task, theta, key):
        particles = self.init_particles(task, theta, key)
        zeros = jax.tree_util.tree_map(
            lambda x: jnp.zeros((self.cfg.num_particles, *x.shape), x.dtype), theta)
        return PESState(particles, particles, zeros)

    def estimate(self, task, theta, state: PESState, key):
        n, sigma = self.cfg.num_particles, self.cfg.sigma
        eps_key, reset_key = jax.random.split(key)
        eps = sample_perturbation(theta, eps_key, n, sigma)
        accum = jax.tree_util.tree_map(jnp.add, state.accum, eps)
        pos, neg, l_pos, l_neg, raw = antithetic_unrolls(self, task, theta, eps, state.pos, state.neg)
        grad = es_combine(accum, l_pos, l_neg, sigma)
        keys = jax.random.split(reset_key, n)
        pos, done = jax.vmap(lambda s, k: self.reset(task, theta, s, k))(pos, keys)
        # the pair restarts from one init: where done, pos now holds that fresh state, so neg takes it
        # (drawing it again for neg, with the same key, would double the cost of every reset)
        neg = jax.tree_util.tree_map(lambda p, q: jnp.where(_along(done, p), p, q), pos, neg)
        accum = jax.tree_util.tree_map(lambda a: jnp.where(_along(done, a), 0.0, a), accum)
        metrics = {"meta_loss": jnp.mean(0.5 * (l_pos + l_neg)), "inner_loss": jnp.mean(raw),
                   "resets": jnp.mean(done.astype(jnp.float32))}
        return grad, PESState(pos, neg, accum), metrics
