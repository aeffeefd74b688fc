"""Distributed meta-training on Ray: two worker actors give the same averaged estimate as the same
two workers run in-process (same seeds, same keys), and a Ray run checkpoints and resumes exactly."""
import dataclasses
import os

import jax
import numpy as np
import pytest

from metaopt.config import load_config
from metaopt.meta.config import MetaConfig
from metaopt.meta.distributed import LocalWorkers, RayWorkers
from metaopt.meta.trainer import meta_train
from metaopt.meta.worker import MetaWorker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_cfg(**kw) -> MetaConfig:
    cfg = load_config(os.path.join(ROOT, "configs", "meta", "smoke.yaml"), MetaConfig)
    # quadratic tasks only: the smoke pool's regression sample embeds its data as XLA constants,
    # which makes every actor's compile several times slower without testing anything more here
    return dataclasses.replace(cfg, workers=2, families=["quadratic"], **kw)


def assert_trees_close(a, b, rel=1e-3):
    """‖a − b‖ ≤ rel·‖b‖ over the whole tree. Not elementwise: a PES estimate divides loss
    differences by 2σ² = 2e-4, so a last-bit difference in a loss (an actor runs XLA with other
    thread settings than this process) shows up in near-zero components at the 1e-4 level."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    diff = np.sqrt(sum(np.sum((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2) for x, y in zip(la, lb)))
    norm = np.sqrt(sum(np.sum(np.asarray(y, np.float64) ** 2) for y in lb))
    assert diff <= rel * norm, (diff, norm)


@pytest.fixture(scope="module")
def ray_2cpu(tmp_path_factory):
    ray = pytest.importorskip("ray")
    # The test starts 2 generations of 2 actors; a shared persistent XLA cache lets the later ones
    # load the estimator instead of compiling it again (compiling dominates this test's time).
    cache = str(tmp_path_factory.mktemp("xla_cache"))
    env = {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_run_equals_the_same_workers_in_process_and_resumes(ray_2cpu, tmp_path, monkeypatch):
    """One Ray run, killed after its first step and resumed on fresh actors, against the same two workers run
    in this process (LocalWorkers, the reference): the learner averages the actors' estimates exactly as it
    averages local ones, and the resumed actors continue from the checkpointed worker states. Four actor
    start-ups in all: each one compiles the estimator, which is what this test's time goes to."""
    import metaopt.meta.trainer as trainer

    cfg = smoke_cfg(steps=2, checkpoint_every=1)
    theta = MetaWorker(cfg).lopt.init_meta_params(jax.random.PRNGKey(cfg.seed))

    # --- on Ray: a run stopped after step 1 (as if killed), then resumed on new actors to step 2
    ray_dir = str(tmp_path / "ray")
    meta_train(cfg, ray_dir, progress=False, log=False, stop_after=1)
    resumed = meta_train(cfg, ray_dir, resume=True, progress=False, log=False)
    assert ray_2cpu.is_initialized()        # the trainer joined our Ray instance; it must not stop it
    assert resumed.step == 2 and resumed.inner_steps == 2 * 2 * 2 * 4 * 10   # steps·workers·(2 per pair)·pairs·K

    # --- the reference: the same two workers in this process, uninterrupted
    local = []
    monkeypatch.setattr(trainer, "make_workers", lambda c, *a, **k: local.append(LocalWorkers(c)) or local[-1])
    full = meta_train(cfg, str(tmp_path / "local"), progress=False, log=False)
    assert full.step == 2 and full.inner_steps == resumed.inner_steps
    assert_trees_close(resumed.theta, full.theta)
    np.testing.assert_allclose([h["meta_loss"] for h in resumed.history],
                               [h["meta_loss"] for h in full.history], rtol=1e-4)
    moved = [float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree_util.tree_leaves(full.theta), jax.tree_util.tree_leaves(theta))]
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(resumed.theta))
    assert max(moved) > 0

    # the two workers draw different perturbations: averaging them is not a no-op
    (g0, m0), (g1, m1) = [w.compute(full.theta) for w in local[0].workers]
    assert not np.allclose(np.asarray(g0["params"]["w1"]), np.asarray(g1["params"]["w1"]))
    assert m0["task_ids"] != m1["task_ids"] or not np.isclose(m0["meta_loss"], m1["meta_loss"])


def test_ray_workers_join_a_running_instance_and_leave_it_up(ray_2cpu):
    cfg = smoke_cfg(steps=1)
    workers = RayWorkers(cfg)
    assert not workers._started
    workers.close()
    assert ray_2cpu.is_initialized()
