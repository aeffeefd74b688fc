"""One cell of an evaluation: one optimizer on one task, tuned and then run with several seeds.

1. Train at every rate of a log grid (``grid_points`` rates ``grid_factor`` apart, centred on the spec's
   default) with ``tune_seeds`` (>= 2) seeds; a rate's tuning loss is the median over those seeds of the
   final validation loss, a diverged seed counting as +inf (``scoring.tuning_losses``, the rule the
   search's candidates and baselines use too); the lowest finite one is chosen.
2. While the best rate sits at an edge of the grid, add 2 rates beyond that edge (at most ``max_widen``
   times); if every rate diverged, the grid grows downward.
3. Run ``seeds`` *fresh* seeds at the best rate (seed numbers disjoint from the tuning seeds, so the
   reported numbers are not the ones the rate was selected on) and record the metrics of ``metrics.py``.

All runs of a cell go through one ``jax.jit(jax.vmap(train))`` over (learning rate, seed) pairs. With
``single_compile`` every batch is padded to the size of the first grid batch, so a cell compiles exactly
once (compiling costs ~100x a small task's run, see DESIGN.md); without it each batch size compiles once.
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable

import numpy as np

from metaopt import scoring
from metaopt.evaluate import grid as grid_mod
from metaopt.evaluate import metrics
from metaopt.evaluate.config import EvalConfig

FINAL_SEED_OFFSET = 1000   # final seeds are 1000, 1001, ...; tuning seeds are 0, 1, ...


def horizon(task: Any, cfg: EvalConfig, tuning: bool = False) -> tuple[int, int]:
    """(steps, eval_every) for ``task``'s fresh seeds (``tuning``: its grid): the config's steps, else the
    task's own, times ``cfg.horizon`` (``cfg.tune_horizon``); eval_every divides steps."""
    mult = cfg.tune_horizon if tuning and cfg.tune_horizon is not None else cfg.horizon
    steps = max(1, round((cfg.steps or task.steps) * mult))
    every = min(cfg.eval_every or task.eval_every, steps)
    while steps % every:   # the largest interval <= the requested one that divides the horizon
        every -= 1
    return steps, every


class BatchRunner:
    """Runs many (lr, seed) trainings of one optimizer on one task through a single jitted vmap."""

    def __init__(self, task: Any, spec: Any, steps: int, eval_every: int, batch: int | None):
        import jax
        from metaopt.train import train

        def one(key, lr):
            return train(task, spec.factory, key, steps, eval_every, learning_rate=lr).valid_loss

        self._jax = jax
        self._fn = jax.jit(jax.vmap(one))
        self.batch = batch
        self.runs = 0        # trainings actually requested (padding excluded)
        self.compiles = 0    # distinct batch shapes traced (1 with single_compile)
        self._shapes: set[int] = set()

    def __call__(self, pairs: list[tuple[float, int]]) -> np.ndarray:
        """Valid-loss curves, float64[len(pairs), evals + 1], in the order of ``pairs``."""
        jax, jnp = self._jax, self._jax.numpy
        size = self.batch or len(pairs)
        padded = pairs + [pairs[-1]] * (-len(pairs) % size)   # repeats are computed and dropped
        out = []
        for start in range(0, len(padded), size):
            chunk = padded[start:start + size]
            lrs = jnp.asarray([lr for lr, _ in chunk], jnp.float32)
            keys = jnp.stack([jax.random.PRNGKey(seed) for _, seed in chunk])
            self._shapes.add(len(chunk))
            out.append(np.asarray(self._fn(keys, lrs), np.float64))
        self.runs += len(pairs)
        self.compiles = len(self._shapes)
        return np.concatenate(out)[:len(pairs)]


