"""meta_throughput: inner steps/s during PES meta-training ÷ inner steps/s of plain Adam training.

The meta side is the recipe (``configs/meta/recipe.yaml``): its learned optimizer (architecture and
kwargs, factored features included) and its estimator (PES pairs, σ, meta-loss on validation,
log loss, ``normalize: init``, task horizons), at one truncation length of its curriculum
(``--unroll``, default the middle stage). Both sides train the same tasks (one seeded sample from
each family in ``--families``; default the four toy train families, whose compiles take seconds; the
recipe's char_lm / digits_cnn / char_rnn take minutes each) with the same number of inner problems in
parallel (PES: 2 per antithetic pair; Adam: ``vmap`` over as many seeds) for the same truncation
length, jitted, after warm-up; the meta side includes everything a meta-step does (perturbations,
both unrolls, the estimate, resets, the outer Adam update). Median over interleaved repeats; the
headline is the geometric mean over the tasks. Target (issue 15, point 5): ≥ 0.5.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import jax
import optax

from metaopt.config import load_config
from metaopt.io import atomic_write_json
from metaopt.meta.config import MetaConfig
from metaopt.meta.trainer import meta_optimizer
from metaopt.meta.worker import MetaWorker
from metaopt.train import train

RECIPE = os.path.join(ROOT, "configs", "meta", "recipe.yaml")
TARGET = 0.5


def bench_config(families: list[str], unroll: int | None) -> MetaConfig:
    """The recipe, restricted to one sample per family and one truncation length."""
    cfg = load_config(RECIPE, MetaConfig)
    stages = cfg.curriculum.unroll_lengths if cfg.curriculum else [cfg.estimator.unroll_length]
    est = dataclasses.replace(cfg.estimator, unroll_length=unroll or stages[len(stages) // 2])
    return dataclasses.replace(cfg, name="bench", families=list(families), task_pool=len(families),
                               task_resample_every=10**9, curriculum=None, estimator=est)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", nargs="+", default=["quadratic", "regression", "digits_mlp", "rosenbrock"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--unroll", type=int, default=None, help="truncation length (default: the recipe's middle stage)")
    args = ap.parse_args(argv)
    cfg = bench_config(args.families, args.unroll)
    unroll = cfg.estimator.unroll_length
    worker = MetaWorker(cfg)
    mopt = meta_optimizer(cfg)
    apply = jax.jit(lambda th, st, g: mopt.update(g, st, th))
    n_inner = worker.particles_per_slot()
    rows = []
    for idx, task in enumerate(worker.pool):
        theta = worker.lopt.init_meta_params(jax.random.PRNGKey(0))
        mstate = mopt.init(theta)
        init, estimate = worker._compiled(idx)
        state = init(theta, jax.random.PRNGKey(1))

        def meta_step(state, i):
            g, state, _ = estimate(theta, state, jax.random.PRNGKey(i))
            upd, _ = apply(theta, mstate, g)
            jax.block_until_ready(upd)
            return state

        keys = jax.random.split(jax.random.PRNGKey(2), n_inner)
        adam = jax.jit(jax.vmap(lambda k: train(task, optax.adam(1e-2), k, unroll, unroll).train_loss))
        state = meta_step(state, 0)
        jax.block_until_ready(adam(keys))
        t_meta, t_adam = [], []
        for r in range(args.repeats):     # interleaved
            t0 = time.perf_counter()
            state = meta_step(state, r + 1)
            t_meta.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            jax.block_until_ready(adam(keys))
            t_adam.append(time.perf_counter() - t0)
        steps = n_inner * unroll
        meta_sps, adam_sps = steps / statistics.median(t_meta), steps / statistics.median(t_adam)
        rows.append({"task": task.name, "params": task.param_count(), "meta_steps_per_s": meta_sps,
                     "adam_steps_per_s": adam_sps, "ratio": meta_sps / adam_sps})
    print(f"PES meta-training (recipe: {cfg.lopt.architecture} {cfg.lopt.kwargs}; {cfg.estimator.num_particles} "
          f"pairs, unroll {unroll}, meta_loss {cfg.estimator.meta_loss}) vs Adam, {n_inner} parallel inner "
          f"problems each, median of {args.repeats}")
    print(f"{'task':<28} {'params':>7} {'meta steps/s':>13} {'adam steps/s':>13} {'ratio':>7}")
    for r in rows:
        print(f"{r['task']:<28} {r['params']:>7} {r['meta_steps_per_s']:>13.0f} {r['adam_steps_per_s']:>13.0f} "
              f"{r['ratio']:>7.2f}")
    ratio = statistics.geometric_mean([r["ratio"] for r in rows])
    out = os.path.join(ROOT, "benchmarks", "results", "meta_throughput.json")
    atomic_write_json(out, {"rows": rows, "ratio_geomean": ratio, "target": TARGET, "pass": ratio >= TARGET,
                            "unroll": unroll, "particles": cfg.estimator.num_particles,
                            "lopt": {"architecture": cfg.lopt.architecture, "kwargs": cfg.lopt.kwargs},
                            "repeats": args.repeats})
    print(f"meta_throughput: ratio={ratio:.3f} unroll={unroll} target>={TARGET} pass={ratio >= TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
