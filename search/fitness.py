"""Fitness of a candidate optimizer: its time-to-result speedup over tuned AdamW (:mod:`metaopt.scoring`).

Candidates and the reference they are divided by are tuned the **same way** (cheaper than
``metaopt eval``, but identical for both): every rate of the stage's ``lr_grid`` in one batched call,
the stage's seeds (the same PRNG keys, so the runs are paired), and the rate with the lowest tuning loss
(``scoring.tuning_losses``: median over seeds of the final validation loss, a diverged seed = +inf)
wins, without widening. The seed curves at the chosen rate are then scored per task against the
reference's (``scoring.score_task``: steps to reach AdamW's median final loss, clipped speedup in
[1/4, 4]), and the fitness is ``scoring.search_fitness``: ``1 / geomean(speedups)`` — **lower is
better**, in [1/4, 4], tuned AdamW = 1.

A candidate that diverges everywhere, or that could not be run at all, gets :data:`WORST_FITNESS`
(= 4, the bound) — never an exception in the driver.

**Hurdles** (AutoML-Zero, Real et al. 2020): with ``hurdle.enabled`` a child is first judged on a cheap
stage (a task or two, a short horizon, 3 rates around its parent's best rate). :class:`HurdleGate` lets it
on to the full search stage only if its hurdle fitness ``h`` beats ``percentile``% of the recent hurdle
results. A child that fails keeps :func:`hurdle_failed_fitness` ``= WORST_FITNESS + h``, in
``(4, 8]``: strictly above every full-stage fitness (which lies in ``[1/4, 4]``), so a failure never
outranks a candidate that passed (in tournaments, the funnel or the reported best), while failures still
rank among themselves by ``h``.
"""
from __future__ import annotations

import collections
from typing import Callable, Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import scoring
from metaopt.evaluate.grid import best_index
from metaopt.evaluate.metrics import clean_curve

WORST_FITNESS = scoring.WORST_FITNESS


