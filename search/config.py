"""The search configuration schema (``configs/search/*.yaml``), loaded with :func:`metaopt.config.load_config`.

Every knob of the evolutionary search lives here so a run is fully described by its YAML file plus
the command-line overrides (``--init``, ``--address``), which are written back into the run directory.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Literal, Optional

from metaopt import library
from metaopt.config import FieldError, at_least, check_name, load_config
from metaopt.dsl import DSLError, Program, parse
from metaopt.interpret.encoding import N_INPUTS
from metaopt.evaluate.config import check_specs, check_tasks


# Suites only final reports may read (never search fitness, the funnel or checkpoint selection).
FINAL_SUITES = ("heldout", "heldout-quick")


def check_role(suite_field: str, suite: str, names_field: str, names: list[str], refused: tuple[str, ...],
               why: str) -> None:
    """Refuse a suite (or task names) that belongs to a suite this stage must not read."""
    import tasks as task_registry
    if suite in refused:
        raise FieldError(suite_field, f"suite {suite!r} is not allowed here: {why}")
    for i, name in enumerate(names):
        owners = [s for s in refused if name in task_registry.SUITES.get(s, ())]
        if owners:
            raise FieldError((names_field, i), f"task {name!r} belongs to the {owners[0]!r} suite: {why}")


@dataclasses.dataclass
class TasksConfig:
    """Which tasks judge a candidate and how long each inner training runs."""

    suite: str = "train"                    # used when ``names`` is empty
    names: list[str] = dataclasses.field(default_factory=list)
    steps: Optional[int] = None             # None: each task's own default horizon
    eval_every: Optional[int] = None        # None: ~10 evaluations (judge.default_eval_every; fitness reads steps to target)
    seeds: int = 1
    # The candidate's own learning rate is picked from this small grid, evaluated in the same batch:
    # programs return a direction of arbitrary scale, so a fixed rate would judge scale, not the rule.
    lr_grid: list[float] = dataclasses.field(default_factory=lambda: [1e-3, 1e-2, 1e-1, 1.0])
    def __post_init__(self) -> None:
        check_tasks("suite", self.suite, "names", self.names)
        check_role("suite", self.suite, "names", self.names, refused=("validation", *FINAL_SUITES),
                   why="search fitness must never read the model-selection or held-out tasks")
        at_least("seeds", self.seeds, 1)
        at_least("steps", self.steps, 1)
        at_least("eval_every", self.eval_every, 1)
        if self.steps is not None and self.eval_every is not None and self.steps % self.eval_every:
            raise FieldError("eval_every", f"must divide steps ({self.steps}), got {self.eval_every}")
        for name in ("lr_grid",):
            grid = getattr(self, name)
            if not grid:
                raise FieldError(name, "must be a non-empty list of positive rates")
            for i, lr in enumerate(grid):
                if lr <= 0:
                    raise FieldError((name, i), f"a learning rate must be > 0, got {lr!r}")


@dataclasses.dataclass
class FunnelConfig:
    """Lion's guard against meta-overfitting (Chen et al. 2023, sec. 2.3): the best candidates of the
    cheap proxy are re-judged on other, larger tasks with other seeds, and only re-judged programs may
    become the reported best. The funnel judges on the ``validation`` suite (model selection), which
    search fitness never reads, so a rule that games the search tasks cannot pass it; ``heldout`` is for
    final reports only and is refused here."""

    enabled: bool = True
    fraction: float = 0.1        # a candidate in the top `fraction` of everything judged so far qualifies
    min_judged: int = 10         # ... once at least this many candidates have been judged
    suite: str = "validation"
    tasks: list[str] = dataclasses.field(default_factory=list)   # a subset of the suite (empty: all of it)
    steps: Optional[int] = None  # None: each task's own horizon
    seeds: int = 2
    seed_offset: int = 1000      # funnel seeds differ from the search seeds
    max_share: float = 1.0       # the funnel's most share of the worker-seconds judged so far (queued ones wait)

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise FieldError("fraction", f"must be in (0, 1], got {self.fraction!r}")
        at_least("min_judged", self.min_judged, 1)
        check_tasks("suite", self.suite, "tasks", self.tasks)
        check_role("suite", self.suite, "tasks", self.tasks, refused=("train", *FINAL_SUITES),
                   why="the funnel selects models on tasks search fitness never reads, and held-out suites are "
                       "for final reports only")
        at_least("steps", self.steps, 1)
        at_least("seeds", self.seeds, 1)
        if not 0.0 < self.max_share <= 1.0:
            raise FieldError("max_share", f"must be in (0, 1], got {self.max_share!r}")


@dataclasses.dataclass
class HurdleConfig:
    """AutoML-Zero's hurdles (Real, Liang, So & Le, "AutoML-Zero", ICML 2020, sec. 4.2): a cheap first
    stage of judging. A child is trained on ``tasks`` (default: the first ``count`` search tasks) for
    ``steps`` steps at ``grid_factors`` x its parent's best rate on each task (so every individual carries
    its rate, refined from generation to generation); it goes on to the full search stage only if its
    hurdle fitness is better than ``percentile``% of the last ``window`` hurdle results (75: AutoML-Zero's
    choice). Until ``min_window`` results exist every child passes. The hurdle reads search tasks only."""

    enabled: bool = False
    tasks: list[str] = dataclasses.field(default_factory=list)
    count: int = 1
    steps: int = 50
    percentile: float = 75.0
    window: int = 100
    min_window: int = 10
    grid_factors: list[float] = dataclasses.field(default_factory=lambda: [1 / 3, 1.0, 3.0])

    def __post_init__(self) -> None:
        check_tasks("suite", "train", "tasks", self.tasks)
        check_role("suite", "train", "tasks", self.tasks, refused=("validation", *FINAL_SUITES),
                   why="the hurdle is part of search fitness, which never reads model-selection or held-out tasks")
        at_least("count", self.count, 1)
        at_least("steps", self.steps, 1)
        if not 0.0 < self.percentile < 100.0:
            raise FieldError("percentile", f"must be in (0, 100), got {self.percentile!r}")
        at_least("min_window", self.min_window, 1)
        at_least("window", self.window, self.min_window)
        if not self.grid_factors:
            raise FieldError("grid_factors", "must be a non-empty list of positive factors")
        for i, f in enumerate(self.grid_factors):
            if not f > 0:
                raise FieldError(("grid_factors", i), f"a rate factor must be > 0, got {f!r}")


@dataclasses.dataclass
class RestartConfig:
    """Chen et al. 2023 (Lion), sec. 2.2: when an island's best fitness has not improved for ``plateau``
    evaluations, its population is re-seeded from the best program it has found (every member a copy of it)."""

    enabled: bool = False
    plateau: int = 500

    def __post_init__(self) -> None:
        at_least("plateau", self.plateau, 1)


@dataclasses.dataclass
class BudgetConfig:
    """The search stops at whichever limit it reaches first (at least one must be set)."""

    evaluations: Optional[int] = None   # real (non-cached) candidate evaluations
    seconds: Optional[float] = None

    def __post_init__(self) -> None:
        if self.evaluations is None and self.seconds is None:
            raise ValueError("budget needs evaluations or seconds (or both)")
        at_least("evaluations", self.evaluations, 1)
        if self.seconds is not None and not self.seconds > 0:
            raise FieldError("seconds", f"must be > 0, got {self.seconds!r}")


@dataclasses.dataclass
class HeldoutConfig:
    """After the search, the top programs are judged on never-seen tasks with the evaluation protocol."""

    suite: str = "heldout"
    tasks: list[str] = dataclasses.field(default_factory=list)   # a subset of the suite (empty: all)
    steps: Optional[int] = None                                  # None: each task's own horizon
    top_k: int = 3
    baselines: list[str] = dataclasses.field(default_factory=lambda: ["sgd"])  # besides AdamW (the reference)
    enabled: bool = True

    def __post_init__(self) -> None:
        check_tasks("suite", self.suite, "tasks", self.tasks)
        check_role("suite", self.suite, "tasks", self.tasks, refused=("train", "validation"),
                   why="the final report judges on tasks neither fitness nor model selection read")
        at_least("steps", self.steps, 1)
        at_least("top_k", self.top_k, 1)
        check_specs("baselines", self.baselines)


@dataclasses.dataclass
class SearchConfig:
    population: int
    tournament: int
    budget: BudgetConfig
    max_len: int = 12                 # statements (body + return) a program may have
    n_registers: int = 8              # interpreter registers (inputs + states + locals)
    batch_size: int = 16              # candidates per worker call (the interpreter's vmapped P axis)
    workers: int = 1                  # Ray worker actors; 0 judges in the driver process (no Ray)
    inflight_per_worker: int = 2      # batches queued per worker so none idles between results
    checkpoint_every: int = 50        # evaluations between atomic checkpoints
    seed: int = 0
    init: str = "minimal"             # "minimal" (`return g`), a library program name, or a .opt file path
    backend: Literal["auto", "interpreter", "compile"] = "auto"   # auto: the interpreter
    max_batch_retries: int = 2        # a batch whose worker died this often is judged worst
    max_state_vars: int = 3
    top_programs: int = 5             # how many best programs are exported to runs/NAME/best/
    islands: int = 1                  # independent populations (each of `population`) in one driver
    migrate_every: int = 500          # evaluations between migrations (the best of island i replaces a
                                      # random member of island i+1)
    tasks: TasksConfig = dataclasses.field(default_factory=TasksConfig)
    funnel: FunnelConfig = dataclasses.field(default_factory=FunnelConfig)
    heldout: HeldoutConfig = dataclasses.field(default_factory=HeldoutConfig)
    hurdle: HurdleConfig = dataclasses.field(default_factory=HurdleConfig)
    restart: RestartConfig = dataclasses.field(default_factory=RestartConfig)

    def __post_init__(self) -> None:
        at_least("population", self.population, 2)
        if not 1 <= self.tournament <= self.population:
            raise FieldError("tournament", f"must be in [1, population={self.population}], got {self.tournament!r}")
        at_least("max_len", self.max_len, 1)
        # The interpreter's registers hold the inputs (g w t loss lr) and at least one value more.
        at_least("n_registers", self.n_registers, N_INPUTS + 1)
        at_least("batch_size", self.batch_size, 1)
        at_least("workers", self.workers, 0)          # 0: judge in the driver process
        at_least("inflight_per_worker", self.inflight_per_worker, 1)
        at_least("checkpoint_every", self.checkpoint_every, 1)
        at_least("max_batch_retries", self.max_batch_retries, 0)
        at_least("max_state_vars", self.max_state_vars, 0)
        at_least("top_programs", self.top_programs, 1)
        at_least("islands", self.islands, 1)
        at_least("migrate_every", self.migrate_every, 1)
        if is_init_file(self.init):
            read_init_file(self.init)      # a missing or malformed file fails here, not in the driver
        elif self.init != "minimal":
            check_name("init", self.init, ["minimal"] + library.names(), "initial program",
                       "`minimal`, a library optimizer (see `metaopt list`) or a path to a .opt file")


def is_init_file(init: str) -> bool:
    """Whether ``init`` names a program file (``*.opt`` or a path) rather than ``minimal``/a library name."""
    return init.endswith(".opt") or os.sep in init or (os.altsep is not None and os.altsep in init)


def read_init_file(path: str) -> Program:
    """The program in the ``.opt`` file ``path`` (``--init path/to/rule.opt``); a missing file or a DSL
    error is a :class:`FieldError` on ``init`` naming the file (and, for DSL errors, its line)."""
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError as e:
        raise FieldError("init", f"cannot read the initial program file {path!r}: {e.strerror or e}") from None
    try:
        return parse(text, path)
    except DSLError as e:
        raise FieldError("init", f"the initial program file does not parse: {e}") from None


def load_search_config(path: str, overrides: dict | None = None) -> SearchConfig:
    """Read ``path`` into a :class:`SearchConfig` (errors name file, line and key)."""
    return load_config(path, SearchConfig, overrides)
