"""The input registry: every name a program reads without defining it, described once.

``metaopt.dsl.program`` (``INPUTS``, ``INPUT_KINDS``), the validator, the LaTeX printer, ``metaopt list`` and the
backends read this table. Three families:

* the step's own values: ``g`` (gradient), ``w`` (parameters), ``t`` (step number, 1 at the first update),
  ``loss`` (the minibatch loss, ``update(..., value=loss)``), ``lr`` (the learning rate at this step);
* random inputs (``stream`` set): drawn from a PRNG key kept in the rule's state. The key is
  ``PRNGKey(seed)`` (``seed``: a hyperparameter the program must declare); the draw of stream ``j`` for leaf
  ``i`` (position in the flattened parameter tree) at the step with ``count = t - 1`` previous updates uses
  ``fold_in(fold_in(fold_in(key, count), i), j)``, so a run is reproducible from ``seed`` and leaves, steps and
  streams get independent draws (``pyhelpers.leaf_key``);
* objective inputs (``objective``): computed from the objective ``obj_fn(params) -> scalar loss on the current
  batch``, passed as ``update(..., obj_fn=...)`` as for ``optax.contrib.sophia``; computed only when a program
  reads them (the ops ``grad_at`` and ``loss_at`` of ``metaopt/dsl/ops.py`` are the other users of ``obj_fn``).

The batched interpreter's register file holds only the ``interpreted`` inputs (``metaopt/interpret/encoding.py``);
programs reading the others run through ``to_optax``.
"""
from __future__ import annotations

from dataclasses import dataclass

from metaopt.dsl import ops


@dataclass(frozen=True)
class Input:
    name: str
    kind: str                 # value kind (see metaopt/dsl/ops.py): tensor, global or const
    latex: str
    doc: str
    stream: int | None = None   # random inputs: the PRNG stream j of the key derivation above
    objective: bool = False     # needs obj_fn
    interpreted: bool = True    # a register of the batched interpreter
    letter: str = ""            # `metaopt list` kind letter a program reading it gets


_INPUTS: tuple[Input, ...] = (
    Input("g", "tensor", "g", "the gradient"),
    Input("w", "tensor", "w", "the parameters"),
    Input("t", "const", "t", "the step number, 1 at the first update (float32)"),
    Input("loss", "global", r"\ell", "the minibatch loss (update(..., value=loss))", letter="L"),
    Input("lr", "const", r"\eta_t", "the learning rate of this step"),
    Input("noise", "tensor", r"\xi", "a standard-normal draw shaped like the leaf (stream 0)", stream=0,
          interpreted=False, letter="R"),
    # optax.contrib.hutchinson_estimator_diag_hessian's estimate, with the Rademacher z of stream 1
    Input("h", "tensor", "h", "Hutchinson's diagonal-Hessian estimate z * (H z), Rademacher z (stream 1); "
          "H is the Hessian of obj_fn at w", stream=1, objective=True, interpreted=False, letter="H"),
)

_BY_NAME = {i.name: i for i in _INPUTS}
assert len(_BY_NAME) == len(_INPUTS), "duplicate input names"

# The hyperparameter that seeds a program's PRNG key; a program reading a random input must declare it.
SEED = "seed"


def all_inputs() -> tuple[Input, ...]:
    return _INPUTS


def get(name: str) -> Input:
    return _BY_NAME[name]


def random_inputs(names) -> list[str]:
    """The random inputs among ``names`` (e.g. ``program.reads()``), in registry order."""
    return [i.name for i in _INPUTS if i.stream is not None and i.name in names]


def objective_inputs(names) -> list[str]:
    """The inputs among ``names`` computed from ``obj_fn``, in registry order."""
    return [i.name for i in _INPUTS if i.objective and i.name in names]


def objective_uses(program) -> list[str]:
    """What of ``program`` itself (not its fallback) needs ``obj_fn``: the objective inputs it reads, then the
    objective ops (``grad_at``, ``loss_at``) it uses."""
    return objective_inputs(program.reads()) + sorted(o for o in program.ops_used()
                                                      if ops.get(o).kind == "objective")
