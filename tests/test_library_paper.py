"""Library optimizers of kinds S/F/M/L/W checked against their references over 100 steps.

Each case runs the library program (``metaopt.to_optax``) and a reference on the same random pytree (0-D, 1-D,
2-D (tall, wide, small) and 3-D leaves) with the same noisy quadratic gradients, in closed loop (each run
computes its gradients at its own parameters), and compares the final parameters.

* optax / optax.contrib references (adafactor, muon, dadapt_adamw, dog, momo): the optax implementation itself.
* Paper references: the paper's equations (or its official code where the paper leaves a detail open) written
  below directly in jax.numpy, independent of the DSL. Each reference cites its source.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax
import pytest

from metaopt import library
from metaopt.compile import to_optax
from quadratic_tree import assert_matches_reference, make_problem, rel_err

STEPS = 100
TOL = 1e-5
SHAPES = {"s": (), "b": (5,), "W": (6, 4), "V": (4, 7), "U": (3, 5), "T": (2, 3, 5)}


_PROBLEM = make_problem(SHAPES)
PARAMS0, loss_fn, grads_at = _PROBLEM.params0, _PROBLEM.loss_fn, _PROBLEM.grads_at


def run_optax(tx, value=False):
    @jax.jit
    def run(params):
        def body(carry, i):
            p, s = carry
            g = grads_at(p, i)
            extra = {"value": loss_fn(p)} if value else {}
            u, s = tx.update(g, s, p, **extra)
            return (optax.apply_updates(p, u), s), None
        (p, _), _ = jax.lax.scan(body, (params, tx.init(params)), jnp.arange(STEPS))
        return p
    return run(PARAMS0)


def run_ref(ref, lr):
    init, step = ref

    @jax.jit
    def run(params):
        def body(carry, i):
            p, s = carry
            p, s = step(p, grads_at(p, i), s, (i + 1).astype(jnp.float32), lr)
            return (p, s), None
        (p, _), _ = jax.lax.scan(body, (params, init(params)), jnp.arange(STEPS))
        return p
    return run(PARAMS0)


def leafwise(init_leaf, step_leaf):
    """A reference acting leaf by leaf: step_leaf(w, g, state, t, lr) -> (new w, state)."""
    def init(params):
        return [init_leaf(x) for x in jax.tree.leaves(params)]

    def step(params, grads, state, t, lr):
        leaves, tdef = jax.tree.flatten(params)
        out = [step_leaf(w, g, s, t, lr) for w, g, s in zip(leaves, jax.tree.leaves(grads), state)]
        return tdef.unflatten([o[0] for o in out]), [o[1] for o in out]
    return init, step


def zeros2(w):
    return (jnp.zeros_like(w), jnp.zeros_like(w))


# ----------------------------------------------------------------------------------------------------------
# Shared pieces of the references
# ----------------------------------------------------------------------------------------------------------

def adamw_leaf(w, g, s, t, lr, b1, b2, eps, wd):
    """AdamW as optax.adamw (Loshchilov & Hutter, arXiv:1711.05101, Alg. 2 with optax's eps placement)."""
    m, v = s
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    u = (m / (1 - b1 ** t)) / (jnp.sqrt(v / (1 - b2 ** t)) + eps) + wd * w
    return w - lr * u, (m, v)


def ns5(x, eps):
    """Quintic Newton-Schulz of Jordan et al. (modded-nanogpt `zeropower_via_newtonschulz5`), in float32."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tr = x.shape[0] > x.shape[1]
    if tr:
        x = x.T
    x = x / (jnp.linalg.norm(x) + eps)
    for _ in range(5):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if tr else x


def rms(x):
    return jnp.linalg.norm(x) / math.sqrt(x.size)   # CAME's / Adafactor's _rms


def with_adamw_fallback(init_main, step_main, b1, b2, eps, wd, ndims=(2,)):
    """Matrices (ndim in ndims) get the main rule, the rest AdamW with the given settings."""
    def init_leaf(w):
        return init_main(w) if w.ndim in ndims else zeros2(w)

    def step_leaf(w, g, s, t, lr):
        if w.ndim in ndims:
            return step_main(w, g, s, t, lr)
        return adamw_leaf(w, g, s, t, lr, b1, b2, eps, wd)
    return leafwise(init_leaf, step_leaf)


# ----------------------------------------------------------------------------------------------------------
# Paper references
# ----------------------------------------------------------------------------------------------------------

def ref_adabound(b1=0.9, b2=0.999, eps=1e-8, final_lr=0.1, gamma=1e-3, wd=0.0):
    # Luo et al., ICLR 2019, Algorithm 2 (AdaBound) as in the official code (Luolc/AdaBound, AdaBound.step):
    # eta_l(t) = final_lr (1 - 1/(gamma t + 1)), eta_u(t) = final_lr (1 + 1/(gamma t)); step
    # clip(alpha sqrt(1-b2^t)/(1-b1^t)/(sqrt(v)+eps), eta_l, eta_u) * m (no 1/sqrt(t) in the code).
    def step(w, g, s, t, lr):
        m, v = s
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step_size = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        lo = final_lr * (1 - 1 / (gamma * t + 1))
        hi = final_lr * (1 + 1 / (gamma * t))
        return w - jnp.clip(step_size / (jnp.sqrt(v) + eps), lo, hi) * m, (m, v)
    return leafwise(zeros2, step)


def ref_diffgrad(b1=0.9, b2=0.999, eps=1e-8):
    # Dubey et al., arXiv:1909.11015, Eqs. (5)-(9): friction xi_t = 1/(1 + exp(-|g_{t-1} - g_t|)) (g_0 = 0),
    # theta <- theta - alpha * xi * m_hat/(sqrt(v_hat) + eps), with the official code's eps on sqrt(v).
    def step(w, g, s, t, lr):
        m, v, gp = s
        xi = 1.0 / (1.0 + jnp.exp(-jnp.abs(gp - g)))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step_size = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        return w - step_size * (m * xi) / (jnp.sqrt(v) + eps), (m, v, g)
    return leafwise(lambda w: (jnp.zeros_like(w),) * 3, step)


def ref_adamp(b1=0.9, b2=0.999, eps=1e-8, wd=0.0, delta=0.1, wd_ratio=0.1):
    # Heo et al., ICLR 2021, Algorithm 1 (AdamP) with the official code's projection (clovaai/AdamP):
    # channel view x.view(x.size(0), -1) first, then layer view x.view(1, -1); project when
    # max |cos(g, w)| < delta / sqrt(view width); decoupled decay scaled by wd_ratio when projected.
    def cos(x, y):
        return jnp.abs(jnp.sum(x * y, 1)) / jnp.maximum(jnp.linalg.norm(x, axis=1) * jnp.linalg.norm(y, axis=1), eps)

    def project(w, g, p, view):
        wv, gv = view(w), view(g)
        hit = jnp.max(cos(gv, wv)) < delta / math.sqrt(wv.shape[1])
        pn = wv / (jnp.linalg.norm(wv, axis=1, keepdims=True) + eps)
        proj = (view(p) - pn * jnp.sum(pn * view(p), 1, keepdims=True)).reshape(p.shape)
        return hit, proj

    def step(w, g, s, t, lr):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = m / (jnp.sqrt(v) / jnp.sqrt(1 - b2 ** t) + eps)
        ratio = 1.0
        if w.ndim > 1:
            hit_c, proj_c = project(w, g, p, lambda x: x.reshape(x.shape[0], -1))
            hit_l, proj_l = project(w, g, p, lambda x: x.reshape(1, -1))
            p = jnp.where(hit_c, proj_c, jnp.where(hit_l, proj_l, p))
            ratio = jnp.where(hit_c | hit_l, wd_ratio, 1.0)
        w = w * (1 - lr * wd * ratio)
        return w - lr / (1 - b1 ** t) * p, (m, v)
    return leafwise(zeros2, step)


def _cautious_mask(x, g):
    # Liang et al., arXiv:2411.16085, Algorithm 1 and the official code (C-Optim): phi = [x*g > 0],
    # rescaled by numel/(sum(phi) + 1).
    mask = (x * g > 0).astype(g.dtype)
    return mask * (mask.size / (mask.sum() + 1))


def ref_cautious_adamw(b1=0.9, b2=0.999, eps=1e-6, wd=0.0):
    # C-Optim c_adamw.py: step_size = lr sqrt(1-b2^t)/(1-b1^t); p -= step_size * m*mask/(sqrt(v)+eps);
    # then p -= lr*wd*p (on the updated weights).
    def step(w, g, s, t, lr):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step_size = lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        w = w - step_size * (m * _cautious_mask(m, g)) / (jnp.sqrt(v) + eps)
        return w - lr * wd * w, (m, v)
    return leafwise(zeros2, step)


def ref_cautious_lion(b1=0.9, b2=0.99, wd=0.0):
    # C-Optim c_lion.py (Lion, Chen et al. arXiv:2302.06675, Alg. 2, with the cautious mask).
    def step(w, g, s, t, lr):
        (m,) = s
        w = w * (1 - lr * wd)
        u = jnp.sign(b1 * m + (1 - b1) * g)
        w = w - lr * u * _cautious_mask(u, g)
        return w, (b2 * m + (1 - b2) * g,)
    return leafwise(lambda w: (jnp.zeros_like(w),), step)


def ref_grams(b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    # Cao et al., arXiv:2412.17107, Algorithm 1: u_t = m_hat/(sqrt(v_hat)+eps);
    # theta <- theta - eta (sign(g) |u_t| + lambda theta).
    def step(w, g, s, t, lr):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1 ** t)) / (jnp.sqrt(v / (1 - b2 ** t)) + eps)
        return w - lr * (jnp.sign(g) * jnp.abs(u) + wd * w), (m, v)
    return leafwise(zeros2, step)


def ref_mars(b1=0.95, b2=0.99, eps=1e-8, gamma=0.025, wd=0.0, b1_1d=0.9, b2_1d=0.95, wd_1d=0.1):
    # Yuan et al., arXiv:2411.10438, Algorithm 2 (MARS-AdamW) in its approximate form (official code,
    # is_approx=True): c = g + gamma b1/(1-b1) (g - g_prev); c <- c/||c|| if ||c|| > 1; AdamW on c.
    # Non-matrix leaves: AdamW with betas_1d, weight_decay_1d (optimize_1d=False).
    def step(w, g, s, t, lr):
        m, v, gp = s
        c = g + gamma * (b1 / (1 - b1)) * (g - gp)
        nc = jnp.linalg.norm(c)
        c = jnp.where(nc > 1, c / nc, c)
        m = b1 * m + (1 - b1) * c
        v = b2 * v + (1 - b2) * c * c
        denom = jnp.sqrt(v) / jnp.sqrt(1 - b2 ** t) + eps
        w = w * (1 - lr * wd)
        return w - lr * (m / (1 - b1 ** t)) / denom, (m, v, g)
    return with_adamw_fallback(lambda w: (jnp.zeros_like(w),) * 3, step, b1_1d, b2_1d, eps, wd_1d)


def ref_adam_mini(b1=0.9, b2=0.999, eps=1e-8, wd=0.1):
    # Zhang et al., arXiv:2406.16793, Algorithm 1 with one block per tensor: v <- b2 v + (1-b2) mean(g*g);
    # theta <- theta - eta m_hat/(sqrt(v_hat) + eps) - eta lambda theta.
    def step(w, g, s, t, lr):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * jnp.mean(g * g)
        h = jnp.sqrt(v) / jnp.sqrt(1 - b2 ** t) + eps
        w = w * (1 - lr * wd)
        return w - lr * (m / (1 - b1 ** t)) / h, (m, v)
    return leafwise(lambda w: (jnp.zeros_like(w), jnp.zeros((), w.dtype)), step)


def ref_came(b1=0.9, b2=0.999, b3=0.9999, eps1=1e-30, eps2=1e-16, clipping_threshold=1.0, wd=0.0):
    # Luo et al., ACL 2023, Algorithm 1 (CAME) as in the official code (yangluo7/CAME, came.py).
    def approx(row, col):   # _approx_sq_grad
        r = jax.lax.rsqrt(row / row.mean(axis=-1, keepdims=True))[..., None]
        c = jax.lax.rsqrt(col)[..., None, :]
        return r * c

    def init(w):
        if w.ndim >= 2:
            row, col = jnp.zeros(w.shape[:-1]), jnp.zeros(w.shape[:-2] + w.shape[-1:])
            return (jnp.zeros_like(w), row, col, row, col)
        return (jnp.zeros_like(w), jnp.zeros_like(w))

    def step(w, g, s, t, lr):
        upd = g * g + eps1
        if w.ndim >= 2:
            m, r, c, rr, rc = s
            r = b2 * r + (1 - b2) * upd.mean(-1)
            c = b2 * c + (1 - b2) * upd.mean(-2)
            u = approx(r, c) * g
        else:
            m, v = s
            v = b2 * v + (1 - b2) * upd
            u = jax.lax.rsqrt(v) * g
        u = u / jnp.maximum(rms(u) / clipping_threshold, 1.0)
        m = b1 * m + (1 - b1) * u
        if w.ndim >= 2:
            res = (u - m) ** 2 + eps2
            rr = b3 * rr + (1 - b3) * res.mean(-1)
            rc = b3 * rc + (1 - b3) * res.mean(-2)
            u, s = approx(rr, rc) * m, (m, r, c, rr, rc)
        else:
            u, s = m, (m, v)
        w = w - wd * lr * w
        return w - lr * u, s
    return leafwise(init, step)


def ref_sinkgd(b1=0.9, b2=0.999, eps=1e-8):
    # Scetbon et al., arXiv:2502.06742, Algorithm (SinkGD), L = 5: X <- sqrt(n) Q(X)^-1 X; X <- sqrt(m) X R(X)^-1
    # with Q, R the diagonal row / column l2 norms (plus the library's 1e-8 guard on the RMS); Adam elsewhere.
    def step(w, g, s, t, lr):
        x = g
        m_, n_ = x.shape
        for _ in range(5):
            x = x / (jnp.linalg.norm(x, axis=1, keepdims=True) / math.sqrt(n_) + 1e-8)
            x = x / (jnp.linalg.norm(x, axis=0, keepdims=True) / math.sqrt(m_) + 1e-8)
        return w - lr * x, s
    return with_adamw_fallback(lambda w: (), step, b1, b2, eps, 0.0)


def ref_normuon(beta=0.95, b2=0.95, eps=1e-10, wd=0.0, adam_b1=0.9, adam_b2=0.95, adam_eps=1e-8):
    # Li et al., arXiv:2510.05491, Algorithm 1, as the official normuon_update (zichongli5/NorMuon), with
    # Newton-Schulz in float32 and eps 1e-7 as in that code.
    def step(w, g, s, t, lr):
        m, v = s
        m = m + (1 - beta) * (g - m)            # momentum.lerp_(grad, 1 - beta)
        n = g + beta * (m - g)                  # grad.lerp_(momentum, beta)
        o = ns5(n, 1e-7)
        vnorm = jnp.linalg.norm(o)
        v = v + (1 - b2) * (jnp.mean(o * o, axis=-1, keepdims=True) - v)
        o2 = o * (1 / (jnp.sqrt(v) + eps))
        o2 = o2 * (vnorm / (jnp.linalg.norm(o2) + eps))
        o2 = o2 * max(1, w.shape[-2] / w.shape[-1]) ** 0.5
        w = w * (1 - lr * wd)
        return w - lr * o2, (m, v)
    return with_adamw_fallback(lambda w: (jnp.zeros_like(w), jnp.zeros_like(w[..., 0:1])), step,
                               adam_b1, adam_b2, adam_eps, wd)


def ref_adamuon(beta=0.95, b2=0.999, eps=1e-8, wd=0.01, adam_b1=0.9, adam_b2=0.95):
    # Si et al., arXiv:2507.11005, as the official AdaMuon.step (Chongjie-Si/AdaMuon, adamuon.py).
    def step(w, g, s, t, lr):
        m, v = s
        m = m + (1 - beta) * (g - m)
        n = g + beta * (m - g)
        o = ns5(n, 1e-7)
        v = v * b2 + (1 - b2) * o * o
        o = o / (jnp.sqrt(v / (1 - b2 ** t)) + eps)
        o = o * (min(w.shape) ** 0.5 / (jnp.linalg.norm(o) + eps))
        w = w * (1 - lr * wd)
        return w - lr * 0.2 * max(w.shape) ** 0.5 * o, (m, v)
    return with_adamw_fallback(zeros2, step, adam_b1, adam_b2, eps, wd)


def ref_adago(beta=0.95, gamma=10.0, eps=5e-4, v0=1e-6, adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8, wd=0.0):
    # Zhang et al., arXiv:2509.02981, Algorithm 1 (AdaGO): M_t = mu M + (1-mu) G; v_t^2 = v_{t-1}^2 +
    # min(||G||, gamma)^2; alpha_t = max(eps, eta min(||G||, gamma)/v_t); W <- W - alpha_t NS(M_t).
    def step(w, g, s, t, lr):
        m, v2 = s
        m = beta * m + (1 - beta) * g
        gn = jnp.minimum(jnp.linalg.norm(g), gamma)
        v2 = v2 + gn ** 2
        alpha = jnp.maximum(eps, lr * gn / jnp.sqrt(v2))
        return w - alpha * ns5(m, 1e-8), (m, v2)
    return with_adamw_fallback(lambda w: (jnp.zeros_like(w), jnp.asarray(v0 ** 2, w.dtype)), step,
                               adam_b1, adam_b2, adam_eps, wd)


# ----------------------------------------------------------------------------------------------------------
# Cases: (library name, learning rate, hyperparameters, reference, reads the loss)
# ----------------------------------------------------------------------------------------------------------

def _paper(name, lr, fn, **hp):
    return (name, lr, "paper", fn(**hp), hp)


def _optax(name, lr, tx, **hp):
    return (name, lr, "optax", tx, hp)


CASES = {
    "adabound": _paper("adabound", 1e-2, ref_adabound, wd=0.01),
    "diffgrad": _paper("diffgrad", 1e-2, ref_diffgrad),
    "adamp": _paper("adamp", 1e-2, ref_adamp, wd=0.1, delta=0.6),
    "adamp_default_delta": _paper("adamp", 1e-2, ref_adamp, wd=0.1),
    "cautious_adamw": _paper("cautious_adamw", 1e-2, ref_cautious_adamw, wd=0.1),
    "cautious_lion": _paper("cautious_lion", 1e-3, ref_cautious_lion, wd=0.1),
    "grams": _paper("grams", 1e-2, ref_grams, wd=0.1),
    "mars": _paper("mars", 3e-3, ref_mars, wd=0.1),
    "adam_mini": _paper("adam_mini", 1e-2, ref_adam_mini),
    "came": _paper("came", 2e-3, ref_came, wd=0.1),
    "sinkgd": _paper("sinkgd", 1e-2, ref_sinkgd),
    "normuon": _paper("normuon", 2e-2, ref_normuon, wd=0.1),
    "adamuon": _paper("adamuon", 2e-2, ref_adamuon),
    "adago": _paper("adago", 5e-2, ref_adago),
    # optax / optax.contrib references: library hyperparameters as keywords, optax's own call beside them.
    # min_dim_size_to_factor=4 factors the (6, 4) and (4, 7) leaves; (3, 5), the 3-D, 1-D and 0-D leaves take
    # the unfactored path. With optax's default 128 nothing here is factored.
    "adafactor": _optax("adafactor", 1e-2, optax.adafactor(1e-2, min_dim_size_to_factor=4),
                        min_dim_size_to_factor=4),
    "adafactor_default": _optax("adafactor", 1e-2, optax.adafactor(1e-2)),
    "muon": _optax("muon", 2e-2, optax.contrib.muon(2e-2, weight_decay=0.1), wd=0.1),
    "muon_default": _optax("muon", 2e-2, optax.contrib.muon(2e-2)),
    "dadapt_adamw": _optax("dadapt_adamw", 1.0, optax.contrib.dadapt_adamw(1.0, weight_decay=0.01), wd=0.01),
    "dadapt_adamw_lr": _optax("dadapt_adamw", 0.5, optax.contrib.dadapt_adamw(0.5)),
    "dog": _optax("dog", 1.0, optax.contrib.dog(1.0)),
    "dog_wd": _optax("dog", 0.5, optax.contrib.dog(0.5, weight_decay=0.01), wd=0.01),
    "momo": _optax("momo", 1.0, optax.contrib.momo(1.0)),
    "momo_wd": _optax("momo", 0.3, optax.contrib.momo(0.3, weight_decay=0.05, lower_bound=0.5), wd=0.05, lb=0.5),
}
LOSS_READERS = {"momo"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_library_matches_reference(case):
    check_case(case, CASES[case], LOSS_READERS)


def test_cases_exercise_the_special_paths():
    """The comparisons above would be vacuous if AdamP never projected or Adafactor never factored here."""
    never = run_ref(ref_adamp(wd=0.1, delta=0.0), 1e-2)          # |cos| < 0 never holds: plain AdamW
    assert rel_err(run_ref(ref_adamp(wd=0.1, delta=0.6), 1e-2), never) > 1e-4
    factored = run_optax(optax.adafactor(1e-2, min_dim_size_to_factor=4))
    assert rel_err(factored, run_optax(optax.adafactor(1e-2))) > 1e-4


# ----------------------------------------------------------------------------------------------------------
# Further library programs (same problem, metric and tolerance as CASES above)
# ----------------------------------------------------------------------------------------------------------
def check_case(label: str, entry: tuple, loss_readers: set) -> None:
    """The program of ``entry`` (``_optax``/``_paper``) against its reference, closed loop, at TOL; programs in
    ``loss_readers`` get the minibatch loss on both sides."""
    name, lr, kind, ref, hp = entry
    value = name in loss_readers
    if kind == "optax":
        want = run_optax(ref, value=value)
    else:
        want = (run_ref_value if value else run_ref)(ref, lr)
    got = run_optax(to_optax(library.get(name), learning_rate=lr, **hp), value=value)
    assert_matches_reference(label, got, want, PARAMS0, TOL)


def run_ref_value(ref, lr):
    """run_ref for references that read the minibatch loss: step(params, grads, state, t, lr, loss)."""
    init, step = ref

    @jax.jit
    def run(params):
        def body(carry, i):
            p, s = carry
            p, s = step(p, grads_at(p, i), s, (i + 1).astype(jnp.float32), lr, loss_fn(p))
            return (p, s), None
        (p, _), _ = jax.lax.scan(body, (params, init(params)), jnp.arange(STEPS))
        return p
    return run(PARAMS0)


def _sq(tree):
    return sum(jnp.sum(x * x) for x in jax.tree.leaves(tree))


def ref_padam_ams(b1=0.9, b2=0.999, p=0.125, eps=1e-8):
    # Chen et al., arXiv:1806.06763, Algorithm 1 with the authors' code (uclaml/Padam, amsgrad=True):
    # vmax = max(vmax, v); theta <- theta - lr sqrt(1-b2^t)/(1-b1^t) m/(sqrt(vmax) + eps)^(2p).
    def step(w, g, s, t, lr):
        m, v, vmax = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = jnp.maximum(vmax, v)
        return w - lr * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (jnp.sqrt(vmax) + eps) ** (2 * p), \
            (m, v, vmax)
    return leafwise(lambda w: (jnp.zeros_like(w),) * 3, step)


def ref_adagrad_norm(b0=0.01):
    # Ward, Wu & Bottou, arXiv:1806.01811, Algorithm 1 (AdaGrad-Norm): b_{j+1}^2 = b_j^2 + ||G_j||^2;
    # x_{j+1} = x_j - eta G_j / b_{j+1}.
    def step(params, grads, bsq, t, lr):
        bsq = bsq + _sq(grads)
        return jax.tree.map(lambda w, g: w - lr * g / jnp.sqrt(bsq), params, grads), bsq
    return (lambda params: jnp.asarray(b0 ** 2, jnp.float32)), step


def ref_adamnc(b1=0.9, lam=1.0, eps=1e-8):
    # Reddi et al., arXiv:1904.09237, Algorithm 1 with beta_{1t} = b1 lam^(t-1), beta_{2t} = 1 - 1/t (v_t the
    # average of the g_i^2), alpha_t = alpha/sqrt(t), no bias correction (eps as the library file).
    def step(w, g, s, t, lr):
        m, v = s
        b1t = b1 * lam ** (t - 1)
        m = b1t * m + (1 - b1t) * g
        v = v * (t - 1) / t + g * g / t
        return w - lr / jnp.sqrt(t) * m / (jnp.sqrt(v) + eps), (m, v)
    return leafwise(zeros2, step)


def ref_adamr(b1=0.9, b2=0.999, eps=1e-8, wd=0.01):
    # DAREx-L2 (AdamR): AdamW whose decoupled decay is lambda (theta - theta_0) instead of lambda theta.
    def step(w, g, s, t, lr):
        m, v, w0 = s
        w2, (m, v) = adamw_leaf(w, g, (m, v), t, lr, b1, b2, eps, 0.0)
        return w2 - lr * wd * (w - w0), (m, v, w0)
    return leafwise(lambda w: (jnp.zeros_like(w), jnp.zeros_like(w), w), step)


def ref_coupled_adam(b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    # Stollenwerk & Stollenwerk, arXiv:2502.08441: Adam with the embedding's second moment averaged over the
    # vocabulary axis (axis 0 of [V, d]) before the update, v kept in full; other leaves AdamW.
    def step(w, g, s, t, lr):
        if w.ndim != 2:
            return adamw_leaf(w, g, s, t, lr, b1, b2, eps, wd)
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vbar = jnp.mean(v, axis=0, keepdims=True)
        return w - lr * ((m / (1 - b1 ** t)) / (jnp.sqrt(vbar / (1 - b2 ** t)) + eps) + wd * w), (m, v)
    return leafwise(zeros2, step)


def ref_blockwise_adam(b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    # Blockwise Adam: one second moment per block B, v_B <- b2 v_B + (1-b2) mean_B(g^2); blocks = the rows of a
    # 2-D leaf, the whole leaf otherwise.
    def step(w, g, s, t, lr):
        m, v = s
        m = b1 * m + (1 - b1) * g
        blk = jnp.mean(g * g, axis=-1, keepdims=True) if w.ndim == 2 else jnp.mean(g * g)
        v = b2 * v + (1 - b2) * blk
        return w - lr * ((m / (1 - b1 ** t)) / (jnp.sqrt(v) / jnp.sqrt(1 - b2 ** t) + eps) + wd * w), (m, v)
    return leafwise(lambda w: (jnp.zeros_like(w), jnp.zeros(w.shape[:-1] + (1,)) if w.ndim == 2
                               else jnp.zeros(())), step)


def ref_delta_sgd(gamma=2.0, delta=0.1):
    # Kim et al. (ICLR 2024), Delta-SGD: eta_t = min(gamma ||x_t - x_{t-1}|| / (2 ||g_t - g_{t-1}||),
    # sqrt(1 + delta theta_{t-1}) eta_{t-1}), theta_t = eta_t / eta_{t-1}; theta_0 = inf, eta_1 = lr.
    def init(params):
        return params, jax.tree.map(jnp.zeros_like, params), jnp.float32(0.0), jnp.float32(jnp.inf)

    def step(params, grads, s, t, lr):
        xp, gp, eta, th = s
        dgn = jnp.sqrt(_sq(jax.tree.map(jnp.subtract, grads, gp)))
        dxn = jnp.sqrt(_sq(jax.tree.map(jnp.subtract, params, xp)))
        c1 = jnp.where(dgn > 0, gamma * dxn / (2 * dgn), jnp.inf)
        e = jnp.where(t <= 1, lr, jnp.minimum(c1, jnp.sqrt(1 + delta * th) * eta))
        th = jnp.where(eta > 0, e / eta, th)   # the library's guard: 0/0 once the noise has shrunk eta to 0
        return jax.tree.map(lambda w, g: w - e * g, params, grads), (params, grads, e, th)
    return init, step


def ref_alr_smag(beta=0.9, gamma_max=0.1, lb=0.0, c=1.0, wd=0.0):
    # Wang, Johansson & Zhang (ICML 2023), ALR-SMAG: d <- beta d + g; tau = min(gamma_max, (f - lb)/(c ||d||^2));
    # x <- (1 - wd tau) x; x <- x - tau d (lr scales tau).
    def step(params, grads, d, t, lr, loss):
        d = jax.tree.map(lambda dk, g: beta * dk + g, d, grads)
        dn = _sq(d)
        tau = jnp.where(dn > 0, jnp.minimum(gamma_max, (loss - lb) / (c * dn)), 0.0) * lr
        return jax.tree.map(lambda w, dk: (1 - wd * tau) * w - tau * dk, params, d), d
    return (lambda params: jax.tree.map(jnp.zeros_like, params)), step


def ref_aegd(c=1.0):
    # Liu & Tian, arXiv:2010.05109, Algorithm 1: r_0 = sqrt(f(theta_0) + c); v = g / (2 sqrt(f + c));
    # r <- r / (1 + 2 eta v^2); theta <- theta - 2 eta r v.
    def step(params, grads, r, t, lr, loss):
        q = jnp.sqrt(loss + c)
        r = jax.tree.map(lambda rk: jnp.where(t <= 1, q, rk), r)
        v = jax.tree.map(lambda g: g / (2 * q), grads)
        r = jax.tree.map(lambda rk, vk: rk / (1 + 2 * lr * vk * vk), r, v)
        return jax.tree.map(lambda w, rk, vk: w - 2 * lr * rk * vk, params, r, v), r
    return (lambda params: jax.tree.map(jnp.zeros_like, params)), step


def ref_adamomentum(b1=0.9, b2=0.999, eps=1e-8):
    # AdaMomentum (Rethinking Adam: A Twofold Exponential Moving Average Approach): v <- b2 v + (1-b2) m^2 + eps;
    # theta <- theta - lr m_hat / sqrt(v_hat).
    def step(w, g, s, t, lr):
        m, v = s
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * m * m + eps
        return w - lr * (m / (1 - b1 ** t)) / jnp.sqrt(v / (1 - b2 ** t)), (m, v)
    return leafwise(zeros2, step)


# Prodigy is here rather than in test_library_optax.py: its distance estimate grows ~1e6-fold in the first steps
# and amplifies float32 rounding along the open-loop gradient sequence there (1.1e-5 on the 3-D leaf).
MORE_CASES = {
    "prodigy": _optax("prodigy", 1.0, optax.contrib.prodigy(1.0)),
    "prodigy_hp": _optax("prodigy", 1.0, optax.contrib.prodigy(1.0, weight_decay=0.01, estim_lr_coef=2.0,
                                                               safeguard_warmup=True),
                         wd=0.01, d_coef=2.0, safeguard_warmup=1.0),
}
MORE_CASES.update({
    "padam_amsgrad": _paper("padam", 1e-2, ref_padam_ams),
    "padam_amsgrad_p": _paper("padam", 1e-2, ref_padam_ams, p=0.25),
    "adagrad_norm": _paper("adagrad_norm", 0.5, ref_adagrad_norm),
    "adagrad_norm_b0": _paper("adagrad_norm", 0.5, ref_adagrad_norm, b0=1.0),
    "adamnc": _paper("adamnc", 1e-1, ref_adamnc),
    "adamnc_lam": _paper("adamnc", 1e-1, ref_adamnc, lam=0.99, b1=0.8),
    "adamr": _paper("adamr", 1e-2, ref_adamr),
    "adamr_wd": _paper("adamr", 1e-2, ref_adamr, wd=0.5),
    "coupled_adam": _paper("coupled_adam", 1e-2, ref_coupled_adam, wd=0.01),
    "blockwise_adam": _paper("blockwise_adam", 1e-2, ref_blockwise_adam, wd=0.01),
    "delta_sgd": _paper("delta_sgd", 1e-2, ref_delta_sgd),
    "delta_sgd_hp": _paper("delta_sgd", 1e-2, ref_delta_sgd, gamma=1.0, delta=0.5),
    "alr_smag": _paper("alr_smag", 1.0, ref_alr_smag),
    "alr_smag_hp": _paper("alr_smag", 0.5, ref_alr_smag, beta=0.5, gamma_max=0.05, lb=0.5, wd=0.1),
    "aegd": _paper("aegd", 0.1, ref_aegd),
    "aegd_c": _paper("aegd", 0.1, ref_aegd, c=3.0),
    "adamomentum": _paper("adamomentum", 1e-2, ref_adamomentum),
    # schedule-free: the programs return optax's y - y_new in a closed form (see schedule_free_sgd.opt) whose
    # float32 rounding differs from optax's three-line form at ~1e-5 of tests/test_library_optax.py's metric
    # (elementwise, |b| floored at 0.1); here <= 3.3e-6
    "schedule_free_sgd": _optax("schedule_free_sgd", 0.03, optax.contrib.schedule_free_sgd(0.03)),
    "schedule_free_sgd_hp": _optax("schedule_free_sgd", 0.03, optax.contrib.schedule_free_sgd(
        0.03, b1=0.5, weight_decay=0.01, weight_lr_power=1.0), b1=0.5, wd=0.01, weight_lr_power=1.0),
    "schedule_free_adamw": _optax("schedule_free_adamw", 0.01, optax.contrib.schedule_free_adamw(0.01)),
    "schedule_free_adamw_hp": _optax("schedule_free_adamw", 0.01, optax.contrib.schedule_free_adamw(
        0.01, b1=0.95, b2=0.99, weight_decay=0.01), b1=0.95, b2=0.99, wd=0.01),
})
_JNP_SVD = jnp.linalg.svd


def _svd_galore_signs(x, full_matrices=True, **kw):
    """jnp.linalg.svd with the vectors optax's GaLore keeps (U of a tall x, V of a wide one) signed so that each
    one's largest-magnitude entry is positive, the other factor flipped along (x = U S Vh still): the sign is
    LAPACK's choice, and GaLore's moments outlive a projector refresh, so galore.opt fixes it this way."""
    u, s, vh = _JNP_SVD(x, full_matrices=full_matrices, **kw)
    k = min(x.shape)
    basis = vh[:k].T if x.shape[0] < x.shape[1] else u[:, :k]
    sign = jnp.where(basis[jnp.argmax(jnp.abs(basis), axis=0), jnp.arange(k)] < 0, -1.0, 1.0).astype(u.dtype)
    return u.at[:, :k].multiply(sign), s, vh.at[:k].multiply(sign[:, None])


def _galore_fixed_signs(learning_rate, **kw):
    """optax.contrib.galore whose SVD (jnp.linalg.svd, patched while its update is traced) signs as galore.opt."""
    from unittest import mock
    tx = optax.contrib.galore(learning_rate, **kw)

    def update(updates, state, params=None):
        with mock.patch.object(jnp.linalg, "svd", _svd_galore_signs):
            return tx.update(updates, state, params)
    return optax.GradientTransformation(tx.init, update)


# GaLore (metaopt/dsl/matrix_kinds.py): rank 2 < min(m, n) on every matrix leaf (optax caps it there too); T = 10
# refreshes the projector 10 times (its moments carry over un-rotated, as in optax), with optax's SVD signed as the
# library's; T = 200 keeps the first projector, where the sign cancels: plain optax.
MORE_CASES.update({
    "galore": _optax("galore", 1e-2, _galore_fixed_signs(1e-2, rank=2, update_proj_gap=10), rank=2, T=10),
    "galore_hp": _optax("galore", 1e-2, optax.contrib.galore(1e-2, rank=3, update_proj_gap=200, scale=0.5,
                                                             weight_decay=0.1), rank=3, T=200, scale=0.5, wd=0.1),
})
MORE_LOSS_READERS = {"alr_smag", "aegd"}


@pytest.mark.parametrize("case", sorted(MORE_CASES))
def test_more_library_matches_reference(case):
    check_case(case, MORE_CASES[case], MORE_LOSS_READERS)
