"""export_overhead: step time of ``to_optax(program)`` ÷ an optax implementation of the same rule.

One jitted full update step (gradient given: ``opt.update`` + ``optax.apply_updates``, params and state
donated) on a ~1M-parameter MLP pytree, for adam, adamw, lion, adabelief, nesterov (sgd+nesterov) and
rmsprop against optax's own, and for the shipped distilled program(s) (``checkpoints/programs/distilled/``)
against a hand-written optax transformation of the same equations. Both sides run in this one process, interleaved (A, B, A, B ...) over repeats; each repeat times
a block of steps; the ratio is median(DSL) ÷ median(optax). Target ≤ 1.05.

    python benchmarks/export_overhead.py [--repeats 15] [--steps 20]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt import library, parse, to_optax
from metaopt.io import atomic_write_json

LR = 1e-3
# name -> optax reference with the library file's defaults (each .opt file cites its optax reference).
REFERENCES = {
    "adam": lambda: optax.adam(LR),
    "adamw": lambda: optax.adamw(LR),
    "lion": lambda: optax.lion(LR),
    "adabelief": lambda: optax.adabelief(LR),
    "nesterov": lambda: optax.sgd(LR, momentum=0.9, nesterov=True),
    "rmsprop": lambda: optax.rmsprop(LR),
}
ROOT = Path(__file__).resolve().parent.parent


class NormScaledAdagradNormState(NamedTuple):
    count: jax.Array      # steps taken
    sum_sq: Any           # per leaf: sum over past steps of the squared gradient norm


def norm_scaled_adagrad_norm(learning_rate: float, r: float = 0.08487, eps: float = 0.999
                             ) -> optax.GradientTransformation:
    """The rule distilled from ``hyper-pes-valid`` (``checkpoints/programs/distilled/hyper-pes-valid.opt``),
    written by hand from its equations, per tensor::

        S_t = S_{t-1} + ||g_t||^2,   rho_1 = r,   rho_t = sigmoid(r) (t > 1)
        u_t = g_t * max(||w_t - sigmoid(r)||, rho_t) / sqrt(eps + S_t),   w_{t+1} = w_t - lr * u_t

    AdaGrad-Norm (Ward et al. 2019) with the step scaled by the tensor's norm (around sigmoid(r) ~ 0.52),
    as a LARS-style trust ratio (You et al. 2017)."""
    def init(params):
        return NormScaledAdagradNormState(jnp.zeros([], jnp.int32), jax.tree.map(lambda p: jnp.zeros([], p.dtype), params))

    def update(grads, state, params):
        count = state.count + 1
        c = jax.nn.sigmoid(r)
        rho = jnp.where(count <= 1, r, c)
        sum_sq = jax.tree.map(lambda g, s: s + jnp.sum(g * g), grads, state.sum_sq)
        updates = jax.tree.map(lambda g, p, s: -learning_rate * g * jnp.maximum(jnp.linalg.norm((p - c).ravel()), rho)
                               / jnp.sqrt(eps + s), grads, params, sum_sq)
        return updates, NormScaledAdagradNormState(count, sum_sq)

    return optax.GradientTransformation(init, update)


# shipped program file -> hand-written optax implementation of its equations (a function of the learning rate)
PROGRAMS = {
    "checkpoints/programs/distilled/hyper-pes-valid.opt": norm_scaled_adagrad_norm,
}


def program_sides(name: str) -> dict | None:
    """``{"dsl": ..., "optax": ...}`` for a library name or a shipped program file, else None."""
    if name in REFERENCES:
        return {"dsl": to_optax(library.get(name), LR), "optax": REFERENCES[name]()} if name in library.names() else None
    path = ROOT / name
    if not path.is_file():
        return None
    return {"dsl": to_optax(parse(path.read_text(), filename=str(path)), LR), "optax": PROGRAMS[name](LR)}


def mlp_params(key, sizes=(784, 1024, 256, 10)) -> dict:
    """A ~1.07M-parameter MLP pytree (weights 2-D, biases 1-D)."""
    params = {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        key, k = jax.random.split(key)
        params[f"layer{i}"] = {"w": jax.random.normal(k, (a, b)) / a ** 0.5, "b": jnp.zeros((b,))}
    return params


def make_step(opt):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state
    return jax.jit(step, donate_argnums=(0, 1))


def time_block(step, params, state, grads, steps: int):
    t0 = time.perf_counter()
    for _ in range(steps):
        params, state = step(params, state, grads)
    jax.block_until_ready(params)
    return (time.perf_counter() - t0) / steps, params, state


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "export_overhead.json"))
    args = ap.parse_args(argv)

    key = jax.random.PRNGKey(0)
    base = mlp_params(key)
    n_params = sum(x.size for x in jax.tree.leaves(base))
    grads = jax.tree.map(lambda x: 1e-2 * jnp.cos(x + 1.0), base)
    results = {}
    for name in [*REFERENCES, *PROGRAMS]:
        sides = program_sides(name)
        if sides is None:
            results[name] = {"skipped": f"{name} not written yet"}
            continue
        run = {}
        for side, opt in sides.items():
            p = jax.tree.map(jnp.copy, base)
            s = opt.init(p)
            step = make_step(opt)
            _, p, s = time_block(step, p, s, grads, 3)   # compile + warm-up
            run[side] = [step, p, s, []]
        for _ in range(args.repeats):
            for side in ("dsl", "optax") if _ % 2 == 0 else ("optax", "dsl"):   # interleave, alternate order
                step, p, s, times = run[side]
                dt, p, s = time_block(step, p, s, grads, args.steps)
                run[side][1:3] = [p, s]
                times.append(dt)
        dsl, ref_t = statistics.median(run["dsl"][3]), statistics.median(run["optax"][3])
        results[name] = {"dsl_ms": dsl * 1e3, "optax_ms": ref_t * 1e3, "ratio": dsl / ref_t}

    print(f"export_overhead: jitted update+apply step, {n_params:,}-parameter MLP, median of {args.repeats} "
          f"interleaved repeats x {args.steps} steps ({jax.devices()[0].platform})")
    w = max(len(n) for n in results)
    print(f"{'optimizer':<{w}} {'dsl ms':>8} {'optax ms':>9} {'ratio':>7}  target <= 1.05")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:<{w}} {'-':>8} {'-':>9} {'-':>7}  skipped: {r['skipped']}")
        else:
            ok = "ok" if r["ratio"] <= 1.05 else "OVER"
            print(f"{name:<{w}} {r['dsl_ms']:>8.3f} {r['optax_ms']:>9.3f} {r['ratio']:>7.3f}  {ok}")
    payload = {"benchmark": "export_overhead", "params": n_params, "repeats": args.repeats, "steps": args.steps,
               "device": jax.devices()[0].platform, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, payload)
    print("export_overhead: " + " ".join(
        f"{Path(n).stem}={r['ratio']:.3f}" if "ratio" in r else f"{Path(n).stem}=skipped" for n, r in results.items()))
    return payload


if __name__ == "__main__":
    main()