def best_over_grid(curves: np.ndarray, lr_grid: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[P, L, S, T]`` curves -> (tuning loss ``[P]``, its rate ``[P]``, seed curves at it ``[P, S, T]``).

    The rate is the one of lowest ``scoring.tuning_losses`` (ties: the earlier rate of ``lr_grid``); NaN
    everywhere for a program that diverged at every rate. ``lr_grid``: ``[L]``, or ``[P, L]`` with each
    program's own grid.
    """
    curves = np.asarray(curves, np.float64)
    grid = np.asarray(lr_grid, np.float64)
    grid = np.broadcast_to(grid, (len(curves), grid.shape[-1])) if grid.ndim == 1 else grid
    losses = scoring.tuning_losses(curves[..., -1])                      # [P, L]
    best = np.full(len(curves), np.nan)
    lrs = np.full(len(curves), np.nan)
    at = np.full((len(curves),) + curves.shape[2:], np.nan)
    for p, row in enumerate(losses):
        i = best_index(row.tolist())
        if i is not None:
            best[p], lrs[p], at[p] = row[i], grid[p, i], curves[p, i]
    return best, lrs, at


def eval_steps(steps: int, eval_every: int) -> list[int]:
    """The steps at which a run of ``steps`` steps records its validation loss (0 included)."""
    return list(range(0, steps + 1, eval_every))


def references(records: Mapping[str, dict]) -> dict[str, Optional[scoring.Reference]]:
    """``{task: scoring.Reference}`` from the tuned reference's records (``tune_reference`` output);
    ``None`` for a task where the reference itself diverged at every rate."""
    return {t: (scoring.reference(r["curves"], r["eval_steps"]) if r.get("curves") else None)
            for t, r in records.items()}


def candidate_fitness(curves: Mapping[str, Optional[list]],
                      refs: Mapping[str, Optional[scoring.Reference]]) -> tuple[float, dict[str, Optional[float]]]:
    """(fitness, ``{task: clipped speedup}``) of one candidate from its seed curves at its chosen rate
    per task (``None``: diverged at every rate or failed, scoring 1/4). Tasks whose reference failed are
    left out (score ``None``); with no scorable task at all this is an error in the baselines."""
    scores: dict[str, Optional[float]] = {}
    for task, ref in refs.items():
        c = curves.get(task)
        scores[task] = None if ref is None else (
            scoring.MIN_SCORE if c is None else scoring.score_task(c, ref).score)
    usable = [s for t, s in scores.items() if refs[t] is not None]
    if not usable:
        raise ValueError("no task has a usable reference (tuned AdamW diverged at every rate everywhere)")
    return scoring.search_fitness(usable), scores


def failed_fitness(refs: Mapping[str, object]) -> tuple[float, dict[str, Optional[float]]]:
    """The fitness of a candidate that could not be judged (parse or worker error)."""
    return WORST_FITNESS, {t: scoring.MIN_SCORE for t in refs}


def hurdle_failed_fitness(hurdle_fitness: float) -> float:
    """The fitness of a child that did not clear the hurdle: ``WORST_FITNESS + h``, worse than any
    full-stage fitness (see the module docstring)."""
    return WORST_FITNESS + float(hurdle_fitness)


class HurdleGate:
    """The rolling-percentile hurdle (lower fitness is better).

    With ``percentile = q`` a child passes iff its hurdle fitness ``h`` is at or below the ``(100 - q)``-th
    percentile (``numpy.percentile``, linear interpolation) of the last ``window`` hurdle fitnesses seen
    *before* it, i.e. it is better than about ``q``% of them (q = 75: AutoML-Zero's hurdle). Every child
    passes while fewer than ``min_window`` results exist; one that diverged everywhere
    (``h >= WORST_FITNESS``) never does. Each result, passing or not, then joins the window.
    """

    def __init__(self, percentile: float, window: int, min_window: int, history: Iterable[float] = ()):
        self.percentile, self.min_window = percentile, min_window
        self.values: collections.deque[float] = collections.deque(history, maxlen=window)

    def threshold(self) -> Optional[float]:
        """The hurdle now; ``None`` while the window holds fewer than ``min_window`` results."""
        if len(self.values) < self.min_window:
            return None
        return float(np.percentile(np.asarray(self.values, np.float64), 100.0 - self.percentile))

    def judge(self, hurdle_fitness: float) -> tuple[bool, Optional[float]]:
        """(passed, the threshold it was held to) — and the result joins the window."""
        thr = self.threshold()
        passed = hurdle_fitness < WORST_FITNESS and (thr is None or hurdle_fitness <= thr)
        self.values.append(float(hurdle_fitness))
        return passed, thr


def tune_reference(task, factory: Callable[..., optax.GradientTransformation], lr_grid: Sequence[float],
                   steps: int, eval_every: int, seeds: int, seed: int) -> dict:
    """Tune one optax optimizer on ``task`` exactly as the search tunes a candidate: every rate of
    ``lr_grid`` with ``seeds`` seeds from ``PRNGKey(seed)`` (the interpreter's keys), one vmapped call,
    chosen by :func:`best_over_grid`.

    Returns ``{"loss", "lr", "curves" (seed curves at the rate, None = non-finite), "eval_steps",
    "grid": {lr: tuning loss}}`` (JSON-ready; ``curves`` is None if every rate diverged).
    """
    from metaopt.train import train

    keys = jax.random.split(jax.random.PRNGKey(seed), seeds)
    run = lambda key, lr: train(task, factory, key, steps, eval_every, learning_rate=lr).valid_loss
    curves_fn = jax.jit(jax.vmap(jax.vmap(run, (0, None)), (None, 0)))            # [L, S, T]
    curves = np.asarray(curves_fn(keys, jnp.asarray(lr_grid, jnp.float32)), np.float64)[None]
    loss, lr, at = best_over_grid(curves, lr_grid)
    ok = bool(np.isfinite(loss[0]))
    grid = scoring.tuning_losses(curves[0, :, :, -1])
    return {"loss": float(loss[0]), "lr": float(lr[0]),
            "curves": [clean_curve(c) for c in at[0]] if ok else None,
            "eval_steps": eval_steps(steps, eval_every),
            "grid": {f"{g:.3g}": (float(v) if np.isfinite(v) else None) for g, v in zip(lr_grid, grid)}}


def baseline_factories() -> dict[str, Callable[..., optax.GradientTransformation]]:
    """The reference optimizers tuned at search start: AdamW (the fitness reference) and SGD (reported)."""
    return {"adamw": optax.adamw, "sgd": optax.sgd}
