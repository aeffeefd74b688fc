"""``metaopt distill``'s phases, each resumable from the files it leaves in the run directory.

1. **record** the teacher on the train tasks (``search.tasks``) and on the validation tasks (``search.funnel``,
   with the funnel's other seeds): ``recording/train.npz``, ``recording/validation.npz``. A recording already
   there is reused when its header is the one this run would write (:func:`record.record_or_reuse`).
2. **seed**: the library rules the interpreter holds, ranked by imitation error on the train recording
   (``seeds.json``); the ``seeds.count`` closest join ``cfg.search.init`` as the initial programs.
3. **search**: :class:`search.driver.SearchDriver` with the distillation judge and fitness
   (:mod:`metaopt.distill.evolve`): its own checkpoints (``state.json``), baselines, funnel on the validation
   suite and TensorBoard scalars (``tb/``).
4. **refit** the constants of the ``refit.top_k`` best programs on the train recording
   (:func:`metaopt.distill.refit.refit`, the fitness's objective): ``refit.json``, written after each program.
5. **select**: the refitted programs are judged on the search stage and on the validation stage like every
   candidate; of the search's validation-judged best and their refits, the lowest validation fitness is the
   distilled program (``selection.json``). Held-out tasks are never read here.

:mod:`metaopt.distill.report` then writes the program and the report.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, Optional

from metaopt.distill import refit as refit_mod
from metaopt.distill.evolve import DistillFitness, closest_rules, judge_factory, seed_programs
from metaopt.distill.record import record_or_reuse
from metaopt.distill.store import Recording
from metaopt.io import atomic_write_json
from metaopt.progress import Ticker, progress_bar
from search import programs
from search.report import _read_json

RECORDINGS = {"search": os.path.join("recording", "train.npz"), "funnel": os.path.join("recording", "validation.npz")}
SEEDS_FILE, REFIT_FILE, SELECTION_FILE = "seeds.json", "refit.json", "selection.json"


class Distillation:
    """One run: ``Distillation(cfg, teacher, run_dir).run()`` (resumes whatever the directory holds)."""

    def __init__(self, cfg: Any, teacher: str, run_dir: str, *, progress: bool = True,
                 address: Optional[str] = None, log: Callable[[str], None] = print):
        from search.driver import SearchDriver
        self.cfg, self.teacher, self.run_dir, self.progress, self.log = cfg, teacher, run_dir, progress, log
        # Absolute: Ray workers open them (on a cluster, the run directory must be on a shared filesystem).
        self.paths = {stage: os.path.abspath(os.path.join(run_dir, p)) for stage, p in RECORDINGS.items()}
        f = cfg.fitness
        self.fitness = DistillFitness(f.imitation, f.task, f.objective)
        # The driver first: it starts the Ray workers before JAX starts threads here, and writes provenance.json.
        self.driver = SearchDriver(cfg.search, run_dir, address=address, log=log, progress=progress,
                                   judge=judge_factory(self.paths, train=f.task > 0), fitness=self.fitness)
        self.recordings: dict[str, Recording] = {}
        self._writer = None

    @property
    def writer(self):
        """TensorBoard (``run_dir/tb``, tensorboardX as the search's Monitor)."""
        if self._writer is None:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(os.path.join(self.run_dir, "tb"))
        return self._writer

    def close(self) -> None:
        self.driver.pool.shutdown()
        if self._writer is not None:
            self._writer.close()

    # --- 1. record ------------------------------------------------------------------------------------
    def record(self) -> dict[str, Recording]:
        from search.judge import stage_specs
        s, r = self.cfg.search, self.cfg.record
        specs = stage_specs(s)
        plan = {"search": (specs["search"].tasks, s.tasks.steps, s.seed),
                "funnel": (specs["funnel"].tasks, s.funnel.steps, s.seed + s.funnel.seed_offset)}
        total = sum(len(t) for t, _, _ in plan.values()) * r.seeds
        bar = progress_bar(total, "record", unit="run", enabled=self.progress, postfix=f"teacher {self.teacher}")
        t0 = time.monotonic()
        try:
            with Ticker(bar):
                for stage, (names, steps, seed) in plan.items():
                    rec, reused = record_or_reuse(
                        self.paths[stage], self.teacher, list(names), steps, seed, n_seeds=r.seeds,
                        per_tensor=r.per_tensor, every=r.every, learning_rate=r.learning_rate,
                        progress=lambda task, sd: bar.update(1))
                    if reused:
                        bar.update(len(names) * r.seeds)
                        self.log(f"distill: reusing {self.paths[stage]} (same teacher, tasks and settings)")
                    self.recordings[stage] = rec
        finally:
            bar.close()
        self.writer.add_scalar("distill/record_seconds", time.monotonic() - t0, 0)
        return self.recordings

    # --- 2. seed --------------------------------------------------------------------------------------
    def seed(self) -> list[dict]:
        c, rec = self.cfg, self.recordings["search"]
        key = {"recording": rec.header, "candidates": list(c.seeds.candidates), "max_len": c.search.max_len,
               "n_registers": c.search.n_registers, "objective": c.fitness.objective}
        path = os.path.join(self.run_dir, SEEDS_FILE)
        saved = _read_json(path)
        if saved and saved.get("key") == json.loads(json.dumps(key)):
            rows = saved["rows"]
        else:
            bar = progress_bar(1, "seed", unit="table", enabled=self.progress,
                               postfix="imitation of the library rules the interpreter holds")
            with Ticker(bar):
                rows = closest_rules(rec, c.search, c.seeds.candidates, c.fitness.objective)
            bar.update(1)
            bar.close()
            atomic_write_json(path, {"key": key, "rows": rows})
        seeds = seed_programs(rows, c.seeds.count)
        for i, row in enumerate(r for r in rows if r["fits"]):
            self.writer.add_scalar("seeds/imitation_by_rank", row[c.fitness.objective], i)
        shown = [r for r in rows if r["fits"]][:c.seeds.count]
        self.log(f"distill: initial programs (the closest library rules by {c.fitness.objective} error): "
                 + ", ".join(f"{r['name']} {r[c.fitness.objective]:.4f}" for r in shown))
        self.driver.add_initial(seeds)
        return rows

    # --- 3. search ------------------------------------------------------------------------------------
    def search(self) -> None:
        from search.monitor import Monitor
        d = self.driver
        if self.fitness.needs_baselines:
            d.compute_baselines()
        monitor = Monitor(self.run_dir, self.cfg.search, progress=self.progress)
        d.callbacks = (monitor, self._scalars)
        try:
            d.run()
        finally:
            monitor.close()

    def _scalars(self, driver: Any) -> None:
        """The imitation error and task fitness of the population's best, beside the Monitor's fitness."""
        if not len(driver.evolution):
            return
        scores = driver.state.judged.get(driver.evolution.best().fingerprint, {}).get("scores") or {}
        step = driver.state.counters["evaluations"]
        for tag, k in (("distill/best_imitation", "imitation"), ("distill/best_task_fitness", "task_fitness")):
            if scores.get(k) is not None:
                self.writer.add_scalar(tag, scores[k], step)

    # --- 4. refit -------------------------------------------------------------------------------------
    def refit(self) -> dict[str, dict]:
        c = self.cfg
        top = self.driver.state.ranked(c.refit.top_k)
        key = {"recording": self.recordings["search"].header, "iters": c.refit.iters,
               "learning_rate": c.refit.learning_rate, "objective": c.fitness.objective}
        path = os.path.join(self.run_dir, REFIT_FILE)
        saved = _read_json(path)
        done = saved["done"] if saved and saved.get("key") == json.loads(json.dumps(key)) else {}
        bar = progress_bar(len(top), "refit", unit="program", enabled=self.progress, initial=0)
        try:
            with Ticker(bar):
                for rank, (fp, rec) in enumerate(top, 1):
                    if fp not in done:
                        done[fp] = self._refit_one(rec["text"])
                        atomic_write_json(path, {"key": key, "done": done})
                    r = done[fp]
                    if r.get("after") is not None:
                        self.writer.add_scalar("refit/before", r["before"], rank)
                        self.writer.add_scalar("refit/after", r["after"], rank)
                        bar.set_postfix_str(f"rank {rank}: {r['before']:.4f} -> {r['after']:.4f}", refresh=False)
                    bar.update(1)
        finally:
            bar.close()
        return {fp: done[fp] for fp, _ in top}

    def _refit_one(self, text: str) -> dict:
        c = self.cfg.refit
        try:
            res = refit_mod.refit(programs.parse(text), self.recordings["search"], iters=c.iters,
                                  learning_rate=c.learning_rate, objective=self.cfg.fitness.objective)
        except (ValueError, TypeError, NotImplementedError) as e:      # a program to_optax cannot compile
            return {"text": None, "error": f"{type(e).__name__}: {e}", "before": None, "after": None}
        return {"text": programs.text(res.program), "error": None, "before": res.before, "after": res.after,
                "values": {k: list(v) for k, v in res.values.items()}, "seconds": res.seconds,
                "skipped": res.skipped}

    # --- 5. select ------------------------------------------------------------------------------------
    def select(self, refits: dict[str, dict]) -> dict:
        """Rows (the search's validation-judged best, then each refit that changed its program), each with
        its train (search stage) and validation (funnel stage) fitness and scores; ``chosen``: the index of
        the lowest validation fitness (ties: the earlier row)."""
        st = self.driver.state
        rows = [{"fingerprint": fp, "text": rec["text"], "origin": f"search rank {i}",
                 "train": {"fitness": rec["fitness"], "scores": rec["scores"]},
                 "validation": {"fitness": st.funnel[fp]["fitness"], "scores": st.funnel[fp]["scores"]}}
                for i, (fp, rec) in enumerate(st.ranked(self.cfg.search.top_programs), 1)]
        if not rows:
            raise RuntimeError("distill: the search judged no program on the validation stage (every candidate "
                               "failed?); see state.json")
        known = {r["fingerprint"] for r in rows}
        new = []
        for src, r in refits.items():
            if r.get("text"):
                fp = programs.fingerprint(programs.parse(r["text"]))
                if fp not in known:
                    known.add(fp)
                    new.append({"fingerprint": fp, "text": r["text"], "origin": f"refit of {src}"})
        path = os.path.join(self.run_dir, SELECTION_FILE)
        saved = _read_json(path)
        if saved and [r["fingerprint"] for r in saved["rows"]] == [r["fingerprint"] for r in rows + new]:
            return saved
        if new:
            bar = progress_bar(2 * len(new), "select", unit="judging", enabled=self.progress,
                               postfix="refitted programs on the train and validation stages")
            try:
                with Ticker(bar):
                    for stage, name in (("search", "train"), ("funnel", "validation")):
                        judged = self.driver.judge(stage, [r["text"] for r in new])
                        for row, (fitness, scores, _) in zip(new, judged):
                            row[name] = {"fitness": fitness, "scores": scores}
                        bar.update(len(new))
            finally:
                bar.close()
        rows += new
        chosen = min(range(len(rows)), key=lambda i: (rows[i]["validation"]["fitness"], i))
        for i, row in enumerate(rows):
            self.writer.add_scalar("select/validation_fitness", row["validation"]["fitness"], i)
        out = {"rows": rows, "chosen": chosen}
        atomic_write_json(path, out)
        return out

    def run(self) -> dict:
        """Phases 1-5; returns :meth:`select`'s result (the caller writes the report)."""
        self.record()
        self.seed()
        self.search()
        return self.select(self.refit())
