"""The Task protocol: an inner training problem as pure functions on arrays.

A :class:`Task` is what every optimizer in metaopt is trained and judged on. Its functions are
pure, so a whole training run is one ``lax.scan`` and can be ``vmap``-ped over seeds, learning
rates and (for search) candidate programs.

* ``init(key) -> params``           a pytree of float32 arrays
* ``loss(params, batch) -> scalar``  the minibatch loss
* ``batch(key, split) -> batch``    ``split`` is ``"train"`` or ``"valid"`` (a Python string)

**Per-run constants.** A task whose minimizer could be guessed (a quadratic's ``w*``, Rosenbrock's
all-ones, a regression teacher) would let a rule that ignores the gradient score: ``return w - 1`` once
solved Rosenbrock. Such a task is built with :func:`per_run_task`: ``draw(key) -> consts`` draws the
run's constants (minimizer, rotation, scale, targets...) and ``make(consts) -> (init, loss, batch)``
closes the three functions over them. Every training loop calls ``task.for_run(run_key)`` (or, to
``vmap`` over seeds, ``task.run_constants(run_key)`` then ``task.bind(consts)`` inside the mapped
function), where ``run_key`` is the key the run draws its initialization and data from: different
seeds train on different instances, the same seed on the same one. ``task.init/loss/batch``
themselves are the instance of run key ``PRNGKey(0)``, for code that only needs shapes or a
representative loss. Tasks without per-run constants need none of this: ``for_run`` returns the task itself.

**Input and output layers.** ``io_paths`` names the leaves of the model's first and last layers
(``("Embed_0", "pos", "Dense_0")`` for the character LM): optimizers meant for hidden layers only (Muon)
train those with their Adam fallback. Tasks without layers (quadratics, Rosenbrock) and factorisations
whose factors are all hidden (matrix completion) leave it empty.

A :class:`TaskFamily` samples tasks (random width, depth, activation, conditioning, ...) for
meta-training, in the style of learned_optimization's ``TaskFamily``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

Params = Any
Batch = Any
Consts = Any
TaskFunctions = tuple[Callable[[jax.Array], Params], Callable[[Params, Batch], jax.Array],
                      Callable[[jax.Array, str], Batch]]
SPLITS = ("train", "valid")
_INSTANCE_SALT = 0x1A5C   # folded into a run's key to draw its constants (instance_key)


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """An inner training problem. Compared and hashed by identity, so it can be a jit static arg."""

    name: str
    init: Callable[[jax.Array], Params]
    loss: Callable[[Params, Batch], jax.Array]
    batch: Callable[[jax.Array, str], Batch]
    steps: int = 300          # the default training horizon used by suites and evaluation
    eval_every: int = 50      # default validation interval
    description: str = ""
    draw: Optional[Callable[[jax.Array], Consts]] = None     # key -> this run's constants (per_run_task)
    make: Optional[Callable[[Consts], TaskFunctions]] = None  # constants -> (init, loss, batch)
    # Key-path prefixes ('/'-joined keys, metaopt.leaf_io) of the leaves that form the model's input and output
    # layers (embeddings, the first layer reading raw inputs, the head); metaopt.train hands them to the
    # optimizer, so Muon keeps them on Adam as its authors advise (fallback ... when io == 1).
    io_paths: tuple[str, ...] = ()

    def run_constants(self, run_key: jax.Array) -> Consts:
        """The constants of the run whose key is ``run_key`` (``()`` for a task without any)."""
        if self.draw is None:
            return ()
        return self.draw(instance_key(run_key))

    def bind(self, consts: Consts) -> "Task":
        """This task with its functions closed over ``consts`` (from :meth:`run_constants`). Pure: call
        it inside a traced / vmapped function; the result is for that trace only (never a jit static)."""
        if self.draw is None:
            return self
        init, loss, batch = self.make(consts)
        return dataclasses.replace(self, init=init, loss=loss, batch=batch, draw=None, make=None)

    def for_run(self, run_key: jax.Array) -> "Task":
        """The instance a training run with key ``run_key`` trains on."""
        return self.bind(self.run_constants(run_key))

    def param_count(self) -> int:
        shapes = jax.eval_shape(self.init, jax.random.PRNGKey(0))
        return int(sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes)))

    def __repr__(self) -> str:
        return f"Task({self.name!r})"


def per_run_task(name: str, draw: Callable[[jax.Array], Consts], make: Callable[[Consts], TaskFunctions],
                 **fields: Any) -> Task:
    """A :class:`Task` whose constants are drawn per run (see the module docstring).

    ``draw`` must be a pure JAX function of its key (it runs inside the training loops' traces, vmapped
    over seeds); ``make`` must not branch on the constants' values. ``fields`` are Task's other fields.
    """
    # the reference instance (run key PRNGKey(0)), drawn eagerly so it is a constant, not a computation
    reference = jax.device_get(draw(instance_key(jax.random.PRNGKey(0))))
    init, loss, batch = make(jax.tree_util.tree_map(jnp.asarray, reference))
    return Task(name, init, loss, batch, draw=draw, make=make, **fields)


def instance_key(run_key: jax.Array) -> jax.Array:
    """The key a run's constants are drawn from. Folded, not split, out of the run key, so the run's own
    ``split(run_key, 3)`` into init / data / valid keys is untouched and tasks without constants train
    exactly as they did before constants existed."""
    return jax.random.fold_in(run_key, _INSTANCE_SALT)


class TaskFamily:
    """A distribution over tasks. Subclasses implement :meth:`sample`."""

    name: str = "family"

    def sample(self, key: jax.Array) -> Task:  # pragma: no cover - interface
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def key_to_rng(key: jax.Array) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key: task *structure* (widths, depths) must be static."""
    data = np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    return np.random.default_rng([int(x) for x in data.ravel()])


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
