"""The evaluation protocol on tiny tasks built here: tuning finds the analytic rate, the grid widens at an
edge, divergence is recorded (not raised), resume skips finished cells, and the reports parse."""
import csv
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt.evaluate import EvalConfig, evaluate
from metaopt import scoring
from metaopt.evaluate import grid, metrics
from metaopt.evaluate.cell import run_cell
from metaopt.specs import OptimizerSpec
from tasks import Task

EIGS = jnp.array([2.0, 4.0, 8.0])   # Hessian eigenvalues: GD's optimal rate is 2 / (2 + 8) = 0.2


def quad_task(name="analytic_quadratic", steps=40):
    """f(w) = 1/2 sum(l_i w_i^2), deterministic (no gradient noise), w0 = ones whatever the key.

    Gradient descent multiplies coordinate i by (1 - lr l_i) per step, so after T steps the loss is
    dominated by rho(lr)^(2T), rho = max_i |1 - lr l_i|, minimised at lr* = 2/(l_min + l_max) = 0.2.
    """
    return Task(name, init=lambda key: {"w": jnp.ones(3)},
                loss=lambda p, b: 0.5 * jnp.sum(EIGS * p["w"] ** 2) + 0.0 * b,
                batch=lambda key, split: jnp.zeros(()), steps=steps, eval_every=20)


def sgd_spec(centre, name="sgd"):
    return OptimizerSpec(name, optax.sgd, centre, "custom")


def rho(lr):
    return float(np.max(np.abs(1 - lr * np.asarray(EIGS))))


CFG = dict(seeds=3, tune_seeds=2, grid_points=9, use_ray=False, max_widen=3)


def test_grid_functions():
    g = grid.log_grid(0.01, 7, 3.0)
    assert len(g) == 7 and math.isclose(g[3], 0.01) and all(math.isclose(b / a, 3.0) for a, b in zip(g, g[1:]))
    assert grid.extend(g, "high", 3.0) == pytest.approx([g[-1] * 3, g[-1] * 9])
    assert grid.extend(g, "low", 3.0) == pytest.approx([g[0] / 9, g[0] / 3])
    assert grid.best_index([3.0, math.nan, 1.0, math.inf, 2.0]) == 2   # non-finite points are ignored
    assert grid.best_index([math.inf, math.nan]) is None
    assert grid.edge_to_widen([1.0, 2.0, 3.0]) == "low"
    assert grid.edge_to_widen([3.0, 2.0, 1.0]) == "high"
    assert grid.edge_to_widen([3.0, 1.0, math.inf]) is None   # a diverged point beyond the best is no edge
    assert grid.edge_to_widen([math.inf] * 3) == "low"


def test_tuning_picks_the_grid_point_nearest_the_analytic_rate():
    cfg = EvalConfig(**CFG)
    cell = run_cell(sgd_spec(0.02), quad_task(), cfg)
    lrs = [g["lr"] for g in cell["grid"]]
    lr_star = 2.0 / (2.0 + 8.0)
    nearest = min(lrs, key=lambda lr: abs(math.log(lr / lr_star)))
    assert nearest == pytest.approx(0.18)
    assert min(lrs, key=rho) == nearest           # and it has the fastest worst-case contraction
    assert cell["best_lr"] == pytest.approx(nearest)
    assert cell["widened"] == [] and not cell["at_edge"]
    assert cell["compiles"] == 1                   # grid and final seeds share one jit
    assert len(lrs) == 9 and all(len(g["finals"]) == 2 for g in cell["grid"])   # 9 points, 2 tuning seeds
    # 0.54 overshoots (rho = 3.3): recorded as diverged, not chosen, not raised
    top = [g for g in cell["grid"] if g["lr"] == pytest.approx(0.54)][0]
    assert top["diverged"] == 2 and top["median_loss"] is None
    assert cell["final"]["diverged"] == 0 and cell["final"]["mean"] < 1e-6