def run_cell(spec: Any, task: Any, cfg: EvalConfig,
             runner_factory: Callable[..., BatchRunner] = BatchRunner) -> dict:
    """Tune and evaluate ``spec`` (an OptimizerSpec) on ``task`` (a Task); returns the cell's JSON record."""
    t0 = time.time()
    steps, every = horizon(task, cfg)
    tune_steps, tune_every = horizon(task, cfg, tuning=True)
    eval_steps = list(range(0, steps + 1, every))
    tune_seeds = list(range(cfg.tune_seeds))
    tuned = getattr(spec, "tune", True)
    runners: dict[tuple[int, int], BatchRunner] = {}

    def runner(n_steps: int, n_every: int, batch: int) -> BatchRunner:
        """One runner (one compile) per horizon: the grid's and the fresh seeds' share it when they agree."""
        if (n_steps, n_every) not in runners:
            runners[(n_steps, n_every)] = runner_factory(task, spec, n_steps, n_every,
                                                         batch if cfg.single_compile else None)
        return runners[(n_steps, n_every)]

    grid: dict[float, dict] = {}
    diverged_runs = 0
    initial = []

    def evaluate(lrs: list[float]) -> None:
        nonlocal diverged_runs
        pairs = [(lr, s) for lr in lrs for s in tune_seeds]
        curves = runner(tune_steps, tune_every, cfg.grid_points * cfg.tune_seeds)(pairs)
        div = metrics.diverged(curves, cfg.divergence_factor)
        diverged_runs += int(div.sum())
        initial.extend(curves[:, 0].tolist())
        per_rate = len(tune_seeds)
        medians = scoring.tuning_losses(curves[:, -1].reshape(len(lrs), per_rate), div.reshape(len(lrs), per_rate))
        for i, lr in enumerate(lrs):
            rows = slice(i * per_rate, (i + 1) * per_rate)
            grid[lr] = {"lr": lr, "median_loss": float(medians[i]), "finals": curves[rows, -1].tolist(),
                        "diverged": int(div[rows].sum())}

    widened: list[str] = []
    if tuned:   # ``tune=False`` in the spec: its own rate (a learned optimizer's multiplier 1.0), no grid
        evaluate(grid_mod.log_grid(spec.default_lr, cfg.grid_points, cfg.grid_factor))
    while tuned:
        ordered = sorted(grid)
        side = grid_mod.edge_to_widen([grid[lr]["median_loss"] for lr in ordered])
        if side is None or len(widened) >= cfg.max_widen:
            break
        widened.append(side)
        evaluate(grid_mod.extend(ordered, side, cfg.grid_factor))

    ordered = sorted(grid)
    losses = [grid[lr]["median_loss"] for lr in ordered]
    best = grid_mod.best_index(losses)
    if not tuned:
        ordered, best = [spec.default_lr], 0
    record = {
        "optimizer": spec.name, "task": task.name, "steps": steps, "eval_every": every,
        "eval_steps": eval_steps, "protocol": cfg.protocol_hash(steps, tune_steps), "default_lr": spec.default_lr,
        "tuned": tuned, "tune_steps": tune_steps if tuned else None,
        "widened": widened, "grid": [_clean_grid(grid[lr]) for lr in sorted(grid)],
        "initial_loss": metrics.finite_or_none(float(np.nanmean(initial))) if initial else None,
    }
    if best is None:   # every rate diverged even after widening downwards: a failed cell, not an error
        record.update(best_lr=None, at_edge=True, final=None)
    else:
        best_lr = ordered[best]
        record["best_lr"] = best_lr
        record["at_edge"] = tuned and grid_mod.edge_to_widen(losses) is not None
        final_seeds = [FINAL_SEED_OFFSET + i for i in range(cfg.seeds)]
        curves = runner(steps, every, cfg.seeds)([(best_lr, s) for s in final_seeds])
        div = metrics.diverged(curves, cfg.divergence_factor)
        diverged_runs += int(div.sum())
        record["final"] = _final_record(curves, div, eval_steps, final_seeds)
    record.update(diverged_runs=diverged_runs, runs=sum(r.runs for r in runners.values()),
                  compiles=sum(r.compiles for r in runners.values()),
                  seconds=round(time.time() - t0, 3))
    return record


def _clean_grid(entry: dict) -> dict:
    return {"lr": entry["lr"], "median_loss": metrics.finite_or_none(entry["median_loss"]),
            "finals": metrics.clean_curve(entry["finals"]), "diverged": entry["diverged"]}


def _final_record(curves: np.ndarray, div: np.ndarray, eval_steps: list[int], seeds: list[int]) -> dict:
    """Metrics over the final seeds. Diverged seeds are counted and excluded from the mean and std."""
    ok = ~div
    finals = [float(c[-1]) if k else math.nan for c, k in zip(curves, ok)]
    aucs = [metrics.normalized_auc(c, eval_steps) if k else math.nan for c, k in zip(curves, ok)]
    mean, std = metrics.mean_std(finals)
    auc_mean, auc_std = metrics.mean_std(aucs)
    good = curves[ok]
    return {
        "seeds": seeds, "losses": metrics.clean_curve(finals), "mean": metrics.finite_or_none(mean),
        "std": metrics.finite_or_none(std), "auc_mean": metrics.finite_or_none(auc_mean),
        "auc_std": metrics.finite_or_none(auc_std), "diverged": int(div.sum()),
        "curves": [metrics.clean_curve(c) for c in curves],
        "mean_curve": metrics.clean_curve(good.mean(0)) if len(good) else None,
        "std_curve": metrics.clean_curve(good.std(0)) if len(good) else None,
    }
