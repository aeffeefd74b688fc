"""Regularized (aging) evolution: Real, Aggarwal, Huang & Le, "Regularized Evolution for Image
Classifier Architecture Search", AAAI 2019 (arXiv:1802.01548).

A population of ``P`` individuals is kept as a queue. To make a child, ``T`` individuals are drawn at
random, the fittest of them is the parent, and a mutation of it is the child. When the child has been
judged it joins the queue and the **oldest** individual leaves — not the worst. Ageing removes lucky
early individuals and keeps the search exploring; Chen et al. 2023 (Lion) use the same scheme for
optimizer programs.

This module is the algorithm only: no programs, workers or files. The driver (``search/driver.py``)
runs it asynchronously and steady-state: every judged child is inserted as soon as its batch comes
back, and a new batch is bred from whatever the population is at that moment (Real et al. run it
that way on many workers too).

Fitness is **lower is better** throughout search/ (``metaopt.scoring.search_fitness``: 1 / the geometric
mean of the clipped speedups over tuned AdamW).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Iterator

import numpy as np


@dataclasses.dataclass
class Individual:
    """One member of the population: a program (canonical text), its fingerprint and fitness."""

    text: str
    fingerprint: str
    fitness: float
    born: int          # the child counter when it joined (its age in the queue)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Individual":
        return cls(d["text"], d["fingerprint"], float(d["fitness"]), int(d["born"]))


class RegularizedEvolution:
    """The population queue with tournament selection and removal of the oldest."""

    def __init__(self, population_size: int, tournament_size: int,
                 members: Iterable[Individual] = ()):
        if not 1 <= tournament_size <= population_size:
            raise ValueError("tournament size must be in [1, population size]")
        self.population_size = population_size
        self.tournament_size = tournament_size
        self.members: collections.deque[Individual] = collections.deque(members)
        while len(self.members) > population_size:
            self.members.popleft()

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Individual]:
        return iter(self.members)

    @property
    def full(self) -> bool:
        return len(self.members) >= self.population_size

    def add(self, individual: Individual) -> Individual | None:
        """Append ``individual``; return the oldest member it pushed out (None while filling up)."""
        self.members.append(individual)
        if len(self.members) > self.population_size:
            return self.members.popleft()
        return None

    def select_parent(self, rng: np.random.Generator) -> Individual:
        """Tournament selection: the fittest (lowest) of ``T`` members drawn without replacement.

        Ties go to the younger member, so that a stream of equally good mutants keeps moving
        rather than the same old parent being picked forever.
        """
        if not self.members:
            raise ValueError("cannot select from an empty population")
        k = min(self.tournament_size, len(self.members))
        idx = rng.choice(len(self.members), size=k, replace=False)
        return min((self.members[i] for i in idx), key=lambda m: (m.fitness, -m.born))

    def best(self) -> Individual:
        return min(self.members, key=lambda m: (m.fitness, -m.born))

    def fitness_stats(self) -> dict[str, float | None]:
        """Best and median fitness and diversity (distinct fingerprints / size) of the current queue."""
        if not self.members:
            return {"best": None, "median": None, "diversity": 0.0, "distinct": 0.0}
        f = np.array([m.fitness for m in self.members])
        distinct = len({m.fingerprint for m in self.members})
        return {"best": float(f.min()), "median": float(np.median(f)),
                "diversity": distinct / len(self.members), "distinct": float(distinct)}
