"""library_table: check every library program against its outside reference and write docs/library.md.

Runs every case of the four reference suites -- the cases live in the tests, this script only measures them:

* tests/test_library_optax.py: optax / optax.contrib, 100 open-loop steps, float32, trajectory.rel_err
  (per element, every step, |b| floored at 0.1);
* tests/test_library_paper.py, tests/test_library_paper_more.py and tests/test_library_matrix.py: optax / the
  paper's equations written in the test, 100 closed-loop steps on a noisy quadratic, float32,
  quadratic_tree.rel_err (final parameters, per leaf max |a - b| / max |b|);
* tests/test_library_torch_ref.py: pytorch_optimizer (or torch.optim) run through torch, 100 steps, float64 on
  both sides, trajectory.rel_err;
* tests/test_library_noise.py and tests/test_library_objective.py: programs reading the random input noise or
  evaluating the objective (h, grad_at), against the paper's equations (with the same draws), optax.contrib or
  pytorch_optimizer, each with its suite's metric (``suite_cases()``).

A program reached only as another's fallback (e.g. adamp_conv) is verified by that program's cases. The table
(docs/library.md) and its data (docs/library.json, read by ``metaopt list --verified``) say per program which
reference, which versions and the worst relative error measured; then the seed catalog's rows no program
covers, with the reason (benchmarks/library_catalog.py). Exit status 1 when a case exceeds its tolerance or a
program has no reference at all.

    .venv/bin/python -m benchmarks.library_table [--only NAME ... | --update] [--out docs]

``--update`` re-measures only new or edited programs (minutes instead of a quarter of an hour) and merges them
into the committed table; run it in full after a version change (it refuses to mix environments).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))   # the suites import their helpers (trajectory, quadratic_tree) by name

from benchmarks import library_catalog as catalog   # noqa: E402
from metaopt import library                        # noqa: E402


@dataclass
class Case:
    case: str
    program: str
    suite: str
    reference: str
    precision: str
    tol: float
    run: Callable[[], float]


def optax_call(program: str) -> str:
    """The optax call the program's header names after 'Reference:' (parentheses balanced), e.g.
    ``optax.chain(optax.clip(c), optax.sgd(lr))``."""
    doc = " ".join(line.strip() for line in library.doc(program).splitlines())
    text = doc[doc.find("Reference"):] if "Reference" in doc else doc
    i = text.find("optax.")
    if i < 0:
        return "optax"
    j = i
    while j < len(text) and (text[j].isalnum() or text[j] in "._"):
        j += 1
    if j < len(text) and text[j] == "(":
        depth = 0
        for k in range(j, len(text)):
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            if depth == 0:
                return text[i:k + 1]
    return text[i:j].rstrip(".")


def _optax_suite() -> Iterator[Case]:
    import test_library_optax as T
    label = f"optax {version('optax')}"
    for cid, name, lr, hps, ref, with_value in T.CASES + T.MORE_CASES + T.CLIP_CASES:
        yield Case(cid, name, "tests/test_library_optax.py", f"{label} {optax_call(name)}", "float32", T.TOL,
                   lambda name=name, lr=lr, hps=hps, ref=ref, wv=with_value:
                   T.compare(library.get(name), lr, hps, ref, wv))


def _paper_suite() -> Iterator[Case]:
    import test_library_paper as T
    import test_library_paper_more as T2   # same protocol and run helpers (it imports them from T)
    from quadratic_tree import rel_err
    suite = "tests/test_library_paper.py"
    readers = T.LOSS_READERS | T.MORE_LOSS_READERS | T2.LOSS_READERS

    def run(name, lr, kind, ref, hp):
        value = name in readers
        if kind == "optax":
            want = T.run_optax(ref, value=value)
        else:
            want = (T.run_ref_value if value else T.run_ref)(ref, lr)
        return rel_err(T.run_optax(T.to_optax(library.get(name), learning_rate=lr, **hp), value=value), want)

    for cid, (name, lr, kind, ref, hp) in {**T.CASES, **T.MORE_CASES}.items():
        label = f"optax {version('optax')} {optax_call(name)}" if kind == "optax" else f"equations in {suite}"
        yield Case(cid, name, suite, label, "float32", T.TOL, lambda a=(name, lr, kind, ref, hp): run(*a))
    suite2 = "tests/test_library_paper_more.py"
    for cid, (name, lr, kind, ref, hp) in T2.CASES.items():
        label = f"optax {version('optax')} {optax_call(name)}" if kind == "optax" else f"equations in {suite2}"
        yield Case(cid, name, suite2, label, "float32", T.TOL, lambda a=(name, lr, kind, ref, hp): run(*a))


def _matrix_suite() -> Iterator[Case]:
    import test_library_matrix as T
    from quadratic_tree import rel_err
    suite = "tests/test_library_matrix.py"
    for cid, (name, lr, ref, hp) in T.CASES.items():
        yield Case(cid, name, suite, f"equations in {suite}", "float32", T.TOL,
                   lambda name=name, lr=lr, ref=ref, hp=hp: rel_err(
                       T.run_optax(T.to_optax(library.get(name), learning_rate=lr, **hp)), T.run_ref(*ref(**hp), lr)))


def _torch_suite() -> Iterator[Case]:
    import test_library_torch_ref as T
    for cid, name, _, _, cls, _, opts in T.CASES:
        yield Case(cid, name, "tests/test_library_torch_ref.py", T.reference_label(cls), "float64",
                   opts.get("tol", T.TOL), lambda cid=cid: T.measure(cid))


def _inputs_suite() -> Iterator[Case]:
    import test_library_noise
    import test_library_objective
    for T, suite in ((test_library_noise, "tests/test_library_noise.py"),
                     (test_library_objective, "tests/test_library_objective.py")):
        for cid, name, ref, precision, tol, run in T.suite_cases():
            if ref.startswith("torch:"):
                import test_library_torch_ref
                label = test_library_torch_ref.reference_label(ref.split(":", 1)[1])
            elif ref == "optax":
                label = f"optax {version('optax')} {optax_call(name)}"
            else:
                label = f"equations in {suite}"
            yield Case(cid, name, suite, label, precision, tol, run)


def all_cases() -> list[Case]:
    return [c for suite in (_optax_suite, _paper_suite, _matrix_suite, _torch_suite, _inputs_suite)
            for c in suite()]


def source_digest(name: str) -> str:
    """sha256 of the program's file (``metaopt list --verified`` flags programs edited since the run)."""
    import hashlib
    return hashlib.sha256(library.source(name).encode()).hexdigest()


