"""PNG plots of an evaluation (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import io
import os
import re

import numpy as np

from metaopt.io import atomic_write_bytes


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")   # headless: workers and CI have no display
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_")


def _curve(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], np.float64)


def loss_curves(out: str, cells: list[dict], task: str, optimizers: list[str]) -> str:
    """Valid loss vs step for every optimizer on ``task`` at its tuned rate: the seed mean, with a band
    spanning the seeds (min to max: always positive, so it reads correctly on the log axis)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.get_cmap("tab20" if len(optimizers) > 10 else "tab10").colors
    by_opt = {c["optimizer"]: c for c in cells if c["task"] == task}
    for i, opt in enumerate(optimizers):
        cell = by_opt.get(opt)
        fin = (cell or {}).get("final") or {}
        if not fin.get("mean_curve"):
            continue
        steps = np.asarray(cell["eval_steps"])
        seeds = np.array([_curve(c) for c in fin["curves"]])
        seeds = seeds[np.all(np.isfinite(seeds), axis=1)]
        color = colors[i % len(colors)]
        ax.plot(steps, _curve(fin["mean_curve"]), color=color, linestyle="-" if i < 20 else "--",
                label=f"{opt} (lr {cell['best_lr']:.3g})")
        if len(seeds):
            ax.fill_between(steps, seeds.min(0), seeds.max(0), color=color, alpha=0.15, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # never over the curves
    path = os.path.join(out, f"curves_{slug(task)}.png")
    _save(fig, path)
    plt.close(fig)
    return path


def profile_plot(out: str, profile: dict) -> str:
    """The Dolan–Moré performance profile on steps to target, up to tau = 4 (``scoring.performance_profile``)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    tau = np.asarray(profile["tau"])
    colors = plt.get_cmap("tab20" if len(profile["rho"]) > 10 else "tab10").colors
    for i, (opt, rho) in enumerate(profile["rho"].items()):
        ax.step(tau, rho, where="post", label=opt, color=colors[i % len(colors)])
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ (steps to target / fewest on the task; metaopt/scoring.py)")
    ax.set_ylabel("fraction of tasks reaching the target within τ x the fewest steps")
    ax.set_title("performance profile")
    ax.grid(alpha=0.3)
    if profile["rho"]:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))  # never over the curves
    path = os.path.join(out, "profile.png")
    _save(fig, path)
    plt.close(fig)
    return path


def rate_sensitivity(out: str, cells: list[dict], task: str, optimizers: list[str]) -> str:
    """Tuning loss (median final validation loss over the tuning seeds) vs learning rate on ``task``, one line
    per optimizer over its whole grid (widenings included), the chosen rate circled; a diverged rate is a gap
    (a break in the line), so how wide the basin is and how close the choice sits to divergence both show."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.get_cmap("tab20" if len(optimizers) > 10 else "tab10").colors
    by_opt = {c["optimizer"]: c for c in cells if c["task"] == task}
    for i, opt in enumerate(optimizers):
        grid = sorted((by_opt.get(opt) or {}).get("grid") or [], key=lambda e: e["lr"])
        if not grid:
            continue
        lrs = np.array([e["lr"] for e in grid], np.float64)
        loss = _curve([e.get("median_loss") for e in grid])
        color = colors[i % len(colors)]
        ax.plot(lrs, loss, marker=".", color=color, label=opt)
        best = by_opt[opt].get("best_lr")
        if best is not None and np.any(np.isclose(lrs, best)):
            j = int(np.argmin(np.abs(np.log(lrs / best))))
            ax.plot([lrs[j]], [loss[j]], "o", mfc="none", ms=9, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("tuning loss (median final valid loss)")
    ax.set_title(f"{task}: learning-rate sensitivity")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    path = os.path.join(out, f"sensitivity_{slug(task)}.png")
    _save(fig, path)
    plt.close(fig)
    return path


def write_plots(out: str, cells: list[dict], optimizers: list[str], tasks: list[str], profile: dict) -> list[str]:
    paths = [loss_curves(out, cells, t, optimizers) for t in tasks]
    paths += [rate_sensitivity(out, cells, t, optimizers) for t in tasks]
    paths.append(profile_plot(out, profile))
    return paths
