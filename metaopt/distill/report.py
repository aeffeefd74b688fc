"""What ``metaopt distill`` leaves behind: the distilled program and its report.

* ``distilled.opt`` (DSL), ``distilled.tex`` (:func:`metaopt.to_latex`), ``distilled.py`` (:func:`metaopt.to_source`).
* ``report.json`` / ``report.md``: the program in text and LaTeX; the selection table (train and validation
  fitness, imitation error, task fitness of each finalist); imitation errors (1 - cos, scaled NMSE) of the
  distilled program, its pre-refit source, the closest library rule, ``sgd`` and ``adam`` on both recordings;
  and the fidelity per feature regime: R^2 of the update (``fit.regime_r2``, both sides divided by the
  teacher's RMS update of that tensor at that step, the program's update at its best single scale) in bins of

  - ``|g| / sqrt(v̂)``, v̂ the bias-corrected EMA of g^2 at β = 0.999: [0, 0.5), [0.5, 1), [1, 2), [2, inf)
    (small: a gradient below its running RMS; large: a spike);
  - the sign agreement of g with its EMA at β = 0.9 (momentum agrees / disagrees);
  - the training phase t/T: [0, 0.1), [0.1, 0.5), [0.5, 1].
* With ``--heldout``: ``metaopt.evaluate`` (``heldout/``) of the teacher, the distilled program and tuned Adam
  (tuned AdamW, the reference, beside them), with each one's step time and optimizer-state bytes per parameter
  (:func:`optimizer_cost`).
"""
from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from typing import Any, Optional

from metaopt.distill import fit
from metaopt.io import atomic_write_json, atomic_write_text
from metaopt.provenance import load_provenance, made_by
from search import programs
from search.report import _finite, _read_json       # one strict-JSON cleaner and reader for run directories

COMPARED = ("sgd", "adam")       # library rules every report lists beside the distilled program
STAGE_NAMES = {"search": "train", "funnel": "validation"}


def _f(x: Any, digits: int = 4) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def write_program(run_dir: str, text: str, teacher: str, row: dict) -> tuple[Any, dict]:
    """The distilled program (named ``distilled``, its origin and scores in its doc) and the paths written."""
    from metaopt import to_latex, to_source
    v, t = row["validation"], row["train"]
    doc = (f"Distilled from {teacher} by metaopt distill ({row['origin']}). Validation fitness {_f(v['fitness'])}, "
           f"train fitness {_f(t['fitness'])} (metaopt.scoring.distill_fitness, lower is better); train imitation "
           f"error {_f(t['scores'].get('imitation'))}.")
    prog = dataclasses.replace(programs.parse(text), name="distilled", doc=doc)
    paths = {k: os.path.join(run_dir, f"distilled.{k}") for k in ("opt", "tex", "py")}
    latex = to_latex(prog)
    atomic_write_text(paths["opt"], str(prog))
    atomic_write_text(paths["tex"], latex + "\n")
    atomic_write_text(paths["py"], to_source(prog))
    return prog, {**paths, "latex": latex}


def imitation_tables(named: dict[str, Any], recordings: dict[str, Any]) -> dict:
    """``{stage: {name: {cos, nmse, r2, engine, error}}}`` of each program on each recording."""
    out = {}
    for stage, rec in recordings.items():
        res = fit.imitation(list(named.values()), rec, regimes=True)
        out[STAGE_NAMES[stage]] = {n: {"cos": r.cos_error, "nmse": r.nmse, "r2": r.r2, "engine": r.engine,
                                       "error": r.error} for n, r in zip(named, res)}
    return out


def build(dist: Any, selection: dict) -> dict:
    """Write the program files and ``report.json``/``report.md``; returns the report."""
    cfg, run_dir, st = dist.cfg, dist.run_dir, dist.driver.state
    row = selection["rows"][selection["chosen"]]
    prog, paths = write_program(run_dir, row["text"], dist.teacher, row)
    seeds = (_read_json(os.path.join(run_dir, "seeds.json")) or {}).get("rows", [])
    named = {"distilled": prog}
    if row["origin"].startswith("refit of "):
        named["before refit"] = programs.parse(st.judged[row["origin"][len("refit of "):]]["text"])
    closest = next((r["name"] for r in seeds if r["fits"]), None)
    from metaopt import library
    for name in ([closest] if closest else []) + list(COMPARED):
        if name not in named:
            named[name] = library.get(name)
    imitation = imitation_tables(named, dist.recordings)
    refits = _read_json(os.path.join(run_dir, "refit.json")) or {}
    report = {
        "teacher": dist.teacher, "program": {"text": str(prog), "latex": paths["latex"], "origin": row["origin"],
                                             "files": {k: paths[k] for k in ("opt", "tex", "py")}},
        "fitness": {"formula": "metaopt.scoring.distill_fitness", "imitation_weight": cfg.fitness.imitation,
                    "task_weight": cfg.fitness.task, "objective": cfg.fitness.objective},
        "selection": selection, "imitation": imitation, "seeds": seeds[:10],
        "refit": refits.get("done", {}),
        "search": {"counters": dict(st.counters), "elapsed_s": st.elapsed, "cache_hit_rate": st.cache_hit_rate()},
        "recordings": {STAGE_NAMES[s]: {"tasks": r.header["tasks"], "steps": r.header["steps"],
                                        "seeds": r.header["seeds"]} for s, r in dist.recordings.items()},
        "provenance": load_provenance(run_dir),
    }
    return save(run_dir, report)


