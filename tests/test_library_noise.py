"""Library programs reading the random input ``noise`` (metaopt/dsl/inputs.py) against outside references.

Two kinds of check, so that no comparison is self-referential:

* the rule: 100 closed-loop steps on tests/test_library_paper.py's noisy quadratic (float32, its metric and
  tolerance), the program (``metaopt.to_optax``) against the paper's equations written below, or against
  pytorch_optimizer through torch (float64, tests/trajectory.py's metric). The references draw the same normals as
  the program by the key derivation of metaopt/dsl/inputs.py, written out here with jax.random (``draw``), not
  with metaopt's helpers: the normal of leaf i (position in the flattened tree) at the update after ``count``
  previous ones is ``jax.random.normal(fold_in(fold_in(fold_in(PRNGKey(seed), count), i), 0))``;
* the noise itself, independently of that derivation: the injected perturbation has mean 0 and the rule's
  variance, and draws are uncorrelated across leaves, steps and seeds (``test_*_noise_*``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import library
from metaopt.compile import to_optax
from quadratic_tree import assert_matches_reference, rel_err
from test_library_paper import PARAMS0, SHAPES, STEPS, TOL, grads_at


def draw(seed: int, count, i: int, like, stream: int = 0):
    """The normal the program draws for leaf ``i`` at the update after ``count`` previous ones."""
    key = jax.random.PRNGKey(seed)
    for data in (count, i, stream):
        key = jax.random.fold_in(key, data)
    return jax.random.normal(key, jnp.shape(like), jnp.result_type(like))


def run_program(name: str, lr: float, **hp):
    """``hp`` may hold ``io_paths`` (to_optax's keyword) besides the program's hyperparameters."""
    tx = to_optax(library.get(name), learning_rate=lr, **hp)

    @jax.jit
    def run(params):
        def body(carry, i):
            p, s = carry
            u, s = tx.update(grads_at(p, i), s, p)
            return (optax.apply_updates(p, u), s), None
        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(STEPS))[0][0]
    return run(PARAMS0)


def run_equations(init_leaf, step_leaf, lr: float, seed: int = 0):
    """``step_leaf(w, g, xi, state, t, lr, k) -> (w, state)`` per leaf k (flattened order), xi its draw;
    closed loop."""
    @jax.jit
    def run(params):
        def body(carry, i):
            p, s = carry
            leaves, tdef = jax.tree.flatten(p)
            out = [step_leaf(w, g, draw(seed, i, k, w), sk, (i + 1).astype(jnp.float32), lr, k)
                   for k, (w, g, sk) in enumerate(zip(leaves, jax.tree.leaves(grads_at(p, i)), s))]
            return (tdef.unflatten([o[0] for o in out]), [o[1] for o in out]), None
        state = [init_leaf(w) for w in jax.tree.leaves(params)]
        return jax.lax.scan(body, (params, state), jnp.arange(STEPS))[0][0]
    return run(PARAMS0)


# ----------------------------------------------------------------------------------------------------------
# The papers' equations
# ----------------------------------------------------------------------------------------------------------
def ref_sgld():
    # Welling & Teh (ICML 2011), Eq. (4): theta <- theta - (eps/2) grad U + N(0, eps), eps = lr.
    def step(w, g, xi, s, t, lr, k):
        return w - lr / 2 * g + jnp.sqrt(lr) * xi, s
    return (lambda w: ()), step


def ref_psgld(alpha=0.99, lam=1e-5):
    # Li, Chen, Carlson & Carin (AAAI 2016), Algorithm 1 without the Gamma term: V <- alpha V + (1-alpha) g^2;
    # G = 1/(lam + sqrt(V)); theta <- theta - (eps/2) G g + N(0, eps G).
    def step(w, g, xi, v, t, lr, k):
        v = alpha * v + (1 - alpha) * g * g
        G = 1 / (lam + jnp.sqrt(v))
        return w - lr / 2 * G * g + jnp.sqrt(lr * G) * xi, v
    return jnp.zeros_like, step


IO = ("b",)                                    # the io leaf of the LISA cases (to_optax's io_paths)
IO_INDEX = sorted(SHAPES).index("b")           # its position in the flattened tree


def ref_lisa(gamma=2.0, n_layers=8.0, K=50.0, b1=0.9, b2=0.999, eps=1e-8, wd=0.01):
    # Pan et al. (NeurIPS 2024), Algorithm 1, per leaf (see lisa.opt): every K steps the leaf is active when
    # Phi(z) < gamma / n_layers, z the standardised sum of its draw; AdamW on active leaves (own step count k),
    # frozen leaves unchanged; the io leaf always AdamW.
    def init(w):
        return (jnp.zeros(()), jnp.zeros(()), jnp.zeros_like(w), jnp.zeros_like(w))

    def adamw(w, g, m, v, k, lr):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        return w - lr * ((m / (1 - b1 ** k)) / (jnp.sqrt(v / (1 - b2 ** k)) + eps) + wd * w), m, v

    def step(w, g, xi, s, t, lr, k):
        on, n, m, v = s
        if k == IO_INDEX:
            w, m, v = adamw(w, g, m, v, t, lr)
            return w, (on, n, m, v)
        u = jax.scipy.stats.norm.cdf(jnp.sum(xi) / jnp.sqrt(xi.size))
        on = jnp.where((t - 1) % K == 0, (u < gamma / n_layers).astype(jnp.float32), on)
        n = n + on
        w2, m2, v2 = adamw(w, g, m, v, n, lr)
        return jnp.where(on > 0, w2, w), (on, n, jnp.where(on > 0, m2, m), jnp.where(on > 0, v2, v))
    return init, step


def _paper(name, lr, ref, **hp):
    return (name, lr, "paper", ref(**{k: v for k, v in hp.items() if k not in ("seed", "io_paths")}), hp)


CASES = {
    "sgld": _paper("sgld", 1e-3, ref_sgld),
    "sgld_seed": _paper("sgld", 1e-2, ref_sgld, seed=7),
    "psgld": _paper("psgld", 1e-4, ref_psgld),
    "psgld_hp": _paper("psgld", 1e-4, ref_psgld, alpha=0.9, lam=1e-3, seed=3),
    "lisa": _paper("lisa", 1e-2, ref_lisa, io_paths=IO),
    "lisa_hp": _paper("lisa", 1e-2, ref_lisa, gamma=3.0, n_layers=6.0, K=10.0, b1=0.8, wd=0.1, seed=5, io_paths=IO),
}


@functools.lru_cache(maxsize=None)
def _runs(case: str) -> tuple:
    """(the program's final parameters, the reference's); cached: the near-miss tests reuse them."""
    name, lr, kind, (init, step), hp = CASES[case]
    return run_program(name, lr, **hp), run_equations(init, step, lr, int(hp.get("seed", 0)))


def measure(case: str) -> float:
    return rel_err(*_runs(case))


@pytest.mark.parametrize("case", sorted(CASES))
def test_noise_program_matches_reference(case):
    assert_matches_reference(case, *_runs(case), PARAMS0, TOL)


def test_reference_sees_the_noise():
    """Near miss: the same equations with the draws of another seed are far off (the noise is not negligible)."""
    init, step = ref_sgld()
    assert rel_err(_runs("sgld")[0], run_equations(init, step, 1e-3, seed=1)) > 1e-2


# ----------------------------------------------------------------------------------------------------------
# The injected noise, independently of the key derivation
# ----------------------------------------------------------------------------------------------------------
N = 20_000   # elements per leaf: a 4-sigma band on the mean is 4/sqrt(N) = 0.028


def _perturbations(name: str, lr: float, grads: dict, steps: int = 2, **hp) -> list[dict]:
    """w_{k+1} - w_k over ``steps`` updates with fixed ``grads`` (parameters start at 0)."""
    params = {"a": jnp.zeros((N,)), "b": jnp.zeros((100, N // 100))}
    tx = to_optax(library.get(name), learning_rate=lr, **hp)
    state, out = tx.init(params), []
    for _ in range(steps):
        u, state = tx.update(grads, state, params)
        out.append({k: np.asarray(v).ravel() for k, v in u.items()})
        params = optax.apply_updates(params, u)
    return out


def _standard_normal(x: np.ndarray, what: str) -> None:
    assert abs(x.mean()) < 4 / np.sqrt(x.size), f"{what}: mean {x.mean():.3g}"
    assert abs(x.var() - 1) < 4 * np.sqrt(2 / x.size), f"{what}: variance {x.var():.4g}"


def _uncorrelated(x: np.ndarray, y: np.ndarray, what: str) -> None:
    r = np.corrcoef(x, y)[0, 1]
    assert abs(r) < 4 / np.sqrt(x.size), f"{what}: correlation {r:.3g}"


def test_sgld_noise_is_standard_normal_scaled_by_sqrt_lr():
    lr = 1e-2
    zero = {"a": jnp.zeros((N,)), "b": jnp.zeros((100, N // 100))}
    d = _perturbations("sgld", lr, zero)
    for k in ("a", "b"):
        _standard_normal(d[0][k] / np.sqrt(lr), f"leaf {k}, step 1")
        _standard_normal(d[1][k] / np.sqrt(lr), f"leaf {k}, step 2")
        _uncorrelated(d[0][k], d[1][k], f"leaf {k}: steps 1 and 2")
    _uncorrelated(d[0]["a"], d[0]["b"], "leaves a and b")
    other = _perturbations("sgld", lr, zero, steps=1, seed=1)[0]
    _uncorrelated(d[0]["a"], other["a"], "seeds 0 and 1")
    again = _perturbations("sgld", lr, zero, steps=1)[0]
    np.testing.assert_array_equal(d[0]["a"], again["a"])   # reproducible from the seed


def test_psgld_noise_has_the_preconditioned_variance():
    # first step from V = 0: V = (1 - alpha) g^2, G = 1/(lam + sqrt(V)); the step is -lr/2 G g + N(0, lr G)
    lr, alpha, lam = 1e-3, 0.99, 1e-5
    g = {"a": jnp.full((N,), 2.0), "b": jnp.full((100, N // 100), 0.5)}
    d = _perturbations("psgld", lr, g, steps=1)[0]
    for k in ("a", "b"):
        gk = float(g[k].ravel()[0])
        G = 1 / (lam + np.sqrt((1 - alpha) * gk * gk))
        _standard_normal((d[k] + lr / 2 * G * gk) / np.sqrt(lr * G), f"leaf {k}")


def test_lisa_samples_leaves_with_probability_gamma_over_n_layers():
    """Over 2000 (leaf, period) draws: active with probability gamma/n_layers, uncorrelated across leaves and
    periods, fixed within a period; the io leaf (AdamW fallback) has no draw."""
    shapes = {f"x{k:02d}": (k % 4 + 1, 3) for k in range(20)}
    params = {n: jnp.ones(s) for n, s in shapes.items()} | {"head": jnp.ones((2,))}
    tx = to_optax(library.get("lisa"), 1e-2, K=2, gamma=3.0, n_layers=10.0, io_paths=("head",))
    grads = jax.tree.map(jnp.ones_like, params)

    @jax.jit
    def run(state):
        def body(s, _):
            _, s = tx.update(grads, s, params)
            return s, jnp.stack(jax.tree.leaves(s.on))
        return jax.lax.scan(body, state, None, length=200)[1]
    on = np.asarray(run(tx.init(params)))          # [step, leaf]
    assert on.shape == (200, 20)                   # the io leaf is not sampled
    np.testing.assert_array_equal(on[0::2], on[1::2])   # K = 2: one draw per period
    draws = on[0::2]
    p = 0.3
    assert abs(draws.mean() - p) < 4 * np.sqrt(p * (1 - p) / draws.size), draws.mean()
    _uncorrelated(draws[1:].ravel(), draws[:-1].ravel(), "consecutive periods")
    _uncorrelated(draws[:, 1:].ravel(), draws[:, :-1].ravel(), "neighbouring leaves")


def test_lisa_reference_sees_the_sampling():
    """Near miss: every leaf always active (n_layers = gamma) is told apart from the sampled run (lisa_hp)."""
    init, step = ref_lisa(gamma=3.0, n_layers=3.0, K=10.0, b1=0.8, wd=0.1)
    assert rel_err(_runs("lisa_hp")[0], run_equations(init, step, 1e-2, seed=5)) > 1e-2


# ----------------------------------------------------------------------------------------------------------
# Gravity against pytorch_optimizer (float64), its random initial velocity set to the program's draw
# ----------------------------------------------------------------------------------------------------------
GRAVITY_CASES = {"gravity": (0.01, {}), "gravity_hp": (0.03, {"alpha": 0.05, "beta": 0.8, "seed": 2})}
GRAVITY_TOL = 1e-9   # float64 on both sides (tests/test_library_torch_ref.py's metric, tests/trajectory.py)


def measure_gravity(case: str) -> float:
    torch = pytest.importorskip("torch")
    from test_library_torch_ref import PROBLEMS, reference_class, run_ours
    from trajectory import rel_err as traj_err
    lr, hp = GRAVITY_CASES[case]
    problem = PROBLEMS["quadratic"]
    alpha, beta, seed = hp.get("alpha", 0.01), hp.get("beta", 0.9), int(hp.get("seed", 0))
    ours = run_ours("gravity", lr, hp, problem)
    ps = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in problem.params0.items()}
    opt = reference_class("Gravity")(list(ps.values()), lr=lr, alpha=alpha, beta=beta, foreach=False)
    with jax.enable_x64(True):   # v0 = (alpha / lr) * the program's first draw, in float64
        for k, (name, p) in enumerate(ps.items()):
            opt.state[p]["v"] = torch.tensor(np.asarray(alpha / lr * draw(seed, 0, k, jnp.zeros(p.shape, jnp.float64))))
    out = {k: [] for k in ps}
    for i in range(STEPS):
        for k, p in ps.items():
            p.grad = torch.tensor(problem.h[k]) * p.detach() + torch.tensor(problem.b[k][i])
        opt.step()
        for k, p in ps.items():
            out[k].append(p.detach().numpy().copy())
    theirs = {k: np.stack(v) for k, v in out.items()}
    assert traj_err(theirs, {k: np.broadcast_to(v, theirs[k].shape) for k, v in problem.params0.items()}) > 1e-3
    return traj_err(ours, theirs)


@pytest.mark.parametrize("case", sorted(GRAVITY_CASES))
def test_gravity_matches_pytorch_optimizer(case):
    err = measure_gravity(case)
    print(f"{case}: max rel err {err:.2e}")
    assert err <= GRAVITY_TOL, f"{case}: {err:.3g} > {GRAVITY_TOL}"


def test_gravity_initial_velocity_is_normal_with_std_alpha_over_lr():
    # one step with g = 0: zeta = 0, v1 = beta_1 v0 with beta_1 = (beta + 1)/3, w1 - w0 = -lr v1
    lr, alpha, beta = 0.05, 0.01, 0.9
    zero = {"a": jnp.zeros((N,)), "b": jnp.zeros((100, N // 100))}
    d = _perturbations("gravity", lr, zero, steps=1)[0]
    for k in ("a", "b"):
        _standard_normal(-d[k] / (lr * (beta + 1) / 3) / (alpha / lr), f"leaf {k}")


def draw_table(seed: int, shapes: dict) -> dict[str, np.ndarray]:
    """Leaf -> its ``noise`` draws at every step (STEPS, ...): ``draw(seed, count, i)`` above, i the leaf's
    position in the flattened (key-sorted) tree, float64 (fed to a torch reference by ``fed_torch_draws``)."""
    with jax.enable_x64(True):
        return {k: np.asarray(jax.vmap(lambda c, i=i, s=shapes[k]: draw(seed, c, i, jnp.zeros(s, jnp.float64)))(
            jnp.arange(STEPS))) for i, k in enumerate(sorted(shapes))}


def fed_torch_draws(table: dict, count: int, params: list, names: dict):
    """``torch.randn_like`` replaced, for one reference step, by the program's draws (the input ``noise``): the
    k-th call returns step ``count``'s draw of the k-th parameter the optimizer visits (``draw_table``)."""
    from unittest import mock
    import torch
    queue = [table[names[id(p)]][count] for p in params]

    def randn_like(like, dtype=None, **_):
        x = queue.pop(0)
        assert x.shape == tuple(like.shape), f"draw for shape {x.shape} consumed by a {tuple(like.shape)} tensor"
        return torch.tensor(x, dtype=dtype or like.dtype)
    return mock.patch.object(torch, "randn_like", randn_like)


def suite_cases() -> list[tuple]:
    """(case, program, reference, precision, tolerance, measure) for benchmarks/library_table.py; reference is
    "equations", "optax" or "torch:<pytorch_optimizer class>"."""
    out = [(c, v[0], "equations", "float32", TOL, lambda c=c: measure(c)) for c, v in CASES.items()]
    return out + [(c, "gravity", "torch:Gravity", "float64", GRAVITY_TOL, lambda c=c: measure_gravity(c))
                  for c in GRAVITY_CASES]
