"""Train a whole population of encoded programs on a task under one ``jit``.

The batch axis is ``B = n_seeds * P * L`` (seed-major). Seed ``s`` draws its task instance (per-run
constants), initialization, data and validation batch from ``jax.random.split(key, n_seeds)[s]`` exactly
as :func:`metaopt.train` does, so every program and learning rate of a seed sees the same data — fair
comparison, and the first layer's matmul becomes one wide matmul over the population — and
``P = L = n_seeds = 1`` reproduces ``metaopt.train`` with the compiled program.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metaopt.interpret.encoding import Encoded
from metaopt.interpret.machine import Layout, branches, initial_registers, outputs, population_step, set_inputs
from tasks.base import Task


class PopulationTrainer:
    """``trainer(encoded [P, ...], learning_rates [L] or [P, L], key, n_seeds) -> valid loss curves [P, L, S, T]``.

    ``T = steps // eval_every + 1`` (validation loss at steps 0, eval_every, ..., steps). Non-finite
    losses come back as NaN/Inf. Rates ``[L]`` are shared by all programs; ``[P, L]`` gives each program
    its own grid (the hurdle centres each child's grid on its parent's rate). One compilation per
    (P, L, n_seeds) serves every program of this ``max_len`` / ``n_registers`` and every rate: programs
    and rates are data (both forms of the rates reach the compiled function as ``[P, L]``).
    """

    def __init__(self, task: Task, max_len: int, n_registers: int, steps: int, eval_every: int):
        if steps % eval_every:
            raise ValueError(f"steps ({steps}) must be a multiple of eval_every ({eval_every})")
        self.task, self.max_len, self.n_registers = task, max_len, n_registers
        self.steps, self.eval_every = steps, eval_every
        shapes = jax.eval_shape(task.init, jax.random.PRNGKey(0))
        self.layout = Layout.of(shapes)
        self.treedef = jax.tree_util.tree_structure(shapes)
        self.table = branches(self.layout)
        self._run = jax.jit(self._train, static_argnames=("n_seeds",))

    def __call__(self, encoded: Encoded, learning_rates: jax.Array, key: jax.Array, n_seeds: int = 1) -> jax.Array:
        ops = jnp.asarray(encoded.ops)
        if ops.ndim != 2 or ops.shape[1] != self.max_len or jnp.shape(encoded.init_const)[1] != self.n_registers:
            raise ValueError(f"expected a stacked population [P, {self.max_len}] with {self.n_registers} "
                             f"registers, got ops {ops.shape}, init_const {jnp.shape(encoded.init_const)}")
        lrs = jnp.asarray(learning_rates, jnp.float32)
        P = ops.shape[0]
        if lrs.ndim == 1:
            lrs = jnp.broadcast_to(lrs[None], (P, lrs.shape[0]))
        elif lrs.ndim != 2 or lrs.shape[0] != P:
            raise ValueError(f"learning_rates: expected [L] or [{P}, L] (one grid per program), got {lrs.shape}")
        return self._run(Encoded(*(jnp.asarray(f) for f in encoded)), lrs, key, n_seeds=n_seeds)

    def loss_flat(self, flat: jax.Array, batch, consts=()) -> jax.Array:
        """The loss of flat parameters on the instance with per-run constants ``consts`` (Task.bind)."""
        return self.task.bind(consts).loss(self.layout.unflatten(self.treedef, flat), batch)

    def _train(self, progs: Encoded, lrs: jax.Array, key: jax.Array, n_seeds: int) -> jax.Array:
        task, layout = self.task, self.layout
        P, L, S = progs.ops.shape[0], lrs.shape[1], n_seeds
        B = S * P * L
        # Broadcast program fields and rates to the flat batch axis [S, P, L] -> B.
        rep = lambda x: jnp.broadcast_to(x[None, :, None], (S, P, L) + x.shape[1:]).reshape((B,) + x.shape[1:])
        batch_progs = Encoded(*(rep(f) for f in progs))
        lr_b = jnp.broadcast_to(lrs[None], (S, P, L)).reshape(B)

        keys = jax.random.split(key, S)
        consts = jax.vmap(task.run_constants)(keys)              # seed s's task instance, as metaopt.train's
        init_k, data_k, valid_k = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, 3))(keys), 1, 0)
        w0 = jax.vmap(lambda k, c: layout.flatten(task.bind(c).init(k)))(init_k, consts)       # [S, N]
        params = jnp.broadcast_to(w0[:, None], (S, P * L, layout.n))
        valid_batches = jax.vmap(lambda k, c: task.bind(c).batch(k, "valid"))(valid_k, consts)
        regs = initial_registers(batch_progs, params.reshape(B, layout.n))

        # Inner vmap: one seed's programs share its batch and instance (in_axes None). Outer: seeds.
        vg = jax.vmap(jax.vmap(jax.value_and_grad(self.loss_flat), (0, None, None)), (0, 0, 0))
        valid_loss = jax.vmap(jax.vmap(self.loss_flat, (0, None, None)), (0, 0, 0))

        def step(carry, xs):
            params, regs = carry
            t, step_keys = xs                                                               # step_keys [S, 2]
            batches = jax.vmap(lambda k, c: task.bind(c).batch(k, "train"))(step_keys, consts)
            loss, grads = vg(params, batches, consts)                                       # [S, PL], [S, PL, N]
            w = params.reshape(B, -1)
            regs = set_inputs(regs, grads.reshape(B, -1), w, jnp.full((B,), t, jnp.float32),
                              loss.reshape(B), lr_b)
            regs = population_step(self.table, regs, batch_progs)
            new = w - lr_b[:, None] * outputs(regs, batch_progs)
            return (new.reshape(params.shape), regs), None

        def chunk(carry, xs):
            t0, chunk_keys = xs                                                             # chunk_keys [S, 2]
            step_keys = jax.vmap(lambda k: jax.random.split(k, self.eval_every))(chunk_keys)  # [S, E, ...]
            ts = t0 + 1 + jnp.arange(self.eval_every, dtype=jnp.float32)
            carry, _ = jax.lax.scan(step, carry, (ts, jnp.moveaxis(step_keys, 1, 0)))
            return carry, valid_loss(carry[0], valid_batches, consts)

        n_chunks = self.steps // self.eval_every
        chunk_keys = jnp.moveaxis(jax.vmap(lambda k: jax.random.split(k, n_chunks))(data_k), 1, 0)
        t0s = jnp.arange(n_chunks, dtype=jnp.float32) * self.eval_every
        _, curves = jax.lax.scan(chunk, (params, regs), (t0s, chunk_keys))                 # [C, S, PL]
        curves = jnp.concatenate([valid_loss(params, valid_batches, consts)[None], curves])   # [T, S, PL]
        return curves.reshape(-1, S, P, L).transpose(2, 3, 1, 0)


@functools.lru_cache(maxsize=32)
def _updates_fn(shapes: tuple[tuple[int, ...], ...]):
    layout = Layout(shapes)
    table = branches(layout)

    @jax.jit
    def run(progs: Encoded, w0: jax.Array, grads: jax.Array, losses: jax.Array, lr: jax.Array) -> jax.Array:
        B = progs.ops.shape[0]
        w = jnp.broadcast_to(w0, (B, layout.n))
        regs = initial_registers(progs, w)

        def step(carry, xs):
            w, regs = carry
            t, g, loss = xs
            full = lambda x: jnp.full((B,), x, jnp.float32)
            regs = set_inputs(regs, jnp.broadcast_to(g, w.shape), w, full(t), full(loss), full(lr))
            regs = population_step(table, regs, progs)
            u = outputs(regs, progs)
            return (w - lr * u, regs), u

        ts = jnp.arange(1, grads.shape[0] + 1, dtype=jnp.float32)
        _, us = jax.lax.scan(step, (w, regs), (ts, grads, losses))
        return us.transpose(1, 0, 2)
    return run


def run_updates(progs: Encoded, shapes: tuple[tuple[int, ...], ...], w0: jax.Array, grads: jax.Array,
                losses: jax.Array, lr: float) -> jax.Array:
    """Updates ``[B, steps, N]`` of a population on a fixed gradient sequence (no task).

    ``w0`` ``[N]`` (flat), ``grads`` ``[steps, N]``, ``losses`` ``[steps]``; ``w`` follows ``w - lr * u``.
    Compiled once per leaf-shape tuple and array shapes (used by the fingerprint and the tests).
    """
    return _updates_fn(tuple(tuple(s) for s in shapes))(
        Encoded(*(jnp.asarray(f) for f in progs)), jnp.asarray(w0, jnp.float32), jnp.asarray(grads, jnp.float32),
        jnp.asarray(losses, jnp.float32), jnp.float32(lr))
