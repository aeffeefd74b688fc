"""Random ill-conditioned quadratics with noisy gradients.

f(w) = 1/2 (w - w*)^T H (w - w*) / dim, H = Q diag(λ) Q^T with λ log-spaced on [1, κ]. The spectrum is
the task; the rotation Q (Haar-random) and the minimizer w* ~ N(0, I) are drawn per run from the run's
key (:func:`tasks.base.per_run_task`), so no rule that ignores the gradient can know where w* is. The
train split adds Gaussian noise to the target (minibatch noise); the valid split evaluates the exact loss.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Task, TaskFamily, check_split, key_to_rng, per_run_task
from tasks.registry import register, register_family


def random_rotation(key: jax.Array, dim: int) -> jax.Array:
    """A Haar-distributed orthogonal matrix: QR of a Gaussian matrix, columns signed by diag(R)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim), jnp.float32))
    return q * jnp.sign(jnp.diagonal(r))


def quadratic(name: str, dim: int = 32, condition: float = 100.0, noise: float = 0.1, seed: int = 0,
              steps: int = 300, eval_every: int = 50) -> Task:
    """``seed`` separates tasks that share a shape: it is folded into every run's key."""
    eig = jnp.asarray(np.logspace(0.0, np.log10(condition), dim), jnp.float32)

    def draw(key: jax.Array):
        rot_key, target_key = jax.random.split(jax.random.fold_in(key, seed))
        return {"rotation": random_rotation(rot_key, dim),
                "target": jax.random.normal(target_key, (dim,), jnp.float32)}

    def make(consts):
        def init(key):
            return {"w": jax.random.normal(key, (dim,), jnp.float32)}

        def batch(key, split):
            check_split(split)
            if split == "valid":
                return jnp.zeros((dim,), jnp.float32)
            return noise * jax.random.normal(key, (dim,), jnp.float32)

        def loss(params, shift):
            z = (params["w"] - consts["target"] - shift) @ consts["rotation"]   # Q^T d: H's eigenbasis
            return 0.5 * jnp.sum(eig * z * z) / dim

        return init, loss, batch

    return per_run_task(name, draw, make, steps=steps, eval_every=eval_every,
                        description=f"{dim}-D quadratic, condition {condition:g}, gradient noise {noise:g}")


class QuadraticFamily(TaskFamily):
    """Quadratics with log-uniform condition number in [1e1, 1e4] and random dimension."""

    name = "quadratic"

    def sample(self, key) -> Task:
        rng = key_to_rng(key)
        dim = int(rng.choice([8, 16, 32, 64]))
        cond = float(10 ** rng.uniform(1, 4))
        noise = float(10 ** rng.uniform(-2, -0.5))
        seed = int(rng.integers(2**31))
        return quadratic(f"quadratic_d{dim}_c{cond:.0f}", dim, cond, noise, seed)


register("quadratic_c1e2")(lambda: quadratic("quadratic_c1e2", 32, 1e2, 0.1, seed=1))
register("quadratic_c1e4")(lambda: quadratic("quadratic_c1e4", 32, 1e4, 0.1, seed=2))
register("smoke_quadratic")(lambda: quadratic("smoke_quadratic", 8, 10.0, 0.05, seed=3, steps=60, eval_every=20))
register_family("quadratic")(QuadraticFamily)
