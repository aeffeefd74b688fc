"""The Program AST: frozen, hashable dataclasses, and its canonical text printer.

Expressions are ``Const(value)``, ``Var(name)`` and ``Call(op, args)``; infix operators are ``Call``s of
registry ops (``a + b`` is ``Call("add", (a, b))``). Source positions (``pos = (line, col)``) are kept
for error messages but excluded from equality and hashing, so ``parse(str(p)) == p``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, Union

from metaopt.dsl import inputs, ops

# Every input a program may read (metaopt/dsl/inputs.py describes each: kind, randomness, obj_fn).
INPUTS = tuple(i.name for i in inputs.all_inputs())
INPUT_KINDS = {i.name: i.kind for i in inputs.all_inputs()}
# major/minor: square matrices on a 2-D leaf's longer/shorter side (metaopt/dsl/matrix_kinds.py)
STATE_KINDS = ("tensor", "scalar", "global", "row", "col", "major", "minor")
# What a fallback predicate can see of a leaf: its static shape (ndim, numel, min_dim) and ``io``, 1 for a leaf
# of the model's input or output layers (embeddings, the first layer, the head: the leaves under the io paths
# the optimizer was given, e.g. a task's ``Task.io_paths``), else 0. Muon's authors keep those on AdamW.
LEAF_QUANTITIES = ("ndim", "numel", "min_dim", "io")
COMPARATORS = ("==", "!=", "<=", ">=", "<", ">")
KEYWORDS = ("optimizer", "state", "return", "fallback", "when", "and", "or")

Pos = Union[tuple[int, int], None]
_POS = dict(default=None, compare=False, hash=False, repr=False)


@dataclass(frozen=True)
class Const:
    value: float
    pos: Pos = field(**_POS)


@dataclass(frozen=True)
class Var:
    name: str
    pos: Pos = field(**_POS)


@dataclass(frozen=True)
class Call:
    op: str
    args: tuple["Expr", ...]
    pos: Pos = field(**_POS)


Expr = Union[Const, Var, Call]


@dataclass(frozen=True)
class StateDecl:
    name: str
    kind: str          # one of STATE_KINDS
    init: Expr
    pos: Pos = field(**_POS)


@dataclass(frozen=True)
class Assign:
    target: str
    expr: Expr
    pos: Pos = field(**_POS)


@dataclass(frozen=True)
class Compare:
    """``quantity cmp rhs`` over what is static about a leaf, e.g. ``ndim != 2`` or ``io == 1``."""
    quantity: str      # one of LEAF_QUANTITIES
    cmp: str           # one of COMPARATORS
    rhs: Expr          # Const or a hyperparameter Var
    pos: Pos = field(**_POS)


@dataclass(frozen=True)
class BoolOp:
    op: str            # "and" | "or"
    args: tuple["Predicate", ...]
    pos: Pos = field(**_POS)


Predicate = Union[Compare, BoolOp]


@dataclass(frozen=True)
class Fallback:
    """Leaves matching ``when`` are handled by library program ``name`` with keyword ``args``."""
    name: str
    args: tuple[tuple[str, Expr], ...]
    when: Predicate
    pos: Pos = field(**_POS)


@dataclass(frozen=True)
class Program:
    name: str
    hyperparams: tuple[tuple[str, float], ...]
    states: tuple[StateDecl, ...]
    body: tuple[Assign, ...]
    output: Expr
    fallback: Fallback | None = None
    doc: str = ""
    pos: Pos = field(**_POS)
    hp_pos: tuple[Pos, ...] = field(default=(), compare=False, hash=False, repr=False)  # per hyperparameter

    def __str__(self) -> str:
        return format_program(self)

    @property
    def defaults(self) -> dict[str, float]:
        return dict(self.hyperparams)

    def state(self, name: str) -> StateDecl:
        return next(s for s in self.states if s.name == name)

    def exprs(self) -> Iterator[Expr]:
        """Every top-level expression: state inits, statement right-hand sides, the output."""
        for s in self.states:
            yield s.init
        for a in self.body:
            yield a.expr
        yield self.output

    def ops_used(self) -> set[str]:
        return {c.op for e in self.exprs() for c in walk(e) if isinstance(c, Call)}

    def reads(self) -> set[str]:
        return {v.name for e in self.exprs() for v in walk(e) if isinstance(v, Var)}


def walk(e: Expr) -> Iterator[Expr]:
    """Pre-order traversal of an expression."""
    yield e
    if isinstance(e, Call):
        for a in e.args:
            yield from walk(a)


def free_vars(e: Expr) -> list[Var]:
    return [v for v in walk(e) if isinstance(v, Var)]


# ----------------------------------------------------------------------------------------------------
# Canonical text printer
# ----------------------------------------------------------------------------------------------------
def format_number(x: float) -> str:
    """Shortest text that parses back to the same float: ``1``, ``0.9``, ``1e-8``, ``-2.5``."""
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite constant {x!r} has no DSL text")
    if x == int(x) and abs(x) < 1e16:
        return str(int(x)) if not (x == 0 and math.copysign(1, x) < 0) else "-0"
    s = repr(x)
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def _prec(e: Expr) -> int:
    if isinstance(e, Const):
        return 3 if (e.value < 0 or math.copysign(1, e.value) < 0) else 5
    if isinstance(e, Call):
        op = ops.get(e.op)
        if op.symbol is not None:
            return op.prec
    return 5


def format_expr(e: Expr) -> str:
    """Canonical text of an expression, with the fewest parentheses that parse back to ``e``."""
    if isinstance(e, Const):
        return format_number(e.value)
    if isinstance(e, Var):
        return e.name
    op = ops.get(e.op)
    if op.prefix:
        (a,) = e.args
        # `-(1)` keeps neg(Const(1)) distinct from the literal Const(-1), which prints as `-1`.
        inner = format_expr(a)
        if isinstance(a, Const) or _prec(a) < op.prec:
            inner = f"({inner})"
        return f"{op.symbol}{inner}"
    if op.infix:
        lhs, rhs = e.args
        if op.assoc == "left":
            lmin, rmin = op.prec, op.prec + 1
        else:   # right-assoc power: base must be atomic, exponent may be a unary expression
            lmin, rmin = op.prec + 1, 3
        ls, rs = format_expr(lhs), format_expr(rhs)
        if _prec(lhs) < lmin:
            ls = f"({ls})"
        if _prec(rhs) < rmin:
            rs = f"({rs})"
        return f"{ls} {op.symbol} {rs}"
    return f"{e.op}({', '.join(format_expr(a) for a in e.args)})"


def format_predicate(p: Predicate, parent: str | None = None) -> str:
    if isinstance(p, Compare):
        return f"{p.quantity} {p.cmp} {format_expr(p.rhs)}"
    s = f" {p.op} ".join(format_predicate(a, p.op) for a in p.args)
    # `and` binds tighter than `or`; parenthesise an `or` inside an `and` (and any nested same-op group,
    # so the tree shape survives the round trip).
    return f"({s})" if parent is not None else s


def format_program(p: Program) -> str:
    lines = [f"# {line}" if line else "#" for line in p.doc.splitlines()] if p.doc else []
    hp = ", ".join(f"{n} = {format_number(v)}" for n, v in p.hyperparams)
    lines.append(f"optimizer {p.name}({hp})")
    for s in p.states:
        kind = "" if s.kind == "tensor" else f": {s.kind}"
        lines.append(f"state {s.name}{kind} = {format_expr(s.init)}")
    for a in p.body:
        lines.append(f"{a.target} = {format_expr(a.expr)}")
    lines.append(f"return {format_expr(p.output)}")
    if p.fallback is not None:
        f = p.fallback
        args = ", ".join(f"{n} = {format_expr(v)}" for n, v in f.args)
        lines.append(f"fallback {f.name}({args}) when {format_predicate(f.when)}")
    return "\n".join(lines) + "\n"
