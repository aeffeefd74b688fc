"""Search state: everything needed to continue a run after the driver is killed.

``runs/NAME/state.json`` holds the islands (each a population as program text, fitness, fingerprint and
age, plus its best-ever member and plateau count), every program ever judged (text, fitness, per-task
losses and chosen rates, hurdle and funnel results), the hurdle's rolling window, the RNG state, the
counters (per stage: candidates, candidate-trainings, worker seconds) and the elapsed time. It is
written atomically (:func:`metaopt.io.atomic_write_text`) every ``checkpoint_every`` evaluations, so a
resumed run sees the last complete checkpoint — never half of one. Batches in flight when the driver
died are simply bred again: nothing judged before the last checkpoint is lost, and at most
``checkpoint_every`` (plus the in-flight batches) evaluations are redone.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from metaopt.io import atomic_write_text
from metaopt.scoring import WORST_FITNESS
from search.evolution import Individual, Island

STATE_FILE = "state.json"
FORMAT_VERSION = 2           # 2: islands, hurdle window, selection; version 1 (one population) still loads
STAGES = ("hurdle", "search", "funnel")
# "evaluations": candidates given a fitness (a hurdle failure or a full-stage judging): what the budget counts.
COUNTERS = ("children", "evaluations", "cache_hits", "failures", "funnel_evaluations", "batches",
            "worker_restarts", "hurdle_evaluations", "hurdle_passed", "search_evaluations", "restarts",
            "migrations") + tuple(f"{k}_{s}" for s in STAGES for k in ("trainings", "seconds"))


@dataclasses.dataclass
class SearchState:
    """Mutable search state; the driver owns one and checkpoints it."""

    seed: int
    islands: list[Island] = dataclasses.field(default_factory=list)
    # fingerprint -> {"text", "fitness", "scores", "losses", "lrs", "error", "order", "parent", "mutation",
    #                 "stage" (the stage its fitness comes from), "island", "hurdle" (its hurdle result)}
    judged: dict[str, dict] = dataclasses.field(default_factory=dict)
    # fingerprint -> {"fitness", "losses", "lrs", "error"}: re-judged on the funnel's longer tasks
    funnel: dict[str, dict] = dataclasses.field(default_factory=dict)
    counters: dict[str, int] = dataclasses.field(default_factory=lambda: {k: 0 for k in COUNTERS})
    elapsed: float = 0.0
    history: list[dict] = dataclasses.field(default_factory=list)
    rng_state: dict | None = None
    finished: bool = False
    hurdle_window: list[float] = dataclasses.field(default_factory=list)   # recent hurdle fitnesses
    # "funnel": only funnel-judged programs may be reported best; "search": no funnel, search fitness ranks.
    selection: str = "funnel"

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        if self.rng_state is not None:
            self.rng.bit_generator.state = self.rng_state

    @property
    def population(self) -> list[Individual]:
        """Every island's members, island after island (one island: the population)."""
        return [m for isl in self.islands for m in isl.evolution.members]

    # --- derived figures -------------------------------------------------------------------------
    def cache_hit_rate(self) -> float:
        n = self.counters["children"]
        return self.counters["cache_hits"] / n if n else 0.0

    def best_search(self) -> tuple[str, dict] | None:
        """The fingerprint and record of the lowest search fitness judged so far."""
        if not self.judged:
            return None
        return min(self.judged.items(), key=lambda kv: (kv[1]["fitness"], kv[1]["order"]))

    def best_funnel(self) -> tuple[str, dict] | None:
        """The reported best: the lowest *funnel* fitness (only re-judged programs qualify)."""
        if not self.funnel:
            return None
        return min(self.funnel.items(), key=lambda kv: (kv[1]["fitness"], self.judged[kv[0]]["order"]))

    def ranked(self, k: int) -> list[tuple[str, dict]]:
        """The top ``k`` programs. With a funnel (``selection == "funnel"``) only funnel-judged programs
        rank, by funnel fitness (the model-selection stage on the ``validation`` suite): a program that was
        never re-judged is never reported best. Without one, every program ranks by search fitness."""
        order = lambda fp: (self.funnel[fp]["fitness"], self.judged[fp]["order"])
        if self.selection == "funnel":
            return [(fp, self.judged[fp]) for fp in sorted(self.funnel, key=order)[:k]]
        rest = sorted(self.judged, key=lambda fp: (self.judged[fp]["fitness"], self.judged[fp]["order"]))
        return [(fp, self.judged[fp]) for fp in rest[:k]]

    def stage_figures(self) -> dict[str, dict]:
        """Per stage: candidates judged, candidate-trainings (candidates x tasks x rates x seeds), worker
        seconds, and (hurdle) the pass rate."""
        c = self.counters
        n = {"hurdle": c["hurdle_evaluations"], "search": c["search_evaluations"],
             "funnel": c["funnel_evaluations"]}
        out = {s: {"candidates": n[s], "trainings": c[f"trainings_{s}"], "seconds": round(c[f"seconds_{s}"], 2)}
               for s in STAGES}
        out["hurdle"]["pass_rate"] = c["hurdle_passed"] / n["hurdle"] if n["hurdle"] else None
        return out

    def stage_line(self) -> str:
        """One log line: evaluations, per-stage cost (candidates, trainings, worker seconds), pass rate."""
        parts = []
        for stage, f in self.stage_figures().items():
            if f["candidates"]:
                rate = f", {f['pass_rate']:.0%} passed" if f.get("pass_rate") is not None else ""
                parts.append(f"{stage} {f['candidates']} ({f['trainings']} trainings, {f['seconds']:.0f} s{rate})")
        c = self.counters
        return (f"search: {c['evaluations']} evaluations; " + "; ".join(parts)
                + f"; cache hits {self.cache_hit_rate():.0%}, {c['restarts']} restarts, {c['migrations']} migrations")

    def best_by_search(self, k: int) -> list[str]:
        """The ``k`` best programs by search fitness, funnel-judged or not; hurdle failures and programs that
        diverged everywhere (fitness >= WORST_FITNESS) left out."""
        ok = [(r["fitness"], r["order"], fp) for fp, r in self.judged.items() if r["fitness"] < WORST_FITNESS]
        return [fp for _, _, fp in sorted(ok)[:k]]

    # --- persistence -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, "seed": self.seed,
                "islands": [isl.to_json() for isl in self.islands],
                "judged": self.judged, "funnel": self.funnel, "counters": self.counters,
                "elapsed": self.elapsed, "history": self.history,
                "rng_state": self.rng.bit_generator.state, "finished": self.finished,
                "hurdle_window": self.hurdle_window, "selection": self.selection}

    def save(self, run_dir: str | os.PathLike) -> None:
        # Compact JSON: the judged table grows to thousands of records and is rewritten every checkpoint.
        atomic_write_text(os.path.join(run_dir, STATE_FILE),
                          json.dumps(self.to_json(), separators=(",", ":"), allow_nan=False))

    @classmethod
    def load(cls, run_dir: str | os.PathLike) -> "SearchState":
        path = os.path.join(run_dir, STATE_FILE)
        with open(path) as fh:
            d = json.load(fh)
        version = d.get("version")
        if version not in (1, FORMAT_VERSION):
            raise ValueError(f"{path}: unsupported state version {version!r} (expected 1 or {FORMAT_VERSION})")
        counters = {k: 0 for k in COUNTERS}
        counters.update(d["counters"])
        # Sizes here are provisional: the driver rebuilds every island with the config's population and
        # tournament. Version 1 held one population: it becomes island 0 (its best is recomputed there).
        raw = d["islands"] if version == FORMAT_VERSION else [{"members": d["population"]}]
        islands = [Island.from_json(r, max(len(r["members"]), 1), 1) for r in raw]
        return cls(seed=d["seed"], islands=islands,
                   judged=d["judged"], funnel=d["funnel"], counters=counters, elapsed=d["elapsed"],
                   history=d["history"], rng_state=d["rng_state"], finished=d.get("finished", False),
                   hurdle_window=list(d.get("hurdle_window", [])), selection=d.get("selection", "funnel"))

    @staticmethod
    def exists(run_dir: str | os.PathLike) -> bool:
        return os.path.exists(os.path.join(run_dir, STATE_FILE))
