"""What a finished search leaves behind: the best programs as ``.opt`` and ``.py``, the summary, and
the held-out evaluation of the top programs.

* ``runs/NAME/best/foundK.opt`` — the K-th best program (funnel-judged ones first, by funnel fitness),
  its header comment giving its search and funnel fitness; ``foundK.py`` is ``metaopt.to_source`` of it.
* ``runs/NAME/summary.json`` / ``summary.md`` — counters, throughput, cache hit rate, the best programs
  with fitness (``metaopt.scoring.search_fitness``: 1 / geometric mean of the clipped speedups over tuned
  AdamW, lower is better), tuned SGD's fitness on the same scale for comparison, and what
  made the run (``provenance.json``: commit, package versions, machine, command line).
* ``runs/NAME/polish.json`` — the best program polished (``search.polish``: ablations and roundings kept while
  the funnel fitness stays within 1 %) and its novelty against the library (``search.novelty``: same
  fingerprint, closest rule, re-parameterization); the polished program is ``best/found1_simplified.opt``.
  Written once: a resumed search whose best program did not change reads it back.
* ``runs/NAME/heldout/`` — ``metaopt.evaluate`` (the fair-evaluation protocol: per-task rate tuning on a
  9-point grid, several seeds, speedups over tuned AdamW with bootstrap intervals) of the top programs and SGD on the
  ``heldout`` suite, which the search never saw; its Markdown table is also ``heldout.md``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable, Optional, Sequence

from metaopt.io import atomic_write_json, atomic_write_text
from metaopt.provenance import load_provenance, made_by
from search import programs
from search.fitness import candidate_fitness, references


def reference_fitness(baselines: dict, stage: str, opt: str) -> float:
    """A tuned optax baseline's fitness on the search's scale (AdamW itself is 1.0 by definition)."""
    ref = references(baselines[stage]["adamw"])
    return candidate_fitness({t: r["curves"] for t, r in baselines[stage][opt].items()}, ref)[0]


def export_best(state: Any, run_dir: str, k: int, start_fps: Sequence[str] = ()) -> list[dict]:
    """Write the top ``k`` programs to ``run_dir/best``; returns one record per program. ``start_fps``: the
    search's start programs, which rank beside what it found (the control) and are marked as such."""
    out_dir = os.path.join(run_dir, "best")
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for i, (fp, rec) in enumerate(state.ranked(k), start=1):
        funnel = state.funnel.get(fp)
        origin = ("The search's start program (the control, not found by it), "
                  if fp in start_fps else "Found by metaopt search (regularized evolution), ")
        doc = (f"{origin}rank {i}, fingerprint {fp}.\n"
               f"Search fitness {rec['fitness']:.4f} (1 / geometric mean over the search tasks of the speedup "
               f"over tuned AdamW, each clipped to [1/4, 4]; lower is better)"
               + (f"; funnel fitness {funnel['fitness']:.4f}." if funnel else "; not funnel-judged."))
        program = dataclasses.replace(programs.parse(rec["text"]), name=f"found{i}", doc=doc)
        opt_path = os.path.join(out_dir, f"found{i}.opt")
        atomic_write_text(opt_path, str(program))
        py_path = None
        try:
            from metaopt import to_source
        except ImportError:
            to_source = None
        if to_source is not None:
            py_path = os.path.join(out_dir, f"found{i}.py")
            atomic_write_text(py_path, to_source(program))
        rows.append({"rank": i, "fingerprint": fp, "start": fp in start_fps, "fitness": rec["fitness"],
                     "funnel_fitness": funnel["fitness"] if funnel else None, "lrs": rec["lrs"],
                     "opt": opt_path, "py": py_path, "text": str(program)})
    return rows


def summarize(driver: Any, best: list[dict]) -> dict:
    """The run's figures as JSON-ready data (written to summary.json)."""
    st, b = driver.state, driver.baselines
    s = driver.stats()
    return {
        "counters": dict(st.counters), "cache_hit_rate": st.cache_hit_rate(),
        "elapsed_s": st.elapsed, "evaluations_per_s": s["evals_per_s"],
        "population": {"best": s["best"], "median": s["median"], "diversity": s["diversity"]},
        "baselines": {stage: {"sgd_fitness": reference_fitness(b, stage, "sgd"), "adamw_fitness": 1.0}
                      for stage in b},
        "best": best,
        # the control: each start program's fitness (and funnel fitness, from the selection stage)
        "start": [{"fingerprint": fp, "fitness": st.judged[fp]["fitness"],
                   "funnel_fitness": st.funnel[fp]["fitness"] if fp in st.funnel else None}
                  for fp in driver.init_fps if fp in st.judged],
    }


