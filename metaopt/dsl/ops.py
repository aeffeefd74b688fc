"""The op registry: every DSL op described exactly once.

The parser (arity, infix symbols, precedence), the printers (text, LaTeX, Python source), the validator
(value kinds), the compiler (JAX functions), the batched interpreter and search mutation (``searchable``)
all read this table, so adding an op is adding one ``Op(...)`` entry below (the matrix-shaped ops' entries:
metaopt/dsl/ops_matrix.py, spliced in; the ``Op`` record: metaopt/dsl/op.py).

Value kinds form a lattice (see ``join``)::

    const ⊂ global ⊂ scalar ⊂ row, col ⊂ tensor        (row ∨ col = tensor)
                     scalar ⊂ major, minor              (matrix-shaped; see metaopt/dsl/matrix_kinds.py)

``const``: literals, hyperparameters, ``t``, ``lr``; ``global``: one value shared by all leaves (``loss``,
global reductions); ``scalar``: one value per leaf (per-leaf reductions); ``row``/``col``: a 2-D leaf's row
statistics (shape ``[..., r, 1]``) or column statistics (``[..., 1, c]``); ``tensor``: the leaf's shape;
``major``/``minor``: a square matrix on the longer/shorter side of a 2-D leaf (Shampoo's L and R, GaLore's P).

Op kinds: ``elementwise`` (result kind = join of the arguments), ``reduce`` (per leaf, broadcasts back),
``global`` (over every leaf the program handles), ``factored`` (row/column statistics of 2-D leaves),
``matrix`` (whole-matrix ops on 2-D leaves, e.g. Newton–Schulz orthogonalization), ``objective`` (evaluate the
objective ``obj_fn`` of ``update(..., obj_fn=)`` at a point given per leaf, once for all leaves: ``grad_at``,
``loss_at``).

Complex parameters follow optax (``numerics.abs_sq``, ``tree.real(tree.vdot(...))``): ``square(x)`` is
``|x|^2`` and ``abs(x)`` is ``|x|``, both real, so ``rms``/``norm``/``global_norm`` are real too; ``dot(a, b)``
is ``sum(Re(conj(a) * b))``; ``sign(x)`` is ``x/|x|``. Order-based ops (``max min clip relu gt lt ge le``)
order a complex value as ``jnp.maximum`` does, real part first — exact for the real-valued moments that, as in
optax, are stored in the parameter's complex dtype. A real argument takes exactly the real code path.
"""
from __future__ import annotations

import difflib
import operator

import jax
import jax.numpy as jnp

from metaopt.dsl import matrix_kinds as MK
from metaopt.dsl import pyhelpers as H
from metaopt.dsl.op import OP_KINDS, Op  # noqa: F401  (re-exported: ops.Op, ops.OP_KINDS)
from metaopt.dsl.ops_matrix import OPS as MATRIX_OPS

KINDS = ("const", "global", "scalar", "row", "col", "tensor", *MK.SQUARE)
_RANK = {"const": 0, "global": 1, "scalar": 2, "row": 3, "col": 3, "tensor": 4, "major": 3, "minor": 3}


def join(*kinds: str) -> str:
    """The narrowest kind containing every argument kind (``row ∨ col = tensor``); ``ValueError`` for kinds of
    different shapes (``major``/``minor`` with each other or with a leaf-shaped kind)."""
    out = "const"
    for k in kinds:
        if k in MK.SQUARE or out in MK.SQUARE:
            out = MK.join_square(out, k)
        elif _RANK[k] > _RANK[out]:
            out = k
        elif _RANK[k] == _RANK[out] and k != out:
            out = "tensor"
    return out


def wider(a: str, b: str) -> bool:
    """True when a value of kind ``a`` does not fit into a slot of kind ``b``."""
    try:
        return join(a, b) != b
    except ValueError:   # shapes that do not combine (a major matrix into a tensor state)
        return True


