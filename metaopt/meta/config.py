"""The meta-training configuration schema (``configs/meta/*.yaml``, read by metaopt.config)."""
from __future__ import annotations

import bisect
import dataclasses
from typing import Any, Literal, Optional

import tasks as task_registry
from metaopt.config import FieldError, at_least, check_kwargs, check_name
from metaopt.learned import ARCHITECTURES


@dataclasses.dataclass
class LOptConfig:
    """Which learned-optimizer architecture to meta-train (see metaopt.learned.ARCHITECTURES); ``kwargs``
    are that architecture's constructor arguments, checked against its signature."""
    architecture: str = "mlp"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("architecture", self.architecture, ARCHITECTURES, "learned-optimizer architecture")
        check_kwargs("kwargs", self.kwargs, ARCHITECTURES[self.architecture], f"architecture {self.architecture}")


@dataclasses.dataclass
class EstimatorConfig:
    """A gradient estimator and its truncation schedule.

    Each particle trains an inner problem in truncations of ``unroll_length`` steps; after
    ``reset_every`` truncations the inner problem is re-initialized (so an inner run lasts
    ``unroll_length * reset_every`` steps). ``stagger`` spreads particles' reset times so a batch
    sees all phases of training (Vicol et al. 2021).
    """
    kind: Literal["pes", "es", "tbptt"] = "pes"
    num_particles: int = 8          # antithetic pairs (pes/es) or independent inner runs (tbptt)
    sigma: float = 0.01             # ES/PES perturbation scale
    unroll_length: int = 20
    reset_every: int = 10
    meta_loss: Literal["train", "valid"] = "train"
    log_loss: bool = True           # meta-loss = mean log loss (scale-free across tasks)
    stagger: bool = True
    # "task": an inner run lasts its task's own horizon (Task.steps, which the train families draw),
    # i.e. ceil(steps / unroll_length) truncations, instead of reset_every
    horizon: Literal["fixed", "task"] = "fixed"
    # "init": each task's losses are divided by its loss at initialization (metaopt.meta.unroll.init_loss),
    # so with log_loss false a task whose losses are 1000x larger does not dominate the meta-gradient
    normalize: Literal["none", "init"] = "none"

    def __post_init__(self) -> None:
        at_least("num_particles", self.num_particles, 1)
        at_least("unroll_length", self.unroll_length, 1)
        at_least("reset_every", self.reset_every, 1)
        if not self.sigma > 0:
            raise FieldError("sigma", f"must be > 0, got {self.sigma!r}")


@dataclasses.dataclass
class CurriculumConfig:
    """A truncation-length curriculum: from meta-step ``at_steps[i]`` on, the estimator unrolls
    ``unroll_lengths[i]`` inner steps per truncation (and, if given, resets after ``reset_every[i]``
    truncations). Short truncations early give many cheap, low-variance meta-steps while the rule is
    far from good; long ones later reduce the short-horizon bias (Wu et al. 2018; Metz et al. 2019;
    Vicol et al. 2021). The stage is a function of the meta-step, so a resumed run is in the stage
    an uninterrupted one would be."""
    at_steps: list[int] = dataclasses.field(default_factory=lambda: [0])
    unroll_lengths: list[int] = dataclasses.field(default_factory=lambda: [20])
    reset_every: Optional[list[int]] = None

    def __post_init__(self) -> None:
        if not self.at_steps or self.at_steps[0] != 0:
            raise FieldError("at_steps", f"must start at 0 (the first stage), got {self.at_steps!r}")
        for i in range(1, len(self.at_steps)):
            if not self.at_steps[i] > self.at_steps[i - 1]:
                raise FieldError(("at_steps", i), f"must increase, got {self.at_steps!r}")
        for name in ("unroll_lengths", "reset_every"):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) != len(self.at_steps):
                raise FieldError(name, f"needs one value per stage ({len(self.at_steps)} at_steps), got {values!r}")
            for i, v in enumerate(values):
                at_least((name, i), v, 1)

    def stage(self, step: int) -> int:
        """The index of the stage meta-step ``step`` (0-based) is in."""
        return bisect.bisect_right(self.at_steps, step) - 1

    def estimator(self, base: EstimatorConfig, step: int) -> EstimatorConfig:
        """``base`` with the unroll length (and reset interval) of ``step``'s stage."""
        i = self.stage(step)
        changes = {"unroll_length": self.unroll_lengths[i]}
        if self.reset_every is not None:
            changes["reset_every"] = self.reset_every[i]
        return dataclasses.replace(base, **changes)


