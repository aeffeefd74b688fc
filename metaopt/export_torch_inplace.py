"""The in-place forms of ``metaopt.export_torch``: statements written straight into state buffers and the final
update applied term by term, so an exported optimizer allocates no more per step than torch's own.

* ``x + c * y`` (c a Python float) is ``torch.add(x, y, alpha=c)`` — ``x.add_(y, alpha=c)`` on a fresh x;
* a state statement whose top op has a torch function form is ``torch.<op>(..., out=<state buffer>)``;
* the output ``Σ c_i · term_i`` is applied as ``p.add_(p, alpha=-lr c)`` for ``w`` terms (first, while the other
  terms do not yet depend on the new ``p``), ``p.addcdiv_``/``p.addcmul_`` for quotients/products of tensors
  (a constant divisor ``(x / k) / b`` folded into the coefficient) and ``p.add_(term, alpha=-lr c)`` otherwise.
"""
from __future__ import annotations

import re

from metaopt.dsl import ops
from metaopt.dsl.program import Call, Expr, Var, walk

DIMS = ("row", "col", "tensor", "major", "minor")   # kinds held in tensors (in-place forms apply)
UNARY = re.compile(r"torch\.(\w+)\(\{0\}\)")


def paren(text: str, prec: int, need: int) -> str:
    return text if prec >= need else f"({text})"


class InPlaceForms:
    """Mixed into ``export_torch._Step`` (which provides ``kind``, ``is_number``, ``rt``)."""

    def axpy(self, e: Call, k: str, blk: _Block) -> str | None:
        """``x + c * y``, ``c * y + x``, ``x - c * y`` with a Python-float c as ``torch.add(x, y, alpha=c)``."""
        for xi, yi in ((0, 1), (1, 0)) if e.op == "add" else ((0, 1),):
            x, m = e.args[xi], e.args[yi]
            if not (isinstance(m, Call) and m.op == "mul") or self.kind(x) == "const":
                continue
            for ci in (0, 1):
                c, y = m.args[ci], m.args[1 - ci]
                if self.is_number(c) and self.kind(y) != "const":
                    ct, cp, _ = self.rt(c, blk)
                    alpha = ct if e.op == "add" else "-" + paren(ct, cp, 4)
                    (xt, xp, xf), (yt, _, _) = self.rt(x, blk), self.rt(y, blk)
                    if xf and k in DIMS and self.kind(x) == k:
                        return f"{paren(xt, xp, 5)}.add_({yt}, alpha={alpha})"
                    return f"torch.add({xt}, {yt}, alpha={alpha})"
        return None

    def out_form(self, e: Expr, buf: str, blk: _Block) -> str | None:
        """``torch.<op>(..., out=buf)`` for a statement whose top op has a torch function form."""
        if not isinstance(e, Call):
            return None
        if e.op in ("add", "sub"):
            fused = self.axpy(e, "const", blk)   # "const": never in place on an argument
            if fused:
                return fused[:-1] + f", out={buf})"
        if e.op in ("add", "sub", "mul", "div"):
            a, b = e.args
            if self.kind(a) == "const" and e.op in ("add", "mul"):
                a, b = b, a
            if self.kind(a) == "const":
                return None
            return f"torch.{e.op}({self.rt(a, blk)[0]}, {self.rt(b, blk)[0]}, out={buf})"
        m = UNARY.fullmatch(ops.get(e.op).torch)
        if m and self.kind(e.args[0]) != "const":
            return f"torch.{m[1]}({self.rt(e.args[0], blk)[0]}, out={buf})"
        return None

    def terms(self, e: Expr, coef: str) -> list[tuple[str, Expr]]:
        """The output as a sum of ``coef * term`` with Python-float coefficients (text ``-lr * ...``)."""
        if isinstance(e, Call) and e.op in ("add", "sub"):
            neg = coef[1:] if coef.startswith("-") else "-" + coef
            return self.terms(e.args[0], coef) + self.terms(e.args[1], coef if e.op == "add" else neg)
        if isinstance(e, Call) and e.op == "neg":
            return self.terms(e.args[0], coef[1:] if coef.startswith("-") else "-" + coef)
        if isinstance(e, Call) and e.op == "mul":
            for ci in (0, 1):
                c, y = e.args[ci], e.args[1 - ci]
                if self.is_number(c) and self.kind(y) != "const":
                    return self.terms(y, f"{coef} * {self._cparen(c)}")
        return [(coef, e)]

    def _cparen(self, c: Expr) -> str:
        text, prec, _ = self.rt(c, self._out_blk)
        return paren(text, prec, 3)

    def output(self, blk: _Block, e: Expr) -> None:
        k = self.kind(e)
        self._out_blk = blk
        terms = self.terms(e, "-lr") if k == "tensor" else []
        if len(terms) > 1 or (terms and isinstance(terms[0][1], Call) and terms[0][1].op in ("div", "mul")):
            if all(self.kind(t) != "const" for _, t in terms):
                self.apply_terms(blk, terms)
                blk.deps.add(("hp", "lr"))
                return
        if self.is_number(e):
            blk.body.append(f"p.add_(-lr * {paren(*self.rt(e, blk)[:2], 3)})")
        else:
            blk.body.append(f"p.add_({self.rt(e, blk)[0]}, alpha=-lr)")
        blk.deps.add(("hp", "lr"))

    def apply_terms(self, blk: _Block, terms: list[tuple[str, Expr]]) -> None:
        """``p += Σ coef · term`` in place: addcdiv_/addcmul_ for quotients/products, w-terms first."""
        reads_w = any(t != Var("w") and any(v == Var("w") for v in walk(t)) for _, t in terms)
        lines, pre = [], []
        for coef, t in sorted(terms, key=lambda ct: ct[1] != Var("w")):
            if t == Var("w"):
                lines.append(f"p.add_(p, alpha={coef})")
                continue
            if isinstance(t, Call) and t.op in ("div", "mul") and all(self.kind(a) in DIMS for a in t.args):
                a, b = t.args
                if t.op == "div" and isinstance(a, Call) and a.op == "div" and self.kind(a.args[1]) == "const":
                    k = self.rt(a.args[1], blk)[0]   # (x / k) / b: fold the constant into the coefficient
                    coef, a = f"{coef} / float({k})", a.args[0]
                args = [self.rt(a, blk)[0], self.rt(b, blk)[0]]
                if reads_w:
                    pre += [f"_a{len(pre)} = {args[0]}", f"_a{len(pre) + 1} = {args[1]}"]
                    args = [f"_a{len(pre) - 2}", f"_a{len(pre) - 1}"]
                lines.append(f"p.{'addcdiv_' if t.op == 'div' else 'addcmul_'}({args[0]}, {args[1]}, value={coef})")
                continue
            text = self.rt(t, blk)[0]
            if reads_w:
                pre.append(f"_a{len(pre)} = {text}")
                text = f"_a{len(pre) - 1}"
            lines.append(f"p.add_({text}, alpha={coef})")
        blk.body.extend(pre + lines)