def test_grid_widens_at_the_high_edge():
    cfg = EvalConfig(**CFG)
    # grid 0.18/243 * 3^(-4..4) tops out at 0.06 (best, at the edge) -> +0.18, +0.54 -> 0.18 is interior
    cell = run_cell(sgd_spec(0.18 / 243), quad_task(), cfg)
    assert cell["widened"] == ["high"]
    assert len(cell["grid"]) == 11
    assert cell["best_lr"] == pytest.approx(0.18) and not cell["at_edge"]


def _nan_optimizer(lr):
    """Every update is NaN: diverges at every rate."""
    return optax.chain(optax.sgd(lr), optax.stateless(lambda u, p: jax.tree.map(lambda x: x * jnp.nan, u)))


def test_evaluate_reports_resume_and_divergence(tmp_path):
    out = str(tmp_path / "run")
    task_a, task_b = quad_task("quad_a"), quad_task("quad_b", steps=20)
    specs = [sgd_spec(0.02), OptimizerSpec("nan_opt", _nan_optimizer, 0.1, "custom")]
    cfg = EvalConfig(out=out, reference="optax:adamw", max_widen=1,
                     **{k: v for k, v in CFG.items() if k != "max_widen"})
    res = evaluate(cfg, specs=specs, task_objs=[task_a, task_b], progress=False, log=lambda s: None)
    assert res.optimizers == ["sgd", "nan_opt", "optax:adamw"]   # the reference is added
    assert res.errors == {} and res.computed == 6

    # the divergent optimizer is reported as failed, with its divergences counted
    rows = {(r["optimizer"], r["task"]): r for r in res.aggregate["rows"]}
    bad = rows[("nan_opt", "quad_a")]
    # 9 rates + 2 from one widening downwards, 2 tuning seeds each; a failed cell scores the floor, 1/4
    assert bad["failed"] and bad["best_lr"] is None and bad["diverged_runs"] == 22
    assert bad["score"] == bad["loss_ratio"] == 0.25 and bad["vs_reference"] == "loss"
    summary = res.aggregate["summary"]
    assert summary["nan_opt"]["failed"] == 2 and summary["nan_opt"]["score"] == pytest.approx(0.25)
    assert rows[("optax:adamw", "quad_a")]["score"] == pytest.approx(1.0)
    assert rows[("sgd", "quad_a")]["score"] > 1.0      # tuned GD beats Adam on a deterministic quadratic
    assert summary["sgd"]["win"] == 2 and summary["sgd"]["score"] > 1.0
    lo, hi = summary["sgd"]["score_ci"]
    assert lo <= summary["sgd"]["score"] <= hi
    prof = res.aggregate["profile"]
    assert prof["rho"]["sgd"][0] == 1.0 and prof["rho"]["nan_opt"][-1] == 0.0

    # report files parse
    data = json.load(open(os.path.join(out, "results.json")))
    assert len(data["cells"]) == 6 and data["aggregate"]["reference"] == "optax:adamw"
    with open(os.path.join(out, "results.csv")) as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 6 and {r["optimizer"] for r in table} == {"sgd", "nan_opt", "optax:adamw"}
    md = open(os.path.join(out, "summary.md")).read()
    assert "| optimizer | quad_a | quad_b |" in md and "| nan_opt | failed | failed | 0.250 [0.250, 0.250] |" in md
    for png in ("curves_quad_a.png", "curves_quad_b.png", "sensitivity_quad_a.png", "sensitivity_quad_b.png", "profile.png"):
        with open(os.path.join(out, png), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
        import matplotlib.image
        assert matplotlib.image.imread(os.path.join(out, png)).ndim == 3
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(out, "tb", "sgd")))

    # resume: nothing is recomputed; a deleted cell is the only one recomputed
    calls = []

    def counting(job, cfg):
        from metaopt.evaluate.dispatch import compute
        calls.append((job.optimizer, job.task_name))
        return compute(job, cfg)

    res2 = evaluate(cfg, specs=specs, task_objs=[task_a, task_b], progress=False, compute_fn=counting,
                    log=lambda s: None)
    assert calls == [] and res2.computed == 0 and len(res2.cells) == 6
    os.remove(next(p for p in (tmp_path / "run" / "cells").iterdir() if p.name.startswith("sgd__quad_b")))
    res3 = evaluate(cfg, specs=specs, task_objs=[task_a, task_b], progress=False, compute_fn=counting,
                    log=lambda s: None)
    assert calls == [("sgd", "quad_b")] and res3.computed == 1
    # a different protocol (more seeds) does not reuse the saved cells
    calls.clear()
    evaluate(EvalConfig(**{**cfg.__dict__, "seeds": 4}), specs=specs[:1], task_objs=[task_a], progress=False,
             compute_fn=counting, log=lambda s: None)
    assert sorted(calls) == [("optax:adamw", "quad_a"), ("sgd", "quad_a")]