def save(run_dir: str, report: dict) -> dict:
    atomic_write_json(os.path.join(run_dir, "report.json"), _finite(report))
    atomic_write_text(os.path.join(run_dir, "report.md"), markdown(report))
    return report


def markdown(rep: dict) -> str:
    p, sel = rep["program"], rep["selection"]
    body = "\n".join(line for line in p["text"].splitlines() if not line.startswith("#"))
    fw = rep["fitness"]
    lines = [f"# Distillation of `{rep['teacher']}`", "", f"Distilled program ({p['origin']}; `{p['files']['opt']}`):",
             "", "```", body, "```", "", "$$", p["latex"], "$$", "",
             f"Fitness: `metaopt.scoring.distill_fitness` (lower is better, in [0, 4]) with imitation weight "
             f"{fw['imitation_weight']:g} ({fw['objective']} error) and task weight {fw['task_weight']:g} (1 / geomean "
             f"speedup over tuned AdamW). Recorded: "
             + "; ".join(f"{k} {', '.join(v['tasks'])} (steps {v['steps']}, seeds {v['seeds']})"
                         for k, v in rep["recordings"].items()) + ".", "",
             "## Selection (validation suite)", "",
             "| | origin | train fitness | train imitation | train task | validation fitness | validation imitation "
             "| validation task |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(sel["rows"]):
        t, v = r["train"], r["validation"]
        lines.append(f"| {'**chosen**' if i == sel['chosen'] else ''} | {r['origin']} | {_f(t['fitness'])} | "
                     f"{_f(t['scores'].get('imitation'))} | {_f(t['scores'].get('task_fitness'))} | {_f(v['fitness'])} | "
                     f"{_f(v['scores'].get('imitation'))} | {_f(v['scores'].get('task_fitness'))} |")
    im = rep["imitation"]
    stages = list(im)
    lines += ["", "## Imitation of the teacher's updates", "",
              "| program | " + " | ".join(f"{s} 1 - cos | {s} scaled NMSE" for s in stages) + " |",
              "|---|" + "---|---|" * len(stages)]
    for name in im[stages[0]]:
        lines.append(f"| {name} | " + " | ".join(f"{_f(im[s][name]['cos'])} | {_f(im[s][name]['nmse'])}"
                                                  for s in stages) + " |")
    cols = [(s, "distilled") for s in stages] + [(stages[-1], n) for n in im[stages[-1]] if n in COMPARED]
    lines += ["", "## Fidelity per feature regime: R^2 of the update", "",
              "Both sides divided by the teacher's RMS update of that tensor at that step; the program's update at "
              "its best single scale (docs/distillation.md). Fraction: share of the validation recording's "
              "elements in the bin.", "",
              "| regime | bin | fraction | " + " | ".join(f"{n} ({s})" for s, n in cols) + " |",
              "|---|---|---|" + "---|" * len(cols)]
    ref = im[stages[-1]]["distilled"]["r2"] or {}
    for regime, bins in ref.items():
        for label, cell in bins.items():
            vals = [((im[s][n]["r2"] or {}).get(regime, {}).get(label) or {}).get("r2") for s, n in cols]
            cells = [regime.replace("|", "\\|"), label, f"{cell['fraction']:.3f}"] + [_f(x, 3) for x in vals]
            lines.append("| " + " | ".join(cells) + " |")     # |g| in a regime's name must not split the cell
    if rep.get("refit"):
        lines += ["", "## Constant refit (train recording)", ""]
        for src, r in rep["refit"].items():
            lines.append(f"- {src}: " + (f"{_f(r['before'])} -> {_f(r['after'])}"
                                         if r.get("after") is not None else f"not refit ({r.get('error')})"))
    c = rep["search"]["counters"]
    lines += ["", f"Search: {c['evaluations']} evaluations ({c['funnel_evaluations']} on the validation stage), "
              f"{rep['search']['cache_hit_rate']:.0%} cache hits, {rep['search']['elapsed_s']:.0f} s. Closest library "
              "rules at the start: " + ", ".join(f"{r['name']} {_f(r['cos'])}" for r in rep["seeds"][:5] if r["fits"])
              + "."]
    if rep.get("heldout"):
        lines += ["", heldout_markdown(rep["heldout"]).rstrip("\n")]
    if rep.get("provenance"):
        lines += ["", made_by(rep["provenance"], markdown=True).rstrip("\n")]
    return "\n".join(lines) + "\n"


# --- held-out rows ------------------------------------------------------------------------------------
def optimizer_cost(spec: str, task_name: str, repeats: int = 5, inner: int = 5) -> dict:
    """Step time (one jitted minibatch forward + backward + update, median of ``repeats`` x ``inner``) and
    optimizer-state bytes per parameter of ``spec`` on ``task_name`` at its default rate. A learned optimizer's
    meta-parameters are shared by every parameter, so they are not state."""
    import jax
    import optax

    import tasks as task_registry
    from metaopt.specs import resolve
    from metaopt.train import resolve_optimizer
    s, task = resolve(spec), task_registry.get(task_name)
    inst = task.for_run(jax.random.PRNGKey(0))
    params = inst.init(jax.random.PRNGKey(1))
    opt = resolve_optimizer(s.factory, s.default_lr, task.io_paths)
    state = opt.init(params)
    batch = inst.batch(jax.random.PRNGKey(2), "train")

    @jax.jit
    def step(params, state):
        loss, grads = jax.value_and_grad(inst.loss)(params, batch)
        upd, state = opt.update(grads, state, params, value=loss)
        return optax.apply_updates(params, upd), state

    jax.block_until_ready(step(params, state))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p, o = params, state
        for _ in range(inner):
            p, o = step(p, o)
        jax.block_until_ready(p)
        times.append((time.perf_counter() - t0) / inner)
    n = sum(x.size for x in jax.tree.leaves(params))
    nbytes = sum(getattr(x, "nbytes", 0) for x in jax.tree.leaves(state))
    return {"task": task_name, "step_ms": 1e3 * statistics.median(times), "state_bytes_per_param": nbytes / n,
            "params": int(n)}


def heldout(dist: Any, report: dict, address: Optional[str] = None) -> dict:
    """``metaopt.evaluate`` of the teacher, the distilled program and ``heldout.baselines`` on the held-out
    tasks (``run_dir/heldout``), with :func:`optimizer_cost` on each of them; added to the report."""
    from metaopt.evaluate import EvalConfig, evaluate
    cfg, h = dist.cfg, dist.cfg.heldout
    # The search's actors hold every Ray CPU: while they live, the evaluation's tasks never get scheduled.
    dist.driver.pool.shutdown()
    rows = [dist.teacher, report["program"]["files"]["opt"], *h.baselines]
    ecfg = EvalConfig(optimizers=rows, suite=h.suite, tasks=list(h.tasks) or None, steps=h.steps, seeds=h.seeds,
                      out=os.path.join(dist.run_dir, "heldout"), address=address, use_ray=cfg.search.workers > 0,
                      num_cpus=max(cfg.search.workers, 1))
    dist.log(f"distill: held-out evaluation of {', '.join(rows)} (and the reference) -> {ecfg.out}")
    result = evaluate(ecfg, log=dist.log, progress=dist.progress)
    costs = {spec: [optimizer_cost(spec, t) for t in result.tasks] for spec in rows + [result.aggregate["reference"]]}
    summary = result.aggregate["summary"]
    report["heldout"] = {"table": result.markdown_table, "tasks": result.tasks, "reference": result.aggregate["reference"],
                         "rows": [{"optimizer": o, "score": summary.get(o, {}).get("score"),
                                   "score_ci": summary.get(o, {}).get("score_ci"),
                                   "loss_ratio": summary.get(o, {}).get("loss_ratio"),
                                   "step_ms": statistics.median(c["step_ms"] for c in costs[o]),
                                   "state_bytes_per_param": statistics.median(c["state_bytes_per_param"] for c in costs[o]),
                                   "costs": costs[o]} for o in costs]}
    return save(dist.run_dir, report)


def heldout_markdown(h: dict) -> str:
    lines = ["## Held-out tasks (metaopt.evaluate)", "",
             f"Tasks: {', '.join(h['tasks'])}. Speedup over tuned {h['reference']} (geometric mean, 90% interval); "
             "step time and optimizer-state bytes per parameter: medians over the tasks.", "",
             "| optimizer | speedup | interval | loss ratio | step ms | state bytes / param |", "|---|---|---|---|---|---|"]
    for r in h["rows"]:
        ci = r["score_ci"]
        lines.append(f"| {r['optimizer']} | {_f(r['score'], 3)} | "
                     + (f"[{_f(ci[0], 3)}, {_f(ci[1], 3)}]" if ci else "-")
                     + f" | {_f(r['loss_ratio'], 3)} | {_f(r['step_ms'], 3)} | {_f(r['state_bytes_per_param'], 1)} |")
    return "\n".join(lines + ["", h["table"]]) + "\n"
