"""Every score metaopt reports, defined once (pure NumPy): ``metaopt eval``, search fitness, the funnel.

Scores compare an optimizer with a **reference** (tuned AdamW) on one task, both tuned by the same
protocol (docs/baselines/README.md) and run on the same seeds. Every score is *higher is better*, 1.0
means "as good as the reference", and every one is clipped to ``[MIN_SCORE, MAX_SCORE] = [1/4, 4]``, so
one task can move a geometric mean over ``n`` tasks by at most a factor ``4 ** (1 / n)``.

* **target** ``L*`` — the reference's median final validation loss: the median over its seeds of each
  seed's last validation loss (with an even number of seeds, the mean of the middle two).
* **median curve** — the pointwise median over seeds of the validation-loss curves; a diverged seed
  counts as a curve of ``+inf`` (so a majority of diverged seeds makes the median curve diverge).
  The median curve's last point is the median final loss, so the reference's median curve always
  reaches its own target, at the latest at the last step.
* **steps to target** — the first step at which a curve is at or below ``L*``, interpolated linearly in
  *log* loss between the two evaluation points around the crossing (losses fall roughly geometrically:
  a curve going from 1.0 at step 0 to 0.01 at step 100 crosses 0.1 at step 50); floored at 1 step.
  Non-finite points never count (the crossing after one is read at the next evaluation).
* **speedup** (the primary score) — ``reference's steps to target / this curve's steps to target``,
  clipped to [1/4, 4]: 2.0 means "reaches what tuned AdamW reaches, in half the steps".
* **not reaching** the target within the horizon ``H``: the score is the fraction ``p`` of the log-loss
  reduction to the target that the curve achieved, ``p = log(L0 / L_H) / log(L0 / L*)`` (``L0``, ``L_H``:
  the curve's first and last points), times the score of reaching it exactly at ``H``
  (``reference steps / H``), clipped below at 1/4. If log loss fell linearly in steps, ``H / p`` steps would
  reach the target, so this extrapolates the speedup. It lies in [1/4, 1), is below every reaching
  score, and rises as the final loss approaches the target. A diverged or NaN curve scores 1/4.
* **loss ratio** (secondary) — ``L* / median final loss``, clipped to [1/4, 4] (diverged: 1/4).
* **aggregate** — the geometric mean of the clipped per-task scores, with a bootstrap 90% interval
  (:func:`bootstrap_draws`: resample the tasks and, within each task, the optimizer's seeds).
* **win / tie / loss** against the reference on a task — a win when the optimizer's worst seed scores
  above the reference's best seed, a loss when its best seed scores below the reference's worst; a tie
  when the seed ranges overlap. "Above" means by more than :data:`TIE_MARGIN` (1%), so two rules that
  differ only by float rounding on a deterministic task tie.
* **performance profile** — Dolan & Moré (2002) on steps to target, as AlgoPerf plots it up to 4.
* **search fitness** — ``1 / geomean(speedups)`` over the search tasks: *lower is better*, in [1/4, 4].
* **distillation fitness** — :func:`distill_fitness`: imitation error and search fitness, each normalised to
  [0, 1], weighted, scaled to [0, WORST_FITNESS]; *lower is better* (``metaopt distill``).
* **tuning loss** — what picks a learning rate (for every optimizer and the reference alike): the median
  over the tuning seeds of the final validation loss, a diverged seed counting as ``+inf``.

Losses are assumed non-negative (every task in ``tasks/``); logs floor them at :data:`_TINY`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np

MIN_SCORE = 0.25
MAX_SCORE = 4.0
WORST_FITNESS = 1.0 / MIN_SCORE     # search fitness of a candidate that fails or diverges everywhere
INTERVAL_LEVEL = 0.9
BOOTSTRAP_DRAWS = 1000
BOOTSTRAP_SEED = 0
PROFILE_TAU_MAX = 4.0
TIE_MARGIN = 1.01
_TINY = 1e-30


def clip(score: float | np.ndarray) -> float | np.ndarray:
    """A score clipped to [MIN_SCORE, MAX_SCORE] (NaN becomes MIN_SCORE)."""
    out = np.clip(np.nan_to_num(np.asarray(score, np.float64), nan=MIN_SCORE), MIN_SCORE, MAX_SCORE)
    return float(out) if out.ndim == 0 else out


def as_curves(curves, diverged: Optional[Sequence[bool]] = None) -> np.ndarray:
    """float64[seeds, T] with ``None``/NaN and every point of a diverged seed set to ``+inf``.

    ``diverged`` defaults to "the curve has a non-finite point"; pass the evaluation's own flags
    (``metrics.diverged``: also blown past 10x the initial loss) when there are any.
    """
    c = np.atleast_2d(np.array([[np.nan if v is None else v for v in row] for row in curves], np.float64))
    bad = ~np.all(np.isfinite(c), axis=1) if diverged is None else np.asarray(diverged, bool)
    c[bad] = np.inf
    return np.where(np.isnan(c), np.inf, c)


def median_curve(curves, diverged: Optional[Sequence[bool]] = None) -> np.ndarray:
    """The pointwise median over seeds (diverged seeds as ``+inf``): float64[T]."""
    return np.median(as_curves(curves, diverged), axis=0)


def steps_to_target(curves: np.ndarray, steps: Sequence[float], target: float) -> np.ndarray:
    """float64[N]: interpolated first step at or below ``target`` of each row of ``curves [N, T]``;
    ``+inf`` where a row never gets there. Floored at 1 step (a target met at initialisation)."""
    c = np.atleast_2d(np.asarray(curves, np.float64))
    s = np.asarray(steps, np.float64)
    hit = np.isfinite(c) & (c <= target)
    first = np.argmax(hit, axis=1)
    rows = np.arange(len(c))
    prev = np.maximum(first - 1, 0)
    before, after = c[rows, prev], c[rows, first]
    lb, la, lt = (np.log(np.maximum(x, _TINY)) for x in (before, after, target))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(np.isfinite(before) & (lb > la), (lb - lt) / (lb - la), 1.0)
    at = np.where(first > 0, s[prev] + np.clip(frac, 0.0, 1.0) * (s[first] - s[prev]), s[0])
    return np.where(hit.any(axis=1), np.maximum(at, 1.0), np.inf)


@dataclasses.dataclass(frozen=True)
class Reference:
    """What a task's scores are measured against: the reference's target and its steps to reach it."""

    target: float     # median over the reference's seeds of the final validation loss
    steps: float      # steps the reference's median curve needs to reach ``target``
    horizon: float    # the last evaluated step (every scored curve must share these steps)
    eval_steps: tuple[float, ...]


def reference(curves, eval_steps: Sequence[float],
              diverged: Optional[Sequence[bool]] = None) -> Optional[Reference]:
    """The :class:`Reference` of a task from the reference optimizer's seed curves; ``None`` when its
    median curve diverged (the task cannot be scored)."""
    med = median_curve(curves, diverged)
    if not np.isfinite(med[-1]):
        return None
    target = float(med[-1])
    return Reference(target, float(steps_to_target(med, eval_steps, target)[0]),
                     float(eval_steps[-1]), tuple(float(s) for s in eval_steps))


def speedups(curves: np.ndarray, ref: Reference) -> np.ndarray:
    """float64[N]: the clipped speedup (primary score) of each row of ``curves [N, T]`` (``+inf`` for
    diverged points: see :func:`as_curves`), including the not-reaching scale of the module docstring."""
    c = np.atleast_2d(np.asarray(curves, np.float64))
    if c.shape[1] != len(ref.eval_steps):
        raise ValueError(f"a curve has {c.shape[1]} points but the reference was evaluated at "
                         f"{len(ref.eval_steps)} steps: score runs of the same horizon and eval interval")
    reach = steps_to_target(c, ref.eval_steps, ref.target)
    with np.errstate(divide="ignore", invalid="ignore"):
        reached = ref.steps / reach
        first, last = np.maximum(c[:, 0], _TINY), np.maximum(c[:, -1], _TINY)
        progress = np.log(first / last) / np.log(first / max(ref.target, _TINY))
        partial = np.where(np.isfinite(last) & np.isfinite(progress), progress, 0.0) * ref.steps / ref.horizon
    # partial < ref.steps / horizon <= every reaching score, as the docstring promises.
    return clip(np.where(np.isfinite(reach), reached, np.minimum(partial, MAX_SCORE)))


def loss_ratios(finals: np.ndarray, ref: Reference) -> np.ndarray:
    """float64[N]: clipped ``target / final loss`` (secondary score); non-finite finals score 1/4."""
    f = np.asarray(finals, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(f > 0, ref.target / f, MAX_SCORE)
    return clip(np.where(np.isfinite(f), ratio, MIN_SCORE))


@dataclasses.dataclass(frozen=True)
class TaskScore:
    """An optimizer's scores on one task (see the module docstring for each definition)."""

    score: float                     # clipped speedup of the seed-median curve
    seed_scores: tuple[float, ...]   # clipped speedup of each seed's curve
    loss_ratio: float
    reached: bool
    steps_to_target: Optional[float]  # of the median curve (interpolated, unclipped); None if never


