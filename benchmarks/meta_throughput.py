"""meta_throughput: inner steps/s during PES meta-training ÷ inner steps/s of plain Adam training.

Both sides train the same tasks (one seeded sample from each of the four train families that
meta-training draws from: quadratic, regression, digits_mlp, rosenbrock) with the same number of
inner problems in parallel (PES: 2 per antithetic pair; Adam: ``vmap`` over as many seeds) for the
same truncation length, jitted, after warm-up; the meta side includes everything a meta-step does
(perturbations, both unrolls, the estimate, resets, the outer Adam update). Median over repeats;
the headline is the geometric mean over the tasks. Target (DESIGN.md): ≥ 0.3.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax
import optax

from metaopt.io import atomic_write_json
from metaopt.meta.config import EstimatorConfig, LOptConfig, MetaConfig
from metaopt.meta.trainer import meta_optimizer
from metaopt.meta.worker import MetaWorker
from metaopt.train import train


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=4, help="pool tasks to measure (4 = one per family)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--particles", type=int, default=8)
    ap.add_argument("--unroll", type=int, default=20)
    args = ap.parse_args(argv)
    cfg = MetaConfig(name="bench", task_pool=args.tasks, task_resample_every=10**9,
                     lopt=LOptConfig("mlp", {}),
                     estimator=EstimatorConfig(kind="pes", num_particles=args.particles,
                                               unroll_length=args.unroll, reset_every=10))
    rows = []
    for idx in range(args.tasks):
        worker = MetaWorker(cfg)
        task = worker.pool[idx]
        theta = worker.lopt.init_meta_params(jax.random.PRNGKey(0))
        mopt = meta_optimizer(cfg)
        mstate = mopt.init(theta)
        apply = jax.jit(lambda th, st, g: mopt.update(g, st, th))
        init, estimate = worker._compiled(idx)
        state = init(theta, jax.random.PRNGKey(1))
        n_inner = worker.particles_per_slot()

        def meta_step(state, i):
            g, state, _ = estimate(theta, state, jax.random.PRNGKey(i))
            upd, _ = apply(theta, mstate, g)
            jax.block_until_ready(upd)
            return state

        keys = jax.random.split(jax.random.PRNGKey(2), n_inner)
        adam = jax.jit(jax.vmap(lambda k: train(task, optax.adam(1e-2), k, args.unroll, args.unroll).train_loss))
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
        steps = n_inner * args.unroll
        meta_sps, adam_sps = steps / statistics.median(t_meta), steps / statistics.median(t_adam)
        rows.append({"task": task.name, "params": task.param_count(), "meta_steps_per_s": meta_sps,
                     "adam_steps_per_s": adam_sps, "ratio": meta_sps / adam_sps})
    print(f"PES meta-training ({args.particles} pairs, unroll {args.unroll}, mlp lopt) vs Adam, "
          f"{2 * args.particles} parallel inner problems each")
    print(f"{'task':<28} {'params':>7} {'meta steps/s':>13} {'adam steps/s':>13} {'ratio':>7}")
    for r in rows:
        print(f"{r['task']:<28} {r['params']:>7} {r['meta_steps_per_s']:>13.0f} {r['adam_steps_per_s']:>13.0f} {r['ratio']:>7.2f}")
    ratio = statistics.geometric_mean([r["ratio"] for r in rows])
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "meta_throughput.json")
    atomic_write_json(out, {"rows": rows, "ratio_geomean": ratio, "target": 0.3, "pass": ratio >= 0.3})
    print(f"meta_throughput: ratio={ratio:.3f} target>=0.3 pass={ratio >= 0.3}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
