"""The search driver: asynchronous steady-state regularized evolution over a worker pool.

The driver owns the population, the fingerprint cache, the funnel queue and the checkpoints; workers
only judge. Loop: keep every worker ``inflight_per_worker`` batches deep (breeding each batch from the
population as it is *now*), wait for any batch (``ray.wait``), fold its candidates into the population
(the oldest leave), queue funnel candidates, checkpoint every ``checkpoint_every`` evaluations.

* **Fingerprint cache** — a child whose fingerprint was judged before takes the cached fitness at once
  and never reaches a worker (Chen et al. 2023 report most mutants are redundant).
* **Funnel** — a candidate in the top ``funnel.fraction`` of everything judged is re-judged on
  the ``validation`` suite's tasks (``funnel.suite``) with other seeds; only funnel-judged programs may be reported
  best (Lion's defence against meta-overfitting to the cheap proxy).
* **Baselines** — AdamW and SGD tuned per task and stage once, exactly as candidates are tuned (the
  stage's rate grid, seeds and keys), as pool jobs, cached in ``baselines.json``
  (and in ``../.baselines/`` beside the run directory, for other runs with the same settings).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import time
from typing import Any, Callable, Optional

from metaopt.io import atomic_write_json
from metaopt.progress import Ticker, progress_bar
from metaopt.provenance import write_provenance
from search import programs
from search.distributed import Job, LocalPool, RayPool, init_ray
from search.evolution import Individual, RegularizedEvolution
from search.fitness import WORST_FITNESS, baseline_factories, candidate_fitness, failed_fitness, references
from search.judge import stage_specs
from search.mutate import default_space, mutate
from search.state import SearchState

BASELINES_FILE = "baselines.json"
Callback = Callable[["SearchDriver"], None]


def make_pool(cfg: Any, address: Optional[str] = None):
    """``workers: 0`` judges in-process; otherwise Ray actors (local Ray, or the cluster at ``address``)."""
    if cfg.workers == 0:
        return LocalPool(cfg)
    init_ray(address, num_cpus=None if address else max(cfg.workers, os.cpu_count() or 1))
    return RayPool(cfg, cfg.workers, cfg.inflight_per_worker, cfg.max_batch_retries)


def _check_encodable(program: Any, cfg: Any) -> None:
    """Fail fast when the interpreter cannot hold the initial program (every child would start from
    a worst-fitness parent): e.g. ``--init adamw`` needs max_len >= 14 and n_registers >= 26."""
    if cfg.backend == "compile":
        return
    from metaopt.interpret import EncodingError, encode
    try:
        encode(program, cfg.max_len, cfg.n_registers)
    except EncodingError as e:
        raise ValueError(f"initial program {cfg.init!r} does not fit the interpreter ({e}); raise max_len "
                         f"/ n_registers in the config") from None


class SearchDriver:
    """Runs (or resumes) one search in ``run_dir``. ``callbacks`` run after every returned batch;
    ``progress`` shows a bar (stderr) for the baseline tuning, which runs before the first callback."""

    def __init__(self, cfg: Any, run_dir: str, pool: Any = None, callbacks: tuple[Callback, ...] = (),
                 address: Optional[str] = None, log: Callable[[str], None] = print, progress: bool = True):
        self.cfg, self.run_dir, self.log, self.progress = cfg, run_dir, log, progress
        os.makedirs(run_dir, exist_ok=True)
        self.state = SearchState.load(run_dir) if SearchState.exists(run_dir) else SearchState(seed=cfg.seed)
        self.resumed = SearchState.exists(run_dir)
        self.evolution = RegularizedEvolution(cfg.population, cfg.tournament, self.state.population)
        self.space = default_space(cfg.max_len, cfg.max_state_vars)
        # Ray first: it spawns processes, which should happen before JAX (fingerprints) starts threads.
        if pool is None and cfg.workers:
            self.log(f"search: starting {cfg.workers} Ray worker(s)" + (f" on {address}" if address else ""))
        self.pool = pool if pool is not None else make_pool(cfg, address)
        self.init_program = programs.simplify(programs.initial_program(cfg.init))
        self.init_fp = programs.fingerprint(self.init_program)
        self.provenance = write_provenance(run_dir)   # JAX runs here now (fingerprints): ask it for devices
        _check_encodable(self.init_program, cfg)
        self.callbacks = callbacks
        self.baselines: dict = {}
        self._references: dict = {}
        self._parsed: dict[str, Any] = {self.init_fp: self.init_program}
        self._pending: dict[str, tuple[str, str, str]] = {}   # fp -> (text, parent fp, mutation)
        self._funnel_queue: list[str] = []
        self._funnel_pending: set[str] = set()
        self._sorted = sorted(r["fitness"] for r in self.state.judged.values())
        self._jobs = 0
        self.session_start = time.monotonic()
        self.session_evals = 0
        self._t0 = time.monotonic() - self.state.elapsed

    # --- baselines --------------------------------------------------------------------------------
    def _baseline_signature(self) -> dict:
        specs = stage_specs(self.cfg)
        if not self.cfg.funnel.enabled:
            del specs["funnel"]
        # "tuning"/"scoring" name the procedure: records made before speedup scoring lack the curves.
        return {"stages": {k: {"tasks": list(v.tasks), "steps": list(v.steps), "eval_every": list(v.eval_every),
                               "seeds": v.seeds, "seed": v.seed, "grid": list(v.lr_grid)}
                           for k, v in specs.items()},
                "tuning": "same-as-candidates", "scoring": "speedup"}

    def compute_baselines(self) -> dict:
        """``{stage: {optimizer: {task: {"loss", "lr", "grid"}}}}``, from ``baselines.json`` when it matches."""
        path = os.path.join(self.run_dir, BASELINES_FILE)
        sig = self._baseline_signature()
        # Also shared between runs beside this one (runs/.baselines/<hash>.json): a second search with
        # the same tasks, steps, seeds and grid (say, another --init) need not tune AdamW again.
        digest = hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]
        shared = os.path.join(os.path.dirname(os.path.abspath(self.run_dir)), ".baselines", f"{digest}.json")
        for candidate in (path, shared):
            if os.path.exists(candidate):
                with open(candidate) as fh:
                    cached = json.load(fh)
                if cached.get("signature") == sig:
                    self.baselines, self._references = cached["baselines"], {}
                    if candidate != path:
                        atomic_write_json(path, cached)
                    return self.baselines
        specs = stage_specs(self.cfg)
        stages = ["search"] + (["funnel"] if self.cfg.funnel.enabled else [])
        items = [f"{stage}/{opt}/{task}" for stage in stages for opt in baseline_factories()
                 for task in specs[stage].tasks]
        self.log(f"search: tuning {len(items)} baselines (AdamW, SGD per task and stage) on "
                 f"{len(self.cfg.tasks.lr_grid)} rates, as candidates; cached in {path}")
        t = time.monotonic()
        out: dict = {}
        queue = list(items)
        remaining = len(items)
        # One bar item per baseline; each is a whole tuning on a worker, so the ticker keeps the clock moving.
        bar = progress_bar(len(items), "baselines", unit="tuning", enabled=self.progress,
                           postfix=f"tuning {min(len(items), self.pool.capacity())} at a time")
        try:
            with Ticker(bar):
                while remaining:
                    while queue and self.pool.capacity() > 0:
                        item = queue.pop(0)
                        self.pool.submit(Job(self._next_id(), "baseline", [item]))
                    for job, results in self.pool.wait():
                        stage, opt, task = job.texts[0].split("/", 2)
                        res = results[0]
                        if "loss" not in res:
                            raise RuntimeError(f"baseline {job.texts[0]} failed: {res['error']}")
                        out.setdefault(stage, {}).setdefault(opt, {})[task] = res
                        remaining -= 1
                        bar.set_postfix_str(f"{job.texts[0]}: lr {res['lr']:.3g}, loss {res['loss']:.4g}",
                                            refresh=False)
                        bar.update(1)
        finally:
            bar.close()
        self.baselines, self._references = out, {}
        atomic_write_json(path, {"signature": sig, "baselines": out})
        atomic_write_json(shared, {"signature": sig, "baselines": out})
        self.log(f"search: baselines done in {time.monotonic() - t:.0f} s")
        return out

    def reference(self, stage: str, opt: str = "adamw") -> dict:
        """``{task: scoring.Reference}`` of the tuned ``opt`` on ``stage`` (computed once)."""
        key = (stage, opt)
        if key not in self._references:
            self._references[key] = references(self.baselines[stage][opt])
        return self._references[key]

    # --- breeding ---------------------------------------------------------------------------------
    def _next_id(self) -> int:
        self._jobs += 1
        return self._jobs

    def _program(self, fp: str, text: str):
        p = self._parsed.get(fp)
        if p is None:
            p = self._parsed[fp] = programs.parse(text)
        return p

    def _parent(self) -> tuple[str, Any]:
        rng = self.state.rng
        if not self.evolution.full:
            # Filling up: mutants of the initial program and of what has joined so far.
            k = int(rng.integers(len(self.evolution) + 1))
            if k == len(self.evolution):
                return self.init_fp, self.init_program
            m = self.evolution.members[k]
        else:
            m = self.evolution.select_parent(rng)
        return m.fingerprint, self._program(m.fingerprint, m.text)

    def _breed(self, n: int) -> Job | None:
        """Up to ``n`` new (never judged, not in flight) children; cached ones join the population now."""
        texts, keys = [], []
        st = self.state
        if self.init_fp not in st.judged and self.init_fp not in self._pending:
            self._pending[self.init_fp] = (programs.text(self.init_program), "", "init")
            texts.append(programs.text(self.init_program))
            keys.append(self.init_fp)
        for _ in range(n * 20):     # bounded: a region of the space may be exhausted
            if len(texts) >= n:
                break
            parent_fp, parent = self._parent()
            child, kind = mutate(parent, st.rng, self.space)
            fp = programs.fingerprint(child)
            st.counters["children"] += 1
            if fp in st.judged:
                st.counters["cache_hits"] += 1
                rec = st.judged[fp]
                self.evolution.add(Individual(rec["text"], fp, rec["fitness"], st.counters["children"]))
                continue
            if fp in self._pending:
                st.counters["cache_hits"] += 1
                continue
            text = programs.text(child)
            self._parsed[fp] = child
            self._pending[fp] = (text, parent_fp, kind)
            texts.append(text)
            keys.append(fp)
        return Job(self._next_id(), "search", texts, keys) if texts else None

    # --- ingesting results ------------------------------------------------------------------------
    def _ingest_search(self, job: Job, results: list[dict]) -> None:
        st = self.state
        ref = self.reference("search")
        for fp, text, res in zip(job.keys, job.texts, results):
            _, parent, kind = self._pending.pop(fp, ("", "", ""))
            fitness, scores = failed_fitness(ref) if res.get("error") else candidate_fitness(res["curves"], ref)
            st.counters["evaluations"] += 1
            # failed: could not run, or diverged at every rate on some task (not merely slow: that scores 1/4)
            st.counters["failures"] += bool(res.get("error")) or None in res["curves"].values()
            self.session_evals += 1
            st.judged[fp] = {"text": text, "fitness": fitness, "scores": scores, "losses": res["losses"],
                             "lrs": res["lrs"],
                             "error": res.get("error"), "order": st.counters["evaluations"],
                             "parent": parent, "mutation": kind}
            bisect.insort(self._sorted, fitness)
            self.evolution.add(Individual(text, fp, fitness, st.counters["children"]))
            self._maybe_funnel(fp, fitness)

    def _maybe_funnel(self, fp: str, fitness: float) -> None:
        f = self.cfg.funnel
        n = len(self._sorted)
        if not f.enabled or fitness >= WORST_FITNESS or n < f.min_judged or fp in self.state.funnel:
            return
        if fp in self._funnel_pending or fp in self._funnel_queue:
            return
        if bisect.bisect_left(self._sorted, fitness) < max(1, f.fraction * n):
            self._funnel_queue.append(fp)

    def _ingest_funnel(self, job: Job, results: list[dict]) -> None:
        ref = self.reference("funnel")
        for fp, res in zip(job.keys, results):
            self._funnel_pending.discard(fp)
            fitness, scores = failed_fitness(ref) if res.get("error") else candidate_fitness(res["curves"], ref)
            self.state.funnel[fp] = {"fitness": fitness, "scores": scores, "losses": res["losses"], "lrs": res["lrs"],
                                     "error": res.get("error")}
            self.state.counters["funnel_evaluations"] += 1

    def _submit_funnel(self) -> None:
        fps = self._funnel_queue[:self.cfg.batch_size]
        del self._funnel_queue[:len(fps)]
        self._funnel_pending.update(fps)
        self.pool.submit(Job(self._next_id(), "funnel", [self.state.judged[fp]["text"] for fp in fps], fps))

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
        return {"evaluations": self.state.counters["evaluations"], "elapsed": self.elapsed(),
                "best": s["best"], "median": s["median"], "diversity": s["diversity"],
                "cache_hit_rate": self.state.cache_hit_rate(),
                "evals_per_s": self.session_evals / dt if dt > 0 else 0.0,
                "best_funnel": best_f[1]["fitness"] if best_f else None,
                "distinct_judged": len(self.state.judged)}

    def checkpoint(self) -> None:
        self.state.population = list(self.evolution.members)
        self.state.elapsed = self.elapsed()
        self.state.counters["worker_restarts"] = self.pool.restarts + self._restarts_before
        self.state.save(self.run_dir)

    def run(self) -> SearchState:
        """Search until the budget is spent, drain the workers, flush the funnel, checkpoint."""
        st = self.state
        self._restarts_before = st.counters.get("worker_restarts", 0)
        if not self.baselines:
            self.compute_baselines()
        # The seconds budget and the throughput cover the search loop, not the one-off baseline tuning.
        self._t0 = time.monotonic() - st.elapsed
        self.session_start = time.monotonic()
        next_ckpt = st.counters["evaluations"] + self.cfg.checkpoint_every
        idle_rounds = 0
        while True:
            spent = self.budget_spent()
            while self.pool.capacity() > 0:
                # Funnel batches go out half full: waiting to fill one would push the funnel (and its
                # compile on the worker that takes it) to the end of the search.
                if len(self._funnel_queue) >= max(1, self.cfg.batch_size // 2) or (spent and self._funnel_queue):
                    self._submit_funnel()
                    continue
                job = None if spent else self._breed(self._room())
                if job is None:
                    break
                self.pool.submit(job)
                spent = self.budget_spent()
            if not self.pool.inflight():
                if spent and not self._funnel_queue:
                    break
                idle_rounds += 1     # only cache hits bred this round; the population still moved
                if idle_rounds > 1000:
                    self.log("search: no new candidates in 1000 rounds (space exhausted); stopping")
                    break
                continue
            idle_rounds = 0
            for job, results in self.pool.wait():
                st.counters["batches"] += 1
                (self._ingest_funnel if job.stage == "funnel" else self._ingest_search)(job, results)
            if st.counters["evaluations"] >= next_ckpt:
                st.history.append(self.stats())
                self.checkpoint()
                next_ckpt = st.counters["evaluations"] + self.cfg.checkpoint_every
            for cb in self.callbacks:
                cb(self)
        st.finished = True
        st.history.append(self.stats())
        self.checkpoint()
        return st
