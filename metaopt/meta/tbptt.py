"""Truncated backpropagation through time (TBPTT) meta-gradients.

For each particle, the truncation's meta-loss L(θ) (metaopt.meta.unroll) is differentiated
exactly with ``jax.grad`` through the ``lax.scan`` of K inner steps; the incoming inner state is
treated as a constant, which is what makes the estimate *truncated*: it ignores θ's effect on
earlier truncations and is biased towards short-horizon greedy rules (Wu et al. 2018; Metz et al.
2019, "Understanding and correcting pathologies in the training of learned optimizers"). Its
variance is low, so it is the right tool for short problems and for checking other estimators.

    ĝ = (1/N) Σ_i ∇_θ L_i(θ; s_i)
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

from metaopt.meta.estimator import GradientEstimator, register_estimator


@register_estimator
class TBPTT(GradientEstimator):
    kind = "tbptt"

    def init(self, task, theta, key):
        return self.init_particles(task, theta, key)

    def meta_loss(self, task, theta, state):
        """Mean truncation meta-loss over particles, and (new states, raw losses)."""
        run = lambda s: self.truncation(task, theta, s)
        new, meta, raw = jax.vmap(run)(state)
        return jnp.mean(meta), (new, raw)

    def estimate(self, task, theta, state, key):
        state = jax.lax.stop_gradient(state)
        (loss, (new, raw)), grad = jax.value_and_grad(
            lambda th: self.meta_loss(task, th, state), has_aux=True)(theta)
        keys = jax.random.split(key, self.cfg.num_particles)
        new, done = jax.vmap(lambda s, k: self.reset(task, theta, s, k))(new, keys)
        return grad, new, {"meta_loss": loss, "inner_loss": jnp.mean(raw),
                           "resets": jnp.mean(done.astype(jnp.float32))}
