"""Judging batches of candidate programs on the search tasks — the swappable evaluator.

A :class:`Judge` lives in a worker (or the driver, for ``workers: 0``) and is built once per *stage*
(``"hurdle"``: AutoML-Zero's cheap first stage; ``"search"``: the search tasks; ``"funnel"``: the
validation tasks with other seeds). Given program texts it returns, per program and task, the tuning loss
at the best rate of the stage's learning-rate grid, that rate and the seed curves there
(``search.fitness.best_over_grid``). The hurdle's grid is per candidate: ``grid_factors`` x a centre rate
the driver sends with each program (its parent's best rate on that task). Fitness (the speedup over tuned AdamW,
``metaopt.scoring``) is computed by the driver, which holds the baselines.

The inner training is a pluggable *back end*, ``trainer(programs, lrs, key, n_seeds) -> curves
[P, L, n_seeds, T]`` built once per task:

* ``interpreter`` — ``metaopt.interpret.PopulationTrainer``: the batched interpreter (compiled once per
  task, a whole batch of programs in one vmapped call). The search's intended back end.
* ``compile`` — each program compiled to optax (``metaopt.to_optax``) and trained with ``metaopt.train``;
  one compile per program, so slow, but exact.
* ``auto`` — ``interpreter`` (kept so configs written before ``interpreter`` was the default still load).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.evaluate.metrics import clean_curve
from metaopt.io import atomic_write_json
from metaopt.interpret.encoding import Encoded as _Encoded
from search.fitness import baseline_factories, best_over_grid

Trainer = Callable[[Sequence[Any], np.ndarray, jax.Array, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """How one stage judges: which tasks, how many steps each, seeds, the rate grid."""

    name: str
    tasks: tuple[str, ...]
    steps: tuple[int, ...]
    eval_every: tuple[int, ...]
    seeds: int
    seed: int
    lr_grid: tuple[float, ...]          # the baselines' grid (and the candidates', unless ``factors``)
    factors: tuple[float, ...] = ()     # candidates: rates = centre x factors (the hurdle)


def hurdle_sizes(batch_size: int) -> tuple[int, ...]:
    """Batch shapes of the hurdle's interpreter calls. A batch is one call per task (each program on its
    own grid, ``centre x factors``), padded to the smallest of these sizes that holds it: a full batch
    always takes ``batch_size`` (one compile per hurdle task and worker); the short batches near the end
    of an evaluation budget pad at most 2x (a batch of 1 pads to ``batch_size // 4``)."""
    return tuple(sorted({max(1, batch_size // 4), max(1, batch_size // 2), batch_size}))


def stage_specs(cfg: Any) -> dict[str, StageSpec]:
    """The ``search`` and ``funnel`` stages of a :class:`~search.config.SearchConfig`, and ``hurdle``
    when it is enabled."""
    import tasks as task_registry
    names = tuple(cfg.tasks.names) or tuple(task_registry.SUITES[cfg.tasks.suite])
    if not names:
        raise ValueError(f"no search tasks: tasks.names is empty and suite {cfg.tasks.suite!r} has none")
    steps = tuple(cfg.tasks.steps or task_registry.get(n).steps for n in names)
    every = tuple(cfg.tasks.eval_every or default_eval_every(s) for s in steps)
    for n, s, e in zip(names, steps, every):
        if s % e:
            raise ValueError(f"task {n}: steps {s} is not a multiple of eval_every {e}")
    grid = tuple(cfg.tasks.lr_grid)
    f = cfg.funnel
    f_names = tuple(f.tasks) or tuple(task_registry.SUITES[f.suite])
    f_steps = tuple(f.steps or task_registry.get(n).steps for n in f_names)
    out = {
        "search": StageSpec("search", names, steps, every, cfg.tasks.seeds, cfg.seed, grid),
        # The funnel judges on other tasks (the validation suite) than fitness does: see FunnelConfig.
        "funnel": StageSpec("funnel", f_names, f_steps, tuple(default_eval_every(s) for s in f_steps),
                            f.seeds, cfg.seed + f.seed_offset, grid),
    }
    h = cfg.hurdle
    if h.enabled:
        h_names = tuple(h.tasks) or names[:h.count]
        h_steps = tuple(h.steps for _ in h_names)
        # Same seeds and keys as the search stage; AdamW (the divisor) is tuned on the full `lr_grid`.
        out["hurdle"] = StageSpec("hurdle", h_names, h_steps, tuple(default_eval_every(s) for s in h_steps),
                                  cfg.tasks.seeds, cfg.seed, grid, tuple(h.grid_factors))
    return out


def centre_key(rate: float) -> float:
    """A centre rate rounded to 4 significant digits: rates that print alike share a hurdle call."""
    return float(f"{rate:.4g}")


def hurdle_centres(spec: StageSpec, parent: Optional[dict], adamw: dict, grid: Sequence[float]) -> dict[str, float]:
    """A child's hurdle centre rate per task: its parent's best rate there (``parent``: the judged record;
    from its hurdle, else from its search stage), else tuned AdamW's hurdle rate (``adamw``: the baseline
    records; the parent is not judged yet), else the geometric middle of ``grid``. The child is then tried
    at centre x ``spec.factors``."""
    rec = parent or {}
    out = {}
    for task in spec.tasks:
        options = [(rec.get("hurdle") or {}).get("lrs", {}).get(task), rec.get("lrs", {}).get(task),
                   adamw[task].get("lr")]
        rate = next((r for r in options if r is not None and 0 < r < float("inf")), None)
        out[task] = centre_key(rate if rate is not None else (min(grid) * max(grid)) ** 0.5)
    return out


def default_eval_every(steps: int, evaluations: int = 10) -> int:
    """The largest interval <= ``steps / evaluations`` that divides ``steps``: the speedup reads steps to
    target off the validation curve, so it needs points along it, not only the final one."""
    every = max(1, steps // evaluations)
    while steps % every:
        every -= 1
    return every


def _interpreter_trainer(task, steps: int, eval_every: int, cfg: Any,
                         sizes: Sequence[int] = ()) -> Trainer:
    from metaopt.interpret import PopulationTrainer, stack
    trainer = PopulationTrainer(task, cfg.max_len, cfg.n_registers, steps, eval_every)
    filler = _encode(_minimal(), cfg)

    def run(programs, lrs, key, n_seeds):
        """``programs``: Program (encoded here), ``Encoded`` (by :meth:`Judge.__call__`, once for all
        tasks) or None (failed); ``lrs``: ``[L]`` shared or ``[P, L]`` per program."""
        encs = [p if isinstance(p, _Encoded) or p is None else _encode(p, cfg) for p in programs]
        ok = np.array([e is not None for e in encs], bool)
        encs = [e if e is not None else filler for e in encs]   # keeps the batch shape fixed
        # Pad to a fixed size (the batch size, or one of the hurdle's few) so calls share a compiled shape.
        n = len(encs)
        size = min([s for s in sizes if s >= n] or [max(n, cfg.batch_size)])
        encs += [filler] * (size - n)
        lrs = np.asarray(lrs, np.float32)
        if lrs.ndim == 2:   # padding rows train the filler at the first program's rates; never read
            lrs = np.concatenate([lrs, np.broadcast_to(lrs[:1], (size - n, lrs.shape[1]))])
        curves = np.array(trainer(stack(encs), lrs, key, n_seeds))[:n]
        curves[~ok] = np.nan
        return curves

    run.trainer = trainer     # tests count its compiled shapes
    run.encode = lambda p: _encode(p, cfg)
    return run


def _encode(program: Any, cfg: Any):
    """The interpreter's encoding of ``program``, or None when it cannot hold it (a failed candidate)."""
    from metaopt.interpret import EncodingError, encode
    try:
        return encode(program, cfg.max_len, cfg.n_registers)
    except (EncodingError, ValueError, NotImplementedError):
        return None


def _compile_trainer(task, steps: int, eval_every: int, cfg: Any) -> Trainer:
    from metaopt.compile import to_optax
    from metaopt.train import train

    def one(program, lrs, key, n_seeds):
        factory = lambda lr: to_optax(program, learning_rate=lr)
        keys = jax.random.split(key, n_seeds)
        run = lambda k, lr: train(task, factory, k, steps, eval_every, learning_rate=lr).valid_loss
        return np.asarray(jax.vmap(jax.vmap(run, (0, None)), (None, 0))(keys, lrs))   # [L, S, T]

    def run(programs, lrs, key, n_seeds):
        lrs = jnp.asarray(lrs, jnp.float32)
        out = np.full((len(programs), len(lrs), n_seeds, steps // eval_every + 1), np.nan)
        for i, p in enumerate(programs):
            if p is None:
                continue
            try:
                out[i] = one(p, lrs, key, n_seeds)
            except Exception:   # anything the compiler or tracer rejects is a failed candidate
                pass
        return out

    return run


def check_encodable(program: Any, cfg: Any) -> None:
    """Fail fast when the interpreter cannot hold the initial program (every child would start from
    a worst-fitness parent): e.g. ``--init adamw`` needs max_len >= 14 and n_registers >= 26."""
    if cfg.backend == "compile":
        return
    from metaopt.interpret import EncodingError, encode
    try:
        encode(program, cfg.max_len, cfg.n_registers)
    except EncodingError as e:
        raise ValueError(f"initial program {cfg.init!r} does not fit the interpreter ({e}); raise max_len "
                         f"/ n_registers in the config") from None


def _minimal():
    from search.programs import MINIMAL_TEXT, parse
    return parse(MINIMAL_TEXT)


class Judge:
    """Judges batches of program texts for one stage; one trainer per task, built on first use."""

    def __init__(self, cfg: Any, stage: str, spec: Optional[StageSpec] = None):
        self.cfg = cfg
        self.spec = spec or stage_specs(cfg)[stage]
        self.backend = "interpreter" if cfg.backend == "auto" else cfg.backend
        self._trainers: dict[str, Trainer] = {}

    def _trainer(self, i: int) -> Trainer:
        import tasks as task_registry
        name = self.spec.tasks[i]
        if name not in self._trainers:
            task, steps, every = task_registry.get(name), self.spec.steps[i], self.spec.eval_every[i]
            if self.backend == "interpreter":
                sizes = hurdle_sizes(self.cfg.batch_size) if self.spec.factors else (self.cfg.batch_size,)
                self._trainers[name] = _interpreter_trainer(task, steps, every, self.cfg, sizes)
            else:
                self._trainers[name] = _compile_trainer(task, steps, every, self.cfg)
        return self._trainers[name]

    def _best(self, i: int, progs: list, key, centres: Optional[Sequence[dict]]):
        """``best_over_grid`` of task ``i`` for every program: one call, on the stage's grid or (hurdle)
        on each program's own ``centre x factors``."""
        name = self.spec.tasks[i]
        if not self.spec.factors:
            curves = self._trainer(i)(progs, np.asarray(self.spec.lr_grid, np.float32), key, self.spec.seeds)
            return best_over_grid(curves, self.spec.lr_grid)
        if centres is None or len(centres) != len(progs):
            raise ValueError(f"stage {self.spec.name!r} needs a centre rate per program")
        # Rates are data in the interpreter: every centre rides in one call (grouping by centre cost a
        # call, a padded group and up to three compiles per task).
        grids = np.array([[centre_key(c[name]) * f for f in self.spec.factors] for c in centres])
        curves = self._trainer(i)(progs, grids.astype(np.float32), key, self.spec.seeds)
        return best_over_grid(curves, grids)      # the reported rates: the float64 grid, as before

    def __call__(self, texts: Sequence[str], centres: Optional[Sequence[dict]] = None) -> list[dict]:
        """Judge ``texts``; ``centres`` (hurdle only): per program, ``{task: centre rate}``."""
        from search.programs import DSLError, parse
        progs, errors = [], []
        for t in texts:
            try:
                progs.append(parse(t))
                errors.append(None)
            except DSLError as e:
                progs.append(None)
                errors.append(f"parse: {e}")
        results = [{"losses": {}, "lrs": {}, "curves": {}, "error": err} for err in errors]
        if self.backend == "interpreter" and self.spec.tasks:
            # Encoded once for all the stage's tasks (the encoding does not depend on the task).
            enc = self._trainer(0).encode
            progs = [enc(p) if p is not None else None for p in progs]
        key = jax.random.PRNGKey(self.spec.seed)
        for i, name in enumerate(self.spec.tasks):
            best, best_lr, at = self._best(i, progs, key, centres)
            for r, loss, lr, seed_curves in zip(results, best, best_lr, at):
                # NaN (diverged at every rate, or failed) is stored as None: JSON-safe, read as failure.
                ok = bool(np.isfinite(loss))
                r["losses"][name] = float(loss) if ok else None
                r["lrs"][name] = float(lr) if ok else None
                r["curves"][name] = [clean_curve(c) for c in seed_curves] if ok else None
        return results


def tune_baseline(cfg: Any, item: str) -> dict:
    """One baseline item ``"STAGE/OPTIMIZER/TASK"``: that optax optimizer tuned exactly as the stage tunes a
    candidate (its grid, steps, seeds and keys; AdamW is the fitness reference, SGD is reported beside it)."""
    import tasks as task_registry
    from search.fitness import baseline_factories, tune_reference
    stage, opt, name = item.split("/", 2)
    spec = stage_specs(cfg)[stage]
    i = spec.tasks.index(name)
    return tune_reference(task_registry.get(name), baseline_factories()[opt], spec.lr_grid,
                          spec.steps[i], spec.eval_every[i], spec.seeds, spec.seed)


def run_job(cfg: Any, judges: dict, stage: str, payload: Sequence[str],
            centres: Optional[Sequence[dict]] = None, factory: Optional[Callable[[Any, str], Any]] = None
            ) -> list[dict]:
    """What a worker does with one job: tune baselines, or judge candidates with the stage's Judge (built
    once per stage by ``factory(cfg, stage)``, default :class:`Judge`; a variant adds fields to each result).
    Every result carries ``seconds``: its share of the job's wall time (the driver's per-stage cost)."""
    t0 = time.perf_counter()
    if stage == "baseline":
        results = [tune_baseline(cfg, item) for item in payload]
    else:
        judge = judges.get(stage)
        if judge is None:
            judge = judges[stage] = (factory or Judge)(cfg, stage)
        results = judge(payload, centres or None)
    share = (time.perf_counter() - t0) / max(len(results), 1)
    for r in results:
        r["seconds"] = share
    return results


# --- baselines -------------------------------------------------------------------------------------
BASELINES_FILE = "baselines.json"


def baseline_signature(cfg: Any) -> dict:
    """What the tuned baselines depend on (stages' tasks, steps, seeds, grids): a cache matches only this."""
    specs = stage_specs(cfg)
    if not cfg.funnel.enabled:
        del specs["funnel"]
    # "tuning"/"scoring" name the procedure: records made before speedup scoring lack the curves.
    return {"stages": {k: {"tasks": list(v.tasks), "steps": list(v.steps), "eval_every": list(v.eval_every),
                           "seeds": v.seeds, "seed": v.seed, "grid": list(v.lr_grid)}
                       for k, v in specs.items()},
            "tuning": "same-as-candidates", "scoring": "speedup"}


def compute_baselines(cfg: Any, pool: Any, run_dir: str, next_id: Callable[[], int],
                      log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """``{stage: {optimizer: {task: tune_baseline record}}}``: AdamW and SGD tuned per task and stage as
    pool jobs, or read from ``run_dir/baselines.json`` when its signature matches. Every stage's AdamW is
    tuned on the full ``tasks.lr_grid`` (also the hurdle's: its candidates' grids are centred on their
    parents' rates, so they differ per candidate; the divisor is the same for all)."""
    path = os.path.join(run_dir, BASELINES_FILE)
    sig = baseline_signature(cfg)
    if os.path.exists(path):
        with open(path) as fh:
            cached = json.load(fh)
        if cached.get("signature") == sig:
            return cached["baselines"]
    # Also shared between runs beside this one, one file per stage (runs/.baselines/<hash>.json): a second
    # search with the same stage settings (another --init, or only a new hurdle) need not tune them again.
    shared_dir = os.path.join(os.path.dirname(os.path.abspath(run_dir)), ".baselines")
    shared, out = {}, {}
    for stage, stage_sig in sig["stages"].items():
        key = {"stage": stage_sig, "tuning": sig["tuning"], "scoring": sig["scoring"]}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        shared[stage] = (os.path.join(shared_dir, f"{digest}.json"), key)
        if os.path.exists(shared[stage][0]):
            with open(shared[stage][0]) as fh:
                cached = json.load(fh)
            if cached.get("signature") == key:
                out[stage] = cached["baselines"]
    items = [f"{stage}/{opt}/{task}" for stage, spec in sig["stages"].items() if stage not in out
             for opt in baseline_factories() for task in spec["tasks"]]
    if items:
        _tune(cfg, pool, items, out, next_id, path, log, progress)
        for stage in {item.split("/", 1)[0] for item in items}:
            atomic_write_json(shared[stage][0], {"signature": shared[stage][1], "baselines": out[stage]})
    atomic_write_json(path, {"signature": sig, "baselines": out})
    return out


def _tune(cfg: Any, pool: Any, items: list[str], out: dict, next_id: Callable[[], int], path: str,
          log: Callable[[str], None], progress: bool) -> None:
    """Tune the baseline ``items`` ("STAGE/OPTIMIZER/TASK") as pool jobs into ``out``, under a progress bar."""
    from metaopt.progress import Ticker, progress_bar
    from search.distributed import Job

    log(f"search: tuning {len(items)} baselines (AdamW, SGD per task and stage) on "
        f"{len(cfg.tasks.lr_grid)} rates, as candidates; cached in {path}")
    t = time.monotonic()
    queue = list(items)
    remaining = len(items)
    # One bar item per baseline; each is a whole tuning on a worker, so the ticker keeps the clock moving.
    bar = progress_bar(len(items), "baselines", unit="tuning", enabled=progress,
                       postfix=f"tuning {min(len(items), pool.capacity())} at a time")
    try:
        with Ticker(bar):
            while remaining:
                while queue and pool.capacity() > 0:
                    pool.submit(Job(next_id(), "baseline", [queue.pop(0)]))
                for job, results in pool.wait():
                    stage, opt, task = job.texts[0].split("/", 2)
                    res = results[0]
                    if "loss" not in res:
                        raise RuntimeError(f"baseline {job.texts[0]} failed: {res['error']}")
                    out.setdefault(stage, {}).setdefault(opt, {})[task] = res
                    remaining -= 1
                    bar.set_postfix_str(f"{job.texts[0]}: lr {res['lr']:.3g}, loss {res['loss']:.4g}",
                                        refresh=False)
                    bar.update(1)
    finally:
        bar.close()
    log(f"search: baselines done in {time.monotonic() - t:.0f} s")
