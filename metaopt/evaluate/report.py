"""Text reports of an evaluation: results.json, results.csv and summary.md (the table also printed)."""
from __future__ import annotations

import csv
import io
import os
from typing import Optional

from metaopt.io import atomic_write_json, atomic_write_text
from metaopt.provenance import made_by

CSV_FIELDS = ("optimizer", "task", "steps", "best_lr", "final_mean", "final_std", "score", "score_seed_min",
              "score_seed_max", "loss_ratio", "vs_reference", "steps_to_target", "auc_mean", "auc_std",
              "diverged_final", "diverged_runs", "runs", "failed", "at_edge", "widened", "seconds")


def _num(x: Optional[float], fmt: str = ".4g") -> str:
    return "—" if x is None else format(x, fmt)


def _pm(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "diverged"
    return f"{mean:.4g} ± {std:.2g}" if std is not None else f"{mean:.4g}"


def csv_text(agg: dict) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in agg["rows"]:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_FIELDS})
    return buf.getvalue()


def _with_interval(value: Optional[float], interval: Optional[list]) -> str:
    """``1.23 [1.05, 1.41]``: an aggregate and its bootstrap 90% interval."""
    if value is None:
        return "—"
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else f"{value:.3f}"


def summary_table(agg: dict, optimizers: list[str], tasks: list[str]) -> str:
    """Markdown: the clipped speedup over the reference per task, the geometric means of speedup and
    final-loss ratio with their bootstrap 90% intervals, and win/tie/loss (metaopt/scoring.py)."""
    ref = agg["reference"]
    rel = {(r["optimizer"], r["task"]): r for r in agg["rows"]}
    head = ["optimizer", *tasks, "speedup geomean [90% CI]", "loss ratio geomean [90% CI]",
            f"win/tie/loss vs {ref}", "failed", "reached target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    order = sorted(optimizers, key=lambda o: -(agg["summary"][o]["score"] or 0.0))
    for opt in order:
        cells = []
        for t in tasks:
            row = rel.get((opt, t))
            cells.append("—" if row is None else ("failed" if row["failed"] else _num(row["score"], ".3f")))
        s = agg["summary"][opt]
        cells += [_with_interval(s["score"], s["score_ci"]), _with_interval(s["loss_ratio"], s["loss_ratio_ci"]),
                  f"{s['win']}/{s['tie']}/{s['loss']}", str(s["failed"]), f"{s['reached_target']}/{s['scored']}"]
        lines.append(f"| {opt} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seed_range(row: dict) -> str:
    if row["score"] is None:
        return "—"
    return f"{row['score']:.3f} ({row['score_seed_min']:.2f}–{row['score_seed_max']:.2f})"


def details_table(agg: dict) -> str:
    head = ["task", "optimizer", "steps", "best lr", "final valid (mean ± std)", "speedup (seed range)",
            "loss ratio", "vs ref", "steps to target", "AUC (norm.)", "diverged final/all"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in sorted(agg["rows"], key=lambda r: (r["task"], r["optimizer"])):
        edge = " (edge)" if r["at_edge"] else ""
        lines.append("| " + " | ".join([
            r["task"], r["optimizer"], str(r["steps"]), _num(r["best_lr"], ".3g") + edge,
            _pm(r["final_mean"], r["final_std"]), _seed_range(r), _num(r["loss_ratio"], ".3f"),
            r["vs_reference"] or "—", _num(r["steps_to_target"], ".0f"),
            _pm(r["auc_mean"], r["auc_std"]),
            f"{'—' if r['diverged_final'] is None else r['diverged_final']}/{r['diverged_runs']}",
        ]) + " |")
    return "\n".join(lines)


def markdown(agg: dict, optimizers: list[str], tasks: list[str], settings: dict,
             errors: dict[str, str], provenance: Optional[dict] = None) -> str:
    ref = agg["reference"]
    parts = [
        "# Evaluation results", "",
        f"Suite `{settings.get('suite')}`, {len(tasks)} tasks, {len(optimizers)} optimizers. Each optimizer's "
        f"learning rate is tuned per task on a log grid ({settings['grid_points']} points, "
        f"{settings['grid_factor']:g}x apart, widened at an edge) by the median final validation loss over "
        f"{settings['tune_seeds']} seeds; then {settings['seeds']} fresh seeds run at the best rate. "
        f"Speedup = steps tuned `{ref}` needs to reach its own median final validation loss (the target) / "
        f"steps this optimizer needs (interpolated between evaluations; one that never reaches it scores by "
        f"how far it got, below 1), clipped to [1/4, 4]; higher is better. Loss ratio = target / median final "
        f"loss, clipped the same way. Geometric means over tasks with bootstrap 90% intervals (tasks and "
        f"seeds resampled); win/tie/loss: seed ranges of the speedup separate. Definitions: "
        f"docs/baselines/README.md, metaopt/scoring.py.", "",
        f"## Speedup over tuned `{ref}`", "", summary_table(agg, optimizers, tasks), "",
        "## Per task", "", details_table(agg), "",
        "Plots: `curves_<task>.png` (valid loss at the tuned rate: seed mean, band = seed range), `profile.png` "
        "(performance profile). TensorBoard: `tensorboard --logdir tb`.",
    ]
    if errors:
        parts += ["", "## Cells that raised (not saved; a re-run retries them)", ""]
        parts += [f"- `{k}`: {v.strip().splitlines()[-1] if v.strip() else v}" for k, v in sorted(errors.items())]
    if provenance:
        parts += ["", made_by(provenance, markdown=True).rstrip("\n")]
    return "\n".join(parts) + "\n"


def write_text_reports(out: str, agg: dict, cells: list[dict], optimizers: list[str], tasks: list[str],
                       settings: dict, errors: dict[str, str], provenance: Optional[dict] = None) -> dict[str, str]:
    """Write results.json, results.csv and summary.md under ``out``; returns their paths. ``provenance``
    (metaopt.provenance's record) is copied into results.json and printed as summary.md's "Made by"."""
    paths = {"json": os.path.join(out, "results.json"), "csv": os.path.join(out, "results.csv"),
             "markdown": os.path.join(out, "summary.md")}
    atomic_write_json(paths["json"], {"settings": settings, "optimizers": optimizers, "tasks": tasks,
                                      "aggregate": agg, "cells": cells, "errors": errors, "provenance": provenance})
    atomic_write_text(paths["csv"], csv_text(agg))
    atomic_write_text(paths["markdown"], markdown(agg, optimizers, tasks, settings, errors, provenance))
    return paths
