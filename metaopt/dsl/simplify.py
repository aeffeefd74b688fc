"""Canonical simplification of programs: ``simplify(program) -> Program``.

Every rewrite preserves the updates bit for bit (no float re-association, no algebraic identities —
those are the fingerprint's job):

1. fold constant sub-expressions (literals only; hyperparameters stay names, they are keyword arguments),
   evaluated in float32 JAX as the compiled path would;
2. inline locals used exactly once when nothing they read is reassigned in between;
3. drop statements whose value never reaches the output, and states nothing live reads; a scalar state
   whose value on entry is never read (the step assigns it before anything reads it) becomes a local: carrying
   it costs a state buffer per tensor and changes nothing (within a step the compiler, the interpreter and
   the exports all read the assigned value as it is, before it is shaped to the state's storage);
4. rename canonically: states ``s0, s1, ...`` in order of first assignment, locals ``v0, v1, ...`` in
   statement order;
5. order the arguments of commutative ops (``add mul max min dot``) by their printed form.

The result is a fixed point: ``simplify(simplify(p)) == simplify(p)``.
"""
from __future__ import annotations

import re
from typing import Callable

from metaopt.dsl import ops as opreg
from metaopt.dsl.fold import fold_op
from metaopt.dsl.program import INPUTS, Assign, Call, Const, Expr, Program, StateDecl, Var, format_expr, walk

COMMUTATIVE = frozenset({"add", "mul", "max", "min", "dot"})


def reads(e: Expr) -> set[str]:
    return {v.name for v in walk(e) if isinstance(v, Var)}


def substitute(e: Expr, f: Callable[[str], Expr | None]) -> Expr:
    """Replace every ``Var(n)`` for which ``f(n)`` is not None."""
    if isinstance(e, Var):
        r = f(e.name)
        return e if r is None else r
    if isinstance(e, Call):
        return Call(e.op, tuple(substitute(a, f) for a in e.args))
    return e


def fold(e: Expr) -> Expr:
    """Fold calls of elementwise ops whose arguments are all literals."""
    if not isinstance(e, Call):
        return e
    args = tuple(fold(a) for a in e.args)
    if args and all(isinstance(a, Const) for a in args) and opreg.get(e.op).kind == "elementwise":
        return Const(fold_op(e.op, [a.value for a in args]))
    return Call(e.op, args)


def order(e: Expr) -> Expr:
    """Sort the arguments of commutative ops by their printed form (bottom-up)."""
    if not isinstance(e, Call):
        return e
    args = tuple(order(a) for a in e.args)
    if e.op in COMMUTATIVE:
        args = tuple(sorted(args, key=format_expr))
    return Call(e.op, args)


def _inline(body: list[Assign], output: Expr, states: set[str]) -> tuple[list[Assign], Expr]:
    """Inline single-use locals (repeatedly) where that cannot change what they read."""
    changed = True
    while changed:
        changed = False
        for k, stmt in enumerate(body):
            if stmt.target in states:
                continue
            uses = []  # (index of statement using it, or len(body) for the output)
            for j in range(k + 1, len(body) + 1):
                e = body[j].expr if j < len(body) else output
                n = sum(1 for v in walk(e) if isinstance(v, Var) and v.name == stmt.target)
                uses += [j] * n
                if j < len(body) and body[j].target == stmt.target:
                    break                     # redefined: later reads see the new value
            if len(uses) != 1:
                continue
            j = uses[0]
            between = {body[i].target for i in range(k + 1, j)}
            if between & (reads(stmt.expr) | {stmt.target}):
                continue
            sub = lambda n, s=stmt: s.expr if n == s.target else None
            if j < len(body):
                body[j] = Assign(body[j].target, substitute(body[j].expr, sub))
            else:
                output = substitute(output, sub)
            del body[k]
            changed = True
            break
    return body, output


