"""Cheap extra input features of the MLP rule (Adafactor-style factored second moments, several momentum
decays) and backward compatibility: the shipped checkpoints give the outputs they gave before the features
existed (tests/data/lopt_checkpoint_outputs.npz, written by this module's ``write_golden`` under the suite's
compiler flags with the code of commit abb3ea6, before metaopt.learned.kernels gained the ``factored`` option;
bit-identical under those flags, ~1e-6 relative under the production compiler; one element in 140 once came
out 1.1e-5 relative off in a clean-clone run (float32 reduction order depends on which tests share the worker),
hence rtol 1e-4: scaling every weight by 1.001 moves them by up to 3.9e-2 relative, median 1.3e-3)."""
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.learned import HyperLOpt, MLPLOpt, kernels, load_lopt
from metaopt.learned import torch_kernels

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
LOPT_DIR = os.path.join(ROOT, "checkpoints", "lopt")
GOLDEN = os.path.join(ROOT, "tests", "data", "lopt_checkpoint_outputs.npz")
SHIPPED = sorted(d for d in os.listdir(LOPT_DIR) if os.path.isdir(os.path.join(LOPT_DIR, d)))
STEPS = 4


def probe_params() -> dict:
    """A matrix and a vector: the two kinds of leaf the shipped rules' feature code treats alike."""
    k = jax.random.split(jax.random.PRNGKey(3), 2)
    return {"w": jax.random.normal(k[0], (6, 5)), "b": 0.1 * jax.random.normal(k[1], (5,))}


@functools.partial(jax.jit, static_argnums=0)
def _update(lopt, theta, grads, state, params, value):
    # θ is an argument, so checkpoints of one architecture share a compile
    return lopt.opt(theta).update(grads, state, params, value=value)


def probe_outputs(path: str) -> np.ndarray:
    """The updates of ``STEPS`` steps of the optimizer at ``path`` on fixed pseudo-gradients, concatenated."""
    lopt, theta = load_lopt(path)
    params = probe_params()
    state = lopt.opt(theta).init(params)
    out = []
    for t in range(STEPS):
        leaves, treedef = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(100 + t), len(leaves))
        grads = jax.tree_util.tree_unflatten(treedef, [(1.0 + t) * jax.random.normal(kk, x.shape)
                                                       for kk, x in zip(keys, leaves)])
        updates, state = _update(lopt, theta, grads, state, params, jnp.asarray(2.0 / (1 + t)))
        params = jax.tree_util.tree_map(jnp.add, params, updates)
        out.append(np.concatenate([np.asarray(u).ravel() for u in jax.tree_util.tree_leaves(updates)]))
    return np.stack(out)


def write_golden() -> None:
    np.savez(GOLDEN, **{name: probe_outputs(os.path.join(LOPT_DIR, name)) for name in SHIPPED})


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoints_give_their_recorded_outputs(name):
    with np.load(GOLDEN) as golden:
        assert name in golden.files, f"{GOLDEN} has no outputs for {name}: rerun write_golden on the old code"
        want = golden[name]
    np.testing.assert_allclose(probe_outputs(os.path.join(LOPT_DIR, name)), want, rtol=1e-4, atol=1e-12)


# ---- the factored (Adafactor-style) features, against the equations of Shazeer & Stern (2018) ------------

def _grads(params, t):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(200 + t), len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [jnp.cos(3.0 * x) + (1.0 + t) * jax.random.normal(k, x.shape)
                                                  for k, x in zip(keys, leaves)])


FACTORED_PARAMS = {"conv": jnp.linspace(-1, 1, 24).reshape(2, 3, 4), "w": jnp.linspace(0, 2, 30).reshape(6, 5),
                   "b": jnp.linspace(-0.5, 0.5, 5)}


def test_factored_statistics_are_adafactors_row_and_column_sums():
    """After T steps, the state's (row, col) are EMAs of G²'s row/column means, and the feature g/√(v̂+ε) uses
    Adafactor's V̂ = R C / (1ᵀ R) with R, C the EMAs of G²'s row and column *sums* (numpy, float64)."""
    lopt = MLPLOpt(hidden_size=2, factored=True)
    opt = lopt.opt(lopt.init_meta_params(jax.random.PRNGKey(0)))
    params, state, beta = FACTORED_PARAMS, opt.init(FACTORED_PARAMS), lopt.rms_decay
    update = opt.update       # eager: compiling costs more than these three steps
    sums = {k: [0.0, 0.0] for k in ("conv", "w")}
    for t in range(3):
        g = _grads(params, t)
        for k in sums:
            g2 = np.asarray(g[k], np.float64) ** 2
            sums[k] = [beta * sums[k][0] + (1 - beta) * g2.sum(-1), beta * sums[k][1] + (1 - beta) * g2.sum(-2)]
        _, state = update(g, state, params)
    leaves = dict(zip(sorted(params), state.factored))     # flattening order of a dict: sorted keys
    assert leaves["b"] == ()
    for k, (r_sum, c_sum) in sums.items():
        n, m = params[k].shape[-2:]
        np.testing.assert_allclose(leaves[k][0], r_sum / m, rtol=1e-5)
        np.testing.assert_allclose(leaves[k][1], c_sum / n, rtol=1e-5)
        v_hat = r_sum[..., :, None] * c_sum[..., None, :] / r_sum.sum(-1)[..., None, None]
        m_leaf = np.asarray(jax.tree_util.tree_leaves(state.momenta[0])[sorted(params).index(k)])
        got = kernels.factored_features(g[k], [m_leaf], None, leaves[k])
        np.testing.assert_allclose(got[0], np.asarray(g[k]) / np.sqrt(v_hat + kernels.EPS), rtol=1e-4)
        np.testing.assert_allclose(got[1], np.broadcast_to(1 / np.sqrt(r_sum[..., None] / m + kernels.EPS),
                                                           g[k].shape), rtol=1e-4)
        np.testing.assert_allclose(got[3], m_leaf / np.sqrt(v_hat + kernels.EPS), rtol=1e-4)


