"""The ``Op`` record of the op registry (metaopt/dsl/ops.py; the matrix-shaped ops' entries are in
metaopt/dsl/ops_matrix.py). Its own module so that both registry modules build entries without importing each
other."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

OP_KINDS = ("elementwise", "reduce", "global", "factored", "matrix", "objective")
# One letter per op kind for `metaopt list` (the letters of shared/OPTIMIZERS.md); masks (comparisons,
# where) are W, reading the loss is L (an input, not an op).
_LETTER = {"elementwise": "E", "reduce": "S", "global": "S", "factored": "F", "matrix": "M", "objective": "H"}


@dataclass(frozen=True)
class Op:
    """One DSL op.

    ``fn`` is the per-leaf JAX function for elementwise/reduce/factored/matrix ops. Global ops are
    ``finish(combine over leaves of partial(leaf, *args))``: ``partial`` maps one leaf's argument values
    (``leaf`` is that leaf's gradient, giving its shape) to a 0-d partial result, ``combine`` is ``"sum"``
    or ``"max"``, and ``finish`` maps the combined value to the result.

    Text form: ``symbol`` for infix (binary) or prefix (unary) ops with ``prec`` and ``assoc``; otherwise
    call syntax ``name(a, b)``. Python (``to_source``): infix ops use their symbol (``^`` is ``**``), other ops
    the ``py`` template with the same wrapping rule (``py_wrap``/``py_prec``); ``helper`` names a function
    of ``pyhelpers.py`` that the template calls (its source is copied into exported modules). LaTeX: ``latex`` is a ``str.format`` template over ``{0}``, ``{1}`` ...;
    argument *i* is parenthesised when its own LaTeX precedence is below ``latex_wrap[i]``; the rendered
    result has precedence ``latex_prec`` (5 = atomic).
    """
    name: str
    arity: int
    kind: str
    fn: Callable | None
    latex: str
    doc: str
    searchable: bool = True
    symbol: str | None = None
    prec: int = 5
    assoc: str = "left"
    latex_prec: int = 5
    latex_wrap: tuple[int, ...] = ()
    letter: str = ""
    partial: Callable | None = field(default=None, repr=False)
    combine: str = "sum"
    finish: Callable | None = field(default=None, repr=False)
    py: str = ""                 # Python text form (export): template over {0}, {1}, ...; global ops: partial
    py_finish: str = "{0}"       # global ops: Python text applied to the combined partials
    py_wrap: tuple[int, ...] = ()
    py_prec: int = 5
    helper: str = ""             # name of a helper in metaopt/dsl/pyhelpers.py the Python form calls
    # PyTorch form (to_torch_source): template over {0}, {1} ... calling torch or a `_helper` of
    # metaopt/torch_runtime.py (same semantics as ``fn``); global ops: (partial over {0}.. and {leaf}, finish).
    torch: str | tuple[str, str] = ""
    # matrix ops on major/minor values: argument slots and result kind (metaopt/dsl/matrix_kinds.py's result)
    sig: tuple[str, ...] = ()
    # objective ops: the result's kind, "tensor" (each leaf reads its part: grad_at) or "global" (one value for
    # all leaves: loss_at)
    result: str = "tensor"

    @property
    def infix(self) -> bool:
        return self.symbol is not None and self.arity == 2

    @property
    def prefix(self) -> bool:
        return self.symbol is not None and self.arity == 1

    @property
    def tag(self) -> str:
        """The OPTIMIZERS.md kind letter this op contributes (E, S, F, M or W)."""
        return self.letter or _LETTER[self.kind]
