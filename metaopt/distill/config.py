"""The distillation configuration schema (``configs/distill/*.yaml``), loaded with :func:`metaopt.config.load_config`.

A run is the YAML file plus the teacher named on the command line (``metaopt distill lopt:PATH``); both are
written back into the run directory, which ``--resume`` reads. ``search`` is a whole
:class:`search.config.SearchConfig`: its ``tasks`` are the train tasks the teacher is recorded on and
candidates are trained on, its ``funnel`` is the validation stage (suite ``validation``) the final program is
selected on, and evolution reads its population, budget and sizes. Its ``hurdle`` must stay off and its
``heldout`` is not read (the held-out rows come from this schema's ``heldout``, with ``--heldout``).
"""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional

from metaopt import library
from metaopt.config import FieldError, at_least, check_name, load_config
from metaopt.evaluate.config import check_specs, check_tasks
from search.config import SearchConfig, check_role


@dataclasses.dataclass
class RecordConfig:
    """How the teacher is recorded (``metaopt.distill.record``) on the train and validation tasks."""

    seeds: int = 1                          # teacher trajectories per task
    per_tensor: int = 64                    # sampled elements per tensor
    every: int = 10                         # updates and features kept every `every`-th step
    learning_rate: Optional[float] = None   # the teacher's rate (a learned optimizer's multiplier; None: 1)

    def __post_init__(self) -> None:
        at_least("seeds", self.seeds, 1)
        at_least("per_tensor", self.per_tensor, 1)
        at_least("every", self.every, 1)
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise FieldError("learning_rate", f"must be > 0, got {self.learning_rate!r}")


@dataclasses.dataclass
class FitnessConfig:
    """``metaopt.scoring.distill_fitness``: relative weights of imitation and of training on the tasks."""

    imitation: float = 1.0                  # weight of the imitation error
    task: float = 0.5                       # weight of the search fitness (1 / geomean speedup over AdamW)
    objective: Literal["cos", "nmse"] = "cos"   # the imitation error: 1 - cos (scale-free) or the scaled NMSE

    def __post_init__(self) -> None:
        for name in ("imitation", "task"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"a weight must be >= 0, got {getattr(self, name)!r}")
        if self.imitation + self.task <= 0:
            raise FieldError("imitation", "the imitation and task weights cannot both be 0")


@dataclasses.dataclass
class SeedsConfig:
    """The initial population: the library rules whose updates are closest to the teacher's (``fit.imitation``)."""

    count: int = 4
    candidates: list[str] = dataclasses.field(default_factory=list)   # empty: every library rule

    def __post_init__(self) -> None:
        at_least("count", self.count, 1)
        known = library.names()
        for i, name in enumerate(self.candidates):
            check_name(("candidates", i), name, known, "library rule", "see `metaopt list`")


@dataclasses.dataclass
class RefitConfig:
    """Constant refit (``metaopt.distill.refit``) of the top programs of the search."""

    top_k: int = 3                          # how many of the best (validation-judged) programs are refitted
    iters: int = 100                        # Adam steps on the imitation error
    learning_rate: float = 0.05

    def __post_init__(self) -> None:
        at_least("top_k", self.top_k, 0)
        at_least("iters", self.iters, 1)
        if not self.learning_rate > 0:
            raise FieldError("learning_rate", f"must be > 0, got {self.learning_rate!r}")


@dataclasses.dataclass
class HeldoutConfig:
    """``--heldout``: ``metaopt.evaluate`` of the teacher, the distilled program and ``baselines`` (tuned
    AdamW, the reference, is always included) on tasks neither fitness nor selection read."""

    suite: str = "heldout"
    tasks: list[str] = dataclasses.field(default_factory=list)   # a subset of the suite (empty: all of it)
    steps: Optional[int] = None                                  # None: each task's own horizon
    seeds: int = 3
    baselines: list[str] = dataclasses.field(default_factory=lambda: ["adam"])

    def __post_init__(self) -> None:
        check_tasks("suite", self.suite, "tasks", self.tasks)
        check_role("suite", self.suite, "tasks", self.tasks, refused=("train", "validation"),
                   why="held-out rows judge on tasks neither the distillation fitness nor the selection read")
        at_least("steps", self.steps, 1)
        at_least("seeds", self.seeds, 3)
        check_specs("baselines", self.baselines)


@dataclasses.dataclass
class DistillConfig:
    search: SearchConfig
    record: RecordConfig = dataclasses.field(default_factory=RecordConfig)
    fitness: FitnessConfig = dataclasses.field(default_factory=FitnessConfig)
    seeds: SeedsConfig = dataclasses.field(default_factory=SeedsConfig)
    refit: RefitConfig = dataclasses.field(default_factory=RefitConfig)
    heldout: HeldoutConfig = dataclasses.field(default_factory=HeldoutConfig)

    def __post_init__(self) -> None:
        s = self.search
        if s.hurdle.enabled:
            raise FieldError(("search", "hurdle", "enabled"), "distill judges every candidate on one stage: the "
                             "hurdle must be off")
        if not s.funnel.enabled:
            raise FieldError(("search", "funnel", "enabled"), "the funnel is distill's validation stage (the final "
                             "program is selected there): it must be on")
        if self.refit.top_k > s.top_programs:
            raise FieldError(("refit", "top_k"), f"must be <= search.top_programs ({s.top_programs}): only those "
                             f"are judged on the validation stage by the search, got {self.refit.top_k}")


def load_distill_config(path: str, overrides: dict | None = None) -> DistillConfig:
    """Read ``path`` into a :class:`DistillConfig` (errors name file, line and key)."""
    return load_config(path, DistillConfig, overrides)
