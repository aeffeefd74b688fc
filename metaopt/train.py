"""The one inner training loop every part of metaopt reuses.

``train`` runs a whole inner training as a single jitted ``lax.scan``. The learning rate is a
traced argument, so the loop is ``vmap``-able over learning rates as well as over seeds::

    run = lambda key, lr: metaopt.train(task, optax.adam, key, steps=300, learning_rate=lr)
    curves = jax.vmap(jax.vmap(run, (None, 0)), (0, None))(keys, lrs)

A divergent run simply carries NaN/Inf through its curve; nothing raises.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from tasks.base import Task

OptimizerLike = Union[optax.GradientTransformation, Callable[..., optax.GradientTransformation]]


class TrainResult(NamedTuple):
    train_loss: jax.Array   # [steps]: minibatch loss *before* each update
    valid_loss: jax.Array   # [steps // eval_every + 1]: validation loss at steps 0, eval_every, ..., steps
    params: object          # final parameters


def takes_io_paths(factory: Callable) -> bool:
    """Whether ``factory`` declares an ``io_paths`` parameter (metaopt's program factories do; optax's don't)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):   # no signature to read (a builtin): it takes none
        return False
    p = params.get("io_paths")
    return p is not None and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)


def resolve_optimizer(optimizer: OptimizerLike, learning_rate, io_paths: tuple[str, ...] = ()
                      ) -> optax.GradientTransformationExtraArgs:
    """A GradientTransformation is used as is; a factory is called with the learning rate, and with
    ``io_paths=`` (the task's input/output layers, ``Task.io_paths``) when it declares that parameter."""
    if isinstance(optimizer, optax.GradientTransformation):
        opt = optimizer
    else:
        if learning_rate is None:
            raise ValueError("an optimizer factory needs learning_rate=")
        opt = optimizer(learning_rate, io_paths=io_paths) if io_paths and takes_io_paths(optimizer) \
            else optimizer(learning_rate)
    return optax.with_extra_args_support(opt)


def eval_steps(steps: int, eval_every: int) -> jax.Array:
    """The step numbers at which ``TrainResult.valid_loss`` is measured."""
    return jnp.arange(steps // eval_every + 1) * eval_every


@functools.partial(jax.jit, static_argnames=("task", "optimizer", "steps", "eval_every"))
def train(task: Task, optimizer: OptimizerLike, key: jax.Array, steps: int, eval_every: int = 50,
          learning_rate: float | jax.Array | None = None) -> TrainResult:
    """Train ``task`` with ``optimizer`` for ``steps`` steps from the initialization drawn from ``key``
    (which also draws the task's per-run constants, see :mod:`tasks.base`).

    ``optimizer`` is an ``optax.GradientTransformation`` (used as is) or a factory
    ``learning_rate -> GradientTransformation`` such as ``optax.adam``; a factory that declares
    ``io_paths`` (``metaopt.optax_factory``, the library specs) also gets the task's ``Task.io_paths``, so
    a program's ``fallback ... when io == 1`` sees its input and output layers. The minibatch loss is passed
    to the update as ``value=`` so loss-reading rules (Polyak steps) work unchanged, and the minibatch loss
    function as ``obj_fn=`` (``params -> loss``, as for ``optax.contrib.sophia``) for rules that evaluate it
    (``h``, ``grad_at``).
    """
    if steps % eval_every:
        raise ValueError(f"steps ({steps}) must be a multiple of eval_every ({eval_every})")
    opt = resolve_optimizer(optimizer, learning_rate, task.io_paths)
    task = task.for_run(key)        # per-run constants (a guessable minimizer is drawn from the key)
    init_key, data_key, valid_key = jax.random.split(key, 3)
    params = task.init(init_key)
    opt_state = opt.init(params)
    valid_batch = task.batch(valid_key, "valid")   # fixed across the run: curves are comparable
    value_and_grad = jax.value_and_grad(task.loss)

    def step(carry, step_key):
        params, opt_state = carry
        batch = task.batch(step_key, "train")
        loss, grads = value_and_grad(params, batch)
        # obj_fn: the minibatch loss as a function of the parameters, for rules that evaluate it again (a Hessian-
        # vector product, a gradient at a perturbed point); traced only by the rules that call it
        updates, opt_state = opt.update(grads, opt_state, params, value=loss,
                                        obj_fn=lambda p, batch=batch: task.loss(p, batch))
        return (optax.apply_updates(params, updates), opt_state), loss

    def chunk(carry, chunk_key):
        carry, losses = jax.lax.scan(step, carry, jax.random.split(chunk_key, eval_every))
        return carry, (losses, task.loss(carry[0], valid_batch))

    initial_valid = task.loss(params, valid_batch)
    (params, _), (losses, valid) = jax.lax.scan(
        chunk, (params, opt_state), jax.random.split(data_key, steps // eval_every))
    return TrainResult(losses.reshape(-1), jnp.concatenate([initial_valid[None], valid]), params)
