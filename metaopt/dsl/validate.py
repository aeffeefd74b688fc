"""Semantic checks of a Program, with value-kind inference.

Errors (``DSLError`` with file, line and column): unknown op (with close names), wrong arity, undefined
variable, assignment to an input or hyperparameter, duplicate names, unused hyperparameter, a local whose
value is never read, a state never assigned, a value wider than its state's kind (e.g. a tensor into a
``global`` state), a factored/matrix op on a non-matrix value, a fallback argument that is not constant,
a fallback naming no library program (with close names), passing an argument the fallback program does not
take, a chain of fallbacks that loops, or a random input (``noise``, ``h``) read without a ``seed``
hyperparameter.
"""
from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path

from metaopt.dsl import inputs, ops
from metaopt.dsl.errors import DSLError
from metaopt.dsl.parser import parse_unvalidated
from metaopt.dsl.program import (INPUT_KINDS, INPUTS, KEYWORDS, LEAF_QUANTITIES, BoolOp, Call, Compare,
                                 Const, Expr, Predicate, Program, Var, walk)


# A fallback names a program of the optimizer library. The library package (``metaopt/library``) is a
# directory of ``NAME.opt`` files built on this package, so the DSL reads the files directly rather than
# importing ``metaopt.library`` (which imports the DSL).
LIBRARY_DIR = Path(__file__).resolve().parents[1] / "library"


def library_names() -> list[str]:
    """Names a ``fallback`` may use: the ``.opt`` files of the library directory (sorted)."""
    return sorted(f.stem for f in LIBRARY_DIR.glob("*.opt"))


@functools.lru_cache(maxsize=None)
def _header(path: Path, mtime: float) -> tuple[tuple[str, ...], str | None]:
    program = parse_unvalidated(path.read_text(), str(path))
    return tuple(n for n, _ in program.hyperparams), program.fallback.name if program.fallback else None


def fallback_header(name: str) -> tuple[tuple[str, ...], str | None] | None:
    """(hyperparameter names, its own fallback's name) of library program ``name``; None if absent."""
    path = LIBRARY_DIR / f"{name}.opt"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z_0-9]*", name) or not path.is_file():
        return None
    return _header(path, path.stat().st_mtime)


