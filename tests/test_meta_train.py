"""Meta-training end to end: checkpoint/resume is exact; meta-training beats the initialization;
load / load_factory / export_source round-trip; the CLI runs."""
import dataclasses
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from metaopt.config import load_config
from metaopt.learned import export_source, load, load_factory, load_lopt, write_export
from metaopt.meta.config import CurriculumConfig, EstimatorConfig, LOptConfig, MetaConfig, ValidationConfig
from metaopt.meta.trainer import meta_train
from metaopt.meta.unroll import fresh_state, unroll

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_cfg(**kw) -> MetaConfig:
    base = dict(name="t", seed=0, steps=4, task_pool=1, task_resample_every=3, checkpoint_every=100,
                families=["quadratic"],
                lopt=LOptConfig("mlp", {"hidden_size": 4}),
                estimator=EstimatorConfig(kind="pes", num_particles=2, unroll_length=5, reset_every=2))
    base.update(kw)
    return MetaConfig(**base)


def test_configs_load():
    for name in ("smoke", "quick", "full", "hyper"):
        cfg = load_config(os.path.join(ROOT, "configs", "meta", f"{name}.yaml"), MetaConfig)
        assert cfg.name == name and cfg.estimator.kind in ("pes", "es", "tbptt")


def test_resume_takes_the_same_next_step(tmp_path):
    """A run killed after 2 steps and resumed takes the uninterrupted run's steps, in the same curriculum
    stage (unroll 2, then 4 from step 3), with the same validation curve (every 2 steps) and best θ; the
    factored-feature rule it trains loads, scales with its multiplier and exports."""
    cfg = tiny_cfg(lopt=LOptConfig("mlp", {"hidden_size": 4, "factored": True}),     # exported and loaded too
                   curriculum=CurriculumConfig(at_steps=[0, 3], unroll_lengths=[2, 4]),
                   validation=ValidationConfig(every=2, tasks=["wine_mlp_w16_d1_tanh"], seeds=2,
                                               lr_multipliers=[1.0, 3.0], reference_lrs=[0.01, 0.1], steps=50))
    full = meta_train(cfg, str(tmp_path / "a"), progress=False, log=False)
    meta_train(cfg, str(tmp_path / "b"), progress=False, log=False, stop_after=2)   # "killed" after 2
    resumed = meta_train(cfg, str(tmp_path / "b"), resume=True, progress=False, log=False)
    assert resumed.step == full.step == 4
    for a, b in zip(jax.tree_util.tree_leaves(full.theta), jax.tree_util.tree_leaves(resumed.theta)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert [h["meta_loss"] for h in full.history] == [h["meta_loss"] for h in resumed.history]
    assert [h["unroll_length"] for h in full.history] == [2, 2, 2, 4]
    curves = [json.loads((tmp_path / r / "validation.json").read_text()) for r in ("a", "b")]
    assert [e["step"] for e in curves[0]] == [2, 4]
    assert [e["score"] for e in curves[0]] == [e["score"] for e in curves[1]]
    assert all(0.25 <= e["score"] <= 4.0 for e in curves[0])       # metaopt.scoring's clipped speedups
    best = json.loads((tmp_path / "a" / "best" / "validation.json").read_text())["best"]
    assert best["score"] == max(e["score"] for e in curves[0])
    best_lopt, best_theta = load_lopt(str(tmp_path / "a" / "best"))    # a learned-optimizer directory
    assert best_lopt == load_lopt(str(tmp_path / "a"))[0]
    if best["step"] == 4:
        for a, b in zip(jax.tree_util.tree_leaves(full.theta), jax.tree_util.tree_leaves(best_theta)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the run dir is a loadable learned optimizer, and the export matches it
    run = str(tmp_path / "a")
    task = tasks.get("smoke_quadratic")
    params = task.init(jax.random.PRNGKey(0))
    grads = jax.grad(task.loss)(params, task.batch(jax.random.PRNGKey(1), "train"))
    opt = load(run)
    ours, _ = opt.update(grads, opt.init(params), params)
    twice, _ = load_factory(run)(2.0).update(grads, opt.init(params), params)
    np.testing.assert_allclose(twice["w"], 2 * ours["w"], rtol=1e-6)
    py, _ = write_export(run, str(tmp_path / "exported.py"))
    assert "import metaopt" not in export_source(run) and "from metaopt" not in export_source(run)
    spec = importlib.util.spec_from_file_location("exported", py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    exp_opt = mod.optimizer()
    theirs, _ = exp_opt.update(grads, exp_opt.init(params), params)
    np.testing.assert_allclose(theirs["w"], ours["w"], rtol=1e-6, atol=1e-9)


def mean_log_valid_losses(lopt, thetas, keys) -> list[float]:
    """Per θ: mean over held-out quadratics of the mean log validation loss along 100 inner steps
    (one compile per task, shared by every θ)."""
    family = tasks.get_family("quadratic")
    out = []
    for k in keys:
        task = family.sample(k)
        run = jax.jit(lambda th: unroll(lopt, task, th, fresh_state(lopt, task, th, k), 100, "valid", True)[1])
        out.append([float(run(th)) for th in thetas])
    return list(np.mean(out, axis=0))


@pytest.mark.slow
def test_meta_training_beats_its_initialization(tmp_path):
    kwargs = {"hidden_size": 8, "step_mult": 0.01, "exp_mult": 0.1}
    cfg = tiny_cfg(steps=40, task_pool=2, task_resample_every=20, meta_lr=0.01,
                   lopt=LOptConfig("mlp", kwargs),
                   estimator=EstimatorConfig(kind="pes", num_particles=4, sigma=0.01, unroll_length=10,
                                             reset_every=5))
    meta_train(cfg, str(tmp_path / "run"), progress=False, log=False)
    lopt, trained = load_lopt(str(tmp_path / "run"))
    init = lopt.init_meta_params(jax.random.PRNGKey(cfg.seed))
    held_out = [jax.random.PRNGKey(10_000 + i) for i in range(2)]   # the pool uses fold_in(seed, i)
    before, after = mean_log_valid_losses(lopt, [init, trained], held_out)
    assert after < before - 0.1, (before, after)
