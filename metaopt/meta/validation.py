"""Checkpoint selection on the ``validation`` suite during meta-training.

Meta-training's own loss (PES truncation losses on the train families) is a noisy, biased guide to
which θ generalises, so every ``validation.every`` meta-steps the learner scores the current θ the
way the project scores any optimizer (:mod:`metaopt.scoring`, the one scoring module), on a few
cheap tasks of the ``validation`` suite — never ``heldout``, which only final reports read
(:class:`~metaopt.meta.config.ValidationConfig` rejects it):

* the **reference** is AdamW tuned on ``reference_lrs`` with ``seeds`` seeds, exactly as the search
  tunes it (:func:`search.fitness.tune_reference`); it is computed once per run and kept in
  ``RUN_DIR/validation_reference.json`` (a resumed run reads it back);
* θ trains each task at every lr multiplier of ``lr_multipliers`` with the *same* seeds (paired
  runs); the multiplier of lowest tuning loss (``scoring.tuning_losses``) is kept, and its seed
  curves are scored against the reference (``scoring.score_task``: clipped speedup, 1 = AdamW);
* the validation score is the geometric mean over the tasks (``scoring.geomean``), higher is better.

The trainer appends each result to ``RUN_DIR/validation.json`` and TensorBoard (``validation/*``)
and, when it beats every earlier one, writes θ to ``RUN_DIR/best`` (a learned-optimizer directory
that ``metaopt.learned.load`` and ``lopt:`` accept) with the curve so far in ``best/validation.json``.
"""
from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

import tasks as task_registry
from metaopt import scoring
from metaopt.io import atomic_write_json
from metaopt.learned.base import LearnedOptimizer, Theta
from metaopt.learned.export import save_lopt
from metaopt.meta.config import ValidationConfig
from metaopt.train import train
from search.fitness import best_over_grid, tune_reference    # the search's tuning rule, shared, not copied

REFERENCE_FILE = "validation_reference.json"
CURVE_FILE = "validation.json"
BEST_DIR = "best"


@functools.partial(jax.jit, static_argnames=("lopt", "task", "steps", "eval_every"))
def lopt_curves(lopt: LearnedOptimizer, task, theta: Theta, keys: jax.Array, multipliers: jax.Array,
                steps: int, eval_every: int) -> jax.Array:
    """[multipliers, seeds, evals] validation curves of ``lopt(θ, m)`` on ``task``; θ is traced, so
    one compile per (architecture, task) serves every validation of a run."""
    run = lambda k, m: train(task, lopt.opt(theta, m), k, steps, eval_every).valid_loss
    return jax.vmap(jax.vmap(run, (0, None)), (None, 0))(keys, multipliers)


class Validator:
    """Scores θ on the configured validation tasks (see the module docstring)."""

    def __init__(self, cfg: ValidationConfig, lopt: LearnedOptimizer, run_dir: str):
        self.cfg, self.lopt = cfg, lopt
        self.tasks = {name: task_registry.get(name) for name in cfg.tasks}
        self.keys = jax.random.split(jax.random.PRNGKey(cfg.seed), cfg.seeds)   # tune_reference's keys
        records = self._references(run_dir)
        self.refs = {n: scoring.reference(r["curves"], r["eval_steps"]) if r.get("curves") else None
                     for n, r in records.items()}

    def horizon(self, name: str) -> tuple[int, int]:
        """(steps, eval interval) of a validation task: its own, or ``cfg.steps`` if set."""
        task = self.tasks[name]
        steps = self.cfg.steps or task.steps
        if steps % task.eval_every:
            raise ValueError(f"validation.steps = {steps} is not a multiple of {name}'s eval interval "
                             f"({task.eval_every})")
        return steps, task.eval_every

    def _signature(self) -> dict:
        # lists, not tuples: it is compared with its JSON round trip
        return {"tasks": {n: list(self.horizon(n)) for n in self.tasks}, "seeds": self.cfg.seeds,
                "seed": self.cfg.seed, "reference_lrs": list(self.cfg.reference_lrs), "reference": "adamw"}

    def _references(self, run_dir: str) -> dict:
        path = os.path.join(run_dir, REFERENCE_FILE)
        signature = self._signature()
        if os.path.exists(path):
            with open(path) as fh:
                stored = json.load(fh)
            if stored.get("signature") == signature:
                return stored["records"]
        records = _tuned_adamw(json.dumps(signature, sort_keys=True))
        atomic_write_json(path, {"signature": signature, "records": records})
        return records


    def score(self, theta: Theta) -> dict:
        """``{"score": geomean, "tasks": {name: {"score", "lr_multiplier", "final_loss"}}}``; a task whose
        reference diverged everywhere is left out, one where θ diverged at every multiplier scores 1/4."""
        mults = jnp.asarray(self.cfg.lr_multipliers, jnp.float32)
        out = {}
        for name, task in self.tasks.items():
            ref = self.refs[name]
            if ref is None:
                continue
            steps, every = self.horizon(name)
            curves = np.asarray(lopt_curves(self.lopt, task, theta, self.keys, mults, steps, every), np.float64)
            loss, mult, at = best_over_grid(curves[None], list(self.cfg.lr_multipliers))
            ok = math.isfinite(loss[0])
            out[name] = {"score": scoring.score_task(at[0], ref).score if ok else scoring.MIN_SCORE,
                         "lr_multiplier": float(mult[0]) if ok else None,
                         "final_loss": float(loss[0]) if ok else None}
        if not out:
            raise ValueError("no validation task has a usable reference (AdamW diverged at every rate)")
        return {"score": scoring.geomean([r["score"] for r in out.values()]), "tasks": out}


@functools.lru_cache(maxsize=8)
def _tuned_adamw(signature: str) -> dict:
    """The reference records of a :meth:`Validator._signature` (JSON): deterministic, so a process that
    starts several runs (a resume, tests) tunes AdamW once (tune_reference compiles afresh per call)."""
    sig = json.loads(signature)
    return {name: tune_reference(task_registry.get(name), optax.adamw, sig["reference_lrs"], steps, every,
                                 sig["seeds"], sig["seed"])
            for name, (steps, every) in sig["tasks"].items()}


def record(run_dir: str, lopt: LearnedOptimizer, theta: Theta, curve: list, meta: dict, writer=None) -> bool:
    """Log the newest entry of ``curve`` (JSON and TensorBoard); if it beats every earlier entry,
    write θ and the curve to ``RUN_DIR/best``. Returns whether it did."""
    entry = curve[-1]
    atomic_write_json(os.path.join(run_dir, CURVE_FILE), curve)
    best = all(entry["score"] > e["score"] for e in curve[:-1])
    if writer is not None:
        writer.add_scalar("validation/score", entry["score"], entry["step"])
        for name, r in entry["tasks"].items():
            writer.add_scalar(f"validation/{name}", r["score"], entry["step"])
        writer.add_scalar("validation/best", max(e["score"] for e in curve), entry["step"])
    if best:
        best_dir = os.path.join(run_dir, BEST_DIR)
        save_lopt(best_dir, lopt, theta, {**meta, "step": entry["step"], "validation": entry})
        atomic_write_json(os.path.join(best_dir, CURVE_FILE), {"best": entry, "curve": curve})
    return best
