"""The batched interpreter agrees with the compiled path (metaopt.compile.to_optax) on library programs,
encodes/decodes faithfully, and trains populations like metaopt.train."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
import tasks
from metaopt import library
from metaopt.compile import to_optax
from metaopt.dsl import parse
from metaopt.interpret import (Encoded, EncodingError, Layout, PopulationTrainer, decode, encode, run_updates,
                               stack)

MAX_LEN, N_REG = 40, 64
STEPS, LR = 100, 1e-2
MIXED = {"a": (4, 3), "b": (5,), "c": (2, 3, 2), "d": ()}
MATRICES = {"a": (4, 3), "b": (2, 5), "c": (3, 2, 2)}     # for rules that need 2-D leaves (no fallback)
# RAdam's rectification term (rho - 4)(rho - 2) ... cancels catastrophically in float32 for small t: a
# 1-ulp difference in b2^t (XLA evaluates the 0-d power of the compiled path and the interpreter's
# broadcast one with different code) is amplified ~1e4x. Both back ends compute the same expression.
TOLERANCE = {"radam": 2e-2}
MUST_COVER = {"sgd", "momentum", "adam", "adamw", "rmsprop", "lion", "signum", "adabelief"}


def _problem(shapes: dict, seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()}
    grads = [{k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in shapes.items()} for _ in range(STEPS)]
    losses = jnp.asarray(rng.uniform(0.5, 2.0, STEPS), jnp.float32)
    return params, grads, losses


def _compiled_updates(program, params, grads, losses) -> np.ndarray:
    """Directions u_t (update = -lr * u_t) of the compiled program, flattened, [steps, N].

    One jitted step called 100 times: compiling a single update is far cheaper than a scanned loop."""
    opt = to_optax(program, learning_rate=LR)
    layout = Layout.of(params)

    @jax.jit
    def step(params, state, g, loss):
        upd, state = opt.update(g, state, params, value=loss)
        return optax.apply_updates(params, upd), state, layout.flatten(upd) / -LR

    state, out = opt.init(params), []
    for g, loss in zip(grads, losses):
        params, state, u = step(params, state, g, loss)
        out.append(u)
    return np.asarray(jnp.stack(out))


@functools.lru_cache(maxsize=None)
def _interpreted(shapes_key: str) -> dict[str, np.ndarray]:
    """Every covered library program on one problem, in a single batched interpreter call."""
    shapes = MIXED if shapes_key == "mixed" else MATRICES
    names = [n for n in library.names() if _covered(n)[0]]
    params, grads, losses = _problem(shapes)
    layout = Layout.of(params)
    us = run_updates(stack([encode(library.get(n), MAX_LEN, N_REG) for n in names]), tuple(layout.shapes),
                     layout.flatten(params), jnp.stack([layout.flatten(g) for g in grads]), losses, LR)
    return dict(zip(names, np.asarray(us)))


@functools.lru_cache(maxsize=None)
def _covered(name: str) -> tuple[bool, str]:
    try:
        encode(library.get(name), MAX_LEN, N_REG)
        return True, ""
    except EncodingError as e:
        return False, str(e)


def test_covered_set_includes_core_optimizers():
    names = set(library.names())
    covered = {n for n in names if _covered(n)[0]}
    missing = (MUST_COVER & names) - covered
    assert not missing, f"interpreter cannot run {missing}"
    assert MUST_COVER <= names or pytest.skip(f"library lacks {MUST_COVER - names}")


@pytest.mark.parametrize("name", library.names())
def test_interpreter_matches_compiled(name):
    ok, why = _covered(name)
    if not ok:
        pytest.skip(f"{name}: {why}")
    program = library.get(name)
    from metaopt.compile import Rule
    shapes = MATRICES if Rule(program, program.defaults).needs_matrix else MIXED
    params, grads, losses = _problem(shapes)
    ref = _compiled_updates(program, params, grads, losses)
    ours = _interpreted("matrices" if shapes is MATRICES else "mixed")[name]
    assert (np.isfinite(ref) == np.isfinite(ours)).all(), f"{name}: non-finite values differ"
    # Relative to each step's update size (an elementwise ratio is meaningless where momentum cancels).
    err = np.nanmax(np.abs(ours - ref), axis=1) / np.nanmax(np.abs(ref), axis=1)
    assert np.nanmax(err) <= TOLERANCE.get(name, 1e-5), f"{name}: max relative error {np.nanmax(err):.2e} at step {np.nanargmax(err)}"


def test_decode_roundtrip_runs_the_same():
    for name in ("adam", "lion", "lamb", "polyak_sgd", "adam_mini"):
        enc = encode(library.get(name), MAX_LEN, N_REG)
        again = encode(decode(enc), MAX_LEN, N_REG)
        layout = Layout([(3, 4), (5,)])
        rng = np.random.default_rng(1)
        g = jnp.asarray(rng.standard_normal((20, layout.n)), jnp.float32)
        u = run_updates(stack([enc, again]), tuple(layout.shapes), g[0], g, jnp.ones(20), 1e-2)
        np.testing.assert_allclose(u[0], u[1], rtol=1e-6, atol=1e-7, err_msg=name)
        assert str(decode(again)) == str(decode(enc))


def test_encoding_errors():
    with pytest.raises(EncodingError, match="not searchable"):
        encode(parse("optimizer o()\nreturn orthogonalize(g)"), 8, 16)
    with pytest.raises(EncodingError, match="max_len"):
        encode(library.get("adam"), 4, 32)
    with pytest.raises(EncodingError, match="registers"):
        encode(library.get("adam"), 32, 8)
    e = encode(library.get("adam"), 16, 24)
    assert e.ops.shape == (16,) and e.args.shape == (16, 3) and e.init_const.shape == (24,)
    with pytest.raises(ValueError, match="different"):
        stack([e, encode(library.get("adam"), 17, 24)])


@functools.lru_cache(maxsize=None)
def _trainer(max_len: int = 16) -> PopulationTrainer:
    return PopulationTrainer(tasks.get("smoke_quadratic"), max_len, 24, steps=40, eval_every=20)


def test_population_trainer_matches_metaopt_train():
    """One population call (programs x rates x seeds, a divergent program among them) against
    metaopt.train with the compiled programs (one compile per program, vmapped over rates and seeds)."""
    task = tasks.get("smoke_quadratic")
    bad = parse("optimizer bad()\nreturn log(-abs(g) - 1) + exp(1000 * g)")
    names = ["adam", "lion", "sgd"]
    pop = stack([encode(library.get(n), 16, 24) for n in names] + [encode(bad, 16, 24)])
    lrs = jnp.array([1e-2, 1e-1])
    key = jax.random.PRNGKey(3)
    curves = np.asarray(_trainer()(pop, lrs, key, n_seeds=2))
    assert curves.shape == (4, 2, 2, 3)
    assert not np.isfinite(curves[3, :, :, -1]).any() and np.isfinite(curves[:3]).all()
    seed_keys = jax.random.split(key, 2)
    for i, n in enumerate(names[:2]):
        factory = functools.partial(to_optax, library.get(n))
        run = lambda k, lr: metaopt.train(task, factory, k, 40, 20, learning_rate=lr).valid_loss
        ref = np.asarray(jax.vmap(jax.vmap(run, (None, 0)), (0, None))(seed_keys, lrs))     # [S, L, T]
        np.testing.assert_allclose(curves[i], ref.transpose(1, 0, 2), rtol=2e-5, atol=1e-6, err_msg=n)


def test_population_trainer_takes_a_grid_per_program():
    """Rates ``[P, L]`` (the hurdle: each child on its own grid) train program p at its own rates, checked
    against metaopt.train with the compiled program; ``[L]`` and ``[P, L]`` share one compiled form, so
    new rates never retrace."""
    task = tasks.get("smoke_quadratic")
    trainer = PopulationTrainer(task, 16, 24, steps=40, eval_every=20)
    names = ["adam", "sgd"]
    pop = stack([encode(library.get(n), 16, 24) for n in names])
    grids = np.array([[1e-2, 1e-1], [3e-3, 3e-1]], np.float32)
    key = jax.random.PRNGKey(5)
    curves = np.asarray(trainer(pop, grids, key, n_seeds=1))
    for i, n in enumerate(names):
        for j, lr in enumerate(grids[i]):
            factory = functools.partial(to_optax, library.get(n))
            ref = metaopt.train(task, factory, jax.random.split(key, 1)[0], 40, 20, learning_rate=float(lr))
            np.testing.assert_allclose(curves[i, j, 0], np.asarray(ref.valid_loss), rtol=2e-5, atol=1e-6,
                                       err_msg=f"{n} at {lr}")
    trainer(pop, jnp.array([1e-3, 1e-2]), key, n_seeds=1)
    assert trainer._run._cache_size() == 1
    with pytest.raises(ValueError, match="one grid per program"):
        trainer(pop, np.ones((3, 2), np.float32), key)