def summary_markdown(summary: dict, cfg: Any) -> str:
    c = summary["counters"]
    sgd = summary["baselines"]["search"]["sgd_fitness"]
    sgd_f = summary["baselines"].get("funnel", {}).get("sgd_fitness", float("nan"))
    lines = [
        f"# Search summary (init `{cfg.init}`)", "",
        f"- {c['evaluations']} evaluations ({c['funnel_evaluations']} funnel re-judgings) in "
        f"{summary['elapsed_s']:.0f} s: {summary['evaluations_per_s']:.2f} evaluations/s this session",
        f"- {c['children']} children bred, cache hit rate {summary['cache_hit_rate']:.1%}, "
        f"{c['failures']} failed/diverged, {c['worker_restarts']} worker restarts",
        f"- fitness = 1 / geometric mean over the search tasks of the speedup over tuned AdamW (steps AdamW "
        f"needs to reach its median final validation loss / steps this program needs, clipped to [1/4, 4]; "
        f"metaopt/scoring.py): lower is better, AdamW = 1, in [1/4, 4]. "
        f"Tuned SGD: {sgd:.4f} (search), {sgd_f:.4f} (funnel).",
    ]
    lines += _start_lines(summary, cfg)
    lines += ["", "| rank | search fitness | funnel fitness | beats tuned SGD | program |", "|---|---|---|---|---|"]
    for r in summary["best"]:
        f = r["funnel_fitness"] if r["funnel_fitness"] is not None else r["fitness"]
        ref = sgd_f if r["funnel_fitness"] is not None else sgd
        body = "; ".join(line for line in r["text"].splitlines() if not line.startswith("#"))
        fun = f"{r['funnel_fitness']:.4f}" if r["funnel_fitness"] is not None else "-"
        mark = "start program: " if r.get("start") else ""
        lines.append(f"| {r['rank']} | {r['fitness']:.4f} | {fun} | {'yes' if f < ref else 'no'} | {mark}`{body}` |")
    if summary.get("polish"):
        lines += ["", polish_markdown(summary["polish"]).rstrip("\n")]
    if summary.get("provenance"):
        lines += ["", made_by(summary["provenance"], markdown=True).rstrip("\n")]
    return "\n".join(lines) + "\n"


def _start_lines(summary: dict, cfg: Any) -> list[str]:
    """The control line: did the search beat its own start program on the funnel (``validation``)?"""
    start = [s for s in summary.get("start", []) if s.get("funnel_fitness") is not None]
    found = [r for r in summary["best"] if not r.get("start") and r["funnel_fitness"] is not None]
    if not start:
        return []
    ref = min(s["funnel_fitness"] for s in start)
    line = f"- start program (init `{cfg.init}`): funnel fitness {ref:.4f}. "
    if not found:
        return [line + "No found program was funnel-judged."]
    best = found[0]["funnel_fitness"]
    verdict = "better than" if best < ref else "not better than"
    return [line + f"The best found program's funnel fitness, {best:.4f}, is {verdict} its start "
                   f"({ref / best:.3f}x its speed on the funnel tasks)."]


POLISH_FILE = "polish.json"
POLISH_SCORES = "polish_scores.json"     # judged polish candidates (text -> fitness), kept while polishing runs


