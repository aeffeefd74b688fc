"""``metaopt list``: the library optimizers with the kinds of ops they use, state size and paper."""
from __future__ import annotations

import argparse
from pathlib import Path

NAME = "list"
HELP = "list library optimizers: name, op kinds (E/S/F/M/W/L/H/R), state tensors per parameter, paper"
DESCRIPTION = (HELP + ". Kinds come from the op and input registries: E elementwise, S per-tensor or global "
               "reductions, F row/column statistics, M matrix ops, W masks (comparisons, where), L reads the loss, "
               "H evaluates the objective again (h, grad_at: update(..., obj_fn=)), R reads random numbers (noise, "
               "h); a fallback adds its program's kinds after '+'.")
ORDER = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", help="only optimizers whose kinds include these letters, e.g. M or SL")
    p.add_argument("--verified", action="store_true",
                   help="the verification table instead: each program's outside reference (optax, pytorch_optimizer "
                        "or the paper's equations) and the worst relative error measured (docs/library.json, "
                        "written by `python -m benchmarks.library_table`)")


VERIFIED = Path(__file__).resolve().parents[2] / "docs" / "library.json"


def run_verified(args: argparse.Namespace, path: Path = VERIFIED) -> int:
    """Print the committed verification data; a missing or stale file is reported, not re-measured (slow)."""
    import json
    from metaopt import library
    if not path.is_file():
        print(f"error: {path} does not exist; generate it with `python -m benchmarks.library_table`")
        return 1
    data = json.loads(path.read_text())
    rows = [p for p in data["programs"] if not args.kind or set(args.kind) <= set(p["kinds"])]
    w = max([len(p["program"]) for p in rows] + [4])
    print(f"{'name':<{w}}  {'catalog':<8} {'worst err':<9}  reference")
    for p in rows:
        err = "-" if p["worst_error"] is None else f"{p['worst_error']:.1e}"
        flag = "" if p["ok"] else "  FAIL"
        print(f"{p['program']:<{w}}  {p['catalog'] or '-':<8} {err:<9}  {'; '.join(p['references'])[:100]}{flag}")
    meta = data["meta"]
    print(f"{len(rows)} optimizers, {sum(p['ok'] for p in rows)} verified ({meta['cases']} cases, {meta['date']}; "
          f"{', '.join(f'{k} {v}' for k, v in meta['versions'].items())}); seed catalog rows covered: "
          f"{127 - len(data['uncovered'])} of 127 (the rest, with reasons: docs/library.md)")
    import hashlib
    digests = {p["program"]: p.get("source_sha256") for p in data["programs"]}
    stale = sorted(n for n in library.names()
                   if digests.get(n) != hashlib.sha256(library.source(n).encode()).hexdigest())
    if stale:
        print(f"note: new or edited since {path.name} was generated (re-run python -m benchmarks.library_table): "
              f"{', '.join(stale)}")
    return 0


def kinds(program) -> str:
    """Kind letters of a program, in the order E S F M W L H R, derived from the op and input registries."""
    from metaopt.dsl import inputs, ops
    letters = {ops.get(o).tag for o in program.ops_used()}
    reads = program.reads()
    letters |= {i.letter for i in inputs.all_inputs() if i.letter and i.name in reads}
    letters |= {"R" for _ in inputs.random_inputs(reads)}
    return "".join(c for c in "ESFMWLHR" if c in letters) or "E"


def state_size(program) -> str:
    """Full-size state tensors per parameter; factored (row/col) states shown as +Nf, square matrices on a side
    of a 2-D parameter (major/minor: Shampoo's L, R) as +Nq, scalars as +Ns."""
    n = sum(s.kind == "tensor" for s in program.states)
    f = sum(s.kind in ("row", "col") for s in program.states)
    q = sum(s.kind in ("major", "minor") for s in program.states)
    s = sum(s.kind in ("scalar", "global") for s in program.states)
    return f"{n}" + (f"+{f}f" if f else "") + (f"+{q}q" if q else "") + (f"+{s}s" if s else "")


def run(args: argparse.Namespace) -> int:
    if getattr(args, "verified", False):
        return run_verified(args)
    from metaopt import library
    rows = []
    for name in library.names():
        try:
            p = library.get(name)
        except Exception as e:   # a broken file is listed, not fatal: the error names file:line:col
            rows.append((name, "!", "-", f"ERROR {str(e).splitlines()[0]}"))
            continue
        k = kinds(p)
        if p.fallback is not None:
            k += "+" + kinds(library.get(p.fallback.name))
        if args.kind and not set(args.kind) <= set(k):
            continue
        rows.append((name, k, state_size(p), library.paper(name)))
    w = max([len(r[0]) for r in rows] + [4])
    print(f"{'name':<{w}}  {'kinds':<8} {'state':<6} paper")
    for n, k, s, paper in rows:
        print(f"{n:<{w}}  {k:<8} {s:<6} {paper[:100]}")
    print(f"{len(rows)} optimizers")
    return 0
