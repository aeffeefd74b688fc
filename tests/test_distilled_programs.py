"""The shipped distilled programs (checkpoints/programs/distilled/*.opt) against hand-written optax
implementations of their equations (benchmarks/export_overhead.py's references, which also time them)."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import parse, to_optax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import export_overhead  # noqa: E402

LR = 1e-2


def _params(key):
    k1, k2, k3 = jax.random.split(key, 3)
    return {"w": jax.random.normal(k1, (7, 5)), "b": 0.1 * jax.random.normal(k2, (5,)),
            "s": jax.random.normal(k3, ()), "near": jnp.array(0.5)}   # |0.5 - sigmoid(r)| < r: the t = 1 branch binds


# shipped program -> the program file its held-out cells were measured on (the distill run's, before the
# canonical simplification turned a state into a local)
MEASURED = {"checkpoints/programs/distilled/hyper-pes-valid.opt": "checkpoints/distill-runs/hyper-pes-valid/distilled.opt"}


@pytest.mark.parametrize("path,reference", [(p, p) for p in sorted(export_overhead.PROGRAMS)]
                         + [(m, p) for p, m in sorted(MEASURED.items())])
def test_distilled_program_matches_its_hand_written_equations(path, reference):
    with open(os.path.join(ROOT, path)) as fh:
        program = parse(fh.read(), filename=path)
    sides = {"dsl": to_optax(program, LR), "ref": export_overhead.PROGRAMS[reference](LR)}
    params = {s: _params(jax.random.PRNGKey(0)) for s in sides}
    states = {s: sides[s].init(params[s]) for s in sides}
    for step in range(6):
        grads = jax.tree.map(lambda p: jnp.cos(3.0 * p + step), params["dsl"])   # same gradient for both sides
        for s, opt in sides.items():
            updates, states[s] = opt.update(grads, states[s], params[s])
            params[s] = optax.apply_updates(params[s], updates)
        for a, b in zip(jax.tree.leaves(params["dsl"]), jax.tree.leaves(params["ref"])):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # the rule moved the parameters (not a trivially-equal pair of no-ops)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), params["dsl"], _params(jax.random.PRNGKey(0)))
    assert min(jax.tree.leaves(moved)) > 1e-4