def _interp(a, b, beta):
    # beta*a + (1-beta)*b: the EMA form optax's update_moment computes ((1-d)*g + d*m; + commutes exactly).
    return beta * a + (1 - beta) * b


def _rms(x):
    return jnp.sqrt(jnp.mean(H.abs_sq(x)))


def _E(name, arity, fn, latex, doc, **kw) -> Op:
    return Op(name, arity, "elementwise", fn, latex, doc, **kw)


_OPS: tuple[Op, ...] = (
    # --- infix / prefix arithmetic (precedence: + - 1, * / 2, unary - 3, ^ 4 right-assoc) -------------
    _E("add", 2, operator.add, "{0} + {1}", "a + b", symbol="+", prec=1, latex_prec=1, latex_wrap=(1, 1),
       torch="torch.add({0}, {1})"),
    _E("sub", 2, operator.sub, "{0} - {1}", "a - b", symbol="-", prec=1, latex_prec=1, latex_wrap=(1, 2),
       torch="torch.sub({0}, {1})"),
    _E("mul", 2, operator.mul, r"{0} \, {1}", "a * b", symbol="*", prec=2, latex_prec=2, latex_wrap=(2, 3),
       torch="torch.mul({0}, {1})"),
    _E("div", 2, operator.truediv, r"\frac{{{0}}}{{{1}}}", "a / b", symbol="/", prec=2, latex_wrap=(0, 0),
       torch="torch.div({0}, {1})"),
    _E("pow", 2, operator.pow, "{0}^{{{1}}}", "a ^ b (power)", symbol="^", prec=4, assoc="right",
       latex_wrap=(5, 0),
       torch="torch.pow({0}, {1})"),
    _E("neg", 1, operator.neg, "-{0}", "-a", symbol="-", prec=3, latex_prec=3, latex_wrap=(3,),
       torch="torch.neg({0})"),
    # --- elementwise calls ---------------------------------------------------------------------------
    _E("sqrt", 1, jnp.sqrt, r"\sqrt{{{0}}}", "square root",
       py="jnp.sqrt({0})",
       torch="torch.sqrt({0})"),
    _E("rsqrt", 1, lambda x: jax.lax.rsqrt(jnp.asarray(x)), r"\frac{{1}}{{\sqrt{{{0}}}}}", "1/sqrt(x)",
       py="jax.lax.rsqrt(jnp.asarray({0}))",
       torch="torch.rsqrt({0})"),
    _E("square", 1, H.abs_sq, "{0}^{{2}}", "x^2 (|x|^2, real, for complex x)", latex_wrap=(5,),
       py="abs_sq({0})", helper="abs_sq",
       torch="torch.square({0})"),
    _E("abs", 1, jnp.abs, r"\left|{0}\right|", "absolute value (|x|, real, for complex x)",
       py="jnp.abs({0})",
       torch="torch.abs({0})"),
    _E("sign", 1, jnp.sign, r"\operatorname{{sign}}({0})", "sign (0 at 0; x/|x| for complex x)",
       py="jnp.sign({0})",
       torch="torch.sign({0})"),
    _E("exp", 1, jnp.exp, r"e^{{{0}}}", "exponential",
       py="jnp.exp({0})",
       torch="torch.exp({0})"),
    _E("log", 1, jnp.log, r"\log({0})", "natural logarithm",
       py="jnp.log({0})",
       torch="torch.log({0})"),
    _E("tanh", 1, jnp.tanh, r"\tanh({0})", "hyperbolic tangent",
       py="jnp.tanh({0})",
       torch="torch.tanh({0})"),
    _E("sigmoid", 1, jax.nn.sigmoid, r"\sigma({0})", "logistic sigmoid",
       py="jax.nn.sigmoid({0})",
       torch="torch.sigmoid({0})"),
    _E("relu", 1, lambda x: jnp.maximum(x, 0), r"\max({0}, 0)", "max(x, 0)",
       py="jnp.maximum({0}, 0)",
       torch="torch.relu({0})"),
    _E("max", 2, jnp.maximum, r"\max({0}, {1})", "elementwise maximum",
       py="jnp.maximum({0}, {1})",
       torch="_maximum({0}, {1})"),
    _E("min", 2, jnp.minimum, r"\min({0}, {1})", "elementwise minimum",
       py="jnp.minimum({0}, {1})",
       torch="_minimum({0}, {1})"),
    _E("clip", 3, H.clip, r"\operatorname{{clip}}({0}, {1}, {2})", "clip(x, lo, hi)",
       py="clip({0}, {1}, {2})", helper="clip",
       torch="_clip({0}, {1}, {2})"),
    _E("interp", 3, _interp, r"{2} {0} + (1 - {2}) {1}", "interp(a, b, beta) = beta*a + (1-beta)*b",
       latex_prec=1, latex_wrap=(3, 3, 3),
       py="{2} * {0} + (1 - {2}) * {1}", py_prec=1, py_wrap=(3, 3, 3),
       torch="{2} * {0} + (1 - {2}) * {1}"),
    _E("mod", 2, jnp.mod, r"{0} \bmod {1}", "a mod b (floor modulo, sign of b); e.g. mod(t - 1, T) for "
       "every-T-steps refreshes", searchable=False, latex_prec=2, latex_wrap=(3, 3),
       py="jnp.mod({0}, {1})",
       torch="torch.remainder({0}, {1})"),
    # Not searchable (nor row_max/col_max below): adding ops to the search space changes the interpreter's opcode
    # table and every seeded search; they exist for library rules (Adam-atan2, SM3).
    _E("atan2", 2, jnp.arctan2, r"\operatorname{{atan2}}({0}, {1})", "atan2(a, b): the angle of the point (b, a); "
       "about a/b when |a| << b, at most pi/2 in size when b >= 0 (Adam-atan2's eps-free a/b); real only",
       searchable=False,
       py="jnp.arctan2({0}, {1})",
       torch="_atan2({0}, {1})"),
    # the normal CDF is 0.5 (1 + erf(z / sqrt 2)): a uniform draw from a normal one (LISA's layer sampling)
    _E("erf", 1, jax.lax.erf, r"\operatorname{{erf}}({0})", "the error function (real only)", searchable=False,
       py="jax.lax.erf({0})",
       torch="torch.erf({0})"),
    _E("where", 3, lambda c, a, b: jnp.where(c != 0, a, b), r"\begin{{cases}}{1} & {0} \neq 0 \\ {2} & "
       r"\text{{otherwise}}\end{{cases}}", "where(c, a, b): a where c != 0 else b", letter="W",
       py="jnp.where({0} != 0, {1}, {2})",
       torch="_where({0}, {1}, {2})"),
    _E("gt", 2, H.gt, r"[{0} > {1}]", "1.0 where a > b else 0.0", letter="W",
       py="gt({0}, {1})", helper="gt",
       torch="_gt({0}, {1})"),
    _E("lt", 2, H.lt, r"[{0} < {1}]", "1.0 where a < b else 0.0", letter="W",
       py="lt({0}, {1})", helper="lt",
       torch="_lt({0}, {1})"),
    _E("ge", 2, H.ge, r"[{0} \geq {1}]", "1.0 where a >= b else 0.0", letter="W",
       py="ge({0}, {1})", helper="ge",
       torch="_ge({0}, {1})"),
    _E("le", 2, H.le, r"[{0} \leq {1}]", "1.0 where a <= b else 0.0", letter="W",
       py="le({0}, {1})", helper="le",
       torch="_le({0}, {1})"),
    # --- per-leaf reductions (result: one value per leaf, broadcast back) -----------------------------
    Op("mean", 1, "reduce", jnp.mean, r"\operatorname{{mean}}({0})", "mean over the leaf's elements",
       py="jnp.mean({0})",
       torch="torch.mean({0})"),
    Op("sum", 1, "reduce", jnp.sum, r"\textstyle\sum {0}", "sum over the leaf's elements", latex_wrap=(5,),
       py="jnp.sum({0})",
       torch="torch.sum({0})"),
    Op("rms", 1, "reduce", _rms, r"\operatorname{{rms}}({0})", "sqrt(mean(|x|^2))",
       py="jnp.sqrt(jnp.mean(abs_sq({0})))", helper="abs_sq",
       torch="torch.sqrt(torch.mean(torch.square({0})))"),
    Op("norm", 1, "reduce", lambda x: jnp.sqrt(jnp.sum(H.abs_sq(x))), r"\lVert {0} \rVert_2",
       "Euclidean (Frobenius) norm of the leaf",
       py="jnp.sqrt(jnp.sum(abs_sq({0})))", helper="abs_sq",
       torch="torch.sqrt(torch.sum(torch.square({0})))"),
    Op("max_abs", 1, "reduce", lambda x: jnp.max(jnp.abs(x)), r"\lVert {0} \rVert_\infty", "max |x| over the leaf",
       py="jnp.max(jnp.abs({0}))",
       torch="torch.max(torch.abs({0}))"),
    Op("numel", 1, "reduce", lambda x: jnp.asarray(jnp.size(x), jnp.float32), r"\operatorname{{numel}}({0})",
       "number of elements of x",
       py="jnp.asarray(jnp.size({0}), jnp.float32)",
       torch="_numel({0})"),
    Op("dot", 2, "reduce", H.dot, r"\langle {0}, {1} \rangle",
       "sum(a * b) over the leaf (sum(Re(conj(a) * b)) for complex values)",
       py="dot({0}, {1})", helper="dot",
       torch="torch.sum(({0}) * ({1}))"),   # parenthesized: the arguments may be sums (x0 - w)
    # --- global reductions (over every leaf the program handles) --------------------------------------
    Op("global_sum", 1, "global", None, r"\textstyle\sum_{{\text{{all}}}} {0}", "sum over all leaves' elements "
       "(a per-leaf scalar counts once per leaf)", partial=lambda leaf, x: jnp.sum(x), latex_wrap=(5,),
       py="jnp.sum({0})",
       torch=('torch.sum({0})', '{0}')),
    Op("global_norm", 1, "global", None, r"\lVert {0} \rVert_{{2,\text{{all}}}}", "norm over all leaves",
       partial=lambda leaf, x: jnp.sum(H.abs_sq(x)), finish=jnp.sqrt,
       py="jnp.sum(abs_sq({0}))", py_finish="jnp.sqrt({0})", helper="abs_sq",
       torch=('torch.sum(torch.square({0}))', 'torch.sqrt({0})')),
    Op("global_max", 1, "global", None, r"\max_{{\text{{all}}}} {0}", "max over all leaves' elements",
       partial=lambda leaf, x: jnp.max(x), combine="max", latex_wrap=(5,),
       py="jnp.max({0})",
       torch=('torch.max({0})', '{0}')),
    Op("global_numel", 0, "global", None, r"N_{{\text{{all}}}}", "number of elements of all leaves",
       partial=lambda leaf: jnp.asarray(jnp.size(leaf), jnp.float32),
       py="jnp.asarray(jnp.size({leaf}), jnp.float32)",
       torch=('_numel({leaf})', '{0}')),
    # --- factored statistics of 2-D leaves ------------------------------------------------------------
    Op("row_mean", 1, "factored", H.row_mean,
       r"\operatorname{{rowmean}}({0})", "mean over the last axis, shape [r, 1]",
       py="row_mean({0})", helper="row_mean",
       torch="_row_mean({0})"),
    Op("col_mean", 1, "factored", H.col_mean,
       r"\operatorname{{colmean}}({0})", "mean over the second-to-last axis, shape [1, c]",
       py="col_mean({0})", helper="col_mean",
       torch="_col_mean({0})"),
    Op("row_max", 1, "factored", H.row_max,
       r"\operatorname{{rowmax}}({0})", "max over the last axis, shape [r, 1] (SM3's row cover)",
       searchable=False, py="row_max({0})", helper="row_max",
       torch="_row_max({0})"),
    Op("col_max", 1, "factored", H.col_max,
       r"\operatorname{{colmax}}({0})", "max over the second-to-last axis, shape [1, c] (SM3's column cover)",
       searchable=False, py="col_max({0})", helper="col_max",
       torch="_col_max({0})"),
    # --- matrix ops -----------------------------------------------------------------------------------
    Op("orthogonalize", 1, "matrix", H.orthogonalize, r"\operatorname{{NS}}_5({0})",
       "Newton-Schulz orthogonalization, optax.contrib.muon's quintic coefficients, 5 steps",
       searchable=False,   # a lax.switch branch under vmap would cost every search candidate a NS solve
       py="orthogonalize({0})", helper="orthogonalize",
       torch="_orthogonalize({0})"),
    Op("row_normalize", 1, "matrix", H.row_normalize,
       r"\operatorname{{rownorm}}({0})", "divide each row by its RMS (+1e-8)",
       py="row_normalize({0})", helper="row_normalize",
       torch="_row_normalize({0})"),
    Op("col_normalize", 1, "matrix", H.col_normalize,
       r"\operatorname{{colnorm}}({0})", "divide each column by its RMS (+1e-8)",
       py="col_normalize({0})", helper="col_normalize",
       torch="_col_normalize({0})"),
    # SVD-based (not searchable: an SVD per candidate under vmap is costly, and signs of singular vectors
    # are arbitrary, so only sign-invariant combinations such as unproject(p, f(project(p, x))) are meaningful)
    Op("whiten", 1, "matrix", H.whiten, r"\operatorname{{whiten}}({0})",
       "exact whitening (X X^T)^{-1/2} X = U V^T of the thin SVD (pseudo-inverse: singular values below "
       "sqrt(eps)*s_max dropped); SWAN's GradWhitening", searchable=False,
       py="whiten({0})", helper="whiten",
       torch="_whiten({0})"),
    Op("svd_basis", 1, "matrix", H.svd_basis, r"\operatorname{{svdbasis}}({0})",
       "Conda's basis: right singular vectors Vh (c x c) if rows >= cols else left U (r x r), zero-padded "
       "to x's shape", searchable=False,
       py="svd_basis({0})", helper="svd_basis",
       torch="_svd_basis({0})"),
    Op("project", 2, "matrix", H.project, r"\operatorname{{proj}}_{{{0}}}({1})",
       "project(p, x): x Vh^T (rows >= cols) or U^T x (wide), with p from svd_basis", searchable=False,
       py="project({0}, {1})", helper="project",
       torch="_project({0}, {1})"),
    Op("unproject", 2, "matrix", H.unproject, r"\operatorname{{proj}}^{{-1}}_{{{0}}}({1})",
       "unproject(p, y): y Vh (rows >= cols) or U y (wide), inverse of project", searchable=False,
       py="unproject({0}, {1})", helper="unproject",
       torch="_unproject({0}, {1})"),
    *MATRIX_OPS,   # major/minor matrix ops (gram_major ... svd_minor, eye ... norm_lower_bound): ops_matrix.py
    # --- objective ops: need update(..., obj_fn=); ``py``/``torch`` give the per-leaf point, ``helper`` (and the
    # torch form's second entry) the function evaluating obj_fn once for all leaves (pyhelpers / torch_runtime) ---
    # Why an op and not an input: the point is the program's (SAM's w + rho g/||g||, XGrad's extrapolation), so
    # it is an argument; like a global reduction it is a barrier: every leaf's point first, one gradient of the
    # whole objective, then each leaf reads its part. Leaves the program does not handle stay at w.
    Op("grad_at", 1, "objective", None, r"\nabla \ell\left({0}\right)",
       "grad_at(x): the gradient of obj_fn at the parameters moved to x (x given per leaf, broadcast to the "
       "leaf's shape); other leaves stay at w", searchable=False,
       py="{0}", helper="grad_at",
       torch=("{0}", "_grad_at")),
    # loss_at: function values only (zeroth-order estimates, line searches); a global value, like a reduction
    Op("loss_at", 1, "objective", None, r"\ell\left({0}\right)",
       "loss_at(x): obj_fn at the parameters moved to x (x given per leaf, broadcast to the leaf's shape; other "
       "leaves stay at w): one value for all leaves", searchable=False,
       py="{0}", helper="loss_at", torch=("{0}", "_loss_at"), result="global"),
)

