"""Matrix-shaped values: the ``major`` and ``minor`` kinds, and the kind rule of the ops that make and use them.

Shampoo's statistics, SOAP's eigenbases and GaLore's projector are square matrices on one side of a 2-D leaf,
not shaped like the leaf. A leaf X of shape (m, n) is seen through its *tall view* X~ = X when m >= n, else Xᵀ,
of shape (M, k) with M = max(m, n), k = min(m, n):

* ``major``: an M x M matrix on the longer side (X~ X~ᵀ; for a tall leaf the rows side, Shampoo's L);
* ``minor``: a k x k matrix on the shorter side (X~ᵀ X~; for a tall leaf the columns side, Shampoo's R).

Why the tall view rather than literal left/right: the low-rank methods pick their side by shape. optax's
GaLore projects the longer side (``use_left = m >= n``), the GaLore paper's code, Fira and Subspace-Momentum the
shorter one (``'right' if m >= n else 'left'``); with sides named by length each is one program, and the
two-sided rules (Shampoo, SOAP) are symmetric in the sides, so nothing is lost. A wide leaf is transposed on
the way into a matrix op and back on the way out; its products are those of the literal rule (P_L G P_R).

A rank-r projector (GaLore's m x r P) is stored as a full ``major``/``minor`` matrix whose columns past r are
zero, and low-rank moments (GaLore's r x n R) as leaf-shaped tensors whose rows/columns past r are zero: the
shapes stay static, so r may be a traced hyperparameter (``optax.inject_hyperparams``, search) and the numbers
are the low-rank method's (zeros add exactly); the memory is that of the full-rank layout. These kinds need a
2-D leaf: other leaves go to a fallback (``fallback adamw(...) when ndim != 2``).

In the lattice (``ops.join``) a number (``const``/``global``/``scalar``) fits into a ``major``/``minor`` value
(broadcast elementwise, as everywhere); ``major``, ``minor`` and the leaf-shaped kinds (row, col, tensor) do not
combine with each other: their shapes differ.
"""
from __future__ import annotations

SQUARE = ("major", "minor")
NUMBER = ("const", "global", "scalar")
_WHAT = {"tensor": "a leaf-shaped (tensor) value", "major": "a major (M x M) matrix",
         "minor": "a minor (k x k) matrix", "square": "a major or minor matrix",
         "number": "a number (const, global or scalar)"}


def join_square(a: str, b: str) -> str:
    """``ops.join`` of two kinds one of which is ``major``/``minor``."""
    if a == b or b in NUMBER:
        return a
    if a in NUMBER:
        return b
    raise ValueError(f"a {a} value and a {b} value do not combine: a major (M x M) or minor (k x k) matrix has "
                     f"another shape than {'the other side' if {a, b} == set(SQUARE) else 'the leaf'}")


def result(name: str, sig: tuple[str, ...], kinds: list[str]) -> str:
    """Kind of a matrix op with signature ``sig`` (argument slots, then the result) applied to ``kinds``.

    Slots: ``tensor`` (exactly leaf-shaped), ``major``, ``minor``, ``square`` (major or minor, the same for every
    square slot; a ``square`` result is that kind), ``number``. ``("sandwich",)`` is ``lrmul(a, x, b) = a x b``:
    a tensor x takes a major a and a minor b, a major/minor x the same kind on both sides, and a number on a side
    stands for that multiple of the identity."""
    if sig == ("sandwich",):
        a, x, b = kinds
        if x == "tensor":
            sides = ("major", "minor")
        elif x in SQUARE:
            sides = (x, x)
        else:
            raise ValueError(f"{name}(a, x, b): x must be {_WHAT['tensor']} or {_WHAT['square']}, got a {x} value")
        for k, side, which in ((a, sides[0], "a"), (b, sides[1], "b")):
            if k != side and k not in NUMBER:
                raise ValueError(f"{name}(a, x, b) with a {x} x needs {_WHAT[side]} or a number (that multiple "
                                 f"of the identity) as {which}, got a {k} value")
        return x
    *slots, out = sig
    square = None
    for i, (k, slot) in enumerate(zip(kinds, slots), 1):
        if slot == "number":
            ok = k in NUMBER
        elif slot == "square":
            ok = k in SQUARE and square in (None, k)
            square = square or k
        else:
            ok = k == slot
        if not ok:
            raise ValueError(f"{name}: argument {i} must be {_WHAT[slot]}, got a {k} value")
    return square if out == "square" else out
