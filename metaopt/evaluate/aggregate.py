"""Suite-level numbers from the cells, all computed by :mod:`metaopt.scoring` (the definitions live there
and in docs/baselines/README.md): per task the clipped speedup against the tuned reference (AdamW), the
clipped final-loss ratio, steps to target and win/tie/loss; per optimizer their geometric means with
bootstrap 90% intervals and the win/tie/loss counts; and the performance profile on steps to target.

A *failed* cell (every tuning rate diverged) scores 1/4 on everything. A task whose reference cell is
missing or diverged cannot be scored; it is counted in ``unscored`` and left out of every aggregate.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from metaopt import scoring
from metaopt.evaluate import metrics


def final_mean(cell: Optional[dict]) -> float:
    """The cell's mean final loss, +inf for a failed or missing cell."""
    if not cell or not cell.get("final") or cell["final"].get("mean") is None:
        return math.inf
    return float(cell["final"]["mean"])


def seed_curves(cell: dict) -> tuple[list, list[bool]]:
    """The final seeds' curves and which diverged (``losses[i] is None``: see ``cell._final_record``)."""
    fin = cell["final"]
    return fin["curves"], [loss is None for loss in fin["losses"]]


def task_reference(cell: Optional[dict]) -> Optional[scoring.Reference]:
    """The scoring reference from the reference optimizer's cell; ``None`` if it is missing or failed."""
    if not cell or not cell.get("final"):
        return None
    curves, diverged = seed_curves(cell)
    return scoring.reference(curves, cell["eval_steps"], diverged)


def _score_cell(cell: dict, ref: scoring.Reference, rng: np.random.Generator) -> tuple[scoring.TaskScore, np.ndarray]:
    """The cell's TaskScore and its bootstrap draws ``[2, draws]`` (speedup, loss ratio)."""
    if not cell.get("final"):
        return scoring.failed_task(), np.full((2, scoring.BOOTSTRAP_DRAWS), scoring.MIN_SCORE)
    curves, diverged = seed_curves(cell)
    return scoring.score_task(curves, ref, diverged), scoring.bootstrap_draws(curves, ref, diverged, rng=rng)


def aggregate(cells: list[dict], optimizers: list[str], tasks: list[str], reference: str) -> dict:
    """Per-cell scores (rows) and per-optimizer summaries; see the module docstring."""
    by_key = {(c["optimizer"], c["task"]): c for c in cells}
    rng = np.random.default_rng(scoring.BOOTSTRAP_SEED)
    rows, draws, targets = [], {}, {}
    refs = {t: task_reference(by_key.get((reference, t))) for t in tasks}
    ref_seeds = {}
    for task in tasks:
        ref = refs[task]
        targets[task] = ref.target if ref else None
        if ref is not None:
            ref_seeds[task] = _score_cell(by_key[(reference, task)], ref, rng)[0].seed_scores
        for opt in optimizers:
            cell = by_key.get((opt, task))
            if cell is None:
                continue
            fin = cell.get("final") or {}
            row = {
                "optimizer": opt, "task": task, "best_lr": cell.get("best_lr"),
                "final_mean": metrics.finite_or_none(final_mean(cell)), "final_std": fin.get("std"),
                "failed": not math.isfinite(final_mean(cell)),
                "score": None, "score_seed_min": None, "score_seed_max": None, "loss_ratio": None,
                "steps_to_target": None, "vs_reference": None,
                "auc_mean": fin.get("auc_mean"), "auc_std": fin.get("auc_std"),
                "diverged_final": fin.get("diverged"),
                "diverged_runs": cell.get("diverged_runs"), "runs": cell.get("runs"),
                "at_edge": cell.get("at_edge"), "widened": len(cell.get("widened", [])),
                "steps": cell.get("steps"), "seconds": cell.get("seconds"),
            }
            if ref is not None:
                score, draws[(opt, task)] = _score_cell(cell, ref, rng)
                row.update(score=score.score, score_seed_min=min(score.seed_scores),
                           score_seed_max=max(score.seed_scores), loss_ratio=score.loss_ratio,
                           steps_to_target=score.steps_to_target,
                           vs_reference=scoring.compare_seeds(score.seed_scores, ref_seeds[task]))
            rows.append(row)
    summary = {opt: _summarize([r for r in rows if r["optimizer"] == opt],
                               [draws[(opt, t)] for t in tasks if (opt, t) in draws]) for opt in optimizers}
    steps = np.array([[_steps_or_inf(rows, o, t) for o in optimizers] for t in tasks if refs[t] is not None],
                     np.float64)
    return {"reference": reference, "targets": targets, "rows": rows, "summary": summary,
            "profile": scoring.performance_profile(steps.reshape(-1, len(optimizers)), optimizers)}


def _steps_or_inf(rows: list[dict], opt: str, task: str) -> float:
    row = next((r for r in rows if r["optimizer"] == opt and r["task"] == task), None)
    return math.inf if row is None or row["steps_to_target"] is None else row["steps_to_target"]


def _summarize(mine: list[dict], draws: list[np.ndarray]) -> dict:
    """One optimizer's aggregates over its scored tasks (geometric means, intervals, win/tie/loss)."""
    scored = [r for r in mine if r["score"] is not None]
    out = {"tasks": len(mine), "scored": len(scored), "unscored": len(mine) - len(scored),
           "failed": sum(r["failed"] for r in mine),
           "reached_target": sum(r["steps_to_target"] is not None for r in scored),
           "diverged_runs": sum(r["diverged_runs"] or 0 for r in mine),
           "score": None, "score_ci": None, "loss_ratio": None, "loss_ratio_ci": None,
           **{k: sum(r["vs_reference"] == k for r in scored) for k in ("win", "tie", "loss")}}
    if scored:
        d = np.stack(draws)                                   # [tasks, 2, draws]
        out.update(score=scoring.geomean([r["score"] for r in scored]),
                   score_ci=list(scoring.bootstrap_interval(d[:, 0])),
                   loss_ratio=scoring.geomean([r["loss_ratio"] for r in scored]),
                   loss_ratio_ci=list(scoring.bootstrap_interval(d[:, 1])))
    return out