def test_factored_estimate_is_exact_for_rank_one_squared_gradients():
    """G² = a bᵀ every step: the factored estimate equals the full second moment v (Adafactor's motivation)."""
    a, b = jnp.asarray([1.0, 2.0, 0.5]), jnp.asarray([0.3, 1.0, 3.0, 0.1])
    g = jnp.sqrt(a[:, None] * b[None, :])
    state = kernels.init_moments({"w": g}, 1, factored=True)
    for _ in range(4):
        state = kernels.update_moments({"w": g}, state, (0.9,), 0.99)
        v = state.v["w"]
        feats = kernels.factored_features(g, [state.momenta[0]["w"]], v, state.factored[0])
        np.testing.assert_allclose(feats[0], g / np.sqrt(np.asarray(v) + kernels.EPS), rtol=1e-5)


def test_factored_rule_with_silent_new_inputs_is_the_plain_rule():
    """Zero first-layer rows for the new features: the factored rule's updates are the plain rule's."""
    plain, fac = MLPLOpt(hidden_size=4), MLPLOpt(hidden_size=4, factored=True)
    theta = dict(plain.init_meta_params(jax.random.PRNGKey(1))["params"])
    extra = kernels.num_features(3, True) - kernels.num_features(3)
    assert extra == 3 + 3
    theta_f = dict(theta, w1=jnp.concatenate([theta["w1"], jnp.zeros((extra, 4))]))
    assert theta_f["w1"].shape == fac.init_meta_params(jax.random.PRNGKey(1))["params"]["w1"].shape
    o1, o2 = plain.opt({"params": theta}), fac.opt({"params": theta_f})
    s1, s2, params = o1.init(FACTORED_PARAMS), o2.init(FACTORED_PARAMS), FACTORED_PARAMS
    for t in range(2):
        g = _grads(params, t)
        (u1, s1), (u2, s2) = o1.update(g, s1, params), o2.update(g, s2, params)
        for k in params:
            np.testing.assert_allclose(u2[k], u1[k], rtol=1e-5, atol=1e-9)


def test_torch_port_computes_the_factored_rule():
    torch = pytest.importorskip("torch")
    lopt = MLPLOpt(hidden_size=4, factored=True, momentum_decays=(0.5, 0.9, 0.99, 0.999))
    theta = lopt.init_meta_params(jax.random.PRNGKey(2))
    opt = lopt.opt(theta, 2.0)
    hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in lopt.hyperparams().items()}
    tparams = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in FACTORED_PARAMS.items()}
    topt = torch_kernels.LearnedOptimizer(list(tparams.values()), {k: np.array(v) for k, v in theta["params"].items()},
                                          "mlp", hp, lr_multiplier=2.0)
    params, state = FACTORED_PARAMS, opt.init(FACTORED_PARAMS)
    for t in range(3):
        g = _grads(params, t)
        u, state = opt.update(g, state, params)
        params = jax.tree_util.tree_map(jnp.add, params, u)
        for k, p in tparams.items():
            p.grad = torch.tensor(np.asarray(g[k]))
        topt.step()
    for k, p in tparams.items():
        np.testing.assert_allclose(p.detach().numpy(), params[k], rtol=1e-5, atol=1e-6)


# tensors this large take kernels.leaf_mean_squares' separate statistics pass (rank 1, 2 and 3 leaves)
LARGE_PARAMS = {"w": jnp.linspace(-1, 1, 256 * 160).reshape(256, 160),
                "conv": jnp.linspace(0, 2, 2 * 128 * 160).reshape(2, 128, 160), "b": jnp.linspace(-0.5, 0.5, 40000)}


@pytest.mark.parametrize("lopt", [MLPLOpt(hidden_size=4, factored=True, nominal=1.0), HyperLOpt(hidden_size=4, lstm_size=8)],
                         ids=["mlp_factored_nominal", "hyper"])
def test_torch_port_computes_the_rule_on_large_tensors(lopt):
    torch = pytest.importorskip("torch")
    assert min(x.size for x in LARGE_PARAMS.values()) >= kernels.SEPARATE_STATS
    theta = lopt.init_meta_params(jax.random.PRNGKey(4))
    opt = lopt.opt(theta)
    hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in lopt.hyperparams().items()}
    tparams = {k: torch.nn.Parameter(torch.tensor(np.asarray(v))) for k, v in LARGE_PARAMS.items()}
    topt = torch_kernels.LearnedOptimizer(list(tparams.values()), {k: np.array(v) for k, v in theta["params"].items()},
                                          lopt.name, hp)
    params, state = LARGE_PARAMS, opt.init(LARGE_PARAMS)
    update = jax.jit(lambda g, s, p, value: opt.update(g, s, p, value=value))
    for t in range(2):
        g = _grads(params, t)
        u, state = update(g, state, params, jnp.float32(2.0 / (1 + t)))
        params = jax.tree_util.tree_map(jnp.add, params, u)
        for k, p in tparams.items():
            p.grad = torch.tensor(np.asarray(g[k]))
        topt.step(lambda t=t: torch.tensor(2.0 / (1 + t)))
    for k, p in tparams.items():
        np.testing.assert_allclose(p.detach().numpy(), params[k], rtol=1e-5, atol=1e-6)


if __name__ == "__main__" and sys.argv[1:] == ["--write-golden"]:
    write_golden()
