"""A meta-training worker: owns task samples and their estimator states, returns gradient estimates.

Each worker holds ``slots_per_worker`` slots; a slot is a task (an index into a fixed, seeded
pool of tasks sampled from the train families) plus the estimator's persistent state on it. A
slot keeps its task for ``task_resample_every`` meta-steps, then draws a new one. Drawing from a
fixed pool bounds the number of jit compilations (tasks are static arguments) while still
spreading meta-training over many task samples. The same class runs in-process or as a Ray actor
(metaopt.meta.distributed); its whole state is plain arrays so it checkpoints exactly.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

import tasks
from metaopt.learned.base import build
from metaopt.meta.config import MetaConfig
from metaopt.meta.estimator import make_estimator


def task_pool(cfg: MetaConfig) -> list:
    """The seeded pool of train tasks: sample i comes from family i mod (number of families)."""
    families = tuple(cfg.families) if cfg.families else tuple(tasks.TRAIN_FAMILIES)
    return list(_pool(cfg.seed, families, cfg.task_pool))


@functools.cache
def _pool(seed: int, families: tuple, size: int) -> tuple:
    # cached: the same Task objects across workers in a process share compiled functions
    base = jax.random.PRNGKey(seed)
    return tuple(tasks.get_family(families[i % len(families)]).sample(jax.random.fold_in(base, i))
                 for i in range(size))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _init(est, task, theta, key):
    return est.init(task, theta, key)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _estimate(est, task, theta, state, key):
    return est.estimate(task, theta, state, key)


def to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


class MetaWorker:
    def __init__(self, cfg: MetaConfig, index: int = 0):
        self.cfg, self.index = cfg, index
        self.lopt = build({"architecture": cfg.lopt.architecture, "kwargs": cfg.lopt.kwargs})
        self.est = make_estimator(self.lopt, cfg.estimator)
        self.pool = task_pool(cfg)
        self.key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 10_000 + index)
        self.slots: list[dict] | None = None
        self.inner_steps = 0     # inner steps taken by this worker, all particles counted
        self._last: tuple[int, Any] | None = None   # (call id, result) of the last compute_once

    def estimator(self, step: int):
        """The estimator of meta-step ``step`` (its curriculum stage; one compile per stage and task)."""
        cfg = self.cfg.estimator_at(step)
        if cfg != self.est.cfg:
            self.est = make_estimator(self.lopt, cfg)
        return self.est

    def _compiled(self, idx: int):
        task, est = self.pool[idx], self.est
        return (lambda th, k: _init(est, task, th, k),
                lambda th, s, k: _estimate(est, task, th, s, k))

    def _new_slot(self, theta, key) -> dict:
        pick, init_key = jax.random.split(key)
        idx = int(jax.random.randint(pick, (), 0, len(self.pool)))
        return {"task": idx, "state": self._compiled(idx)[0](theta, init_key), "age": 0}

    def particles_per_slot(self) -> int:
        """Inner problems advanced per slot per meta-step (PES/ES run two per pair)."""
        n = self.cfg.estimator.num_particles
        return 2 * n if self.cfg.estimator.kind in ("pes", "es") else n

    def compute(self, theta, step: int = 0) -> tuple[Any, dict]:
        """Mean gradient estimate over this worker's slots at meta-step ``step`` (which picks the
        curriculum stage), and mean metrics (numpy)."""
        self.estimator(step)
        if self.slots is None:
            keys = jax.random.split(jax.random.fold_in(self.key, 2**31 - 1), self.cfg.slots_per_worker)
            self.slots = [self._new_slot(theta, k) for k in keys]
        self.key, *keys = jax.random.split(self.key, 1 + 2 * len(self.slots))
        grads, metrics = [], []
        for slot, k, k_new in zip(self.slots, keys[0::2], keys[1::2]):
            g, slot["state"], m = self._compiled(slot["task"])[1](theta, slot["state"], k)
            grads.append(g)
            metrics.append(m)
            slot["age"] += 1
            if slot["age"] >= self.cfg.task_resample_every:
                slot.update(self._new_slot(theta, k_new))
        self.inner_steps += len(self.slots) * self.particles_per_slot() * self.est.cfg.unroll_length
        grad = jax.tree_util.tree_map(lambda *g: np.mean(np.stack(g), axis=0), *to_numpy(grads))
        mean = {k: float(np.mean([float(m[k]) for m in metrics])) for k in metrics[0]}
        mean["task_ids"] = [s["task"] for s in self.slots]
        return grad, mean

    def compute_once(self, theta, call_id: int, step: int = 0) -> tuple[Any, dict]:
        """:meth:`compute`, at most once per ``call_id``: a repeated id returns the stored result.

        Ray can report an actor call as failed ("temporarily unavailable": the RPC connection
        dropped, e.g. on an overloaded machine) although the actor ran it; the driver then calls
        again with the same id, and the worker's RNG/particle state advances exactly once.
        """
        if self._last is not None and self._last[0] == call_id:
            return self._last[1]
        result = self.compute(theta, step)
        self._last = (call_id, result)
        return result

    def count_inner_steps(self) -> int:
        return self.inner_steps

    def get_state(self) -> dict:
        slots = None if self.slots is None else [
            {"task": s["task"], "age": s["age"], "state": to_numpy(s["state"])} for s in self.slots]
        return {"key": np.asarray(self.key), "slots": slots, "inner_steps": self.inner_steps}

    def set_state(self, state: dict) -> None:
        self._last = None
        self.key = jax.numpy.asarray(state["key"])
        self.inner_steps = int(state["inner_steps"])
        self.slots = None if state["slots"] is None else [
            {"task": int(s["task"]), "age": int(s["age"]),
             "state": jax.tree_util.tree_map(jax.numpy.asarray, s["state"])} for s in state["slots"]]