def _live(body: list[Assign], output: Expr, states: set[str]) -> tuple[list[bool], set[str]]:
    """Which statements matter, and which states are read by anything that matters (a fixpoint:
    a state is live if a live expression reads it, since next step's value comes from its assignment)."""
    live_states: set[str] = set()
    while True:
        needed = reads(output)
        read_all = set(needed)
        keep = [False] * len(body)
        for i in range(len(body) - 1, -1, -1):
            t = body[i].target
            if t in needed or t in live_states:
                keep[i] = True
                needed.discard(t)
                r = reads(body[i].expr)
                needed |= r
                read_all |= r
        new = (read_all | needed) & states
        if new <= live_states:
            return keep, live_states
        live_states |= new


def _assigned_before_read(body: list[Assign], states: set[str]) -> set[str]:
    """States that the first statement touching them assigns without reading them: their value on entry
    (last step's, or the init) is never read."""
    out = set()
    for name in states:
        for a in body:
            if name in reads(a.expr):
                break
            if a.target == name:
                out.add(name)
                break
    return out


def _prefixes(hyperparams: set[str]) -> tuple[str, str]:
    """Name prefixes for states and locals that no hyperparameter (or input) can collide with."""
    taken = hyperparams | set(INPUTS)
    for sp, lp in (("s", "v"), ("st", "lv"), ("state", "local")):
        if not any(re.fullmatch(rf"({sp}|{lp})\d+", n) for n in taken):
            return sp, lp
    raise ValueError("hyperparameter names collide with every canonical naming scheme")


def simplify(program: Program) -> Program:
    """The canonical simplified form of ``program`` (same updates, see the module docstring): rounds of
    :func:`_simplify_once` until nothing changes (a state turned local can let later statements go)."""
    for _ in range(16):
        nxt = _simplify_once(program)
        if nxt == program:
            return nxt
        program = nxt
    return program


def _simplify_once(program: Program) -> Program:
    states = {s.name for s in program.states}
    decls = [StateDecl(s.name, s.kind, fold(s.init)) for s in program.states]
    body, output = [Assign(a.target, fold(a.expr)) for a in program.body], fold(program.output)
    # Dead code first (so uses in dead statements do not block inlining), then inline, fold and
    # sweep again: each step only enables the later ones, so one round reaches the fixed point of these (a
    # state turned local can need a second round, which `simplify` runs).
    keep, _ = _live(body, output, states)
    body = [a for a, k in zip(body, keep) if k]
    # Only per-tensor scalars: a tensor-kind state register holds a broadcast value in the interpreter, so
    # `m = 0.5` then `dot(m, x)` reads differently from a scalar local (found by the property test).
    states -= _assigned_before_read(body, {s.name for s in program.states if s.kind == "scalar"} & states)
    decls = [s for s in decls if s.name in states]
    body, output = _inline(body, output, states)
    body, output = [Assign(a.target, fold(a.expr)) for a in body], fold(output)
    keep, live_states = _live(body, output, states)
    body = [a for a, k in zip(body, keep) if k]
    decls = [s for s in decls if s.name in live_states]

    # Canonical names. States: order of first assignment (never-assigned ones last, in declaration order).
    first = {a.target: i for i, a in reversed(list(enumerate(body)))}
    decls.sort(key=lambda s: (first.get(s.name, len(body)), [d.name for d in program.states].index(s.name)))
    sp, lp = _prefixes({n for n, _ in program.hyperparams})
    state_names = {s.name: f"{sp}{i}" for i, s in enumerate(decls)}
    current = dict(state_names)          # old local name -> its current canonical name
    new_body = []
    n_locals = 0
    for a in body:
        expr = order(substitute(a.expr, lambda n: Var(current[n]) if n in current else None))
        if a.target in state_names:
            target = state_names[a.target]
        else:
            target = f"{lp}{n_locals}"
            n_locals += 1
            current[a.target] = target
        new_body.append(Assign(target, expr))
    output = order(substitute(output, lambda n: Var(current[n]) if n in current else None))
    new_decls = tuple(StateDecl(state_names[s.name], s.kind, order(s.init)) for s in decls)
    return Program(program.name, program.hyperparams, new_decls, tuple(new_body), output, program.fallback,
                   program.doc)
