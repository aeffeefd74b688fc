"""Imitation fitness: how closely a program's updates follow a recorded teacher's, scale-free.

A program is replayed on each recorded trajectory (:mod:`metaopt.distill.replay`, teacher forcing) and its
directions ``p`` are compared with the teacher's ``u`` per tensor, at the recorded steps k:

* cosine error   ``e_cos = mean_k (1 - <p_k, u_k> / (|p_k| |u_k|))``  in [0, 2]: 0 = same direction at every
  step, 1 = uncorrelated, 2 = opposite. Blind to every scale, including a step-size schedule over time.
* scaled NMSE    ``e_mse = sum_k |s p_k - u_k|^2 / sum_k |u_k|^2``  with one best positive scale per trajectory
  ``s = max(0, sum <p, u> / sum |p|^2)`` (over all tensors and steps), in [0, 1]: the program's learning rate is
  tuned separately, so one scale is free — but only one, as a learning rate is one number per training. A rule
  whose step size must change over time or across tensors to match the teacher scores worse here than in e_cos.

The program's error is the mean over every (trajectory, tensor) of the per-tensor errors (each tensor counts
once, whatever its size); steps where the teacher's update of a tensor is exactly 0 are skipped. A program that
cannot run on a layout or produces non-finite updates gets the worst values, e_cos = 2 and e_mse = 1.

:func:`regime_r2` breaks the fit down by feature regime (|g|/sqrt(v̂), momentum sign agreement, training phase):
``R^2 = 1 - SSE / SST`` of the scaled update in each bin, both sides divided by the teacher's RMS update of that
tensor at that step, so tensors and tasks of different scales pool fairly.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metaopt import library
from metaopt.distill.replay import encode_population, replay_compiled, replay_population
from metaopt.distill.store import Recording, Trajectory, load
from metaopt.dsl import parse
from metaopt.dsl.program import Program

WORST_COS, WORST_MSE = 2.0, 1.0


def tensor_errors(p: jax.Array, u: jax.Array, segments: jax.Array, n_leaves: int
                  ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-tensor ``(e_cos [L], e_mse [L], weight [L], scale [])`` of directions ``p`` vs ``u`` (``[K, N]``) of
    one trajectory (module docstring). ``weight`` is 1 for a tensor with at least one step where u != 0.
    Differentiable in ``p``; non-finite ``p`` gives the worst values."""
    seg = lambda x: jax.ops.segment_sum(x.T, segments, n_leaves)            # [N, K] -> [L, K]
    finite = jnp.all(jnp.isfinite(p))
    p = jnp.where(finite, p, 0.0)                                             # keep gradients finite
    dot, pp, uu = seg(p * u), seg(p * p), seg(u * u)
    # finite but huge updates overflow p * p: as non-finite as an inf (else 1 - cos would be inf / inf = NaN)
    finite = finite & jnp.all(jnp.isfinite(pp)) & jnp.all(jnp.isfinite(dot))
    valid = uu > 0
    both = valid & (pp > 0)
    cos = jnp.where(both, jnp.clip(dot / jnp.sqrt(jnp.where(both, pp * uu, 1.0)), -1.0, 1.0), 0.0)
    n_valid = jnp.sum(valid, axis=1)
    e_cos = jnp.sum(jnp.where(valid, 1.0 - cos, 0.0), axis=1) / jnp.maximum(n_valid, 1)
    total_pp = jnp.sum(pp)
    scale = jnp.maximum(jnp.sum(dot) / jnp.where(total_pp > 0, total_pp, 1.0), 0.0)
    uu_leaf = jnp.sum(uu, axis=1)
    e_mse = jnp.sum(scale ** 2 * pp - 2 * scale * dot + uu, axis=1) / jnp.where(uu_leaf > 0, uu_leaf, 1.0)
    weight = (n_valid > 0).astype(jnp.float32)
    return (jnp.where(finite, e_cos, WORST_COS), jnp.where(finite, e_mse, WORST_MSE), weight,
            jnp.where(finite, scale, 0.0))


_errors = jax.jit(tensor_errors, static_argnames="n_leaves")


