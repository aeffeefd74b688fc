"""Gradient estimators: TBPTT matches finite differences; PES is unbiased where truncated ES is not."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.learned import MLPLOpt
from metaopt.learned.base import LearnedOptimizer
from metaopt.meta import EstimatorConfig, make_estimator
from metaopt.meta.unroll import fresh_state, unroll
from tasks.base import Task

TARGET = np.array([1.0, -2.0])


def toy_task(dtype=jnp.float32) -> Task:
    target = jnp.asarray(TARGET, dtype)
    return Task("toy", init=lambda k: {"w": jnp.zeros(2, dtype)},
                loss=lambda p, b: 0.5 * jnp.sum((p["w"] - target) ** 2),
                batch=lambda k, s: jnp.zeros((), dtype))


@dataclasses.dataclass(frozen=True)
class Drift(LearnedOptimizer):
    """w ← w − θ every step: every truncation's loss is exactly quadratic in θ."""
    name = "drift"

    def init_meta_params(self, key):
        return {"d": jnp.array([0.05, -0.1])}

    def opt(self, theta, lr_multiplier=1.0):
        return optax.GradientTransformation(
            lambda p: optax.EmptyState(),
            lambda g, s, p=None: (jax.tree_util.tree_map(lambda x: -lr_multiplier * theta["d"] + 0 * x, g), s))


def true_truncation_grads(theta, k, r):
    """∇θ of each truncation's meta-loss, through the whole history (exact, by jax.grad)."""
    def trunc_losses(th):
        w = jnp.zeros(2) - jnp.arange(k * r)[:, None] * th["d"]           # w_t = −tθ
        losses = 0.5 * jnp.sum((w - TARGET) ** 2, axis=1)
        return losses.reshape(r, k).mean(axis=1)
    return jax.jacobian(trunc_losses)(theta)["d"]                       # [r, 2]


@functools.cache
def compiled(kind, n, r, k, sigma=0.05):
    cfg = EstimatorConfig(kind=kind, num_particles=n, sigma=sigma, unroll_length=k, reset_every=r,
                          log_loss=False, stagger=False)
    est, task, theta = make_estimator(Drift(), cfg), toy_task(), Drift().init_meta_params(None)
    return (jax.jit(lambda kk: est.init(task, theta, kk)),
            jax.jit(lambda s, kk: est.estimate(task, theta, s, kk)))


def run_truncations(kind, n, r, k, seed):
    init, step = compiled(kind, n, r, k)
    key = jax.random.PRNGKey(seed)
    state = init(key)
    grads = []
    for i in range(r):
        g, state, _ = step(state, jax.random.fold_in(key, i))
        grads.append(np.asarray(g["d"]))
    return np.stack(grads)                                                # [r, 2]


def test_pes_unbiased_and_truncated_es_biased():
    r, k = 3, 4
    truth = np.asarray(true_truncation_grads(Drift().init_meta_params(None), k, r))
    pes = np.stack([run_truncations("pes", 512, r, k, seed) for seed in range(12)])
    es = np.stack([run_truncations("es", 512, r, k, seed) for seed in range(12)])
    for est, name in ((pes, "pes"), (es, "es")):
        assert est.shape == (12, r, 2), name
    pes_mean, pes_se = pes.mean(0), pes.std(0, ddof=1) / np.sqrt(pes.shape[0])
    # unbiased: every truncation, including the last whose loss depends on θ through the history
    assert np.all(np.abs(pes_mean - truth) < 4 * pes_se + 0.02 * np.abs(truth)), (pes_mean, truth, pes_se)
    # truncated ES sees only the current window: on the last truncation it misses most of ∇θ
    es_mean, es_se = es.mean(0), es.std(0, ddof=1) / np.sqrt(es.shape[0])
    np.testing.assert_allclose(es_mean[0], truth[0], rtol=0.1, atol=4 * es_se[0].max())
    assert np.linalg.norm(es_mean[-1] - truth[-1]) > 0.3 * np.linalg.norm(truth[-1])


