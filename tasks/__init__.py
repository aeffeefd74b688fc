"""Tasks, task families and suites. ``tasks.get(name)``, ``tasks.names()``, ``tasks.suite(name)``."""
from __future__ import annotations

from metaopt import xla_env  # noqa: F401  (XLA flags must precede the backend; see that module)

from tasks.base import Task, TaskFamily, SPLITS
from tasks.registry import get, names, get_family, family_names, register, register_family
from tasks.suites import SUITES, TRAIN_FAMILIES

# Importing the modules registers their tasks.
from tasks import quadratic, regression, rosenbrock, digits, tabular, lm  # noqa: F401,E402
from tasks import transformer, vision, recurrent, synthetic, tables  # noqa: F401,E402


def suite(name: str) -> list[Task]:
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    return [get(n) for n in SUITES[name]]


def suite_names() -> list[str]:
    return sorted(SUITES)


__all__ = ["Task", "TaskFamily", "SPLITS", "get", "names", "get_family", "family_names", "suite",
           "suite_names", "register", "register_family", "SUITES", "TRAIN_FAMILIES"]
