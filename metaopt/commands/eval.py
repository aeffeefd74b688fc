"""``metaopt eval``: tune and compare optimizers on a suite (the fair-evaluation protocol)."""
from __future__ import annotations

import argparse

NAME = "eval"
HELP = "tune the learning rate per task, run seeds, compare with tuned AdamW; write reports"
ORDER = 30
DESCRIPTION = """\
Evaluate optimizers with the fair protocol: per (optimizer, task), tune the learning rate on a log grid
(widened at an edge) by median validation loss over tuning seeds, then run fresh seeds at the best rate.
Reports the time-to-result speedup over tuned AdamW (always included; clipped to [1/4, 4]), the final-loss
ratio, their geometric means with bootstrap 90% intervals, win/tie/loss, steps to target, normalized AUC,
divergences and a performance profile (metaopt/scoring.py defines them), under --out (results.json/.csv, summary.md, PNGs, tb/).
Re-running with the same --out skips finished cells.

OPTIMIZER: a library name (adamw), a program file (rule.opt), optax:NAME, or lopt:PATH; any of them
may take keyword hyperparameters, e.g. 'adamw(b1=0.95)'; lr=X moves the grid centre, and tune=False runs
at that rate alone, untuned ('adam(lr=1e-3, tune=False)', 'lopt:DIR(tune=False)' = multiplier 1.0)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("optimizers", nargs="*", metavar="OPTIMIZER", help="optimizer specs (see above)")
    p.add_argument("--config", help="YAML config (configs/eval/*.yaml); command-line flags override it")
    p.add_argument("--suite", help="task suite (default: heldout)")
    p.add_argument("--tasks", help="comma-separated subset of tasks (any registered task names)")
    p.add_argument("--steps", type=int, help="training steps per run (default: each task's own)")
    p.add_argument("--horizon", type=float, help="train the fresh seeds this many times each task's horizon "
                   "(default 1; the reference too)")
    p.add_argument("--tune-horizon", type=float, help="tune on this multiple of the horizon (default: --horizon)")
    p.add_argument("--seeds", type=int, help="seeds at the tuned rate (default 3, at least 3)")
    p.add_argument("--tune-seeds", type=int, help="seeds per grid point while tuning (default 2, at least 2; the median decides)")
    p.add_argument("--grid-points", type=int, help="initial grid points (default 9, at least 9)")
    p.add_argument("--reference", help="the optimizer everything is normalised by (default adamw)")
    p.add_argument("--out", help="output directory (default runs/eval-<timestamp>)")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--num-cpus", type=int, help="CPUs for the local Ray instance")
    p.add_argument("--no-ray", action="store_true", help="run the cells one by one in this process")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_config(args: argparse.Namespace):
    """The EvalConfig from --config (if any) with the flags given on the command line on top."""
    from metaopt.config import load_config
    from metaopt.evaluate import EvalConfig

    overrides = {
        "optimizers": list(args.optimizers) or None, "suite": args.suite, "steps": args.steps,
        "horizon": args.horizon, "tune_horizon": args.tune_horizon,
        "tasks": [t for t in args.tasks.split(",") if t] if args.tasks else None, "seeds": args.seeds,
        "tune_seeds": args.tune_seeds, "grid_points": args.grid_points, "reference": args.reference,
        "out": args.out, "address": args.address, "num_cpus": args.num_cpus,
        "use_ray": False if args.no_ray else None,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.config:
        return load_config(args.config, EvalConfig, overrides)
    return EvalConfig(**overrides)


def run(args: argparse.Namespace) -> int:
    from metaopt.config import ConfigError
    from metaopt.evaluate import evaluate
    from metaopt.provenance import made_by
    from metaopt.specs import SpecError

    try:
        cfg = build_config(args)
        if not cfg.optimizers:
            print("metaopt eval: give at least one OPTIMIZER (or a --config with `optimizers:`)")
            return 2
        result = evaluate(cfg, progress=not args.no_progress)
    except (ConfigError, SpecError, KeyError, ValueError) as e:
        print(f"metaopt eval: {e}")
        return 2
    print()
    print(result.markdown_table)
    print(f"\n{len(result.cells)} cells ({result.computed} computed now); reports in {result.out}/ "
          f"(summary.md, results.json, results.csv, *.png, tb/, provenance.json)")
    print(made_by(result.provenance))
    if result.errors:
        print(f"{len(result.errors)} cell(s) raised; re-run with the same --out to retry them")
        return 1
    return 0
