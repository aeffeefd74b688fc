"""Constant folding shared by the simplifier and the interpreter's encoder.

Both must fold exactly as the traced compiled path computes: each op on float32 JAX scalars, rounded to
float32. Keeping the one evaluator here, in the lowest layer that needs it, lets ``metaopt.interpret``
import the DSL without the DSL importing the interpreter back.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.dsl import ops
from metaopt.dsl.program import Const, Expr, Var


def fold_op(op: str, values: Sequence[float]) -> float:
    """``op`` applied to constants, evaluated as the traced compiled path would (float32 JAX)."""
    with jax.ensure_compile_time_eval():
        out = ops.get(op).fn(*(jnp.float32(v) for v in values))
    return float(np.float32(out))


def const_value(e: Expr, env: dict[str, float]) -> float | None:
    """The value of a constant expression over the names in ``env`` (hyperparameters), or None when it
    reads anything else or uses a non-elementwise op."""
    if isinstance(e, Const):
        return float(e.value)
    if isinstance(e, Var):
        return env.get(e.name)
    if ops.get(e.op).kind != "elementwise":
        return None
    values = [const_value(a, env) for a in e.args]
    if any(v is None for v in values):
        return None
    return fold_op(e.op, values)