def test_a_raising_cell_does_not_stop_the_others(tmp_path):
    def flaky(job, cfg):
        if job.optimizer == "sgd":
            raise RuntimeError("boom")
        from metaopt.evaluate.dispatch import compute
        return compute(job, cfg)

    cfg = EvalConfig(out=str(tmp_path), reference="optax:adamw", **CFG)
    res = evaluate(cfg, specs=[sgd_spec(0.02)], task_objs=[quad_task(steps=20)], progress=False,
                   compute_fn=flaky, log=lambda s: None)
    assert list(res.errors) == ["sgd on analytic_quadratic"] and "boom" in res.errors["sgd on analytic_quadratic"]
    assert len(res.cells) == 1 and res.cells[0]["optimizer"] == "optax:adamw"


def test_metrics_definitions():
    curves = np.array([[1.0, 0.5, 0.25], [1.0, 20.0, 0.1], [1.0, np.nan, 0.1]])
    assert metrics.diverged(curves, 10.0).tolist() == [False, True, True]
    assert metrics.normalized_auc([2.0, 1.0, 0.5], [0, 10, 20]) == pytest.approx((1.5 / 2 + 0.75 / 2) / 2)
    prof = scoring.performance_profile(np.array([[1.0, 2.0], [4.0, math.inf]]), ["a", "b"])
    assert prof["ratios"] == [[1.0, 2.0], [1.0, None]]
    assert prof["rho"]["a"][0] == 1.0 and prof["rho"]["b"][0] == 0.0 and prof["rho"]["b"][-1] == 0.5


def test_an_edited_program_is_recomputed_not_reused(tmp_path):
    """Cells remember a digest of the rule they measured: editing the program file (same spec string)
    must recompute its cells, while the untouched reference's cells are reused."""
    rule = tmp_path / "rule.opt"
    rule.write_text("optimizer rule()\nreturn g\n")
    out = str(tmp_path / "run")
    cfg = EvalConfig(out=out, reference="optax:sgd", seeds=3, tune_seeds=2, grid_points=9, use_ray=False,
                     max_widen=0)
    calls = []

    def counting(job, cfg):
        from metaopt.evaluate.dispatch import compute
        calls.append(job.optimizer)
        return compute(job, cfg)

    run = lambda: evaluate(cfg, specs=[str(rule)], task_objs=[quad_task(steps=20)], progress=False,
                           compute_fn=counting, log=lambda s: None)
    first = run()
    assert sorted(calls) == sorted([str(rule), "optax:sgd"]) and first.computed == 2
    calls.clear()
    run()
    assert calls == []
    rule.write_text("optimizer rule()\nreturn sign(g)\n")   # a different rule under the same name
    calls.clear()
    again = run()
    assert calls == [str(rule)] and again.computed == 1
    sign_cell = next(c for c in again.cells if c["optimizer"] == str(rule))
    plain_cell = next(c for c in first.cells if c["optimizer"] == str(rule))
    assert sign_cell["optimizer_digest"] != plain_cell["optimizer_digest"]
