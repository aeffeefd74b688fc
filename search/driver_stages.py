"""The stages a bred child goes through in the search driver (see ``search.driver``), and their queues.

Hurdle -> search -> funnel (-> the selection stage before the run ends): each returned batch is ingested by its
stage (cost counters, fitness, the hurdle gate, the child's record and island, the funnel queue), and the next
batch to send out is taken from the stage queues, or bred. Kept apart from the driver's setup, breeding and
main loop: this part decides where a judged candidate goes next. ``StagePipeline`` is mixed into
:class:`search.driver.SearchDriver`, which owns what these methods read: ``cfg``, ``state``, ``specs``,
``islands``, ``gate``, ``pool``, ``fitness_fn``, ``log``, the queues (``_pending``, ``_full_queue``,
``_funnel_queue``, ``_funnel_pending``, ``_selected``, ``_sorted``) and ``reference``, ``_breed``, ``_room``,
``_next_id``.
"""
from __future__ import annotations

import bisect
import dataclasses
from typing import Callable, Optional

from search.distributed import Job
from search.evolution import Individual
from search.fitness import WORST_FITNESS, candidate_fitness, failed_fitness, hurdle_failed_fitness


@dataclasses.dataclass
class Pending:
    """A bred child not yet given its fitness (being judged, or queued for the next stage)."""

    text: str
    parent: str
    mutation: str
    island: int
    hurdle: Optional[dict] = None      # its hurdle result, once it has passed


