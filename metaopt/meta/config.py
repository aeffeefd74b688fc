"""The meta-training configuration schema (``configs/meta/*.yaml``, read by metaopt.config)."""
from __future__ import annotations

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

    def __post_init__(self) -> None:
        at_least("num_particles", self.num_particles, 1)
        at_least("unroll_length", self.unroll_length, 1)
        at_least("reset_every", self.reset_every, 1)
        if not self.sigma > 0:
            raise FieldError("sigma", f"must be > 0, got {self.sigma!r}")


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
