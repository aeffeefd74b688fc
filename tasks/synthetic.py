"""Held-out workloads on generated data: sparse parity and low-rank matrix completion.

* ``sparse_parity`` (Barak et al. 2022, "Hidden progress in deep learning"): labels are the product of
  ``k`` secret coordinates of a uniform random +-1 vector of ``n`` bits; a one-hidden-layer ReLU MLP is
  trained with the logistic loss on fresh samples every step. The loss plateaus at ln 2 until the
  network finds the secret coordinates, so the horizon to escape is what separates optimizers.
* ``matrix_completion``: recover a rank-``r`` matrix ``M* = U* V*^T`` (unit-variance entries) from a
  fixed set of noisy observed entries by fitting an over-parameterised factorisation ``U V^T`` started
  near zero (the regime of implicit low-rank bias, Gunasekar et al. 2017). The valid loss is the
  squared error on the *unobserved* entries against the clean ``M*``.

``M*`` and its observed set are drawn per run from the run's key (:func:`tasks.base.per_run_task`);
zero, where a rule that ignores the gradient and decays ``w`` ends up, is a saddle, not a solution.
The parity's secret coordinates come from a fixed data seed: no parameter vector that a rule blind
to the gradient could reach computes a parity of them, so nothing is gained by drawing them per run.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Task, check_split, per_run_task
from tasks.nets import MLP
from tasks.registry import register

PARITY_DATA_SEED = 0


def _parity_samples(key: jax.Array, n: int, bits: int, secret: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = jnp.where(jax.random.bernoulli(key, 0.5, (n, bits)), 1.0, -1.0)
    return x, jnp.prod(x[:, secret], axis=1)


def sparse_parity(name: str, bits: int, k: int, width: int, batch_size: int, steps: int,
                  eval_every: int = 100, valid_size: int = 2048) -> Task:
    """Mean logistic loss ``softplus(-y f(x))`` of an MLP on (n=bits, k)-sparse parity, online data."""
    rng = np.random.default_rng(PARITY_DATA_SEED)
    secret = jnp.asarray(np.sort(rng.choice(bits, size=k, replace=False)))
    valid = _parity_samples(jax.random.PRNGKey(PARITY_DATA_SEED), valid_size, bits, secret)
    model = MLP((width, 1), "relu")

    def batch(key: jax.Array, split: str):
        check_split(split)
        if split == "valid":
            return valid
        return _parity_samples(key, batch_size, bits, secret)

    def init(key: jax.Array):
        return model.init(key, jnp.zeros((1, bits)))["params"]

    def loss(params, b) -> jax.Array:
        x, y = b
        return jnp.mean(jax.nn.softplus(-y * model.apply({"params": params}, x)[:, 0]))

    return Task(name, init, loss, batch, steps=steps, eval_every=eval_every, io_paths=model.io_paths,
                description=f"({bits}, {k})-sparse parity, MLP width {width} ReLU, online batches of {batch_size}")


def matrix_completion(name: str, rows: int, cols: int, rank: int, fit_rank: int, observed: float,
                      noise: float, batch_size: int, steps: int, eval_every: int = 100,
                      init_scale: float = 0.1) -> Task:
    """Mean squared error of ``(U V^T)_ij`` on minibatches of observed entries (drawn with replacement).

    ``M*``, which ``round(observed * rows * cols)`` entries are observed, and their noise are drawn per
    run (:func:`tasks.base.per_run_task`): a fixed ``M*`` would make one parameter vector the answer
    to every run.
    """
    n_obs = int(round(observed * rows * cols))

    def draw(key: jax.Array):
        k_u, k_v, k_perm, k_noise = jax.random.split(key, 4)
        truth = jax.random.normal(k_u, (rows, rank)) @ jax.random.normal(k_v, (rank, cols)) / np.sqrt(rank)
        order = jax.random.permutation(k_perm, rows * cols)
        obs, hid = order[:n_obs], order[n_obs:]
        flat = truth.reshape(-1)
        return {"obs": obs, "obs_value": flat[obs] + noise * jax.random.normal(k_noise, (n_obs,)),
                "hid": hid, "hid_value": flat[hid]}

    def make(consts):
        train = (consts["obs"] // cols, consts["obs"] % cols, consts["obs_value"])
        valid = (consts["hid"] // cols, consts["hid"] % cols, consts["hid_value"])

        def batch(key: jax.Array, split: str):
            check_split(split)
            if split == "valid":
                return valid
            idx = jax.random.randint(key, (batch_size,), 0, n_obs)
            return tuple(a[idx] for a in train)

        def init(key: jax.Array):
            # U V^T starts with entries of order init_scale^2 * sqrt(fit_rank): near the saddle at zero
            k_u, k_v = jax.random.split(key)
            return {"u": init_scale * jax.random.normal(k_u, (rows, fit_rank)),
                    "v": init_scale * jax.random.normal(k_v, (cols, fit_rank))}

        def loss(params, b) -> jax.Array:
            i, j, v = b
            pred = jnp.sum(params["u"][i] * params["v"][j], axis=-1)
            return jnp.mean((pred - v) ** 2)

        return init, loss, batch

    # io_paths empty: U and V are the two factors of one bilinear map, both hidden (no layer reads a raw
    # input or produces the output on its own), so Muon orthogonalizes both
    return per_run_task(name, draw, make, steps=steps, eval_every=eval_every,
                        description=f"{rows}x{cols} rank-{rank} matrix completion (per-run M*), {observed:.0%} "
                                    f"observed, noise {noise:g}, factorisation rank {fit_rank}, batch {batch_size}")


# --- registration: (heldout tier, quick tier) ---------------------------------------------------

register("sparse_parity")(lambda: sparse_parity("sparse_parity", 30, 3, 256, 128, 2000, 200))
register("sparse_parity_quick")(lambda: sparse_parity("sparse_parity_quick", 16, 3, 64, 64, 600))
register("matrix_completion")(lambda: matrix_completion("matrix_completion", 96, 96, 4, 8, 0.3, 0.05,
                                                        128, 3000, 200))
register("matrix_completion_quick")(lambda: matrix_completion("matrix_completion_quick", 48, 48, 3, 6, 0.4,
                                                              0.05, 64, 600))