def polish_best(driver: Any, best: list[dict], log: Callable[[str], None] = print,
                scorer: Optional[Callable] = None, novelty_names: Optional[Sequence[str]] = None,
                novelty_scores: bool = False) -> Optional[dict]:
    """Polish the best program on the funnel stage (the search stage when the funnel is off), check its
    novelty, write ``polish.json`` and ``best/found1_simplified.opt``; read ``polish.json`` back instead when
    it holds this program under the same settings. ``scorer`` (programs -> fitnesses) defaults to
    :class:`search.polish.FunnelScorer`; ``novelty_scores`` also scores the closest library rule with it."""
    from search import novelty, polish
    if not best:
        return None
    if best[0].get("start"):
        log("polish: the best program is the search's start program (nothing found beat it); nothing to polish")
        return None
    cfg, run_dir, row = driver.cfg, driver.run_dir, best[0]
    stage = "funnel" if cfg.funnel.enabled and "funnel" in driver.baselines else "search"
    key = {"fingerprint": row["fingerprint"], "stage": stage, "tolerance": polish.TOLERANCE,
           "reparam_tol": novelty.REPARAM_TOL, "novelty_steps": novelty.STEPS, "novelty_scores": novelty_scores,
           "scorer": "funnel" if scorer is None else getattr(scorer, "__name__", type(scorer).__name__)}
    path, scores_path = os.path.join(run_dir, POLISH_FILE), os.path.join(run_dir, POLISH_SCORES)
    saved = _read_json(path)
    if saved and saved.get("key") == key:
        log(f"polish: {path} already holds the polished best program; not redone")
        return saved
    real = scorer is None
    scorer = polish.FunnelScorer(cfg, driver.baselines, stage) if real else scorer
    confirm = (lambda progs: scorer(progs, seed_offset=polish.CONFIRM_SEED_OFFSET)) if real else None
    old = _read_json(scores_path) or {}
    cache = dict(old.get("scores", {})) if old.get("key") == key else {}
    log(f"polish: simplifying rank 1 ({row['opt']}) on the {stage} stage"
        + (f" ({len(cache)} judged candidates from an interrupted run)" if cache else ""))
    res = polish.polish(programs.parse(row["text"]), scorer, confirm=confirm, cache=cache, log=log,
                        on_scored=lambda c: atomic_write_json(scores_path, {"key": key, "scores": c}),
                        batch=cfg.batch_size)
    nov = novelty.novelty(res.simplified, names=novelty_names, score=scorer if novelty_scores else None, log=log)
    log(f"novelty: {nov.verdict()} ({nov.seconds:.0f} s)")
    doc = (f"found1 of this search, polished by search/polish.py: {len(res.edits)} edit(s) kept, {stage} fitness "
           f"{res.raw_fitness:.4f} -> {res.simplified_fitness:.4f} (lower is better).\nNovelty: {nov.verdict()}")
    simple = dataclasses.replace(res.simplified, name="found1_simplified", doc=doc)
    opt_path = os.path.join(run_dir, "best", "found1_simplified.opt")
    atomic_write_text(opt_path, str(simple))
    out = {"key": key, "stage": stage, "opt": opt_path, "polish": res.to_json(), "novelty": nov.to_json(),
           "scorer": {"calls": getattr(scorer, "calls", None), "programs": getattr(scorer, "judged", None),
                      "seconds": getattr(scorer, "seconds", None)}}
    atomic_write_json(path, _finite(out))
    if os.path.exists(scores_path):
        os.unlink(scores_path)              # polish.json now holds the result
    return out


def polish_markdown(p: dict) -> str:
    """The polish and novelty sections of summary.md."""
    r, n = p["polish"], p["novelty"]
    strip = lambda text: "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    lines = [f"## Best program, polished ({p['stage']} fitness, lower is better; search/polish.py)", "",
             f"Raw: fitness {r['raw_fitness']:.4f}", "", "```", strip(r["raw"]), "```", "",
             f"Simplified: fitness {r['simplified_fitness']:.4f} (`{p['opt']}`)", "", "```", strip(r["simplified"]),
             "```", ""]
    if r["confirm"]:
        c, n_kept = r["confirm"], len(r["edits"])
        held = f"the simplified program is the last within the tolerance there (after edit {n_kept})" if n_kept \
            else "no edit held there, so none is kept"
        lines += [f"Re-judged once with fresh seeds: raw {c[0]:.4f}, after each edit "
                  f"{', '.join(f'{f:.4f}' for f in c[1:])}; {held}.", ""]
    lines.append(f"Edits kept ({len(r['edits'])}; a candidate is kept when its fitness is at most "
                 f"{1 + r['tolerance']:.2f} x the raw program's; {r['rounds']} rounds, {r['scored']} programs "
                 f"judged in {r['calls']} calls, {r['seconds']:.0f} s):")
    lines += [f"{i}. {e['kind']}: {e['description']} (fitness {e['fitness']:.4f})"
              for i, e in enumerate(r["edits"], 1)] or ["- none"]
    if r["undone"]:
        lines += ["", "Kept on the judging seeds, undone by the re-judging:"]
        lines += [f"- {e['kind']}: {e['description']} (fitness {e['fitness']:.4f})" for e in r["undone"]]
    lines += ["", "## Novelty against the library (search/novelty.py)", "", f"- Verdict: {n['verdict']}",
              f"- Fingerprint {n['fingerprint']}; closest library rules by behavioural distance (1 - cosine of the "
              f"updates over the probe trajectories):", "",
              "| library rule | distance at defaults | refitted | refitted hyperparameters | re-parameterization |",
              "|---|---|---|---|---|"]
    refits = {x["name"]: x for x in n["refits"]}
    for name, d in n["ranking"]:
        x = refits.get(name)
        hp = ", ".join(f"{k}={v:.4g}" for k, v in x["hyperparams"].items()) if x else "-"
        lines.append(f"| {name} | {d:.2e} | {x['refit_distance']:.2e} | {hp} | {'yes' if x['match'] else 'no'} |"
                     if x else f"| {name} | {d:.2e} | - | - | - |")
    if n.get("scores"):
        lines += ["", "Fitness on the same stage: " + ", ".join(f"{k} {v:.4f}" for k, v in n["scores"].items())]
    return "\n".join(lines) + "\n"


