"""Two protocol options of ``metaopt eval``: ``tune=False`` specs (the "no tuning" rows: one rate, no grid) and
longer horizons (``horizon``, tuned on ``tune_horizon``). Checked against the closed form of gradient descent
on a deterministic quadratic: after T steps at rate lr, f = 1/2 sum_i l_i (1 - lr l_i)^(2T)."""
import math

import numpy as np
import optax
import pytest

from metaopt.config import FieldError
from metaopt.evaluate import EvalConfig, evaluate
from metaopt.evaluate.cell import BatchRunner, run_cell
from metaopt.specs import OptimizerSpec, SpecError, resolve

from test_evaluate import CFG, EIGS, quad_task


def gd_loss(lr: float, steps: int) -> float:
    l = np.asarray(EIGS, np.float64)
    return float(0.5 * np.sum(l * (1 - lr * l) ** (2 * steps)))


def test_an_untuned_spec_trains_at_its_own_rate_without_a_grid():
    spec = OptimizerSpec("sgd_fixed", optax.sgd, 0.1, "custom", tune=False)
    batches = []

    def factory(task, spec, steps, every, batch):
        batches.append(batch)
        return BatchRunner(task, spec, steps, every, batch)

    cell = run_cell(spec, quad_task(steps=40), EvalConfig(**CFG), runner_factory=factory)
    assert batches == [3]                                         # no grid-sized runner, no padding
    assert cell["tuned"] is False and cell["grid"] == [] and cell["widened"] == []
    assert cell["best_lr"] == 0.1 and not cell["at_edge"]
    assert cell["runs"] == 3 and cell["compiles"] == 1          # the 3 fresh seeds only
    assert cell["final"]["mean"] == pytest.approx(gd_loss(0.1, 40), rel=1e-4)


def test_longer_horizon_tuned_on_the_usual_one():
    cfg = EvalConfig(**CFG, horizon=2.0, tune_horizon=1.0)
    cell = run_cell(OptimizerSpec("sgd", optax.sgd, 0.02, "custom"), quad_task(steps=40), cfg)
    assert cell["steps"] == 80 and cell["tune_steps"] == 40 and cell["eval_steps"][-1] == 80
    assert cell["best_lr"] == pytest.approx(0.18)               # the 40-step tuning's choice (test_evaluate)
    # the grid's finals are 40-step losses, the fresh seeds' 80-step ones
    point = [g for g in cell["grid"] if g["lr"] == pytest.approx(0.06)][0]
    assert point["finals"][0] == pytest.approx(gd_loss(0.06, 40), rel=1e-3)
    curve = cell["final"]["curves"][0]                          # valid loss at steps 0, 20, ..., 80
    assert len(curve) == 5
    assert curve[1:3] == pytest.approx([gd_loss(0.18, 20), gd_loss(0.18, 40)], rel=1e-3)
    assert cell["runs"] == 9 * 2 + 3
    assert cell["compiles"] == 2                                 # one jit per horizon


def test_horizon_options_change_the_protocol_only_when_used():
    base = EvalConfig(**CFG)
    assert base.protocol_hash(40) == base.protocol_hash(40, 40)  # cells computed before the option stay valid
    assert (EvalConfig(**CFG, horizon=2.0, tune_horizon=1.0).protocol_hash(80, 40)
            != EvalConfig(**CFG, horizon=2.0).protocol_hash(80))
    with pytest.raises(FieldError, match="horizon"):
        EvalConfig(**CFG, horizon=0.0)
    with pytest.raises(FieldError, match="tune_horizon"):
        EvalConfig(**CFG, tune_horizon=-1.0)


def test_tune_keyword_in_spec_strings():
    spec = resolve("adam(lr=0.003, tune=False)")
    assert spec.tune is False and spec.default_lr == 0.003
    assert resolve("adam").tune is True
    with pytest.raises(SpecError, match="tune must be True or False"):
        resolve("adam(tune=1)")


def test_untuned_row_beside_the_tuned_reference(tmp_path):
    """An evaluation with both: the untuned rate is scored against the tuned reference, and resumes."""
    fixed = OptimizerSpec("sgd_fixed", optax.sgd, 0.02, "custom", tune=False)
    cfg = EvalConfig(**CFG, reference="optax:sgd", out=str(tmp_path))
    task = quad_task(steps=40)
    res = evaluate(cfg, specs=[fixed], task_objs=[task], progress=False, log=lambda s: None)
    rows = {r["optimizer"]: r for r in res.aggregate["rows"]}
    # tuned GD takes 0.1 (contraction 0.8 per step); at 0.02 (0.96) it is much slower: a loss, below 1
    assert rows["optax:sgd"]["best_lr"] == pytest.approx(0.1)
    assert rows["sgd_fixed"]["score"] < 1.0 and rows["sgd_fixed"]["vs_reference"] == "loss"
    assert math.isclose(rows["sgd_fixed"]["final_mean"], gd_loss(0.02, 40), rel_tol=1e-4)
    again = evaluate(cfg, specs=[fixed], task_objs=[task], progress=False, log=lambda s: None)
    assert again.computed == 0
