"""More library optimizers against their references: tests/test_library_paper.py's protocol, problem and metric.

100 closed-loop steps on the noisy quadratic over 0-D, 1-D, 2-D (tall W, wide V and U) and 3-D leaves, final
parameters compared with quadratic_tree.rel_err at 1e-5 (float32). The references are optax where it has the rule
(sm3, and optax.partition of optax.adamw for Blockwise LR), else the paper's or its official code's equations
written below in jax.numpy, independent of the DSL; each cites its source. Cases that read io_paths pass them as
to_optax's ``io_paths`` (the reference gets the same names); ``V`` plays the model's input/output layer.
benchmarks/library_table.py measures CASES with the other suites.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

from quadratic_tree import rel_err
from test_library_paper import _optax, _paper, check_case, leafwise, ns5, run_optax, run_ref, run_ref_value, zeros2

IO = ("V",)


def _torch_style_adamw(w, g, s, t, lr, b1, b2, eps, wd):
    """The AdamW branch of the MARS-M and SCALE codes (m.lerp_, eps on sqrt(v), lr*sqrt(bc2)/bc1, decay first)."""
    m, v = s
    m = m + (1 - b1) * (g - m)
    v = v + (1 - b2) * (g * g - v)
    w = w * (1 - lr * wd)
    return w - lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (eps + jnp.sqrt(v)), (m, v)


def by_name(step_of):
    """A reference over the parameter dict: step_of(name, w) -> (init_leaf, step_leaf) picks each leaf's rule."""
    def init(params):
        return {k: step_of(k, w)[0](w) for k, w in params.items()}

    def step(params, grads, state, t, lr):
        out = {k: step_of(k, w)[1](w, grads[k], state[k], t, lr) for k, w in params.items()}
        return {k: o[0] for k, o in out.items()}, {k: o[1] for k, o in out.items()}
    return init, step


# ----------------------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------------------

def ref_adam_atan2(b1=0.9, b2=0.999, a=1.0, b=1.0, wd=0.0):
    # Everett et al., arXiv:2407.05872: theta <- theta - eta (a atan2(m_hat, b sqrt(v_hat)) + lambda theta).
    def step(w, g, s, t, lr):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        return w - lr * (a * jnp.arctan2(m / (1 - b1 ** t), b * jnp.sqrt(v / (1 - b2 ** t))) + wd * w), (m, v)
    return leafwise(zeros2, step)


def ref_lion_huber(b1=0.9, b2=0.99, wd=1e-3, delta=1e-3, clipped=True):
    # Chen, Liu, Liang & Liu, arXiv:2310.05898, Lion-K with K = sum of Huber functions: grad K(c) = clip(c/delta,
    # -1, 1). clipped=False (grad K(c) = c/delta, the quadratic K) is the vacuity check below.
    def step(w, g, s, t, lr):
        (m,) = s
        c = b1 * m + (1 - b1) * g
        u = jnp.clip(c / delta, -1, 1) if clipped else c / delta
        return w - lr * (u + wd * w), (b2 * m + (1 - b2) * g,)
    return leafwise(lambda w: (jnp.zeros_like(w),), step)


def sm3_flat(momentum=0.9, lr=0.1, matrices=True):
    """optax.sm3 with the leaves that are not 2-D (all leaves: matrices=False) flattened to 1-D, where optax's rule
    is the diagonal one (optax rejects 0-D leaves and covers a 3-D leaf by its three axes; see sm3.opt)."""
    tx = optax.sm3(lr, momentum=momentum)
    flat = lambda x: x if (matrices and x.ndim == 2) else x.reshape(-1)

    def update(u, s, params=None):
        out, s = tx.update(jax.tree.map(flat, u), s)
        return jax.tree.map(lambda o, x: o.reshape(x.shape), out, u), s
    return optax.GradientTransformation(lambda p: tx.init(jax.tree.map(flat, p)), update)


def ref_adamw_sn(b1=0.9, b2=0.999, eps=1e-6, wd=0.0):
    # Nguyen et al., arXiv:2411.07120, as the official adamw_sn.py (timmytonga/sn-sm): for a 2-D leaf the second
    # moment of the sums of g^2 over dim 1 (rows >= cols) or dim 0; step lr sqrt(bc2)/bc1 m/(sqrt(v) + eps); then
    # p <- p - lr wd p. Other leaves: the same without subsets.
    def reduce(g):
        if g.ndim != 2:
            return g * g
        return jnp.sum(g * g, axis=1 if g.shape[0] >= g.shape[1] else 0, keepdims=True)

    def step(w, g, s, t, lr):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * reduce(g)
        w = w - lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (jnp.sqrt(v) + eps)
        return w - lr * wd * w, (m, v)
    return leafwise(lambda w: (jnp.zeros_like(w), jnp.zeros_like(reduce(w))), step)