def score_task(curves, ref: Reference, diverged: Optional[Sequence[bool]] = None) -> TaskScore:
    """Score the seed curves ``[seeds, T]`` of one optimizer on one task against ``ref``."""
    c = as_curves(curves, diverged)
    med = np.median(c, axis=0)
    reach = float(steps_to_target(med, ref.eval_steps, ref.target)[0])
    return TaskScore(float(speedups(med, ref)[0]), tuple(float(x) for x in speedups(c, ref)),
                     float(loss_ratios(med[-1:], ref)[0]), math.isfinite(reach),
                     reach if math.isfinite(reach) else None)


def failed_task() -> TaskScore:
    """The score of a cell with no usable run (every tuning rate diverged): 1/4 everywhere."""
    return TaskScore(MIN_SCORE, (MIN_SCORE,), MIN_SCORE, False, None)


def geomean(scores: Sequence[float]) -> float:
    """Geometric mean of clipped scores (NaN when there are none)."""
    s = np.asarray(clip(np.asarray(scores, np.float64)), np.float64).reshape(-1)
    return float(np.exp(np.mean(np.log(s)))) if s.size else math.nan


def bootstrap_draws(curves, ref: Reference, diverged: Optional[Sequence[bool]] = None,
                    draws: int = BOOTSTRAP_DRAWS, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """float64[2, draws]: (speedup, loss ratio) of the median curve of ``draws`` resamplings (with
    replacement) of one task's seeds. The reference's target is held fixed: it is the yardstick."""
    rng = rng if rng is not None else np.random.default_rng(BOOTSTRAP_SEED)
    c = as_curves(curves, diverged)
    idx = rng.integers(0, len(c), size=(draws, len(c)))
    med = np.median(c[idx], axis=1)                                  # [draws, T]
    return np.stack([speedups(med, ref), loss_ratios(med[:, -1], ref)])


def bootstrap_interval(task_draws: np.ndarray, level: float = INTERVAL_LEVEL,
                       rng: Optional[np.random.Generator] = None) -> tuple[float, float]:
    """Percentile interval of the geometric mean from per-task resampled scores ``[tasks, draws]``.

    Draw ``b`` resamples the tasks with replacement and takes, for each chosen task, its ``b``-th seed
    resampling, so both the task set and the seeds vary. A failed task (every draw 1/4) stays 1/4.
    """
    d = np.log(clip(np.asarray(task_draws, np.float64)))
    if d.ndim != 2 or d.shape[0] == 0:
        return math.nan, math.nan
    rng = rng if rng is not None else np.random.default_rng(BOOTSTRAP_SEED + 1)
    n, b = d.shape
    pick = rng.integers(0, n, size=(b, n))
    means = np.exp(d[pick, np.arange(b)[:, None]].mean(axis=1))
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def compare_seeds(mine: Sequence[float], theirs: Sequence[float]) -> str:
    """``"win"`` / ``"loss"`` when the seed ranges of two score lists separate (by more than
    :data:`TIE_MARGIN`), else ``"tie"``."""
    if min(mine) > max(theirs) * TIE_MARGIN:
        return "win"
    if max(mine) * TIE_MARGIN < min(theirs):
        return "loss"
    return "tie"


def performance_profile(steps: np.ndarray, names: Sequence[str], tau_max: float = PROFILE_TAU_MAX,
                        points: int = 100) -> dict:
    """Dolan–Moré profile of ``steps[task, optimizer]`` (steps to target; ``inf`` = never reached).

    ``r[p, s] = steps[p, s] / min_s steps[p, s]``; ``rho_s(tau)`` = fraction of tasks with ``r <= tau``
    for ``tau`` log-spaced on [1, ``tau_max``]. Returns ``{"tau", "rho": {name: [...]}, "ratios"}``
    (ratios as JSON-safe lists: ``None`` for never reached).
    """
    t = np.asarray(steps, np.float64).reshape(-1, len(names))
    with np.errstate(invalid="ignore"):
        best = np.min(t, axis=1, keepdims=True) if t.size else np.ones((0, 1))
        ratios = np.where(np.isfinite(t) & np.isfinite(best), t / np.maximum(best, 1.0), np.inf)
    tau = np.logspace(0.0, math.log10(tau_max), points)
    n = max(t.shape[0], 1)
    rho = {o: [float(np.sum(ratios[:, j] <= x + 1e-12) / n) for x in tau] for j, o in enumerate(names)}
    return {"tau": tau.tolist(), "rho": rho,
            "ratios": [[float(x) if math.isfinite(x) else None for x in row] for row in ratios]}


def search_fitness(scores: Sequence[Optional[float]]) -> float:
    """One scalar per candidate: ``1 / geomean`` of its clipped per-task speedups, **lower is better**,
    in [1/4, 4] (tuned AdamW = 1). A task without a score (``None``: failed) counts as 1/4."""
    if not len(scores):
        raise ValueError("search_fitness needs at least one task score")
    return 1.0 / geomean([MIN_SCORE if s is None else s for s in scores])


def tuning_losses(finals: np.ndarray, diverged: Optional[np.ndarray] = None) -> np.ndarray:
    """float64[...]: median over the last axis (tuning seeds) of final losses, a diverged or
    non-finite seed counting as ``+inf``. The lowest finite value picks the learning rate."""
    f = np.asarray(finals, np.float64)
    bad = ~np.isfinite(f) if diverged is None else (np.asarray(diverged, bool) | ~np.isfinite(f))
    return np.median(np.where(bad, np.inf, f), axis=-1)


def distill_fitness(imitation: float, imitation_max: float, task_fitness: Optional[float],
                    imitation_weight: float, task_weight: float) -> float:
    """The fitness of a distillation candidate (``metaopt distill``), **lower is better**, in [0, WORST_FITNESS]::

        F = WORST_FITNESS * (w_i * E / E_max + w_t * log(4 T) / log(16)) / (w_i + w_t)

    ``E``: the imitation error of the teacher's recorded updates (``metaopt.distill.fit``: 1 - cos in [0, 2], or
    the scaled NMSE in [0, 1]; ``E_max`` is that bound); ``T``: :func:`search_fitness` on the same program's
    training runs, in [1/4, 4] (tuned AdamW = 1), mapped to [0, 1] on a log scale because it is a ratio (T = 1
    gives 1/2). Both terms lie in [0, 1], so the weights are relative; the scale puts F on the search's range,
    where WORST_FITNESS means failed, reached only by the worst imitation with the worst training. With
    ``task_weight`` 0, ``task_fitness`` is not read (None allowed).
    """
    if imitation_weight < 0 or task_weight < 0 or imitation_weight + task_weight <= 0:
        raise ValueError(f"distill_fitness: weights must be >= 0 and not both 0, got {imitation_weight}, {task_weight}")
    e = min(max(float(imitation) / imitation_max, 0.0), 1.0) if math.isfinite(imitation) else 1.0
    t = 0.0
    if task_weight > 0:
        if task_fitness is None or not math.isfinite(task_fitness):
            raise ValueError("distill_fitness: a task fitness is needed when task_weight > 0")
        lo, hi = 1.0 / MAX_SCORE, 1.0 / MIN_SCORE          # search_fitness's range
        t = math.log(min(max(task_fitness, lo), hi) / lo) / math.log(hi / lo)
    return WORST_FITNESS * (imitation_weight * e + task_weight * t) / (imitation_weight + task_weight)
