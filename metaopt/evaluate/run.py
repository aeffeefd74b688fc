"""The evaluation driver: optimizers x tasks -> cells (resumable) -> aggregate -> reports."""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Optional, Sequence

from metaopt.evaluate import aggregate as agg_mod
from metaopt.evaluate import store
from metaopt.evaluate.cell import horizon
from metaopt.evaluate.config import EvalConfig
from metaopt.evaluate.dispatch import Job, run_jobs
from metaopt.evaluate.dispatch import compute as dispatch_compute
from metaopt.io import atomic_write_json
from metaopt.progress import Ticker, progress_bar
from metaopt.provenance import load_provenance, write_provenance


@dataclasses.dataclass
class EvalResult:
    out: str
    optimizers: list[str]
    tasks: list[str]
    cells: list[dict]
    aggregate: dict
    errors: dict[str, str]
    computed: int            # cells computed by this call (the rest were loaded from out/cells)
    paths: dict[str, Any]
    markdown_table: str
    provenance: Optional[dict] = None     # out/provenance.json: what made this evaluation


def default_out(name: Optional[str] = None) -> str:
    return os.path.join("runs", f"eval-{name or time.strftime('%Y%m%d-%H%M%S')}")


def reference_spec(reference: str) -> Any:
    """The reference optimizer: the library's program if present, else optax's own (same semantics)."""
    from metaopt.specs import SpecError, resolve

    try:
        return resolve(reference)
    except SpecError:
        return resolve(f"optax:{reference}")


def resolve_tasks(cfg: EvalConfig, task_objs: Optional[Sequence[Any]] = None) -> list[Any]:
    if task_objs is not None:
        return list(task_objs)
    import tasks

    names = list(cfg.tasks) if cfg.tasks else list(tasks.SUITES.get(cfg.suite, ()))
    if not cfg.tasks and cfg.suite not in tasks.SUITES:
        raise KeyError(f"unknown suite {cfg.suite!r}; known suites: {', '.join(tasks.suite_names())}")
    if not names:
        raise ValueError(f"suite {cfg.suite!r} has no tasks yet" if not cfg.tasks else "no tasks given")
    return [tasks.get(n) for n in names]


def evaluate(cfg: EvalConfig, specs: Optional[Sequence[Any]] = None, task_objs: Optional[Sequence[Any]] = None,
             progress: bool = True, compute_fn: Optional[Callable] = None,
             log: Callable[[str], None] = print) -> EvalResult:
    """Evaluate ``cfg.optimizers`` (or ``specs``: strings or OptimizerSpecs) on the suite's tasks.

    Finished cells in ``cfg.out/cells`` computed under the same protocol are reused; every newly finished
    cell is saved the moment it arrives. The reference optimizer is added when absent.
    """
    from metaopt.specs import resolve
    import tasks as tasks_pkg

    raw = list(specs) if specs is not None else list(cfg.optimizers)
    if not raw:
        raise ValueError("no optimizers to evaluate")
    resolved = [resolve(s) for s in raw]   # fail fast, before any training, on a bad spec
    # What travels to a worker: the spec string (resolved there; cheap to ship) or the spec object.
    ship: list[Any] = [r if isinstance(r, str) else s for r, s in zip(raw, resolved)]
    names = [s.name for s in resolved]
    if len(set(names)) != len(names):
        raise ValueError(f"optimizer names must be distinct, got {names}")
    reference = cfg.reference
    if reference not in names:
        ref = reference_spec(cfg.reference)
        if ref.name not in names:
            resolved.append(ref)
            ship.append(ref.name)
            names.append(ref.name)
        reference = ref.name
    task_list = resolve_tasks(cfg, task_objs)
    task_names = [t.name for t in task_list]
    out = cfg.out or default_out()
    os.makedirs(out, exist_ok=True)
    settings = {**dataclasses.asdict(cfg), "optimizers": names, "tasks": task_names, "out": out,
                "reference": reference}
    atomic_write_json(os.path.join(out, "config.json"), settings)
    write_provenance(out)

    cells: dict[tuple[str, str], dict] = {}
    jobs: list[Job] = []
    digests = {spec.name: store.optimizer_digest(spec.name) for spec in resolved}
    for spec, ship_spec in zip(resolved, ship):
        for task in task_list:
            protocol = cfg.protocol_hash(horizon(task, cfg)[0], horizon(task, cfg, tuning=True)[0])
            saved = store.load_cell(out, spec.name, task.name, protocol, digests[spec.name])
            if saved is not None:
                cells[(spec.name, task.name)] = saved
                continue
            # Names travel to Ray workers (cheap, resolved there); objects only when not registered.
            registered = task.name in tasks_pkg.names() and tasks_pkg.get(task.name) is task
            jobs.append(Job(spec.name, task.name, ship_spec, task.name if registered else task))
    log(f"{len(names)} optimizers x {len(task_names)} tasks: {len(cells)} cells done, {len(jobs)} to run -> {out}")

    errors: dict[str, str] = {}
    parallel = "on Ray" if cfg.use_ray else "one at a time in this process"
    bar = progress_bar(len(names) * len(task_names), "eval cells", unit="cell", enabled=progress,
                       initial=len(cells), postfix=f"{len(jobs)} to run, {parallel}" if jobs else None)

    def on_done(job: Job, record: dict) -> None:
        record["optimizer_digest"] = digests[job.optimizer]
        store.save_cell(out, record)
        cells[(job.optimizer, job.task_name)] = record
        bar.update(1)
        bar.set_postfix_str(f"done {job.optimizer} on {job.task_name}")

    def on_error(job: Job, message: str) -> None:
        errors[f"{job.optimizer} on {job.task_name}"] = message
        bar.update(1)
        log(f"cell {job.optimizer} on {job.task_name} failed:\n{message}")

    run_fn = compute_fn
    if not cfg.use_ray and progress:
        # In this process a cell can take minutes: name the one running (Ray cells cannot touch the bar).
        inner = compute_fn or dispatch_compute

        def run_fn(job: Job, cfg_: EvalConfig) -> dict:
            bar.set_postfix_str(f"running {job.optimizer} on {job.task_name}")
            return inner(job, cfg_)

    try:
        if jobs:
            with Ticker(bar):
                run_jobs(jobs, cfg, on_done, on_error, run_fn)
    finally:
        bar.close()
    if jobs:
        log("writing reports (results.json/.csv, summary.md, plots, TensorBoard)")
    return report(out, cfg, names, task_names, reference, cells, errors, settings, computed=len(jobs) - len(errors))


def report(out: str, cfg: EvalConfig, names: list[str], task_names: list[str], reference: str,
           cells: dict[tuple[str, str], dict], errors: dict[str, str], settings: dict,
           computed: int = 0) -> EvalResult:
    """Aggregate the cells and write every report file (JSON, CSV, Markdown, PNGs, TensorBoard)."""
    from metaopt.evaluate import plots, tboard
    from metaopt.evaluate import report as report_mod

    ordered = [cells[(o, t)] for o in names for t in task_names if (o, t) in cells]
    agg = agg_mod.aggregate(ordered, names, task_names, reference)
    provenance = load_provenance(out)
    paths: dict[str, Any] = report_mod.write_text_reports(out, agg, ordered, names, task_names, settings, errors,
                                                          provenance)
    paths["plots"] = plots.write_plots(out, ordered, names, task_names, agg["profile"])
    paths["tensorboard"] = tboard.tensorboard(out, ordered)
    table = report_mod.summary_table(agg, names, task_names)
    return EvalResult(out, names, task_names, ordered, agg, errors, computed, paths, table, provenance)