@dataclasses.dataclass
class Imitation:
    """A program's imitation errors on a recording (module docstring)."""
    name: str
    cos_error: float                          # mean over (trajectory, tensor) of e_cos
    nmse: float                               # mean over (trajectory, tensor) of e_mse
    per_task: dict[str, tuple[float, float]]  # task -> (e_cos, e_mse) over its trajectories' tensors
    per_tensor: list[dict]                    # {task, seed, path, cos_error, nmse}
    scales: list[float]                       # best positive scale per trajectory
    engine: str                               # "interpreter" or "compiled"
    error: str | None = None                  # why the program could not be replayed (then worst values)
    r2: dict | None = None                    # regime_r2(...) when asked for


def as_program(p: Program | str) -> Program:
    """A Program, a program file (``.opt``), DSL text, or a library name."""
    if isinstance(p, Program):
        return p
    if p.endswith(".opt") and os.path.isfile(p):
        with open(p) as fh:
            return parse(fh.read(), filename=p)
    if "\n" in p or "(" in p:
        return parse(p)
    return library.get(p)


def as_recording(rec: Recording | str | os.PathLike) -> Recording:
    return rec if isinstance(rec, Recording) else load(rec)


def replay(programs: Sequence[Program], rec: Recording, engine: str = "auto"
           ) -> tuple[list[list[np.ndarray | None]], list[str], list[str | None]]:
    """Per program and trajectory its directions ``[K, N]`` (``None`` where it cannot run), the engine used
    and the error message. ``engine``: ``"auto"`` (the interpreter for what it can run, else compiled),
    ``"compiled"`` or ``"interpreter"``."""
    if engine not in ("auto", "compiled", "interpreter"):
        raise ValueError(f"engine must be 'auto', 'compiled' or 'interpreter', got {engine!r}")
    n = len(programs)
    out: list[list[np.ndarray | None]] = [[None] * len(rec.trajectories) for _ in range(n)]
    used, errors = ["compiled"] * n, [None] * n
    rest = list(range(n))
    if engine != "compiled":
        groups, rest = encode_population(programs)
        if engine == "interpreter" and rest:
            raise ValueError(f"the interpreter cannot run {', '.join(programs[i].name for i in rest)} "
                             f"(non-searchable op or fallback); use engine='compiled' or 'auto'")
        for members in groups.values():
            for j, traj in enumerate(rec.trajectories):
                us = replay_population([e for _, e in members], traj, rec.learning_rate)
                for k, (i, _) in enumerate(members):
                    out[i][j] = us[k]
            for i, _ in members:
                used[i] = "interpreter"
    for i in rest:
        for j, traj in enumerate(rec.trajectories):
            try:
                out[i][j] = replay_compiled(programs[i], traj, rec.learning_rate)
            except (ValueError, TypeError) as e:   # e.g. a matrix op reaching a 1-D leaf without a fallback
                errors[i] = f"{traj.task}: {e}"
                out[i] = [None] * len(rec.trajectories)
                break
    return out, used, errors


def imitation(programs: Sequence[Program | str], recording: Recording | str | os.PathLike, *, engine: str = "auto",
              regimes: bool = False) -> list[Imitation]:
    """The imitation errors of each program on ``recording`` (a :class:`Recording` or its path)."""
    rec = as_recording(recording)
    progs = [as_program(p) for p in programs]
    preds, used, errors = replay(progs, rec, engine)
    results = []
    for prog, pred, eng, err in zip(progs, preds, used, errors):
        rows, scales, cos_all, mse_all, w_all = [], [], [], [], []
        for traj, p in zip(rec.trajectories, pred):
            L = len(traj.leaves)
            if p is None:
                e_cos, e_mse, wt, s = np.full(L, WORST_COS), np.full(L, WORST_MSE), np.ones(L), 0.0
            else:
                e_cos, e_mse, wt, s = (np.asarray(x) for x in _errors(jnp.asarray(p), jnp.asarray(traj.u),
                                                                      jnp.asarray(traj.segments), n_leaves=L))
            scales.append(float(s))
            for leaf, c, m, w in zip(traj.leaves, e_cos, e_mse, wt):
                if w > 0:
                    rows.append({"task": traj.task, "seed": traj.seed, "path": leaf.path,
                                 "cos_error": float(c), "nmse": float(m)})
        per_task = {}
        for task in dict.fromkeys(t.task for t in rec.trajectories):
            mine = [r for r in rows if r["task"] == task]
            per_task[task] = (_mean(r["cos_error"] for r in mine), _mean(r["nmse"] for r in mine))
        r2 = regime_r2(rec, pred, scales) if regimes else None
        results.append(Imitation(prog.name, _mean(r["cos_error"] for r in rows), _mean(r["nmse"] for r in rows),
                                 per_task, rows, scales, eng, err, r2))
    return results


