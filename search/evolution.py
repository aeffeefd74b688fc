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

**Islands** (:class:`Island`, :func:`migrate`): several such populations evolve side by side in one driver
(sharing its workers and fingerprint cache); now and then each island's best replaces a random member of
the next island (a ring), so good building blocks spread without one lineage taking over everywhere.

Fitness is **lower is better** throughout search/ (``metaopt.scoring.search_fitness``: 1 / the geometric
mean of the clipped speedups over tuned AdamW).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, Iterator, Optional, Sequence

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


@dataclasses.dataclass
class Island:
    """One independent population of an island model, with what plateau restarts need: the best
    individual it has ever held (``best``) and how many evaluations it has made since that improved
    (``stale``)."""

    evolution: RegularizedEvolution
    best: Optional[Individual] = None
    stale: int = 0
    restarts: int = 0

    def observe(self, individual: Individual, evaluated: bool = True) -> None:
        """Note a newcomer (``evaluated``: judged now, not a cache hit, so it counts towards a plateau)."""
        if self.best is None or individual.fitness < self.best.fitness:
            self.best = dataclasses.replace(individual)
            self.stale = 0
        elif evaluated:
            self.stale += 1

    def plateaued(self, patience: int) -> bool:
        return self.best is not None and self.stale >= patience

    def reseed(self, born: int) -> None:
        """Chen et al. 2023 (Lion), sec. 2.2: restart from the best program so far. Every member becomes
        a copy of it, so the next children are all its mutants; the copies age out as they join."""
        if self.best is None:
            raise ValueError("cannot re-seed an island that has no best individual yet")
        seed = dataclasses.replace(self.best, born=born)
        self.evolution.members = collections.deque([dataclasses.replace(seed)
                                                    for _ in range(self.evolution.population_size)])
        self.stale = 0
        self.restarts += 1

    def resized(self, population_size: int, tournament_size: int) -> "Island":
        """This island with other sizes (a resumed run takes them from its config; the oldest leave first)."""
        evo = RegularizedEvolution(population_size, tournament_size, self.evolution.members)
        return Island(evo, self.best or (evo.best() if len(evo) else None), self.stale, self.restarts)

    def to_json(self) -> dict:
        return {"members": [m.to_json() for m in self.evolution.members],
                "best": self.best.to_json() if self.best else None, "stale": self.stale, "restarts": self.restarts}

    @classmethod
    def from_json(cls, d: dict, population_size: int, tournament_size: int) -> "Island":
        members = [Individual.from_json(m) for m in d["members"]]
        return cls(RegularizedEvolution(population_size, tournament_size, members),
                   Individual.from_json(d["best"]) if d.get("best") else None, int(d.get("stale", 0)),
                   int(d.get("restarts", 0)))


def migrate(islands: Sequence[Island], rng: np.random.Generator) -> list[tuple[int, int]]:
    """Ring migration: the current best of island ``i`` replaces a random member of island ``i + 1``
    (taking that member's place in the age queue). All migrants are chosen before any moves, so none
    travels two hops in one round. Returns the ``(from, to)`` pairs that moved."""
    if len(islands) < 2:
        return []
    migrants = [isl.evolution.best() if len(isl.evolution) else None for isl in islands]
    moves = []
    for i, m in enumerate(migrants):
        if m is None:
            continue
        j = (i + 1) % len(islands)
        dst = islands[j].evolution
        if dst.full:
            dst.members[int(rng.integers(len(dst)))] = dataclasses.replace(m)
        else:
            dst.add(dataclasses.replace(m))
        islands[j].observe(m, evaluated=False)
        moves.append((i, j))
    return moves
