"""The evaluation settings, one typed dataclass shared by the CLI, YAML configs and Python callers."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Optional, Sequence

import tasks as task_registry
from metaopt.config import FieldError, at_least, check_name
from metaopt.dsl import DSLError
from metaopt.specs import SpecError, check as check_spec


def check_tasks(suite_field: str, suite: str, names_field: str, names: Optional[Sequence[str]]) -> None:
    """A suite and task names the task registry knows (``FieldError`` at the offending one)."""
    check_name(suite_field, suite, task_registry.SUITES, "suite")
    known = task_registry.names()
    for i, name in enumerate(names or ()):
        check_name((names_field, i), name, known, "task", "see `metaopt tasks`")


def check_specs(field: str, specs: Sequence[Any]) -> None:
    """Optimizer specs that resolve (``FieldError`` at the first one that does not)."""
    for i, spec in enumerate(specs):
        try:
            check_spec(spec)
        except (SpecError, DSLError) as e:
            raise FieldError((field, i), str(e)) from None


def check_reference(field: str, reference: str) -> None:
    """The reference is a spec, or an optax built-in named without its ``optax:`` prefix (as resolved by
    :func:`metaopt.evaluate.run.reference_spec`)."""
    try:
        check_spec(reference)
    except (SpecError, DSLError) as e:
        try:
            check_spec(f"optax:{reference}")
        except SpecError:
            raise FieldError(field, str(e)) from None


@dataclasses.dataclass
class EvalConfig:
    """Everything that decides what an evaluation computes (and so whether a saved cell can be reused).

    ``steps=None`` trains each task for its own default horizon (``Task.steps``). ``horizon`` stretches it
    for the fresh seeds (2.0: twice each task's horizon, the reference's too); ``tune_horizon`` is the
    tuning grid's multiplier, ``None`` = ``horizon`` (tuned where it is judged). ``tune_horizon=1.0`` with
    ``horizon=4.0`` asks "tuned on the usual horizon, does it hold up 4x longer?" at a third of the cost.
    """

    optimizers: list[str] = dataclasses.field(default_factory=list)
    suite: str = "heldout"
    tasks: Optional[list[str]] = None        # a subset of the suite's tasks (or any registered tasks)
    steps: Optional[int] = None
    horizon: float = 1.0                     # the fresh seeds' horizon, x steps (or x the task's own)
    tune_horizon: Optional[float] = None     # the tuning grid's, likewise; None = horizon
    eval_every: Optional[int] = None         # None: the task's own interval (adjusted to divide steps)
    seeds: int = 3                           # final runs at the tuned rate
    tune_seeds: int = 2                      # runs per grid point while tuning (>= 2; the median decides)
    grid_points: int = 9
    grid_factor: float = 3.0
    max_widen: int = 3                       # times the grid may grow by 2 points at an edge
    divergence_factor: float = 10.0          # a run diverged if its valid loss exceeds this x initial
    reference: str = "adamw"                 # the optimizer everything is normalised by; always included
    single_compile: bool = True              # pad every batch of runs to one shape: one jit per cell
    out: Optional[str] = None
    address: Optional[str] = None            # a Ray cluster; None = a local ray.init()
    use_ray: bool = True
    num_cpus: Optional[int] = None           # for the local Ray instance
    max_retries: int = 3                     # per cell, on worker crashes

    def __post_init__(self) -> None:
        if self.grid_points < 9:
            raise FieldError("grid_points", f"must be >= 9 (the fair-evaluation protocol), got {self.grid_points}")
        if self.grid_factor < 3.0:
            raise FieldError("grid_factor", f"must be >= 3 (points 3x apart), got {self.grid_factor}")
        if self.tune_seeds < 2:
            raise FieldError("tune_seeds", f"must be >= 2 (the median over tuning seeds decides), got {self.tune_seeds}")
        if self.seeds < 3:
            raise FieldError("seeds", f"must be >= 3, got {self.seeds}")
        at_least("steps", self.steps, 1)
        for key in ("horizon", "tune_horizon"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise FieldError(key, f"must be > 0 (a multiple of each task's horizon), got {value}")
        at_least("eval_every", self.eval_every, 1)
        at_least("max_widen", self.max_widen, 0)
        if not self.divergence_factor > 1.0:
            raise FieldError("divergence_factor", f"must be > 1 (x the initial loss), got {self.divergence_factor}")
        at_least("num_cpus", self.num_cpus, 1)
        at_least("max_retries", self.max_retries, 0)
        check_tasks("suite", self.suite, "tasks", self.tasks)
        check_specs("optimizers", self.optimizers)
        check_reference("reference", self.reference)

    def protocol(self) -> dict:
        """The settings a single cell's result depends on (the resume check compares these)."""
        keys = ("eval_every", "seeds", "tune_seeds", "grid_points", "grid_factor", "max_widen",
                "divergence_factor")
        out = {k: getattr(self, k) for k in keys}
        if self.tune_horizon not in (None, self.horizon):   # only when it departs: older cells keep their hash
            out["tune_horizon"] = self.tune_horizon
        return out

    def protocol_hash(self, steps: int, tune_steps: Optional[int] = None) -> str:
        """``steps``: the fresh seeds' horizon; ``tune_steps`` the grid's, when it differs."""
        extra = {"tune_steps": tune_steps} if tune_steps not in (None, steps) else {}
        blob = json.dumps({**self.protocol(), "steps": steps, **extra}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