def ref_scale(io_paths=(), beta=0.9, wd=0.0, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8):
    # Glentis et al., arXiv:2506.16659, as the official scale_optimizer.py (OptimAI-Lab/Minimalist_LLM_Pretraining):
    # matrices u = G / clamp_min(sqrt(mean(G^2, over the input axis)), 1e-8), momentum (lerp) on the last layer
    # only, AdamW for the 1-D parameters; p <- p(1 - lr wd) first. The input axis of a JAX [in, out] matrix is 0.
    def colnorm(x):
        return x / jnp.maximum(jnp.sqrt(jnp.mean(x * x, axis=0, keepdims=True)), 1e-8)

    def hidden(w, g, s, t, lr):
        return w * (1 - lr * wd) - lr * colnorm(g), s

    def head(w, g, s, t, lr):
        (m,) = s
        m = m + (1 - beta) * (g - m)
        return w * (1 - lr * wd) - lr * colnorm(m), (m,)

    def other(w, g, s, t, lr):
        return _torch_style_adamw(w, g, s, t, lr, adam_b1, adam_b2, adam_eps, wd)

    def rule(name, w):
        if w.ndim != 2:
            return zeros2, other
        return ((lambda w: (jnp.zeros_like(w),)), head) if name in io_paths else ((lambda w: ()), hidden)
    return by_name(rule)


def ref_mars_m(io_paths=(), beta=0.95, gamma=0.025, wd=0.1, adam_b1=0.9, adam_b2=0.95, eps=1e-8):
    # Liu, Yuan & Gu, arXiv:2510.21800, as the official mars_m.py (AGI-Arena/MARS, is_approx=True): c = (g -
    # g_prev) gamma beta/(1-beta) + g, c <- c/||c|| if ||c|| > 1, buf <- beta buf + (1-beta) c; p <- p(1 - lr wd)
    # - lr 0.2 sqrt(max(A, B)) NS5(buf), NS5 with the code's eps 1e-7 (here in float32; the code uses bfloat16).
    # Non-matrix leaves and the embedding/head: the code's AdamW branch.
    def muon(w, g, s, t, lr):
        m, gp = s
        c = (g - gp) * (gamma * beta / (1 - beta)) + g
        nc = jnp.linalg.norm(c)
        c = jnp.where(nc > 1, c / nc, c)
        m = m * beta + (1 - beta) * c
        w = w * (1 - lr * wd)
        return w - lr * 0.2 * max(w.shape) ** 0.5 * ns5(m, 1e-7), (m, g)

    def other(w, g, s, t, lr):
        return _torch_style_adamw(w, g, s, t, lr, adam_b1, adam_b2, eps, wd)

    return by_name(lambda name, w: (zeros2, muon) if w.ndim == 2 and name not in io_paths else (zeros2, other))


