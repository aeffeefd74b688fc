"""The distillation search: the evolution of ``search/`` with a judge variant and a fitness hook.

``metaopt distill`` runs :class:`search.driver.SearchDriver` unchanged (mutation, fingerprint cache, islands,
checkpoints, the funnel) with three hooks:

* :class:`DistillJudge` (the workers' judge): each candidate is replayed with teacher forcing on the stage's
  recording of the teacher (:func:`metaopt.distill.fit.imitation`, batched by the interpreter) and, when the
  task weight is not 0, also trained on the stage's tasks by the search's own :class:`search.judge.Judge`.
  Stage ``search`` reads the recording on the train tasks, stage ``funnel`` (the validation suite) the one on
  the validation tasks.
* :class:`DistillFitness` (the driver's fitness): :func:`metaopt.scoring.distill_fitness` of the imitation
  error and of the search fitness (``search.fitness.candidate_fitness``: 1 / geomean speedup over tuned AdamW).
* :func:`closest_rules` (the initial population): the library rules the interpreter holds, ranked by their
  imitation error on the train recording; the ``count`` best are :meth:`SearchDriver.add_initial`'s seeds.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional, Sequence

from metaopt import library, scoring
from metaopt.distill import fit, store
from metaopt.distill.store import Recording
from metaopt.dsl.program import Program
from search.judge import Judge

# The bound of each imitation error (fit.py): a program that cannot run gets it.
ERROR_MAX = {"cos": fit.WORST_COS, "nmse": fit.WORST_MSE}


def fits_interpreter(program: Program, cfg: Any) -> Optional[str]:
    """None when the search's interpreter (``cfg.max_len`` x ``cfg.n_registers``) holds ``program``, else why not."""
    from metaopt.interpret import EncodingError, encode
    try:
        encode(program, cfg.max_len, cfg.n_registers)
    except (EncodingError, ValueError, NotImplementedError) as e:
        return str(e)
    return None


def imitation_record(r: fit.Imitation) -> dict:
    """The JSON-ready part of an :class:`~metaopt.distill.fit.Imitation` kept with a judged candidate."""
    # NaN only where no recorded step moved a tensor (nothing to imitate): worst, as for a failed program
    num = lambda x, worst: float(x) if math.isfinite(x) else worst
    return {"cos": num(r.cos_error, fit.WORST_COS), "nmse": num(r.nmse, fit.WORST_MSE),
            "per_task": {t: [num(c, fit.WORST_COS), num(m, fit.WORST_MSE)] for t, (c, m) in r.per_task.items()},
            "error": r.error}


class DistillJudge:
    """Judges program texts on one stage: imitation of the stage's recording, plus the task curves of
    :class:`search.judge.Judge` when ``train`` (else empty ones). Each result is the search judge's
    (``losses``, ``lrs``, ``curves``, ``error``) with ``imitation``: :func:`imitation_record`, or None for a
    program the interpreter cannot hold (it fails on the search stage too)."""

    def __init__(self, cfg: Any, stage: str, recordings: dict[str, str], train: bool):
        if stage not in recordings:
            raise ValueError(f"distill: no recording for stage {stage!r} (have {', '.join(recordings)})")
        self.cfg = cfg
        self.recording = store.load(recordings[stage])      # once per worker and stage
        self.tasks = Judge(cfg, stage) if train else None

    def __call__(self, texts: Sequence[str], centres: Optional[Sequence[dict]] = None) -> list[dict]:
        from search.programs import DSLError, parse
        if self.tasks is not None:
            results = self.tasks(texts, centres)
        else:
            results = [{"losses": {}, "lrs": {}, "curves": {}, "error": None} for _ in texts]
        progs: list[tuple[int, Program]] = []
        for i, (text, res) in enumerate(zip(texts, results)):
            res["imitation"] = None
            try:
                p = parse(text)
            except DSLError as e:
                res["error"] = res["error"] or f"parse: {e}"
                continue
            why = fits_interpreter(p, self.cfg)
            if why is None:
                progs.append((i, p))
            else:
                res["error"] = res["error"] or f"interpreter: {why}"
        if progs:
            for (i, _), r in zip(progs, fit.imitation([p for _, p in progs], self.recording, engine="auto")):
                results[i]["imitation"] = imitation_record(r)
        return results


def judge_factory(recordings: dict[str, str], train: bool) -> functools.partial:
    """The ``judge`` argument of :class:`SearchDriver`: picklable, so Ray workers build their own."""
    return functools.partial(DistillJudge, recordings=dict(recordings), train=bool(train))


@dataclasses.dataclass(frozen=True)
class DistillFitness:
    """The driver's fitness hook: ``(stage, result, driver) -> (fitness, scores)``, lower is better."""

    imitation_weight: float
    task_weight: float
    objective: str = "cos"

    @property
    def needs_baselines(self) -> bool:
        """Tuned AdamW is only the task term's divisor: without it the search tunes no baselines."""
        return self.task_weight > 0

    def __call__(self, stage: str, res: dict, driver: Any) -> tuple[float, dict]:
        imit = res.get("imitation")
        scores: dict[str, Any] = {"imitation": None, "imitation_cos": None, "imitation_nmse": None,
                                  "task_fitness": None, "tasks": {}}
        if res.get("error") or imit is None:
            return scoring.WORST_FITNESS, scores
        scores.update(imitation=imit[self.objective], imitation_cos=imit["cos"], imitation_nmse=imit["nmse"])
        task = None
        if self.task_weight > 0:
            from search.fitness import candidate_fitness
            task, scores["tasks"] = candidate_fitness(res["curves"], driver.reference(stage))
            scores["task_fitness"] = task
        f = scoring.distill_fitness(imit[self.objective], ERROR_MAX[self.objective], task, self.imitation_weight,
                                    self.task_weight)
        return f, scores


def closest_rules(rec: Recording, cfg: Any, candidates: Sequence[str], objective: str = "cos"
                  ) -> list[dict]:
    """Every candidate library rule (all of them when ``candidates`` is empty) with its imitation errors on
    ``rec``, closest first; rules the interpreter (``cfg``) cannot hold are listed last with ``fits`` false
    and no errors (they could not be evolved)."""
    names = list(candidates) or library.names()
    rows, held = [], []
    for name in names:
        why = fits_interpreter(library.get(name), cfg)
        if why is None:
            held.append(name)
        else:
            rows.append({"name": name, "fits": False, "why": why, "cos": None, "nmse": None})
    ranked = []
    if held:
        for name, r in zip(held, fit.imitation(held, rec, engine="auto")):
            ranked.append({"name": name, "fits": True, "why": None, "cos": r.cos_error, "nmse": r.nmse})
    key = lambda r: (r[objective] if math.isfinite(r[objective]) else math.inf, r["name"])
    return sorted(ranked, key=key) + rows


def seed_programs(rows: Sequence[dict], count: int) -> list[Program]:
    """The ``count`` closest rules of :func:`closest_rules`' table."""
    return [library.get(r["name"]) for r in rows if r["fits"]][:count]
