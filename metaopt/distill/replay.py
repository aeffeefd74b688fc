"""Teacher-forced replay: run a program's update along a recorded trajectory.

The program never moves the parameters itself: at every step t it is given the recorded ``g_t``, ``w_t``, ``t``
and ``loss_t`` — the teacher's trajectory — and its state evolves along them (teacher forcing, Williams & Zipser
1989), so its update at step t is what it would have proposed in the teacher's place. The replay returns the
program's direction ``u_t`` (its return value; ``w ← w - lr * u``) at the recorded steps.

Two back ends, as everywhere in metaopt:

* :func:`replay_compiled` — ``metaopt.to_optax`` on the sampled leaves (a ``{path: array}`` tree, so fallbacks
  see each leaf's ``ndim`` and ``io``). Hyperparameters are arguments of the returned pure function, so it can be
  ``jit``-ted, ``vmap``-ped over hyperparameter sets and differentiated (:mod:`metaopt.distill.refit`).
* :func:`replay_population` — many programs in one jitted call through the batched interpreter
  (:mod:`metaopt.interpret`): programs are data, so one compilation per layout serves a whole population.
  Only for what the interpreter encodes (searchable ops, no fallback).

On a tensor that was sub-sampled, per-leaf reductions (``rms``, ``norm`` ...) see the sample, not the whole
tensor: exact for elementwise programs, an estimate otherwise (see :mod:`metaopt.distill.record`).
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.compile import to_optax
from metaopt.distill.store import Trajectory
from metaopt.dsl.program import Program
from metaopt.fingerprint import BUCKETS
from metaopt.interpret import Encoded, EncodingError, encode, stack
from metaopt.interpret.machine import Layout, branches, initial_registers, outputs, population_step, set_inputs

ReplayFn = Callable[[dict, jax.Array, jax.Array, jax.Array], jax.Array]


def _key(traj: Trajectory) -> tuple:
    return (tuple(leaf.path for leaf in traj.leaves), traj.sample_shapes, tuple(leaf.io for leaf in traj.leaves),
            tuple(int(s) for s in traj.steps))


@functools.lru_cache(maxsize=256)
def _compiled(program: Program, key: tuple, lr: float) -> ReplayFn:
    paths, shapes, ios, steps = key
    sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
    offsets = np.cumsum([0] + sizes)
    io_paths = tuple(p for p, io in zip(paths, ios) if io)
    rec_pos = np.asarray(steps, np.int32) - 1

    def tree(flat):
        return {p: flat[offsets[i]:offsets[i + 1]].reshape(s) for i, (p, s) in enumerate(zip(paths, shapes))}

    def fn(hp: dict, g: jax.Array, w: jax.Array, loss: jax.Array) -> jax.Array:
        tx = to_optax(program, lr, io_paths=io_paths, **hp)

        def step(state, xs):
            gt, wt, lt = xs
            upd, state = tx.update(tree(gt), state, tree(wt), value=lt)
            return state, jnp.concatenate([jnp.ravel(upd[p]) for p in paths]) / -lr

        _, us = jax.lax.scan(step, tx.init(tree(w[0])), (g, w, loss))
        return us[rec_pos]

    return fn


def compiled_fn(program: Program, traj: Trajectory, lr: float) -> ReplayFn:
    """The pure function ``(hyperparameters, g [T, N], w [T, N], loss [T]) -> u [K, N]`` of ``program`` on
    ``traj``'s layout (hyperparameters not given take the program's defaults; values may be traced)."""
    return _compiled(program, _key(traj), float(lr))


@functools.lru_cache(maxsize=256)
def _jitted(program: Program, key: tuple, lr: float):
    return jax.jit(_compiled(program, key, lr))


def replay_compiled(program: Program, traj: Trajectory, lr: float, hp: dict | None = None) -> np.ndarray:
    """``u`` [K, N] of ``program`` (hyperparameters ``hp`` over its defaults) replayed on ``traj``."""
    fn = _jitted(program, _key(traj), float(lr))
    return np.asarray(fn(dict(hp or {}), jnp.asarray(traj.g), jnp.asarray(traj.w), jnp.asarray(traj.loss)))


@functools.lru_cache(maxsize=32)
def _population(shapes: tuple[tuple[int, ...], ...]):
    layout = Layout(shapes)
    table = branches(layout)

    @jax.jit
    def run(progs: Encoded, g, w, loss, lr, rec_pos):
        B = progs.ops.shape[0]
        full = lambda x: jnp.full((B,), x, jnp.float32)
        wide = lambda x: jnp.broadcast_to(x, (B, layout.n))

        def step(regs, xs):
            t, gt, wt, lt = xs
            regs = set_inputs(regs, wide(gt), wide(wt), full(t), full(lt), full(lr))
            regs = population_step(table, regs, progs)
            return regs, outputs(regs, progs)

        ts = jnp.arange(1, g.shape[0] + 1, dtype=jnp.float32)
        _, us = jax.lax.scan(step, initial_registers(progs, wide(w[0])), (ts, g, w, loss))
        return jnp.transpose(us[rec_pos], (1, 0, 2))
    return run


def encode_population(programs: Sequence[Program]) -> tuple[dict[tuple[int, int], list[tuple[int, Encoded]]],
                                                               list[int]]:
    """Group programs by the smallest of the fingerprint's ``(max_len, n_registers)`` buckets that encodes them;
    also the indices of those the interpreter cannot run (non-searchable ops, fallbacks)."""
    groups: dict[tuple[int, int], list[tuple[int, Encoded]]] = {}
    rest = []
    for i, p in enumerate(programs):
        for bucket in BUCKETS:
            try:
                groups.setdefault(bucket, []).append((i, encode(p, *bucket)))
                break
            except EncodingError as e:
                if "max_len" not in str(e) and "registers" not in str(e):
                    rest.append(i)           # not a size problem: the interpreter cannot run it at all
                    break
        else:
            rest.append(i)
    return {b: m for b, m in groups.items() if m}, rest


def replay_population(encoded: Sequence[Encoded], traj: Trajectory, lr: float) -> np.ndarray:
    """``u`` [B, K, N] of ``B`` programs encoded with the same bucket, replayed on ``traj`` in one call.

    The population is padded to a power of two so that varying batch sizes reuse compilations.
    """
    size = 1 << (len(encoded) - 1).bit_length()
    encs = list(encoded) + [encoded[0]] * (size - len(encoded))
    us = _population(traj.sample_shapes)(stack(encs), jnp.asarray(traj.g), jnp.asarray(traj.w),
                                         jnp.asarray(traj.loss), jnp.float32(lr), jnp.asarray(traj.steps - 1))
    return np.asarray(us)[:len(encoded)]
