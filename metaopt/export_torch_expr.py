"""Expressions of an exported torch step (see ``metaopt.export_torch``): Python names, constants, tensors.

Kept apart from the statement and loop structure in ``export_torch``: this part turns one DSL expression into
Python text and nothing more. Constants (``kind == "const"``) become Python floats, hoisted out of the
parameter loop into its header (or float32 tensors when they read ``t``); tensor expressions become torch
calls, updated in place when they own a fresh tensor. ``ExprForms`` is mixed into ``export_torch._Step``,
which holds the program and the bookkeeping these methods read (``p``, ``hp``, ``states``, ``kinds``, ``ssa``,
``origin``, ``const_defs``, ``tdep``, ``drawn``, ``gl``, ``helpers``, ``count``); ``axpy`` comes from
``export_torch_inplace.InPlaceForms``.
"""
from __future__ import annotations

import re

from metaopt.dsl import ops
from metaopt.dsl.program import Const, Expr, Var, walk
from metaopt.dsl.validate import expr_kind
from metaopt.export import _num, _py_name
from metaopt.export_torch_inplace import DIMS as _DIMS, UNARY as _UNARY, paren as _paren

_LOCALS = {"p", "st", "hp", "hp0", "i", "n", "members", "groups", "glob", "torch", "math", "self", "group",
           "closure", "defaults", "buckets", "prog", "php", "u", "io", "io_params"}
_HELPER = re.compile(r"\b(_[a-z]\w*)\(")


def local_name(n: str) -> str:
    """The Python name of DSL name ``n`` in the exported module (renamed off the module's own locals)."""
    n = _py_name(n)
    return n + "_" if n in _LOCALS else n


class Block:
    """One loop over (group, parameter) — or, with ``top``, code run once — and the header it needs."""

    def __init__(self, top: bool = False):
        self.top = top
        self.deps: set[tuple[str, str]] = set()   # ("hp", name) / ("const", python name) the code reads
        self.hoists: dict[Expr, str] = {}
        self.hoist_code: list[tuple[str, str, set]] = []
        self.loads: list[str] = []
        self.local: dict[str, str] = {}          # DSL per-leaf name -> local python name in this loop body
        self.body: list[str] = []


