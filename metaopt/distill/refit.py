"""Constant refit: fit a program's numeric constants to imitate a recorded teacher, by gradient descent.

The constants are the program's hyperparameter defaults and its literal numbers (integers such as the ``1`` of
``1 - b1 ^ t`` or the ``2`` of a power are structure, so they are left alone unless ``include_integers``). Each
literal becomes a hyperparameter of a rewritten program, so :func:`metaopt.to_optax` takes every constant as a
traced value and the teacher-forced replay (:func:`metaopt.distill.replay.compiled_fn`) is differentiable in all
of them. They are optimized in an unconstrained parameterisation that keeps their sign and range:

    a decay in (0, 1):  c = sigmoid(z)       other c > 0:  c = exp(z)       c < 0:  c = -exp(z)

where a *decay* is a constant used as the ``beta`` of ``interp(a, b, beta)`` or as the base of a power
(``b1 ^ t``), so decays stay in (0, 1) and everything else keeps its sign.

minimizing the imitation error of :mod:`metaopt.distill.fit` (cosine error by default, or the scaled NMSE) with
``optax.adam`` on ``jax.grad`` of it.

Elements whose gradient is exactly 0 at some step are where rules such as Adam sit on a non-differentiable
point (``sqrt(v)`` at ``v = 0``: the backward pass computes 0 * inf = NaN, which the sum over elements spreads to
every constant's gradient). For a purely elementwise program each element's replay is independent, so the refit
simply leaves those elements out (:func:`informative`); for a program with reductions it keeps them, and an
iteration whose gradient is not finite is skipped (``RefitResult.skipped`` counts them). Zero-valued constants and hyperparameters that decide a fallback's leaves
(``static_hyperparams``) stay fixed. The result is printed back as DSL text with every fitted constant rounded to
4 significant digits (decays by their distance to 1, so 0.99937 is 0.9994, never 1) and parsed again.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.compile import static_hyperparams
from metaopt.distill.fit import as_program, as_recording, tensor_errors
from metaopt.distill.replay import compiled_fn
from metaopt.distill.store import Recording, Trajectory
from metaopt.dsl import ops, parse
from metaopt.dsl.program import INPUTS, KEYWORDS, Assign, Call, Const, Expr, Program, StateDecl, Var, walk

OBJECTIVES = ("cos", "nmse")


@dataclasses.dataclass(frozen=True)
class Slot:
    """One fitted constant."""
    name: str        # the hyperparameter, or the fresh name a literal got
    value: float     # its starting value
    transform: str   # "logit" | "log" | "neglog"
    where: str       # "hyperparameter" or the statement holding the literal


@dataclasses.dataclass
class RefitResult:
    program: Program                       # with the fitted (rounded) constants, parsed back from text
    text: str                              # its DSL text
    before: float                          # objective at the starting constants
    after: float                           # objective at the rounded fitted constants
    values: dict[str, tuple[float, float]]  # slot name -> (start, fitted and rounded)
    slots: tuple[Slot, ...]
    history: np.ndarray                    # objective at every iteration
    skipped: int                           # iterations whose objective or gradient was not finite
    seconds: float


def _transform(x: float, decay: bool) -> str | None:
    if x == 0 or not math.isfinite(x):
        return None
    return "logit" if decay and 0 < x < 1 else ("log" if x > 0 else "neglog")


def _decay_slot(op: str, i: int) -> bool:
    """Whether argument ``i`` of ``op`` is a decay (module docstring)."""
    return (op == "interp" and i == 2) or (op == "pow" and i == 0)


def _decay_names(program: Program) -> set[str]:
    out = set()
    for e in program.exprs():
        for c in walk(e):
            if isinstance(c, Call):
                out |= {a.name for i, a in enumerate(c.args) if isinstance(a, Var) and _decay_slot(c.op, i)}
    return out


def _to_raw(x: float, kind: str) -> float:
    return {"logit": lambda: math.log(x / (1 - x)), "log": lambda: math.log(x), "neglog": lambda: math.log(-x)}[kind]()


def _from_raw(z: jax.Array, kind: str) -> jax.Array:
    return {"logit": jax.nn.sigmoid, "log": jnp.exp, "neglog": lambda v: -jnp.exp(v)}[kind](z)


def round_constant(x: float, digits: int = 4) -> float:
    """``x`` to ``digits`` significant digits; a value in (0.5, 1) by its distance to 1 (0.99937 -> 0.9994)."""
    sig = lambda v: float(f"{v:.{digits - 1}e}")
    if 0.5 < x < 1:
        d = sig(1.0 - x)
        # round the difference's float noise away, so the text is 0.9995539, not 0.9995539000000001
        return round(1.0 - d, digits - 1 - math.floor(math.log10(d)))
    return sig(x) if x != 0 else 0.0


def _fresh(program: Program):
    taken = ({n for n, _ in program.hyperparams} | {s.name for s in program.states} | {a.target for a in program.body}
             | set(INPUTS) | set(KEYWORDS) | {op.name for op in ops.all_ops()})
    i = 0
    while True:
        i += 1
        if f"c{i}" not in taken:
            taken.add(f"c{i}")
            yield f"c{i}"


def parametrise(program: Program, include_integers: bool = False) -> tuple[Program, tuple[Slot, ...]]:
    """``program`` with each fitted literal turned into a hyperparameter, and the slots to fit (module docstring)."""
    fixed, decays = set(static_hyperparams(program)), _decay_names(program)
    slots = [Slot(n, float(v), _transform(float(v), n in decays), "hyperparameter") for n, v in program.hyperparams
             if n not in fixed and _transform(float(v), n in decays) is not None]
    names, new_hp = _fresh(program), []

    def sub(e: Expr, where: str, decay: bool = False) -> Expr:
        if isinstance(e, Const):
            kind = _transform(e.value, decay)
            if kind is None or (not include_integers and float(e.value).is_integer()):
                return e
            name = next(names)
            slots.append(Slot(name, float(e.value), kind, where))
            new_hp.append((name, float(e.value)))
            return Var(name, e.pos)
        if isinstance(e, Call):
            return Call(e.op, tuple(sub(a, where, _decay_slot(e.op, i)) for i, a in enumerate(e.args)), e.pos)
        return e

    states = tuple(StateDecl(s.name, s.kind, sub(s.init, f"state {s.name}"), s.pos) for s in program.states)
    body = tuple(Assign(a.target, sub(a.expr, f"{a.target} = ..."), a.pos) for a in program.body)
    output = sub(program.output, "return")
    rewritten = dataclasses.replace(program, hyperparams=program.hyperparams + tuple(new_hp), states=states,
                                    body=body, output=output, hp_pos=())
    return rewritten, tuple(slots)


def _substitute(e: Expr, consts: dict[str, float]) -> Expr:
    if isinstance(e, Var) and e.name in consts:
        return Const(consts[e.name])
    if isinstance(e, Call):
        return Call(e.op, tuple(_substitute(a, consts) for a in e.args))
    return e


def _rebuild(original: Program, rewritten: Program, values: dict[str, float], name: str, note: str) -> Program:
    """The original program's text with fitted values: its hyperparameters' defaults, and literals back in place."""
    literals = {n: v for n, v in values.items() if n not in original.defaults}
    hyper = tuple((n, values.get(n, v)) for n, v in original.hyperparams)
    p = dataclasses.replace(
        rewritten, name=name, hyperparams=hyper,
        states=tuple(StateDecl(s.name, s.kind, _substitute(s.init, literals)) for s in rewritten.states),
        body=tuple(Assign(a.target, _substitute(a.expr, literals)) for a in rewritten.body),
        output=_substitute(rewritten.output, literals), doc=(original.doc + "\n" if original.doc else "") + note)
    return parse(str(p))


def elementwise(program: Program) -> bool:
    """Whether every op of ``program`` (and of its fallback chain) is elementwise, all states tensors."""
    from metaopt import library
    while True:
        if any(ops.get(o).kind != "elementwise" for o in program.ops_used()) or \
                any(s.kind != "tensor" for s in program.states):
            return False
        if program.fallback is None:
            return True
        program = library.get(program.fallback.name)


def informative(traj: Trajectory) -> Trajectory:
    """``traj`` restricted to the elements whose gradient is non-zero at every step (module docstring); each
    leaf keeps its ndim as shape ``(1, ..., 1, kept)``, leaves with none left are dropped."""
    keep = np.all(traj.g != 0, axis=0)
    leaves, cols, offset = [], [], 0
    for leaf in traj.leaves:
        mine = np.flatnonzero(keep[leaf.offset:leaf.offset + leaf.size]) + leaf.offset
        if mine.size == 0:
            continue
        shape = (1,) * (len(leaf.sample_shape) - 1) + (int(mine.size),) if leaf.sample_shape else ()
        leaves.append(dataclasses.replace(leaf, sample_shape=shape, offset=offset))
        cols.append(mine)
        offset += mine.size
    if not cols:
        return traj
    cols = np.concatenate(cols)
    return dataclasses.replace(traj, leaves=tuple(leaves), g=traj.g[:, cols], w=traj.w[:, cols], u=traj.u[:, cols],
                               features=traj.features[..., cols], idx=traj.idx[cols])


def _objective_fn(rewritten: Program, rec: Recording, objective: str):
    """``(hyperparameter values dict, trajectory arrays) -> pooled error`` over every trajectory's tensors."""
    fns = [compiled_fn(rewritten, traj, rec.learning_rate) for traj in rec.trajectories]
    n_leaves = [len(t.leaves) for t in rec.trajectories]

    def f(hp: dict, arrays: Sequence[tuple]) -> jax.Array:
        num, den = 0.0, 0.0
        for fn, L, (g, w, loss, u, seg) in zip(fns, n_leaves, arrays):
            e_cos, e_mse, weight, _ = tensor_errors(fn(hp, g, w, loss), u, seg, L)
            num = num + jnp.sum((e_cos if objective == "cos" else e_mse) * weight)
            den = den + jnp.sum(weight)
        return num / den
    return f