def _close(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


class _Checker:
    def __init__(self, program: Program, file: str, source: str | None):
        self.p, self.file, self.source = program, file, source

    def error(self, pos, msg: str) -> DSLError:
        line, col = pos if pos is not None else (self.p.pos or (1, 1))
        return DSLError(self.file, line, col, msg, self.source)

    def kind(self, e: Expr, env: dict[str, str], where: str) -> str:
        """Value kind of ``e`` given the kinds of the names in scope."""
        if isinstance(e, Const):
            return "const"
        if isinstance(e, Var):
            if e.name not in env:
                known = tuple(env)
                raise self.error(e.pos, f"undefined variable {e.name!r} {where}{ops.suggest(e.name, known)}")
            return env[e.name]
        if not ops.exists(e.op):
            raise self.error(e.pos, f"unknown op {e.op!r}{ops.suggest(e.op)}")
        op = ops.get(e.op)
        if len(e.args) != op.arity:
            raise self.error(e.pos, f"{e.op} takes {op.arity} argument{'s' * (op.arity != 1)}, "
                                    f"got {len(e.args)}")
        kinds = [self.kind(a, env, where) for a in e.args]
        try:
            return ops.result_kind(op, kinds)
        except ValueError as err:
            raise self.error(e.pos, str(err)) from None

    def name_ok(self, name: str, pos, what: str) -> None:
        if name in KEYWORDS or ops.exists(name) or name in LEAF_QUANTITIES:
            raise self.error(pos, f"{what} name {name!r} is reserved (a keyword, op or leaf quantity)")

    def run(self) -> None:
        p = self.p
        hp_names = [n for n, _ in p.hyperparams]
        seen: set[str] = set()
        hp_pos = dict(zip(hp_names, p.hp_pos))
        for n in hp_names:
            if n in INPUTS or n in seen:
                raise self.error(hp_pos.get(n), f"hyperparameter {n!r} {'is an input' if n in INPUTS else 'repeated'}")
            if n == "io_paths":   # to_optax's own keyword (which leaves are input/output layers)
                raise self.error(hp_pos.get(n), "hyperparameter name 'io_paths' is reserved (to_optax's io_paths=)")
            self.name_ok(n, hp_pos.get(n), "hyperparameter")
            seen.add(n)
        const_env = {n: "const" for n in hp_names}
        init_env = {**const_env, "w": "tensor"}
        env: dict[str, str] = {**INPUT_KINDS, **const_env}
        for s in p.states:
            if s.name in env:
                raise self.error(s.pos, f"state {s.name!r} clashes with an input, hyperparameter or state")
            self.name_ok(s.name, s.pos, "state")
            k = self.kind(s.init, init_env, "in a state initializer (only w, hyperparameters and numbers)")
            for c in walk(s.init):
                if isinstance(c, Call) and ops.get(c.op).kind == "objective":
                    raise self.error(c.pos or s.pos, f"{c.op} evaluates the objective, which a state initializer "
                                                     f"does not have (init sees only w and hyperparameters)")
            if ops.wider(k, s.kind):
                raise self.error(s.pos, f"state {s.name!r} of kind {s.kind} cannot start from a {k} value")
            env[s.name] = s.kind
        states = {s.name: s for s in p.states}
        assigned: set[str] = set()
        pending: dict[str, object] = {}   # local name -> position of a value not yet read
        for a in p.body:
            k = self.kind(a.expr, env, f"in the assignment to {a.target!r}")
            for v in walk(a.expr):
                if isinstance(v, Var):
                    pending.pop(v.name, None)
            if a.target in INPUTS or a.target in const_env:
                raise self.error(a.pos, f"cannot assign to {'input' if a.target in INPUTS else 'hyperparameter'} "
                                        f"{a.target!r}")
            if a.target in states:
                if ops.wider(k, states[a.target].kind):
                    raise self.error(a.pos, f"a {k} value cannot be stored in {states[a.target].kind} state "
                                            f"{a.target!r}")
                assigned.add(a.target)
                continue
            self.name_ok(a.target, a.pos, "local")
            if a.target in pending:
                raise self.error(pending[a.target], f"local {a.target!r} is assigned here but never used")
            pending[a.target] = a.pos
            env[a.target] = k
        self.kind(p.output, env, "in the return expression")
        for v in walk(p.output):
            if isinstance(v, Var):
                pending.pop(v.name, None)
        if pending:
            name, pos = next(iter(pending.items()))
            raise self.error(pos, f"local {name!r} is assigned but never used")
        for s in p.states:
            # A never-assigned state is allowed only as a snapshot of the initial parameters (`state x0 = w`);
            # any other such state is a constant in disguise.
            if s.name not in assigned and not ("w" in {v.name for v in walk(s.init) if isinstance(v, Var)}
                                               and s.name in p.reads()):
                raise self.error(s.pos, f"state {s.name!r} is never assigned (assign it in the body, or "
                                        f"make it a local; only a read snapshot like `state x0 = w` may stay)")
        used = p.reads()
        drawn = inputs.random_inputs(used)
        if drawn:   # the PRNG key of the rule's state starts from PRNGKey(seed) (metaopt/dsl/inputs.py)
            if inputs.SEED not in hp_names:
                raise self.error(p.pos, f"{p.name} reads the random input {drawn[0]!r}: declare a hyperparameter "
                                        f"{inputs.SEED!r} (e.g. `optimizer {p.name}(..., {inputs.SEED} = 0)`) that "
                                        f"seeds its PRNG key")
            seed = p.defaults[inputs.SEED]
            if not (0 <= seed < 2 ** 32 and seed == int(seed)):
                raise self.error(hp_pos.get(inputs.SEED), f"{inputs.SEED} must be an integer in [0, 2^32) (it seeds "
                                                          f"the PRNG key), got {seed:g}")
            used = used | {inputs.SEED}
        if p.fallback is not None:
            f = p.fallback
            target_hps = self.fallback_target(f)
            names = set()
            for an, ae in f.args:
                if an in names:
                    raise self.error(ae.pos or f.pos, f"fallback argument {an!r} repeated")
                self.kind(ae, const_env, "in a fallback argument (only this program's hyperparameters)")
                if an not in target_hps:
                    raise self.error(self.arg_name_pos(an, ae.pos or f.pos), f"fallback {f.name} has no hyperparameter {an!r} "
                                                      f"(its hyperparameters: {', '.join(target_hps) or 'none'})"
                                                      f"{_close(an, list(target_hps))}")
                names.add(an)
                used |= {v.name for v in walk(ae) if isinstance(v, Var)}
            used |= self.predicate(f.when, const_env)
        for n in hp_names:
            if n not in used:
                raise self.error(hp_pos.get(n), f"hyperparameter {n!r} is never used")

    def fallback_target(self, f) -> tuple[str, ...]:
        """The hyperparameter names of the library program ``f`` names; its fallback chain must end."""
        header = fallback_header(f.name)
        if header is None:
            raise self.error(self.fallback_name_pos(f), f"fallback names unknown library optimizer {f.name!r}"
                                                        f"{_close(f.name, library_names())} (see `metaopt list`)")
        chain, nxt = [f.name], header[1]
        while nxt is not None:
            if nxt in chain:
                raise self.error(self.fallback_name_pos(f), f"fallback chain loops: {' -> '.join(chain + [nxt])}")
            chain.append(nxt)
            nxt_header = fallback_header(nxt)
            nxt = nxt_header[1] if nxt_header else None   # a missing link is reported when that file is parsed
        return header[0]

    def fallback_name_pos(self, f) -> tuple[int, int]:
        """Where the fallback's name starts on its line (the Fallback node keeps only the keyword's position)."""
        line, col = f.pos or self.p.pos or (1, 1)
        if self.source is not None:
            lines = self.source.splitlines()
            if 1 <= line <= len(lines):
                m = re.compile(r"fallback\s+").match(lines[line - 1], col - 1)
                if m:
                    return line, m.end() + 1
        return line, col

    def arg_name_pos(self, name: str, value_pos: tuple[int, int]) -> tuple[int, int]:
        """Where ``name = `` starts before the value at ``value_pos`` (the AST keeps only the value's)."""
        line, col = value_pos
        if self.source is not None:
            lines = self.source.splitlines()
            if 1 <= line <= len(lines):
                m = re.search(rf"\b{re.escape(name)}\s*=\s*$", lines[line - 1][:col - 1])
                if m:
                    return line, m.start() + 1
        return value_pos

    def predicate(self, q: Predicate, const_env: dict[str, str]) -> set[str]:
        if isinstance(q, BoolOp):
            out: set[str] = set()
            for a in q.args:
                out |= self.predicate(a, const_env)
            return out
        assert isinstance(q, Compare)
        # io is a 0/1 flag: a comparison with anything else (a hyperparameter, 0.5, 2) is almost surely a slip
        if q.quantity == "io" and not (isinstance(q.rhs, Const) and q.rhs.value in (0, 1)):
            raise self.error(q.rhs.pos or q.pos, "io is 1 for a leaf of the input/output layers, else 0: "
                                                 "compare it with 0 or 1 (e.g. `io == 1`)")
        if isinstance(q.rhs, Var):
            if q.rhs.name not in const_env:
                raise self.error(q.rhs.pos, f"undefined hyperparameter {q.rhs.name!r} in the fallback predicate")
            return {q.rhs.name}
        return set()


def validate(program: Program, filename: str = "<string>", source: str | None = None) -> Program:
    """Check ``program``; return it unchanged or raise ``DSLError``."""
    _Checker(program, filename, source).run()
    return program


def value_kinds(program: Program) -> dict[str, str]:
    """Kind of every name after the last statement (inputs, hyperparameters, states, locals)."""
    env = {**INPUT_KINDS, **{n: "const" for n, _ in program.hyperparams},
           **{s.name: s.kind for s in program.states}}
    c = _Checker(program, "<program>", None)
    for a in program.body:
        k = c.kind(a.expr, env, "")
        if a.target not in {s.name for s in program.states}:
            env[a.target] = k
    return env


def expr_kind(program: Program, e: Expr, env: dict[str, str]) -> str:
    return _Checker(program, "<program>", None).kind(e, env, "")
