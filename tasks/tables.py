"""Held-out real tabular regression: scikit-learn's bundled ``diabetes`` table (442 patients,
10 baseline variables, disease progression after one year; Efron et al. 2004).

A regression target (the classification tables belong to the ``validation`` suite), few rows, and
a noisy target whose best achievable R^2 is about 0.5: the valid loss (standardised MSE, so predicting
the train mean scores ~1) rewards an optimizer that does not overfit the 353 training rows.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np

from tasks.base import Task
from tasks.data import SPLIT_SEED, VALID_FRACTION, Dataset, supervised_batcher
from tasks.nets import MLP, flax_task
from tasks.registry import register


@functools.cache
def diabetes() -> Dataset:
    """A fixed random 80/20 split; features and target standardised by train-split statistics."""
    from sklearn.datasets import load_diabetes
    raw = load_diabetes()
    x, y = np.asarray(raw.data, np.float64), np.asarray(raw.target, np.float64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_valid = int(round(VALID_FRACTION * len(y)))
    valid, train = np.sort(order[:n_valid]), np.sort(order[n_valid:])
    mu, sd = x[train].mean(0), x[train].std(0)
    x = (x - mu) / sd
    y = (y - y[train].mean()) / y[train].std()
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Dataset(x[train], y[train], x[valid], y[valid], train, valid, 0)


def diabetes_mlp(name: str, width: int, depth: int, act: str, batch_size: int, steps: int,
                 eval_every: int = 100) -> Task:
    """Mean squared error of an MLP regressor on the standardised diabetes target."""
    model = MLP((width,) * depth + (1,), act)
    return flax_task(name, model, jnp.zeros((1, 10), jnp.float32),
                     lambda out, b: jnp.mean((out[:, 0] - b[1]) ** 2),
                     supervised_batcher(diabetes(), batch_size), steps, eval_every,
                     f"diabetes regression MLP, {depth}x{width} {act}, batch {batch_size}")


register("diabetes_mlp")(lambda: diabetes_mlp("diabetes_mlp", 128, 3, "silu", 32, 1000))
register("diabetes_mlp_quick")(lambda: diabetes_mlp("diabetes_mlp_quick", 32, 2, "silu", 32, 300))
