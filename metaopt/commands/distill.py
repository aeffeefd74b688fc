"""``metaopt distill``: turn a meta-trained learned optimizer into a short DSL program (docs/distillation.md).

    metaopt distill lopt:checkpoints/lopt/hyper-pes-valid --out runs/NAME [--config configs/distill/full.yaml]
    metaopt distill lopt:checkpoints/lopt/hyper-pes-valid --out runs/NAME --resume

Records the teacher on the train and validation tasks, evolves programs whose fitness combines imitation of
the recorded updates with training on the train tasks, refits the best programs' constants, selects on the
validation suite, and writes ``distilled.opt``/``.tex``/``.py`` and ``report.md``/``report.json``
(``metaopt/distill/pipeline.py``, ``metaopt/distill/report.py``). ``--heldout`` adds held-out rows.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

NAME = "distill"
HELP = "distil a learned optimizer into a short DSL program (record, evolve, refit, select on validation)"
ORDER = 25
CONFIG_COPY, TEACHER_FILE = "config.yaml", "teacher.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("teacher", metavar="TEACHER",
                   help="lopt:PATH (a learned-optimizer checkpoint); any optimizer spec works as a teacher "
                        "(e.g. adam, optax:adam), which is how the pipeline is tested")
    p.add_argument("--config", default="configs/distill/full.yaml", help="distillation config (YAML)")
    p.add_argument("--out", help="run directory (default runs/distill-<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out with its saved config (every phase resumes where it stopped)")
    p.add_argument("--heldout", action="store_true",
                   help="also evaluate the teacher, the distilled program and tuned Adam on the held-out suite")
    p.add_argument("--workers", type=int, help="override search.workers (0: judge in this process, no Ray)")
    p.add_argument("--address", help="join this Ray cluster (see docs/ray.md); default: a local ray.init()")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _teacher_spec(teacher: str) -> str:
    """A bare checkpoint directory is ``lopt:DIR``; a spec that does not resolve raises ``SpecError``."""
    from metaopt.specs import check
    if os.path.isfile(os.path.join(teacher, "lopt.json")):
        teacher = "lopt:" + teacher
    check(teacher)
    return teacher


def run(args: argparse.Namespace) -> int:
    from metaopt.config import ConfigError
    from metaopt.dsl import DSLError
    from metaopt.specs import SpecError
    try:
        return _run(args)
    except (ConfigError, SpecError, DSLError) as e:
        print(f"metaopt distill: {e}")
        return 2


def _run(args: argparse.Namespace) -> int:
    import yaml

    from metaopt.distill.config import load_distill_config
    from metaopt.io import atomic_write_json, atomic_write_text

    teacher = _teacher_spec(args.teacher)
    if args.resume:
        run_dir = args.out
        if not run_dir:
            print("metaopt distill: --resume needs --out RUN_DIR")
            return 2
        saved = os.path.join(run_dir, CONFIG_COPY)
        if not os.path.exists(saved):
            print(f"metaopt distill: {run_dir} has no {CONFIG_COPY}; nothing to resume")
            return 2
        with open(os.path.join(run_dir, TEACHER_FILE)) as fh:
            was = json.load(fh)["teacher"]
        if was != teacher:
            print(f"metaopt distill: {run_dir} distils {was}, not {teacher}; resume it with that teacher")
            return 2
        cfg = load_distill_config(saved)
        print(f"resuming {run_dir}")
    else:
        cfg = load_distill_config(args.config)
        stem = os.path.splitext(os.path.basename(args.config))[0]
        run_dir = args.out or os.path.join("runs", f"distill-{stem}")
        if os.path.exists(os.path.join(run_dir, CONFIG_COPY)):
            print(f"metaopt distill: {run_dir} already holds a distillation; continue it with --resume or choose "
                  f"another --out")
            return 2
    if args.workers is not None:
        if args.workers < 0:
            print(f"metaopt distill: --workers must be >= 0, got {args.workers}")
            return 2
        cfg.search.workers = args.workers
    if not args.resume:
        os.makedirs(run_dir, exist_ok=True)
        atomic_write_text(os.path.join(run_dir, CONFIG_COPY), yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        atomic_write_json(os.path.join(run_dir, TEACHER_FILE), {"teacher": teacher})
    return _distil(cfg, teacher, run_dir, args)


def _distil(cfg, teacher: str, run_dir: str, args: argparse.Namespace) -> int:
    from metaopt.commands.search import _shutdown_ray
    from metaopt.distill import report
    from metaopt.distill.pipeline import Distillation

    dist = Distillation(cfg, teacher, run_dir, progress=not args.no_progress, address=args.address)
    try:
        selection = dist.run()
        rep = report.build(dist, selection)
        if args.heldout:
            rep = report.heldout(dist, rep, args.address)
    finally:
        dist.close()
        _shutdown_ray()
    row = selection["rows"][selection["chosen"]]
    im = rep["imitation"]
    print(f"\ndistilled program ({row['origin']}; validation fitness {row['validation']['fitness']:.4f}):")
    print(rep["program"]["text"])
    for stage, table in im.items():
        print(f"{stage} imitation error (1 - cos): " + ", ".join(f"{n} {r['cos']:.4f}" for n, r in table.items()))
    print(f"files: {', '.join(rep['program']['files'].values())}, {run_dir}/report.md, report.json")
    return 0