class StagePipeline:
    """Mixed into ``SearchDriver``: ingesting each stage's results and taking the next batch from the queues."""

    def _cost(self, stage: str, res: dict) -> None:
        """One candidate's cost at ``stage``: its trainings (tasks x rates x seeds) and worker seconds."""
        spec = self.specs[stage]
        rates = len(spec.factors) or len(spec.lr_grid)
        c = self.state.counters
        c[f"trainings_{stage}"] += len(spec.tasks) * rates * spec.seeds
        c[f"seconds_{stage}"] += float(res.get("seconds", 0.0))

    def _fitness(self, stage: str, res: dict) -> tuple[float, dict]:
        if self.fitness_fn is not None:
            return self.fitness_fn(stage, res, self)
        ref = self.reference(stage)
        return failed_fitness(ref) if res.get("error") else candidate_fitness(res["curves"], ref)

    def _finalize(self, fp: str, fitness: float, scores: dict, res: dict, stage: str) -> None:
        """``fp`` has its fitness (from ``stage``): record it, add it to its island, maybe funnel it."""
        st = self.state
        pend = self._pending.pop(fp)
        st.counters["evaluations"] += 1
        # failed: could not run, or diverged at every rate on some task (not merely slow: that scores 1/4)
        st.counters["failures"] += bool(res.get("error")) or None in res["curves"].values()
        self.session_evals += 1
        st.judged[fp] = {"text": pend.text, "fitness": fitness, "scores": scores, "losses": res["losses"],
                         "lrs": res["lrs"], "error": res.get("error"), "order": st.counters["evaluations"],
                         "parent": pend.parent, "mutation": pend.mutation, "stage": stage,
                         "island": pend.island, "hurdle": pend.hurdle}
        island = self.islands[pend.island]
        ind = Individual(pend.text, fp, fitness, st.counters["children"])
        island.evolution.add(ind)
        island.observe(ind)
        if stage != "hurdle":
            bisect.insort(self._sorted, fitness)
            self._maybe_funnel(fp, fitness)
        r = self.cfg.restart
        if r.enabled and island.plateaued(r.plateau):
            island.reseed(st.counters["children"])
            st.counters["restarts"] += 1
            self.log(f"search: island {pend.island} made {r.plateau} evaluations without improving: re-seeded "
                     f"from its best (fitness {island.best.fitness:.4f}; restart {island.restarts} there)")

    def _ingest_hurdle(self, job: Job, results: list[dict]) -> None:
        c = self.state.counters
        for fp, res in zip(job.keys, results):
            self._cost("hurdle", res)
            h, scores = self._fitness("hurdle", res)
            passed, threshold = self.gate.judge(h)
            c["hurdle_evaluations"] += 1
            c["hurdle_passed"] += passed
            # Kept with the program: its rates centre its children's hurdle grids.
            self._pending[fp].hurdle = {"fitness": h, "scores": scores, "lrs": res["lrs"], "passed": passed,
                                        "threshold": threshold}
            if passed:
                self._full_queue.append(fp)
            else:
                self._finalize(fp, hurdle_failed_fitness(h), scores, res, "hurdle")

    def _ingest_search(self, job: Job, results: list[dict]) -> None:
        for fp, res in zip(job.keys, results):
            self._cost("search", res)
            self.state.counters["search_evaluations"] += 1
            self._finalize(fp, *self._fitness("search", res), res, "search")

    def _in_top(self, fitness: float) -> bool:
        """In the top ``funnel.fraction`` of every full-stage fitness so far (hurdle failures not counted)."""
        f, n = self.cfg.funnel, len(self._sorted)
        return (fitness < WORST_FITNESS and n >= f.min_judged
                and bisect.bisect_left(self._sorted, fitness) < max(1, f.fraction * n))

    def _maybe_funnel(self, fp: str, fitness: float) -> None:
        if not self.cfg.funnel.enabled or fp in self.state.funnel:
            return
        if fp not in self._funnel_pending and fp not in self._funnel_queue and self._in_top(fitness):
            self._funnel_queue.append(fp)

    def _ingest_funnel(self, job: Job, results: list[dict]) -> None:
        for fp, res in zip(job.keys, results):
            self._cost("funnel", res)
            self._funnel_pending.discard(fp)
            fitness, scores = self._fitness("funnel", res)
            self.state.funnel[fp] = {"fitness": fitness, "scores": scores, "losses": res["losses"], "lrs": res["lrs"],
                                     "error": res.get("error")}
            self.state.counters["funnel_evaluations"] += 1

    def _take(self, queue: list[str], stage: str, texts: Callable[[str], str]) -> Job:
        fps = queue[:self.cfg.batch_size]
        del queue[:len(fps)]
        return Job(self._next_id(), stage, [texts(fp) for fp in fps], fps)

    def _next_job(self, spent: bool) -> Job | None:
        """Funnel batches go out a quarter full: waiting to fill one would push the funnel (and its compile
        on the worker that takes it) past the end of the budget, where nothing else runs beside it.
        Search-stage batches go out full (the interpreter pads every call to the batch size) unless the
        budget is spent or there is nothing new to breed."""
        b = self.cfg.batch_size
        # Queued candidates that better ones have since pushed out of the top fraction are not re-judged.
        self._funnel_queue = [fp for fp in self._funnel_queue if self._in_top(self.state.judged[fp]["fitness"])
                              or fp in self._selected]
        self._funnel_queue.sort(key=lambda fp: self.state.judged[fp]["fitness"])     # best first
        if spent:     # past the budget only the selection stage's programs are funnel-judged (top_programs)
            self._funnel_queue = [fp for fp in self._funnel_queue if fp in self._selected]
        if (len(self._funnel_queue) >= max(1, b // 4) and self._funnel_has_room()) or (spent and self._funnel_queue):
            job = self._take(self._funnel_queue, "funnel", lambda fp: self.state.judged[fp]["text"])
            self._funnel_pending.update(job.keys)
            return job
        full = lambda: self._take(self._full_queue, "search", lambda fp: self._pending[fp].text)
        if len(self._full_queue) >= b or (spent and self._full_queue):
            return full()
        job = None if spent else self._breed(self._room())
        return full() if job is None and self._full_queue else job

    def _funnel_has_room(self) -> bool:
        """Whether the funnel, counting the batches it has in flight at its mean cost so far, is within
        ``funnel.max_share`` of the worker-seconds judged so far. Its tasks are the large ones (a funnel
        judging cost ~60x a search-stage one in a full search), so an uncapped funnel took most of the workers
        and starved the first stages; capped, the best-queued candidates wait. Before any funnel result, one
        batch at a time: its cost is unknown, and with every worker on a funnel batch nothing else runs."""
        c = self.state.counters
        spent = {stage: float(c.get(f"seconds_{stage}", 0.0)) for stage in ("hurdle", "search", "funnel")}
        done = int(c.get("funnel_evaluations", 0))
        if not done:
            return not self._funnel_pending
        owed = spent["funnel"] + len(self._funnel_pending) * spent["funnel"] / done
        return owed <= self.cfg.funnel.max_share * (sum(spent.values()) + owed - spent["funnel"])

    def _select(self) -> bool:
        """The selection stage: before the run ends, funnel-judge every one of the ``top_programs`` best
        search-stage programs the funnel has not judged, and more of the next best until at least
        ``top_programs`` are funnel-judged (only funnel-judged programs are reported best). With the funnel
        capped (``funnel.max_share``) the best late programs may never have reached it during the search.
        The start programs (``cfg.init``, ``add_initial``'s) are funnel-judged too, as the control: a found
        program the search ranks first on its own tasks can be worse than its start on ``validation`` (an
        AdamW search whose winner dropped momentum did exactly that), and then the start ranks above it.
        True if anything was queued."""
        if not self.cfg.funnel.enabled:
            return False
        skip = self.state.funnel.keys() | self._funnel_pending | self._selected
        k = self.cfg.top_programs
        ranked = self.state.best_by_search(len(self.state.judged))     # ranked once: top k, then the next best
        best = [fp for fp in ranked[:k] if fp not in skip]
        missing = k - len(self.state.funnel) - len(best)
        if missing > 0:
            best += [fp for fp in ranked[k:] if fp not in skip][:missing]
        best += [fp for fp in self.init_fps if fp not in skip and fp not in best
                 and self.state.judged.get(fp, {}).get("fitness", WORST_FITNESS) < WORST_FITNESS]
        self._funnel_queue += best
        self._selected.update(best)
        return bool(best)

    def judge(self, stage: str, texts: list[str]) -> list[tuple[float, dict, dict]]:
        """(fitness, scores, result) of each program text on ``stage``, judged by this run's pool and fitness
        in batches of ``batch_size``, outside the evolution (nothing is recorded in the state). For programs
        made after the search, e.g. refitted ones; call it when no search batch is in flight."""
        b = self.cfg.batch_size
        queue = [list(range(i, min(i + b, len(texts)))) for i in range(0, len(texts), b)]
        out: list = [None] * len(texts)
        while queue or self.pool.inflight():
            while queue and self.pool.capacity() > 0:
                keys = queue.pop(0)
                self.pool.submit(Job(self._next_id(), stage, [texts[k] for k in keys], keys))
            for job, results in self.pool.wait():
                for k, res in zip(job.keys, results):
                    out[k] = (*self._fitness(stage, res), res)
        return out
