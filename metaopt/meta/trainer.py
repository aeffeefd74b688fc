"""The outer (meta-training) loop.

    θ ← θ − Adam(clip_{‖·‖≤c}(ĝ)),   ĝ = mean over workers and their task slots of the estimator's ĝ

with the estimator (TBPTT, PES or ES) chosen in the config, its truncation length set by the
curriculum stage of the step (``curriculum``). The learner logs TensorBoard scalars to ``runs/NAME``
(meta-loss, meta-gradient norm, inner train loss, reset fraction, unroll length), scores θ on the
validation suite every ``validation.every`` steps and keeps the best θ in ``runs/NAME/best``
(metaopt.meta.validation), checkpoints atomically every ``checkpoint_every`` steps and at the end,
and resumes exactly (``resume=True``): the next step after a resume is the step an uninterrupted run
would take, in the same curriculum stage, with the same validation curve.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.config import config_to_dict
from metaopt.learned.base import build
from metaopt.learned.export import save_lopt
from metaopt.meta.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from metaopt.meta.config import MetaConfig
from metaopt.meta.distributed import make_workers
from metaopt.meta.validation import BEST_DIR, CURVE_FILE, Validator, record
from metaopt.progress import Ticker, progress_bar
from metaopt.provenance import load_provenance, made_by, write_provenance


@dataclasses.dataclass
class MetaResult:
    theta: object
    step: int
    history: list            # one dict of metrics per outer step
    inner_steps: int
    seconds: float
    run_dir: str


def meta_optimizer(cfg: MetaConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), optax.adam(cfg.meta_lr))


def meta_train(cfg: MetaConfig, run_dir: str, resume: bool = False, address: str | None = None,
               num_cpus: int | None = None, progress: bool = True, stop_after: int | None = None,
               log: bool = True, max_seconds: float | None = None) -> MetaResult:
    """Meta-train per ``cfg`` into ``run_dir``; ``stop_after`` ends early after that many steps of
    this call (tests use it to simulate a kill); ``max_seconds`` ends early (with a checkpoint, so
    ``resume=True`` continues) once this call has run that long — a wall-clock budget."""
    from tensorboardX import SummaryWriter

    os.makedirs(run_dir, exist_ok=True)
    lopt = build({"architecture": cfg.lopt.architecture, "kwargs": cfg.lopt.kwargs})
    mopt = meta_optimizer(cfg)
    workers = make_workers(cfg, address, num_cpus)
    write_provenance(run_dir)      # after the workers: Ray spawns its processes before JAX starts here
    if resume and has_checkpoint(run_dir):
        ck = load_checkpoint(run_dir)
        theta = jax.tree_util.tree_map(jnp.asarray, ck["theta"])
        opt_state = jax.tree_util.tree_map(jnp.asarray, ck["meta_opt_state"])
        start, history, elapsed = int(ck["step"]), ck["history"], float(ck["seconds"])
        curve = list(ck.get("validation", []))       # checkpoints from before validation have none
        workers.set_states(ck["workers"])
    else:
        if resume:
            print(f"no checkpoint in {run_dir}; starting fresh")
        theta = lopt.init_meta_params(jax.random.PRNGKey(cfg.seed))
        opt_state = mopt.init(theta)
        start, history, elapsed, curve = 0, [], 0.0, []
    validator = Validator(cfg.validation, lopt, run_dir) if cfg.validation.every else None

    @jax.jit
    def apply(theta, opt_state, grad):
        norm = optax.global_norm(grad)
        grad = jax.tree_util.tree_map(lambda g: jnp.where(jnp.isfinite(norm), g, 0.0), grad)  # skip NaN steps
        updates, opt_state = mopt.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, norm

    def checkpoint(step):
        save_checkpoint(run_dir, {"theta": theta, "meta_opt_state": opt_state, "step": step,
                                  "workers": workers.get_states(), "history": history, "validation": curve,
                                  "seconds": elapsed + time.perf_counter() - t0,
                                  "config": config_to_dict(cfg)})
        save_lopt(run_dir, lopt, theta, {"config": config_to_dict(cfg), "step": step,
                                         "meta_loss": history[-1]["meta_loss"] if history else None})

    writer = SummaryWriter(run_dir) if log else None
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    t0 = time.perf_counter()
    # The first step compiles the unroll on every worker (seconds to minutes): say so, keep the clock moving.
    bar = progress_bar(cfg.steps, f"meta-train {cfg.name}", enabled=progress and end > start, initial=start,
                       postfix="first step: compiling the inner unroll")
    ticker = Ticker(bar)
    try:
        for step in range(start, end):
            grad, metrics = workers.compute(theta, step)
            theta, opt_state, norm = apply(theta, opt_state, grad)
            metrics = {k: v for k, v in metrics.items() if k != "task_ids"}
            metrics["grad_norm"] = float(norm)
            metrics["unroll_length"] = cfg.estimator_at(step).unroll_length
            history.append(metrics)
            # on the schedule and at the last step only, so a stopped-and-resumed run validates where an
            # uninterrupted one does
            if validator is not None and ((step + 1) % cfg.validation.every == 0 or step + 1 == cfg.steps):
                t_val = time.perf_counter()
                curve.append({"step": step + 1, **validator.score(theta)})
                curve[-1]["seconds"] = time.perf_counter() - t_val
                record(run_dir, lopt, theta, curve, {"config": config_to_dict(cfg)}, writer)
            bar.set_postfix(meta_loss=f"{metrics['meta_loss']:.3f}", inner=f"{metrics['inner_loss']:.3g}",
                            refresh=False)
            bar.update(1)
            if writer is not None and (step % cfg.log_every == 0 or step == end - 1):
                for k, v in metrics.items():
                    writer.add_scalar(f"meta/{k}", v, step + 1)
            out_of_time = max_seconds is not None and time.perf_counter() - t0 >= max_seconds
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == end or out_of_time:
                checkpoint(step + 1)
            if out_of_time:
                end = step + 1
                break
        if start == end:
            checkpoint(end)
        inner = workers.inner_steps()
    finally:
        ticker.stop()
        bar.close()
        if writer is not None:
            writer.close()
        workers.close()
    return MetaResult(theta, end, history, inner, elapsed + time.perf_counter() - t0, run_dir)


def summary(result: MetaResult, window: int = 10) -> str:
    """A short text summary: meta-loss at the start and end, gradient norm, speed."""
    h = result.history
    provenance = load_provenance(result.run_dir)
    made = f"\n{made_by(provenance)}" if provenance else ""
    if not h:
        return f"{result.run_dir}: no steps taken{made}"
    first = np.mean([m["meta_loss"] for m in h[:window]])
    last = np.mean([m["meta_loss"] for m in h[-window:]])
    inner = np.mean([m["inner_loss"] for m in h[-window:]])
    curve_path = os.path.join(result.run_dir, CURVE_FILE)
    selected = ""
    if os.path.exists(curve_path):
        with open(curve_path) as fh:
            best = max(json.load(fh), key=lambda e: e["score"])
        selected = (f"\n  validation (speedup over tuned AdamW, metaopt.scoring): best {best['score']:.3f} at step "
                    f"{best['step']} -> {os.path.join(result.run_dir, BEST_DIR)}")
    return (f"meta-trained {result.step} steps in {result.seconds:.1f}s -> {result.run_dir}\n"
            f"  meta-loss (mean of {window}): first {first:.4f}  last {last:.4f}\n"
            f"  inner train loss (last {window}): {inner:.4g}   grad norm (last): {h[-1]['grad_norm']:.3g}\n"
            f"  inner steps this call: {result.inner_steps:,}{selected}{made}")