_BY_NAME: dict[str, Op] = {op.name: op for op in _OPS}
assert len(_BY_NAME) == len(_OPS), "duplicate op names"
_INFIX: dict[str, Op] = {op.symbol: op for op in _OPS if op.infix}
_PREFIX: dict[str, Op] = {op.symbol: op for op in _OPS if op.prefix}


def get(name: str) -> Op:
    """The op called ``name``; ``KeyError`` (with close names) if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}{suggest(name)}") from None


def exists(name: str) -> bool:
    return name in _BY_NAME


def all_ops() -> tuple[Op, ...]:
    """Every op, in registry order (stable: the interpreter may use the index as an opcode)."""
    return _OPS


def index(name: str) -> int:
    """Stable position of ``name`` in ``all_ops()``."""
    return _OPS.index(_BY_NAME[name])


def searchable() -> tuple[Op, ...]:
    """The ops search mutation may insert."""
    return tuple(op for op in _OPS if op.searchable)


def of_kind(kind: str) -> tuple[Op, ...]:
    return tuple(op for op in _OPS if op.kind == kind)


def infix(symbol: str) -> Op | None:
    """The binary op written ``a <symbol> b``, if any."""
    return _INFIX.get(symbol)


def prefix(symbol: str) -> Op | None:
    """The unary op written ``<symbol>a``, if any."""
    return _PREFIX.get(symbol)


def suggest(name: str, extra: tuple[str, ...] = ()) -> str:
    """``" (did you mean 'x', 'y'?)"`` for names close to ``name``, else ``""``."""
    close = difflib.get_close_matches(name, list(_BY_NAME) + list(extra), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


def result_kind(op: Op, arg_kinds: list[str]) -> str:
    """Value kind of ``op(args)``; ``ValueError`` when the argument kinds make no sense for the op."""
    if op.sig:   # before join: the arguments of a matrix product have different shapes
        return MK.result(op.name, op.sig, arg_kinds)
    widest = join(*arg_kinds)
    if op.kind == "elementwise":
        return widest
    if op.kind == "reduce":
        return widest if _RANK[widest] <= _RANK["scalar"] else "scalar"
    if op.kind == "global":
        return "global"
    if op.kind == "factored":
        if _RANK[widest] < _RANK["row"] or widest in MK.SQUARE:
            raise ValueError(f"{op.name} needs a matrix (tensor) argument, got a {widest} value")
        axis = "row" if op.name.startswith("row") else "col"
        return axis if widest in (axis, "tensor") else "scalar"
    if op.kind == "matrix":
        if _RANK[widest] < _RANK["row"]:
            raise ValueError(f"{op.name} needs a matrix (tensor) argument, got a {widest} value")
        return widest
    if op.kind == "objective":
        return op.result
    raise AssertionError(op.kind)


def combine(op: Op, partials: list) -> jax.Array:
    """Finish a global op from its per-leaf partial results."""
    if op.combine == "max":
        total = partials[0]
        for p in partials[1:]:
            total = jnp.maximum(total, p)
    else:
        total = sum(partials[1:], partials[0]) if partials else jnp.zeros((), jnp.float32)
    return op.finish(total) if op.finish is not None else total