@dataclasses.dataclass
class ValidationConfig:
    """Checkpoint selection on the ``validation`` suite (metaopt.meta.validation): every ``every``
    meta-steps, θ trains each of ``tasks`` (validation-suite tasks only; never ``heldout``) with
    ``seeds`` seeds at each lr multiplier of ``lr_multipliers``, and is scored against AdamW tuned on
    ``reference_lrs`` with the same seeds (metaopt.scoring: clipped speedup, geometric mean over the
    tasks); the best θ so far is kept in ``RUN_DIR/best``. ``steps`` (optional) shortens every task's
    horizon to keep the check cheap; it must be a multiple of each task's eval interval."""
    every: int = 0                  # 0 = off
    tasks: list[str] = dataclasses.field(default_factory=lambda: ["wine_mlp_w16_d1_tanh", "iris_mlp_w16_d2_gelu"])
    seeds: int = 2
    lr_multipliers: list[float] = dataclasses.field(default_factory=lambda: [0.3, 1.0, 3.0])
    reference_lrs: list[float] = dataclasses.field(default_factory=lambda: [1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    steps: Optional[int] = None
    seed: int = 0

    def __post_init__(self) -> None:
        at_least("every", self.every, 0)
        at_least("seeds", self.seeds, 1)
        at_least("steps", self.steps, 1)
        allowed = task_registry.SUITES["validation"]
        if not self.tasks:
            raise FieldError("tasks", "needs at least one validation task")
        for i, name in enumerate(self.tasks):
            if name not in allowed:
                why = " (a held-out task: model selection never reads those)" if name in _heldout() else ""
                raise FieldError(("tasks", i), f"{name!r} is not in the validation suite{why}; expected one of: "
                                               f"{', '.join(allowed)}")
        for name in ("lr_multipliers", "reference_lrs"):
            values = getattr(self, name)
            if not values or not all(v > 0 for v in values):
                raise FieldError(name, f"needs positive values, got {values!r}")


def _heldout() -> set[str]:
    return set(task_registry.SUITES["heldout"]) | set(task_registry.SUITES["heldout-quick"])


@dataclasses.dataclass
class MetaConfig:
    name: str = "meta"
    seed: int = 0
    steps: int = 100                          # outer (meta) steps
    families: Optional[list[str]] = None      # task families; None = tasks.TRAIN_FAMILIES
    task_pool: int = 8                        # tasks sampled once, reused (bounds jit compiles)
    slots_per_worker: int = 1                 # task samples each worker estimates per meta-step
    task_resample_every: int = 50             # meta-steps a slot keeps its task
    workers: int = 1                          # >1 (or --address) runs workers as Ray actors
    meta_lr: float = 1e-3
    clip_norm: float = 1.0                    # global-norm clipping of the meta-gradient
    checkpoint_every: int = 25
    log_every: int = 5
    lopt: LOptConfig = dataclasses.field(default_factory=LOptConfig)
    estimator: EstimatorConfig = dataclasses.field(default_factory=EstimatorConfig)
    curriculum: Optional[CurriculumConfig] = None     # None: estimator.unroll_length throughout
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)

    def estimator_at(self, step: int) -> EstimatorConfig:
        """The estimator config of meta-step ``step`` (the curriculum's stage, else ``estimator``)."""
        return self.estimator if self.curriculum is None else self.curriculum.estimator(self.estimator, step)

    def __post_init__(self) -> None:
        at_least("steps", self.steps, 0)
        for name in ("task_pool", "slots_per_worker", "task_resample_every", "workers", "checkpoint_every",
                     "log_every"):
            at_least(name, getattr(self, name), 1)
        if not self.meta_lr > 0:
            raise FieldError("meta_lr", f"must be > 0, got {self.meta_lr!r}")
        if not self.clip_norm > 0:
            raise FieldError("clip_norm", f"must be > 0, got {self.clip_norm!r}")
        known = task_registry.family_names()
        for i, family in enumerate(self.families or ()):
            check_name(("families", i), family, known, "task family", "see `metaopt tasks`")
