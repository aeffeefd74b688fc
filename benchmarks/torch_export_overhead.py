"""torch_export_overhead: step time of the exported ``torch.optim.Optimizer`` ÷ torch's built-in (foreach=True).

``optimizer.step()`` (gradients given) on a ~1M-parameter MLP (784-1024-256-10, weights 2-D, biases 1-D) for
adam, adamw, sgd+nesterov and rmsprop: the class ``metaopt.to_torch_source(library program)`` generates against
torch.optim.Adam / AdamW / SGD(nesterov) / RMSprop with ``foreach=True`` and the same hyperparameters (RMSprop's
eps sits elsewhere — optax's convention — which costs the same). Both sides run in this one process,
interleaved (A, B, B, A ...) over repeats; each repeat times a block of steps; the ratio is median(ours) ÷
median(torch). Target ≤ 1.3.

    python benchmarks/torch_export_overhead.py [--repeats 15] [--steps 20] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from metaopt import library, to_torch_source
from metaopt.export_torch import class_name
from metaopt.io import atomic_write_json

LR = 1e-3
# name -> (library program, its hyperparameters, torch's built-in with the same hyperparameters)
CASES = {
    "adam": ("adam", {}, lambda ps: torch.optim.Adam(ps, lr=LR, foreach=True)),
    "adamw": ("adamw", {"wd": 1e-4}, lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=1e-4, foreach=True)),
    "sgd_nesterov": ("nesterov", {"mu": 0.9},
                     lambda ps: torch.optim.SGD(ps, lr=LR, momentum=0.9, nesterov=True, foreach=True)),
    "rmsprop": ("rmsprop", {"decay": 0.9}, lambda ps: torch.optim.RMSprop(ps, lr=LR, alpha=0.9, foreach=True)),
}


def mlp_params(sizes=(784, 1024, 256, 10)) -> list[torch.Tensor]:
    """A ~1.07M-parameter MLP's parameters with fixed gradients."""
    g = torch.Generator().manual_seed(0)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        params += [torch.randn(a, b, generator=g) / a ** 0.5, torch.zeros(b)]
    params = [p.requires_grad_() for p in params]
    for p in params:
        p.grad = 1e-2 * torch.cos(p.detach() + 1.0)
    return params


def exported(name: str):
    program = library.get(name)
    ns: dict = {}
    exec(compile(to_torch_source(program), f"<torch export {name}>", "exec"), ns)
    return ns[class_name(program)]


def time_block(opt, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (0: torch's default; 1 keeps timings stable on a shared machine)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "torch_export_overhead.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    results = {}
    n_params = sum(p.numel() for p in mlp_params())
    for case, (name, hp, builtin) in CASES.items():
        cls = exported(name)
        sides = {"ours": cls(mlp_params(), lr=LR, **hp), "torch": builtin(mlp_params())}
        times: dict[str, list[float]] = {s: [] for s in sides}
        for opt in sides.values():
            time_block(opt, 3)   # state allocation + warm-up
        for r in range(args.repeats):
            for side in ("ours", "torch") if r % 2 == 0 else ("torch", "ours"):   # interleave, alternate order
                times[side].append(time_block(sides[side], args.steps))
        ours, ref = statistics.median(times["ours"]), statistics.median(times["torch"])
        results[case] = {"program": name, "ours_ms": ours * 1e3, "torch_ms": ref * 1e3, "ratio": ours / ref}

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch_export_overhead: optimizer.step(), {n_params:,}-parameter MLP, median of {args.repeats} "
          f"interleaved repeats x {args.steps} steps (torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"load average {load:.1f})")
    print(f"{'optimizer':<13} {'ours ms':>8} {'torch ms':>9} {'ratio':>7}  target <= 1.3")
    for case, r in results.items():
        ok = "ok" if r["ratio"] <= 1.3 else "OVER"
        print(f"{case:<13} {r['ours_ms']:>8.3f} {r['torch_ms']:>9.3f} {r['ratio']:>7.3f}  {ok}")
    payload = {"benchmark": "torch_export_overhead", "params": n_params, "repeats": args.repeats,
               "steps": args.steps, "threads": torch.get_num_threads(), "load_average": load,
               "torch": torch.__version__, "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, payload)
    print("torch_export_overhead: " + " ".join(f"{n}={r['ratio']:.3f}" for n, r in results.items()))
    return payload


if __name__ == "__main__":
    main()
