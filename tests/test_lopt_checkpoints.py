"""The learned optimizers shipped under checkpoints/lopt load, step finitely, and match their configs."""
import dataclasses
import os

import jax
import numpy as np
import pytest

import tasks
from metaopt.config import load_config
from metaopt.learned import load, load_lopt
from metaopt.meta.config import MetaConfig

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LOPT_DIR = os.path.join(ROOT, "checkpoints", "lopt")
SHIPPED = sorted(d for d in os.listdir(LOPT_DIR) if os.path.isdir(os.path.join(LOPT_DIR, d)))


def test_the_documented_checkpoints_ship():
    assert {"mlp16-nominal-pes-valid", "mlp16-nominal-pes-full", "hyper-pes-valid", "hyper-pes", "mlp16-pes-full"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_checkpoint_loads_steps_and_matches_its_config(name):
    path = os.path.join(LOPT_DIR, name)
    lopt, _ = load_lopt(path)
    cfg = load_config(os.path.join(path, "config.yaml"), MetaConfig)
    assert lopt.spec()["architecture"] == cfg.lopt.architecture
    for key, value in cfg.lopt.kwargs.items():     # what the config asked for is what was built
        got = getattr(lopt, key)
        assert (list(got) if isinstance(got, tuple) else got) == value, (name, key)
    task = tasks.get("smoke_quadratic")
    params = task.init(jax.random.PRNGKey(0))
    loss, grads = jax.value_and_grad(task.loss)(params, task.batch(jax.random.PRNGKey(1), "train"))
    opt = load(path)
    updates, _ = opt.update(grads, opt.init(params), params, value=loss)
    leaves = [np.asarray(u) for u in jax.tree_util.tree_leaves(updates)]
    assert all(np.all(np.isfinite(u)) for u in leaves) and any(np.any(u != 0) for u in leaves)


def test_full_config_reproduces_the_recommended_checkpoint():
    full = load_config(os.path.join(ROOT, "configs", "meta", "full.yaml"), MetaConfig)
    shipped = load_config(os.path.join(LOPT_DIR, "mlp16-nominal-pes-valid", "config.yaml"), MetaConfig)
    assert dataclasses.replace(full, name="x") == dataclasses.replace(shipped, name="x")
    hyper = load_config(os.path.join(ROOT, "configs", "meta", "hyper.yaml"), MetaConfig)
    assert hyper == load_config(os.path.join(LOPT_DIR, "hyper-pes-valid", "config.yaml"), MetaConfig)
