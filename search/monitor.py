"""Live views of a running search: TensorBoard scalars (tensorboardX) and a tqdm progress bar.

Both are driver callbacks (``SearchDriver(callbacks=(monitor,))``) run after every returned batch.
TensorBoard (``runs/NAME/tb``), step = evaluations so far:

* ``fitness/best``, ``fitness/median`` — of the current population (``scoring.search_fitness``, lower is better)
* ``fitness/best_funnel`` — the best re-judged (funnel) fitness: what would be reported now
* ``throughput/evaluations_per_s``, ``cache/hit_rate``, ``population/diversity`` (distinct fingerprints
  ÷ population size), ``population/distinct_judged``
* text ``best_program`` whenever the population's best changes.
"""
from __future__ import annotations

import os
from typing import Any


def _num(x: Any) -> str:
    """A fitness for the bar; None (nothing judged yet, e.g. the first batch was lost) as '-'."""
    return "-" if x is None else f"{x:.3f}"


class Monitor:
    """TensorBoard + progress bar; ``close()`` when the search ends."""

    def __init__(self, run_dir: str, cfg: Any, progress: bool = True, tensorboard: bool = True):
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(os.path.join(run_dir, "tb"))
        self._bar = self._ticker = None
        self._by_evals = cfg.budget.evaluations is not None
        self._seconds = cfg.budget.seconds
        if progress:
            from metaopt.progress import Ticker, progress_bar
            total = cfg.budget.evaluations if self._by_evals else int(cfg.budget.seconds)
            # Until the first batch returns, every worker compiles its trainers: say so, and keep the
            # clock moving (the ticker), rather than sit at 0 with a frozen time.
            self._bar = progress_bar(total, "search", unit="eval" if self._by_evals else "s",
                                     postfix="first batches: workers compile the trainer per task")
            self._ticker = Ticker(self._bar)
        self._last_best_text = None

    def __call__(self, driver: Any) -> None:
        s = driver.stats()
        step = int(s["evaluations"])
        if self._writer is not None:
            w = self._writer
            for tag, key in (("fitness/best", "best"), ("fitness/median", "median"),
                             ("fitness/best_funnel", "best_funnel"),
                             ("throughput/evaluations_per_s", "evals_per_s"),
                             ("cache/hit_rate", "cache_hit_rate"), ("population/diversity", "diversity"),
                             ("population/distinct_judged", "distinct_judged")):
                if s.get(key) is not None:
                    w.add_scalar(tag, float(s[key]), step)
            if len(driver.evolution):
                best = driver.evolution.best()
                if best.text != self._last_best_text:
                    self._last_best_text = best.text
                    w.add_text("best_program", f"fitness {best.fitness:.4f}\n\n    "
                               + best.text.replace("\n", "\n    "), step)
        if self._bar is not None:
            now = step if self._by_evals else int(s["elapsed"])
            self._bar.n = min(now, self._bar.total)
            fb = s.get("best_funnel")
            # Both budgets set: the bar counts evaluations, the postfix shows the clock, whichever ends it.
            clock = f" {s['elapsed']:.0f}/{self._seconds:.0f}s" if self._by_evals and self._seconds else ""
            backlog = driver.funnel_backlog()
            self._bar.set_postfix_str(
                f"best {_num(s['best'])} med {_num(s['median'])} funnel {_num(fb)} "
                f"hit {s['cache_hit_rate']:.0%} {s['evals_per_s']:.1f}/s{clock}"
                + (f" funnel queue {backlog}" if backlog else ""))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._ticker is not None:
            self._ticker.stop()
        if self._bar is not None:
            self._bar.close()
