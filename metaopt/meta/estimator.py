"""The gradient-estimator interface and registry.

An estimator turns the current meta-parameters θ and its own persistent state (inner problems
mid-training, perturbation accumulators) into an estimate of ∇_θ of the meta-loss on one task:

    state = est.init(task, θ, key)
    grad, state, metrics = est.estimate(task, θ, state, key)

Both methods are pure and jittable with ``task`` static; ``metrics`` holds scalars
(``meta_loss``, ``inner_loss``, ``resets``). Estimators are frozen dataclasses of
(learned optimizer, config), so they hash by value and key jit caches.
"""
from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp

from metaopt.learned.base import LearnedOptimizer
from metaopt.meta.config import EstimatorConfig
from metaopt.meta.unroll import InnerState, fresh_state, init_loss, reset_finished, unroll
from tasks.base import Task

ESTIMATORS: dict[str, type["GradientEstimator"]] = {}


def register_estimator(cls):
    ESTIMATORS[cls.kind] = cls
    return cls


@dataclasses.dataclass(frozen=True, eq=False)
class GradientEstimator(abc.ABC):
    lopt: LearnedOptimizer
    cfg: EstimatorConfig
    kind = "base"

    # by value, so equal estimators share jit caches (the config dataclass itself is mutable)
    def __hash__(self):
        return hash((type(self), self.lopt, dataclasses.astuple(self.cfg)))

    def __eq__(self, other):
        return type(self) is type(other) and self.lopt == other.lopt and self.cfg == other.cfg

    @abc.abstractmethod
    def init(self, task: Task, theta, key: jax.Array):
        """Fresh estimator state for ``task``."""

    @abc.abstractmethod
    def estimate(self, task: Task, theta, state, key: jax.Array):
        """(meta-gradient estimate shaped like θ, new state, metrics dict of scalars)."""

    def reset_every(self, task: Task) -> int:
        """Truncations per inner run on ``task``: ``reset_every``, or with ``horizon: task`` the
        truncations that cover the task's own horizon ``Task.steps`` (a static number per task; the
        reset itself then counts steps, see :meth:`reset`)."""
        if self.cfg.horizon == "task":
            return max(1, -(-task.steps // self.cfg.unroll_length))
        return self.cfg.reset_every

    def loss_scale(self, task: Task) -> float:
        """What the meta-loss divides the task's losses by (``normalize``; unroll.init_loss)."""
        return init_loss(task) if self.cfg.normalize == "init" else 1.0

    def truncation(self, task: Task, theta, state: InnerState):
        """One truncation of ``unroll_length`` steps with this estimator's meta-loss settings."""
        return unroll(self.lopt, task, theta, state, self.cfg.unroll_length, self.cfg.meta_loss,
                      self.cfg.log_loss, self.loss_scale(task))

    def reset(self, task: Task, theta, state: InnerState, key: jax.Array):
        """(state, done): re-initialize a particle whose inner run is over (unroll.reset_finished):
        after ``reset_every`` truncations, or with ``horizon: task`` after ``Task.steps`` inner steps."""
        horizon = task.steps if self.cfg.horizon == "task" else None
        return reset_finished(self.lopt, task, theta, state, self.reset_every(task), key, horizon)

    def init_particles(self, task: Task, theta, key: jax.Array) -> InnerState:
        """``num_particles`` fresh inner problems; with ``stagger``, their truncation counters (with
        ``horizon: task``, their step counters) start spread over one inner run, so resets (and
        training phases) are desynchronized."""
        n = self.cfg.num_particles
        init_key, trunc_key = jax.random.split(key)
        zeros = jnp.zeros((n,), jnp.int32)
        by_steps = self.cfg.horizon == "task"
        spread = (jax.random.randint(trunc_key, (n,), 0, task.steps if by_steps else self.reset_every(task))
                  if self.cfg.stagger else zeros)
        trunc0, t0 = (zeros, spread) if by_steps else (spread, zeros)
        keys = jax.random.split(init_key, n)
        return jax.vmap(lambda k, a, b: fresh_state(self.lopt, task, theta, k, a, b))(keys, trunc0, t0)


def make_estimator(lopt: LearnedOptimizer, cfg: EstimatorConfig) -> GradientEstimator:
    # imported for their registration side effect
    from metaopt.meta import es, pes, tbptt  # noqa: F401
    if cfg.kind not in ESTIMATORS:
        raise KeyError(f"unknown estimator {cfg.kind!r}; known: {sorted(ESTIMATORS)}")
    return ESTIMATORS[cfg.kind](lopt, cfg)


def tree_scale_add(a, b, scale):
    return jax.tree_util.tree_map(lambda x, y: x + scale * y, a, b)
