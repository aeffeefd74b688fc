"""Antithetic evolution strategies over truncations (truncated ES; Salimans et al. 2017 for the
estimator, Metz et al. 2019 for its use with truncated unrolls).

Both members of each antithetic pair start the truncation from the *same* inner state, so

    ĝ = 1/(2σ²N) Σ_i ε_i · (L_τ(θ + ε_i; s_i) − L_τ(θ − ε_i; s_i))

estimates the gradient of the smoothed truncation loss with the history held fixed — the same
truncation bias as TBPTT, but no backpropagation (constant memory, robust to chaotic unrolls).
With ``reset_every = 1`` it is plain full-unroll antithetic ES, which is unbiased. The particle
continues from the θ + ε member's state (one unroll saved over advancing an unperturbed copy).
"""
from __future__ import annotations


import jax
import jax.numpy as jnp

from metaopt.meta.estimator import GradientEstimator, register_estimator
from metaopt.meta.pes import antithetic_unrolls, es_combine, sample_perturbation


@register_estimator
class ES(GradientEstimator):
    kind = "es"

    def init(self, task, theta, key):
        return self.init_particles(task, theta, key)

    def estimate(self, task, theta, state, key):
        n, sigma = self.cfg.num_particles, self.cfg.sigma
        eps_key, reset_key = jax.random.split(key)
        eps = sample_perturbation(theta, eps_key, n, sigma)
        pos, _, l_pos, l_neg, raw = antithetic_unrolls(self, task, theta, eps, state, state)
        grad = es_combine(eps, l_pos, l_neg, sigma)
        keys = jax.random.split(reset_key, n)
        new, done = jax.vmap(lambda s, k: self.reset(task, theta, s, k))(pos, keys)
        metrics = {"meta_loss": jnp.mean(0.5 * (l_pos + l_neg)), "inner_loss": jnp.mean(raw),
                   "resets": jnp.mean(done.astype(jnp.float32))}
        return grad, new, metrics
