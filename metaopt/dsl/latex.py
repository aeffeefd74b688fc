"""LaTeX rendering of a Program: an ``aligned`` block, one line per statement, using each op's LaTeX form."""
from __future__ import annotations

import re

from metaopt.dsl import inputs, ops
from metaopt.dsl.program import Call, Const, Expr, Program, Var, format_number

_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "eta", "theta", "kappa", "lambda", "mu", "nu", "rho",
          "sigma", "tau", "phi", "psi", "omega"}
_ALIASES = {"eps": r"\epsilon", **{i.name: i.latex for i in inputs.all_inputs()}}   # inputs: their registry form


def latex_name(name: str) -> str:
    """``b1`` → ``b_{1}``, ``beta2`` → ``\\beta_{2}``, ``m_hat`` → ``m_{\\text{hat}}``."""
    if name in _ALIASES:
        return _ALIASES[name]
    m = re.fullmatch(r"([A-Za-z]+?)_?(\d+)", name)
    if m:
        base, sub = m.groups()
        return f"{latex_name(base)}_{{{sub}}}"
    if name in _GREEK:
        return "\\" + name
    if "_" in name:
        base, rest = name.split("_", 1)
        return f"{latex_name(base)}_{{\\text{{{rest.replace('_', ' ')}}}}}"
    return name if len(name) == 1 else f"\\mathit{{{name}}}"


def _render(e: Expr) -> tuple[str, int]:
    if isinstance(e, Const):
        s = format_number(e.value)
        if "e" in s:
            mant, exp = s.split("e")
            s = f"{mant} \\cdot 10^{{{int(exp)}}}" if mant not in ("1", "-1") else f"{'-' if mant == '-1' else ''}10^{{{int(exp)}}}"
        return s, (3 if e.value < 0 else 5)
    if isinstance(e, Var):
        return latex_name(e.name), 5
    op = ops.get(e.op)
    wrap = op.latex_wrap or (0,) * len(e.args)
    args = []
    for a, need in zip(e.args, wrap):
        s, p = _render(a)
        args.append(s if p >= need else f"\\left({s}\\right)")
    return op.latex.format(*args), op.latex_prec


def latex_expr(e: Expr) -> str:
    return _render(e)[0]


def to_latex(program: Program) -> str:
    """``\\begin{aligned} m &\\leftarrow ... \\\\ u &= ... \\end{aligned}`` for ``program``.

    State initialisations are shown as ``m_0 = ...``; assignments as ``←``; the result as ``u``, applied as
    ``w ← w − η_t u``."""
    states = {s.name for s in program.states}
    lines = []
    for s in program.states:
        name = latex_name(s.name)
        # a name that has a subscript already (s0 -> s_{0}) is grouped: "s_{0}_{0}" is a double-subscript error
        lines.append(f"{{{name}}}_{{0}} &= {latex_expr(s.init)}" if "_" in name else f"{name}_{{0}} &= {latex_expr(s.init)}")
    for a in program.body:
        arrow = r"\leftarrow" if a.target in states else "="
        lines.append(f"{latex_name(a.target)} &{arrow} {latex_expr(a.expr)}")
    lines.append(f"u &= {latex_expr(program.output)}")
    lines.append(r"w &\leftarrow w - \eta_t \, u")
    if program.fallback is not None:
        from metaopt.dsl.program import format_predicate
        lines.append(f"&\\text{{(leaves with {format_predicate(program.fallback.when)}: "
                     f"{program.fallback.name.replace('_', ' ')})}}")
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"
