"""The search driver: asynchronous steady-state regularized evolution over a worker pool.

The driver owns the islands (populations), the fingerprint cache, the stage queues and the checkpoints;
workers only judge. Loop: keep every worker ``inflight_per_worker`` batches deep (breeding each batch from
one island, round robin, as it is *now*), wait for any batch (``ray.wait``), fold its candidates into their
island (the oldest leave), queue funnel candidates, checkpoint every ``checkpoint_every`` evaluations.

* **Fingerprint cache** — the child's fingerprint is taken when it is bred, before any judging: a child
  whose fingerprint was judged (or is being judged) takes the cached fitness at once and never reaches a
  worker (Chen et al. 2023 report most mutants are redundant). One cache serves every island.
* **Hurdles** (``hurdle.enabled``; AutoML-Zero) — a child is first judged on the cheap ``hurdle`` stage at
  3 rates around its parent's best rate; only those beating ``percentile``% of the recent hurdle results
  go on to the ``search`` stage (queued, judged in full batches). Failures keep a fitness above every
  full-stage one (``search.fitness.hurdle_failed_fitness``). The initial program skips the hurdle.
* **Islands, restarts** — ``islands`` populations; every ``migrate_every`` evaluations each island's best
  replaces a random member of the next; an island whose best has not improved for ``restart.plateau``
  evaluations is re-seeded from that best (Chen et al. 2023).
* **Funnel** — a candidate in the top ``funnel.fraction`` of the full-stage judgings (when judged and when
  its batch goes out) is re-judged on the ``validation`` suite's tasks with other seeds; only funnel-judged
  programs are reported best (Lion's guard against meta-overfitting), so before the run ends the best
  others are funnel-judged until ``top_programs`` are (the selection stage).
* **Baselines** — AdamW and SGD tuned per task and stage once, exactly as candidates are tuned (the
  stage's rate grid, seeds and keys), as pool jobs (``search.judge.compute_baselines``).
* **Hooks** — ``judge`` replaces the workers' :class:`~search.judge.Judge` (a factory ``(cfg, stage)``),
  ``fitness`` replaces the speedup fitness (``(stage, result, driver) -> (fitness, scores)``; lower is better,
  failures at ``WORST_FITNESS``; its ``needs_baselines`` attribute, default true, says whether the tuned
  baselines are needed), and :meth:`SearchDriver.add_initial` seeds the population with more programs than
  ``cfg.init``. ``metaopt distill`` uses all three (``metaopt/distill/evolve.py``).

The stages (ingesting results, the queues, the funnel and selection) are in ``search/driver_stages.py``;
this module holds the setup, the baselines, breeding and the main loop.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

from metaopt.provenance import write_provenance
from search import programs
from search.config import is_init_file, read_init_file
from search.distributed import Job, make_pool
from search.driver_stages import Pending, StagePipeline
from search.evolution import Individual, Island, RegularizedEvolution, migrate
from search.fitness import HurdleGate, references
from search.judge import baseline_signature, check_encodable, compute_baselines, hurdle_centres, stage_specs
from search.mutate import default_space, mutate
from search.state import SearchState

Callback = Callable[["SearchDriver"], None]
FitnessFn = Callable[[str, dict, "SearchDriver"], tuple[float, dict]]


class SearchDriver(StagePipeline):
    """Runs (or resumes) one search in ``run_dir``. ``callbacks`` run after every returned batch;
    ``progress`` shows a bar (stderr) for the baseline tuning, which runs before the first callback."""

    def __init__(self, cfg: Any, run_dir: str, pool: Any = None, callbacks: tuple[Callback, ...] = (),
                 address: Optional[str] = None, log: Callable[[str], None] = print, progress: bool = True,
                 judge: Optional[Callable[[Any, str], Any]] = None, fitness: Optional[FitnessFn] = None):
        self.cfg, self.run_dir, self.log, self.progress = cfg, run_dir, log, progress
        os.makedirs(run_dir, exist_ok=True)
        self.resumed = SearchState.exists(run_dir)
        self.state = SearchState.load(run_dir) if self.resumed else SearchState(seed=cfg.seed)
        self.state.selection = "funnel" if cfg.funnel.enabled else "search"
        # The config decides the sizes: saved islands are rebuilt with it (a version-1 state is island 0).
        self.islands = [isl.resized(cfg.population, cfg.tournament) for isl in self.state.islands[:cfg.islands]]
        self.islands += [Island(RegularizedEvolution(cfg.population, cfg.tournament))
                         for _ in range(cfg.islands - len(self.islands))]
        self.state.islands = self.islands
        self.specs = stage_specs(cfg)
        h = cfg.hurdle
        self.gate = HurdleGate(h.percentile, h.window, h.min_window, self.state.hurdle_window) if h.enabled else None
        self.space = default_space(cfg.max_len, cfg.max_state_vars)
        # Ray first: it spawns processes, which should happen before JAX (fingerprints) starts threads.
        if pool is None and cfg.workers:
            self.log(f"search: starting {cfg.workers} Ray worker(s)" + (f" on {address}" if address else ""))
        self.pool = pool if pool is not None else make_pool(cfg, address, judge)
        self.fitness_fn = fitness
        self.needs_baselines = bool(getattr(fitness, "needs_baselines", True))
        self.init_program = programs.simplify(read_init_file(cfg.init) if is_init_file(cfg.init)
                                              else programs.initial_program(cfg.init))
        self.init_fp = programs.fingerprint(self.init_program)
        self.init_programs, self.init_fps = [self.init_program], [self.init_fp]   # cfg.init, then add_initial's
        self.provenance = write_provenance(run_dir)   # JAX runs here now (fingerprints): ask it for devices
        check_encodable(self.init_program, cfg)
        self.callbacks = callbacks
        self.baselines: dict = {}
        self._references: dict = {}
        self._parsed: dict[str, Any] = {self.init_fp: self.init_program}
        self._pending: dict[str, Pending] = {}
        self._full_queue: list[str] = []          # passed the hurdle, waiting for the search stage
        self._funnel_queue: list[str] = []
        self._funnel_pending: set[str] = set()
        self._selected: set[str] = set()          # queued by the selection stage (kept even if not in the top)
        # Full-stage fitnesses (hurdle failures left out): the funnel takes a fraction of these.
        self._sorted = sorted(r["fitness"] for r in self.state.judged.values() if r.get("stage") != "hurdle")
        self._jobs = 0
        self._island_turn = 0
        self.session_start = time.monotonic()
        self.session_evals = 0
        self._t0 = time.monotonic() - self.state.elapsed

    @property
    def evolution(self) -> RegularizedEvolution:
        """The population (one island), or a read-only view of every island's members (for the monitor)."""
        if len(self.islands) == 1:
            return self.islands[0].evolution
        return RegularizedEvolution(self.cfg.population * len(self.islands), self.cfg.tournament,
                                    self.state.population)

    # --- baselines --------------------------------------------------------------------------------
    def _baseline_signature(self) -> dict:
        return baseline_signature(self.cfg)

    def compute_baselines(self) -> dict:
        """``{stage: {optimizer: {task: record}}}`` (``search.judge.compute_baselines``)."""
        self.baselines = compute_baselines(self.cfg, self.pool, self.run_dir, self._next_id, self.log, self.progress)
        self._references = {}
        return self.baselines

    def reference(self, stage: str, opt: str = "adamw") -> dict:
        """``{task: scoring.Reference}`` of the tuned ``opt`` on ``stage`` (computed once)."""
        key = (stage, opt)
        if key not in self._references:
            self._references[key] = references(self.baselines[stage][opt])
        return self._references[key]

    def add_initial(self, progs: Any) -> None:
        """More initial programs beside ``cfg.init``: each is judged first (unless its fingerprint was) and,
        while an island fills up, is a parent as likely as ``cfg.init`` or any member. Call before :meth:`run`
        (also on resume); the caller makes sure the interpreter holds them (``search.judge.check_encodable``)."""
        for p in progs:
            p = programs.simplify(p)
            fp = programs.fingerprint(p)
            if fp not in self.init_fps:
                self._parsed[fp] = p
                self.init_programs.append(p)
                self.init_fps.append(fp)

    # --- breeding ---------------------------------------------------------------------------------
    def _next_id(self) -> int:
        self._jobs += 1
        return self._jobs

    def _program(self, fp: str, text: str):
        p = self._parsed.get(fp)
        if p is None:
            p = self._parsed[fp] = programs.parse(text)
        return p

    def _parent(self, island: Island) -> tuple[str, Any]:
        rng, evo = self.state.rng, island.evolution
        if not evo.full:
            # Filling up: mutants of the initial programs and of what has joined so far.
            k = int(rng.integers(len(evo) + len(self.init_programs)))
            if k >= len(evo):
                return self.init_fps[k - len(evo)], self.init_programs[k - len(evo)]
            m = evo.members[k]
        else:
            m = evo.select_parent(rng)
        return m.fingerprint, self._program(m.fingerprint, m.text)

    def _breed(self, n: int) -> Job | None:
        """Up to ``n`` new (never judged, not pending) children of the next island; cached ones join it now."""
        st, hurdle = self.state, self.gate is not None
        i = self._island_turn
        self._island_turn = (i + 1) % len(self.islands)
        island = self.islands[i]
        texts, keys, centres = [], [], []
        for fp, prog in zip(self.init_fps, self.init_programs):
            if fp in st.judged or fp in self._pending:
                continue
            if not hurdle and len(texts) >= n:
                break             # the rest go out with the next batches
            self._pending[fp] = Pending(programs.text(prog), "", "init", i)
            if hurdle:     # it has no parent rate to centre on: straight to the search stage
                self._full_queue.append(fp)
            else:
                texts.append(programs.text(prog))
                keys.append(fp)
        for _ in range(n * 20):     # bounded: a region of the space may be exhausted
            if len(texts) >= n:
                break
            parent_fp, parent = self._parent(island)
            child, kind = mutate(parent, st.rng, self.space)
            fp = programs.fingerprint(child)     # before any judging: equal children never reach a worker
            st.counters["children"] += 1
            if fp in st.judged:
                st.counters["cache_hits"] += 1
                rec = st.judged[fp]
                ind = Individual(rec["text"], fp, rec["fitness"], st.counters["children"])
                island.evolution.add(ind)
                island.observe(ind, evaluated=False)
                continue
            if fp in self._pending:
                st.counters["cache_hits"] += 1
                continue
            text = programs.text(child)
            self._parsed[fp] = child
            self._pending[fp] = Pending(text, parent_fp, kind, i)
            texts.append(text)
            keys.append(fp)
            if hurdle:
                centres.append(hurdle_centres(self.specs["hurdle"], st.judged.get(parent_fp),
                                              self.baselines["hurdle"]["adamw"], self.cfg.tasks.lr_grid))
        if not texts:
            return None
        return Job(self._next_id(), "hurdle" if hurdle else "search", texts, keys, centres=centres)

    # --- the loop ---------------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def funnel_backlog(self) -> int:
        """Candidates queued for, or being judged by, the funnel (the progress bar shows them)."""
        return len(self._funnel_queue) + len(self._funnel_pending)

    def budget_spent(self) -> bool:
        b = self.cfg.budget
        if b.evaluations is not None and self.state.counters["evaluations"] + len(self._pending) >= b.evaluations:
            return True
        return b.seconds is not None and self.elapsed() >= b.seconds

    def _room(self) -> int:
        """The next batch's size: never breed past the evaluation budget."""
        b = self.cfg.budget.evaluations
        if b is None:
            return self.cfg.batch_size
        left = b - self.state.counters["evaluations"] - len(self._pending)
        return max(1, min(self.cfg.batch_size, left))

    def stats(self) -> dict[str, Any]:
        """The figures TensorBoard and the summary show."""
        s = self.evolution.fitness_stats()
        best_f = self.state.best_funnel()
        dt = time.monotonic() - self.session_start
        stages = self.state.stage_figures()
        c = self.state.counters
        return {"evaluations": c["evaluations"], "elapsed": self.elapsed(),
                "best": s["best"], "median": s["median"], "diversity": s["diversity"],
                "cache_hit_rate": self.state.cache_hit_rate(),
                "evals_per_s": self.session_evals / dt if dt > 0 else 0.0,
                "best_funnel": best_f[1]["fitness"] if best_f else None,
                "distinct_judged": len(self.state.judged),
                "hurdle_pass_rate": stages["hurdle"]["pass_rate"], "stages": stages,
                "restarts": c["restarts"], "migrations": c["migrations"], "islands": len(self.islands)}

    def checkpoint(self) -> None:
        if self.gate is not None:
            self.state.hurdle_window = list(self.gate.values)
        self.state.elapsed = self.elapsed()
        self.state.counters["worker_restarts"] = self.pool.restarts + self._restarts_before
        self.state.save(self.run_dir)

    def run(self) -> SearchState:
        """Search until the budget is spent, drain the workers, flush the queues and the selection stage,
        checkpoint."""
        st = self.state
        self._restarts_before = st.counters.get("worker_restarts", 0)
        if not self.baselines and self.needs_baselines:
            self.compute_baselines()
        # The seconds budget and the throughput cover the search loop, not the one-off baseline tuning.
        self._t0 = time.monotonic() - st.elapsed
        self.session_start = time.monotonic()
        next_ckpt = st.counters["evaluations"] + self.cfg.checkpoint_every
        k = self.cfg.migrate_every
        next_migration = (st.counters["evaluations"] // k + 1) * k
        ingest = {"hurdle": self._ingest_hurdle, "search": self._ingest_search, "funnel": self._ingest_funnel}
        idle_rounds = 0
        while True:
            spent = self.budget_spent()
            while self.pool.capacity() > 0:
                job = self._next_job(spent)
                if job is None:
                    break
                self.pool.submit(job)
                spent = self.budget_spent()
            if not self.pool.inflight():
                if spent and not self._funnel_queue and not self._full_queue:
                    if self._select():
                        continue
                    break
                idle_rounds += 1     # only cache hits bred this round; the population still moved
                if idle_rounds > 1000:
                    self.log("search: no new candidates in 1000 rounds (space exhausted); stopping")
                    break
                continue
            idle_rounds = 0
            for job, results in self.pool.wait():
                st.counters["batches"] += 1
                ingest[job.stage](job, results)
            if len(self.islands) > 1 and st.counters["evaluations"] >= next_migration:
                migrate(self.islands, st.rng)
                st.counters["migrations"] += 1
                next_migration += k
            if st.counters["evaluations"] >= next_ckpt:
                st.history.append(self.stats())
                self.checkpoint()
                next_ckpt = st.counters["evaluations"] + self.cfg.checkpoint_every
                if not self.progress:
                    self.log(self.state.stage_line())
            for cb in self.callbacks:
                cb(self)
        st.finished = True
        st.history.append(self.stats())
        self.checkpoint()
        self.log(self.state.stage_line())
        return st
