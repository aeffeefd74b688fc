"""Judging batches of candidate programs on the search tasks — the swappable evaluator.

A :class:`Judge` lives in a worker (or the driver, for ``workers: 0``) and is built once per *stage*
(``"search"``: the cheap proxy; ``"funnel"``: longer trainings with other seeds). Given program texts it
returns, per program and task, the tuning loss at the best rate of the stage's learning-rate grid, that
rate and the seed curves there (``search.fitness.best_over_grid``). Fitness (the speedup over tuned AdamW,
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
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.evaluate.metrics import clean_curve
from search.fitness import best_over_grid

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
    lr_grid: tuple[float, ...]


def stage_specs(cfg: Any) -> dict[str, StageSpec]:
    """The ``search`` and ``funnel`` stages of a :class:`~search.config.SearchConfig`."""
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
    return {
        "search": StageSpec("search", names, steps, every, cfg.tasks.seeds, cfg.seed, grid),
        # The funnel judges on other tasks (the validation suite) than fitness does: see FunnelConfig.
        "funnel": StageSpec("funnel", f_names, f_steps, tuple(default_eval_every(s) for s in f_steps),
                            f.seeds, cfg.seed + f.seed_offset, grid),
    }


def default_eval_every(steps: int, evaluations: int = 10) -> int:
    """The largest interval <= ``steps / evaluations`` that divides ``steps``: the speedup reads steps to
    target off the validation curve, so it needs points along it, not only the final one."""
    every = max(1, steps // evaluations)
    while steps % every:
        every -= 1
    return every


def _interpreter_trainer(task, steps: int, eval_every: int, cfg: Any) -> Trainer:
    from metaopt.interpret import EncodingError, PopulationTrainer, encode, stack
    trainer = PopulationTrainer(task, cfg.max_len, cfg.n_registers, steps, eval_every)
    filler = encode(_minimal(), cfg.max_len, cfg.n_registers)

    def run(programs, lrs, key, n_seeds):
        encs, ok = [], []
        for p in programs:
            try:
                encs.append(encode(p, cfg.max_len, cfg.n_registers) if p is not None else filler)
                ok.append(p is not None)
            except (EncodingError, ValueError, NotImplementedError):
                encs.append(filler)   # keeps the batch shape fixed: one compile per task
                ok.append(False)
        # Pad to the configured batch size so every call has the same shape (no recompiles).
        n = len(encs)
        encs += [filler] * max(0, cfg.batch_size - n)
        curves = np.array(trainer(stack(encs), jnp.asarray(lrs, jnp.float32), key, n_seeds))[:n]
        curves[~np.asarray(ok, bool)] = np.nan
        return curves

    return run


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
            make = _interpreter_trainer if self.backend == "interpreter" else _compile_trainer
            self._trainers[name] = make(task_registry.get(name), self.spec.steps[i], self.spec.eval_every[i],
                                        self.cfg)
        return self._trainers[name]

    def __call__(self, texts: Sequence[str]) -> list[dict]:
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
        key = jax.random.PRNGKey(self.spec.seed)
        lrs = np.asarray(self.spec.lr_grid, np.float32)
        for i, name in enumerate(self.spec.tasks):
            curves = self._trainer(i)(progs, lrs, key, self.spec.seeds)
            best, best_lr, at = best_over_grid(curves, self.spec.lr_grid)
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


def run_job(cfg: Any, judges: dict, stage: str, payload: Sequence[str]) -> list[dict]:
    """What a worker does with one job: tune baselines, or judge candidates with the stage's Judge."""
    if stage == "baseline":
        return [tune_baseline(cfg, item) for item in payload]
    judge = judges.get(stage)
    if judge is None:
        judge = judges[stage] = Judge(cfg, stage)
    return judge(payload)
