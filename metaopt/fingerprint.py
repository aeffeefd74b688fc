"""Functional fingerprints: programs that compute the same updates get the same hash.

As in AutoML-Zero and the Lion search, a program is run on fixed random inputs — three small leaves
(``[4, 3]``, ``[6]``, ``[2, 2]``), a fixed sequence of gradients and losses over several steps, the
parameters following ``w - lr * u`` — and its update directions, rounded to 4 significant digits (so
float noise and algebraic rewrites such as ``x*2`` vs ``x+x`` do not matter; ``-0`` is ``0``; NaN and
Inf are printed as such), are hashed. Search calls this per child to skip programs it has already
evaluated, so programs the interpreter can run go through one cached jitted batched evaluation
(:func:`metaopt.interpret.run_updates`); the others (fallbacks, non-searchable ops) through the compiled
path. It uses both back ends, so it lives above them (not in ``metaopt.dsl``, which they import).
"""
from __future__ import annotations

import functools
import hashlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

import optax

from metaopt.compile import to_optax
from metaopt.dsl.program import Program
from metaopt.interpret import EncodingError, encode, run_updates, stack

SHAPES: tuple[tuple[int, ...], ...] = ((4, 3), (6,), (2, 2))
STEPS = 8
LR = 0.1
DIGITS = 4
# (max_len, n_registers) buckets: a few fixed shapes, so the jitted evaluation compiles at most thrice.
BUCKETS = ((16, 40), (40, 96), (96, 224))


@functools.lru_cache(maxsize=4)
def _inputs(steps: int = STEPS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The probe inputs: ``w0 [N]``, ``grads [steps, N]``, ``losses [steps]``. Longer probes (``steps >
    STEPS``, for ``search.novelty``) extend the fingerprint's own: their first ``STEPS`` steps are these."""
    rng = np.random.default_rng(20240229)
    n = sum(int(np.prod(s)) for s in SHAPES)
    w0 = rng.standard_normal(n).astype(np.float32)
    grads = rng.standard_normal((STEPS, n)).astype(np.float32)
    losses = rng.uniform(0.5, 2.0, STEPS).astype(np.float32)
    if steps > STEPS:
        more = np.random.default_rng(20240301)
        grads = np.concatenate([grads, more.standard_normal((steps - STEPS, n)).astype(np.float32)])
        losses = np.concatenate([losses, more.uniform(0.5, 2.0, steps - STEPS).astype(np.float32)])
    return w0, grads[:steps], losses[:steps]


def digest(updates: np.ndarray) -> str:
    """Hash of ``updates`` rounded to ``DIGITS`` significant digits."""
    flat = np.asarray(updates, np.float64).ravel() + 0.0          # + 0.0 turns -0.0 into 0.0
    text = ",".join(f"{x:.{DIGITS - 1}e}" for x in flat)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _probe_objective(grads: list, params: list, loss: float):
    """obj_fn for rules that evaluate the objective (h, grad_at) on the probes: the quadratic model with the
    probe's loss and gradient at the current parameters and unit curvature, loss + <g, p - w> + |p - w|^2 / 2."""
    def f(p):
        return loss + sum(jnp.sum(g * (x - w) + 0.5 * (x - w) ** 2) for g, x, w in zip(grads, p, params))
    return f


def _compiled_updates(program: Program, steps: int = STEPS) -> np.ndarray:
    """Updates of ``program`` on the fixed inputs through ``to_optax`` (for programs the interpreter
    cannot encode)."""
    w0, grads, losses = _inputs(steps)
    sizes = [int(np.prod(s)) for s in SHAPES]
    split = lambda v: [jnp.asarray(x).reshape(s) for x, s in zip(np.split(v, np.cumsum(sizes)[:-1]), SHAPES)]
    opt = to_optax(program, learning_rate=LR)
    params = split(w0)
    state, out = opt.init(params), []
    try:
        for g, loss in zip(grads, losses):
            upd, state = opt.update(split(g), state, params, value=jnp.float32(loss),
                                    obj_fn=_probe_objective(split(g), params, loss))
            params = optax.apply_updates(params, upd)
            out.append(np.concatenate([np.ravel(u) for u in upd]) / -LR)
    except (ValueError, TypeError) as e:        # e.g. a matrix op reaching a 1-D leaf without fallback
        return np.full(1, np.nan)          # every program that cannot run at all hashes alike
    return np.stack(out)


def probe_updates(programs: Sequence[Program], steps: int = STEPS, min_batch: int = 1) -> list[np.ndarray]:
    """Each program's updates ``[steps, N]`` on the fixed probe inputs (``N``: the leaves' sizes, flat), the
    encodable ones in one batched evaluation per bucket (padded to a power of two, at least ``min_batch``).
    A program that cannot run at all gives ``[nan]``. The fingerprint hashes these (``steps = STEPS``);
    ``search.novelty`` measures distances between them."""
    w0, grads, losses = _inputs(steps)
    out: list[np.ndarray | None] = [None] * len(programs)
    groups: dict[tuple[int, int], list[tuple[int, object]]] = {}
    for i, p in enumerate(programs):
        for bucket in BUCKETS:
            try:
                enc = encode(p, *bucket)
                groups.setdefault(bucket, []).append((i, enc))
                break
            except EncodingError as e:
                if "max_len" not in str(e) and "registers" not in str(e):
                    break                    # not a size problem: use the compiled path
    encoded = {i for g in groups.values() for i, _ in g}
    for bucket, members in groups.items():
        # Pad the population to a power of two so search's varying batch sizes reuse compilations.
        size = max(min_batch, 1 << (len(members) - 1).bit_length())
        encs = [e for _, e in members]
        encs += [encs[0]] * (size - len(encs))
        us = np.asarray(run_updates(stack(encs), SHAPES, w0, grads, losses, LR))
        for k, (i, _) in enumerate(members):
            out[i] = us[k]
    for i, p in enumerate(programs):
        if i not in encoded:
            out[i] = _compiled_updates(p, steps)
    return out  # type: ignore[return-value]


def fingerprints(programs: Sequence[Program]) -> list[str]:
    """Fingerprints of many programs; the encodable ones share one batched evaluation per bucket."""
    return [digest(u) for u in probe_updates(programs)]


def fingerprint(program: Program) -> str:
    """A functional hash of ``program`` (16 hex digits); see the module docstring."""
    return fingerprints([program])[0]