class ExprForms:
    """Mixed into ``export_torch._Step``: DSL expressions as Python text (naming, constants, tensors)."""

    # ------------------------------------------------------------------ naming
    def fresh(self, dsl: str) -> str:
        self.count += 1
        return f"{local_name(dsl)}__{self.count}"

    def kind(self, e: Expr) -> str:
        return expr_kind(self.p, e, self.kinds)

    def is_number(self, e: Expr) -> bool:
        """A constant that is a Python float at run time (does not read ``t``)."""
        for v in walk(e):
            if isinstance(v, Var) and (v.name == "t" or self.ssa.get(v.name) in self.tdep):
                return False
        return self.kind(e) == "const"

    def note(self, template: str) -> None:
        self.helpers |= set(_HELPER.findall(template))

    # ------------------------------------------------------------------ constants (Python floats / t-tensors)
    def const_var(self, name: str, deps: set) -> str:
        if name in ("t", "loss"):
            return name
        if name == "lr" or name in self.hp:
            deps.add(("hp", name))
            return local_name(name)
        py = self.ssa[name]
        deps.add(("const", py))
        return py

    def rc(self, e: Expr, deps: set) -> tuple[str, int]:
        if isinstance(e, Const):
            return _num(e.value), (3 if e.value < 0 else 5)
        if isinstance(e, Var):
            return self.const_var(e.name, deps), 5
        op = ops.get(e.op)
        args = [self.rc(a, deps) for a in e.args]
        if op.prefix:
            return "-" + _paren(*args[0], 3), 3
        if op.infix:
            return self.infix_text(op, args), op.prec
        self.note(op.torch)
        names = [f"a{k}" for k in range(len(args))]
        body = op.torch.format(*(f"({n})" if op.py_wrap else n for n in names))
        return f"_const(lambda {', '.join(names)}: {body}, {', '.join(a for a, _ in args)})", 5

    def infix_text(self, op, args) -> str:
        (ls, lp), (rs, rp) = args
        lmin, rmin = (op.prec, op.prec + 1) if op.assoc == "left" else (op.prec + 1, 3)
        return f"{_paren(ls, lp, lmin)} {'**' if op.symbol == '^' else op.symbol} {_paren(rs, rp, rmin)}"

    def hoist(self, e: Expr, blk: Block) -> str:
        if e not in blk.hoists:
            deps: set = set()
            code, _ = self.rc(e, deps)
            name = f"c{len(blk.hoists)}"
            blk.hoists[e] = name
            blk.hoist_code.append((name, code, deps))
        return blk.hoists[e]

    def header(self, blk: Block, indent: str) -> list[str]:
        deps = set(blk.deps)
        for _, _, d in blk.hoist_code:
            deps |= d
        need = {py for kind, py in deps if kind == "const"}
        for py, _, d in reversed(self.const_defs):   # close over const-on-const dependencies
            if py in need:
                need |= {x for k, x in d if k == "const"}
                deps |= d
        src = "hp0" if blk.top else "hp"
        out = [f"{indent}{local_name(n)} = {src}[{local_name(n)!r}]" for n in ["lr"] + self.hp if ("hp", n) in deps]
        out += [f"{indent}{py} = {code}" for py, code, _ in self.const_defs if py in need]
        out += [f"{indent}{name} = {code}" for name, code, _ in blk.hoist_code]
        return out

    # ------------------------------------------------------------------ tensors
    def leaf_var(self, name: str, blk: Block) -> str:
        if name in ("t", "loss"):
            return name
        if name == "lr" or name in self.hp:
            blk.deps.add(("hp", name))
            return local_name(name)
        if name in blk.local:
            return blk.local[name]
        if name == "g":
            return "g"
        if name in self.drawn:   # drawn for every parameter before the statements (draws())
            blk.loads.append(f"{name} = _{name}[i]")
            blk.local[name] = name
            return name
        if name == "w":
            blk.loads.append("w = p")
        elif name in self.states and self.states[name].kind != "global":
            blk.loads.append(f"{local_name(name)} = st[{name!r}]")
        else:
            py = self.ssa[name]
            if self.origin[py] == "const":
                blk.deps.add(("const", py))
                return py
            if self.origin[py] == "global":
                return py
            blk.loads.append(f"{py} = _{py}[i]")
            blk.local[name] = py
            return py
        blk.local[name] = "w" if name == "w" else local_name(name)
        return blk.local[name]

    def rt(self, e: Expr, blk: Block) -> tuple[str, int, bool]:
        """(text, precedence, fresh): ``fresh`` = a new tensor this expression owns (safe to update in place)."""
        if isinstance(e, Const):
            return _num(e.value), (3 if e.value < 0 else 5), False
        if isinstance(e, Var):
            if self.kinds.get(e.name) == "global" and e.name in self.states:
                return self.ssa[e.name], 5, False
            return self.leaf_var(e.name, blk), 5, False
        k = self.kind(e)
        if k == "const":
            return self.hoist(e, blk), 5, False
        if e in self.gl:
            return self.gl[e], 5, False
        op = ops.get(e.op)
        dims = k in _DIMS
        if op.name in ("add", "sub"):
            fused = self.axpy(e, k, blk)
            if fused:
                return fused, 5, True
        args = [self.rt(a, blk) for a in e.args]
        kinds = [self.kind(a) for a in e.args]
        method = re.match(r"torch\.(\w+)\(", op.torch)
        if op.infix or op.prefix:
            (at, ap, af) = args[0]
            if af and dims and kinds[0] == k:
                rest = ", ".join(a for a, _, _ in args[1:])
                return f"{_paren(at, ap, 5)}.{method[1]}_({rest})", 5, True
            if op.name in ("add", "mul") and args[1][2] and dims and kinds[1] == k:
                return f"{_paren(args[1][0], args[1][1], 5)}.{method[1]}_({at})", 5, True
            if op.prefix:
                return "-" + _paren(at, ap, 3), 3, True
            return self.infix_text(op, [(a, p) for a, p, _ in args]), op.prec, True
        m = _UNARY.fullmatch(op.torch)
        if m and args[0][2] and dims and kinds[0] == k:
            return f"{_paren(args[0][0], args[0][1], 5)}.{m[1]}_()", 5, True
        self.note(op.torch)
        wrap = op.py_wrap or (0,) * len(args)
        texts = [_paren(a, p, need) for (a, p, _), need in zip(args, wrap)]
        return op.torch.format(*texts), op.py_prec, True
