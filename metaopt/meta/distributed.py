"""Running workers in-process or as Ray actors behind one interface.

The learner broadcasts θ (and the meta-step, which sets the curriculum stage), every worker returns a
gradient estimate from its own task samples, and the learner averages them (each worker has the same
number of slots, so the plain mean is the mean over all slots: with PES/ES, the antithetic estimator
over every worker's pairs; see metaopt.meta.pes). ``LocalWorkers`` with one worker avoids Ray entirely (tests, laptops);
``RayWorkers`` starts one actor per worker on a local Ray instance or the cluster at ``address``.
"""
from __future__ import annotations

import time

import jax
import numpy as np

from metaopt.meta.config import MetaConfig
from metaopt.meta.worker import MetaWorker


def _average(results):
    grads = [g for g, _ in results]
    grad = jax.tree_util.tree_map(lambda *g: np.mean(np.stack(g), axis=0), *grads)
    metrics = {k: float(np.mean([m[k] for _, m in results])) for k in results[0][1] if k != "task_ids"}
    metrics["task_ids"] = [t for _, m in results for t in m["task_ids"]]
    return grad, metrics


class LocalWorkers:
    def __init__(self, cfg: MetaConfig):
        self.workers = [MetaWorker(cfg, i) for i in range(cfg.workers)]

    def compute(self, theta, step: int = 0):
        return _average([w.compute(theta, step) for w in self.workers])

    def get_states(self):
        return [w.get_state() for w in self.workers]

    def set_states(self, states):
        for w, s in zip(self.workers, states, strict=True):
            w.set_state(s)

    def inner_steps(self) -> int:
        return sum(w.inner_steps for w in self.workers)

    def close(self):
        pass


class RayWorkers:
    def __init__(self, cfg: MetaConfig, address: str | None = None, num_cpus: int | None = None):
        import ray
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            if address:
                ray.init(address=address)
            else:
                ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        actor = ray.remote(num_cpus=1)(MetaWorker)
        self.workers = [actor.remote(cfg, i) for i in range(cfg.workers)]
        self._calls = 0

    def compute(self, theta, step: int = 0, retries: int = 3):
        """Every worker's estimate at θ, averaged. A call Ray reports as *temporarily* unavailable
        (a dropped RPC connection to a live actor; seen on a 2-core machine at load ~20) is
        re-sent with the same call id, which the worker answers at most once (compute_once)."""
        from ray.exceptions import ActorUnavailableError
        theta = jax.tree_util.tree_map(np.asarray, theta)
        ref = self._ray.put(theta)      # one copy of θ in the object store for all workers
        self._calls += 1
        refs = [w.compute_once.remote(ref, self._calls, step) for w in self.workers]
        results = [None] * len(refs)
        for i, (w, r) in enumerate(zip(self.workers, refs)):
            for attempt in range(retries + 1):
                try:
                    results[i] = self._ray.get(r)
                    break
                except ActorUnavailableError:
                    if attempt == retries:
                        raise
                    time.sleep(1.0 + attempt)
                    r = w.compute_once.remote(ref, self._calls, step)
        return _average(results)

    def get_states(self):
        return self._ray.get([w.get_state.remote() for w in self.workers])

    def set_states(self, states):
        self._ray.get([w.set_state.remote(s) for w, s in zip(self.workers, states, strict=True)])

    def inner_steps(self) -> int:
        return sum(self._ray.get([w.count_inner_steps.remote() for w in self.workers]))

    def close(self):
        for w in self.workers:
            self._ray.kill(w)
        if self._started:
            self._ray.shutdown()


def make_workers(cfg: MetaConfig, address: str | None = None, num_cpus: int | None = None):
    if cfg.workers == 1 and not address:
        return LocalWorkers(cfg)
    return RayWorkers(cfg, address, num_cpus)