def ref_psps_adam(b2=0.999, eps=1e-8, f_min=0.0):
    # Abdukhakimov et al., arXiv:2310.02093: x <- x - gamma B^-1 g, gamma = (f - f*)/<g, B^-1 g> (all leaves),
    # B = diag(sqrt(v_hat) + eps); no step when <g, B^-1 g> < 1e-13 (the authors' PSPS class).
    def step(params, grads, v, t, lr, loss):
        v = jax.tree.map(lambda vk, g: b2 * vk + (1 - b2) * g * g, v, grads)
        d = jax.tree.map(lambda vk, g: g / (jnp.sqrt(vk / (1 - b2 ** t)) + eps), v, grads)
        gn = sum(jnp.sum(g * dk) for g, dk in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
        gam = jnp.where(gn < 1e-13, 0.0, (loss - f_min) / gn)
        return jax.tree.map(lambda w, dk: w - lr * gam * dk, params, d), v
    return (lambda params: jax.tree.map(jnp.zeros_like, params)), step


def ref_sania_adam_sqr(b2=0.999, eps=0.1):
    # Abdukhakimov et al., arXiv:2312.17369, as the authors' SANIA/sania_adam_sqr.py (is_sqrt=False): v <- b2 v +
    # (1-b2) g^2, s_k = g / max(eps, v_hat), n = sum <s_k, g>; gamma = 1 - sqrt(1 - 2 f/n) if 2 f <= n and
    # 1 - 2 f/n > 0, else 1; p <- p - lr gamma s_k.
    def step(params, grads, v, t, lr, loss):
        v = jax.tree.map(lambda vk, g: vk * b2 + (1 - b2) * g * g, v, grads)
        d = jax.tree.map(lambda vk, g: g / jnp.maximum(eps, vk / (1 - b2 ** t)), v, grads)
        n = sum(jnp.sum(dk * g) for g, dk in zip(jax.tree.leaves(grads), jax.tree.leaves(d)))
        det = 1 - 2 * (loss / n)
        gam = jnp.where((2 * loss <= n) & (det > 0), 1 - jnp.sqrt(jnp.maximum(det, 0.0)), 1.0)
        return jax.tree.map(lambda w, dk: w - lr * gam * dk, params, d), v
    return (lambda params: jax.tree.map(jnp.zeros_like, params)), step


def blockwise_lr_ref(lr, io=IO, r_hidden=6.0, r_io=10.0, **adamw_kw):
    """Wang et al., arXiv:2502.19002 (official code: torch AdamW param groups at ratio * lr): optax.adamw at
    r_hidden*lr for hidden matrices, r_io*lr for the io leaves, lr for leaves with ndim <= 1."""
    def labels(params):
        return {k: "norm" if w.ndim <= 1 else ("io" if k in io else "hidden") for k, w in params.items()}
    return optax.partition({"hidden": optax.adamw(r_hidden * lr, **adamw_kw), "io": optax.adamw(r_io * lr, **adamw_kw),
                            "norm": optax.adamw(lr, **adamw_kw)}, labels)


# ----------------------------------------------------------------------------------------------------------
# Cases (the layout of test_library_paper.CASES): library name, learning rate, kind, reference, hyperparameters
# ----------------------------------------------------------------------------------------------------------
CASES = {
    "adam_atan2": _paper("adam_atan2", 1e-2, ref_adam_atan2),
    "adam_atan2_hp": _paper("adam_atan2", 1e-2, ref_adam_atan2, a=1.27, b=0.5, wd=0.1),
    "lion_huber": _paper("lion_huber", 1e-3, ref_lion_huber, delta=0.3, wd=0.1),
    "sm3": _optax("sm3", 0.1, sm3_flat()),
    "sm3_b1": _optax("sm3", 0.1, sm3_flat(momentum=0.5), b1=0.5),
    "adamw_sn": _paper("adamw_sn", 1e-2, ref_adamw_sn),
    "adamw_sn_wd": _paper("adamw_sn", 1e-2, ref_adamw_sn, wd=0.1, eps=1e-8),
    "scale": _paper("scale", 1e-2, ref_scale, io_paths=IO, wd=0.1),
    "mars_m": _paper("mars_m", 1e-2, ref_mars_m, io_paths=IO),
    "psps_adam": _paper("psps_adam", 0.5, ref_psps_adam),
    "psps_adam_fmin": _paper("psps_adam", 0.5, ref_psps_adam, f_min=0.2, b2=0.99),
    "sania_adam_sqr": _paper("sania_adam_sqr", 0.5, ref_sania_adam_sqr),
    "sania_adam_sqr_eps": _paper("sania_adam_sqr", 0.5, ref_sania_adam_sqr, eps=0.5, b2=0.99),
    "blockwise_lr": _optax("blockwise_lr", 1e-2, blockwise_lr_ref(1e-2), io_paths=IO),
    "blockwise_lr_hp": _optax("blockwise_lr", 1e-2, blockwise_lr_ref(1e-2, r_hidden=3.0, r_io=5.0, weight_decay=0.01),
                              io_paths=IO, r_hidden=3.0, r_io=5.0, wd=0.01),
}
LOSS_READERS = {"psps_adam", "sania_adam_sqr"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_library_matches_reference(case):
    check_case(case, CASES[case], LOSS_READERS)


def _sania_full_step(b2=0.999, eps=0.1):
    """SANIA Adam-SQR with gamma = 1 always (the branch taken when 2 f > <g, B^-1 g>: here f = 1e30)."""
    init, step = ref_sania_adam_sqr(b2, eps)
    return init, lambda params, grads, v, t, lr, loss: step(params, grads, v, t, lr, jnp.float32(1e30))


# The comparisons above would be vacuous if Lion-Huber never left one regime, SM3's matrix cover acted like the
# diagonal one, the io leaf were treated like the others, or SANIA never took its Polyak branch: each pair of
# references differing in that one detail must differ by far more than the tolerance.
SPECIAL_PATHS = {
    "lion_huber_vs_lion": lambda: (run_ref(ref_lion_huber(delta=0.3, wd=0.1), 1e-3),
                                   run_ref(ref_lion_huber(delta=1e-9, wd=0.1), 1e-3)),
    "lion_huber_vs_linear": lambda: (run_ref(ref_lion_huber(delta=0.3, wd=0.1), 1e-3),
                                     run_ref(ref_lion_huber(delta=0.3, wd=0.1, clipped=False), 1e-3)),
    "sm3_vs_diagonal": lambda: (run_optax(sm3_flat()), run_optax(sm3_flat(matrices=False))),
    "scale_head": lambda: (run_ref(ref_scale(io_paths=IO), 1e-2), run_ref(ref_scale(), 1e-2)),
    "blockwise_lr_io": lambda: (run_optax(blockwise_lr_ref(1e-2)), run_optax(blockwise_lr_ref(1e-2, io=()))),
    "sania_polyak_branch": lambda: (run_ref_value(ref_sania_adam_sqr(), 0.5), run_ref_value(_sania_full_step(), 0.5)),
}


@pytest.mark.parametrize("pair", sorted(SPECIAL_PATHS))
def test_cases_reach_the_special_paths(pair):
    a, b = SPECIAL_PATHS[pair]()
    assert rel_err(a, b) > 1e-3
