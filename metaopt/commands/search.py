"""``metaopt search``: distributed evolutionary search for optimizer programs (search/, docs/search-results.md).

    metaopt search --config configs/search/quick.yaml --out runs/NAME [--init minimal|adamw|lion|FILE.opt] [--address HOST:PORT]
    metaopt search --resume runs/NAME

When the search ends, the best program is polished and checked for novelty (``runs/NAME/polish.json``,
``search/polish.py``, ``search/novelty.py``; ``--no-polish`` skips it); a resumed run reuses that result.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

NAME = "search"
HELP = "evolve optimizer programs (regularized evolution on Ray) and export the best"
ORDER = 20
CONFIG_COPY = "config.yaml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/search/quick.yaml", help="search config (YAML)")
    p.add_argument("--out", help="run directory (default runs/search-<config name>)")
    p.add_argument("--init", help="initial program of the whole population: minimal (`return g`), a library name (adamw, lion) or a .opt file")
    p.add_argument("--address", help="join this Ray cluster (see docs/ray.md); default: a local ray.init()")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the search checkpointed in RUN_DIR")
    p.add_argument("--workers", type=int, help="override the config's number of Ray workers (0: in-process)")
    p.add_argument("--seed", type=int, help="override the config's search seed (independent searches for success rates; "
                                            "the run directory's config.yaml records it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-heldout", action="store_true", help="skip the final held-out evaluation")
    p.add_argument("--no-polish", action="store_true",
                   help="skip polishing the best program (ablations and roundings re-judged on the funnel) and "
                        "its novelty check against the library")
    p.add_argument("--novelty-scores", action="store_true",
                   help="also judge the closest library rule (defaults and refitted) on the funnel stage")


def run(args: argparse.Namespace) -> int:
    from metaopt.config import ConfigError

    overrides = {}
    if args.init:
        overrides["init"] = args.init
    if args.workers is not None:
        overrides["workers"] = args.workers
    if args.seed is not None:
        if args.resume:
            print("metaopt search: --seed starts a new search; a resumed run keeps the seed in its config.yaml")
            return 2
        overrides["seed"] = args.seed
    try:
        return _run(args, overrides)
    except ConfigError as e:
        print(f"metaopt search: {e}")
        return 2


def _run(args: argparse.Namespace, overrides: dict) -> int:
    import yaml

    from metaopt.io import atomic_write_text
    from search.config import load_search_config
    from search.driver import SearchDriver
    from search.monitor import Monitor
    from search.report import finish
    from search.state import SearchState

    if args.resume:
        run_dir = args.resume
        saved = os.path.join(run_dir, CONFIG_COPY)
        if not os.path.exists(saved):
            print(f"metaopt search: {run_dir} has no {CONFIG_COPY}; nothing to resume")
            return 2
        cfg = load_search_config(saved, overrides)
        print(f"resuming {run_dir}" + ("" if SearchState.exists(run_dir) else " (no checkpoint yet: from the start)"))
    else:
        cfg = load_search_config(args.config, overrides)
        stem = os.path.splitext(os.path.basename(args.config))[0]
        run_dir = args.out or os.path.join("runs", f"search-{stem}")
        if SearchState.exists(run_dir):
            print(f"metaopt search: {run_dir} already holds a search; continue it with --resume {run_dir} "
                  f"or choose another --out")
            return 2
        os.makedirs(run_dir, exist_ok=True)
        atomic_write_text(os.path.join(run_dir, CONFIG_COPY),
                          yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
    if args.no_heldout:
        cfg.heldout.enabled = False

    progress = not args.no_progress
    try:
        driver = SearchDriver(cfg, run_dir, address=args.address, progress=progress)
    except ValueError as e:     # e.g. an initial program too large for max_len / n_registers
        print(f"metaopt search: {e}")
        _shutdown_ray()
        return 2
    try:
        print(f"search: population {cfg.population}, tournament {cfg.tournament}, init {cfg.init}, "
              f"{cfg.workers} worker(s), tasks {', '.join(driver_tasks(cfg))} -> {run_dir}")
        # Baselines first, under their own bar: the search bar starts when the search does.
        driver.compute_baselines()
        monitor = Monitor(run_dir, cfg, progress=progress)
        driver.callbacks = (monitor,)
        try:
            driver.run()
        finally:
            monitor.close()
    finally:
        driver.pool.shutdown()
    finish(driver, address=args.address, polish=not args.no_polish, novelty_scores=args.novelty_scores)
    _shutdown_ray()
    return 0


def driver_tasks(cfg) -> list[str]:
    from search.judge import stage_specs
    return list(stage_specs(cfg)["search"].tasks)


def _shutdown_ray() -> None:
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()