def test_tbptt_matches_finite_differences_float64():
    with jax.enable_x64(True):
        lopt = MLPLOpt(hidden_size=4, momentum_decays=(0.9,), time_scales=(1, 10), step_mult=0.1, exp_mult=0.1)
        theta = jax.tree_util.tree_map(lambda x: x.astype(jnp.float64),
                                       lopt.init_meta_params(jax.random.PRNGKey(0)))
        hess = jnp.diag(jnp.array([1.0, 3.0, 10.0], jnp.float64))
        task = Task("q64", init=lambda k: {"w": jax.random.normal(k, (3,), jnp.float64)},
                    loss=lambda p, b: 0.5 * (p["w"] - b) @ hess @ (p["w"] - b),
                    batch=lambda k, s: 0.1 * jax.random.normal(k, (3,), jnp.float64))
        cfg = EstimatorConfig(kind="tbptt", num_particles=2, unroll_length=6, reset_every=5, stagger=False)
        est = make_estimator(lopt, cfg)
        state = est.init(task, theta, jax.random.PRNGKey(1))
        estimate = jax.jit(lambda th, s, k: est.estimate(task, th, s, k))
        # advance once so the state carries nonzero momenta, then differentiate the next truncation
        _, state, _ = estimate(theta, state, jax.random.PRNGKey(2))
        grad, _, metrics = estimate(theta, state, jax.random.PRNGKey(3))
        assert np.isfinite(float(metrics["meta_loss"]))
        meta_loss = jax.jit(lambda th: est.meta_loss(task, th, state)[0])
        f = lambda th: float(meta_loss(th))
        direction = jax.tree_util.tree_map(
            lambda x: jax.random.normal(jax.random.PRNGKey(x.size), x.shape, jnp.float64), theta)
        h = 1e-5
        plus = jax.tree_util.tree_map(lambda x, d: x + h * d, theta, direction)
        minus = jax.tree_util.tree_map(lambda x, d: x - h * d, theta, direction)
        fd = (f(plus) - f(minus)) / (2 * h)
        analytic = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(grad),
                                                             jax.tree_util.tree_leaves(direction)))
        assert abs(fd) > 1e-6
        np.testing.assert_allclose(analytic, fd, rtol=1e-5)


def test_unroll_decreases_loss_with_scaled_learned_opt():
    """Sanity of the shared unroll: the untrained rule, scaled up, trains a quadratic."""
    lopt = MLPLOpt()
    theta = lopt.init_meta_params(jax.random.PRNGKey(0))
    task = toy_task()
    s = fresh_state(lopt, task, theta, jax.random.PRNGKey(0))
    s2, meta, raw = jax.jit(lambda th, st: unroll(lopt, task, th, st, 5, "train", False))(theta, s)
    assert int(s2.t) == 5 and int(s2.trunc) == 1 and np.isfinite(float(meta))



def test_pes_reset_restarts_both_members_of_a_pair_from_one_fresh_init():
    """A finished pair restarts, both signs, from fresh_state(key_i) with key_i = split(split(key)[1], N)[i]
    (the docstring's "the pair restarts from one init") and its ξ is zeroed; unfinished pairs run on."""
    n, lopt = 6, MLPLOpt(hidden_size=4)
    task = Task("toy_random_init", init=lambda k: {"w": jax.random.normal(k, (2,))},
                loss=lambda p, b: 0.5 * jnp.sum((p["w"] - jnp.asarray(TARGET)) ** 2),
                batch=lambda k, s: jnp.zeros(()))
    cfg = EstimatorConfig(kind="pes", num_particles=n, sigma=0.05, unroll_length=3, reset_every=2,
                          log_loss=False, stagger=True)
    est, theta = make_estimator(lopt, cfg), lopt.init_meta_params(jax.random.PRNGKey(0))
    state = est.init(task, theta, jax.random.PRNGKey(1))
    key = jax.random.PRNGKey(2)
    _, new, metrics = jax.jit(lambda s, k: est.estimate(task, theta, s, k))(state, key)
    done = np.asarray(state.pos.trunc) + 1 >= cfg.reset_every
    assert 0 < done.sum() < n and np.isclose(float(metrics["resets"]), done.mean())
    keys = jax.random.split(jax.random.split(key)[1], n)
    for i in range(n):
        pos, neg = (jax.tree_util.tree_map(lambda x: x[i], s) for s in (new.pos, new.neg))
        if done[i]:
            want = fresh_state(lopt, task, theta, keys[i])
            for a, b, c in zip(*(jax.tree_util.tree_leaves(s) for s in (pos, neg, want))):
                np.testing.assert_array_equal(a, c)
                np.testing.assert_array_equal(b, c)
            assert all(np.all(np.asarray(x[i]) == 0) for x in jax.tree_util.tree_leaves(new.accum))
        else:
            assert int(pos.trunc) == int(neg.trunc) == int(state.pos.trunc[i]) + 1
            assert not np.allclose(pos.params["w"], neg.params["w"])     # θ ± ε moved them apart
