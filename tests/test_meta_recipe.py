"""The meta-training recipe's parts: the truncation curriculum, PES antithetic pairs across workers, per-task
loss normalization, the task-horizon option, the validation-suite guard, and configs/meta/recipe.yaml itself.
(The curriculum's and checkpoint selection's kill-and-resume: tests/test_meta_train.py.)"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tasks
from metaopt.config import ConfigError, FieldError, config_to_dict, load_config
from metaopt.meta import worker as worker_module
from metaopt.meta.config import CurriculumConfig, EstimatorConfig, MetaConfig, ValidationConfig
from metaopt.meta.distributed import LocalWorkers
from metaopt.meta.estimator import make_estimator
from tasks.base import Task
from test_meta_estimators import Drift   # w <- w - theta, whatever the gradient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = np.array([1.0, -2.0])


def toy_task(scale: float = 1.0, name: str = "toy") -> Task:
    target = jnp.asarray(TARGET, jnp.float32)
    return Task(name, init=lambda k: {"w": jnp.zeros(2)},
                loss=lambda p, b: scale * 0.5 * jnp.sum((p["w"] - target) ** 2),
                batch=lambda k, s: jnp.zeros(()), steps=30)


# ---- PES across workers -----------------------------------------------------------------------------

def test_pes_workers_draw_distinct_perturbations_and_average_to_the_antithetic_estimator(monkeypatch):
    """2 workers x 2 slots x 2 pairs: all 8 perturbations differ, and the learner's average equals
    1/(2σ²·8) Σ ε (L(θ+ε) − L(θ−ε)) over all of them, with L the closed-form truncation loss of Drift."""
    monkeypatch.setattr(worker_module, "task_pool", lambda cfg: [toy_task()])
    monkeypatch.setattr(worker_module, "build", lambda spec: Drift())
    k, sigma = 3, 0.05
    cfg = MetaConfig(task_pool=1, workers=2, slots_per_worker=2, task_resample_every=100, families=["quadratic"],
                     estimator=EstimatorConfig(kind="pes", num_particles=2, sigma=sigma, unroll_length=k,
                                               reset_every=100, log_loss=False, stagger=False))
    workers = LocalWorkers(cfg)
    theta = Drift().init_meta_params(None)
    grad, _ = workers.compute(theta, 0)
    # after one truncation without a reset, ξ = ε of that truncation
    eps = np.concatenate([np.asarray(slot["state"].accum["d"]) for w in workers.get_states() for slot in w["slots"]])
    assert eps.shape == (8, 2)
    dist = np.linalg.norm(eps[:, None] - eps[None], axis=-1) + np.eye(8)
    assert dist.min() > 1e-3 * sigma, "two workers or slots reused a perturbation"

    def loss(th):       # mean over the truncation of ℓ before each step, w_j = −j·th (Drift from w = 0)
        w = -np.arange(k)[:, None] * th
        return np.mean(0.5 * np.sum((w - TARGET) ** 2, axis=1))
    d = np.asarray(theta["d"], np.float64)
    want = sum(e * (loss(d + e) - loss(d - e)) for e in eps.astype(np.float64)) / (2 * sigma ** 2 * len(eps))
    np.testing.assert_allclose(grad["d"], want, rtol=1e-4)


# ---- per-task loss normalization ---------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["pes", "tbptt"])
def test_init_normalization_stops_a_1000x_task_dominating_the_meta_gradient(kind):
    small, big = toy_task(1.0, "toy1"), toy_task(1000.0, "toy1000")
    theta = Drift().init_meta_params(None)

    def grad(task, normalize):
        cfg = EstimatorConfig(kind=kind, num_particles=4, sigma=0.05, unroll_length=3, reset_every=4,
                              log_loss=False, stagger=False, normalize=normalize)
        est = make_estimator(Drift(), cfg)
        state = est.init(task, theta, jax.random.PRNGKey(0))
        return np.asarray(est.estimate(task, theta, state, jax.random.PRNGKey(1))[0]["d"])

    raw = np.linalg.norm(grad(big, "none")) / np.linalg.norm(grad(small, "none"))
    np.testing.assert_allclose(raw, 1000.0, rtol=1e-3)         # without it: the big task is the meta-gradient
    g_small, g_big = grad(small, "init"), grad(big, "init")
    np.testing.assert_allclose(g_big, g_small, rtol=1e-4, atol=1e-7)   # with it: equal say


def test_init_normalization_rejects_a_task_whose_initial_loss_is_zero():
    from metaopt.meta.unroll import init_loss
    with pytest.raises(ValueError, match="loss at initialization"):
        init_loss(toy_task(0.0, "zero"))


# ---- the inner horizon and the curriculum ---------------------------------------------------------

def test_task_horizon_sets_the_inner_run_length_per_task():
    est = make_estimator(Drift(), EstimatorConfig(unroll_length=20, reset_every=7, horizon="task"))
    for steps, truncations in ((200, 10), (400, 20), (30, 2)):
        assert est.reset_every(dataclasses.replace(toy_task(), steps=steps)) == truncations
    assert make_estimator(Drift(), EstimatorConfig(reset_every=7)).reset_every(toy_task()) == 7
    # the reset counts inner steps (toy_task: 30), whatever the truncation length, and stagger spreads them
    theta, task = Drift().init_meta_params(None), toy_task()
    state = est.init_particles(task, theta, jax.random.PRNGKey(0))
    assert state.t.shape == (8,) and len(set(np.asarray(state.t).tolist())) > 2 and int(state.t.max()) < 30
    for t, done in ((29, False), (30, True), (45, True)):
        _, reset = est.reset(task, theta, jax.tree_util.tree_map(lambda x: x[0], state)._replace(t=jnp.asarray(t)),
                             jax.random.PRNGKey(1))
        assert bool(reset) == done, t


def test_curriculum_stages():
    cur = CurriculumConfig(at_steps=[0, 5, 9], unroll_lengths=[10, 20, 40], reset_every=[8, 4, 2])
    cfg = MetaConfig(curriculum=cur)
    assert [cfg.estimator_at(s).unroll_length for s in (0, 4, 5, 8, 9, 1000)] == [10, 10, 20, 20, 40, 40]
    assert cfg.estimator_at(6).reset_every == 4 and cfg.estimator_at(6).sigma == cfg.estimator.sigma
    assert MetaConfig().estimator_at(123) == MetaConfig().estimator


@pytest.mark.parametrize("text, where", [
    ("curriculum: {at_steps: [5, 10], unroll_lengths: [10, 20]}", "curriculum.at_steps"),
    ("curriculum: {at_steps: [0, 10], unroll_lengths: [10]}", "curriculum.unroll_lengths"),
    ("curriculum: {at_steps: [0, 10, 10], unroll_lengths: [1, 2, 3]}", "curriculum.at_steps[2]"),
    ("validation: {every: 5, tasks: [digits_vit]}", "validation.tasks[0]"),
])
def test_bad_curriculum_or_validation_is_reported_at_its_line(tmp_path, text, where):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsteps: 10\n" + text + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(path), MetaConfig)
    assert f"bad.yaml:3" in str(err.value) and where in str(err.value), str(err.value)


def test_validation_never_takes_a_heldout_task():
    for name in tasks.SUITES["heldout"][:3]:
        with pytest.raises(FieldError, match="held-out"):
            ValidationConfig(every=1, tasks=[name])


# ---- the recipe ----------------------------------------------------------------------------------------

def test_recipe_config_combines_the_parts():
    cfg = load_config(os.path.join(ROOT, "configs", "meta", "recipe.yaml"), MetaConfig)
    assert cfg.families is None or set(cfg.families) >= {"char_lm", "digits_cnn", "char_rnn"}
    assert cfg.curriculum is not None and len(cfg.curriculum.at_steps) >= 2
    assert cfg.validation.every > 0 and set(cfg.validation.tasks) <= set(tasks.SUITES["validation"])
    assert cfg.estimator.kind == "pes" and cfg.workers == 2
    assert cfg.estimator.normalize == "init" and cfg.estimator.horizon == "task"
    assert cfg.lopt.kwargs.get("factored") is True
    # what checkpoints and lopt.json record: plain data (a YAML list inside kwargs once broke asdict)
    assert config_to_dict(cfg)["lopt"]["kwargs"]["momentum_decays"] == [0.5, 0.9, 0.99]
