"""Library optimizers (metaopt/library/*.opt) against their optax / optax.contrib references.

Each case runs 100 steps of the compiled DSL program (``metaopt.to_optax``) and of the optax reference on the
same pytree, with the same gradient sequence, and compares the parameters after *every* step. The pytree has
0-D, 1-D, 2-D and 3-D leaves and edge cases: two entries of ``vec`` get gradients ~1e-6 (so the epsilon
placement matters), ``cube`` has a fixed pattern of exactly-zero gradient entries, ``dead`` always has a zero
gradient (zero-accumulator and zero-norm branches) and ``zero`` is a zero-initialised parameter (the
trust-ratio ``||w|| = 0`` branch). Compilation dominates the cost (~1 s of CPU per case), so the tree is small.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
from metaopt import library
from trajectory import rel_err, scan_trajectory

STEPS = 100
TOL = 1e-5      # float32; see rel_err for the metric
SHAPES = {"scalar": (), "vec": (8,), "mat": (5, 4), "cube": (2, 3, 4), "dead": (3,), "zero": (3,)}
GRAD_SCALE = {"scalar": 1.0, "vec": jnp.array([1e-6, 1e-6, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]), "mat": 1.0, "cube": 3.0,
              "dead": 0.0, "zero": 0.5}


def _problem():
    """Initial parameters, a (STEPS, ...) gradient sequence per leaf and a loss sequence, from a fixed key."""
    key = jax.random.PRNGKey(0)
    params, grads = {}, {}
    for i, (name, shape) in enumerate(SHAPES.items()):
        k_init, k_bias, k_noise, k_mask = jax.random.split(jax.random.fold_in(key, i), 4)
        init = jax.random.normal(k_init, shape)
        params[name] = jnp.zeros(shape) if name == "zero" else init
        # a persistent direction plus per-step noise, so momentum builds up and signs still change
        bias = 0.5 * jax.random.normal(k_bias, shape)
        g = GRAD_SCALE[name] * (bias + jax.random.normal(k_noise, (STEPS,) + shape))
        if name == "cube":
            g = g * (jax.random.uniform(k_mask, shape) > 0.25)
        grads[name] = g.astype(jnp.float32)
    losses = 0.5 + jnp.abs(jax.random.normal(jax.random.fold_in(key, 99), (STEPS,)))
    return params, grads, losses


PARAMS, GRADS, LOSSES = _problem()


def _trajectory(tx, with_value: bool):
    return scan_trajectory(tx, PARAMS, GRADS, LOSSES, with_value)[0]


def compare(program, lr, hparams: dict, reference, with_value: bool = False) -> float:
    ours = metaopt.to_optax(program, learning_rate=lr, **hparams)
    run = jax.jit(lambda: (_trajectory(ours, with_value), _trajectory(reference, with_value)))
    a, b = run()
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(b)), "reference diverged: bad test setup"
    # the leaves with gradients must actually move, or the comparison would be vacuous (the zero-initialised
    # leaf may legitimately stay put: Fromage scales steps by ||w||)
    for name in ("scalar", "vec", "mat", "cube"):
        assert float(jnp.max(jnp.abs(b[name][-1] - PARAMS[name]))) > 1e-3, f"leaf {name} did not move"
    return rel_err(a, b)


# --- AdEMAMix's schedules as the authors' code (apple/ml-ademamix) defines them, as optax schedules ----------------
# (written in the same operation order as ademamix.opt: b3(t) near 1 is evaluated in float32 and 1 - b3(t) amplifies
# its rounding ~1e4-fold, so two differently ordered float32 evaluations would differ by ~1e-4 after 100 steps).
def _alpha_schedule(alpha, warmup):
    return lambda step: jnp.where(step < warmup, step / warmup * alpha, alpha)


def _beta3_schedule(beta_end, beta_start, warmup):
    f = lambda b: jnp.log(0.5) / jnp.log(b) - 1.0   # jnp (float32), as the authors' code
    def schedule(step):
        fr = step / warmup
        return jnp.where(step < warmup, 0.5 ** (1.0 / ((1.0 - fr) * f(beta_start) + fr * f(beta_end) + 1.0)),
                         beta_end)
    return schedule


_cosine = optax.cosine_decay_schedule(0.05, STEPS)
_warmup0 = optax.linear_schedule(0.0, 1.0, 20)    # starts at exactly 0: LARS's lr-inside form must cope
_expdecay = optax.exponential_decay(0.05, 10, 0.8)

# (id, library name, learning rate, DSL hyperparameters, optax reference, passes value=loss)
CASES = [
    ("momentum", "momentum", 1e-3, {}, optax.sgd(1e-3, momentum=0.9), False),
    ("nesterov", "nesterov", 1e-3, {}, optax.sgd(1e-3, momentum=0.9, nesterov=True), False),
    ("nesterov-mu", "nesterov", 1e-3, {"mu": 0.99}, optax.sgd(1e-3, momentum=0.99, nesterov=True), False),
    ("adagrad", "adagrad", 0.1, {}, optax.adagrad(0.1), False),
    ("adagrad-v0", "adagrad", 0.1, {"v0": 0.0, "eps": 1e-3},
     optax.adagrad(0.1, initial_accumulator_value=0.0, eps=1e-3), False),
    ("rmsprop", "rmsprop", 0.01, {}, optax.rmsprop(0.01), False),
    ("rmsprop-hp", "rmsprop", 0.01, {"decay": 0.99, "eps": 1e-4, "initial_scale": 1.0},
     optax.rmsprop(0.01, decay=0.99, eps=1e-4, initial_scale=1.0), False),
    ("adamw", "adamw", 0.03, {}, optax.adamw(0.03), False),
    ("adamw-hp-schedule", "adamw", _cosine, {"b1": 0.8, "b2": 0.99, "eps": 1e-6, "wd": 0.1},
     optax.adamw(_cosine, b1=0.8, b2=0.99, eps=1e-6, weight_decay=0.1), False),
    ("adamax", "adamax", 0.03, {}, optax.adamax(0.03), False),
    ("amsgrad", "amsgrad", 0.03, {}, optax.amsgrad(0.03), False),
    ("nadam", "nadam", 0.03, {}, optax.nadam(0.03), False),
    ("radam", "radam", 0.03, {}, optax.radam(0.03), False),
    ("radam-hp", "radam", 0.03, {"b2": 0.99, "threshold": 7.0}, optax.radam(0.03, b2=0.99, threshold=7.0), False),
    ("adabelief", "adabelief", 0.03, {}, optax.adabelief(0.03), False),
    ("adabelief-hp", "adabelief", 0.03, {"b1": 0.8, "eps": 1e-8, "eps_root": 1e-10},
     optax.adabelief(0.03, b1=0.8, eps=1e-8, eps_root=1e-10), False),
    ("adan", "adan", 0.03, {}, optax.adan(0.03), False),
    ("adan-hp", "adan", 0.03, {"b1": 0.9, "eps_root": 0.0, "wd": 0.05},
     optax.adan(0.03, b1=0.9, eps_root=0.0, weight_decay=0.05), False),
    ("lion", "lion", 0.01, {}, optax.lion(0.01), False),
    ("lion-hp", "lion", 0.01, {"b1": 0.5, "b2": 0.9, "wd": 0.1}, optax.lion(0.01, b1=0.5, b2=0.9, weight_decay=0.1),
     False),
    ("signum", "signum", 0.01, {}, optax.signum(0.01), False),
    ("adopt", "adopt", 0.03, {}, optax.contrib.adopt(0.03), False),
    ("adopt-noclip", "adopt", 0.03, {"use_clipping": 0.0, "b2": 0.999},
     optax.contrib.adopt(0.03, b2=0.999, use_clipping=False), False),
    ("ademamix", "ademamix", 0.03, {}, optax.contrib.ademamix(0.03), False),
    ("ademamix-schedules", "ademamix", 0.03,
     {"alpha": 8.0, "b3": 0.999, "t_alpha": 50.0, "t_b3": 80.0, "wd": 0.01},
     optax.contrib.ademamix(0.03, b3=_beta3_schedule(0.999, 0.9, 80.0), alpha=_alpha_schedule(8.0, 50.0),
                            weight_decay=0.01), False),
    ("lamb", "lamb", 0.01, {}, optax.lamb(0.01), False),
    ("lamb-hp", "lamb", 0.01, {"eps": 1e-8, "wd": 0.01}, optax.lamb(0.01, eps=1e-8, weight_decay=0.01), False),
    ("lars", "lars", 1.0, {}, optax.lars(1.0), False),
    ("lars-hp-warmup0", "lars", _warmup0, {"wd": 1e-3, "eta": 0.01, "eps": 1e-6, "mu": 0.8},
     optax.lars(_warmup0, weight_decay=1e-3, trust_coefficient=0.01, eps=1e-6, momentum=0.8), False),
    ("polyak_sgd", "polyak_sgd", 1.0, {}, optax.polyak_sgd(), True),
    ("polyak_sgd-hp", "polyak_sgd", 0.5, {"max_lr": 0.05, "f_min": 0.7, "eps": 1e-3},
     optax.polyak_sgd(max_learning_rate=0.05, scaling=0.5, f_min=0.7, eps=1e-3), True),
    ("yogi", "yogi", 0.03, {}, optax.yogi(0.03), False),
    ("novograd", "novograd", 0.03, {}, optax.novograd(0.03), False),
    ("novograd-hp", "novograd", 0.03, {"b2": 0.5, "wd": 0.01}, optax.novograd(0.03, b2=0.5, weight_decay=0.01),
     False),
    ("fromage", "fromage", 0.03, {}, optax.fromage(0.03), False),
    ("fromage-schedule", "fromage", _expdecay, {"min_norm": 1e-4}, optax.fromage(_expdecay, min_norm=1e-4), False),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_optax(case):
    _, name, lr, hps, ref, with_value = case
    err = compare(library.get(name), lr, hps, ref, with_value)
    assert err <= TOL, f"{case[0]}: max relative error {err:.3g} > {TOL}"


# The comparison can fail: the same programs against references that differ only in one of the details the
# library files take care over (eps_root accumulated in the state, the rectification threshold, the clipping).
NEAR_MISSES = [
    ("adabelief", 0.03, {}, optax.adabelief(0.03, eps_root=0.0)),
    ("radam", 0.03, {}, optax.radam(0.03, threshold=4.0)),
    ("adopt", 0.03, {}, optax.contrib.adopt(0.03, use_clipping=False)),
]


@pytest.mark.parametrize("case", NEAR_MISSES, ids=[c[0] for c in NEAR_MISSES])
def test_near_miss_reference_is_detected(case):
    name, lr, hps, wrong_ref = case
    assert compare(library.get(name), lr, hps, wrong_ref) > 1e-3


def test_every_library_file_of_this_suite_is_covered():
    tested = {c[1] for c in CASES}
    mine = {"momentum", "nesterov", "adagrad", "rmsprop", "adamw", "adamax", "amsgrad", "nadam", "radam",
            "adabelief", "adan", "lion", "signum", "adopt", "ademamix", "lamb", "lars", "polyak_sgd", "yogi",
            "novograd", "fromage"}
    assert mine <= set(library.names())
    assert mine <= tested


# The exported standalone module (metaopt.to_source) against the same optax references, for programs that read the
# learning rate inside (lars, under a schedule starting at 0), read the loss (polyak_sgd) or keep a per-leaf
# scalar state (novograd). tests/test_export.py holds to_source and to_optax together in general.
EXPORTED = ["lars-hp-warmup0", "polyak_sgd-hp", "novograd-hp"]


@pytest.mark.parametrize("case_id", EXPORTED)
def test_exported_source_matches_optax(case_id):
    _, name, lr, hps, ref, with_value = next(c for c in CASES if c[0] == case_id)
    ns: dict = {}
    exec(compile(metaopt.to_source(library.get(name)), f"<export {name}>", "exec"), ns)
    exported = ns[name](lr, **hps)
    a, b = jax.jit(lambda: (_trajectory(exported, with_value), _trajectory(ref, with_value)))()
    err = rel_err(a, b)
    assert err <= TOL, f"exported {case_id}: max relative error {err:.3g} > {TOL}"


# --- Further library programs with an optax / optax.contrib reference (same problem, metric and tolerance) ------
def _ldog(lr, **kw):
    # optax keeps each leaf's gradient sum of squares with shape (1,), which turns a 0-D leaf's update into
    # shape (1,): reshape the updates back to the parameters' shapes (values untouched)
    reshape = optax.GradientTransformation(
        lambda p: optax.EmptyState(), lambda u, s, p: (jax.tree.map(lambda x, w: x.reshape(w.shape), u, p), s))
    return optax.chain(optax.scale_by_distance_over_gradients(**kw), reshape, optax.scale_by_learning_rate(lr))


MORE_CASES = [
    ("sgd", "sgd", 0.1, {}, optax.sgd(0.1), False),
    ("adam", "adam", 0.03, {}, optax.adam(0.03), False),
    ("adam-hp-schedule", "adam", _cosine, {"b1": 0.8, "b2": 0.99, "eps": 1e-6},
     optax.adam(_cosine, b1=0.8, b2=0.99, eps=1e-6), False),
    ("adadelta", "adadelta", 1.0, {}, optax.adadelta(1.0), False),
    ("adadelta-hp", "adadelta", 0.5, {"rho": 0.95, "eps": 1e-5, "wd": 0.01},
     optax.adadelta(0.5, rho=0.95, eps=1e-5, weight_decay=0.01), False),
    ("sign_sgd", "sign_sgd", 0.01, {}, optax.sign_sgd(0.01), False),
    ("nadamw", "nadamw", 0.03, {}, optax.nadamw(0.03), False),
    ("nadamw-hp", "nadamw", _cosine, {"b1": 0.8, "wd": 0.1}, optax.nadamw(_cosine, b1=0.8, weight_decay=0.1), False),
    ("adamaxw", "adamaxw", 0.03, {}, optax.adamaxw(0.03), False),
    ("adamaxw-hp", "adamaxw", 0.03, {"b2": 0.99, "wd": 0.1}, optax.adamaxw(0.03, b2=0.99, weight_decay=0.1), False),
    ("dowg", "dowg", 1.0, {}, optax.contrib.dowg(1.0), False),
    ("dowg-hp", "dowg", 0.5, {"eps": 1e-3, "wd": 0.01}, optax.contrib.dowg(0.5, eps=1e-3, weight_decay=0.01), False),
    ("ldog", "ldog", 1.0, {}, _ldog(1.0), False),
    ("ldog-hp", "ldog", 0.5, {"reps_rel": 1e-4}, _ldog(0.5, reps_rel=1e-4), False),
    ("momo_adam", "momo_adam", 1e-2, {}, optax.contrib.momo_adam(1e-2), True),
    ("momo_adam-hp", "momo_adam", 0.1, {"wd": 0.05, "lb": 0.5, "b2": 0.99},
     optax.contrib.momo_adam(0.1, weight_decay=0.05, lower_bound=0.5, b2=0.99), True),
]


@pytest.mark.parametrize("case", MORE_CASES, ids=[c[0] for c in MORE_CASES])
def test_more_match_optax(case):
    _, name, lr, hps, ref, with_value = case
    err = compare(library.get(name), lr, hps, ref, with_value)
    assert err <= TOL, f"{case[0]}: max relative error {err:.3g} > {TOL}"


CLIP_CASES = [
    ("clip_sgd", "clip_sgd", 0.01, {}, optax.chain(optax.clip(1.0), optax.sgd(0.01)), False),
    ("clip_sgd-c", "clip_sgd", 0.01, {"c": 0.3}, optax.chain(optax.clip(0.3), optax.sgd(0.01)), False),
]


@pytest.mark.parametrize("case", CLIP_CASES, ids=[c[0] for c in CLIP_CASES])
def test_clip_sgd_matches_optax(case):
    _, name, lr, hps, ref, with_value = case
    err = compare(library.get(name), lr, hps, ref, with_value)
    assert err <= TOL, f"{case[0]}: max relative error {err:.3g} > {TOL}"
