"""Parser: DSL text -> Program (then validated, see validate.py).

Line based; ``#`` starts a comment. Leading comment lines (before ``optimizer``) become ``Program.doc``.
Expression grammar (precedence climbing, Python-like)::

    expr  := term (('+' | '-') term)*
    term  := unary (('*' | '/') unary)*
    unary := '-' unary | power              # '-' NUMBER (not followed by '^') is a negative literal
    power := atom ('^' unary)?              # right-associative: a ^ b ^ c = a ^ (b ^ c)
    atom  := NUMBER | NAME | NAME '(' [expr (',' expr)*] ')' | '(' expr ')'
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from metaopt.dsl import ops
from metaopt.dsl.errors import DSLError
from metaopt.dsl.program import (COMPARATORS, LEAF_QUANTITIES, STATE_KINDS, Assign, BoolOp, Call,
                                 Compare, Const, Expr, Fallback, Predicate, Program, StateDecl, Var)

_TOKEN = re.compile(r"""
    (?P<ws>[ \t]+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>==|!=|<=|>=|[-+*/^(),=:<>])
""", re.VERBOSE)


@dataclass
class Tok:
    kind: str   # num | name | op | end
    text: str
    line: int
    col: int


def _tokenize(line: str, lineno: int, file: str, source: str) -> list[Tok]:
    code = line.split("#", 1)[0]
    toks, i = [], 0
    while i < len(code):
        m = _TOKEN.match(code, i)
        if not m:
            raise DSLError(file, lineno, i + 1, f"unexpected character {code[i]!r}", source)
        if m.lastgroup != "ws":
            toks.append(Tok(m.lastgroup, m.group(), lineno, i + 1))
        i = m.end()
    toks.append(Tok("end", "", lineno, len(code.rstrip()) + 1))
    return toks


class _Line:
    """Recursive-descent parser over the tokens of one line."""

    def __init__(self, toks: list[Tok], file: str, source: str):
        self.toks, self.i, self.file, self.source = toks, 0, file, source

    @property
    def tok(self) -> Tok:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def error(self, msg: str, tok: Tok | None = None) -> DSLError:
        tok = tok or self.tok
        return DSLError(self.file, tok.line, tok.col, msg, self.source)

    def _found(self) -> str:
        return "end of line" if self.tok.kind == "end" else repr(self.tok.text)

    def expect(self, text: str, what: str | None = None) -> Tok:
        if self.tok.text != text or self.tok.kind == "end":
            raise self.error(f"expected {what or repr(text)}, found {self._found()}")
        t = self.tok
        self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.tok.kind != "end" and self.tok.text == text:
            self.i += 1
            return True
        return False

    def name(self, what: str = "a name") -> Tok:
        if self.tok.kind != "name":
            raise self.error(f"expected {what}, found {self._found()}")
        t = self.tok
        self.i += 1
        return t

    def number(self) -> float:
        neg = self.accept("-")
        if self.tok.kind != "num":
            raise self.error(f"expected a number, found {self._found()}")
        v = float(self.tok.text)
        self.i += 1
        return -v if neg else v

    def end(self) -> None:
        if self.tok.kind != "end":
            raise self.error(f"expected end of line, found {self._found()}")

    # --- expressions --------------------------------------------------------------------------------
    def expr(self) -> Expr:
        e = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            t = self.tok
            self.i += 1
            e = Call(ops.infix(t.text).name, (e, self.term()), pos=(t.line, t.col))
        return e

    def term(self) -> Expr:
        e = self.unary()
        while self.tok.kind == "op" and self.tok.text in "*/":
            t = self.tok
            self.i += 1
            e = Call(ops.infix(t.text).name, (e, self.unary()), pos=(t.line, t.col))
        return e

    def unary(self) -> Expr:
        t = self.tok
        if t.kind == "op" and ops.prefix(t.text) is not None:
            nxt, after = self.peek(1), self.peek(2)
            if nxt.kind == "num" and not (after.kind == "op" and after.text == "^"):
                self.i += 2   # a negative literal: `-1` is Const(-1), so it prints back as `-1`
                return Const(-float(nxt.text), pos=(t.line, t.col))
            self.i += 1
            return Call(ops.prefix(t.text).name, (self.unary(),), pos=(t.line, t.col))
        return self.power()

    def power(self) -> Expr:
        e = self.atom()
        if self.tok.kind == "op" and self.tok.text == "^":
            t = self.tok
            self.i += 1
            e = Call(ops.infix("^").name, (e, self.unary()), pos=(t.line, t.col))
        return e

    def atom(self) -> Expr:
        t = self.tok
        if t.kind == "num":
            self.i += 1
            return Const(float(t.text), pos=(t.line, t.col))
        if t.kind == "name":
            self.i += 1
            if not self.accept("("):
                return Var(t.text, pos=(t.line, t.col))
            args: list[Expr] = []
            if not self.accept(")"):
                args.append(self.expr())
                while self.accept(","):
                    args.append(self.expr())
                self.expect(")", "',' or ')'")
            return Call(t.text, tuple(args), pos=(t.line, t.col))
        if self.accept("("):
            e = self.expr()
            self.expect(")")
            return e
        raise self.error(f"expected an expression (number, name, call or '('), found {self._found()}")

    # --- fallback predicates -----------------------------------------------------------------------
    def predicate(self) -> Predicate:
        return self._bool("or", self._and)

    def _and(self) -> Predicate:
        return self._bool("and", self._pred_atom)

    def _bool(self, word: str, sub) -> Predicate:
        t = self.tok
        parts = [sub()]
        while self.tok.kind == "name" and self.tok.text == word:
            self.i += 1
            parts.append(sub())
        return parts[0] if len(parts) == 1 else BoolOp(word, tuple(parts), pos=(t.line, t.col))

    def _pred_atom(self) -> Predicate:
        if self.accept("("):
            p = self.predicate()
            self.expect(")")
            return p
        t = self.name(f"a leaf quantity ({', '.join(LEAF_QUANTITIES)})")
        if t.text not in LEAF_QUANTITIES:
            raise self.error(f"expected a leaf quantity ({', '.join(LEAF_QUANTITIES)}), found {t.text!r}", t)
        c = self.tok
        if c.text not in COMPARATORS or c.kind != "op":
            raise self.error(f"expected a comparison ({' '.join(COMPARATORS)}), found {self._found()}")
        self.i += 1
        r = self.tok
        if r.kind == "name":
            self.i += 1
            rhs: Expr = Var(r.text, pos=(r.line, r.col))
        else:
            rhs = Const(self.number(), pos=(r.line, r.col))
        return Compare(t.text, c.text, rhs, pos=(t.line, t.col))


def parse_unvalidated(text: str, filename: str = "<string>") -> Program:
    """Parse without the semantic checks of ``validate`` (syntax errors still raise ``DSLError``)."""
    doc: list[str] = []
    header = None
    states: list[StateDecl] = []
    body: list[Assign] = []
    output = fallback = None
    last = (1, 1)
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if header is None:   # only the leading comment block is documentation
                doc.append(stripped[1:][1:] if stripped[1:2] == " " else stripped[1:])
            continue
        p = _Line(_tokenize(raw, lineno, filename, text), filename, text)
        first = p.tok
        last = (lineno, first.col)
        if header is None:
            if first.text != "optimizer":
                raise p.error("expected 'optimizer NAME(...)' header")
            p.i += 1
            name = p.name("the optimizer name")
            p.expect("(")
            hps: list[tuple[str, float]] = []
            hp_pos: list[tuple[int, int]] = []
            if not p.accept(")"):
                while True:
                    hn = p.name("a hyperparameter name or ')'")
                    hp_pos.append((hn.line, hn.col))
                    p.expect("=", "'=' and a default value")
                    hps.append((hn.text, p.number()))
                    if p.accept(")"):
                        break
                    p.expect(",", "',' or ')'")
            p.end()
            header = (name.text, tuple(hps), (first.line, first.col), tuple(hp_pos))
            continue
        if fallback is not None:
            raise p.error("nothing may follow the fallback line")
        if first.text == "fallback" and first.kind == "name":
            if output is None:
                raise p.error("'fallback' must come after 'return'")
            p.i += 1
            fname = p.name("the fallback optimizer's name")
            p.expect("(")
            args: list[tuple[str, Expr]] = []
            if not p.accept(")"):
                while True:
                    an = p.name("an argument name")
                    p.expect("=")
                    args.append((an.text, p.expr()))
                    if p.accept(")"):
                        break
                    p.expect(",", "',' or ')'")
            w = p.tok
            if not (w.kind == "name" and w.text == "when"):
                raise p.error(f"expected 'when' and a shape predicate, found {p._found()}")
            p.i += 1
            fallback = Fallback(fname.text, tuple(args), p.predicate(), pos=(first.line, first.col))
            p.end()
            continue
        if output is not None:
            raise p.error("only a 'fallback' line may follow 'return'")
        if first.text == "return" and first.kind == "name":
            p.i += 1
            output = p.expr()
            p.end()
        elif first.text == "state" and first.kind == "name":
            if body:
                raise p.error("state declarations must come before the statements")
            p.i += 1
            sn = p.name("a state name")
            kind = "tensor"
            if p.accept(":"):
                kt = p.name(f"a state kind ({' | '.join(STATE_KINDS)})")
                if kt.text not in STATE_KINDS:
                    raise p.error(f"expected a state kind ({' | '.join(STATE_KINDS)}), found {kt.text!r}", kt)
                kind = kt.text
            p.expect("=", "'=' and an initial value")
            states.append(StateDecl(sn.text, kind, p.expr(), pos=(sn.line, sn.col)))
            p.end()
        else:
            tn = p.name("a statement 'NAME = expr', 'state', 'return' or 'fallback'")
            p.expect("=", "'=' (an assignment)")
            body.append(Assign(tn.text, p.expr(), pos=(tn.line, tn.col)))
            p.end()
    if header is None:
        raise DSLError(filename, last[0], 1, "expected 'optimizer NAME(...)' header, found no code", text)
    if output is None:
        raise DSLError(filename, last[0] + 1, 1, "expected a 'return' statement", text)
    name, hps, pos, hp_pos = header
    return Program(name, hps, tuple(states), tuple(body), output, fallback, "\n".join(doc), pos=pos,
                   hp_pos=hp_pos)
