"""Linear and (multinomial) logistic regression on seeded synthetic data with ill-conditioned features.

Convex, cheap tasks whose difficulty is set by the feature covariance's condition number: they test
whether an optimizer copes with curvature, the way the quadratics do, but through a data loss with
real minibatch noise. The features are fixed by the task's seed; the linear *teacher* and its label
noise are drawn per run from the run's key (:func:`tasks.base.per_run_task`), so the minimizer moves
with the seed and no rule that ignores the gradient can know it.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import Task, TaskFamily, key_to_rng, per_run_task
from tasks.data import Dataset, softmax_cross_entropy, supervised_batcher, synthetic_regression
from tasks.registry import register, register_family


def _features(dim: int, n_train: int, n_valid: int, condition: float, seed: int) -> tuple[Dataset, float]:
    """The task's fixed features, and the teacher scale that gives a clean target (or logit) unit variance
    (1 / sqrt(E|x|^2), as :func:`tasks.data.synthetic_regression` scales its own teacher)."""
    data = synthetic_regression(dim, n_train, n_valid, condition, 0.0, seed)
    return data, float(1.0 / np.sqrt(np.mean(np.sum(data.x_train.astype(np.float64) ** 2, axis=1))))


def _with_targets(data: Dataset, y_train: jax.Array, y_valid: jax.Array, num_classes: int) -> Dataset:
    return data._replace(y_train=y_train, y_valid=y_valid, num_classes=num_classes)


def linear_regression(name: str, dim: int = 32, condition: float = 100.0, noise: float = 0.1,
                      n_train: int = 1024, n_valid: int = 256, batch_size: int = 64, seed: int = 0,
                      steps: int = 300, eval_every: int = 50) -> Task:
    """Mean squared error (halved) of a linear model with bias on ``dim`` Gaussian features; targets
    ``x w* + noise * eps`` with the teacher ``w*`` and ``eps`` drawn per run."""
    data, teacher_scale = _features(dim, n_train, n_valid, condition, seed)
    x = jnp.asarray(np.concatenate([data.x_train, data.x_valid]))

    def draw(key: jax.Array):
        teacher_key, noise_key = jax.random.split(key)
        w_star = teacher_scale * jax.random.normal(teacher_key, (dim,), jnp.float32)
        y = x @ w_star + noise * jax.random.normal(noise_key, (n_train + n_valid,), jnp.float32)
        return {"y_train": y[:n_train], "y_valid": y[n_train:]}

    def make(consts):
        def init(key: jax.Array):
            # a small random start, so seeds differ but the starting loss is dominated by the teacher
            return {"w": 0.01 * jax.random.normal(key, (dim,), jnp.float32), "b": jnp.zeros((), jnp.float32)}

        def loss(params, b) -> jax.Array:
            xb, yb = b
            return 0.5 * jnp.mean((xb @ params["w"] + params["b"] - yb) ** 2)

        targets = _with_targets(data, consts["y_train"], consts["y_valid"], 0)
        return init, loss, supervised_batcher(targets, batch_size)

    # one linear layer: it reads the input and is the output layer (io), as for the logistic regression
    return per_run_task(name, draw, make, steps=steps, eval_every=eval_every, io_paths=("w", "b"),
                        description=f"linear regression, {dim} features, condition {condition:g}, noise {noise:g}")


def logistic_regression(name: str, dim: int = 32, num_classes: int = 4, condition: float = 100.0,
                        noise: float = 0.5, n_train: int = 1024, n_valid: int = 256, batch_size: int = 64,
                        seed: int = 0, steps: int = 300, eval_every: int = 50) -> Task:
    """Mean softmax cross-entropy of a linear classifier; labels are the argmax of a noisy linear
    teacher's logits (std 3: learnable, not separable), teacher and Gumbel noise drawn per run."""
    data, teacher_scale = _features(dim, n_train, n_valid, condition, seed)
    x = jnp.asarray(np.concatenate([data.x_train, data.x_valid]))

    def draw(key: jax.Array):
        teacher_key, noise_key = jax.random.split(key)
        w_star = 3.0 * teacher_scale * jax.random.normal(teacher_key, (dim, num_classes), jnp.float32)
        logits = x @ w_star + noise * jax.random.gumbel(noise_key, (n_train + n_valid, num_classes), jnp.float32)
        y = jnp.argmax(logits, axis=1).astype(jnp.int32)
        return {"y_train": y[:n_train], "y_valid": y[n_train:]}

    def make(consts):
        def init(key: jax.Array):
            return {"w": 0.01 * jax.random.normal(key, (dim, num_classes), jnp.float32),
                    "b": jnp.zeros((num_classes,), jnp.float32)}

        def loss(params, b) -> jax.Array:
            xb, yb = b
            return softmax_cross_entropy(xb @ params["w"] + params["b"], yb)

        targets = _with_targets(data, consts["y_train"], consts["y_valid"], num_classes)
        return init, loss, supervised_batcher(targets, batch_size)

    return per_run_task(name, draw, make, steps=steps, eval_every=eval_every, io_paths=("w", "b"),
                        description=f"{num_classes}-class logistic regression, {dim} features, "
                                    f"condition {condition:g}")


register("linreg_d32_c1e2")(lambda: linear_regression("linreg_d32_c1e2", 32, 1e2, seed=11))
register("logreg_d32_k4_c1e2")(lambda: logistic_regression("logreg_d32_k4_c1e2", 32, 4, 1e2, seed=12))
# held out: higher dimension and conditioning than the family draws
register("linreg_d256_c1e4")(lambda: linear_regression("linreg_d256_c1e4", 256, 1e4, n_train=4096,
                                                       n_valid=512, batch_size=128, seed=13, steps=500))
register("smoke_linreg")(lambda: linear_regression("smoke_linreg", 8, 10.0, n_train=128, n_valid=64,
                                                   batch_size=16, seed=14, steps=40, eval_every=20))


class RegressionFamily(TaskFamily):
    """Linear or logistic regression with dim in {8, 16, 32, 64}, condition log-uniform in [1e1, 1e3],
    2 to 8 classes, batch size in {32, 64, 128}."""

    name = "regression"

    def sample(self, key: jax.Array) -> Task:
        rng = key_to_rng(key)
        dim = int(rng.choice([8, 16, 32, 64]))
        cond = float(10 ** rng.uniform(1, 3))
        bs = int(rng.choice([32, 64, 128]))
        seed = int(rng.integers(2**31))
        if rng.uniform() < 0.5:
            noise = float(10 ** rng.uniform(-2, 0))
            return linear_regression(f"linreg_d{dim}_c{cond:.0f}", dim, cond, noise, batch_size=bs, seed=seed)
        k = int(rng.integers(2, 9))
        return logistic_regression(f"logreg_d{dim}_k{k}_c{cond:.0f}", dim, k, cond, batch_size=bs, seed=seed)


register_family("regression")(RegressionFamily)
