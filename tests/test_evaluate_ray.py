"""Cells on Ray: a worker process that dies mid-cell is retried, first by Ray (max_retries), then by the
driver (catch WorkerCrashedError and resubmit), and the cell finishes and is saved."""
import os

import jax.numpy as jnp
import optax
import pytest

from metaopt.evaluate import EvalConfig, evaluate
from metaopt.specs import OptimizerSpec
from tasks import Task


def crashing_task(counter: str, crashes: int) -> Task:
    """A tiny quadratic whose init kills its worker process the first ``crashes`` times it is traced.

    The attempt count lives in a file, so it survives the dead worker and is shared with the test.
    """
    def init(key):
        with open(counter, "a+") as fh:
            fh.seek(0)
            attempt = len(fh.read().splitlines()) + 1
            fh.write(f"{os.getpid()}\n")
        if attempt <= crashes:
            os._exit(1)   # no exception, no cleanup: the worker process just disappears
        return {"w": jnp.ones(2)}

    return Task("crashy_quadratic", init, lambda p, b: 0.5 * jnp.sum(p["w"] ** 2) + 0.0 * b,
                lambda key, split: jnp.zeros(()), steps=20, eval_every=10)


@pytest.fixture
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_killed_worker_cell_is_retried_and_finishes(ray_local, tmp_path):
    counter = str(tmp_path / "attempts.txt")
    # max_retries=1: attempt 1 crashes and Ray retries; attempt 2 crashes too, so Ray gives up with
    # WorkerCrashedError and the driver resubmits; attempt 3 succeeds.
    cfg = EvalConfig(out=str(tmp_path / "run"), reference="sgd", seeds=3, tune_seeds=2, grid_points=9,
                     max_widen=0, max_retries=1, use_ray=True)
    spec = OptimizerSpec("sgd", optax.sgd, 0.1, "custom")
    res = evaluate(cfg, specs=[spec], task_objs=[crashing_task(counter, crashes=2)], progress=False,
                   log=lambda s: None)
    pids = open(counter).read().split()
    assert len(pids) == 3 and len(set(pids)) == 3        # three attempts, each in a fresh worker process
    assert res.errors == {} and res.computed == 1
    cell = res.cells[0]
    assert cell["final"]["mean"] < 1e-3 and cell["best_lr"] is not None
    assert os.listdir(tmp_path / "run" / "cells")       # persisted
