"""The per-parameter MLP learned optimizer's arithmetic, against independent references."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.learned import MLPLOpt, kernels


def test_fused_and_matrix_mlp_forms_agree_with_numpy():
    """kernels.apply_mlp's two formulations both equal a plain numpy MLP on normalized features."""
    rng = np.random.default_rng(0)
    n_feat, hidden = 6, 5
    feats = [jnp.asarray(rng.normal(size=(7, 3)) * 10.0 ** i, jnp.float32) for i in range(n_feat)]
    w1, b1 = rng.normal(size=(n_feat, hidden)), rng.normal(size=hidden)
    w_out, b_out = rng.normal(size=(hidden, 2)), rng.normal(size=2)
    norms = kernels.feature_norms(feats)
    x = np.stack([np.asarray(f).reshape(-1) for f in feats], axis=-1)
    x = x / np.sqrt(np.mean(x ** 2, axis=0) + 1e-12)                 # per-feature RMS normalization
    out = np.maximum(x @ w1 + b1, 0.0) @ w_out + b_out
    expected = (0.01 * out[:, 0] * np.exp(0.1 * out[:, 1])).reshape(7, 3)
    args = (feats, norms, jnp.asarray(w1, jnp.float32), jnp.asarray(b1, jnp.float32), (),
            jnp.asarray(w_out, jnp.float32), jnp.asarray(b_out, jnp.float32), 0.1, 0.01)
    for fused in (True, False):
        np.testing.assert_allclose(kernels.apply_mlp(*args, fused=fused), expected, rtol=2e-4, atol=1e-6)


def test_nominal_term_with_silent_mlp_is_adam():
    """nominal=1 and a zero output layer: the learned rule is exactly optax.adam(step_mult · lr_mult)."""
    lopt = MLPLOpt(nominal=1.0, step_mult=0.01)
    theta = lopt.init_meta_params(jax.random.PRNGKey(0))
    params_ = dict(theta["params"])
    params_["w_out"] = jnp.zeros_like(params_["w_out"])
    theta = {"params": params_}
    opt, ref = lopt.opt(theta, lr_multiplier=3.0), optax.adam(0.03, b1=0.9, b2=0.999, eps=1e-8)
    key = jax.random.PRNGKey(1)
    params = {"w": jax.random.normal(key, (5, 4)), "b": jnp.ones(4)}
    s, s_ref, p, p_ref = opt.init(params), ref.init(params), params, params
    grad = lambda tree, i: jax.tree_util.tree_map(lambda x: jnp.sin(x * (i + 1.0)) + 0.1 * i, tree)
    for i in range(5):
        u, s = opt.update(grad(p, i), s, p)
        u_ref, s_ref = ref.update(grad(p_ref, i), s_ref, p_ref)
        p, p_ref = optax.apply_updates(p, u), optax.apply_updates(p_ref, u_ref)
    for k in params:
        np.testing.assert_allclose(p[k], p_ref[k], rtol=1e-5, atol=1e-6)


def test_nominal_init_starts_the_correction_small():
    small = MLPLOpt(nominal=1.0).init_meta_params(jax.random.PRNGKey(0))["params"]["w_out"]
    full = MLPLOpt().init_meta_params(jax.random.PRNGKey(0))["params"]["w_out"]
    np.testing.assert_allclose(small, 0.1 * full, rtol=1e-6)