def _arrays(rec: Recording) -> list[tuple[jax.Array, ...]]:
    return [tuple(jnp.asarray(x) for x in (t.g, t.w, t.loss, t.u, t.segments)) for t in rec.trajectories]


def refit(program: Program | str, recording: Recording | str, *, iters: int = 200, learning_rate: float = 0.05,
          objective: str = "cos", include_integers: bool = False, name: str | None = None) -> RefitResult:
    """Fit ``program``'s constants to imitate ``recording`` (module docstring); ``iters`` Adam steps at
    ``learning_rate`` on the unconstrained parameters. The best iterate is kept; if, rounded, it does not beat the
    starting constants on the whole recording, those are returned (``before == after``)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"refit(): objective must be one of {OBJECTIVES}, got {objective!r}")
    t0 = time.perf_counter()
    original, full = as_program(program), as_recording(recording)
    rewritten, slots = parametrise(original, include_integers)
    rec = full
    if elementwise(original):
        rec = dataclasses.replace(full, trajectories=tuple(informative(t) for t in full.trajectories))
    f = _objective_fn(rewritten, rec, objective)
    arrays = _arrays(rec)
    kinds = [s.transform for s in slots]

    def loss_of(raw, arrays):
        return f({s.name: _from_raw(raw[i], k) for i, (s, k) in enumerate(zip(slots, kinds))}, arrays)

    raw0 = jnp.asarray([_to_raw(s.value, s.transform) for s in slots], jnp.float32)
    tx = optax.adam(learning_rate)

    @jax.jit
    def fit(raw, arrays):
        def step(carry, _):
            raw, state, best, best_loss = carry
            value, grad = jax.value_and_grad(loss_of)(raw, arrays)
            ok = jnp.isfinite(value) & jnp.all(jnp.isfinite(grad))   # a diverging replay: skip the step
            upd, new_state = tx.update(jnp.where(ok, grad, 0.0), state)
            better = ok & (value < best_loss)
            best, best_loss = jnp.where(better, raw, best), jnp.where(better, value, best_loss)
            raw = jnp.where(ok, optax.apply_updates(raw, upd), raw)
            state = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_state, state)
            return (raw, state, best, best_loss), (value, ok)
        (raw, _, best, best_loss), (hist, oks) = jax.lax.scan(step, (raw, tx.init(raw), raw, jnp.inf), None, length=iters)
        last = loss_of(raw, arrays)                    # the final iterate was never scored inside the scan
        return jnp.where(last < best_loss, raw, best), hist, jnp.sum(~oks)

    if slots:
        best, hist, skipped = fit(raw0, arrays)
        fitted = {s.name: round_constant(float(_from_raw(best[i], s.transform))) for i, s in enumerate(slots)}
    else:
        hist, fitted, skipped = jnp.zeros(0), {}, 0
    score = jax.jit(_objective_fn(rewritten, full, objective))      # reported on every recorded element
    before = float(score({s.name: s.value for s in slots}, _arrays(full)))
    after = float(score(fitted, _arrays(full)))
    if not after <= before:   # the rounded fit (on the informative elements) is no better on all of them
        fitted, after = {s.name: s.value for s in slots}, before
    teacher = full.header.get("teacher", {}).get("spec", "?")
    note = (f"Constants refit by metaopt.distill.refit to imitate {teacher} ({objective} error "
            f"{before:.4g} -> {after:.4g}).")
    new = _rebuild(original, rewritten, fitted, name or f"{original.name}_refit", note)
    return RefitResult(new, str(new), before, after, {s.name: (s.value, fitted[s.name]) for s in slots}, slots,
                       np.asarray(hist), int(skipped), time.perf_counter() - t0)