def _mean(xs) -> float:
    xs = list(xs)
    return float(np.mean(xs)) if xs else math.nan


# --------------------------------------------------------------------------------- regimes
PHASES = ((0.0, 0.1), (0.1, 0.5), (0.5, 1.0 + 1e-9))
RATIO_EDGES = (0.0, 0.5, 1.0, 2.0, math.inf)


def _regimes(rec: Recording, traj: Trajectory) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Per regime, (bin label, boolean mask [K, N]) at the recorded steps."""
    decays = rec.header["feature_decays"]
    t = traj.steps.astype(np.float64)[:, None]
    g = traj.g[traj.steps - 1]
    bv = max(decays)
    v_hat = rec.feature(traj, f"v{bv:g}") / (1.0 - bv ** t)
    ratio = np.abs(g) / np.maximum(np.sqrt(v_hat), 1e-30)
    bm = min(decays, key=lambda b: abs(b - 0.9))
    agree = g * rec.feature(traj, f"m{bm:g}")
    frac = np.broadcast_to(t / traj.num_steps, g.shape)
    return {
        f"|g|/sqrt(v{bv:g} corrected)": [(f"[{lo:g}, {hi:g})", (ratio >= lo) & (ratio < hi))
                                         for lo, hi in zip(RATIO_EDGES[:-1], RATIO_EDGES[1:])],
        f"sign(g) vs sign(m{bm:g})": [("agree", agree > 0), ("disagree", agree < 0)],
        "phase t/T": [(f"[{lo:g}, {min(hi, 1):g}{']' if hi > 1 else ')'}", (frac >= lo) & (frac < hi))
                      for lo, hi in PHASES],
    }


def regime_r2(rec: Recording, preds: Sequence[np.ndarray | None], scales: Sequence[float]) -> dict:
    """``{regime: {bin: {"r2", "fraction"}}}`` of one program's directions ``preds`` (per trajectory) and best
    scales, pooled over trajectories (module docstring)."""
    sums: dict[str, dict[str, np.ndarray]] = {}
    total = 0
    for traj, p, s in zip(rec.trajectories, preds, scales):
        u = traj.u.astype(np.float64)
        p = np.zeros_like(u) if p is None or not np.all(np.isfinite(p)) else np.asarray(p, np.float64)
        seg = traj.segments
        sizes = np.asarray([leaf.size for leaf in traj.leaves], np.float64)
        uu = np.stack([np.bincount(seg, weights=row ** 2, minlength=len(sizes)) for row in u])     # [K, L]
        rms = np.sqrt(uu / sizes)[:, seg]                                                          # [K, N]
        ok = rms > 0
        zu = np.where(ok, u / np.where(ok, rms, 1.0), 0.0)
        zp = np.where(ok, s * p / np.where(ok, rms, 1.0), 0.0)
        total += int(ok.sum())
        for regime, bins in _regimes(rec, traj).items():
            for label, mask in bins:
                m = mask & ok
                acc = sums.setdefault(regime, {}).setdefault(label, np.zeros(4))
                acc += [m.sum(), ((zp - zu) ** 2)[m].sum(), zu[m].sum(), (zu ** 2)[m].sum()]
    out: dict = {}
    for regime, bins in sums.items():
        out[regime] = {}
        for label, (n, sse, su, suu) in bins.items():
            sst = suu - su ** 2 / n if n else 0.0
            out[regime][label] = {"r2": float(1 - sse / sst) if sst > 0 else math.nan,
                                  "fraction": float(n / total) if total else 0.0}
    return out


def format_table(results: Sequence[Imitation]) -> str:
    """A Markdown table of programs by cosine error (best first), with per-task cosine errors."""
    if not results:
        return ""
    task_names = list(results[0].per_task)
    head = "| program | 1 - cos | scaled NMSE | " + " | ".join(f"1 - cos {t}" for t in task_names) + " |"
    lines = [head, "|" + "---|" * (3 + len(task_names))]
    for r in sorted(results, key=lambda r: (r.cos_error, r.nmse)):
        cells = " | ".join(f"{r.per_task[t][0]:.3f}" for t in task_names)
        lines.append(f"| {r.name} | {r.cos_error:.3f} | {r.nmse:.3f} | {cells} |")
    return "\n".join(lines) + "\n"