def fallbacks(name: str) -> list[str]:
    """The programs ``name`` hands leaves to, transitively."""
    out, p = [], library.get(name)
    while p.fallback is not None:
        out.append(p.fallback.name)
        p = library.get(p.fallback.name)
    return out


def measure(cases: list[Case]) -> list[dict]:
    rows = []
    for c in cases:
        t0 = time.perf_counter()
        err = float(c.run())
        rows.append({**{k: v for k, v in asdict(c).items() if k != "run"}, "error": err,
                     "ok": err <= c.tol, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{c.case:32s} {c.program:22s} {err:9.2e} {'ok' if err <= c.tol else 'FAIL'}", flush=True)
    return rows


def summarize(results: list[dict], names: list[str]) -> list[dict]:
    """One entry per library program: its references, cases and worst error (direct or via a parent)."""
    from metaopt.commands.list import kinds
    direct: dict[str, list[dict]] = {}
    for r in results:
        direct.setdefault(r["program"], []).append(r)
    via: dict[str, set[str]] = {}
    for name in direct:
        for fb in fallbacks(name):
            via.setdefault(fb, set()).add(name)
    out = []
    for name in names:
        own = direct.get(name, [])
        parents = sorted(via.get(name, ())) if not own else []
        used = own or [r for p in parents for r in direct[p]]
        row = catalog.PROGRAMS.get(name)
        refs = sorted({r["reference"] for r in own})
        if parents:
            refs = [f"as the fallback of {', '.join(parents)}"]
        out.append({
            "program": name, "catalog": row or "", "class": catalog.ROWS[row][1] if row else "",
            "kinds": kinds(library.get(name)), "paper": library.paper(name).lstrip("# "),
            "references": refs, "cases": len(own), "via": parents, "source_sha256": source_digest(name),
            "worst_error": max((r["error"] for r in used), default=None),
            "precision": "/".join(sorted({r["precision"] for r in used})),
            "ok": bool(used) and all(r["ok"] for r in used),
        })
    return out


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.1e}"


SCORES = ROOT / "docs" / "baselines" / "heldout-quick" / "run" / "results.json"


def heldout_scores(path: Path = SCORES) -> tuple[list[dict], dict]:
    """(one row per scored optimizer, best first; the run's provenance) from ``metaopt eval``'s results.json.
    The aggregates are metaopt.scoring's, as the evaluation wrote them: nothing is re-scored here."""
    if not path.exists():
        return [], {}
    run = json.loads(path.read_text())
    agg = run["aggregate"]
    rows = [{"program": name, **s} for name, s in agg["summary"].items()]
    rows.sort(key=lambda r: -r["score"])
    return rows, {"reference": agg["reference"], "tasks": run["tasks"], "provenance": run["provenance"]}


def _verdict(ci: list[float]) -> str:
    """Against the reference (score 1): an interval that contains 1 is a tie."""
    return "above" if ci[0] > 1 else "below" if ci[1] < 1 else "tie"


def render_scores(rows: list[dict], run: dict) -> list[str]:
    if not rows:
        return []
    prov = run["provenance"]
    lines = ["", f"## Scores on `heldout-quick` ({len(rows)} programs)", "",
             f"The fair protocol of docs/baselines/README.md on the {len(run['tasks'])} `heldout-quick` workloads: "
             "per task the learning rate tuned on a 9-point grid 3x apart (median of 2 tuning seeds), then 3 fresh "
             f"seeds; the score is the time-to-result speedup over tuned {run['reference']}, clipped to [1/4, 4], "
             "geometric mean over tasks with a bootstrap 90% interval. \"vs ref\" is *tie* when the interval "
             "contains 1; win/tie/loss counts tasks whose seed ranges separate. Read from "
             f"`{SCORES.relative_to(ROOT)}` (run started {prov['started'][:10]}; per-task figures in "
             "docs/baselines/heldout-quick.md and the run's summary.md). Higher is better.",
             "",
             "| rank | program | speedup geomean [90% CI] | vs ref | loss ratio geomean [90% CI] | win/tie/loss | "
             "reached target | failed cells |",
             "|---:|---|---:|---|---:|---:|---:|---:|"]
    for i, r in enumerate(rows, 1):
        ci, lci = r["score_ci"], r["loss_ratio_ci"]
        lines.append(f"| {i} | {r['program']} | {r['score']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | {_verdict(ci)} | "
                     f"{r['loss_ratio']:.3f} [{lci[0]:.3f}, {lci[1]:.3f}] | {r['win']}/{r['tie']}/{r['loss']} | "
                     f"{r['reached_target']}/{r['tasks']} | {r['failed']} |")
    return lines


def render(programs: list[dict], meta: dict) -> str:
    covered = catalog.covered_rows([p["program"] for p in programs])
    lines = [
        "# Library verification table",
        "",
        f"Generated by `python -m benchmarks.library_table` on {meta['date']} ({meta['cases']} cases, "
        f"{meta['seconds']:.0f} s); versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}. "
        "Do not edit by hand: the numbers are measured by the script, which runs the cases defined in the tests.",
        "",
        "Every program runs 100 steps against an outside reference on a tree of 0-D to 3-D leaves. Worst relative "
        "error: over the program's cases; float32 suites (tests/test_library_optax.py: every step and element, "
        "|b| floored at 0.1; tests/test_library_paper.py, tests/test_library_matrix.py: final parameters, per leaf "
        "max|a-b|/max|b|, closed loop) pass at 1e-5; the float64 suite (tests/test_library_torch_ref.py, "
        "pytorch_optimizer run through torch, same metric as the optax suite) at 1e-9, or 1e-5 where one side keeps "
        "a float32 quantity (the test names it). A fallback-only program is verified by the cases of the program "
        "that hands it its leaves.",
        "",
        f"**{len(programs)} programs; {sum(p['ok'] for p in programs)} verified; catalog rows covered: "
        f"{len(covered)} of {len(catalog.ROWS)}** (shared/seed_catalog.md section 1).",
        "",
        "| program | catalog row | kinds | paper | reference | cases | worst rel. error |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in programs:
        cat = f"{p['catalog']} ({p['class']})" if p["catalog"] else "—"
        ref = "; ".join(p["references"]) or "**none**"
        err = _fmt(p["worst_error"]) + ("" if p["ok"] else " **FAIL**")
        lines.append(f"| {p['program']} | {cat} | {p['kinds']} | {p['paper'][:90]} | {ref} | {p['cases']} | "
                     f"{err} {p['precision']} |")
    lines += render_scores(*heldout_scores())
    missing = [r for r in catalog.ROWS if r not in covered]
    lines += ["", f"## Catalog rows not covered ({len(missing)} of {len(catalog.ROWS)})", "",
              "| row | rule | class | reason |", "|---|---|---|---|"]
    for r in missing:
        name, cls = catalog.ROWS[r]
        lines.append(f"| {r} | {name} | {cls} | {catalog.UNCOVERED[r]} |")
    notes = [f"{r}: {', '.join(v)}" for r, v in covered.items() if any(" " in x for x in v)]
    if notes:
        lines += ["", "Rows covered without a program of their own: " + "; ".join(notes) + "."]
    return "\n".join(lines) + "\n"


def _split_for_update(table: dict, cases: list[Case], names: list[str]) -> tuple[list[dict], list[Case]]:
    """(committed case results to keep, cases to measure) for ``--update``: a program is re-measured when it is
    not in the table or its source digest changed; so is every program that hands leaves to it, since its cases
    verify the fallback too. Versions must match the table's, or the merged rows would mix two environments."""
    now = {k: version(k) for k in ("jax", "optax", "torch", "pytorch_optimizer")}
    if table["meta"]["versions"] != now:
        raise SystemExit(f"--update: the committed table was made with {table['meta']['versions']}, this "
                         f"environment has {now}; regenerate it in full")
    digests = {p["program"]: p["source_sha256"] for p in table["programs"]}
    changed = {n for n in names if digests.get(n) != source_digest(n)}
    changed |= {n for n in names if changed & set(fallbacks(n))}
    kept = [r for r in table["cases"] if r["program"] not in changed and r["program"] in names]
    return kept, [c for c in cases if c.program in changed]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="measure only these programs (no files written)")
    ap.add_argument("--update", action="store_true",
                    help="re-measure only the programs that are new or edited since the table in --out was made "
                         "(by source digest) and merge them into it; the other programs keep their rows")
    ap.add_argument("--out", default=str(ROOT / "docs"), help="folder for library.md and library.json")
    args = ap.parse_args(argv)
    names = library.names()
    catalog.check(names)
    cases = all_cases()
    out = Path(args.out)
    kept: list[dict] = []
    if args.only:
        cases = [c for c in cases if c.program in args.only]
    elif args.update:
        table = json.loads((out / "library.json").read_text())
        kept, cases = _split_for_update(table, cases, names)
        print(f"updating {sorted({c.program for c in cases})}: {len(cases)} cases to measure, "
              f"{len(kept)} kept", flush=True)
    t0 = time.perf_counter()
    results = measure(cases)
    if args.only:
        return 0 if all(r["ok"] for r in results) else 1
    programs = summarize(kept + results, names)
    meta = {"date": datetime.date.today().isoformat(), "cases": len(kept) + len(results),
            "seconds": time.perf_counter() - t0,
            "versions": {k: version(k) for k in ("jax", "optax", "torch", "pytorch_optimizer")}}
    if args.update:   # the full run's time stays the table's; this run's is recorded beside it
        meta.update(seconds=table["meta"]["seconds"], updated=sorted({c.program for c in cases}),
                    update_seconds=time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    (out / "library.md").write_text(render(programs, meta))
    tmp = out / "library.json.tmp"
    tmp.write_text(json.dumps({"meta": meta, "programs": programs, "cases": kept + results,
                               "uncovered": {r: catalog.UNCOVERED[r] for r in catalog.UNCOVERED}}, indent=1) + "\n")
    os.replace(tmp, out / "library.json")
    bad = [p["program"] for p in programs if not p["ok"]]
    print(f"wrote {out / 'library.md'}: {len(programs)} programs, {len(kept) + len(results)} cases; failing/unverified: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
