"""The search's view of the DSL: parse, validate, simplify, fingerprint, size, initial programs.

One adapter module, so the rest of search/ depends on a handful of functions rather than on the DSL
packages' internals. ``simplify`` and ``fingerprint`` come from the interpreter engineer's
``metaopt.dsl.simplify`` / ``metaopt.fingerprint``; while those are absent the fallbacks are the
identity and a hash of the canonical text (correct, only blind to functional equivalence).
"""
from __future__ import annotations

import dataclasses
import hashlib

from metaopt.dsl import Call, DSLError, Program, parse as _parse, validate as _validate, walk

MINIMAL_TEXT = "optimizer minimal()\nreturn g\n"


def parse(text: str) -> Program:
    """Parse and validate DSL text (raises :class:`metaopt.dsl.DSLError`)."""
    return _parse(text, "<candidate>")


def validate(program: Program) -> Program:
    return _validate(program, "<mutant>", None)


def _anonymous(program: Program) -> Program:
    # Name and doc carry no behaviour: two mutants differing only there are the same candidate.
    return dataclasses.replace(program, name="candidate", doc="")


def simplify(program: Program) -> Program:
    """The DSL simplifier when available (constant folding, dead code, algebraic identities)."""
    try:
        from metaopt.dsl.simplify import simplify as _simplify
    except ImportError:
        return program
    return _simplify(program)


def fingerprint(program: Program) -> str:
    """A functional hash: equal for programs the fingerprint module proves/tests equivalent."""
    try:
        from metaopt.fingerprint import fingerprint as _fingerprint
    except ImportError:
        return hashlib.sha256(str(_anonymous(program)).encode()).hexdigest()[:16]
    return _fingerprint(_anonymous(program))


def text(program: Program) -> str:
    """Canonical text (``parse(text(p)) == p``), named ``candidate`` so equal programs print equally."""
    return str(_anonymous(program))


def length(program: Program) -> int:
    """Instructions the program needs: one per op call in the body and the return (states' inits are
    computed once, outside the step). This is what ``max_len`` bounds, matching the interpreter's
    one-op-per-row encoding; a bare ``return g`` is one (a copy)."""
    n = sum(1 for a in program.body for c in walk(a.expr) if isinstance(c, Call))
    n += sum(1 for c in walk(program.output) if isinstance(c, Call))
    return max(n, 1) + sum(1 for a in program.body if not isinstance(a.expr, Call))


def initial_program(init: str) -> Program:
    """``minimal`` (``return g``: plain gradient descent) or a library program by name (``adamw``)."""
    if init == "minimal":
        return parse(MINIMAL_TEXT)
    import metaopt.library
    return metaopt.library.get(init)


__all__ = ["parse", "validate", "simplify", "fingerprint", "text", "length", "initial_program", "DSLError",
           "MINIMAL_TEXT"]
