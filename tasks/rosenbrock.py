"""The (extended) Rosenbrock function: a curved, badly scaled valley, moved and rescaled per run.

rosen(u) = mean_i [ b (u_{i+1} - u_i^2)^2 + (1 - u_i)^2 ],  b = 100,   minimum 0 at u = 1
f(w)     = rosen(1 + s * (w - c))                                       minimum 0 at w = c

Classic Rosenbrock has its minimum at the guessable all-ones point (``return w - 1`` once solved it
without a gradient), so every run draws a centre ``c ~ N(0, I)`` and a per-coordinate scale ``s``
(a random sign times a log-uniform factor in [0.8, 1.25]) from its key (:func:`tasks.base.per_run_task`).
The map w -> u is diagonal and affine, so the valley keeps its shape and its curvature up to the
factor s^2 in [0.64, 1.56]; the start is the classic point (-1.2, 1, -1.2, 1, ...) in u coordinates.

Averaging over the ``dim - 1`` terms keeps the loss scale independent of ``dim`` (the 2-D case is
the classic function). Optional gradient noise (compare with gradients of O(100) far from the valley
and O(1) near the minimum, so noise ~1 matters only late in training): the train batch is a Gaussian
vector ``n`` and the loss adds ``n . w``, so the gradient is perturbed by exactly ``n`` while the valid
batch (zeros) gives the exact function.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from tasks.base import Task, TaskFamily, check_split, key_to_rng, per_run_task
from tasks.registry import register, register_family

MAX_SCALE = 1.25     # |s| is log-uniform on [1/MAX_SCALE, MAX_SCALE]


def rosen(u: jax.Array) -> jax.Array:
    """The extended Rosenbrock function, averaged over its ``len(u) - 1`` terms."""
    return jnp.mean(100.0 * (u[1:] - u[:-1] ** 2) ** 2 + (1.0 - u[:-1]) ** 2)


def rosenbrock(name: str, dim: int = 2, noise: float = 0.0, init_scale: float = 0.1, steps: int = 300,
               eval_every: int = 50) -> Task:
    """Rosenbrock in ``dim`` dimensions, started near the classic point (-1.2, 1, -1.2, 1, ...)."""
    if dim < 2:
        raise ValueError("rosenbrock needs dim >= 2")
    start = jnp.where(jnp.arange(dim) % 2 == 0, -1.2, 1.0).astype(jnp.float32)   # in u coordinates

    def draw(key: jax.Array):
        centre_key, sign_key, scale_key = jax.random.split(key, 3)
        log_scale = jax.random.uniform(scale_key, (dim,), jnp.float32, -1.0, 1.0) * jnp.log(MAX_SCALE)
        sign = jnp.where(jax.random.bernoulli(sign_key, 0.5, (dim,)), 1.0, -1.0)
        return {"centre": jax.random.normal(centre_key, (dim,), jnp.float32),
                "scale": (sign * jnp.exp(log_scale)).astype(jnp.float32)}

    def make(consts):
        centre, scale = consts["centre"], consts["scale"]

        def init(key: jax.Array):
            u0 = start + init_scale * jax.random.normal(key, (dim,), jnp.float32)
            return {"w": centre + (u0 - 1.0) / scale}

        def batch(key: jax.Array, split: str) -> jax.Array:
            check_split(split)
            if split == "valid" or noise == 0.0:
                return jnp.zeros((dim,), jnp.float32)
            return noise * jax.random.normal(key, (dim,), jnp.float32)

        def loss(params, n) -> jax.Array:
            w = params["w"]
            return rosen(1.0 + scale * (w - centre)) + jnp.dot(n, w)

        return init, loss, batch

    return per_run_task(name, draw, make, steps=steps, eval_every=eval_every,
                        description=f"{dim}-D Rosenbrock (per-run centre and scale), gradient noise {noise:g}")


register("rosenbrock_2d")(lambda: rosenbrock("rosenbrock_2d", 2))
register("rosenbrock_2d_noisy")(lambda: rosenbrock("rosenbrock_2d_noisy", 2, noise=1.0))
register("rosenbrock_100d")(lambda: rosenbrock("rosenbrock_100d", 100, noise=0.1, steps=1000, eval_every=100))
register("smoke_rosenbrock")(lambda: rosenbrock("smoke_rosenbrock", 2, steps=40, eval_every=20))


class RosenbrockFamily(TaskFamily):
    """Rosenbrock with dim in {2, 4, 8, 16} and gradient noise 0 or log-uniform in [1e-2, 1].
    The 100-D held-out task is outside this distribution."""

    name = "rosenbrock"

    def sample(self, key: jax.Array) -> Task:
        rng = key_to_rng(key)
        dim = int(rng.choice([2, 4, 8, 16]))
        noise = 0.0 if rng.uniform() < 0.3 else float(10 ** rng.uniform(-2, 0))
        return rosenbrock(f"rosenbrock_d{dim}_n{noise:.0e}", dim, noise)


register_family("rosenbrock")(RosenbrockFamily)