def heldout_evaluation(cfg: Any, run_dir: str, best: list[dict], address: str | None,
                       log: Callable[[str], None] = print, progress: bool = True) -> str | None:
    """Judge the top programs (and ``heldout.baselines``; AdamW is the reference) on the held-out suite with the
    evaluation protocol. Returns the Markdown table, or None when there is nothing to evaluate."""
    import tasks
    if not cfg.heldout.enabled or not best:
        return None
    if not tasks.SUITES.get(cfg.heldout.suite):
        log(f"held-out evaluation skipped: suite {cfg.heldout.suite!r} has no tasks")
        return None
    from metaopt.evaluate import EvalConfig, evaluate
    paths = [r["opt"] for r in best[:cfg.heldout.top_k]]
    h = cfg.heldout
    ecfg = EvalConfig(optimizers=paths + list(h.baselines), suite=h.suite, tasks=list(h.tasks) or None, steps=h.steps,
                      out=os.path.join(run_dir, "heldout"), address=address, use_ray=cfg.workers > 0,
                      num_cpus=max(cfg.workers, 1))
    log(f"held-out evaluation of the top {len(paths)} program(s) with {', '.join(h.baselines) or 'no baselines'} "
        f"and the reference: the fair protocol (rate tuned per task, several seeds) -> {ecfg.out}")
    result = evaluate(ecfg, log=log, progress=progress)
    atomic_write_text(os.path.join(run_dir, "heldout.md"), result.markdown_table + "\n")
    return result.markdown_table


def finish(driver: Any, address: str | None = None, log: Callable[[str], None] = print, polish: bool = True,
           **polish_options: Any) -> dict:
    """Export, summarize, polish the best program and check its novelty (``polish``; ``polish_options`` go
    to :func:`polish_best`), and (when configured) evaluate on held-out tasks; print the summary."""
    cfg, run_dir = driver.cfg, driver.run_dir
    best = export_best(driver.state, run_dir, cfg.top_programs, driver.init_fps)
    summary = summarize(driver, best)
    summary["provenance"] = load_provenance(run_dir)
    md = summary_markdown(summary, cfg)
    atomic_write_json(os.path.join(run_dir, "summary.json"), _finite(summary))
    atomic_write_text(os.path.join(run_dir, "summary.md"), md)
    log(md)
    if best:
        log(f"best program ({best[0]['opt']}):\n{best[0]['text']}")
    # After the summary is on disk, so a failure while polishing loses none of the search's results.
    polished = polish_best(driver, best, log, **polish_options) if polish else None
    if polished:
        summary["polish"] = polished
        atomic_write_json(os.path.join(run_dir, "summary.json"), _finite(summary))
        atomic_write_text(os.path.join(run_dir, "summary.md"), summary_markdown(summary, cfg))
        log(polish_markdown(polished))
    table = heldout_evaluation(cfg, run_dir, best, address, log, progress=driver.progress)
    if table:
        log("held-out evaluation (metaopt.evaluate protocol):\n" + table)
        summary["heldout_table"] = table
        atomic_write_json(os.path.join(run_dir, "summary.json"), _finite(summary))
    return summary


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)


def _finite(x: Any) -> Any:
    """NaN/Inf -> None, recursively (strict JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
