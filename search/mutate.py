"""Mutations of optimizer programs (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms",
sec. 2.2: insert, delete and modify statements; constants perturbed).

``mutate(program, rng, space)`` applies one random mutation — insert a statement, delete one, change an
op, change an argument, perturb a constant multiplicatively (``c <- c * 2^N(0,1)``, :func:`perturb_constant`)
or replace one from a palette, swap two statements, add or remove a state
variable — then *repairs* the result (undefined reads rebound, dead locals and unread states dropped,
unused hyperparameters removed), validates it with the DSL validator, simplifies it, and checks the
size limits. A child that still fails is redrawn; after ``attempts`` failures the parent is returned
unchanged (the driver's fingerprint cache then makes it free). Ops and arities come from the op
registry: only ``searchable`` ops of the allowed kinds are ever inserted.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from metaopt.dsl import Assign, Call, Const, DSLError, Expr, Program, StateDecl, Var, ops, walk
from search import programs

MUTATIONS = ("insert", "delete", "change_op", "change_arg", "perturb_const", "replace_const", "swap",
             "add_state", "remove_state")
# Structural growth and constant tuning dominate in Lion's search; deletions keep programs short.
WEIGHTS = (0.18, 0.12, 0.14, 0.16, 0.10, 0.05, 0.07, 0.10, 0.08)
COMBINERS = ("add", "sub", "mul", "div")


@dataclasses.dataclass(frozen=True)
class MutationSpace:
    """What mutation may build: ops, readable inputs, a constant palette and the size limits."""

    ops: tuple[str, ...]
    max_len: int
    max_states: int = 3
    inputs: tuple[str, ...] = ("g", "w", "t")
    constants: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999, 0.1, 0.01, 1.0, 2.0, 1e-8)

    def __post_init__(self) -> None:
        for name in self.ops:
            if not ops.get(name).searchable:
                raise ValueError(f"op {name!r} is not searchable (metaopt.dsl.ops)")


def default_space(max_len: int, max_states: int = 3,
                  kinds: tuple[str, ...] = ("elementwise", "reduce")) -> MutationSpace:
    """Every searchable registry op of the given kinds. Factored/matrix ops are left out by default:
    they fail on the 1-D leaves (biases) every task has, so they would only waste evaluations."""
    names = tuple(op.name for op in ops.searchable() if op.kind in kinds)
    return MutationSpace(ops=names, max_len=max_len, max_states=max_states)


class _NotApplicable(Exception):
    """This mutation cannot apply to this program (e.g. delete on an empty body): draw another."""


# --- expression paths ------------------------------------------------------------------------------
def _paths(e: Expr, prefix: tuple[int, ...] = ()) -> list[tuple[tuple[int, ...], Expr]]:
    out = [(prefix, e)]
    if isinstance(e, Call):
        for i, a in enumerate(e.args):
            out.extend(_paths(a, prefix + (i,)))
    return out


def _replace(e: Expr, path: tuple[int, ...], new: Expr) -> Expr:
    if not path:
        return new
    assert isinstance(e, Call)
    args = list(e.args)
    args[path[0]] = _replace(args[path[0]], path[1:], new)
    return Call(e.op, tuple(args))


@dataclasses.dataclass
class _Draft:
    """A mutable copy of a Program for editing; ``loc`` -1 means the return expression."""

    name: str
    hyperparams: list[tuple[str, float]]
    states: list[StateDecl]
    body: list[Assign]
    output: Expr
    doc: str

    @classmethod
    def of(cls, p: Program) -> "_Draft":
        if p.fallback is not None:
            raise _NotApplicable("programs with a fallback are not mutated")
        return cls(p.name, list(p.hyperparams), list(p.states), list(p.body), p.output, p.doc)

    def build(self) -> Program:
        return Program(self.name, tuple(self.hyperparams), tuple(self.states), tuple(self.body),
                       self.output, None, self.doc)

    def expr(self, loc: int) -> Expr:
        return self.output if loc < 0 else self.body[loc].expr

    def set_expr(self, loc: int, e: Expr) -> None:
        if loc < 0:
            self.output = e
        else:
            self.body[loc] = Assign(self.body[loc].target, e)

    def locs(self) -> list[int]:
        return list(range(len(self.body))) + [-1]

    def state_names(self) -> list[str]:
        return [s.name for s in self.states]

    def scope(self, loc: int, inputs: tuple[str, ...]) -> list[str]:
        """Names readable by the statement at ``loc``: inputs, hyperparameters, states, earlier locals."""
        end = len(self.body) if loc < 0 else loc
        states = set(self.state_names())
        local = [a.target for a in self.body[:end] if a.target not in states]
        names = list(inputs) + [n for n, _ in self.hyperparams] + self.state_names() + local
        return list(dict.fromkeys(names))

    def taken(self) -> set[str]:
        return (set(self.state_names()) | {a.target for a in self.body} | {n for n, _ in self.hyperparams}
                | {"g", "w", "t", "loss", "lr"})


def _fresh(draft: _Draft, prefix: str) -> str:
    taken = draft.taken()
    i = 0
    while f"{prefix}{i}" in taken or ops.exists(f"{prefix}{i}"):
        i += 1
    return f"{prefix}{i}"


def _operand(scope: list[str], rng: np.random.Generator, space: MutationSpace, p_const: float = 0.25) -> Expr:
    if rng.random() < p_const:
        return Const(float(rng.choice(space.constants)))
    return Var(str(rng.choice(scope)))


def _tensor_var(scope: list[str], rng: np.random.Generator) -> Var:
    # The first argument of a new op reads a tensor-ish name, so the statement depends on the step.
    pool = [n for n in scope if n not in ("t", "lr")] or scope
    return Var(str(rng.choice(pool)))


def _random_call(scope: list[str], rng: np.random.Generator, space: MutationSpace) -> Call:
    op = ops.get(str(rng.choice(space.ops)))
    args = [_tensor_var(scope, rng)] + [_operand(scope, rng, space) for _ in range(op.arity - 1)]
    if op.name == "interp":   # interp's third argument is a mixing weight: draw it from EMA-like values
        args[2] = Const(float(rng.choice((0.9, 0.99, 0.999, 0.5))))
    return Call(op.name, tuple(args))


def _splice_read(draft: _Draft, name: str, locs: list[int], rng: np.random.Generator) -> None:
    """Make the statement at one of ``locs`` read ``name``: replace a random subexpression ``e`` there by
    ``name`` itself or by ``e <op> name``."""
    loc = int(rng.choice(locs))
    e = draft.expr(loc)
    path, sub = _paths(e)[int(rng.integers(len(_paths(e))))]
    new: Expr = Var(name) if rng.random() < 0.3 else Call(str(rng.choice(COMBINERS)), (sub, Var(name)))
    draft.set_expr(loc, _replace(e, path, new))


# --- the mutations -------------------------------------------------------------------------------------
def _insert(d: _Draft, rng, space) -> None:
    i = int(rng.integers(len(d.body) + 1))
    scope = d.scope(i, space.inputs)
    states = d.state_names()
    if states and rng.random() < 0.3:
        d.body.insert(i, Assign(str(rng.choice(states)), _random_call(scope, rng, space)))
        return
    name = _fresh(d, "x")
    d.body.insert(i, Assign(name, _random_call(scope, rng, space)))
    _splice_read(d, name, list(range(i + 1, len(d.body))) + [-1], rng)


def _delete(d: _Draft, rng, space) -> None:
    if not d.body:
        raise _NotApplicable
    del d.body[int(rng.integers(len(d.body)))]


def _calls(d: _Draft) -> list[tuple[int, tuple[int, ...], Call]]:
    return [(loc, path, e) for loc in d.locs() for path, e in _paths(d.expr(loc)) if isinstance(e, Call)]


def _change_op(d: _Draft, rng, space) -> None:
    calls = _calls(d)
    if not calls:
        raise _NotApplicable
    loc, path, call = calls[int(rng.integers(len(calls)))]
    choices = [o for o in space.ops if o != call.op]
    new = ops.get(str(rng.choice(choices)))
    scope = d.scope(loc, space.inputs)
    args = list(call.args[:new.arity])
    while len(args) < new.arity:
        args.append(_operand(scope, rng, space))
    d.set_expr(loc, _replace(d.expr(loc), path, Call(new.name, tuple(args))))


def _change_arg(d: _Draft, rng, space) -> None:
    sites = [(loc, path, e) for loc in d.locs() for path, e in _paths(d.expr(loc))
             if path and (rng.random() < 0.2 or not isinstance(e, Call))]
    if not sites:   # `return g`: the whole return expression is the only argument to change
        sites = [(-1, (), d.output)]
    loc, path, old = sites[int(rng.integers(len(sites)))]
    scope = d.scope(loc, space.inputs)
    new = _operand(scope, rng, space, p_const=0.15 if path else 0.0)
    if new == old:
        raise _NotApplicable
    d.set_expr(loc, _replace(d.expr(loc), path, new))


def _consts(d: _Draft) -> list[tuple[int, tuple[int, ...], float]]:
    return [(loc, path, e.value) for loc in d.locs() for path, e in _paths(d.expr(loc)) if isinstance(e, Const)]


def perturb_constant(x: float, rng: np.random.Generator, ema: bool = False) -> float:
    """Multiplicative perturbation ``x <- x * 2^z``, ``z ~ N(0, 1)`` (so halving and doubling are equally
    likely and the perturbation is scale-free). ``ema``: ``x`` is the mixing weight of an ``interp`` (an
    EMA's beta) in (0, 1); the same law then applies to ``1 - x`` (the EMA's inverse time scale), so 0.9
    moves towards 0.95 or 0.8 and never past 1. A zero has no scale: it is redrawn from (1e-8, 1e-3, 0.1).
    Printed with 4 significant digits (readable programs; the log2 ratio moves by < 1e-3)."""
    factor = 2.0 ** rng.normal(0.0, 1.0)
    if ema and 0.0 < x < 1.0:
        y = min(max(1.0 - (1.0 - x) * factor, 1e-6), 1.0 - 1e-6)
    elif x == 0.0:
        y = float(rng.choice((1e-8, 1e-3, 0.1)))
    else:
        y = x * factor
    return float(f"{y:.4g}")


def _ema_sites(d: _Draft) -> tuple[set[tuple[int, tuple[int, ...]]], set[str]]:
    """Constants (``(loc, path)``) and hyperparameter names read as the mixing weight of an ``interp``."""
    sites, names = set(), set()
    for loc in d.locs():
        for path, e in _paths(d.expr(loc)):
            if isinstance(e, Call) and e.op == "interp" and len(e.args) == 3:
                w = e.args[2]
                if isinstance(w, Const):
                    sites.add((loc, path + (2,)))
                elif isinstance(w, Var):
                    names.add(w.name)
    return sites, names


def _perturb_const(d: _Draft, rng, space, replace: bool = False) -> None:
    sites = _consts(d)
    n_hp = len(d.hyperparams)
    if not sites and not n_hp:
        raise _NotApplicable
    ema_sites, ema_names = _ema_sites(d)
    k = int(rng.integers(len(sites) + n_hp))
    if k < n_hp:
        name, value = d.hyperparams[k]
        new = float(rng.choice(space.constants)) if replace else perturb_constant(value, rng, name in ema_names)
        d.hyperparams[k] = (name, new)
        return
    loc, path, value = sites[k - n_hp]
    new = float(rng.choice(space.constants)) if replace else perturb_constant(value, rng, (loc, path) in ema_sites)
    if new == value:
        raise _NotApplicable
    d.set_expr(loc, _replace(d.expr(loc), path, Const(new)))


def _swap(d: _Draft, rng, space) -> None:
    if len(d.body) < 2:
        raise _NotApplicable
    i, j = rng.choice(len(d.body), size=2, replace=False)
    d.body[i], d.body[j] = d.body[j], d.body[i]


def _add_state(d: _Draft, rng, space) -> None:
    if len(d.states) >= space.max_states:
        raise _NotApplicable
    name = _fresh(d, "m")
    d.states.append(StateDecl(name, "tensor", Const(0.0)))
    i = int(rng.integers(len(d.body) + 1))
    scope = d.scope(i, space.inputs) + [name]
    if rng.random() < 0.6:   # a moving average of something: the shape of most known optimizers' state
        expr: Expr = Call("interp", (Var(name), _tensor_var(scope[:-1], rng),
                                     Const(float(rng.choice((0.9, 0.99, 0.999))))))
    else:
        call = _random_call(scope, rng, space)
        expr = Call(call.op, (Var(name),) + call.args[1:]) if call.args else call
    d.body.insert(i, Assign(name, expr))
    # A state may be read anywhere (before its assignment it holds last step's value).
    _splice_read(d, name, [loc for loc in d.locs() if loc != i], rng)


def _remove_state(d: _Draft, rng, space) -> None:
    if not d.states:
        raise _NotApplicable
    name = d.states.pop(int(rng.integers(len(d.states)))).name
    d.body = [a for a in d.body if a.target != name]   # its reads are rebound by repair


_APPLY: dict[str, Callable] = {
    "insert": _insert, "delete": _delete, "change_op": _change_op, "change_arg": _change_arg,
    "perturb_const": _perturb_const, "replace_const": lambda d, r, s: _perturb_const(d, r, s, replace=True),
    "swap": _swap, "add_state": _add_state, "remove_state": _remove_state,
}


# --- repair ------------------------------------------------------------------------------------------
def _rebind(e: Expr, scope: list[str], rng: np.random.Generator) -> Expr:
    """Replace reads of names not in ``scope`` by random names that are."""
    if isinstance(e, Var):
        return e if e.name in scope else _tensor_var(scope, rng)
    if isinstance(e, Call):
        return Call(e.op, tuple(_rebind(a, scope, rng) for a in e.args))
    return e


def _reads(e: Expr) -> set[str]:
    return {v.name for v in walk(e) if isinstance(v, Var)}


def repair(d: _Draft, rng: np.random.Generator, space: MutationSpace) -> None:
    """Make a mutated draft well formed where that is cheap (the validator has the final word)."""
    for _ in range(8):
        declared = set(d.state_names())
        # States never assigned become free reads (rebound below).
        assigned = {a.target for a in d.body}
        d.states = [s for s in d.states if s.name in assigned]
        declared = set(d.state_names())
        for loc in d.locs():
            d.set_expr(loc, _rebind(d.expr(loc), d.scope(loc, space.inputs), rng))
        changed = False
        # Dead locals: an assignment whose value is not read before the next assignment of that name.
        keep = []
        for i, a in enumerate(d.body):
            if a.target in declared:
                keep.append(a)
                continue
            used = False
            for b in d.body[i + 1:]:
                if a.target in _reads(b.expr):
                    used = True
                    break
                if b.target == a.target:
                    break
            else:
                used = used or a.target in _reads(d.output)
            if used:
                keep.append(a)
            else:
                changed = True
        d.body = keep
        # Unread states: their assignments are dead too.
        read = set().union(*(_reads(a.expr) for a in d.body), _reads(d.output))
        dead_states = declared - read
        if dead_states:
            d.states = [s for s in d.states if s.name not in dead_states]
            d.body = [a for a in d.body if a.target not in dead_states]
            changed = True
        if not changed:
            break
    read = set().union(*(_reads(a.expr) for a in d.body), _reads(d.output),
                       *(_reads(s.init) for s in d.states))
    d.hyperparams = [(n, v) for n, v in d.hyperparams if n in read]


# --- entry point -------------------------------------------------------------------------------------
def mutate(program: Program, rng: np.random.Generator, space: MutationSpace, attempts: int = 30,
           accept: Optional[Callable[[Program], bool]] = None) -> tuple[Program, str]:
    """One random mutation of ``program``: a valid, simplified child within ``space``'s limits.

    Returns ``(child, mutation name)``; ``(program, "none")`` if ``attempts`` draws all failed.
    ``accept`` is an extra check (e.g. the interpreter's encoder), failing children are redrawn.
    """
    for _ in range(attempts):
        kind = str(rng.choice(MUTATIONS, p=WEIGHTS))
        try:
            d = _Draft.of(program)
            _APPLY[kind](d, rng, space)
            repair(d, rng, space)
            child = programs.validate(d.build())
            child = programs.validate(programs.simplify(child))
        except (_NotApplicable, DSLError):
            continue
        # The simplifier may rewrite into other registry ops: any searchable op is fine, no other.
        if (programs.length(child) > space.max_len or len(child.states) > space.max_states
                or not all(ops.get(name).searchable for name in child.ops_used())):
            continue
        if accept is not None and not accept(child):
            continue
        return child, kind
    return program, "none"
